#!/usr/bin/env bash
# The main job on something real, all on 127.0.0.1: makes a payload and a torrent with
# mktorrent, starts an opentracker and a libtorrent seeder, then runs
# `torrent-actors get` through the tracker and checks the download byte for byte.
#
#   bash examples/demo.sh [SIZE_MIB]     (after `cargo build --release`)
#
# Needs mktorrent, opentracker and python3-libtorrent (Debian packages). Everything it
# starts is stopped by PID when it exits; nothing listens beyond loopback.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${TORRENT_ACTORS:-$here/target/release/torrent-actors}
size_mib=${1:-256}
work=$(mktemp -d "${TMPDIR:-/tmp}/torrent-actors-demo.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "payload: $size_mib MiB of random bytes"
mkdir -p "$work/seed" "$work/out" "$work/tracker"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/seed/demo.bin"
mktorrent -l 19 -o "$work/plain.torrent" "$work/seed/demo.bin" > /dev/null
hash=$("$bin" info "$work/plain.torrent" | awk '/^info-hash:/ {print $2}')

# Debian's opentracker serves only whitelisted info-hashes; as root it chroots into -d,
# so the whitelist is named relative to that folder.
port=$(free_port)
echo "$hash" > "$work/tracker/whitelist.txt"
chmod 755 "$work/tracker"; chmod 644 "$work/tracker/whitelist.txt"
(cd "$work/tracker" && exec opentracker -i 127.0.0.1 -p "$port" -P "$port" -d "$work/tracker" -w whitelist.txt) \
    > "$work/tracker.log" 2>&1 &
pids+=($!)
announce="http://127.0.0.1:$port/announce"
rm -f "$work/demo.torrent"
mktorrent -l 19 -a "$announce" -o "$work/demo.torrent" "$work/seed/demo.bin" > /dev/null
for _ in $(seq 1 50); do
    if /usr/bin/python3 -c "import urllib.request,sys; r=urllib.request.urlopen('$announce?info_hash=' + ''.join('%%%s' % '$hash'[i:i+2] for i in range(0,40,2)) + '&peer_id=-DEMO000000000000000&port=1&uploaded=0&downloaded=0&left=0&event=stopped', timeout=1).read(); sys.exit(b'failure' in r)" 2>/dev/null; then break; fi
    sleep 0.1
done

seed_port=$(free_port)
/usr/bin/python3 "$here/tests/support/lt_peer.py" seed --torrent "$work/demo.torrent" --data "$work/seed" \
    --port "$seed_port" --ready "$work/seeder.ready" --max-lifetime 600 > "$work/seeder.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do [ -f "$work/seeder.ready" ] && break; sleep 0.1; done
[ -f "$work/seeder.ready" ] || { echo "the libtorrent seeder did not start:"; cat "$work/seeder.log"; exit 1; }
echo "libtorrent seeder on 127.0.0.1:$seed_port, opentracker on 127.0.0.1:$port"

TORRENT_ACTORS_DHT_BOOTSTRAP= "$bin" get --bind 127.0.0.1 --port 0 -o "$work/out" "$work/demo.torrent"
cmp "$work/seed/demo.bin" "$work/out/demo.bin"
echo "byte-identical: $work/out/demo.bin matches the seeder's file"
