//! `GET /metrics`: the daemon's torrents and their actors in the Prometheus text format
//! (version 0.0.4), for a monitoring system to scrape. Pure: the handler fetches the
//! overview and the metrics from the Session and this module only writes text.
//!
//! Every series is labelled by `torrent` (the info-hash in hex); the torrent's name, a
//! stranger's text, appears once, as a label of `torrent_actors_torrent_info`, escaped as
//! the format requires. Actor series add `actor` (the actor type).

use std::fmt::Write;

use torrent_actors::engine::metrics::{ActorSnapshot, HANDLING_BOUNDS_NS};
use torrent_actors::engine::session::{TorrentMetrics, TorrentSummary};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value as the text format needs it: backslash, double quote and line feed
/// escaped. Nothing else needs escaping; any other character is written as it is.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: its `HELP` and `TYPE` lines, then one sample per item.
fn family<T>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    items: &[T],
    sample: impl Fn(&T) -> (String, f64),
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for item in items {
        let (labels, value) = sample(item);
        let _ = writeln!(out, "{name}{{{labels}}} {}", number(value));
    }
}

/// A sample value: integers without a fraction, others as Rust prints them (never in
/// exponent form), non-finite values as the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The per-torrent families after `torrent_actors_torrent_info` and `_state`: name,
/// type, help and the value.
type TorrentFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TorrentSummary) -> f64,
);

const TORRENT_FAMILIES: &[TorrentFamily] = &[
    (
        "torrent_actors_torrent_total_bytes",
        "gauge",
        "Bytes of the torrent's wanted files.",
        |s| s.total_bytes as f64,
    ),
    (
        "torrent_actors_torrent_verified_bytes",
        "gauge",
        "Wanted bytes verified and on disk.",
        |s| s.verified_bytes as f64,
    ),
    (
        "torrent_actors_torrent_download_rate_bytes",
        "gauge",
        "Download rate, bytes per second.",
        |s| s.download_rate,
    ),
    (
        "torrent_actors_torrent_upload_rate_bytes",
        "gauge",
        "Upload rate, bytes per second.",
        |s| s.upload_rate,
    ),
    (
        "torrent_actors_torrent_downloaded_bytes_total",
        "counter",
        "Payload bytes downloaded.",
        |s| s.downloaded as f64,
    ),
    (
        "torrent_actors_torrent_uploaded_bytes_total",
        "counter",
        "Payload bytes uploaded.",
        |s| s.uploaded as f64,
    ),
    (
        "torrent_actors_torrent_peers",
        "gauge",
        "Peers connected.",
        |s| s.peers as f64,
    ),
    (
        "torrent_actors_torrent_seeds",
        "gauge",
        "Peers connected that have every piece.",
        |s| s.seeds as f64,
    ),
];

/// The per-actor-type families but the histogram: name, type, help and the value.
type ActorFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ActorSnapshot) -> f64,
);

const ACTOR_FAMILIES: &[ActorFamily] = &[
    (
        "torrent_actors_actor_live",
        "gauge",
        "Actors of the type alive now.",
        |a| a.live as f64,
    ),
    (
        "torrent_actors_actor_messages_handled_total",
        "counter",
        "Messages handled by actors of the type.",
        |a| a.handled as f64,
    ),
    (
        "torrent_actors_actor_mailbox",
        "gauge",
        "Messages waiting in the type's mailboxes.",
        |a| a.mailbox as f64,
    ),
    (
        "torrent_actors_actor_mailbox_peak",
        "gauge",
        "The most messages ever waiting in the type's mailboxes.",
        |a| a.mailbox_peak as f64,
    ),
    (
        "torrent_actors_actor_backpressure_total",
        "counter",
        "Times backpressure acted: replies held back, requests refused, connections turned away.",
        |a| a.backpressure as f64,
    ),
    (
        "torrent_actors_actor_undelivered_total",
        "counter",
        "Messages sent to an actor of the type that had stopped.",
        |a| a.undelivered as f64,
    ),
];

/// The whole `/metrics` answer.
pub fn render(torrents: &[TorrentSummary], metrics: &[TorrentMetrics]) -> String {
    let mut out = String::new();
    let t = |s: &TorrentSummary| format!("torrent=\"{}\"", escape(&s.id));
    family(
        &mut out,
        "torrent_actors_torrent_info",
        "gauge",
        "A torrent of the daemon, with its name.",
        torrents,
        |s| (format!("{},name=\"{}\"", t(s), escape(&s.name)), 1.0),
    );
    family(
        &mut out,
        "torrent_actors_torrent_state",
        "gauge",
        "The torrent's state, as a label (1 for its current state).",
        torrents,
        |s| (format!("{},state=\"{}\"", t(s), escape(s.state)), 1.0),
    );
    for (name, kind, help, value) in TORRENT_FAMILIES {
        family(&mut out, name, kind, help, torrents, |s| (t(s), value(s)));
    }
    let actors: Vec<(String, &ActorSnapshot)> = metrics
        .iter()
        .flat_map(|m| {
            m.metrics.actors.iter().map(move |a| {
                let labels = format!(
                    "torrent=\"{}\",actor=\"{}\"",
                    escape(&m.id),
                    escape(a.actor)
                );
                (labels, a)
            })
        })
        .collect();
    for (name, kind, help, value) in ACTOR_FAMILIES {
        family(&mut out, name, kind, help, &actors, |(l, a)| {
            (l.clone(), value(a))
        });
    }
    handling_histogram(&mut out, &actors);
    out
}

/// `torrent_actors_actor_handling_seconds`: time spent handling a message, per actor
/// type, as a histogram over [`HANDLING_BOUNDS_NS`].
fn handling_histogram(out: &mut String, actors: &[(String, &ActorSnapshot)]) {
    let name = "torrent_actors_actor_handling_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time spent handling a message, per actor type."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, a) in actors {
        let mut cumulative = 0u64;
        for (i, bound) in HANDLING_BOUNDS_NS.iter().enumerate() {
            cumulative += a.handling_histogram.get(i).copied().unwrap_or(0);
            let le = *bound as f64 / 1e9;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", a.handled);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", number(a.busy_ms / 1e3));
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", a.handled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_what_the_format_needs() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("line\nbreak"), "line\\nbreak");
        assert_eq!(escape("ünïcode {x}"), "ünïcode {x}");
    }

    #[test]
    fn numbers_are_plain() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(1e-6), "0.000001");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
