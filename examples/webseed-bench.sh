#!/usr/bin/env bash
# Web seed (BEP 19) download against curl, same file, same local nginx, same sitting.
#
#   examples/webseed-bench.sh [BINARY] [SIZE_MIB] [RUNS]
#
# Serves a SIZE_MIB (default 256) file of random bytes from nginx on 127.0.0.1 (nginx-light
# from Debian; `apt-get install nginx-light`), makes a torrent whose only source is that
# URL (mktorrent -w, 256 KiB pieces), then alternates `curl -o` and `torrent-actors get`
# RUNS times (default 3) into the same folder, printing wall, user+sys CPU and peak RSS of
# each (GNU time). Both write the file to the same disk; `get` also hashes every piece.
# nginx is started and stopped by its PID; everything lives in a temporary folder.
set -euo pipefail

bin=${1:-target/release/torrent-actors}
size_mib=${2:-256}
runs=${3:-3}
bin=$(realpath "$bin")
work=$(mktemp -d /tmp/ta-webseed-bench.XXXXXX)
nginx_pid=

cleanup() {
    if [[ -n $nginx_pid ]]; then kill "$nginx_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# nginx's worker runs as another user when started as root: it must read the file.
chmod 755 "$work"
mkdir -p "$work/www" "$work/out" "$work/nginx"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/www/file.bin"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$port;
        root $work/www;
    }
}
EOF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
nginx_pid=$!
for _ in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' -r 0-0 "http://127.0.0.1:$port/file.bin") == 206 ]] && break
    sleep 0.1
done

mktorrent --no-date -l 18 -w "http://127.0.0.1:$port/file.bin" -o "$work/t.torrent" "$work/www/file.bin" >/dev/null

run() {
    local what=$1; shift
    rm -rf "$work/out" && mkdir -p "$work/out"
    sync
    /usr/bin/time -f "$what wall %e s, cpu %U+%S s, rss %M KiB" "$@" 2>&1 >/dev/null | grep "^$what" || true
    cmp -s "$work/out/file.bin" "$work/www/file.bin" || echo "$what: output differs!"
}

echo "$size_mib MiB from nginx on 127.0.0.1:$port, $runs runs each, alternating"
for _ in $(seq "$runs"); do
    run curl curl -s -o "$work/out/file.bin" "http://127.0.0.1:$port/file.bin"
    run torrent-actors env TORRENT_ACTORS_DHT_BOOTSTRAP= "$bin" get --no-dht --bind 127.0.0.1 --port 0 -o "$work/out" "$work/t.torrent"
done
