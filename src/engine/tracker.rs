//! Placeholder until the Tracker actor lands: announces nothing, so only peers given by
//! hand are dialed. Replaced by the real actor on merge.

use std::time::Duration;

use actix::prelude::*;
use slog::Logger;

use super::messages::{
    GetAnnounceStats, PeersFound, TrackerCompleted, TrackerReport, TrackerStart, TrackerStop,
};
use crate::{InfoHash, PeerId};

/// Announce settings.
pub struct TrackerConfig {
    /// Shortest re-announce interval accepted.
    pub min_interval: Duration,
}

impl TrackerConfig {
    /// Settings for one tracker.
    pub fn new(
        _url: url::Url,
        _info_hash: InfoHash,
        _peer_id: PeerId,
        _port: u16,
        _key: u32,
    ) -> Self {
        Self {
            min_interval: Duration::from_secs(30),
        }
    }
}

/// Where the tracker reports.
pub struct TrackerLinks {
    /// Peers.
    pub peers: Recipient<PeersFound>,
    /// Stats.
    pub stats: Recipient<GetAnnounceStats>,
    /// Reports.
    pub report: Recipient<TrackerReport>,
}

/// The placeholder actor.
pub struct Tracker;

impl Tracker {
    /// A tracker actor.
    pub fn new(_config: TrackerConfig, _links: TrackerLinks, _log: Logger) -> Self {
        Tracker
    }
}

impl Actor for Tracker {
    type Context = Context<Self>;
}

impl Handler<TrackerStart> for Tracker {
    type Result = ();
    fn handle(&mut self, _: TrackerStart, _: &mut Context<Self>) {}
}

impl Handler<TrackerCompleted> for Tracker {
    type Result = ();
    fn handle(&mut self, _: TrackerCompleted, _: &mut Context<Self>) {}
}

impl Handler<TrackerStop> for Tracker {
    type Result = ();
    fn handle(&mut self, _: TrackerStop, _: &mut Context<Self>) {}
}

/// Tier selection.
pub struct Tiers(Vec<Vec<String>>);

impl Tiers {
    /// From the metainfo's tiers.
    pub fn new(tiers: Vec<Vec<String>>) -> Self {
        Tiers(tiers)
    }
    /// First URL of each tier.
    pub fn initial(&self) -> Vec<String> {
        self.0.iter().filter_map(|t| t.first().cloned()).collect()
    }
    /// Next URL to try.
    pub fn on_result(&mut self, _url: &str, _ok: bool) -> Option<String> {
        None
    }
}
