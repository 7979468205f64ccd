//! Test support for running the engine against real peers and a real tracker that nobody
//! on the project wrote, all on 127.0.0.1: deterministic payloads, torrents made by
//! mktorrent, Debian's opentracker, libtorrent seeders and leechers, byte-for-byte file
//! comparison, and bounded child processes.
//!
//! Every child binds to 127.0.0.1 only, is killed by its own PID when its guard drops, and
//! every wait has a time bound. Needs `opentracker`, `mktorrent` and `python3-libtorrent`
//! (for `/usr/bin/python3`), and for the browser test `chromium` and `chromium-driver`,
//! which `.ci/run` installs.

// The engine's tests use parts of this API that the harness's own tests do not, and each
// test module only ever uses some of it.
#![allow(dead_code)]

mod create;
mod daemon;
mod disk;
mod fake_peer;
mod files;
mod hostile_peer;
mod lt;
mod payload;
mod process;
mod torrent;
mod tracker;
mod webdriver;

// Each test module uses only part of this API, and an unused re-export from a private
// module would otherwise warn.
#[allow(unused_imports)]
pub use self::{
    create::{
        info_bytes, lt_create, mktorrent_create, our_create, our_create_ok, pattern, top_level_raw,
        write_pattern, LtKind,
    },
    daemon::{
        http, parse_serving_line, read_events, serve_command, Daemon, DaemonOpts, Event, Reply,
    },
    disk::TinyDisk,
    fake_peer::{ext_handshake_of, FakeMetadataPeer, HashReply},
    files::assert_same_files,
    hostile_peer::{Act, HostilePeer, SeededSwarm, Served},
    lt::{
        peer_flags, LeechOpts, LeechOutcome, LtLeecher, LtSeeder, LtTransport, SeedOpts,
        LT_RC4_ENCRYPTED, LT_UTP_SOCKET,
    },
    payload::Payload,
    process::{
        fetched, free_port, rss_kib, run_ok, run_until, run_with_timeout, run_within, ChildGuard,
    },
    torrent::{make_private_torrent, make_torrent, read_metainfo, with_announce},
    tracker::{http_announce, Announce, AnnounceReply, Tracker},
    webdriver::{Browser, BrowserTools, Element, WebDriverError},
};
