//! `torrent-actors swarm` from outside: a small swarm of every profile against two real
//! `get` leechers, the report and plot it writes, the exit code when the leechers cannot
//! complete, and the same seed planning the same swarm.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::run_with_timeout;

fn swarm(work: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.arg("swarm")
        .arg("--work-dir")
        .arg(work)
        .env("TORRENT_ACTORS_DHT_BOOTSTRAP", "");
    cmd
}

/// The command's output and, since the leechers write elsewhere, their logs' last lines.
fn explain(out: &Output, work: &Path) -> String {
    let mut text = format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..4 {
        if let Ok(log) = std::fs::read_to_string(work.join(format!("leecher-{i}.log"))) {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            text.push_str(&format!("\nleecher {i} log (last lines, newest first):\n"));
            text.push_str(&tail.join("\n"));
        }
    }
    text
}

fn read_report(path: &Path) -> Value {
    let bytes = std::fs::read(path).expect("the report was written");
    serde_json::from_slice(&bytes).expect("the report is JSON")
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

/// Every profile but the liars, in the mix's proportions for 50 peers.
const HONEST: [(&str, u64); 8] = [
    ("fast", 5),
    ("slow", 20),
    ("flaky", 5),
    ("liar", 0),
    ("silent", 3),
    ("partial", 10),
    ("choker", 5),
    ("idle", 0),
];

#[test]
fn a_swarm_of_every_honest_profile_completes_two_leechers_and_reports_it() {
    let profiles: Vec<String> = HONEST
        .iter()
        .filter(|(_, n)| *n > 0)
        .flat_map(|(p, n)| [format!("--{p}"), n.to_string()])
        .collect();
    run_and_check(&profiles, HONEST);
}

/// The whole mix, liars included. Liars make pieces fail their hash while other peers'
/// deliveries of those pieces are still being reported: this once left a leecher at
/// 255 of 256 pieces for good (a late report counted for the piece's next attempt; see
/// `Picker::block_received`).
#[test]
fn a_mixed_swarm_of_fifty_peers_with_liars_completes_two_leechers_and_bans_the_liars() {
    let args: Vec<String> = ["--peers", "50", "--profile", "mix"]
        .map(String::from)
        .to_vec();
    run_and_check(
        &args,
        [
            ("fast", 5),
            ("slow", 20),
            ("flaky", 5),
            ("liar", 2),
            ("silent", 3),
            ("partial", 10),
            ("choker", 5),
            ("idle", 0),
        ],
    );
}

/// Runs a 64 MiB swarm with `profiles` against two leechers and checks the run, its
/// report and its plot; `want` is the peers each profile should have.
fn run_and_check(profiles: &[String], want: [(&str, u64); 8]) {
    let liars = want[3].1;
    let work = tempfile::tempdir().unwrap();
    let report_path = work.path().join("report.json");
    let plot_path = work.path().join("plot.svg");
    let mut cmd = swarm(work.path());
    cmd.args(profiles)
        .args(["--size", "64MiB", "--piece-size", "256KiB"])
        .args(["--seed", "3", "--leechers", "2"])
        .args(["--duration-limit", "150s"])
        .arg("--report")
        .arg(&report_path)
        .arg("--plot")
        .arg(&plot_path);
    let out = run_with_timeout(cmd, Duration::from_secs(240));
    assert!(out.status.success(), "{}", explain(&out, work.path()));

    let r = read_report(&report_path);
    for key in [
        "seed",
        "size",
        "piece_size",
        "pieces",
        "info_hash",
        "elapsed_secs",
        "timed_out",
        "outcome",
        "exit_code",
        "profiles",
        "peers",
        "leechers",
        "profile_series",
    ] {
        assert!(r.get(key).is_some(), "the report has no {key:?}");
    }
    assert_eq!(r["outcome"], "complete");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["timed_out"], false);
    let size = num(&r["size"]);
    assert_eq!(size, 64 << 20);
    let pieces = num(&r["pieces"]);
    assert_eq!(pieces, 256);

    // The mix's proportions for 50 peers, and the honest peers never spoil a block.
    let profiles = r["profiles"].as_array().unwrap();
    let counts: Vec<(String, u64)> = profiles
        .iter()
        .map(|p| (p["profile"].as_str().unwrap().to_string(), num(&p["peers"])))
        .collect();
    assert_eq!(
        counts,
        want.map(|(p, n)| (p.to_string(), n)).to_vec(),
        "profile counts"
    );
    let profile = |name: &str| profiles.iter().find(|p| p["profile"] == name).unwrap();
    for p in profiles {
        for key in [
            "bytes_served",
            "blocks_served",
            "spoiled_blocks",
            "connections",
            "dropped_by_leecher",
            "closed_by_leecher",
            "closed_by_peer",
        ] {
            assert!(p.get(key).is_some(), "profile totals have no {key:?}");
        }
        if p["profile"] != "liar" {
            assert_eq!(num(&p["spoiled_blocks"]), 0, "{p}");
        }
    }
    assert_eq!(num(&profile("silent")["bytes_served"]), 0);
    for p in profiles {
        assert_eq!(
            num(&p["utp_connections"]),
            0,
            "no peer speaks uTP without --utp: {p}"
        );
    }
    assert!(
        num(&profile("silent")["connections"]) > 0,
        "the leechers dial silent peers too"
    );
    let served: u64 = profiles.iter().map(|p| num(&p["bytes_served"])).sum();
    assert!(
        served >= size,
        "the swarm served {served} bytes of a {size}-byte torrent"
    );
    let total: u64 = want.iter().map(|(_, n)| n).sum();
    assert_eq!(r["peers"].as_array().unwrap().len() as u64, total);
    assert!(r["peers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["addr"].as_str().unwrap().starts_with("127.0.0.1:")));

    // The per-second series ends at what the peers counted.
    let series = r["profile_series"].as_array().unwrap();
    let last = series.last().expect("at least one sample");
    let last_total: u64 = last["bytes"].as_object().unwrap().values().map(num).sum();
    assert_eq!(last_total, served);

    // Each leecher completed with the right file, and told its story second by second.
    let leechers = r["leechers"].as_array().unwrap();
    assert_eq!(leechers.len(), 2);
    let mut hash_failures = 0;
    let mut banned = 0;
    for l in leechers {
        assert_eq!(l["completed"], true, "{l}");
        assert_eq!(l["files_right"], true, "{l}");
        assert_eq!(num(&l["files"]["good_pieces"]), pieces);
        assert_eq!(l["exit_code"], 0);
        assert!(l["completion_secs"].as_f64().unwrap() > 0.0, "{l}");
        assert!(num(&l["peak_rss_bytes"]) > 0 && num(&l["max_open_files"]) > 0);
        assert!(num(&l["max_peers"]) > 0);
        assert!(l.get("actors").is_some());
        let samples = l["throughput"].as_array().unwrap();
        assert!(!samples.is_empty());
        let verified: Vec<u64> = samples.iter().map(|s| num(&s["verified_bytes"])).collect();
        assert!(verified.windows(2).all(|w| w[0] <= w[1]), "{verified:?}");
        assert_eq!(verified.last().copied(), Some(size));
        hash_failures += num(&l["hash_failures"]);
        // Only liars may be banned: smart ban never blames an honest peer.
        let b = num(&l["banned"]);
        assert!(
            b <= liars,
            "leecher banned {b} peers with {liars} liars in the swarm: {l}"
        );
        banned += b;
    }
    // The liars lied, the leechers noticed, and blamed someone: a spoiled piece whose
    // every block came from one liar names it at once, a smart-ban verdict bans it.
    let spoiled = num(&profile("liar")["spoiled_blocks"]);
    if liars == 0 {
        assert_eq!((spoiled, hash_failures), (0, 0), "no liar, no bad data");
    }
    if spoiled >= 10 {
        assert!(
            hash_failures > 0,
            "{spoiled} spoiled blocks and no hash failure"
        );
    }
    if hash_failures >= 4 {
        assert!(
            banned > 0,
            "{hash_failures} hash failures and nobody banned"
        );
    }

    let svg = std::fs::read_to_string(&plot_path).expect("the plot was written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for text in ["leecher 0", "leecher 1", "partial", "MiB/s"] {
        assert!(svg.contains(text), "the plot has no {text:?}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("files right"), "{stdout}");
}

#[test]
fn the_same_seed_plans_the_same_swarm_and_another_seed_another() {
    let plan = |seed: &str| {
        let work = tempfile::tempdir().unwrap();
        let report = work.path().join("plan.json");
        let mut cmd = swarm(work.path());
        cmd.args(["--dry-run", "--peers", "40", "--size", "8MiB"])
            .args(["--piece-size", "64KiB", "--seed", seed])
            .arg("--report")
            .arg(&report);
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        assert!(out.status.success(), "{}", explain(&out, work.path()));
        let r = read_report(&report);
        let torrent = std::fs::read(r["torrent_file"].as_str().unwrap()).unwrap();
        (r, torrent)
    };
    let (a, torrent_a) = plan("11");
    let (b, torrent_b) = plan("11");
    let (c, _) = plan("12");
    assert_eq!(a["outcome"], "planned");
    assert!(
        a["leechers"].as_array().unwrap().is_empty(),
        "a dry run starts no leecher"
    );
    let peers = |r: &Value| -> Vec<Value> {
        r["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.as_object_mut().unwrap().remove("addr");
                p
            })
            .collect()
    };
    assert_eq!(a["info_hash"], b["info_hash"]);
    assert_eq!(
        torrent_a, torrent_b,
        "the same seed writes the same .torrent"
    );
    assert_eq!(peers(&a), peers(&b), "the same seed plans the same peers");
    assert_ne!(a["info_hash"], c["info_hash"], "another seed, other data");
    let profiles = |r: &Value| -> Vec<Value> {
        r["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["profile"].clone())
            .collect()
    };
    assert_ne!(
        profiles(&a),
        profiles(&c),
        "another seed, another assignment"
    );
}

#[test]
fn leechers_that_cannot_complete_are_stopped_at_the_duration_limit_with_exit_8() {
    let work = tempfile::tempdir().unwrap();
    let report_path = work.path().join("report.json");
    let mut cmd = swarm(work.path());
    // Counts by hand replace --profile: two silent peers and nothing else.
    cmd.args(["--silent", "2", "--size", "1MiB", "--piece-size", "64KiB"])
        .args(["--duration-limit", "4s"])
        .arg("--report")
        .arg(&report_path);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(8), "{}", explain(&out, work.path()));
    let r = read_report(&report_path);
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["outcome"], "incomplete");
    assert_eq!(r["exit_code"], 8);
    assert_eq!(r["peers"].as_array().unwrap().len(), 2);
    let l = &r["leechers"][0];
    assert_eq!(
        (&l["killed"], &l["completed"]),
        (&Value::Bool(true), &Value::Bool(false))
    );
    assert!(r["elapsed_secs"].as_f64().unwrap() < 30.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot complete"), "{stderr}");
}

#[test]
fn per_profile_counts_and_peers_cannot_be_mixed() {
    let work = tempfile::tempdir().unwrap();
    let mut cmd = swarm(work.path());
    cmd.args(["--peers", "10", "--fast", "2", "--dry-run"]);
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out, work.path()));
}

#[test]
fn idle_peers_are_held_by_the_leecher_and_serve_nothing() {
    let work = tempfile::tempdir().unwrap();
    let report_path = work.path().join("report.json");
    let mut cmd = swarm(work.path());
    // The fast peers' links are capped (two at 4 MiB/s: about 2 s for 8 MiB), so the
    // download outlasts the dialing of every idle peer; uncapped, it could finish first.
    cmd.args(["--fast", "2", "--idle", "30"])
        .args(["--link", "fast:rate=4MiB/s"])
        .args(["--size", "8MiB", "--piece-size", "256KiB"])
        .args(["--duration-limit", "60s"])
        .arg("--report")
        .arg(&report_path);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "{}", explain(&out, work.path()));
    let r = read_report(&report_path);
    let idle = r["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "idle")
        .expect("an idle row")
        .clone();
    assert_eq!(num(&idle["peers"]), 30);
    assert_eq!(num(&idle["bytes_served"]), 0, "{idle}");
    assert!(num(&idle["handshakes"]) >= 30, "{idle}");
    // The leecher connected to (nearly) all of them, and so held idle connections.
    let leecher = &r["leechers"][0];
    assert!(num(&leecher["max_peers"]) >= 30, "{leecher}");
}

/// The stress run of issue 16: flaky, choking, slow, partial and lying peers, 4 MiB
/// pieces (256 blocks each, so nearly every piece gets a block from some liar) and a
/// leecher budget of two pieces in progress.
const STRESS_MIX: [&str; 12] = [
    "--flaky",
    "30",
    "--choker",
    "10",
    "--liar",
    "5",
    "--partial",
    "10",
    "--slow",
    "5",
    "--fast",
    "1",
];

/// The stress run's seeds: the issue measured seed 12 leaving two of three leechers
/// unfinished, and seeds 11 and 13 finishing one leecher far behind the others.
const STRESS_SEEDS: [u64; 3] = [11, 12, 13];

/// Seeds run after [`STRESS_SEEDS`] only while no leecher has uploaded to another yet,
/// each held to the same bounds: whether leechers trade in one seed is timing (one that
/// completes in a second needs no other), and a CI run saw all three seeds without a
/// trade while every bound held.
const TRADE_SEEDS: [u64; 4] = [14, 15, 16, 17];

/// A leecher may receive at most this many bytes per byte of the torrent, failed pieces
/// and every other waste (endgame and rescue duplicates, late blocks) included: the
/// issue's bound. (It was checked besides failed pieces while liars kept spoiling shared
/// pieces until their second verdict: loaded soaks then saw up to 22 failed pieces,
/// 1.79x. With a ban at the first verdict and suspects kept out of shared pieces, 420
/// leechers of debug-build soaks, four at once, saw at most 1.45x and 8 failed pieces.)
const MAX_WASTE: f64 = 1.5;

/// Hash failures one leecher may see in a stress run. Every liar taints a piece or so
/// before its verdict; the five liars' failed pieces were at most 8 in the soaks above
/// (mean 4.2), and 40 to 124 in the regression, with leechers that never finished.
const MAX_HASH_FAILURES: u64 = 16;

/// One stress run's leechers, as figures for a failure message or the test's output.
fn stress_figures(seed: u64, r: &Value) -> String {
    let size = num(&r["size"]);
    let mut text = format!(
        "seed {seed}: {} in {:.1} s",
        r["outcome"].as_str().unwrap_or("?"),
        r["elapsed_secs"].as_f64().unwrap_or(0.0)
    );
    for l in r["leechers"].as_array().into_iter().flatten() {
        let received = num(&l["received"]);
        let completion = l["completion_secs"]
            .as_f64()
            .map_or_else(|| "never".to_string(), |t| format!("in {t:.1} s"));
        let waste = l["waste_ratio"]
            .as_f64()
            .map_or_else(|| "n/a".to_string(), |w| format!("{w:.2}"));
        text.push_str(&format!(
            "\n  leecher {}: completed {completion}, received {:.1} MiB ({:.2}x the \
             torrent, waste ratio {waste}), uploaded {:.1} MiB, {} hash failures, {} banned",
            l["index"],
            received as f64 / (1 << 20) as f64,
            received as f64 / size.max(1) as f64,
            num(&l["uploaded"]) as f64 / (1 << 20) as f64,
            l["hash_failures"],
            l["banned"],
        ));
    }
    text
}

/// Issue 16's seeded stress run, seeds 11 to 13, one after the other (three at once
/// would share two cores and measure the machine): every leecher must complete with
/// the right file within the 240 s limit, having received at most 1.5 times the
/// torrent besides its failed pieces (at most 32), and the leechers must trade with each other
/// in some seed (seeds 14 to 17 run, under the same bounds, until they have). The swarm's peers never
/// download, so every byte a leecher uploads went to another leecher.
///
/// On the code of issue 16 (2 cores, 4 December 2026) it failed for every seed, in
/// 724 s: 6 of the 9 leechers never completed (40 to 124 hash failures, 2 bans at most,
/// some with nothing verified after 240 s) and those that did received 2.0 to 4.4
/// times the torrent. Once it passes, each seed takes as long as its slowest leecher.
#[test]
fn a_seeded_stress_swarm_with_liars_and_four_mib_pieces_completes_without_waste() {
    let mut results = Vec::new();
    let mut traded_in_all = 0;
    for seed in STRESS_SEEDS.into_iter().chain(TRADE_SEEDS) {
        if traded_in_all > 0 && TRADE_SEEDS.contains(&seed) {
            break;
        }
        let work = tempfile::tempdir().unwrap();
        let report_path = work.path().join("report.json");
        let mut cmd = swarm(work.path());
        cmd.args(STRESS_MIX)
            .args([
                "--leechers",
                "3",
                "--size",
                "128MiB",
                "--piece-size",
                "4MiB",
            ])
            .args(["--seed", &seed.to_string(), "--duration-limit", "240s"])
            .arg("--leecher-arg=--max-in-progress-mib=8")
            .arg("--report")
            .arg(&report_path);
        let out = run_with_timeout(cmd, Duration::from_secs(330));
        let r = read_report(&report_path);
        let figures = stress_figures(seed, &r);
        eprintln!("{figures}");
        let size = num(&r["size"]);
        let leechers = r["leechers"].as_array().unwrap();
        let mut problems = Vec::new();
        if !out.status.success() {
            problems.push(format!("exit {:?}", out.status.code()));
        }
        for l in leechers {
            if l["completed"] != true || l["files_right"] != true {
                problems.push(format!("leecher {} did not complete right", l["index"]));
            }
            let received = num(&l["received"]);
            let failures = num(&l["hash_failures"]);
            if received as f64 > MAX_WASTE * size as f64 {
                problems.push(format!(
                    "leecher {} received {received} bytes for a {size}-byte torrent \
                     ({failures} failed pieces)",
                    l["index"]
                ));
            }
            if failures > MAX_HASH_FAILURES {
                problems.push(format!(
                    "leecher {} had {failures} hash failures",
                    l["index"]
                ));
            }
            assert!(
                l.get("waste_ratio").is_some(),
                "the report gives no waste ratio: {l}"
            );
        }
        // Whether leechers trade in one seed depends on timing: one that finishes
        // before the others have pieces it lacks needs none of them (two CI runs saw a
        // seed with no trade at all). Trading is checked over the three seeds below.
        traded_in_all += leechers.iter().map(|l| num(&l["uploaded"])).sum::<u64>();
        let explained = if problems.is_empty() {
            String::new()
        } else {
            explain(&out, work.path())
        };
        results.push((figures, problems, explained));
    }
    assert!(
        traded_in_all > 0,
        "the leechers uploaded nothing to each other in any of seeds 11 to 17:\n{}",
        results
            .iter()
            .map(|(figures, _, _)| figures.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, problems, _)| !problems.is_empty())
        .map(|(figures, problems, explained)| {
            format!(
                "{figures}\n  problems: {}\n{explained}",
                problems.join("; ")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} stress seeds failed:\n{}\nall seeds:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n"),
        results
            .iter()
            .map(|(figures, _, _)| figures.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Peers behind a link with delay, jitter, a rate and loss still serve a leecher to
/// the end; the report names the links. Bad link descriptions are usage errors.
#[test]
fn a_swarm_behind_a_slow_far_link_completes() {
    let work = tempfile::tempdir().unwrap();
    let report_path = work.path().join("report.json");
    let mut cmd = swarm(work.path());
    cmd.args([
        "--fast",
        "2",
        "--slow",
        "2",
        "--size",
        "4MiB",
        "--piece-size",
        "256KiB",
    ])
    .args([
        "--latency",
        "30ms",
        "--jitter",
        "5ms",
        "--link-rate",
        "8MiB/s",
    ])
    .args([
        "--loss",
        "0.5%",
        "--link",
        "slow:latency=80ms,rate=256KiB/s",
    ])
    .args(["--duration-limit", "90s"])
    .arg("--report")
    .arg(&report_path);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out, work.path()));
    let r = read_report(&report_path);
    assert_eq!(r["outcome"], "complete");
    let links = r["links"].as_str().unwrap();
    assert!(
        links.contains("all: 30 ms one way, ±5 ms, 8.0 MiB/s, 0.5% loss")
            && links.contains("slow: 80 ms one way, ±5 ms, 0.2 MiB/s, 0.5% loss"),
        "{links}"
    );

    for bad in [
        ["--latency", "5ms", "--jitter", "6ms"],
        ["--link", "fast:speed=1", "--seed", "1"],
        ["--link", "nobody:latency=5ms", "--seed", "1"],
        ["--loss", "70%", "--seed", "1"],
    ] {
        let mut cmd = swarm(work.path());
        cmd.args(["--fast", "1", "--size", "1MiB", "--dry-run"])
            .args(bad);
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            explain(&out, work.path())
        );
    }
}

/// A swarm the system's open-files limit cannot hold fails at once, with exit 11 and a
/// message that says what to raise; a soft limit below the need is raised by the
/// command itself.
#[test]
fn a_swarm_past_the_open_files_hard_limit_fails_with_exit_11_and_a_low_soft_limit_is_raised() {
    let work = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_torrent-actors");
    let run = |limits: &str, peers: &str| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "{limits}; exec \"$0\" swarm --work-dir \"$1\" --fast {peers} --size 1MiB"
            ))
            .arg(exe)
            .arg(work.path())
            .env("TORRENT_ACTORS_DHT_BOOTSTRAP", "");
        run_with_timeout(cmd, Duration::from_secs(60))
    };
    let out = run("ulimit -n 300 && ulimit -Hn 300", "500");
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}",
        explain(&out, work.path())
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs 1064 open files") && stderr.contains("allows 300"),
        "{stderr}"
    );
    // A soft limit of 256 under a higher hard limit: 300 peers need 664, raised.
    let out = run("ulimit -Hn 2048 && ulimit -Sn 256", "300");
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out, work.path()));
}

