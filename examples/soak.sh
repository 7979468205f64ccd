#!/usr/bin/env bash
# A long soak of the engine under churn and lies: `torrent-actors swarm` with issue 16's
# stress mix (flaky, choking, lying, partial, slow and one fast peer; three leechers that
# trade with each other; 4 MiB pieces; 8 MiB in progress per leecher), run seed after
# seed until the time budget is spent. Prints one line per seed: outcome, time, and per
# leecher its completion time and waste ratio (bytes received per byte verified), then a
# tally. Exits 0 only if every seed completed with every leecher having received at most
# 1.5 times the torrent (failed pieces included) and seen at most 16 failed pieces (the
# bounds of the CI stress test, tests/it/swarm.rs).
#
#   bash examples/soak.sh [MINUTES] [FIRST_SEED] [LAST_SEED]
#
# MINUTES (default 30) bounds the whole soak: a seed is started only if its duration
# limit still fits. Seeds count up from FIRST_SEED (default 100), stopping after
# LAST_SEED (default: no limit but the time). Environment: TORRENT_ACTORS (the binary,
# default target/release/torrent-actors), SOAK_SIZE (default 128MiB), SOAK_LIMIT_S (each
# run's duration limit, default 240), SOAK_KEEP=1 to keep every run's folder (failed
# runs' folders are always kept). Everything runs on 127.0.0.1; each run's processes are
# its own children, stopped by the swarm command at its limit, and `timeout` backs that.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${TORRENT_ACTORS:-$here/target/release/torrent-actors}
minutes=${1:-30}
first=${2:-100}
last=${3:-}
size=${SOAK_SIZE:-128MiB}
limit_s=${SOAK_LIMIT_S:-240}
max_waste=1.5
max_failures=16
piece_bytes=$((4 << 20))
# Time for planning (hashing the torrent), checking the leechers' files and reporting.
overhead_s=60
work=$(mktemp -d "${TMPDIR:-/tmp}/torrent-actors-soak.XXXXXX")
python=/usr/bin/python3

[ -x "$bin" ] || { echo "no binary at $bin (cargo build --release, or set TORRENT_ACTORS)" >&2; exit 2; }

# One line from a report: outcome, and per leecher its completion time and waste.
summarise() {
    "$python" - "$1" "$max_waste" "$max_failures" "$piece_bytes" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
limit = float(sys.argv[2])
max_failures = int(sys.argv[3])
piece = int(sys.argv[4])
ok = r["outcome"] == "complete"
parts = []
for l in r["leechers"]:
    waste = l.get("waste_ratio")
    failures = l["hash_failures"]
    # Bytes received per byte of the torrent, the failed pieces' bytes left out.
    besides = (l["received"] - failures * piece) / max(r["size"], 1)
    if not l["completed"] or waste is None or l["received"] / max(r["size"], 1) > limit or failures > max_failures:
        ok = False
    done = "%.0fs" % l["completion_secs"] if l.get("completion_secs") is not None else "unfinished"
    shown = "n/a" if waste is None else "%.2f" % waste
    parts.append("L%d %s waste %s (received %.2fx the torrent, %.2fx besides failed pieces) fails %d bans %d" % (
        l["index"], done, shown, l["received"] / r["size"], besides, failures, l["banned"]))
print("%s %s in %.0fs | %s" % ("PASS" if ok else "FAIL", r["outcome"], r["elapsed_secs"], "; ".join(parts)))
EOF
}

deadline=$(( $(date +%s) + minutes * 60 ))
seed=$first
passed=0
failed=0
echo "soak: $minutes min from seed $first, $size, each run at most ${limit_s}s; work folder $work"
while :; do
    [ -n "$last" ] && [ "$seed" -gt "$last" ] && break
    now=$(date +%s)
    if [ $(( now + limit_s + overhead_s )) -gt "$deadline" ]; then
        break
    fi
    dir="$work/seed-$seed"
    mkdir -p "$dir"
    set +e
    TORRENT_ACTORS_DHT_BOOTSTRAP= timeout $(( limit_s + overhead_s )) "$bin" swarm \
        --flaky 30 --choker 10 --liar 5 --partial 10 --slow 5 --fast 1 --leechers 3 \
        --size "$size" --piece-size 4MiB --seed "$seed" --duration-limit "${limit_s}s" \
        --leecher-arg=--max-in-progress-mib=8 \
        --work-dir "$dir/run" --report "$dir/report.json" > "$dir/output.txt" 2>&1
    code=$?
    set -e
    if [ -f "$dir/report.json" ]; then
        line=$(summarise "$dir/report.json")
    else
        line="FAIL no report (exit $code; see $dir/output.txt)"
    fi
    echo "seed $seed: $line"
    case $line in
        PASS*)
            passed=$((passed + 1))
            [ "${SOAK_KEEP:-0}" = 1 ] || rm -rf "$dir"
            ;;
        *)
            failed=$((failed + 1))
            # The leechers' 128 MiB files are not needed to read what went wrong.
            rm -f "$dir"/run/leecher-*/*.bin "$dir"/run/leecher-*/*/*.bin 2> /dev/null || true
            ;;
    esac
    seed=$((seed + 1))
done
echo "soak done: $passed passed, $failed failed, seeds $first..$((seed - 1)); failed runs kept in $work"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
