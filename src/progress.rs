//! What `get` and `seed` say about a run: the download rate and ETA of this run's bytes
//! only (what was on disk before is no download), the line said once the start-up check
//! is over, the progress text and the summary. Pure: no terminal and no clock of its own;
//! the front end passes times in and prints what comes out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use indicatif::HumanBytes;

/// This run's download rate over the last [`RateMeter::WINDOW`], from the bytes verified
/// by this run (`Progress::downloaded_this_run`). Pieces found good on disk at start, or
/// trusted from the resume file, never count, so a resumed run shows the rate it has
/// rather than the jump to where it resumed.
#[derive(Debug, Default)]
pub struct RateMeter {
    /// (when, bytes verified by this run) for the last [`RateMeter::WINDOW`], oldest
    /// first; one sample a progress event (two a second), so at most a dozen.
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// How far back the rate looks: long enough to smooth the piece-by-piece steps,
    /// short enough to follow a change within seconds.
    pub const WINDOW: Duration = Duration::from_secs(5);

    /// Records that this run had verified `bytes` by `at`.
    pub fn push(&mut self, at: Instant, bytes: u64) {
        self.samples.push_back((at, bytes));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > Self::WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the window; 0 until two samples are apart in time.
    pub fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                b.1.saturating_sub(a.1) as f64 / (b.0 - a.0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// The time left at `rate` bytes per second, compactly (`45s`, `3m20s`, `2h05m`,
/// `3d04h`), or `--` when nothing is coming in (or it would take over 100 days): an
/// estimate from no data is no estimate.
pub fn eta(remaining: u64, rate: f64) -> String {
    if remaining == 0 {
        return "0s".to_string();
    }
    if rate < 1.0 {
        return "--".to_string();
    }
    let secs = (remaining as f64 / rate).ceil();
    if secs > 100.0 * 86_400.0 {
        return "--".to_string();
    }
    let secs = secs as u64;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// A rate as people read it: `2.90 MiB/s`.
pub fn rate(bytes_per_sec: f64) -> String {
    format!("{}/s", HumanBytes(bytes_per_sec.max(0.0) as u64))
}

/// What the start-up check found, for the line said once it is over.
#[derive(Debug, Clone, Copy)]
pub struct StartState {
    /// Wanted bytes verified (found good, or trusted from the resume file).
    pub verified: u64,
    /// Wanted bytes in all.
    pub total: u64,
    /// The piece length, when the torrent is known, to count pieces.
    pub piece_length: Option<u64>,
    /// Whether a resume file was there at start: then the pieces were mostly trusted
    /// from it ("resuming"), else found by hashing the files ("existing data").
    pub resumed: bool,
}

/// The line said when the start-up check is over: `resuming: 111/256 pieces (27.75 MiB)
/// verified`, `existing data: 255/256 pieces (63.75 MiB) good`, `already complete: ...`,
/// or nothing for a start from scratch.
pub fn start_line(name: &str, s: StartState) -> Option<String> {
    if s.total == 0 || s.verified == 0 {
        return None;
    }
    if s.verified >= s.total {
        return Some(format!(
            "already complete: {name}, {} verified",
            HumanBytes(s.total)
        ));
    }
    // Every wanted piece but the torrent's last is whole, so rounding up counts them.
    let counted = match s.piece_length.filter(|&l| l > 0) {
        Some(l) => format!(
            "{}/{} pieces ({})",
            s.verified.div_ceil(l),
            s.total.div_ceil(l),
            HumanBytes(s.verified)
        ),
        None => format!("{} of {}", HumanBytes(s.verified), HumanBytes(s.total)),
    };
    Some(if s.resumed {
        format!("resuming: {counted} verified")
    } else {
        format!("existing data: {counted} good")
    })
}

/// The summary of a download that completed: how much this run fetched, and at what
/// rate over the time it spent fetching (not the start-up check). The exact count ends
/// the line (`N bytes fetched this run`), for scripts.
pub fn summary(name: &str, total: u64, fetched: u64, fetching: Duration) -> String {
    if fetched == 0 {
        return format!(
            "{name} was already complete ({}); 0 bytes fetched this run",
            HumanBytes(total)
        );
    }
    let secs = fetching.as_secs_f64();
    let took = if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else {
        format!("{secs:.1} s")
    };
    format!(
        "downloaded {name}: {} in {took} ({} at {} average; {fetched} bytes fetched this run)",
        HumanBytes(total),
        HumanBytes(fetched),
        rate(fetched as f64 / secs.max(0.001))
    )
}

/// A size in at most four significant figures and a binary unit: `812 B`, `27.8 MiB`,
/// `1.23 GiB`; as a number and its unit, so two sizes can share one.
fn compact(bytes: u64) -> (String, &'static str) {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let number = match unit {
        0 => format!("{bytes}"),
        _ if value >= 100.0 => format!("{value:.0}"),
        _ if value >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    };
    (number, UNITS[unit])
}

/// `done/total UNIT`, the unit written once when both share it: `27.8/64.0 MiB`.
pub fn done_of_total(done: u64, total: u64) -> String {
    let (d, du) = compact(done);
    let (t, tu) = compact(total);
    if du == tu {
        format!("{d}/{t} {tu}")
    } else {
        format!("{d} {du}/{t} {tu}")
    }
}

/// A rate, compactly: `2.90 MiB/s`.
pub fn compact_rate(bytes_per_sec: f64) -> String {
    let (n, u) = compact(bytes_per_sec.max(0.0) as u64);
    format!("{n} {u}/s")
}

/// One progress line, in parts the fitting may drop or shorten.
#[derive(Debug, Clone, Default)]
pub struct LineParts {
    /// The torrent's name (already made printable).
    pub name: String,
    /// How far the bar is filled (0 to 1), or no bar.
    pub bar: Option<f64>,
    /// What must stay: percent, sizes, download rate, ETA (or the phase's equivalent).
    pub essential: String,
    /// What may go when the terminal is narrow, the last first.
    pub extras: Vec<String>,
}

/// The widest bar drawn, and the narrowest worth drawing.
const BAR_MAX: usize = 20;
const BAR_MIN: usize = 8;
/// The name is cut to this many characters before it goes altogether.
const NAME_MIN: usize = 12;

/// `parts` as one line of at most `width` characters (a character taken as one column),
/// so the line never wraps and a redraw never leaves a stale half behind. When it does
/// not fit, in turn: the bar narrows, the extras go from the last, the name is cut, the
/// bar goes, the name goes; what is still too long is cut.
pub fn fit(parts: &LineParts, width: usize) -> String {
    let mut extras = parts.extras.len();
    let mut bar = parts.bar.map(|_| BAR_MAX);
    let mut name = parts.name.chars().count();
    let compose = |bar: Option<usize>, extras: usize, name: usize| {
        let mut line = String::new();
        if name > 0 {
            line.push_str(&cut(&parts.name, name));
            line.push(' ');
        }
        if let (Some(w), Some(filled)) = (bar, parts.bar) {
            line.push_str(&draw_bar(filled, w));
            line.push(' ');
        }
        line.push_str(&parts.essential);
        for extra in &parts.extras[..extras] {
            line.push(' ');
            line.push_str(extra);
        }
        line
    };
    let fits = |line: &String| line.chars().count() <= width;
    loop {
        let line = compose(bar, extras, name);
        if fits(&line) {
            return line;
        }
        match (bar, extras, name) {
            (Some(w), _, _) if w > BAR_MIN => bar = Some(w - 1),
            (_, e, _) if e > 0 => extras = e - 1,
            (_, _, n) if n > NAME_MIN => name = n - 1,
            (Some(_), _, _) => bar = None,
            (None, _, n) if n > 0 => name = 0,
            _ => return cut(&line, width),
        }
    }
}

/// `text` cut to `max` characters, the cut marked with an ellipsis.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `[=====>    ]` with `width` cells inside the brackets.
fn draw_bar(filled: f64, width: usize) -> String {
    let done = ((filled.clamp(0.0, 1.0) * width as f64) as usize).min(width);
    let mut bar = String::with_capacity(width + 2);
    bar.push('[');
    bar.extend(std::iter::repeat_n('=', done));
    if done < width {
        bar.push('>');
        bar.extend(std::iter::repeat_n(' ', width - done - 1));
    }
    bar.push(']');
    bar
}

/// The parts of the line while downloading: percent, sizes, this run's rate and the ETA
/// stay; the upload rate and the peers (how many of them seeds) go first.
pub fn downloading_parts(
    name: &str,
    verified: u64,
    total: u64,
    down: f64,
    up: f64,
    peers: usize,
    seeds: usize,
) -> LineParts {
    let fraction = verified as f64 / total.max(1) as f64;
    LineParts {
        name: name.to_string(),
        bar: Some(fraction),
        essential: format!(
            "{:>3}% {} ↓ {} eta {}",
            (fraction * 100.0).floor() as u64,
            done_of_total(verified, total),
            compact_rate(down),
            eta(total.saturating_sub(verified), down)
        ),
        extras: vec![format!("↑ {}", compact_rate(up)), swarm_text(peers, seeds)],
    }
}

/// The parts of the line while seeding: the upload rate and ratio stay.
pub fn seeding_parts(name: &str, total: u64, up: f64, uploaded: u64, peers: usize) -> LineParts {
    let (t, tu) = compact(total);
    let (u, uu) = compact(uploaded);
    LineParts {
        name: name.to_string(),
        bar: None,
        essential: format!(
            "{t} {tu} seeding ↑ {} ratio {:.2}",
            compact_rate(up),
            uploaded as f64 / total.max(1) as f64
        ),
        extras: vec![peers_text(peers), format!("{u} {uu} up")],
    }
}

/// The parts of the line while the data on disk is checked: the bar counts pieces.
pub fn checking_parts(name: &str, checked: usize, of: usize) -> LineParts {
    LineParts {
        name: name.to_string(),
        bar: Some(checked as f64 / of.max(1) as f64),
        essential: format!("checking {checked}/{of} pieces"),
        extras: Vec::new(),
    }
}

/// The parts of the line while a magnet link's metadata is fetched: a spinner, since
/// there is no size to fill a bar against.
pub fn metadata_parts(name: &str, tick: usize, peers: usize) -> LineParts {
    const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
    LineParts {
        name: name.to_string(),
        bar: None,
        essential: format!("{} fetching metadata", FRAMES[tick % FRAMES.len()]),
        extras: vec![peers_text(peers)],
    }
}

fn peers_text(peers: usize) -> String {
    format!("{peers} peer{}", if peers == 1 { "" } else { "s" })
}

/// The peers, and how many of them are seeds, once there are any.
fn swarm_text(peers: usize, seeds: usize) -> String {
    if peers == 0 {
        return peers_text(0);
    }
    let s = if seeds == 1 { "" } else { "s" };
    format!("{} ({seeds} seed{s})", peers_text(peers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_only_this_runs_bytes_over_the_window() {
        let t0 = Instant::now();
        let mut meter = RateMeter::default();
        assert_eq!(meter.rate(), 0.0);
        meter.push(t0, 0);
        assert_eq!(meter.rate(), 0.0);
        meter.push(t0 + Duration::from_secs(1), 1000);
        meter.push(t0 + Duration::from_secs(2), 3000);
        assert_eq!(meter.rate(), 1500.0);
        // Samples older than the window leave it.
        meter.push(t0 + Duration::from_secs(8), 3000);
        meter.push(t0 + Duration::from_secs(9), 3000);
        assert_eq!(meter.rate(), 0.0);
    }

    #[test]
    fn eta_is_dashes_without_a_rate_and_compact_with_one() {
        assert_eq!(eta(1000, 0.0), "--");
        assert_eq!(eta(1000, 0.5), "--");
        assert_eq!(eta(0, 0.0), "0s");
        assert_eq!(eta(10, 1.0), "10s");
        assert_eq!(eta(200, 1.0), "3m20s");
        assert_eq!(eta(7500, 1.0), "2h05m");
        assert_eq!(eta(3 * 86_400 + 4 * 3600, 1.0), "3d04h");
        assert_eq!(eta(u64::MAX, 1.0), "--");
    }

    #[test]
    fn the_start_line_says_what_the_check_found() {
        let mib = 1 << 20;
        let state = |verified, resumed| StartState {
            verified,
            total: 64 * mib,
            piece_length: Some(256 << 10),
            resumed,
        };
        assert_eq!(start_line("x", state(0, true)), None);
        assert_eq!(
            start_line("x", state(111 * (256 << 10), true)).unwrap(),
            "resuming: 111/256 pieces (27.75 MiB) verified"
        );
        assert_eq!(
            start_line("x", state(255 * (256 << 10), false)).unwrap(),
            "existing data: 255/256 pieces (63.75 MiB) good"
        );
        assert_eq!(
            start_line("x", state(64 * mib, true)).unwrap(),
            "already complete: x, 64.00 MiB verified"
        );
        // A short last piece still counts as one.
        let short = StartState {
            verified: 300_000,
            total: 600_000,
            piece_length: Some(32_768),
            resumed: false,
        };
        assert_eq!(
            start_line("x", short).unwrap(),
            "existing data: 10/19 pieces (292.97 KiB) good"
        );
        let unknown = StartState {
            piece_length: None,
            ..short
        };
        assert_eq!(
            start_line("x", unknown).unwrap(),
            "existing data: 292.97 KiB of 585.94 KiB good"
        );
    }

    #[test]
    fn the_summary_is_in_human_units_and_ends_with_the_exact_count() {
        assert_eq!(
            summary("m", 64 << 20, 0, Duration::ZERO),
            "m was already complete (64.00 MiB); 0 bytes fetched this run"
        );
        assert_eq!(
            summary("m", 64 << 20, 36 << 20, Duration::from_secs(12)),
            "downloaded m: 64.00 MiB in 12.0 s (36.00 MiB at 3.00 MiB/s average; 37748736 \
             bytes fetched this run)"
        );
        assert!(summary("m", 1, 1, Duration::from_millis(52)).contains(" in 52 ms ("));
    }

    #[test]
    fn sizes_are_compact_and_share_their_unit() {
        assert_eq!(done_of_total(0, 300_000), "0 B/293 KiB");
        assert_eq!(done_of_total(29_150_000, 64 << 20), "27.8/64.0 MiB");
        assert_eq!(done_of_total(1_320_000_000, 4 << 30), "1.23/4.00 GiB");
        assert_eq!(compact_rate(2.9 * 1048576.0), "2.90 MiB/s");
        assert_eq!(compact_rate(0.0), "0 B/s");
    }

    #[test]
    fn the_downloading_line_has_everything_on_a_wide_terminal() {
        let parts = downloading_parts("movie.bin", 160 << 10, 300_000, 0.0, 0.0, 0, 0);
        assert_eq!(
            fit(&parts, 120),
            "movie.bin [==========>         ]  54% 160/293 KiB ↓ 0 B/s eta -- ↑ 0 B/s 0 peers"
        );
        let parts = downloading_parts("m", 29_150_000, 64 << 20, 2.9 * 1048576.0, 1024.0, 1, 1);
        assert_eq!(
            fit(&parts, 120),
            "m [========>           ]  43% 27.8/64.0 MiB ↓ 2.90 MiB/s eta 13s ↑ 1.00 KiB/s 1 peer (1 seed)"
        );
    }

    #[test]
    fn a_narrow_terminal_loses_the_extras_and_the_name_before_the_eta() {
        let name = "A Rather Long Torrent Name (2026) [1080p]";
        let parts = downloading_parts(name, 29_150_000, 64 << 20, 2.9 * 1048576.0, 1024.0, 12, 3);
        for width in [20, 40, 60, 80, 100] {
            let line = fit(&parts, width);
            assert!(line.chars().count() <= width, "{width}: {line:?}");
            if width >= 50 {
                assert!(line.contains("eta 13s"), "{width}: {line:?}");
            }
        }
        let line = fit(&parts, 80);
        assert!(line.contains("12 peers") || !line.contains("↑"), "{line:?}");
        assert!(line.starts_with("A Rather Long"), "{line:?}");
    }

    #[test]
    fn other_phases_have_their_own_lines() {
        assert_eq!(
            fit(&checking_parts("m", 376, 768), 80),
            "m [=========>          ] checking 376/768 pieces"
        );
        assert_eq!(
            fit(&metadata_parts("m", 1, 0), 80),
            "m / fetching metadata 0 peers"
        );
        assert_eq!(
            fit(&seeding_parts("m", 4 << 20, 2048.0, 1 << 20, 3), 80),
            "m 4.00 MiB seeding ↑ 2.00 KiB/s ratio 0.25 3 peers 1.00 MiB up"
        );
    }
}
