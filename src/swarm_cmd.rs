//! `torrent-actors swarm`: the command-line front end of the loopback swarm. It plans the
//! swarm and writes its torrent, starts the swarm's peers in this process, runs the
//! leechers as `get` child processes of this same binary, watches them within the
//! duration limit, checks their files, and writes the report, the plot and the exit
//! code. The peers live in `torrent_actors::swarm`; no download logic lives here.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use torrent_actors::swarm::report::{
    human_bytes, judge_closes, profile_totals, waste_ratio, LeecherReport, PeerReport, PeerTally,
    ProfileSample, Report, StatsSummary,
};
use torrent_actors::swarm::{
    check_file, ensure_open_files, honest_peers_cover, open_files_needed, plot, LinkProfile, Links,
    Profile, ProfileCounts, RemoteClose, Swarm, SwarmPlan, SwarmSpec,
};

use crate::cli::{ProfileChoice, SwarmArgs};
use crate::{exit, Failure};

/// How often the run looks at the leechers and samples the peers' counters.
const TICK: Duration = Duration::from_millis(200);

/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// For this long from the start, the profiles' bytes are sampled every [`TICK`]; once a
/// second after that.
const FINE_SAMPLES_FOR: Duration = Duration::from_secs(10);

/// How often the leechers write a stats record (and a stats line to their log): their
/// progress comes every 500 ms, so a short run still has points to draw.
const LEECHER_STATS_EVERY: &str = "500ms";

/// How long a killed leecher may take to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(5);

fn usage(message: String) -> Failure {
    Failure {
        code: exit::USAGE,
        error: anyhow::anyhow!(message),
    }
}

fn not_writable(what: &Path, e: impl std::fmt::Display) -> Failure {
    Failure {
        code: exit::OUTPUT_NOT_WRITABLE,
        error: anyhow::anyhow!("cannot write {}: {e}", what.display()),
    }
}

/// The profile counts the arguments ask for: the per-profile counts if any is given,
/// else `--peers` of `--profile`.
fn counts_of(args: &SwarmArgs) -> ProfileCounts {
    let by_hand = [
        (Profile::Fast, args.fast),
        (Profile::Slow, args.slow),
        (Profile::Flaky, args.flaky),
        (Profile::Liar, args.liar),
        (Profile::Silent, args.silent),
        (Profile::Partial, args.partial),
        (Profile::Choker, args.choker),
        (Profile::Idle, args.idle),
    ];
    if by_hand.iter().any(|(_, n)| n.is_some()) {
        let mut counts = ProfileCounts::default();
        for (profile, n) in by_hand {
            counts.set(profile, n.unwrap_or(0));
        }
        return counts;
    }
    match args.profile {
        ProfileChoice::Mix => ProfileCounts::mix(args.peers),
        ProfileChoice::Only(profile) => ProfileCounts::only(profile, args.peers),
    }
}

/// `n` distinct ports on 127.0.0.1 that were free a moment ago, for the leechers to
/// listen on. They are taken below the kernel's ephemeral range: the ports it hands out
/// for port 0 are also the source ports of outgoing connections, hundreds of which the
/// leechers started first open before the last one binds its port, and a `get` that
/// cannot listen ends at start (exit 10).
fn free_ports(n: u32) -> std::io::Result<Vec<u16>> {
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .clamp(2048, u16::MAX);
    let mut ports = Vec::new();
    for _ in 0..(200 * n.max(1)) {
        if ports.len() == n as usize {
            break;
        }
        let candidate = 1024 + rand::random::<u16>() % (below - 1024);
        if !ports.contains(&candidate)
            && TcpListener::bind((Ipv4Addr::LOCALHOST, candidate)).is_ok()
        {
            ports.push(candidate);
        }
    }
    if ports.len() < n as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no {n} free ports below {below}"),
        ));
    }
    Ok(ports)
}

/// A leecher process and what is known of it.
struct Leecher {
    index: u32,
    port: u16,
    dir: PathBuf,
    stats_file: PathBuf,
    log_file: PathBuf,
    child: Child,
    started: Instant,
    exited: Option<(Instant, Option<i32>)>,
    killed: bool,
    /// The largest RSS and open-file count seen in `/proc` while it ran: a second source
    /// beside its own stats records.
    peak_rss: u64,
    max_open_files: u64,
}

