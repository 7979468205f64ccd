#!/usr/bin/env bash
# A v2-only download beside a v1 download of the same bytes, on 127.0.0.1: one libtorrent
# seeder per torrent, `get` fetching each in turn (alternating, RUNS times), so the two
# share the machine's state. v1 hashes each piece with SHA-1; v2 with SHA-256 over
# 16 KiB leaves and a Merkle tree per piece, so the hashing thread does more work.
#
#   bash examples/v2-bench.sh [SIZE_MIB] [RUNS]   (defaults 1024 and 3)
#   TORRENT_ACTORS=path/to/torrent-actors   (default target/release/torrent-actors)
#
# Needs python3-libtorrent. Everything it starts is stopped by PID when it exits; nothing
# listens beyond loopback and no tracker or DHT is used (`--peer` names the seeder).
# Figures, not a test: it asserts nothing about speed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${TORRENT_ACTORS:-$here/target/release/torrent-actors}
size_mib=${1:-1024}
runs=${2:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/torrent-actors-v2bench.XXXXXX")
source "$here/examples/lib.sh"

mkdir -p "$work/seed"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/seed/data.bin"
for v in v1 v2; do
    "$bin" create "--$v" --piece-size 1MiB --no-date -o "$work/$v.torrent" "$work/seed/data.bin" > /dev/null
    start_seeder "$work/$v.torrent" "$work/seed" "seeder-$v" --ready-without-announce
    eval "port_$v=$seed_port"
done
echo "payload $size_mib MiB, 1 MiB pieces, one libtorrent seeder per torrent, $runs runs each"

declare -A times
for run in $(seq 1 "$runs"); do
    for v in v1 v2; do
        port_var="port_$v"
        rm -rf "$work/out"
        sync
        start=$(date +%s.%N)
        TORRENT_ACTORS_DHT_BOOTSTRAP= "$bin" get --bind 127.0.0.1 --port 0 --no-dht \
            --peer "127.0.0.1:${!port_var}" -o "$work/out" "$work/$v.torrent" > "$work/get.out" 2>&1
        took=$(echo "$(date +%s.%N) - $start" | bc)
        cmp "$work/seed/data.bin" "$work/out/data.bin"
        times[$v]+="$took "
        printf '%s run %d: %6.2f s (%.1f MiB/s)\n' "$v" "$run" "$took" "$(echo "$size_mib / $took" | bc -l)"
    done
done
for v in v1 v2; do
    median=$(printf '%s\n' ${times[$v]} | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%s median: %6.2f s (%.1f MiB/s)\n' "$v" "$median" "$(echo "$size_mib / $median" | bc -l)"
done
