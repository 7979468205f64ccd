//! `torrent-actors trace FILE`: summarises a message trace (Chrome trace-event JSON as
//! `--trace` writes it): per-hop latency percentiles of the block chain, the busiest
//! actor instances by handling time, and with `--svg` a timeline of one sampled block.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;

use torrent_actors::engine::trace::{
    chains, parse_trace, summarise, Hop, ParsedTrace, MAX_TRACE_FILE,
};
use torrent_actors::terminal::printable;

use crate::{exit, Failure};

fn fail(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

pub fn run(file: &Path, svg: Option<&Path>) -> Result<(), Failure> {
    let f = std::fs::File::open(file)
        .map_err(|e| fail(exit::UNREADABLE, anyhow::anyhow!("{}: {e}", file.display())))?;
    let mut bytes = Vec::new();
    // Read one byte past the limit so an oversized file is refused, never read whole.
    f.take(MAX_TRACE_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(exit::UNREADABLE, anyhow::anyhow!("{}: {e}", file.display())))?;
    let trace = parse_trace(&bytes)
        .map_err(|e| fail(exit::UNREADABLE, anyhow::anyhow!("{}: {e}", file.display())))?;
    let s = summarise(&trace);
    outln!(
        "blocks traced: {} ({} with every hop in order)",
        s.blocks,
        s.complete_chains
    );
    outln!(
        "{:<24} {:>7} {:>10} {:>10} {:>10}",
        "hop",
        "blocks",
        "p50 µs",
        "p99 µs",
        "max µs"
    );
    for h in &s.hops {
        outln!(
            "{:<24} {:>7} {:>10} {:>10} {:>10}",
            h.hop,
            h.count,
            h.p50_us,
            h.p99_us,
            h.max_us
        );
    }
    // Names come from the file, which may be a stranger's: escaped for the terminal.
    outln!("busiest actor instances (handling time):");
    for (thread, us, n) in &s.busiest {
        let thread = printable(thread);
        outln!("  {thread:<24} {us:>10} µs in {n} messages");
    }
    if !s.waits.is_empty() {
        outln!("longest mailbox waits, by message:");
        outln!(
            "  {:<22} {:>7} {:>10} {:>10} {:>10}",
            "message",
            "count",
            "p50 µs",
            "p99 µs",
            "max µs"
        );
        for w in &s.waits {
            outln!(
                "  {:<22} {:>7} {:>10} {:>10} {:>10}",
                printable(&w.hop),
                w.count,
                w.p50_us,
                w.p99_us,
                w.max_us
            );
        }
    }
    if let Some(out) = svg {
        let text = timeline_svg(&trace);
        std::fs::write(out, text).map_err(|e| {
            fail(
                exit::OUTPUT_NOT_WRITABLE,
                anyhow::anyhow!("{}: {e}", out.display()),
            )
        })?;
    }
    Ok(())
}

/// An SVG timeline of the first block with a complete chain: one row per actor instance
/// it passed, a dot per hop, a line joining them in time order.
fn timeline_svg(trace: &ParsedTrace) -> String {
    let by_block = chains(trace);
    let chosen = by_block
        .iter()
        .find(|(_, h)| h[..Hop::REQUIRED].iter().all(Option::is_some))
        .map(|(b, _)| *b);
    let mut svg = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"300\" font-family=\"sans-serif\" font-size=\"12\">\n",
    );
    let Some(block) = chosen else {
        svg.push_str(
            "<text x=\"10\" y=\"20\">no complete block chain in this trace</text>\n</svg>\n",
        );
        return svg;
    };
    let steps: Vec<_> = Hop::ALL
        .iter()
        .filter_map(|hop| {
            trace
                .flows
                .iter()
                .filter(|f| f.block == block && f.hop == *hop)
                .min_by_key(|f| f.ts_us)
        })
        .collect();
    let t0 = steps.first().map_or(0, |f| f.ts_us);
    let span = steps
        .last()
        .map_or(1, |f| f.ts_us.saturating_sub(t0))
        .max(1);
    let _ = writeln!(
        svg,
        "<text x=\"10\" y=\"20\">block {} (piece {}, offset {}): {} µs</text>",
        block,
        block >> 32,
        block & 0xffff_ffff,
        span
    );
    let mut prev: Option<(u64, u64)> = None;
    for (row, f) in steps.iter().enumerate() {
        let x = 200 + (f.ts_us.saturating_sub(t0) * 560 / span);
        let y = 50 + row as u64 * 40;
        let label: String = format!("{} @ {}", f.hop.name(), f.thread)
            .chars()
            .filter(|c| c.is_alphanumeric() || " @/_-.".contains(*c))
            .take(40)
            .collect();
        let _ = writeln!(svg, "<text x=\"10\" y=\"{}\">{label}</text>", y + 4);
        if let Some((px, py)) = prev {
            let _ = writeln!(
                svg,
                "<line x1=\"{px}\" y1=\"{py}\" x2=\"{x}\" y2=\"{y}\" stroke=\"gray\"/>"
            );
        }
        let _ = writeln!(
            svg,
            "<circle cx=\"{x}\" cy=\"{y}\" r=\"5\" fill=\"steelblue\"/>"
        );
        let at = f.ts_us.saturating_sub(t0);
        let anchor = if x > 700 { "end" } else { "start" };
        let tx = if x > 700 { x - 8 } else { x + 8 };
        let _ = writeln!(
            svg,
            "<text x=\"{tx}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"gray\">+{at} µs</text>",
            y - 8
        );
        prev = Some((x, y));
    }
    svg.push_str("</svg>\n");
    svg
}
