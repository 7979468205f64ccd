//! One record of `get --stats-file`, a JSON object per line: `get` writes it and `swarm`'s
//! report reads it back. One type for both sides, read strictly: a field renamed or
//! dropped on one side makes the line unreadable (and counted as such), where a reader
//! of its own with defaults read it as zeros.

use serde::{Deserialize, Serialize};

use crate::engine::messages::Phase;
use crate::procstats::ProcStats;

/// One stats record. `A` is the actors' metrics: `get` writes a borrowed snapshot, and a
/// reader takes them as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRecord<A = serde_json::Value> {
    /// Seconds since the start.
    pub t: f64,
    pub phase: RecordPhase,
    /// The wanted bytes, and how many of them are verified (before this run too).
    pub total_bytes: u64,
    pub verified_bytes: u64,
    /// Bytes verified by this run.
    pub downloaded_this_run: u64,
    /// Block bytes received this run, wasted ones included; never less than
    /// `downloaded_this_run`.
    pub received: u64,
    pub uploaded: u64,
    pub peers: u64,
    pub hash_failures: u64,
    pub banned: u64,
    /// The download rate, bytes per second.
    pub rate: f64,
    /// The process's memory and files, where `/proc` can be read.
    pub process: Option<ProcStats>,
    pub actors: A,
    /// The last record of the run.
    pub last: bool,
}

/// [`Phase`] as a record spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordPhase {
    Metadata,
    Checking,
    Downloading,
    Complete,
}

impl From<Phase> for RecordPhase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Metadata => RecordPhase::Metadata,
            Phase::Checking => RecordPhase::Checking,
            Phase::Downloading => RecordPhase::Downloading,
            Phase::Complete => RecordPhase::Complete,
        }
    }
}