impl Leecher {
    fn running(&self) -> bool {
        self.exited.is_none()
    }

    /// Notes whether it has exited, without waiting.
    fn poll(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Some(p) = torrent_actors::procstats::of_pid(&self.child.id().to_string()) {
            self.peak_rss = self.peak_rss.max(p.peak_rss_bytes).max(p.rss_bytes);
            self.max_open_files = self.max_open_files.max(p.open_files);
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exited = Some((Instant::now(), status.code()));
        }
    }

    /// Kills it by its PID and reaps it, waiting a bounded time.
    fn kill(&mut self) {
        if self.exited.is_some() {
            return;
        }
        self.killed = true;
        let _ = self.child.kill();
        let deadline = Instant::now() + REAP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some((Instant::now(), status.code()));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The links the arguments ask for: the flags for every peer, then `--link`s.
fn links_of(args: &SwarmArgs) -> Result<Links, Failure> {
    let all = LinkProfile {
        latency: args.latency.unwrap_or_default(),
        jitter: args.jitter.unwrap_or_default(),
        rate: args.link_rate,
        loss_ppm: args.loss.unwrap_or(0),
    }
    .validate("--latency/--jitter")
    .map_err(|e| usage(e.to_string()))?;
    let mut links = Links {
        all,
        per_profile: Vec::new(),
    };
    for text in &args.link {
        links.add(text).map_err(|e| usage(format!("--link {e}")))?;
    }
    Ok(links)
}

/// Starts leecher `index`: this binary's `get`, listening on 127.0.0.1:`port`, told
/// every swarm peer and the other leechers, writing its stats every 500 ms.
fn start_leecher(
    index: u32,
    port: u16,
    peers: &[SocketAddr],
    torrent: &Path,
    work: &Path,
    extra: &[String],
) -> Result<Leecher, Failure> {
    let dir = work.join(format!("leecher-{index}"));
    let stats_file = work.join(format!("leecher-{index}.stats.jsonl"));
    let log_file = work.join(format!("leecher-{index}.log"));
    std::fs::create_dir_all(&dir).map_err(|e| not_writable(&dir, e))?;
    let _ = std::fs::remove_file(&stats_file);
    let log = File::create(&log_file).map_err(|e| not_writable(&log_file, e))?;
    let log2 = log.try_clone().map_err(|e| not_writable(&log_file, e))?;
    let exe = std::env::current_exe().map_err(|e| Failure {
        code: exit::USAGE,
        error: anyhow::anyhow!("cannot find this program to run the leechers: {e}"),
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("get")
        .arg("-o")
        .arg(&dir)
        .args([
            "--bind",
            "127.0.0.1",
            "--no-dht",
            "--stats-every",
            LEECHER_STATS_EVERY,
        ])
        .arg("--port")
        .arg(port.to_string())
        .arg("--max-peers")
        .arg((peers.len() + 8).to_string())
        .arg("--stats-file")
        .arg(&stats_file);
    for peer in peers {
        cmd.arg("--peer").arg(peer.to_string());
    }
    cmd.args(extra)
        .arg(torrent)
        // No DHT bootstrap: the leechers must not look beyond loopback.
        .env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let child = cmd.spawn().map_err(|e| Failure {
        code: exit::USAGE,
        error: anyhow::anyhow!("cannot start leecher {index}: {e}"),
    })?;
    Ok(Leecher {
        index,
        port,
        dir,
        stats_file,
        log_file,
        child,
        started: Instant::now(),
        exited: None,
        killed: false,
        peak_rss: 0,
        max_open_files: 0,
    })
}

/// Sets a flag on Ctrl-C or SIGTERM, so the run can stop its leechers and report.
fn watch_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let _ = std::thread::Builder::new()
        .name("swarm-signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let terminate = async {
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(mut sig) => {
                            sig.recv().await;
                        }
                        Err(_) => futures::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate => {}
                }
            });
            set.store(true, Ordering::Relaxed);
        });
    flag
}

