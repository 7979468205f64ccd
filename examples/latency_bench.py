#!/usr/bin/python3
"""A download over a slow, far link, on loopback: a libtorrent seeder behind a delaying
TCP proxy, and a leecher (this project's `get`, or libtorrent) that reaches the seeder
only through the proxy.

The proxy delays each direction by DELAY (one way), paces each direction to RATE, and
holds at most a bounded number of bytes per direction (it stops reading while full, so
the sender's TCP window fills as behind a real bottleneck). Everything listens on
127.0.0.1. Run with Debian's python (python3-libtorrent):

  /usr/bin/python3 examples/latency_bench.py --delay-ms 25 --rate-mib 32 --size-mib 64 \
      --client ours=target/release/torrent-actors --client lt --runs 2

Each run prints `RESULT client=... rtt_ms=... secs=... mib_s=...`. Exit 0 when every run
completed with the right data. The seeder is /work/shared/bench/lt_client.py's `seed`
(its tuned settings), started and stopped by PID; the libtorrent leecher uses the same
settings, told the proxy's address instead of a tracker's.
"""
import argparse
import asyncio
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.environ.get("LT_BENCH_DIR", "/work/shared/bench")
CHUNK = 64 * 1024
# Bytes one direction may hold, whatever the rate and delay.
MAX_IN_FLIGHT = 64 * 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def pipe(reader, writer, delay, rate):
    """Copies one direction, each chunk arriving `delay` after it left at `rate`."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()
    room = asyncio.Condition()
    state = {"in_flight": 0, "departed": 0.0}
    cap = min(MAX_IN_FLIGHT, int(rate * delay * 2) + 4 * 1024 * 1024) if rate else MAX_IN_FLIGHT

    async def read_side():
        while True:
            data = await reader.read(CHUNK)
            now = loop.time()
            if not data:
                await queue.put((now + delay, None))
                return
            start = max(now, state["departed"])
            departed = start + (len(data) / rate if rate else 0.0)
            state["departed"] = departed
            await queue.put((departed + delay, data))
            async with room:
                state["in_flight"] += len(data)
                await room.wait_for(lambda: state["in_flight"] < cap)
            # Paced: read on only when the link has sent what it has.
            ahead = departed - loop.time()
            if ahead > 0.002:
                await asyncio.sleep(ahead)

    async def write_side():
        while True:
            arrives, data = await queue.get()
            wait = arrives - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                writer.close()
                return
            writer.write(data)
            await writer.drain()
            async with room:
                state["in_flight"] -= len(data)
                room.notify_all()

    tasks = [asyncio.create_task(read_side()), asyncio.create_task(write_side())]
    try:
        await asyncio.gather(*tasks)
    except (ConnectionError, OSError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        writer.close()


async def proxy_main(listen_port, target_port, delay, rate, ready, stop):
    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, up_writer, delay, rate),
            pipe(up_reader, client_writer, delay, rate),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.1)
    server.close()


def start_proxy(listen_port, target_port, delay, rate):
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(proxy_main(listen_port, target_port, delay, rate, ready, stop)),
        daemon=True,
    )
    thread.start()
    ready.wait(10)
    return stop


def wait_listening(port, seconds):
    end = time.time() + seconds
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def make_torrent(work, size):
    import libtorrent as lt

    data_dir = os.path.join(work, "seed")
    os.makedirs(data_dir)
    path = os.path.join(data_dir, "payload.bin")
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    fs = lt.file_storage()
    lt.add_files(fs, path)
    t = lt.create_torrent(fs, 256 * 1024)
    lt.set_piece_hashes(t, data_dir)
    torrent = os.path.join(work, "payload.torrent")
    with open(torrent, "wb") as f:
        f.write(lt.bencode(t.generate()))
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return data_dir, torrent, digest


def lt_leech(torrent, out, proxy_port, timeout):
    """libtorrent with the bench's settings, told only the proxy's address."""
    sys.path.insert(0, BENCH)
    import libtorrent as lt
    import lt_client

    ses = lt.session(lt_client.settings(free_port(), False, "leech"))
    h = lt_client.add(ses, torrent, out, False)
    h.connect_peer(("127.0.0.1", proxy_port))
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = h.status()
        if st.is_seeding or st.is_finished:
            break
        ses.wait_for_alert(50)
        ses.pop_alerts()
    secs = time.time() - t0
    done = h.status().is_seeding or h.status().is_finished
    del h
    del ses
    return done, secs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--delay-ms", type=float, action="append", required=True,
                   help="one-way delay; repeat for more settings")
    p.add_argument("--rate-mib", type=float, default=32.0)
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--client", action="append", required=True,
                   help="lt, or NAME=PATH of a torrent-actors binary")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=180)
    a = p.parse_args()

    work = tempfile.mkdtemp(prefix="latency-bench-")
    data_dir, torrent, digest = make_torrent(work, a.size_mib << 20)
    seed_port = free_port()
    env = dict(os.environ, TORRENT_ACTORS_DHT_BOOTSTRAP="")
    seeder = subprocess.Popen(
        ["/usr/bin/python3", os.path.join(BENCH, "lt_client.py"), "seed", "-t", torrent,
         "-p", str(seed_port), "-d", data_dir, "--seed-mode", "--max-time", "1800"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "seeder.log"), "w"))
    ok = True
    try:
        if not wait_listening(seed_port, 30):
            print("the seeder did not listen", file=sys.stderr)
            return 1
        rate = a.rate_mib * 1024 * 1024
        for run in range(a.runs):
            for delay_ms in a.delay_ms:
                for client in a.client:
                    proxy_port = free_port()
                    stop = start_proxy(proxy_port, seed_port, delay_ms / 1000.0, rate)
                    out = tempfile.mkdtemp(dir=work, prefix="out-")
                    if client == "lt":
                        name = "libtorrent"
                        done, secs = lt_leech(torrent, out, proxy_port, a.timeout)
                    else:
                        name, exe = client.split("=", 1)
                        t0 = time.time()
                        try:
                            r = subprocess.run(
                                [exe, "get", "--no-dht", "--bind", "127.0.0.1", "--port",
                                 str(free_port()), "--peer", "127.0.0.1:%d" % proxy_port,
                                 "-o", out, torrent],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                timeout=a.timeout)
                            done = r.returncode == 0
                        except subprocess.TimeoutExpired:
                            done = False
                        secs = time.time() - t0
                    stop.set()
                    got = os.path.join(out, "payload.bin")
                    right = done and os.path.exists(got) and \
                        hashlib.sha256(open(got, "rb").read()).hexdigest() == digest
                    ok = ok and right
                    print("RESULT client=%s rtt_ms=%g rate_mib=%g size_mib=%d run=%d ok=%s "
                          "secs=%.2f mib_s=%.2f" % (name, 2 * delay_ms, a.rate_mib, a.size_mib,
                                                    run, right, secs, a.size_mib / secs),
                          flush=True)
                    time.sleep(0.5)
    finally:
        seeder.send_signal(signal.SIGTERM)
        try:
            seeder.wait(10)
        except subprocess.TimeoutExpired:
            seeder.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
