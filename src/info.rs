//! `torrent-actors info`: what a user wants to know about a `.torrent`, or what a magnet
//! link says, on stdout; as aligned text for people or, with `--json`, as one JSON
//! object for scripts.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use indicatif::HumanBytes;
use serde_json::{json, Value};
use torrent_actors::magnet::Magnet;
use torrent_actors::metainfo::v2::{V2Error, V2Info};
use torrent_actors::metainfo::Metainfo;
// Every text from the torrent goes through the shared rule, so a hostile name or comment
// cannot send escape sequences to the user's terminal.
use torrent_actors::terminal::{is_unsafe, printable};

use crate::{exit, Failure};

pub fn run(arg: &Path, as_json: bool) -> Result<(), Failure> {
    if let Some(link) = crate::get::magnet_text(arg) {
        let magnet = Magnet::parse(link).map_err(|e| Failure {
            code: exit::INVALID_TORRENT,
            error: anyhow::anyhow!("invalid magnet link: {e}"),
        })?;
        if as_json {
            outln!("{}", terminal_safe_json(&magnet_json(&magnet)));
        } else {
            out!("{}", describe_magnet(&magnet));
        }
        return Ok(());
    }
    let bytes = crate::read_torrent_file(arg)?;
    let metainfo = Metainfo::from_bytes(&bytes).map_err(|e| Failure {
        code: exit::INVALID_TORRENT,
        error: anyhow::anyhow!("invalid torrent {}: {e}", arg.display()),
    })?;
    // The v2 part was checked whole by `Metainfo::from_bytes` (a hybrid's against its v1
    // part too); read again here for its files. A hybrid may come without piece layers
    // (a magnet's metadata saved as a .torrent): then its tree alone is shown.
    let v2 = (metainfo.info.v2_only || metainfo.info.hybrid).then(|| {
        V2Info::from_torrent(&bytes).or_else(|e| {
            if metainfo.info.hybrid {
                V2Info::from_info_bytes(&metainfo.info_bytes)
            } else {
                Err(e)
            }
        })
    });
    if as_json {
        let mut value = torrent_json(&metainfo);
        value["v2"] = v2_json(v2.as_ref());
        outln!("{}", terminal_safe_json(&value));
    } else {
        out!("{}", describe(&metainfo, &describe_v2(v2.as_ref())));
    }
    Ok(())
}

/// A hybrid's v2 part as JSON: null for a v1 torrent, `{"error": ...}` if it is broken,
/// else the v2 info-hash, and each file's path, length and pieces root in file-tree order.
fn v2_json(v2: Option<&Result<V2Info, V2Error>>) -> Value {
    match v2 {
        None => Value::Null,
        Some(Err(e)) => json!({ "error": e.to_string() }),
        Some(Ok(v2)) => json!({
            "info_hash": hex(&v2.info_hash),
            "files": v2.files.iter().map(|f| json!({
                "path": f.path.display(),
                "length": f.length,
                "pieces_root": f.pieces_root.map(|r| hex(&r)),
                "piece_layer": f.piece_layer.len(),
            })).collect::<Vec<_>>(),
        }),
    }
}

