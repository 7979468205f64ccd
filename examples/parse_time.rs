//! How long `Metainfo::from_bytes` takes on one `.torrent`, parsed again and again: for
//! a large v2 torrent most of it is hashing its piece layers up to their roots.
//!
//! `cargo run --release --example parse_time -- FILE.torrent [RUNS]`

use std::time::{Duration, Instant};

use torrent_actors::metainfo::Metainfo;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: parse_time FILE.torrent [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args
        .next()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
        .max(1);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let parsed = Metainfo::from_bytes(&bytes);
        times.push(start.elapsed());
        if let Err(e) = std::hint::black_box(parsed) {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{path}: {} bytes, {runs} parses: min {:.2} ms, median {:.2} ms, max {:.2} ms",
        bytes.len(),
        ms(times[0]),
        ms(times[runs / 2]),
        ms(times[runs - 1])
    );
}
