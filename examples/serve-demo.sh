#!/usr/bin/env bash
# `torrent-actors serve` with something to download, all on 127.0.0.1: makes a three-file
# payload and its torrent, starts an opentracker and two libtorrent seeders (each held to
# SEED_KIB_S so the live graphs have something to draw), starts the daemon, and prints a
# magnet link to paste into the page's add dialog. Ctrl-C stops everything it started,
# by PID, and removes its temporary folder.
#
#   bash examples/serve-demo.sh [SIZE_MIB]     (after `cargo build --release`)
#
# Environment: LISTEN (default 127.0.0.1:9091), SEED_KIB_S (default 4096 per seeder).
# Needs mktorrent, opentracker and python3-libtorrent (Debian packages).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${TORRENT_ACTORS:-$here/target/release/torrent-actors}
size_mib=${1:-256}
listen=${LISTEN:-127.0.0.1:9091}
seed_rate=$(( ${SEED_KIB_S:-4096} * 1024 ))
work=$(mktemp -d "${TMPDIR:-/tmp}/torrent-actors-serve-demo.XXXXXX")
source "$here/examples/lib.sh"
trap 'exit 130' INT TERM

echo "payload: $size_mib MiB of random bytes in three files"
payload="$work/seed/demo-album"
mkdir -p "$payload/extras" "$work/downloads" "$work/state"
head -c "$((size_mib * 1024 * 1024 * 3 / 4))" /dev/urandom > "$payload/video.mkv"
head -c "$((size_mib * 1024 * 1024 / 4))" /dev/urandom > "$payload/extras/making-of.mkv"
echo "A demo payload for torrent-actors serve." > "$payload/README.txt"
mktorrent -l 18 -o "$work/plain.torrent" "$payload" > /dev/null
hash=$("$bin" info "$work/plain.torrent" | awk '/^info-hash:/ {print $2}')

start_tracker "$hash"
mktorrent -l 18 -a "$announce" -o "$work/demo.torrent" "$payload" > /dev/null
start_seeder "$work/demo.torrent" "$work/seed" seeder-1 --upload-limit "$seed_rate"
start_seeder "$work/demo.torrent" "$work/seed" seeder-2 --upload-limit "$seed_rate"

TORRENT_ACTORS_DHT_BOOTSTRAP= "$bin" serve --listen "$listen" --bind 127.0.0.1 --port 0 --no-dht \
    --dir "$work/downloads" --state "$work/state" > "$work/serve.out" 2> "$work/serve.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^serving' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^serving' "$work/serve.out" || { echo "the daemon did not start:"; cat "$work/serve.log"; exit 1; }

tr=$(/usr/bin/python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$announce")
cat <<INFO

$(cat "$work/serve.out")
Open that page, press "+ Add", and paste this magnet link (tick "choose files" to pick
which of the three files to download):

  magnet:?xt=urn:btih:$hash&dn=demo-album&tr=$tr

Downloads go to $work/downloads (removed on exit). Ctrl-C stops the daemon, both
seeders and the tracker.
INFO
wait "${pids[-1]}"
