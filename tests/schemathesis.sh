#!/usr/bin/env bash
# Runs schemathesis against a fresh `torrent-actors serve` on loopback: every operation of
# src/serve/openapi.json is fed generated requests, valid and invalid, and no answer may be
# a 5xx. The daemon gets throw-away folders, no DHT and ports picked by the kernel; it is
# stopped by its PID, and the script exits with schemathesis' status.
#
# Usage: tests/schemathesis.sh [TORRENT_ACTORS_BINARY]
#   SCHEMATHESIS     the schemathesis executable (default: schemathesis on PATH)
#   ST_MAX_EXAMPLES  test cases per operation and phase (default 30)
#   ST_MAX_TIME      time budget of the whole run in seconds (default 240)
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-${TORRENT_ACTORS_BIN:-$here/target/debug/torrent-actors}}"
st="${SCHEMATHESIS:-schemathesis}"
max_examples="${ST_MAX_EXAMPLES:-30}"
max_time="${ST_MAX_TIME:-240}"

work="$(mktemp -d -t ta-schemathesis.XXXXXX)"
pid=""
stop_daemon() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "the daemon did not stop within 10 s of SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    fi
    pid=""
}
cleanup() {
    stop_daemon
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/dl" "$work/state"
mkfifo "$work/out"
TORRENT_ACTORS_DHT_BOOTSTRAP= "$bin" serve --listen 127.0.0.1:0 --port 0 --bind 127.0.0.1 \
    --dir "$work/dl" --state "$work/state" --no-dht \
    >"$work/out" 2>"$work/daemon.log" &
pid=$!

# The first stdout line names the URL: `serving http://127.0.0.1:PORT/ (peers on port N)`.
url=""
exec 3<"$work/out"
if read -r -t 30 line <&3; then
    url="$(sed -n 's|^serving \(http://[^ ]*\)/ (peers on port [0-9]*)$|\1|p' <<<"$line")"
fi
# Keep draining stdout so the daemon never blocks on a full pipe.
cat <&3 >/dev/null &
exec 3<&-
if [[ -z "$url" ]]; then
    echo "the daemon did not say where it serves within 30 s; its log:" >&2
    cat "$work/daemon.log" >&2
    exit 1
fi
echo "daemon at $url (pid $pid)"

token="$(curl -sf --max-time 10 "$url/api/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"

# Random info-hashes only ever meet 404s, so a few real torrents are added first and their
# ids given to schemathesis as a dictionary for `{id}`; more .torrents and magnet links are
# offered for the bodies of POST /torrents. Their data does not exist and no peer has it:
# the torrents stay paused, checking or downloading, which is all the API needs.
python3 - "$work" <<'PY'
import base64, hashlib, json, sys

def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, str):
        return bencode(v.encode())
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"

def torrent(n):
    piece = 16384
    if n % 2:
        files = [{"length": 20000 + 7 * n + i, "path": ["sub", "f%d.bin" % i]} for i in range(3)]
        total = sum(f["length"] for f in files)
        info = {"name": "st-multi-%d" % n, "piece length": piece, "files": files}
    else:
        total = 40000 + n
        info = {"name": "st-single-%d.bin" % n, "piece length": piece, "length": total}
    count = -(-total // piece)
    info["pieces"] = b"".join(hashlib.sha1(b"%d-%d" % (n, i)).digest() for i in range(count))
    raw = bencode({"info": info})
    return hashlib.sha1(bencode(info)).hexdigest(), base64.b64encode(raw).decode()

work = sys.argv[1]
added = [torrent(n) for n in range(4)]
offered = [torrent(n) for n in range(4, 8)]
json.dump({"added": added, "offered": offered}, open(work + "/torrents.json", "w"))
PY
ids=()
n=0
for b64 in $(python3 -c 'import json,sys; print("\n".join(t[1] for t in json.load(open(sys.argv[1]))["added"]))' "$work/torrents.json"); do
    paused=true
    [[ $n -eq 0 ]] && paused=false
    answer="$(curl -s --max-time 10 -H "X-TA-Token: $token" -H 'Content-Type: application/json' \
        -d "{\"torrent_base64\": \"$b64\", \"paused\": $paused, \"labels\": [\"st\"]}" "$url/api/torrents")"
    id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$answer")" || {
        echo "adding a torrent failed: $answer" >&2
        exit 1
    }
    ids+=("$id")
    n=$((n + 1))
done
{
    printf '[dictionaries.torrents]\nvalues = ['
    printf '"%s", ' "${ids[@]}"
    printf ']\n\n[dictionaries.torrent_files]\nvalues = ['
    python3 -c 'import json,sys; print(", ".join(json.dumps(t[1]) for t in json.load(open(sys.argv[1]))["offered"]), end="")' "$work/torrents.json"
    printf ']\n\n[dictionaries.magnets]\nvalues = ['
    python3 -c 'import json,sys; print(", ".join(json.dumps("magnet:?xt=urn:btih:%s&dn=st" % t[0]) for t in json.load(open(sys.argv[1]))["offered"]), end="")' "$work/torrents.json"
    printf ']\n\n[parameters]\n'
    printf '"path.id" = { dictionary = "torrents", probability = 0.7 }\n'
    printf '"body.torrent_base64" = { dictionary = "torrent_files", probability = 0.5 }\n'
    printf '"body.magnet" = { dictionary = "magnets", probability = 0.5 }\n'
} >"$work/schemathesis.toml"

# The event streams never end, so they are left out: a request to one would only time out.
# So are file streams: the running torrent has no seeder, so a read waits for its pieces.
# Run from the throw-away folder: schemathesis leaves a `.schemathesis/` cache in its cwd.
status=0
(cd "$work" && exec "$st" --config-file "$work/schemathesis.toml" run "$url/api/openapi.json" \
    --url "$url/api" \
    --checks not_a_server_error \
    -H "X-TA-Token: $token" \
    --max-examples "$max_examples" \
    --max-time "$max_time" \
    --request-timeout 10 \
    --exclude-path-regex '/(events|stream)$' \
    --workers 1 \
    --seed "${ST_SEED:-20261124}" \
    --no-color \
    --generation-database none) \
    || status=$?

stop_daemon
if grep -q "panicked" "$work/daemon.log"; then
    echo "the daemon panicked during the run:" >&2
    grep -A5 "panicked" "$work/daemon.log" >&2
    [[ $status -ne 0 ]] || status=1
fi
exit "$status"
