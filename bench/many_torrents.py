#!/usr/bin/env python3
"""Measures `serve` with many small seeding torrents on loopback: threads, idle CPU,
RSS, and (with --restart) the start-up time with resume data present.

    python3 bench/many_torrents.py BINARY --torrents 200
    python3 bench/many_torrents.py BINARY --torrents 1000 --restart

Each torrent is one file of --size bytes (default 20,000: two 16 KiB pieces) whose data is in the download
folder before it is added, so it is checked and seeds. Idle CPU is read from
/proc/PID/stat over 10 s with no peer connected. With --restart the daemon is stopped
(SIGTERM: resume files and the session are saved) and started again on the same
folders; start-up is the time from launch until the API lists every torrent seeding.
Everything runs on 127.0.0.1, the DHT is off, and the daemon is stopped by its PID."""
import argparse, base64, hashlib, http.client, json, os, signal, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")

def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, str):
        return bencode(v.encode())
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(v)

def content(n, size):
    block = bytes(((i * 13 + n * 101) % 253) for i in range(min(size, 65536)))
    return (block * (size // len(block) + 1))[:size]

def torrent(name, data):
    pieces = b"".join(hashlib.sha1(data[i:i + 16384]).digest() for i in range(0, len(data), 16384))
    return bencode({"info": {"name": name, "length": len(data), "piece length": 16384, "pieces": pieces}})

class Serve:
    def __init__(self, binary, dl, state, extra):
        self.log = open(os.path.join(os.path.dirname(dl), "serve.log"), "ab")
        self.started = time.monotonic()
        env = dict(os.environ, TORRENT_ACTORS_DHT_BOOTSTRAP="")
        env.pop("TORRENT_ACTORS_API_KEY", None)
        self.proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--port", "0",
                                      "--bind", "127.0.0.1", "--no-dht", "--dir", dl, "--state", state,
                                      "--max-torrent-mib", "1"] + extra,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = self.proc.stdout.readline().decode()
        assert line.startswith("serving "), line
        self.port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        self.token = self.call("GET", "/api/token")["token"]

    def call(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {}
        if method != "GET":
            headers["X-TA-Token"] = self.token
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        assert r.status < 300, (r.status, data[:300])
        return json.loads(data) if data else None

    def stat(self):
        f = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])  # utime + stime, fields 14 and 15

    def status(self):
        s = {}
        for line in open(f"/proc/{self.proc.pid}/status"):
            k, v = line.split(":", 1)
            s[k] = v.strip()
        return s

    def threads(self):
        out = {}
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                comm = open(f"/proc/{self.proc.pid}/task/{tid}/comm").read().strip()
            except OSError:
                continue
            out[comm] = out.get(comm, 0) + 1
        return out

    def wait_seeding(self, n, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            ts = self.call("GET", "/api/torrents")
            if len(ts) == n and all(t["state"] == "seeding" for t in ts):
                return time.monotonic() - self.started
            time.sleep(0.1)
        sys.exit(f"not all {n} seeding within {limit} s")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

def per_thread(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            raw = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        f = raw.rsplit(")", 1)[1].split()
        out[(tid, comm)] = int(f[11]) + int(f[12])
    return out

def idle(serve, secs):
    a, ta, t0 = serve.stat(), per_thread(serve.proc.pid), time.monotonic()
    time.sleep(secs)
    b, tb, t1 = serve.stat(), per_thread(serve.proc.pid), time.monotonic()
    busy = {}
    for k, v in tb.items():
        d = v - ta.get(k, 0)
        if d:
            busy[k[1]] = busy.get(k[1], 0) + d
    print("  busy threads over the idle window (ticks of 1/%d s): %s" % (TICK, json.dumps(busy, sort_keys=True)))
    return 100.0 * (b - a) / TICK / (t1 - t0)

def report(serve, what):
    st = serve.status()
    th = serve.threads()
    cpu = idle(serve, 10)
    print(f"{what}: threads {st['Threads']} {json.dumps(th, sort_keys=True)}; "
          f"RSS {int(st['VmRSS'].split()[0]) / 1024:.1f} MiB (peak {int(st['VmHWM'].split()[0]) / 1024:.1f}); "
          f"idle CPU over 10 s {cpu:.2f} % of a core", flush=True)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--torrents", type=int, default=200)
    ap.add_argument("--restart", action="store_true")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--size", type=int, default=20000, help="bytes per torrent (16 KiB pieces)")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds to wait before measuring idle")
    a = ap.parse_args()
    extra = ["--threads", str(a.threads)] if a.threads else []
    tmp = tempfile.mkdtemp(prefix="ta-many-")
    dl, state = os.path.join(tmp, "dl"), os.path.join(tmp, "state")
    os.makedirs(dl)
    bodies = []
    for n in range(a.torrents):
        name = f"seed-{n}.bin"
        data = content(n, a.size)
        open(os.path.join(dl, name), "wb").write(data)
        bodies.append({"torrent_base64": base64.b64encode(torrent(name, data)).decode()})
    s = Serve(a.binary, dl, state, extra)
    t0 = time.monotonic()
    for b in bodies:
        s.call("POST", "/api/torrents", b)
    s.wait_seeding(a.torrents, 600)
    print(f"{a.torrents} torrents added and seeding in {time.monotonic() - t0:.1f} s", flush=True)
    # The resume files of the pieces found on disk are saved within 5 s (resume_every):
    # idle is measured after that.
    time.sleep(a.settle)
    report(s, f"{a.torrents} seeding")
    if a.restart:
        s.stop()
        s = Serve(a.binary, dl, state, extra)
        took = s.wait_seeding(a.torrents, 600)
        st = s.status()
        print(f"restart with resume data: all {a.torrents} seeding {took:.1f} s after launch; "
              f"RSS then {int(st['VmRSS'].split()[0]) / 1024:.1f} MiB (peak {int(st['VmHWM'].split()[0]) / 1024:.1f})", flush=True)
        time.sleep(a.settle)
        report(s, f"{a.torrents} seeding after restart")
    s.stop()
    subprocess.run(["rm", "-rf", tmp])

main()