#[test]
fn a_dry_run_keeps_the_temporary_folder_it_names_and_a_run_says_it_removes_it() {
    // TMPDIR points at a folder of the test's own, so the kept folder is found and
    // removed with it.
    let tmp = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
        cmd.arg("swarm")
            .args(["--fast", "1", "--size", "1MiB", "--piece-size", "256KiB"])
            .args(extra)
            .env("TMPDIR", tmp.path())
            .env("TORRENT_ACTORS_DHT_BOOTSTRAP", "");
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("work folder: "))
            .unwrap_or_else(|| panic!("no work folder named:\n{stdout}"))
            .to_owned()
    };
    let planned = run(&["--dry-run"]);
    let folder = Path::new(&planned);
    assert!(folder.starts_with(tmp.path()), "{planned}");
    let torrents = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("the dry run's folder {planned} is gone: {e}"))
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "torrent"))
        })
        .count();
    assert_eq!(torrents, 1, "the dry run's torrent is not in {planned}");
    let ran = run(&[]);
    assert!(
        ran.ends_with("(removed at the end; --keep keeps it)"),
        "{ran}"
    );
    let ran_folder = ran.split(" (").next().unwrap();
    assert!(
        !Path::new(ran_folder).exists(),
        "{ran_folder} was not removed"
    );
}

