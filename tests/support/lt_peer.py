#!/usr/bin/python3
"""A libtorrent peer for the engine's integration tests: a seeder or a leecher that talks
to 127.0.0.1 only. Run it with Debian's /usr/bin/python3, the only interpreter that can
import python3-libtorrent.

  lt_peer.py seed  --torrent T --data DIR --port P --ready FILE
                   [--upload-limit BYTES_PER_S] [--stop-after-upload BYTES]
                   [--seed-mode] [--ready-without-announce] [--max-lifetime S]
                   [--connect HOST:PORT]... [--dht-bootstrap HOST:PORT[,HOST:PORT...]]
                   [--encryption-forced] [--transport tcp|utp|both]
  lt_peer.py leech (--torrent T | --magnet URI) --out DIR --port P --timeout S
                   [--peer HOST:PORT]... [--encryption-forced] [--transport tcp|utp|both]

--transport picks the carriers, both ways: TCP only (the default), uTP only (BEP 29,
on the UDP port of the same number), or both (libtorrent's own default, uTP dialed
first). With uTP in play, or encryption forced, each peer's flags are logged once a
second (0x20000: uTP; 0x80000: RC4).

The seeder checks its data (or trusts it with --seed-mode), waits until its listen socket
is up and a tracker has answered, then writes FILE (JSON) and seeds until it is killed,
until --stop-after-upload bytes went out, or until --max-lifetime runs out.

With --dht-bootstrap (an empty list is allowed) the seeder also runs libtorrent's DHT
on its listen port, 127.0.0.1 only, bootstrapped from the given loopback nodes; it
announces the torrent to the DHT every DHT_ANNOUNCE_EVERY_S seconds, and is ready once
the DHT runs (a tracker reply is then not awaited). LT_DHT_LOG=1 in the environment
logs every DHT packet.

The leecher exits once every piece is downloaded and the session has shut down, so every
block is on disk when the caller looks. It prints one JSON summary line on stdout.

Status lines go to stderr. Exit codes:
  0  done: the leecher finished, or the seeder stopped on a signal, after
     --stop-after-upload, or at the end of its lifetime
  2  refused: a tracker, web seed or peer address outside 127.0.0.0/8
  3  timeout: the leecher did not finish, or the seeder was not ready in time
  4  the listen socket could not be opened (the caller may retry on another port)
  5  the seeder's data is not a complete copy of the torrent, or a storage error
"""
import argparse
import ipaddress
import json
import os
import signal
import sys
import time
import urllib.parse

import libtorrent as lt

EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_TIMEOUT = 3
EXIT_LISTEN = 4
EXIT_DATA = 5

# How long the seeder may take to check its data, open its socket and hear from the
# tracker before it gives up. Test payloads are a few MiB, so this is generous.
READY_LIMIT_S = 60.0

# How often a DHT seeder announces to the DHT. libtorrent announces every 15 minutes by
# default; on loopback, with nodes starting one after the other, tests want it at once.
DHT_ANNOUNCE_EVERY_S = 2.0


def log(*parts):
    print("[lt_peer %s %d]" % (time.strftime("%H:%M:%S"), os.getpid()), *parts,
          file=sys.stderr, flush=True)