/// `swarm`: plan the swarm, start its peers and leechers, watch them to the end, then
/// report. Each step is a function below, in the order they run.
pub fn run(args: SwarmArgs) -> Result<(), Failure> {
    let (spec, kept) = check_args(&args)?;
    // Kept alive to the end: dropping it removes a temporary work folder.
    let (work, _temp) = work_folder(&args)?;
    let (plan, torrent_path) = plan_swarm(&args, spec, &work, kept)?;
    let mut report = new_report(&args, &plan, &torrent_path);
    if args.dry_run {
        report.peers = peer_reports(&plan, &[], &[]);
        report.profiles = profile_totals(&report.peers);
        write_report(&args, &report, false)?;
        out!("{}", report.summary());
        return Ok(());
    }

    let interrupted = watch_signals();
    let swarm = Swarm::start(&plan, args.swarm_threads as usize).map_err(|e| Failure {
        code: exit::OUTPUT_NOT_WRITABLE,
        error: anyhow::anyhow!("{e}"),
    })?;
    let addrs: Vec<SocketAddr> = swarm.peers().iter().map(|p| p.addr).collect();
    let mut leechers = start_leechers(&args, &addrs, &torrent_path, &work)?;
    let started = Instant::now();
    let watched = watch(
        &args,
        &swarm,
        &mut leechers,
        &interrupted,
        started,
        &mut report,
    );
    if leechers.iter().any(|l| l.killed) {
        // The peers notice a killed leecher's connections closing on their own thread;
        // a moment lets them count those closes before they are stopped.
        std::thread::sleep(Duration::from_millis(500));
    }
    report
        .profile_series
        .push(sample(&swarm, started, Instant::now()));
    let mut tallies: Vec<PeerTally> = swarm
        .peers()
        .iter()
        .map(|p| PeerTally::of(&p.counters))
        .collect();
    let mut closes = watched.closes;
    closes.extend(swarm.take_closes());
    let addr_texts: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    swarm.stop();
    let exits: Vec<Instant> = leechers
        .iter()
        .filter_map(|l| l.exited.map(|(at, _)| at))
        .collect();
    judge_closes(&mut tallies, &closes, &exits);
    report.elapsed_secs = started.elapsed().as_secs_f64();
    report.timed_out = watched.timed_out;
    report.peers = peer_reports(&plan, &addr_texts, &tallies);
    report.profiles = profile_totals(&report.peers);
    report.leechers = check_leechers(&leechers, &plan);
    finish(&args, report, watched.stopped_by_signal)
}

/// The arguments checked: the swarm to plan, and whether its work folder is kept.
fn check_args(args: &SwarmArgs) -> Result<(SwarmSpec, bool), Failure> {
    let counts = counts_of(args);
    if counts.total() == 0 {
        return Err(usage(
            "the swarm has no peers: give --peers or a profile count".into(),
        ));
    }
    let piece_length = u32::try_from(args.piece_size)
        .ok()
        .filter(|&p| p >= 16 * 1024)
        .ok_or_else(|| {
            usage(format!(
                "--piece-size {} must be 16 KiB to 4 GiB",
                args.piece_size
            ))
        })?;
    if args.size == 0 {
        return Err(usage("--size must be at least one byte".into()));
    }
    let links = links_of(args)?;
    if !args.dry_run {
        // Every peer holds a listener and a socket per leecher, far past the usual soft
        // limit of 1024; the leechers inherit the raised limit.
        let needed = open_files_needed(counts.total(), args.leechers, args.utp);
        ensure_open_files(needed).map_err(|e| Failure {
            code: exit::SWARM_OPEN_FILES,
            error: e.into(),
        })?;
    }
    let spec = SwarmSpec {
        seed: args.seed,
        total_length: args.size,
        piece_length,
        counts,
        links,
        utp: args.utp,
    };
    let kept = args.work_dir.is_some() || args.keep || args.dry_run;
    Ok((spec, kept))
}

/// The work folder: given, or a temporary one, removed at the end unless kept (the
/// second value; dropping it removes the folder).
fn work_folder(args: &SwarmArgs) -> Result<(PathBuf, Option<tempfile::TempDir>), Failure> {
    if let Some(dir) = &args.work_dir {
        std::fs::create_dir_all(dir).map_err(|e| not_writable(dir, e))?;
        return Ok((dir.clone(), None));
    }
    let temp = tempfile::Builder::new()
        .prefix("torrent-actors-swarm-")
        .tempdir()
        .map_err(|e| not_writable(&std::env::temp_dir(), e))?;
    // A dry run's torrent is what it was asked for: its folder is kept.
    if args.keep || args.dry_run {
        Ok((temp.keep(), None))
    } else {
        Ok((temp.path().to_path_buf(), Some(temp)))
    }
}

