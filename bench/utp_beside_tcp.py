#!/usr/bin/python3
"""Does a uTP upload yield to a TCP flow on a shared bottleneck? BEP 29's LEDBAT should:
it backs off once queuing delay passes its 100 ms target, where TCP's CUBIC fills the
queue. Run it through bench/utp_beside_tcp.sh, which makes a network namespace of its own
whose loopback is a 40 Mbit/s bottleneck for data packets (tbf, 500 ms of queue;
acknowledgements pass freely) and runs this inside.

Each case is an upload of SIZE by a sender, to a libtorrent leecher, timed alone and then
beside a bulk TCP flow (a plain socket sending zeros through the same bottleneck):

  ours over uTP   our `seed --utp only` (librqbit-utp: CUBIC)
  lt over uTP     a libtorrent seeder, uTP only (libtorrent's uTP: LEDBAT)
  ours over TCP   our `seed --utp off` (the kernel's TCP: the control)

A sender that yields takes far longer beside TCP than alone, and leaves TCP near its
rate alone; one that competes as TCP does takes about twice as long and halves TCP.

  bench/utp_beside_tcp.sh target/release/torrent-actors [--size-mib 96] [--runs 1]

Nothing here leaves the namespace: every address is its own 127.0.0.1.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from utp_bench import (LT_PEER, PY, free_port, make_payload, start_lt_seeder,  # noqa: E402
                       start_our_seed, stop)

# The bulk TCP flow: a sender thread and a receiver that notes (time, bytes) every 100 ms
# into a file, until killed or DURATION passes.
BULK = r"""
import socket, sys, threading, time
port, duration, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(1)
def send():
    c, _ = srv.accept(); block = b"\0" * 65536
    try:
        while True: c.sendall(block)
    except OSError: pass
threading.Thread(target=send, daemon=True).start()
rx = socket.create_connection(("127.0.0.1", port)); rx.settimeout(1.0)
total, mark, end = 0, time.time(), time.time() + duration
with open(out, "w") as f:
    while time.time() < end:
        try:
            total += len(rx.recv(1 << 20))
        except socket.timeout:
            pass
        if time.time() - mark >= 0.1:
            mark = time.time(); f.write("%.3f %d\n" % (mark, total)); f.flush()
"""


def leech(torrent, out, transport, port, limit):
    t0 = time.time()
    r = subprocess.run([PY, LT_PEER, "leech", "--torrent", torrent, "--out", out, "--port",
                        str(free_port()), "--timeout", str(limit), "--transport", transport,
                        "--peer", "127.0.0.1:%d" % port],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = time.time()
    subprocess.run(["rm", "-rf", out])
    return r.returncode, t0, t1


def bulk_rate(samples, t0, t1):
    """MiB/s the bulk flow received between t0 and t1."""
    inside = [(t, n) for t, n in samples if t0 <= t <= t1]
    if len(inside) < 2:
        return 0.0
    (ta, na), (tb, nb) = inside[0], inside[-1]
    return (nb - na) / (tb - ta) / 2**20 if tb > ta else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--size-mib", type=int, default=96)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    work = tempfile.mkdtemp(prefix="utp-beside-tcp-")
    data, torrent = make_payload(work, a.size_mib, 18)
    limit = 300
    senders = {}
    results = []
    try:
        senders["ours over uTP"] = start_our_seed(binary, torrent, data, work,
                                                  ("--utp", "only"))
        # A second folder for the second seed (one process per folder), the same bytes.
        data2 = os.path.join(work, "data2")
        os.makedirs(data2)
        os.link(os.path.join(data, "payload.bin"), os.path.join(data2, "payload.bin"))
        senders["ours over TCP"] = start_our_seed(binary, torrent, data2, work,
                                                  ("--utp", "off"))
        senders["lt over uTP"] = start_lt_seeder(torrent, data, "utp", work)
        transport = {"ours over uTP": "utp", "ours over TCP": "tcp", "lt over uTP": "utp"}
        # The bulk flow alone, for its rate without company.
        samples_file = os.path.join(work, "bulk-alone.txt")
        subprocess.run([PY, "-c", BULK, str(free_port()), "6", samples_file], check=True)
        samples = [tuple(map(float, l.split())) for l in open(samples_file)]
        tcp_alone = bulk_rate(samples, samples[0][0] + 1, samples[-1][0])
        print("bulk TCP alone: %.2f MiB/s" % tcp_alone, flush=True)
        for run in range(a.runs):
            for name, (_, port) in senders.items():
                rc, t0, t1 = leech(torrent, os.path.join(work, "alone"), transport[name],
                                   port, limit)
                alone = t1 - t0
                # The bulk flow starts a second after the upload: LEDBAT measures queuing
                # delay against the least delay it has seen, so an upload that began on
                # a queue already full would take that queue for the base (the latecomer
                # problem) and never yield.
                samples_file = os.path.join(work, "bulk-%d.txt" % run)
                bulk = subprocess.Popen(
                    ["bash", "-c", "sleep 1; exec %s -c \"$0\" %d %d %s"
                     % (PY, free_port(), limit + 10, samples_file), BULK])
                rc2, b0, b1 = leech(torrent, os.path.join(work, "beside"), transport[name],
                                    port, limit)
                stop(bulk)
                samples = [tuple(map(float, l.split())) for l in open(samples_file)]
                # TCP's rate from its first second on, while the upload lasted.
                tcp_beside = bulk_rate(samples, samples[0][0] + 1 if samples else b0, b1)
                beside = b1 - b0
                row = {"case": name, "run": run, "rc": [rc, rc2],
                       "alone_s": round(alone, 2), "beside_s": round(beside, 2),
                       "upload_alone_mib_s": round(a.size_mib / alone, 2),
                       "upload_beside_mib_s": round(a.size_mib / beside, 2),
                       "tcp_alone_mib_s": round(tcp_alone, 2),
                       "tcp_beside_mib_s": round(tcp_beside, 2)}
                results.append(row)
                print("%-14s alone %6.1f s (%.2f MiB/s); beside TCP %6.1f s (%.2f MiB/s), "
                      "TCP meanwhile %.2f MiB/s (%.0f %% of its rate alone)%s"
                      % (name, alone, a.size_mib / alone, beside, a.size_mib / beside,
                         tcp_beside, 100 * tcp_beside / tcp_alone if tcp_alone else 0,
                         "" if rc == rc2 == 0 else "  FAILED rc=%s" % [rc, rc2]),
                      flush=True)
    finally:
        for p, _ in senders.values():
            stop(p)
        subprocess.run(["rm", "-rf", work])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