def is_loopback_host(host):
    """True only for an IPv4 literal in 127.0.0.0/8: names are not resolved, so nothing
    can steer a test towards another address."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.version == 4 and addr.is_loopback


def refuse_non_loopback(ti):
    """Exits before the session starts if the torrent would make libtorrent contact
    anything but loopback, so a wrong torrent fails loudly instead of leaking traffic."""
    urls = [t.url for t in ti.trackers()] + [w["url"] for w in ti.web_seeds()]
    for url in urls:
        host = urllib.parse.urlsplit(url).hostname or ""
        if not is_loopback_host(host):
            log("refusing %r: only 127.0.0.0/8 is allowed" % url)
            sys.exit(EXIT_REFUSED)


def parse_peer(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not is_loopback_host(host):
        log("refusing peer %r: expected 127.x.y.z:PORT" % text)
        sys.exit(EXIT_REFUSED)
    return host, int(port)


def parse_dht_bootstrap(text):
    """The --dht-bootstrap list as libtorrent's "host:port,host:port" setting; any
    entry that is not a loopback IPv4 literal with a port is refused."""
    nodes = [n.strip() for n in text.split(",") if n.strip()]
    for node in nodes:
        host, sep, port = node.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 \
                or not is_loopback_host(host):
            log("refusing dht bootstrap node %r: expected 127.x.y.z:PORT" % node)
            sys.exit(EXIT_REFUSED)
    return ",".join(nodes)


def dht_settings(bootstrap):
    """Settings that turn the DHT on for 127.0.0.1 alone. By default libtorrent keeps
    one routing-table entry and one search result per IP, prefers node ids matching the
    node's IP (BEP 42), drops some reserved ranges and blocks busy nodes; every node in a
    test is 127.0.0.1 on another port, so each of those checks is relaxed."""
    return {
        "enable_dht": True,
        "dht_bootstrap_nodes": bootstrap,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        "dht_ignore_dark_internet": False,
        # A node sending more than 5 requests a second is ignored for 5 minutes by
        # default; a test repeating lookups on loopback can pass that.
        "dht_block_ratelimit": 1000,
    }


def encryption_settings(forced):
    """Message stream encryption: libtorrent's defaults (both allowed), or RC4 forced
    both ways, so a plaintext peer cannot connect at all."""
    if not forced:
        return {}
    return {
        "out_enc_policy": int(lt.enc_policy.pe_forced),
        "in_enc_policy": int(lt.enc_policy.pe_forced),
        "allowed_enc_level": int(lt.enc_level.pe_rc4),
        "prefer_rc4": True,
    }


def transport_settings(transport):
    """Which carriers libtorrent uses: "tcp" (the tests' default, so the engine under test
    sees plain BitTorrent connections), "utp" (uTP only, both ways) or "both"."""
    return {
        "enable_incoming_utp": transport != "tcp",
        "enable_outgoing_utp": transport != "tcp",
        "enable_incoming_tcp": transport != "utp",
        "enable_outgoing_tcp": transport != "utp",
    }


def log_peer_flags(h):
    """One line per connected peer with its flags (0x20000: uTP; 0x80000: RC4; 0x100000:
    obfuscated handshake, plaintext after it), for tests that check what a connection
    really was."""
    for p in h.get_peer_info():
        log("peer %s:%d flags %#x" % (p.ip[0], p.ip[1], p.flags))


def make_session(port, dht_bootstrap=None, encryption_forced=False, transport="tcp"):
    settings = {
        "listen_interfaces": "127.0.0.1:%d" % port,
        # Nothing may look beyond loopback: no DHT, no local discovery, no port mapping.
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "dht_bootstrap_nodes": "",
        # TCP only, so the engine under test sees plain BitTorrent connections.
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_tcp": True,
        "enable_outgoing_tcp": True,
        # Every peer in a test is 127.0.0.1 on another port; by default libtorrent keeps
        # one connection per IP and would drop the rest.
        "allow_multiple_connections_per_ip": True,
        "unchoke_slots_limit": -1,
        "smooth_connects": False,
        "connection_speed": 200,
        "no_connect_privileged_ports": False,
        # Short tracker timeouts keep the shutdown's "stopped" announce from stalling.
        "stop_tracker_timeout": 1,
        "tracker_completion_timeout": 5,
        "tracker_receive_timeout": 5,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.storage_notification
        | lt.alert.category_t.connect_notification
        | lt.alert.category_t.peer_notification,
        "user_agent": "lt_peer/%s" % lt.__version__,
    }
    settings.update(encryption_settings(encryption_forced))
    settings.update(transport_settings(transport))
    if dht_bootstrap is not None:
        settings.update(dht_settings(dht_bootstrap))
        settings["alert_mask"] |= lt.alert.category_t.dht_notification
        if os.environ.get("LT_DHT_LOG"):
            # Every DHT packet and traversal step, for debugging interop.
            settings["alert_mask"] |= lt.alert.category_t.dht_log_notification \
                | lt.alert.category_t.dht_operation_notification
    return lt.session(settings)


def limit_loopback_uploads(ses, h, limit):
    """Applies an upload limit that also covers loopback peers. libtorrent puts local
    addresses into its unlimited local peer class, so 127.0.0.0/8 is moved back into the
    global class and the limit is set on both the session and the torrent."""
    flt = lt.ip_filter()
    flt.add_rule("127.0.0.0", "127.255.255.255", 1 << ses.global_peer_class_id)
    ses.set_peer_class_filter(flt)
    ses.apply_settings({"upload_rate_limit": limit})
    h.set_upload_limit(limit)


def add_torrent(ses, ti, save_path, seed_mode):
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = save_path
    flags = atp.flags
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    if seed_mode:
        flags |= lt.torrent_flags.seed_mode
    atp.flags = flags
    return ses.add_torrent(atp)


class Events:
    """What the alert stream has told us so far."""

    def __init__(self):
        self.listening = False
        self.listen_error = None
        self.announced = False
        self.storage_error = None
        self.checked_at = None
        self.peer_lines = 0
        self.dht_announces_in = 0

    def drain(self, ses):
        for al in ses.pop_alerts():
            if isinstance(al, lt.listen_succeeded_alert):
                if al.socket_type in (lt.socket_type_t.tcp, lt.socket_type_t.utp):
                    self.listening = True
                    log("listening:", al.message())
            elif isinstance(al, lt.listen_failed_alert):
                self.listen_error = al.message()
                log("listen failed:", al.message())
            elif isinstance(al, lt.torrent_checked_alert):
                self.checked_at = time.monotonic()
                log("data checked")
            elif isinstance(al, lt.tracker_reply_alert):
                if not self.announced:
                    log("tracker reply:", al.message())
                self.announced = True
            elif isinstance(al, (lt.file_error_alert, lt.torrent_error_alert)):
                self.storage_error = al.message()
                log("storage error:", al.message())
            elif isinstance(al, lt.dht_announce_alert):
                self.dht_announces_in += 1
                if self.dht_announces_in <= 10:
                    log("dht:", al.message())
            elif isinstance(al, (lt.dht_log_alert, lt.dht_pkt_alert)):
                log("dhtlog:", al.message()[:300])
            elif isinstance(al, lt.dht_reply_alert):
                log("dht reply:", al.message())
            elif isinstance(al, (lt.tracker_error_alert, lt.tracker_warning_alert)):
                log("tracker:", al.message())
            elif isinstance(al, (lt.peer_connect_alert, lt.incoming_connection_alert,
                                 lt.peer_disconnected_alert, lt.peer_error_alert)):
                # A few peer lines help when a test fails; a flood would bury the rest.
                self.peer_lines += 1
                if self.peer_lines <= 30:
                    log("peer:", al.message())


STOP_REQUESTED = False


def request_stop(*_):
    global STOP_REQUESTED
    STOP_REQUESTED = True


def write_ready(path, info):
    # Written under another name and renamed, so the caller never reads half a file.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.rename(tmp, path)


def cmd_seed(a):
    ti = lt.torrent_info(a.torrent)
    refuse_non_loopback(ti)
    dht_bootstrap = None if a.dht_bootstrap is None else parse_dht_bootstrap(a.dht_bootstrap)
    ses = make_session(a.port, dht_bootstrap, a.encryption_forced, a.transport)
    h = add_torrent(ses, ti, a.data, a.seed_mode)
    if a.upload_limit:
        limit_loopback_uploads(ses, h, a.upload_limit)
    # Seeders stay connected to each other (libtorrent would otherwise close seed-to-seed
    # connections), so each can name the other in peer exchange.
    connect_to = [parse_peer(p) for p in a.connect]
    ses.apply_settings({"close_redundant_connections": False})
    last_connect = None
    last_uploaded, last_upload_line = 0, 0.0
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    need_announce = len(list(ti.trackers())) > 0 and not a.ready_without_announce \
        and dht_bootstrap is None
    ev = Events()
    t0 = time.monotonic()
    ready = False
    last_reannounce = t0
    last_dht_announce = None
    while not STOP_REQUESTED:
        ev.drain(ses)
        now = time.monotonic()
        st = h.status()
        if ev.listen_error and not ev.listening:
            os._exit(EXIT_LISTEN)
        if ev.storage_error:
            os._exit(EXIT_DATA)
        # The check is over once libtorrent says so; a short grace lets the state move
        # to seeding before a missing or damaged copy is reported.
        if not ready and ev.checked_at is not None and not st.is_seeding \
                and now - ev.checked_at > 2:
            log("the data in %s is not a complete copy (progress %.4f)" % (a.data, st.progress))
            os._exit(EXIT_DATA)
        dht_ok = dht_bootstrap is None or ses.is_dht_running()
        if dht_bootstrap is not None and dht_ok and st.is_seeding and (
                last_dht_announce is None or now - last_dht_announce > DHT_ANNOUNCE_EVERY_S):
            last_dht_announce = now
            h.force_dht_announce()
        if not ready and st.is_seeding and ev.listening and dht_ok \
                and (ev.announced or not need_announce):
            ready = True
            info = {"pid": os.getpid(), "port": a.port, "ready_s": round(now - t0, 3)}
            log("ready", json.dumps(info))
            write_ready(a.ready, info)
        if not ready:
            if now - t0 > READY_LIMIT_S:
                log("not ready after %.0f s: state=%s seeding=%s listening=%s announced=%s"
                    % (READY_LIMIT_S, st.state, st.is_seeding, ev.listening, ev.announced))
                os._exit(EXIT_TIMEOUT)
            # A first announce can fail if it raced the listen socket; ask again soon
            # rather than after the tracker's half-hour interval.
            if st.is_seeding and need_announce and now - last_reannounce > 2:
                last_reannounce = now
                h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
        # The running upload total, for tests that check who served a download.
        if st.total_payload_upload != last_uploaded and now - last_upload_line >= 1:
            last_uploaded, last_upload_line = st.total_payload_upload, now
            log("uploaded %d payload bytes" % last_uploaded)
            if a.encryption_forced or a.transport != "tcp":
                log_peer_flags(h)
        if connect_to and (last_connect is None or now - last_connect > 2):
            last_connect = now
            connected = {(p.ip[0], p.ip[1]) for p in h.get_peer_info()}
            for peer in connect_to:
                if peer not in connected:
                    h.connect_peer(peer)
        if a.stop_after_upload is not None and st.total_payload_upload >= a.stop_after_upload:
            # Exits without a session shutdown: the kernel closes every connection at
            # once, which is what a test of a vanishing seeder wants to see.
            log("stopping abruptly after uploading %d bytes" % st.total_payload_upload)
            os._exit(EXIT_OK)
        if now - t0 > a.max_lifetime:
            log("max lifetime of %.0f s reached" % a.max_lifetime)
            break
        ses.wait_for_alert(50)
    st = h.status()
    log("seed exit: uploaded %d payload bytes" % st.total_payload_upload)
    del h
    del ses
    sys.exit(EXIT_OK)


def add_magnet(ses, uri, save_path):
    atp = lt.parse_magnet_uri(uri)
    for url in atp.trackers:
        if not is_loopback_host(urllib.parse.urlsplit(url).hostname or ""):
            log("refusing tracker outside loopback:", url)
            sys.exit(EXIT_REFUSED)
    for ip, _port in atp.peers:
        if not is_loopback_host(ip):
            log("refusing peer outside loopback:", ip)
            sys.exit(EXIT_REFUSED)
    atp.save_path = save_path
    flags = atp.flags
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    atp.flags = flags
    return ses.add_torrent(atp)


def cmd_leech(a):
    peers = [parse_peer(p) for p in a.peer]
    os.makedirs(a.out, exist_ok=True)
    ses = make_session(a.port, encryption_forced=a.encryption_forced, transport=a.transport)
    if a.magnet:
        h = add_magnet(ses, a.magnet, a.out)
    else:
        ti = lt.torrent_info(a.torrent)
        refuse_non_loopback(ti)
        h = add_torrent(ses, ti, a.out, False)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    ev = Events()
    t0 = time.monotonic()
    last_dial = None
    last_progress = t0
    rc = None
    while rc is None:
        ev.drain(ses)
        now = time.monotonic()
        st = h.status()
        if ev.listen_error and not ev.listening:
            rc = EXIT_LISTEN
        elif ev.storage_error:
            rc = EXIT_DATA
        elif st.is_finished:
            rc = EXIT_OK
        elif STOP_REQUESTED:
            rc = EXIT_TIMEOUT
        elif now - t0 > a.timeout:
            log("timeout after %.1f s at progress %.4f" % (a.timeout, st.progress))
            rc = EXIT_TIMEOUT
        else:
            # Explicit peers are dialled again while none is connected, so one refused
            # attempt (the peer still starting) does not end the download.
            if peers and st.num_peers == 0 and (last_dial is None or now - last_dial > 1):
                last_dial = now
                for peer in peers:
                    h.connect_peer(peer)
            if now - last_progress >= 1:
                last_progress = now
                log("progress %.1f%% peers %d" % (st.progress * 100, st.num_peers))
                if a.encryption_forced or a.transport != "tcp":
                    log_peer_flags(h)
            ses.wait_for_alert(50)
    elapsed = time.monotonic() - t0
    st = h.status()
    summary = {
        "finished": rc == EXIT_OK,
        "progress": st.progress,
        "payload_downloaded": st.total_payload_download,
        "wanted_done": st.total_wanted_done,
        "seconds": round(elapsed, 3),
    }
    # libtorrent can call a torrent finished while blocks still wait in its disk queue;
    # a normal session shutdown waits for them, so the files are complete once we exit.
    del h
    del ses
    log("leech exit rc=%d after %.3f s" % (rc, elapsed))
    print(json.dumps(summary), flush=True)
    sys.exit(rc)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    seed = sub.add_parser("seed")
    seed.add_argument("--torrent", required=True)
    seed.add_argument("--data", required=True, help="the folder the torrent's name is under")
    seed.add_argument("--port", type=int, required=True)
    seed.add_argument("--ready", required=True, help="written once seeding and announced")
    seed.add_argument("--upload-limit", type=int, default=0, help="bytes per second")
    seed.add_argument("--stop-after-upload", type=int, default=None, metavar="BYTES")
    seed.add_argument("--seed-mode", action="store_true", help="trust the data, check lazily")
    seed.add_argument("--ready-without-announce", action="store_true",
                      help="be ready without a tracker reply (peers dial the port directly)")
    seed.add_argument("--max-lifetime", type=float, default=600.0, metavar="S")
    seed.add_argument("--connect", action="append", default=[], metavar="HOST:PORT",
                      help="keep a connection to this peer (loopback only)")
    seed.add_argument("--dht-bootstrap", default=None, metavar="HOST:PORT[,HOST:PORT]",
                      help="run the DHT on 127.0.0.1 from these loopback nodes (may be empty)")
    seed.add_argument("--encryption-forced", action="store_true",
                      help="RC4 message stream encryption on every connection, both ways")
    seed.add_argument("--transport", choices=["tcp", "utp", "both"], default="tcp",
                      help="the carriers used, both ways")
    leech = sub.add_parser("leech")
    what = leech.add_mutually_exclusive_group(required=True)
    what.add_argument("--torrent")
    what.add_argument("--magnet", help="a magnet link; its metadata comes from peers")
    leech.add_argument("--out", required=True, help="the folder the torrent's name goes under")
    leech.add_argument("--port", type=int, required=True)
    leech.add_argument("--timeout", type=float, required=True, metavar="S")
    leech.add_argument("--peer", action="append", default=[], metavar="HOST:PORT")
    leech.add_argument("--encryption-forced", action="store_true",
                       help="RC4 message stream encryption on every connection, both ways")
    leech.add_argument("--transport", choices=["tcp", "utp", "both"], default="tcp",
                       help="the carriers used, both ways")
    a = p.parse_args()
    if a.cmd == "seed":
        cmd_seed(a)
    else:
        cmd_leech(a)


if __name__ == "__main__":
    main()