/// Plans the swarm (its data, torrent and peers), writes the torrent into `work` and
/// says what was planned.
fn plan_swarm(
    args: &SwarmArgs,
    spec: SwarmSpec,
    work: &Path,
    kept: bool,
) -> Result<(SwarmPlan, PathBuf), Failure> {
    let (counts, piece_length) = (spec.counts, spec.piece_length);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let planning = Instant::now();
    let plan = SwarmPlan::new(spec, threads).map_err(|e| usage(e.to_string()))?;
    let torrent_path = work.join(format!("{}.torrent", plan.data.file_name()));
    std::fs::write(&torrent_path, &plan.torrent).map_err(|e| not_writable(&torrent_path, e))?;
    outln!(
        "swarm: {} peers ({}), {} in {} pieces of {}, seed {}, info-hash {}; hashed in {:.1} s",
        counts.total(),
        counts.describe(),
        human_bytes(plan.data.total_length() as f64),
        plan.data.num_pieces(),
        human_bytes(f64::from(piece_length)),
        args.seed,
        plan.info_hash.to_hex(),
        planning.elapsed().as_secs_f64()
    );
    if !plan.spec.links.is_none() {
        outln!("links: {}", plan.spec.links.describe());
    }
    outln!(
        "work folder: {}{}",
        work.display(),
        if kept {
            ""
        } else {
            " (removed at the end; --keep keeps it)"
        }
    );
    if !honest_peers_cover(&plan.peers, plan.data.num_pieces()) {
        eprintln!(
            "warning: no honest peer (neither liar nor silent) holds every piece; the \
             leechers cannot complete"
        );
    }
    Ok((plan, torrent_path))
}

/// The report of a planned swarm, before anything has run.
fn new_report(args: &SwarmArgs, plan: &SwarmPlan, torrent_path: &Path) -> Report {
    Report {
        seed: args.seed,
        size: plan.data.total_length(),
        piece_size: plan.spec.piece_length,
        pieces: plan.data.num_pieces(),
        info_hash: plan.info_hash.to_hex(),
        torrent_file: torrent_path.display().to_string(),
        links: plan.spec.links.describe(),
        dry_run: args.dry_run,
        duration_limit_secs: args.duration_limit.as_secs_f64(),
        elapsed_secs: 0.0,
        timed_out: false,
        outcome: "planned".into(),
        exit_code: 0,
        profiles: Vec::new(),
        peers: Vec::new(),
        leechers: Vec::new(),
        profile_series: Vec::new(),
    }
}

/// Each planned peer as reported: its plan, its address (if started) and its tally.
fn peer_reports(plan: &SwarmPlan, addrs: &[String], tallies: &[PeerTally]) -> Vec<PeerReport> {
    plan.peers
        .iter()
        .enumerate()
        .map(|(i, p)| PeerReport {
            index: p.index,
            addr: addrs.get(i).cloned().unwrap_or_default(),
            profile: p.profile,
            rate: p.rate,
            pieces_at_start: p.pieces_at_start(plan.data.num_pieces()),
            lie_permille: p.lie_permille,
            flaky_up_secs: p.flaky.map(|f| f.up.as_secs_f64()),
            flaky_down_secs: p.flaky.map(|f| f.down.as_secs_f64()),
            tally: tallies.get(i).copied().unwrap_or_default(),
        })
        .collect()
}

/// Starts the leechers, each told of every swarm peer and of the other leechers; on a
/// failure the ones started are killed.
fn start_leechers(
    args: &SwarmArgs,
    addrs: &[SocketAddr],
    torrent_path: &Path,
    work: &Path,
) -> Result<Vec<Leecher>, Failure> {
    let ports = free_ports(args.leechers).map_err(|e| Failure {
        code: exit::OUTPUT_NOT_WRITABLE,
        error: anyhow::anyhow!("cannot find a free port on 127.0.0.1: {e}"),
    })?;
    // Each leecher writes its own trace there; the folder is made now, so a bad one
    // fails before anything runs.
    let trace_dir = match &args.trace {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| not_writable(dir, e))?;
            Some(dir.to_str().ok_or_else(|| Failure {
                code: exit::USAGE,
                error: anyhow::anyhow!("--trace: the folder's name must be UTF-8"),
            })?)
        }
        None => None,
    };
    let mut leechers = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let mut peers = addrs.to_vec();
        peers.extend(
            ports
                .iter()
                .filter(|&&p| p != port)
                .map(|&p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
        );
        let mut extra = args.leecher_arg.clone();
        if let Some(dir) = trace_dir {
            extra.push("--trace".into());
            extra.push(format!("{dir}/leecher-{i}.trace.json"));
        }
        match start_leecher(i as u32, port, &peers, torrent_path, work, &extra) {
            Ok(l) => leechers.push(l),
            Err(e) => {
                for l in &mut leechers {
                    l.kill();
                }
                return Err(e);
            }
        }
    }
    Ok(leechers)
}

