#!/usr/bin/python3
"""uTP next to TCP over loopback, one sitting: a SIZE download from a libtorrent seeder
(tests/support/lt_peer.py, seed mode) by our `get` over TCP and over uTP, by a libtorrent
leecher over both (libtorrent's own rates, for reference), and by a uTP-only libtorrent
leecher from our `seed`. Prints one line per run and a JSON summary.

  /usr/bin/python3 bench/utp_bench.py target/release/torrent-actors [--size-mib 256] [--runs 2]

Loopback only; nothing is timed in a test: this is a benchmark.
"""
import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LT_PEER = os.path.join(HERE, "..", "tests", "support", "lt_peer.py")
PY = "/usr/bin/python3"
ENV = dict(os.environ, TORRENT_ACTORS_DHT_BOOTSTRAP="")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def start_lt_seeder(torrent, data, transport, work):
    port = free_port()
    ready = os.path.join(work, "ready-%d.json" % port)
    log = open(os.path.join(work, "seeder-%d.log" % port), "w")
    p = subprocess.Popen([PY, LT_PEER, "seed", "--torrent", torrent, "--data", data,
                          "--port", str(port), "--ready", ready, "--seed-mode",
                          "--ready-without-announce", "--transport", transport,
                          "--max-lifetime", "600"], stdout=log, stderr=log)
    deadline = time.time() + 60
    while not os.path.exists(ready):
        if p.poll() is not None or time.time() > deadline:
            sys.exit("libtorrent seeder did not start")
        time.sleep(0.05)
    return p, port


def start_our_seed(binary, torrent, data, work, extra=()):
    """Our `seed` (with `extra` options) and its port, once it says it is seeding."""
    out = open(os.path.join(work, "seed%s.out" % "".join(extra)), "w+")
    p = subprocess.Popen([binary, "seed", "--no-dht", "--bind", "127.0.0.1", "--port", "0",
                          *extra, "--dir", data, torrent], stdout=out,
                         stderr=subprocess.STDOUT, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline:
        out.seek(0)
        for line in out.read().splitlines():
            if line.startswith("seeding ") and " on " in line:
                return p, int(line.rsplit(":", 1)[1])
        time.sleep(0.1)
    out.seek(0)
    sys.exit("our seed did not start: %r" % out.read()[-500:])


def make_payload(work, size_mib, piece_exp):
    """SIZE_MIB random bytes in work/data/payload.bin and their torrent."""
    data = os.path.join(work, "data")
    os.makedirs(data)
    payload = os.path.join(data, "payload.bin")
    with open(payload, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    torrent = os.path.join(work, "t.torrent")
    subprocess.run(["mktorrent", "-l", str(piece_exp), "-o", torrent, payload], check=True,
                   stdout=subprocess.DEVNULL)
    return data, torrent


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def timed(cmd, env=None):
    cpu0, t0 = child_cpu(), time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return r.returncode, time.monotonic() - t0, child_cpu() - cpu0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    work = tempfile.mkdtemp(prefix="utp-bench-")
    data, torrent = make_payload(work, a.size_mib, 20)
    results = []

    def record(name, rc, secs, cpu):
        mib_s = a.size_mib / secs if rc == 0 else 0.0
        results.append({"case": name, "rc": rc, "seconds": round(secs, 3),
                        "mib_s": round(mib_s, 1), "cpu_s": round(cpu, 2)})
        print("%-34s rc=%d %7.2f s %8.1f MiB/s cpu %.2f s" % (name, rc, secs, mib_s, cpu),
              flush=True)

    seeders = {t: start_lt_seeder(torrent, data, t, work) for t in ("tcp", "utp")}
    our_seed, our_port = start_our_seed(binary, torrent, data, work)
    try:
        for run in range(a.runs):
            for t, utp in (("tcp", "off"), ("utp", "only")):
                out = os.path.join(work, "out-%s-%d" % (t, run))
                rc, secs, cpu = timed([binary, "get", "--no-dht", "--no-pex", "--bind",
                                       "127.0.0.1", "--port", "0", "--utp", utp, "-o", out,
                                       "--peer", "127.0.0.1:%d" % seeders[t][1], torrent],
                                      env=ENV)
                record("libtorrent -> our get over " + t, rc, secs, cpu)
                subprocess.run(["rm", "-rf", out])
            for t in ("tcp", "utp"):
                out = os.path.join(work, "lt-%s-%d" % (t, run))
                rc, secs, cpu = timed([PY, LT_PEER, "leech", "--torrent", torrent, "--out",
                                       out, "--port", str(free_port()), "--timeout", "300",
                                       "--transport", t, "--peer",
                                       "127.0.0.1:%d" % seeders[t][1]])
                record("libtorrent -> libtorrent over " + t, rc, secs, cpu)
                subprocess.run(["rm", "-rf", out])
            for t in ("tcp", "utp"):
                out = os.path.join(work, "from-ours-%s-%d" % (t, run))
                rc, secs, cpu = timed([PY, LT_PEER, "leech", "--torrent", torrent, "--out",
                                       out, "--port", str(free_port()), "--timeout", "300",
                                       "--transport", t, "--peer", "127.0.0.1:%d" % our_port])
                record("our seed -> libtorrent over " + t, rc, secs, cpu)
                subprocess.run(["rm", "-rf", out])
    finally:
        for p, _ in seeders.values():
            stop(p)
        stop(our_seed)
        subprocess.run(["rm", "-rf", work])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
