#!/usr/bin/env bash
# Time to first byte of a stream, on 127.0.0.1: how soon `get --stream` delivers the
# first 64 KiB (one piece's worth, the whole piece waited for) of a seek to the last
# 10 % of a file, and then of its start (the answer's headers come at once), while a
# rate-limited libtorrent seeder is the only source; beside it, the same stream with the
# deadline picker off (`--no-stream-deadlines`: the read waits for the ordinary picker),
# and how long a plain `get` of the same torrent takes to finish.
#
#   bash examples/stream-ttfb.sh [SIZE_MIB] [SEEDER_KIB_PER_S]   (defaults 64 and 4096)
#   TORRENT_ACTORS=path/to/torrent-actors   (default target/release/torrent-actors)
#
# Needs mktorrent, opentracker, python3-libtorrent and curl. Everything it starts is
# stopped by PID when it exits; nothing listens beyond loopback. Figures, not a test:
# it asserts nothing about speed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${TORRENT_ACTORS:-$here/target/release/torrent-actors}
size_mib=${1:-64}
rate_kib=${2:-4096}
work=$(mktemp -d "${TMPDIR:-/tmp}/torrent-actors-ttfb.XXXXXX")
source "$here/examples/lib.sh"

mkdir -p "$work/seed"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/seed/film.bin"
mktorrent -l 18 -o "$work/plain.torrent" "$work/seed/film.bin" > /dev/null
hash=$("$bin" info "$work/plain.torrent" | awk '/^info-hash:/ {print $2}')
start_tracker "$hash"
rm -f "$work/film.torrent"
mktorrent -l 18 -a "$announce" -o "$work/film.torrent" "$work/seed/film.bin" > /dev/null
start_seeder "$work/film.torrent" "$work/seed" seeder --upload-limit "$((rate_kib * 1024))"
size=$((size_mib * 1024 * 1024))
seek=$((size * 9 / 10))
echo "payload $size_mib MiB, pieces of 256 KiB, one libtorrent seeder at $rate_kib KiB/s"

# 1. A plain download, to completion.
start=$(date +%s.%N)
TORRENT_ACTORS_DHT_BOOTSTRAP= "$bin" get --bind 127.0.0.1 --port 0 --no-dht -o "$work/plain" \
    "$work/film.torrent" > "$work/plain.out" 2>&1
plain=$(echo "$(date +%s.%N) - $start" | bc)
cmp "$work/seed/film.bin" "$work/plain/film.bin"

# 2. `get --stream`, read at 90 % as soon as the URL is printed, then at the start:
# once as shipped, once with the reads' pieces left to the ordinary picker
# (`--no-stream-deadlines`), against the same seeder in the same sitting.
stream_run() {
    local label=$1
    shift
    rm -rf "$work/streamed" "$work/get.out"
    mkdir -p "$work/streamed"
    mkfifo "$work/get.out"
    local start get_pid url line ttfb_end since_start ttfb_start
    start=$(date +%s.%N)
    TORRENT_ACTORS_DHT_BOOTSTRAP= "$bin" get --bind 127.0.0.1 --port 0 --no-dht --stream "$@" \
        -o "$work/streamed" "$work/film.torrent" > "$work/get.out" 2> "$work/get.err" &
    get_pid=$!
    pids+=("$get_pid")
    exec 3< "$work/get.out"
    url=""
    while read -r -t 30 line <&3; do
        case "$line" in "stream 0 "*) url=${line##*: }; break ;; esac
    done
    cat <&3 > /dev/null &
    pids+=($!)
    [ -n "$url" ] || { echo "get --stream printed no URL"; cat "$work/get.err"; exit 1; }
    ttfb_end=$(curl -s -o "$work/end.part" -r "$seek-$((seek + 65535))" -w '%{time_total}' "$url")
    since_start=$(echo "$(date +%s.%N) - $start" | bc)
    ttfb_start=$(curl -s -o "$work/start.part" -r "0-65535" -w '%{time_total}' "$url")
    cmp <(tail -c "+$((seek + 1))" "$work/seed/film.bin" | head -c 65536) "$work/end.part"
    cmp <(head -c 65536 "$work/seed/film.bin") "$work/start.part"
    kill -INT "$get_pid" 2>/dev/null || true
    wait "$get_pid" 2>/dev/null || true
    exec 3<&-
    printf '%s, seek to 90 %%: 64 KiB read in  %6.2f s (%.2f s after get started)\n' \
        "$label" "$ttfb_end" "$since_start"
    printf '%s, then the start: 64 KiB read in %6.2f s\n' "$label" "$ttfb_start"
}

printf 'plain get, whole file:                 %6.2f s\n' "$plain"
stream_run "stream"
stream_run "stream without deadlines" --no-stream-deadlines