/// The v2 lines of the text report: the v2 info-hash and how many files carry a checked
/// piece layer, or why the v2 part is broken.
fn describe_v2(v2: Option<&Result<V2Info, V2Error>>) -> String {
    let mut out = String::new();
    match v2 {
        None => {}
        Some(Err(e)) => line(
            &mut out,
            "v2 part",
            &format!("broken, ignored: {}", printable(&e.to_string())),
        ),
        Some(Ok(v2)) => {
            line(&mut out, "v2 hash", &hex(&v2.info_hash));
            let layered = v2
                .files
                .iter()
                .filter(|f| !f.piece_layer.is_empty())
                .count();
            line(
                &mut out,
                "v2 files",
                &format!(
                    "{} in the file tree, {layered} with a piece layer checked against its root",
                    v2.files.len()
                ),
            );
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `value` as pretty JSON in which every character the terminal rule calls unsafe is
/// written as a `\uXXXX` escape. serde_json already escapes C0 controls; the C1 controls,
/// DEL and the bidirectional marks would otherwise go out raw, and a script's output is
/// often read on a terminal too. The escapes decode to the same strings, so a script
/// reads exactly what the torrent says.
fn terminal_safe_json(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Outside strings JSON has only ASCII punctuation, digits, letters and the
        // whitespace serde writes between tokens, which must stay as it is.
        if is_unsafe(c) && !matches!(c, '\n' | ' ') {
            // Every unsafe character is in the Basic Multilingual Plane, so one escape.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// The facts of `describe`, as JSON. Sizes are in bytes, the creation date in seconds
/// since the Unix epoch and as RFC 3339, trackers as tiers, files by the index
/// `get --files` takes.
fn torrent_json(m: &Metainfo) -> Value {
    let layout = &m.info.layout;
    let files: Vec<Value> = layout
        .files()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "index": i,
                "path": f.path.display(),
                "length": f.length,
                "padding": f.padding,
            })
        })
        .collect();
    json!({
        "kind": "torrent",
        "name": m.info.name,
        "info_hash": m.info_hash.to_hex(),
        "total_size": layout.total_length(),
        "piece_length": layout.piece_length(),
        "pieces": layout.num_pieces(),
        "private": m.info.private,
        "hybrid": m.info.hybrid,
        "info_hash_v2": m.info_hash_v2.map(|h| hex(&h)),
        "v2_swarm": m.v2_swarm().map(|h| h.to_hex()),
        "creation_date": m.creation_date,
        "created": m.creation_date.and_then(rfc3339),
        "created_by": m.created_by,
        "comment": m.comment,
        "trackers": m.trackers,
        "web_seeds": m.web_seeds,
        "files": files,
    })
}

/// What a magnet link says, as JSON: each tracker in a tier of its own, as the download
/// will use them; `select_only` is the `so=` list of file indices, or null for every
/// file.
fn magnet_json(m: &Magnet) -> Value {
    let trackers: Vec<Vec<&String>> = m.trackers.iter().map(|t| vec![t]).collect();
    json!({
        "kind": "magnet",
        "name": m.display_name,
        "info_hash": m.info_hash.to_hex(),
        "info_hash_v2": m.v2_info_hash.map(|h| hex(&h)),
        "trackers": trackers,
        "peers": peer_list(m),
        "select_only": m.select_only.as_ref().map(ToString::to_string),
    })
}

/// A magnet's `x.pe` peers: addresses, then host names with their ports.
fn peer_list(m: &Magnet) -> Vec<String> {
    m.peers
        .iter()
        .map(ToString::to_string)
        .chain(
            m.peer_hosts
                .iter()
                .map(|(host, port)| format!("{host}:{port}")),
        )
        .collect()
}

/// A creation date as RFC 3339, if it is one a clock can show.
fn rfc3339(date: i64) -> Option<String> {
    u64::try_from(date)
        .ok()
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

/// One `label: value` line, the value aligned after the label.
fn line(out: &mut String, label: &str, value: &dyn std::fmt::Display) {
    let shown = format!("{:<12} {value}", format!("{label}:"));
    let _ = writeln!(out, "{}", shown.trim_end());
}

/// Trackers by tier, numbered from 1 as people count.
fn tracker_lines(out: &mut String, tiers: &[Vec<String>]) {
    if tiers.is_empty() {
        line(out, "trackers", &"none");
        return;
    }
    line(out, "trackers", &"");
    for (i, tier) in tiers.iter().enumerate() {
        for url in tier {
            let _ = writeln!(out, "  tier {:<3} {}", i + 1, printable(url));
        }
    }
}

/// What a magnet link says, in the layout of [`describe`]; sizes and files come with
/// the metadata, which only peers have.
fn describe_magnet(m: &Magnet) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "a magnet link: sizes and files come from peers once `get` fetches the metadata"
    );
    match &m.display_name {
        Some(name) => line(&mut out, "name", &printable(name)),
        None => line(&mut out, "name", &"(none given)"),
    }
    line(&mut out, "info-hash", &m.info_hash);
    if let Some(v2) = &m.v2_info_hash {
        line(&mut out, "v2 hash", &hex(v2));
    }
    let tiers: Vec<Vec<String>> = m.trackers.iter().map(|t| vec![t.clone()]).collect();
    tracker_lines(&mut out, &tiers);
    let peers = peer_list(m);
    if peers.is_empty() {
        line(&mut out, "peers", &"none");
    } else {
        line(&mut out, "peers", &"");
        for peer in peers {
            let _ = writeln!(out, "  {}", printable(&peer));
        }
    }
    if let Some(selection) = &m.select_only {
        line(
            &mut out,
            "files",
            &format!("only {selection} (by the index get --files takes)"),
        );
    }
    out
}

