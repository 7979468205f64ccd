#!/usr/bin/env bash
# Runs bench/utp_beside_tcp.py in a network namespace of its own (root needed) whose
# loopback has a 40 Mbit/s bottleneck for data and none for acknowledgements, as a home
# uplink would: packets of 1024 bytes and more (full data segments and uTP data packets)
# go through tbf with 500 ms of queue (LEDBAT aims at 100 ms of queuing delay, so a
# shorter queue would never show it more), the small ones straight through. The MTU is
# 1500 so that every packet fits the bucket. The namespace is removed on exit.
#   bench/utp_beside_tcp.sh target/release/torrent-actors [--size-mib 96] [--runs 1]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ns="ta-utp-beside-tcp-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
run() { ip netns exec "$ns" "$@"; }
ip -n "$ns" link set lo mtu 1500 up
run tc qdisc add dev lo root handle 1: htb default 20 r2q 1000
run tc class add dev lo parent 1: classid 1:10 htb rate 1gbit quantum 60000
run tc class add dev lo parent 1: classid 1:20 htb rate 10gbit quantum 60000
run tc qdisc add dev lo parent 1:10 handle 10: tbf rate 40mbit burst 16kb latency 500ms
# IPv4 total length (the 16 bits at offset 2) of 1024 and more, in power-of-two ranges
# (TCP's segments come as larger packets, offloaded, and tbf cuts them up).
for m in 0x0400/0xfc00 0x0800/0xf800 0x1000/0xf000 0x2000/0xe000 0x4000/0xc000 0x8000/0x8000; do
    run tc filter add dev lo parent 1: protocol ip prio 1 u32 \
        match u16 "${m%/*}" "${m#*/}" at 2 flowid 1:10
done
run /usr/bin/python3 "$here/utp_beside_tcp.py" "$@"
