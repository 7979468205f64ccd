# Shared by the example scripts: a loopback opentracker and libtorrent seeders, each
# recorded in `pids` and stopped by PID when the script exits, with its `work` folder
# removed. Source it right after setting `here` (the repository) and `work` (a
# temporary folder).

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_tracker HASH...: an opentracker on 127.0.0.1 that serves these info-hashes; sets
# `announce` to its URL once it answers.
start_tracker() {
    local port
    port=$(free_port)
    mkdir -p "$work/tracker"
    printf '%s\n' "$@" > "$work/tracker/whitelist.txt"
    # Debian's opentracker serves only whitelisted info-hashes; as root it chroots into
    # -d, so the whitelist is named relative to that folder.
    chmod 755 "$work/tracker"; chmod 644 "$work/tracker/whitelist.txt"
    (cd "$work/tracker" && exec opentracker -i 127.0.0.1 -p "$port" -P "$port" -d "$work/tracker" -w whitelist.txt) \
        > "$work/tracker.log" 2>&1 &
    pids+=($!)
    announce="http://127.0.0.1:$port/announce"
    local hash=$1
    for _ in $(seq 1 50); do
        if /usr/bin/python3 -c "import urllib.request,sys; r=urllib.request.urlopen('$announce?info_hash=' + ''.join('%%%s' % '$hash'[i:i+2] for i in range(0,40,2)) + '&peer_id=-DEMO000000000000000&port=1&uploaded=0&downloaded=0&left=0&event=stopped', timeout=1).read(); sys.exit(b'failure' in r)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "opentracker did not answer:"; cat "$work/tracker.log"; return 1
}

# start_seeder TORRENT DATA_DIR NAME [lt_peer.py options...]: a libtorrent seeder on a
# free loopback port; sets `seed_port` once it is ready.
start_seeder() {
    local torrent=$1 data=$2 name=$3
    shift 3
    seed_port=$(free_port)
    /usr/bin/python3 "$here/tests/support/lt_peer.py" seed --torrent "$torrent" --data "$data" \
        --port "$seed_port" --ready "$work/$name.ready" --max-lifetime 3600 "$@" > "$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 300); do [ -f "$work/$name.ready" ] && return 0; sleep 0.1; done
    echo "the libtorrent seeder $name did not start:"; cat "$work/$name.log"; return 1
}
