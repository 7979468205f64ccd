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
source "$here/examples/lib.sh"

echo "payload: $size_mib MiB of random bytes"
mkdir -p "$work/seed" "$work/out"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/seed/demo.bin"
mktorrent -l 19 -o "$work/plain.torrent" "$work/seed/demo.bin" > /dev/null
hash=$("$bin" info "$work/plain.torrent" | awk '/^info-hash:/ {print $2}')

start_tracker "$hash"
rm -f "$work/demo.torrent"
mktorrent -l 19 -a "$announce" -o "$work/demo.torrent" "$work/seed/demo.bin" > /dev/null
start_seeder "$work/demo.torrent" "$work/seed" seeder --max-lifetime 600
echo "libtorrent seeder on 127.0.0.1:$seed_port, opentracker at $announce"

TORRENT_ACTORS_DHT_BOOTSTRAP= "$bin" get --bind 127.0.0.1 --port 0 -o "$work/out" "$work/demo.torrent"
cmp "$work/seed/demo.bin" "$work/out/demo.bin"
echo "byte-identical: $work/out/demo.bin matches the seeder's file"