/// What the swarm's peers had served by `at`, per profile.
fn sample(swarm: &Swarm, started: Instant, at: Instant) -> ProfileSample {
    ProfileSample {
        t: at.duration_since(started).as_secs_f64(),
        bytes: Profile::ALL
            .into_iter()
            .map(|profile| {
                let bytes = swarm
                    .peers()
                    .iter()
                    .filter(|p| p.profile == profile)
                    .map(|p| p.counters.bytes_served.load(Ordering::Relaxed))
                    .sum();
                (profile.name().to_string(), bytes)
            })
            .collect(),
    }
}

/// How the watch ended.
struct Watched {
    /// Connections the peers saw closed, for `judge_closes`.
    closes: Vec<RemoteClose>,
    /// The duration limit came first.
    timed_out: bool,
    /// Ctrl-C or SIGTERM came first.
    stopped_by_signal: bool,
}

/// Watches until every leecher has exited (or the limit or a signal kills them):
/// samples the peers' counters into `report`, notes exits, prints progress.
fn watch(
    args: &SwarmArgs,
    swarm: &Swarm,
    leechers: &mut [Leecher],
    interrupted: &AtomicBool,
    started: Instant,
    report: &mut Report,
) -> Watched {
    let deadline = started + args.duration_limit;
    let mut next_sample = started + TICK;
    let mut next_progress = started + PROGRESS_EVERY;
    let mut watched = Watched {
        closes: Vec::new(),
        timed_out: false,
        stopped_by_signal: false,
    };
    while leechers.iter().any(Leecher::running) {
        std::thread::sleep(TICK);
        watched.closes.extend(swarm.take_closes());
        let now = Instant::now();
        for l in leechers.iter_mut() {
            l.poll();
        }
        if now >= next_sample {
            report.profile_series.push(sample(swarm, started, now));
            // Every tick for the first seconds, so a short run still draws its curves.
            next_sample = if now.duration_since(started) < FINE_SAMPLES_FOR {
                now + TICK
            } else {
                next_sample.max(now) + Duration::from_secs(1)
            };
        }
        if now >= next_progress {
            next_progress += PROGRESS_EVERY;
            print_progress(
                now.duration_since(started),
                leechers,
                report.profile_series.last(),
            );
        }
        if interrupted.load(Ordering::Relaxed) {
            watched.stopped_by_signal = true;
        } else if now >= deadline {
            watched.timed_out = true;
        }
        if watched.timed_out || watched.stopped_by_signal {
            for l in leechers.iter_mut() {
                l.kill();
            }
            break;
        }
    }
    watched
}

