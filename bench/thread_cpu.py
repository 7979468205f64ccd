#!/usr/bin/env python3
"""Runs a command and reports the CPU time of each of its threads, by thread name.

    python3 bench/thread_cpu.py --out FILE.jsonl -- COMMAND ARGS...

Samples /proc/PID/task/*/stat every 50 ms while the command runs and keeps each
thread's last figure (a thread's time after its last sample, at most 50 ms, is missed).
Appends one JSON object to FILE: wall seconds, total CPU seconds, and CPU seconds per
thread name (threads of one name summed). Exits with the command's status."""
import json, os, subprocess, sys, time

TICK = os.sysconf("SC_CLK_TCK")

def sample(pid, seen):
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            raw = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        f = raw.rsplit(")", 1)[1].split()
        seen[tid] = (comm, int(f[11]), int(f[12]))

def main():
    args = sys.argv[1:]
    out = args[args.index("--out") + 1]
    cmd = args[args.index("--") + 1:]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd)
    seen = {}
    while proc.poll() is None:
        sample(proc.pid, seen)
        time.sleep(0.05)
    wall = time.monotonic() - t0
    by_name = {}
    for comm, utime, stime in seen.values():
        u, s = by_name.get(comm, (0.0, 0.0))
        by_name[comm] = (u + utime / TICK, s + stime / TICK)
    total = sum(u + s for u, s in by_name.values())
    with open(out, "a") as f:
        f.write(json.dumps({"cmd": " ".join(cmd), "wall_s": round(wall, 2), "cpu_s": round(total, 2),
                            "threads": {k: {"user": round(u, 2), "sys": round(s, 2)} for k, (u, s) in sorted(by_name.items())}}) + "\n")
    sys.exit(proc.returncode)

main()