#[test]
fn every_stats_record_counts_at_least_the_verified_bytes_as_received() {
    // A run of well under a second: its records are the moment of completion and the
    // end. Peers report their bytes once a second, so the received figure lagged far
    // behind the verified one (2.5 MiB received against 64 MiB verified).
    let work = tempfile::tempdir().unwrap();
    let report_path = work.path().join("report.json");
    let mut cmd = swarm(work.path());
    cmd.args(["--fast", "4", "--size", "64MiB", "--seed", "3"])
        .arg("--report")
        .arg(&report_path);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "{}", explain(&out, work.path()));
    let r = read_report(&report_path);
    for l in r["leechers"].as_array().unwrap() {
        let samples = l["throughput"].as_array().unwrap();
        assert!(!samples.is_empty(), "no stats record: {l}");
        for s in samples {
            assert!(
                num(&s["received"]) >= num(&s["verified_bytes"]),
                "a record counts fewer bytes received than verified: {s}"
            );
        }
    }
}

/// `swarm --utp`: the peers accept uTP beside TCP, the leechers (with their default
/// `--utp on`) reach them over it, and the download completes through every profile's
/// behaviour, a liar's included, carried by uTP.
#[test]
fn a_swarm_whose_peers_speak_utp_is_downloaded_over_utp() {
    let work = tempfile::tempdir().unwrap();
    let report_path = work.path().join("report.json");
    let mut cmd = swarm(work.path());
    cmd.args([
        "--utp", "--fast", "3", "--slow", "2", "--liar", "1", "--choker", "1",
    ])
    .args(["--size", "16MiB", "--piece-size", "256KiB"])
    .args(["--seed", "5", "--leechers", "2"])
    .args(["--duration-limit", "120s"])
    .arg("--report")
    .arg(&report_path);
    let out = run_with_timeout(cmd, Duration::from_secs(180));
    assert!(out.status.success(), "{}", explain(&out, work.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("uTP carried"),
        "the summary says what uTP carried:\n{stdout}"
    );

    let r = read_report(&report_path);
    assert_eq!(r["outcome"], "complete");
    let peers = r["peers"].as_array().unwrap();
    for p in peers.iter().filter(|p| p["profile"] == "fast") {
        assert!(
            num(&p["utp_connections"]) > 0,
            "every fast peer was reached over uTP: {p}"
        );
        assert!(num(&p["bytes_served"]) > 0, "and served over it: {p}");
    }
    let (utp, all) = peers.iter().fold((0, 0), |(u, a), p| {
        (u + num(&p["utp_connections"]), a + num(&p["connections"]))
    });
    assert!(utp > 0 && utp <= all, "{utp} of {all} connections over uTP");
    let liar = peers.iter().find(|p| p["profile"] == "liar").unwrap();
    assert!(
        num(&liar["utp_connections"]) > 0,
        "the liar was reached over uTP too: {liar}"
    );
}
