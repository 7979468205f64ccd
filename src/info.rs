//! `torrent-actors info`: what a user wants to know about a `.torrent`, on stdout.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use indicatif::HumanBytes;
use torrent_actors::metainfo::Metainfo;
// Every text from the torrent goes through the shared rule, so a hostile name or comment
// cannot send escape sequences to the user's terminal.
use torrent_actors::terminal::printable;

use crate::{exit, Failure};

pub fn run(path: &Path) -> Result<(), Failure> {
    let bytes = crate::read_torrent_file(path)?;
    let metainfo = Metainfo::from_bytes(&bytes).map_err(|e| Failure {
        code: exit::INVALID_TORRENT,
        error: anyhow::anyhow!("invalid torrent {}: {e}", path.display()),
    })?;
    print!("{}", describe(&metainfo));
    Ok(())
}

/// The report, one `label: value` per line, files and trackers indented below.
fn describe(m: &Metainfo) -> String {
    let layout = &m.info.layout;
    let mut out = String::new();
    let mut line = |label: &str, value: &dyn std::fmt::Display| {
        let shown = format!("{:<12} {value}", format!("{label}:"));
        let _ = writeln!(out, "{}", shown.trim_end());
    };
    line("name", &printable(&m.info.name));
    line("info-hash", &m.info_hash);
    line(
        "total size",
        &format!(
            "{} ({} bytes)",
            HumanBytes(layout.total_length()),
            layout.total_length()
        ),
    );
    line(
        "pieces",
        &format!(
            "{} of {} ({} bytes)",
            layout.num_pieces(),
            HumanBytes(u64::from(layout.piece_length())),
            layout.piece_length()
        ),
    );
    line("private", &if m.info.private { "yes" } else { "no" });
    if m.info.hybrid {
        line("format", &"hybrid v1+v2 (used as v1)");
    }
    if let Some(date) = m.creation_date {
        let shown = u64::try_from(date)
            .ok()
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_else(|| date.to_string());
        line("created", &shown);
    }
    if let Some(by) = &m.created_by {
        line("created by", &printable(by));
    }
    if let Some(comment) = &m.comment {
        line("comment", &printable(comment));
    }
    if m.trackers.is_empty() {
        line("trackers", &"none");
    } else {
        line("trackers", &"");
        for (i, tier) in m.trackers.iter().enumerate() {
            for url in tier {
                let _ = writeln!(out, "  tier {:<3} {}", i + 1, printable(url));
            }
        }
    }
    for seed in &m.web_seeds {
        let _ = writeln!(out, "{:<12} {}", "web seed:", printable(seed));
    }
    // The index in brackets is the one `get --files` and a magnet's `so=` (BEP 53) take:
    // every entry of the torrent's file list in order, counted from 0, BEP 47 padding
    // files included, as libtorrent counts them, so a magnet link made with libtorrent's
    // indices names the same files here. Padding files are never downloaded, whatever
    // the selection says.
    let files = layout.files();
    let _ = writeln!(
        out,
        "{:<12} {} (by the index get --files takes)",
        "files:",
        files.len()
    );
    let width = files.len().saturating_sub(1).to_string().len();
    for (i, f) in files.iter().enumerate() {
        let pad = if f.padding { "  (padding)" } else { "" };
        let _ = writeln!(
            out,
            "  [{i:>width$}] {:>11}  {}{pad}",
            HumanBytes(f.length).to_string(),
            printable(&f.path.display())
        );
    }
    out
}