/// The report, one `label: value` per line, files and trackers indented below;
/// `v2_lines` (a hybrid's v2 part, from [`describe_v2`]) follow its format line.
fn describe(m: &Metainfo, v2_lines: &str) -> String {
    let layout = &m.info.layout;
    let mut out = String::new();
    line(&mut out, "name", &printable(&m.info.name));
    line(&mut out, "info-hash", &m.info_hash);
    line(
        &mut out,
        "total size",
        &format!(
            "{} ({} bytes)",
            HumanBytes(layout.total_length()),
            layout.total_length()
        ),
    );
    line(
        &mut out,
        "pieces",
        &format!(
            "{} of {} ({} bytes)",
            layout.num_pieces(),
            HumanBytes(u64::from(layout.piece_length())),
            layout.piece_length()
        ),
    );
    line(
        &mut out,
        "private",
        &if m.info.private { "yes" } else { "no" },
    );
    if m.info.hybrid {
        line(
            &mut out,
            "format",
            &"hybrid v1+v2 (joins both swarms; pieces checked by SHA-1)",
        );
        if let Some(v2) = m.v2_swarm() {
            line(&mut out, "v2 swarm", &v2);
        }
        out.push_str(v2_lines);
    } else if m.info.v2_only {
        line(
            &mut out,
            "format",
            &"v2 only (info-hash is the v2 hash's first 20 bytes)",
        );
        out.push_str(v2_lines);
    }
    origin_lines(&mut out, m);
    tracker_lines(&mut out, &m.trackers);
    web_seed_lines(&mut out, m);
    file_lines(&mut out, layout);
    out
}

/// When, by what and with what comment the torrent was made, if it says.
fn origin_lines(out: &mut String, m: &Metainfo) {
    if let Some(date) = m.creation_date {
        let shown = rfc3339(date).unwrap_or_else(|| date.to_string());
        line(out, "created", &shown);
    }
    if let Some(by) = &m.created_by {
        line(out, "created by", &printable(by));
    }
    if let Some(comment) = &m.comment {
        line(out, "comment", &printable(comment));
    }
}

/// The web seeds, used or ignored with the reason.
fn web_seed_lines(out: &mut String, m: &Metainfo) {
    for seed in &m.web_seeds {
        let _ = writeln!(out, "{:<12} {}", "web seed:", printable(seed));
    }
    for refused in &m.web_seeds_refused {
        let _ = writeln!(
            out,
            "{:<12} {} (ignored: {})",
            "web seed:",
            printable(&refused.entry),
            printable(&refused.reason.to_string())
        );
    }
}

/// The file list with each file's index.
fn file_lines(out: &mut String, layout: &torrent_actors::layout::Layout) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_what_a_terminal_would_act_on_and_still_decodes_to_the_same_text() {
        let name = "evil\u{1b}[2J\u{9b}31m\u{202E}gpj.exe\u{7f}\u{2028}naïve";
        let text = terminal_safe_json(&json!({ "name": name, "n": [1, 2] }));
        assert!(!text.chars().any(|c| is_unsafe(c) && c != '\n'), "{text:?}");
        let back: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back["name"], name);
        assert_eq!(back["n"], json!([1, 2]));
    }
}
