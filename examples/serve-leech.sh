#!/usr/bin/env bash
# `torrent-actors serve` as a one-shot leecher, for the loopback bench harness: starts a
# daemon on throw-away folders, adds TORRENT through the JSON API with OUT as the
# download root, waits for it to seed, touches DONE (the harness stops its clock there)
# and stops the daemon by PID. So the daemon's throughput can be set beside `get`'s:
#
#   ../shared/bench/swarm.sh --leecher 'examples/serve-leech.sh {out} {torrent} {done} {port}' \
#       --size 1G --runs 3
#
# Loopback only, no DHT; every wait is bounded (TIMEOUT_S, default 600).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${TORRENT_ACTORS:-$here/target/release/torrent-actors}
out=$1 torrent=$2 done=$3 port=${4:-0}
timeout_s=${TIMEOUT_S:-600}
state=$(mktemp -d "${TMPDIR:-/tmp}/serve-leech.XXXXXX")
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$state"
}
trap cleanup EXIT
mkdir -p "$out"
TORRENT_ACTORS_DHT_BOOTSTRAP= "$bin" serve --listen 127.0.0.1:0 --bind 127.0.0.1 --port "$port" --no-dht \
    --dir "$out" --state "$state" > "$state/out" 2> "$state/log" &
pid=$!
url=""
for _ in $(seq 1 300); do
    url=$(sed -n 's|^serving \(http://[^ ]*\)/ .*|\1|p' "$state/out" 2>/dev/null)
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "the daemon did not start:" >&2; cat "$state/log" >&2; exit 1; }
/usr/bin/python3 - "$url" "$torrent" "$done" "$timeout_s" <<'PY'
import base64, json, sys, time, urllib.request
url, torrent, done, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def call(method, path, body=None, headers={}):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers=dict(headers))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")
token = call("GET", "/api/token")["token"]
with open(torrent, "rb") as f:
    added = call("POST", "/api/torrents", {"torrent_base64": base64.b64encode(f.read()).decode()},
                 {"X-TA-Token": token})
deadline = time.monotonic() + limit
while True:
    t = call("GET", "/api/torrents/" + added["id"])
    if t["state"] == "seeding":
        break
    if t["state"] == "error" or time.monotonic() > deadline:
        sys.exit("not complete: %s %s" % (t["state"], t.get("error")))
    time.sleep(0.05)
open(done, "w").close()
PY