/// The leechers' own account, and the check of their files, a thread per leecher.
fn check_leechers(leechers: &[Leecher], plan: &SwarmPlan) -> Vec<LeecherReport> {
    let file_name = plan.data.file_name();
    std::thread::scope(|scope| {
        let checks: Vec<_> = leechers
            .iter()
            .map(|l| {
                let file_name = &file_name;
                scope.spawn(move || leecher_report(l, plan, file_name))
            })
            .collect();
        checks
            .into_iter()
            .map(|c| c.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The outcome and exit code from the report, printed and written.
fn finish(args: &SwarmArgs, mut report: Report, stopped_by_signal: bool) -> Result<(), Failure> {
    let wrong = report
        .leechers
        .iter()
        .any(|l| l.exit_code == Some(0) && !l.files_right);
    let incomplete = report.leechers.iter().any(|l| !l.completed);
    (report.outcome, report.exit_code) = if stopped_by_signal {
        ("interrupted".into(), exit::INTERRUPTED)
    } else if wrong {
        ("wrong files".into(), exit::SWARM_WRONG_FILES)
    } else if incomplete {
        ("incomplete".into(), exit::SWARM_INCOMPLETE)
    } else {
        ("complete".into(), 0)
    };
    outln!();
    out!("{}", report.summary());
    write_report(args, &report, true)?;
    match report.exit_code {
        0 => Ok(()),
        code => Err(Failure {
            code,
            error: anyhow::anyhow!(match code {
                exit::SWARM_WRONG_FILES => "a leecher finished with wrong data in its file",
                exit::INTERRUPTED => "interrupted",
                _ if report.timed_out =>
                    "the duration limit was reached before every leecher completed",
                _ => "a leecher did not complete",
            }),
        }),
    }
}

/// Writes `--report` and (after a run) `--plot`.
fn write_report(args: &SwarmArgs, report: &Report, with_plot: bool) -> Result<(), Failure> {
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(report).map_err(|e| not_writable(path, e))?;
        std::fs::write(path, json).map_err(|e| not_writable(path, e))?;
        outln!("report written to {}", path.display());
    }
    if let (Some(path), true) = (&args.plot, with_plot) {
        let svg = plot::svg(report).map_err(|e| not_writable(path, e))?;
        std::fs::write(path, svg).map_err(|e| not_writable(path, e))?;
        outln!("plot written to {}", path.display());
    }
    Ok(())
}

/// A progress line: each leecher's share verified, rate and peers, from the last line
/// of its stats file, and what the swarm has served.
fn print_progress(elapsed: Duration, leechers: &[Leecher], served: Option<&ProfileSample>) {
    let mut line = format!("{:>5.0} s:", elapsed.as_secs_f64());
    for l in leechers {
        let last = std::fs::read_to_string(&l.stats_file)
            .ok()
            .map(|text| StatsSummary::from_lines(text.lines().last().unwrap_or("")));
        match (
            l.exited,
            last.and_then(|s| s.samples.last().copied().zip(Some(s.total_bytes))),
        ) {
            (Some((_, code)), _) => {
                line.push_str(&format!(" leecher {} exited ({code:?});", l.index))
            }
            (None, Some((s, total))) => line.push_str(&format!(
                " leecher {} {:.1}% {}/s {} peers;",
                l.index,
                s.verified_bytes as f64 * 100.0 / total.max(1) as f64,
                human_bytes(s.rate),
                s.peers
            )),
            (None, None) => line.push_str(&format!(" leecher {} starting;", l.index)),
        }
    }
    if let Some(s) = served {
        line.push_str(&format!(
            " swarm served {}",
            human_bytes(s.bytes.values().sum::<u64>() as f64)
        ));
    }
    outln!("{line}");
}

/// One leecher's part of the report: its stats file read and its file checked.
fn leecher_report(l: &Leecher, plan: &SwarmPlan, file_name: &str) -> LeecherReport {
    let stats = std::fs::read_to_string(&l.stats_file)
        .map(|text| StatsSummary::from_lines(&text))
        .unwrap_or_default();
    let exit_code = l.exited.and_then(|(_, code)| code);
    let files = (exit_code == Some(0))
        .then(|| check_file(&l.dir.join(file_name), &plan.data, &plan.hashes));
    let files_right = files.as_ref().is_some_and(|f| f.is_right(&plan.data));
    LeecherReport {
        index: l.index,
        port: l.port,
        pid: l.child.id(),
        exit_code,
        killed: l.killed,
        completed: exit_code == Some(0) && files_right,
        completion_secs: stats.completed_at,
        exited_after_secs: l
            .exited
            .map(|(at, _)| at.duration_since(l.started).as_secs_f64()),
        average_rate: stats
            .completed_at
            .map(|t| plan.data.total_length() as f64 / t.max(0.001)),
        files,
        files_right,
        hash_failures: stats.hash_failures,
        banned: stats.banned,
        received: stats.received,
        uploaded: stats.uploaded,
        verified_this_run: stats.verified_this_run,
        waste_ratio: waste_ratio(stats.received, stats.verified_this_run),
        peak_rss_bytes: stats.peak_rss_bytes.max(l.peak_rss),
        max_open_files: stats.max_open_files.max(l.max_open_files),
        max_peers: stats.max_peers,
        throughput: stats.samples,
        actors: stats.actors,
        stats_file: l.stats_file.display().to_string(),
        log_file: l.log_file.display().to_string(),
    }
}
