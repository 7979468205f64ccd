#!/usr/bin/env bash
# What the message trace costs: a full-speed download on 127.0.0.1 from one libtorrent
# seeder, `get` alone and `get --trace` (every message handled, every SAMPLEth block's
# chain), alternating RUNS times so both see the machine in the same state.
#
#   bash examples/trace-overhead.sh [SIZE_MIB] [RUNS] [SAMPLE]   (defaults 1024, 3, 64)
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
sample=${3:-64}
work=$(mktemp -d "${TMPDIR:-/tmp}/torrent-actors-tracebench.XXXXXX")
source "$here/examples/lib.sh"

mkdir -p "$work/seed"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/seed/data.bin"
"$bin" create --piece-size 1MiB --no-date -o "$work/t.torrent" "$work/seed/data.bin" > /dev/null
start_seeder "$work/t.torrent" "$work/seed" seeder --ready-without-announce
echo "payload $size_mib MiB, 1 MiB pieces, one libtorrent seeder, $runs runs each, --trace-sample $sample"

declare -A times cpus
for run in $(seq 1 "$runs"); do
    for mode in plain traced; do
        rm -rf "$work/out" "$work/trace.json"
        sync
        extra=()
        if [ "$mode" = traced ]; then
            extra=(--trace "$work/trace.json" --trace-sample "$sample")
        fi
        start=$(date +%s.%N)
        TORRENT_ACTORS_DHT_BOOTSTRAP= /usr/bin/time -o "$work/cpu" -f '%U %S' "$bin" get --bind 127.0.0.1 --port 0 --no-dht \
            --peer "127.0.0.1:$seed_port" -o "$work/out" "${extra[@]}" "$work/t.torrent" \
            > "$work/get.out" 2>&1
        took=$(echo "$(date +%s.%N) - $start" | bc)
        cmp "$work/seed/data.bin" "$work/out/data.bin"
        times[$mode]+="$took "
        cpu=$(awk '{print $1 + $2}' "$work/cpu")
        cpus[$mode]+="$cpu "
        note=", ${cpu} CPU-s"
        if [ "$mode" = traced ]; then
            note="$note, trace file $(du -h "$work/trace.json" | cut -f1)"
        fi
        printf '%-6s run %d: %6.2f s (%.1f MiB/s%s)\n' "$mode" "$run" "$took" \
            "$(echo "$size_mib / $took" | bc -l)" "$note"
    done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A medians cpu_medians
for mode in plain traced; do
    medians[$mode]=$(median ${times[$mode]})
    cpu_medians[$mode]=$(median ${cpus[$mode]})
    printf '%-6s median: %6.2f s (%.1f MiB/s), %.2f CPU-s\n' "$mode" "${medians[$mode]}" \
        "$(echo "$size_mib / ${medians[$mode]}" | bc -l)" "${cpu_medians[$mode]}"
done
printf 'traced throughput / plain throughput: %.2f; traced CPU / plain CPU: %.2f\n' \
    "$(echo "${medians[plain]} / ${medians[traced]}" | bc -l)" \
    "$(echo "${cpu_medians[traced]} / ${cpu_medians[plain]}" | bc -l)"
