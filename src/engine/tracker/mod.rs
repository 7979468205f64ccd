//! The Tracker actor: one per tracker URL of a torrent, plus BEP 12 tier bookkeeping.
//!
//! A Tracker owns the announce cycle of its URL: the `started`, periodic, `completed`
//! and `stopped` announces, the re-announce timer, the retry back-off, the tracker id an
//! HTTP tracker asked us to echo, and the network client of its transport (HTTP in
//! [`http_client`], UDP in [`udp_client`]). It asks the Coordinator for the transfer
//! totals before each announce, and tells it when an announce begins, every peer list
//! and every outcome (with when the next announce comes), from which the Coordinator
//! keeps the tracker's status for the user ([`TrackerBoard`]).
//!
//! What it must not do: parse or encode tracker messages (`crate::tracker` does), decide
//! which URL of a tier to use (the Coordinator does, with [`Tiers`]), connect to peers,
//! or run more than one announce at a time.
//!
//! Choices worth knowing:
//! - The next periodic announce waits for the tracker's `interval`, or its `min
//!   interval` if that is longer, and never less than [`TrackerConfig::interval_floor`].
//! - A failed announce is retried after [`TrackerConfig::retry_base`], doubling at every
//!   further failure up to [`TrackerConfig::retry_cap`]; the event it carried (`started`
//!   or `completed`) is carried again, since the tracker never saw it.
//! - `stopped` is only sent to a tracker that may know us: one that accepted `started`,
//!   or that was sent `started` and had not answered yet when the stop came.
//! - Peers in the reply to `stopped` are not forwarded: we are leaving the swarm.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, info, o, warn, Logger};
use url::Url;

use super::messages::{
    AnnounceStats, AnnounceSummary, GetAnnounceStats, PeerSource, PeersFound, TrackerAnnouncing,
    TrackerCompleted, TrackerReport, TrackerStart, TrackerStop,
};
use super::metrics::{ActorKind, ActorMetrics, OwnMetrics};
use crate::tracker::http::{HttpError, RedirectError};
use crate::tracker::udp::UdpError;
use crate::tracker::{AnnounceRequest, AnnounceResponse, Event};
use crate::{InfoHash, PeerId};

mod http_client;
pub mod status;
mod tiers;
mod udp_client;

pub use status::{TrackerBoard, TrackerState, TrackerStatus};
pub use tiers::{Tiers, MAX_TRACKERS};

use http_client::HttpTransport;
use udp_client::UdpTransport;

/// Everything one Tracker actor needs to know, with the timing knobs tests shrink.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// The announce URL: `http`, `https` or `udp`.
    pub url: Url,
    /// Where the Tracker counts its messages (the engine's metrics; detached by default).
    pub metrics: Arc<ActorMetrics>,
    /// The torrent we announce.
    pub info_hash: InfoHash,
    /// A hybrid's second swarm (its truncated v2 info-hash), announced right after
    /// `info_hash` with the same event and totals; its peers join the same torrent.
    pub second_swarm: Option<InfoHash>,
    /// Our peer id, the same for every tracker and peer of this session.
    pub peer_id: PeerId,
    /// The port we accept peer connections on, so the tracker can hand it out.
    pub port: u16,
    /// The random key of this session, so trackers recognise us across address changes.
    pub key: u32,
    /// How many peers to ask for per announce.
    pub numwant: u32,
    /// The most an HTTP announce may take, connecting and reading the body included.
    pub request_timeout: Duration,
    /// The most the `stopped` announce may take, so shutting down never hangs on a dead
    /// tracker.
    pub stop_timeout: Duration,
    /// The most we wait for the Coordinator's transfer totals before announcing with
    /// the last ones we had, so a busy Coordinator delays an announce only this long.
    pub stats_timeout: Duration,
    /// The shortest re-announce interval we accept, whatever the tracker says: a tracker
    /// asking for announces every second would otherwise get them.
    pub interval_floor: Duration,
    /// The wait after the first failed announce.
    pub retry_base: Duration,
    /// The longest wait between retries, however many announces failed.
    pub retry_cap: Duration,
    /// The wait before the first UDP retransmit (BEP 15 says 15 s); later waits double.
    pub udp_timeout_base: Duration,
    /// How many times a UDP request is sent before the announce fails.
    pub udp_max_attempts: u32,
    /// The largest HTTP reply body we read; longer replies fail the announce.
    pub max_body: usize,
    /// How many HTTP redirects one announce may follow.
    pub max_redirects: usize,
}

impl TrackerConfig {
    /// A configuration with the defaults meant for real trackers.
    pub fn new(url: Url, info_hash: InfoHash, peer_id: PeerId, port: u16, key: u32) -> Self {
        let limits = TrackerTimeouts::default();
        TrackerConfig {
            url,
            info_hash,
            second_swarm: None,
            peer_id,
            port,
            key,
            numwant: 200,
            request_timeout: limits.request,
            stop_timeout: Duration::from_secs(5),
            stats_timeout: Duration::from_secs(2),
            interval_floor: Duration::from_secs(30),
            retry_base: limits.retry_base,
            retry_cap: limits.retry_cap,
            udp_timeout_base: limits.udp_first_wait,
            udp_max_attempts: limits.udp_attempts,
            max_body: 2 * 1024 * 1024,
            max_redirects: 3,
            metrics: Arc::new(ActorMetrics::detached(ActorKind::Tracker)),
        }
    }

    /// This configuration with the time limits of `limits`.
    pub fn with_timeouts(mut self, limits: &TrackerTimeouts) -> Self {
        self.request_timeout = limits.request;
        self.udp_timeout_base = limits.udp_first_wait;
        self.udp_max_attempts = limits.udp_attempts;
        self.retry_base = limits.retry_base;
        self.retry_cap = limits.retry_cap;
        self
    }
}

/// How long a torrent's trackers are given, the same for all of them: the part of
/// [`TrackerConfig`] a torrent chooses (the engine's `EngineConfig::tracker`), rather
/// than the part each URL brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerTimeouts {
    /// The most one HTTP announce may take ([`TrackerConfig::request_timeout`]).
    pub request: Duration,
    /// The wait before the first UDP retransmit; later waits double (BEP 15).
    pub udp_first_wait: Duration,
    /// How many times a UDP request is sent before the announce fails.
    pub udp_attempts: u32,
    /// The wait after the first failed announce; it doubles per further failure...
    pub retry_base: Duration,
    /// ...up to this.
    pub retry_cap: Duration,
}

impl Default for TrackerTimeouts {
    /// BEP 15's schedule (15 s, doubling, eight sends: a dead UDP tracker is given
    /// about an hour), 30 s per HTTP announce, and retries from 15 s up to 30 minutes.
    fn default() -> Self {
        TrackerTimeouts {
            request: Duration::from_secs(30),
            udp_first_wait: Duration::from_secs(15),
            udp_attempts: 8,
            retry_base: Duration::from_secs(15),
            retry_cap: Duration::from_secs(30 * 60),
        }
    }
}

/// Where a Tracker sends what it learns, and whom it asks for the transfer totals:
/// recipients rather than the Coordinator's address, so tests can stand in for it.
#[derive(Clone)]
pub struct TrackerLinks {
    /// Receives every non-empty peer list.
    pub peers: Recipient<PeersFound>,
    /// Answers the uploaded, downloaded and left totals before each announce.
    pub stats: Recipient<GetAnnounceStats>,
    /// Hears that an announce began, so the tracker's status can say "updating".
    pub announcing: Recipient<TrackerAnnouncing>,
    /// Receives the outcome of every announce.
    pub report: Recipient<TrackerReport>,
}

/// Why a Tracker could not be built for a URL. Such a URL will never work, so it is
/// refused up front rather than failing every announce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The scheme is not one we speak.
    #[error("unsupported tracker url scheme {0:?}: expected http, https or udp")]
    UnsupportedScheme(String),
    /// A `udp://` URL without a host or a port.
    #[error("udp tracker url {0} lacks a host or a port")]
    IncompleteUdpUrl(String),
    /// The HTTP client could not be set up (its TLS backend, typically).
    #[error("cannot set up the http client: {0}")]
    HttpClient(String),
}

/// Why one announce failed; its text is what `TrackerReport` carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AnnounceError {
    /// The tracker refused and said why (HTTP `failure reason`, UDP error action); the
    /// text is the tracker's own.
    #[error("{0}")]
    Refused(String),
    /// The HTTP request failed before a reply: connection refused, TLS.
    #[error("http request failed: {0}")]
    Request(String),
    /// The HTTP tracker redirected somewhere it may not (`tracker::http::check_redirect`).
    #[error("http redirect not followed: {0}")]
    Redirect(RedirectError),
    /// The HTTP request took longer than the configured timeout.
    #[error("http request timed out after {0:?}")]
    TimedOut(Duration),
    /// The HTTP tracker answered with an error status and no `failure reason`.
    #[error("http status {0}")]
    Status(u16),
    /// The HTTP body was longer than we accept.
    #[error("reply body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The HTTP body was not a valid announce reply.
    #[error("bad http reply: {0}")]
    HttpReply(HttpError),
    /// The UDP reply was not a valid announce reply.
    #[error("bad udp reply: {0}")]
    UdpReply(UdpError),
    /// The UDP tracker answered a request with a reply meant for another kind.
    #[error("udp reply of the wrong kind")]
    WrongReplyKind,
    /// The tracker's host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The name from the URL.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// The UDP socket could not be opened or used.
    #[error("udp socket error: {0}")]
    Socket(String),
    /// The UDP tracker never answered.
    #[error("no reply from udp tracker after {attempts} attempts")]
    NoReply {
        /// How many times the request was sent.
        attempts: u32,
    },
    /// The `stopped` announce did not finish within the stop timeout.
    #[error("stopped announce gave no answer within {0:?}")]
    StopTimedOut(Duration),
}

/// An error and its sources as one line, since many library errors keep the useful
/// part (connection refused, timed out) in their source.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The network side of one tracker URL.
#[derive(Clone)]
enum Transport {
    /// An `http://` or `https://` tracker.
    Http(HttpTransport),
    /// A `udp://` tracker.
    Udp(UdpTransport),
}

impl Transport {
    /// Sends one announce over whichever protocol the URL names.
    async fn announce(&self, request: &AnnounceRequest) -> Result<AnnounceResponse, AnnounceError> {
        match self {
            Transport::Http(http) => http.announce(request).await,
            Transport::Udp(udp) => udp.announce(request).await,
        }
    }
}

/// A tracker as the actor graph names it: its scheme, host and port, never its path (a
/// private tracker's passkey).
fn tracker_host(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The client for the protocol `config.url` names.
fn transport_for(config: &TrackerConfig) -> Result<Transport, TrackerError> {
    match config.url.scheme() {
        "http" | "https" => Ok(Transport::Http(HttpTransport::new(config)?)),
        "udp" => Ok(Transport::Udp(UdpTransport::new(config)?)),
        other => Err(TrackerError::UnsupportedScheme(other.to_owned())),
    }
}

/// Where the actor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnnouncePhase {
    /// Built, waiting for `TrackerStart`.
    Dormant,
    /// Announcing.
    Running,
    /// `TrackerStop` arrived; only the `stopped` announce may still run.
    Stopping,
}

/// The announce under way.
struct InFlight {
    /// Cancels it when the actor stops.
    handle: SpawnHandle,
    /// The event it carries, to know whether the tracker may have heard `started`.
    event: Option<Event>,
}

/// What an announce future hands back to the actor.
struct Attempt {
    /// The totals it announced, remembered for when the Coordinator cannot answer.
    stats: AnnounceStats,
    /// The tracker's reply or why there was none.
    result: Result<AnnounceResponse, AnnounceError>,
    /// A hybrid's peers listed under its v2 swarm alone (not in `result`'s peers).
    v2_only: Vec<SocketAddr>,
}

/// See the module documentation.
pub struct Tracker {
    /// URL, identity and timing knobs.
    config: TrackerConfig,
    /// The Coordinator's side.
    links: TrackerLinks,
    /// Tagged with the URL.
    log: Logger,
    /// The URL as the Coordinator knows it, for reports and peer sources.
    url_text: String,
    /// The client for this URL.
    transport: Transport,
    /// Dormant, running or stopping.
    phase: AnnouncePhase,
    /// The event the next announce must carry: `started` until the tracker accepted it,
    /// `completed` once the download finished and until the tracker accepted that.
    owed_event: Option<Event>,
    /// The tracker accepted our `started`, so it lists us and should hear `stopped`.
    started_accepted: bool,
    /// `TrackerCompleted` arrived; a second one is ignored.
    completed_requested: bool,
    /// The announce under way, at most one.
    in_flight: Option<InFlight>,
    /// The pending re-announce or retry.
    timer: Option<SpawnHandle>,
    /// Failed announces since the last success, for the back-off.
    failures: u32,
    /// The `tracker id` the tracker asked us to send back, if any.
    tracker_id: Option<Vec<u8>>,
    /// The totals of the last announce, used when the Coordinator does not answer.
    last_stats: AnnounceStats,
    /// Its place in the Trackers' counters (`config.metrics`).
    metrics: OwnMetrics,
}

impl Tracker {
    /// A dormant tracker for `config.url`; nothing is sent before `TrackerStart`.
    pub fn new(
        config: TrackerConfig,
        links: TrackerLinks,
        log: Logger,
    ) -> Result<Tracker, TrackerError> {
        let transport = transport_for(&config)?;
        let url_text = config.url.to_string();
        Ok(Tracker {
            metrics: OwnMetrics::started(config.metrics.clone())
                .labelled(&tracker_host(&config.url)),
            log: log.new(o!("tracker" => url_text.clone())),
            url_text,
            transport,
            config,
            links,
            phase: AnnouncePhase::Dormant,
            owed_event: None,
            started_accepted: false,
            completed_requested: false,
            in_flight: None,
            timer: None,
            failures: 0,
            tracker_id: None,
            last_stats: AnnounceStats::default(),
        })
    }

    /// A future that asks the Coordinator for the totals and sends one announce with
    /// `event`. It owns everything it needs, so the actor stays free meanwhile.
    fn announce_future(&self, event: Option<Event>) -> impl Future<Output = Attempt> + 'static {
        let mut request = AnnounceRequest::new(
            self.config.info_hash,
            self.config.peer_id,
            self.config.port,
            self.config.key,
        );
        request.event = event;
        request.numwant = Some(self.config.numwant);
        request.tracker_id = self.tracker_id.clone();
        let second_swarm = self.config.second_swarm;
        let stats_link = self.links.stats.clone();
        let stats_timeout = self.config.stats_timeout;
        let fallback = self.last_stats;
        let transport = self.transport.clone();
        let log = self.log.clone();
        async move {
            let stats = match tokio::time::timeout(stats_timeout, stats_link.send(GetAnnounceStats))
                .await
            {
                Ok(Ok(stats)) => stats,
                Ok(Err(e)) => {
                    debug!(log, "no announce totals, reusing the last ones"; "why" => %e);
                    fallback
                }
                Err(_) => {
                    debug!(log, "announce totals late, reusing the last ones");
                    fallback
                }
            };
            request.uploaded = stats.uploaded;
            request.downloaded = stats.downloaded;
            request.left = stats.left;
            let mut result = transport.announce(&request).await;
            let mut v2_only = Vec::new();
            if let Some(second) = second_swarm {
                request.info_hash = second;
                let other = transport.announce(&request).await;
                (result, v2_only) = merge_swarms(result, other, &log);
            }
            Attempt {
                stats,
                result,
                v2_only,
            }
        }
    }

    /// Announces now, unless an announce is already under way: that one's completion
    /// looks at `owed_event` and announces again at once if an event is still owed.
    fn announce_now(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if self.in_flight.is_some() {
            return;
        }
        let event = self.owed_event;
        debug!(self.log, "announcing"; "event" => event.map_or("none", Event::as_str));
        let handle = ctx.spawn(
            self.metrics.id().on(self
                .announce_future(event)
                .into_actor(self)
                .map(move |attempt, act, ctx| act.announce_finished(event, attempt, ctx))),
        );
        self.in_flight = Some(InFlight { handle, event });
        self.links.announcing.do_send(TrackerAnnouncing {
            url: self.url_text.clone(),
        });
    }

    /// Handles the outcome of a `started`, periodic or `completed` announce: forwards
    /// peers, reports, and sets the timer for the next one.
    fn announce_finished(
        &mut self,
        event: Option<Event>,
        attempt: Attempt,
        ctx: &mut Context<Self>,
    ) {
        self.in_flight = None;
        self.last_stats = attempt.stats;
        if !attempt.v2_only.is_empty() {
            self.links.peers.do_send(PeersFound {
                peers: attempt.v2_only,
                source: PeerSource::TrackerV2Swarm(self.url_text.clone()),
            });
        }
        match attempt.result {
            Ok(response) => {
                self.failures = 0;
                if response.tracker_id.is_some() {
                    self.tracker_id = response.tracker_id.clone();
                }
                if self.owed_event == event {
                    self.owed_event = None;
                }
                if event == Some(Event::Started) {
                    self.started_accepted = true;
                    // A download that finished while `started` was still unanswered owes
                    // the tracker its `completed` now.
                    if self.completed_requested {
                        self.owed_event = Some(Event::Completed);
                    }
                }
                let delay = next_announce_delay(&response, self.config.interval_floor);
                if self.owed_event.is_some() {
                    self.forward(response, delay, Some(Duration::ZERO), true);
                    self.announce_now(ctx);
                } else {
                    self.forward(response, delay, Some(delay), true);
                    self.schedule(delay, ctx);
                }
            }
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                let delay =
                    retry_delay(self.failures, self.config.retry_base, self.config.retry_cap);
                info!(self.log, "announce failed";
                      "error" => %error, "failures" => self.failures, "retry_in" => ?delay);
                self.report(Err(error.to_string()), Some(delay));
                self.schedule(delay, ctx);
            }
        }
    }

    /// Sends a successful reply's peers (when `with_peers` and there are any) and its
    /// summary to the Coordinator. `interval` is the tracker's wish, raised to our floor;
    /// `next_announce` is when we will actually announce again, if we will.
    fn forward(
        &self,
        response: AnnounceResponse,
        interval: Duration,
        next_announce: Option<Duration>,
        with_peers: bool,
    ) {
        if let Some(warning) = &response.warning {
            warn!(self.log, "tracker warning"; "message" => warning);
        }
        debug!(self.log, "announce answered";
               "peers" => response.peers.len(), "next_in" => ?next_announce);
        let summary = AnnounceSummary {
            peers: response.peers.len(),
            seeders: response.complete,
            leechers: response.incomplete,
            interval,
            warning: response.warning,
        };
        if with_peers && !response.peers.is_empty() {
            self.links.peers.do_send(PeersFound {
                peers: response.peers,
                source: PeerSource::Tracker(self.url_text.clone()),
            });
        }
        self.report(Ok(summary), next_announce);
    }

    /// Tells the Coordinator how an announce went and when the next one comes.
    fn report(&self, outcome: Result<AnnounceSummary, String>, next_announce: Option<Duration>) {
        self.links.report.do_send(TrackerReport {
            url: self.url_text.clone(),
            outcome,
            next_announce,
        });
    }

    /// Announces again after `delay`.
    fn schedule(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.timer = Some(ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.announce_now(ctx);
        }));
    }
}

/// One reply from a hybrid's two announces (v1 swarm first): either one answered is a
/// success, its counts and timing the first's when both did. The peers listed under the
/// v2 swarm alone come apart, each once, to be greeted with the v2 hash. Linear in the
/// replies' sizes: a tracker may list hundreds of thousands of peers in each.
fn merge_swarms(
    first: Result<AnnounceResponse, AnnounceError>,
    second: Result<AnnounceResponse, AnnounceError>,
    log: &Logger,
) -> (Result<AnnounceResponse, AnnounceError>, Vec<SocketAddr>) {
    match (first, second) {
        (Ok(first), Ok(second)) => {
            let listed = second.peers.len();
            let mut seen: HashSet<SocketAddr> = first.peers.iter().copied().collect();
            let v2_only: Vec<SocketAddr> = second
                .peers
                .into_iter()
                .filter(|p| seen.insert(*p))
                .collect();
            debug!(log, "v2 swarm answered"; "peers" => listed, "only there" => v2_only.len());
            (Ok(first), v2_only)
        }
        (Ok(first), Err(e)) => {
            info!(log, "announce of the v2 swarm failed"; "error" => %e);
            (Ok(first), Vec::new())
        }
        (Err(e), Ok(mut second)) => {
            info!(log, "announce of the v1 swarm failed"; "error" => %e);
            let mut seen = HashSet::new();
            let v2_only: Vec<SocketAddr> = std::mem::take(&mut second.peers)
                .into_iter()
                .filter(|p| seen.insert(*p))
                .collect();
            (Ok(second), v2_only)
        }
        (Err(e), Err(_)) => (Err(e), Vec::new()),
    }
}

/// How long to wait before the next periodic announce after a successful one.
fn next_announce_delay(response: &AnnounceResponse, floor: Duration) -> Duration {
    response
        .interval
        .max(response.min_interval.unwrap_or_default())
        .max(floor)
}

/// How long to wait before retrying after `failures` failed announces in a row (at
/// least one): `base`, doubled per further failure, never more than `cap`.
fn retry_delay(failures: u32, base: Duration, cap: Duration) -> Duration {
    // Past 2^20 times the base the cap has long been reached; the bound keeps the shift
    // and the multiplication far from overflow.
    let doublings = failures.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings).min(cap)
}

impl Actor for Tracker {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        debug!(self.log, "tracker actor stopped");
    }
}

impl Handler<TrackerStart> for Tracker {
    type Result = ();

    fn handle(&mut self, _: TrackerStart, ctx: &mut Self::Context) {
        let _timing = self.metrics.handling_of::<TrackerStart>();
        if self.phase != AnnouncePhase::Dormant {
            debug!(self.log, "already started; TrackerStart ignored");
            return;
        }
        self.phase = AnnouncePhase::Running;
        self.owed_event = Some(Event::Started);
        self.announce_now(ctx);
    }
}

impl Handler<TrackerCompleted> for Tracker {
    type Result = ();

    fn handle(&mut self, _: TrackerCompleted, ctx: &mut Self::Context) {
        let _timing = self.metrics.handling_of::<TrackerCompleted>();
        if self.phase != AnnouncePhase::Running || self.completed_requested {
            debug!(self.log, "TrackerCompleted ignored"; "phase" => ?self.phase);
            return;
        }
        self.completed_requested = true;
        // Before the tracker accepted `started` it does not know us; the `completed` is
        // sent right after `started` succeeds instead (see `announce_finished`).
        if self.started_accepted {
            self.owed_event = Some(Event::Completed);
            self.announce_now(ctx);
        }
    }
}

impl Handler<TrackerStop> for Tracker {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: TrackerStop, ctx: &mut Self::Context) -> Self::Result {
        let _timing = self.metrics.handling_of::<TrackerStop>();
        if self.phase == AnnouncePhase::Stopping {
            // The first TrackerStop is already seeing the actor out.
            return Box::pin(fut::ready(()));
        }
        self.phase = AnnouncePhase::Stopping;
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let mut started_unanswered = false;
        if let Some(in_flight) = self.in_flight.take() {
            ctx.cancel_future(in_flight.handle);
            started_unanswered = in_flight.event == Some(Event::Started);
        }
        if !self.started_accepted && !started_unanswered {
            debug!(
                self.log,
                "stopping without a stopped announce: the tracker does not know us"
            );
            // Stopping inside the reply future, not here: a stopping context polls no
            // spawned futures, and the reply is sent by one.
            return Box::pin(fut::ready(()).map(|(), _act, ctx: &mut Context<Self>| ctx.stop()));
        }
        let limit = self.config.stop_timeout;
        let announce = tokio::time::timeout(limit, self.announce_future(Some(Event::Stopped)));
        Box::pin(announce.into_actor(self).map(move |finished, act, ctx| {
            match finished {
                Ok(Attempt {
                    result: Ok(response),
                    ..
                }) => {
                    let delay = next_announce_delay(&response, act.config.interval_floor);
                    act.forward(response, delay, None, false);
                }
                Ok(Attempt {
                    result: Err(error), ..
                }) => {
                    info!(act.log, "stopped announce failed"; "error" => %error);
                    act.report(Err(error.to_string()), None);
                }
                Err(_elapsed) => {
                    let error = AnnounceError::StopTimedOut(limit);
                    info!(act.log, "stopped announce failed"; "error" => %error);
                    act.report(Err(error.to_string()), None);
                }
            }
            ctx.stop();
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrids_two_announces_give_one_reply_and_the_v2_swarms_own_peers_apart() {
        let log = Logger::root(slog::Discard, o!());
        let peer = |n: u16| SocketAddr::from(([127, 0, 0, 1], n));
        let with = |interval: u64, peers: Vec<SocketAddr>| AnnounceResponse {
            peers,
            ..response(interval, None)
        };
        let refused = || AnnounceError::Refused("unregistered torrent".into());
        let (both, v2_only) = merge_swarms(
            Ok(with(60, vec![peer(1), peer(2)])),
            Ok(with(90, vec![peer(2), peer(3), peer(3)])),
            &log,
        );
        let both = both.unwrap();
        assert_eq!(both.peers, [peer(1), peer(2)]);
        assert_eq!(v2_only, [peer(3)]);
        assert_eq!(
            both.interval,
            Duration::from_secs(60),
            "the v1 swarm's timing"
        );
        let (answered, v2_only) = merge_swarms(Err(refused()), Ok(with(90, vec![peer(3)])), &log);
        assert!(answered.unwrap().peers.is_empty());
        assert_eq!(v2_only, [peer(3)]);
        let (answered, v2_only) = merge_swarms(Ok(with(60, vec![peer(1)])), Err(refused()), &log);
        assert_eq!((answered.unwrap().peers, v2_only), (vec![peer(1)], vec![]));
        assert!(merge_swarms(Err(refused()), Err(refused()), &log)
            .0
            .is_err());
    }

    #[test]
    fn merging_two_replies_as_large_as_a_body_may_be_is_linear() {
        // A 2 MiB body holds about 350,000 compact peers; a tracker may send that for
        // both of a hybrid's announces. Compared pairwise that is 10^11 comparisons, on
        // an arbiter thread other actors share.
        let log = Logger::root(slog::Discard, o!());
        let many = |from: u32| -> Vec<SocketAddr> {
            (from..from + 350_000)
                .map(|n| SocketAddr::from((n.to_be_bytes(), 6881)))
                .collect()
        };
        let with = |peers| AnnounceResponse {
            peers,
            ..response(60, None)
        };
        let (first, v2_only) = merge_swarms(Ok(with(many(0))), Ok(with(many(175_000))), &log);
        assert_eq!(first.unwrap().peers.len(), 350_000);
        assert_eq!(v2_only.len(), 175_000);
        assert_eq!(
            v2_only[0],
            SocketAddr::from((350_000u32.to_be_bytes(), 6881))
        );
    }

    fn response(interval: u64, min_interval: Option<u64>) -> AnnounceResponse {
        AnnounceResponse {
            interval: Duration::from_secs(interval),
            min_interval: min_interval.map(Duration::from_secs),
            complete: None,
            incomplete: None,
            tracker_id: None,
            warning: None,
            peers: Vec::new(),
        }
    }

    #[test]
    fn reannounce_waits_for_the_longer_of_interval_and_min_interval() {
        let floor = Duration::from_secs(30);
        assert_eq!(
            next_announce_delay(&response(1800, None), floor),
            Duration::from_secs(1800)
        );
        assert_eq!(
            next_announce_delay(&response(60, Some(900)), floor),
            Duration::from_secs(900)
        );
        assert_eq!(
            next_announce_delay(&response(900, Some(60)), floor),
            Duration::from_secs(900)
        );
    }

    #[test]
    fn reannounce_never_comes_sooner_than_the_floor() {
        let floor = Duration::from_secs(30);
        assert_eq!(next_announce_delay(&response(0, None), floor), floor);
        assert_eq!(next_announce_delay(&response(5, Some(10)), floor), floor);
    }

    #[test]
    fn retry_back_off_doubles_from_the_base_up_to_the_cap() {
        let base = Duration::from_secs(15);
        let cap = Duration::from_secs(30 * 60);
        let delays: Vec<u64> = (1..=9)
            .map(|n| retry_delay(n, base, cap).as_secs())
            .collect();
        assert_eq!(delays, [15, 30, 60, 120, 240, 480, 960, 1800, 1800]);
        assert_eq!(retry_delay(u32::MAX, base, cap), cap);
        assert_eq!(retry_delay(0, base, cap), base);
    }

    #[test]
    fn error_chain_names_every_distinct_cause_once() {
        let inner = std::io::Error::other("connection refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("sending failed")]
        struct Wrapper(#[source] std::io::Error);
        let wrapped = Wrapper(std::io::Error::other("timed out"));
        assert_eq!(error_chain(&wrapped), "sending failed: timed out");
    }

    fn config(url: &str) -> TrackerConfig {
        TrackerConfig::new(
            Url::parse(url).unwrap(),
            InfoHash([1; 20]),
            PeerId([2; 20]),
            6881,
            3,
        )
    }

    #[test]
    fn unusable_urls_are_refused_when_the_actor_is_built() {
        assert!(matches!(
            transport_for(&config("wss://tracker.example/announce")),
            Err(TrackerError::UnsupportedScheme(s)) if s == "wss"
        ));
        assert!(matches!(
            transport_for(&config("udp://tracker.example/announce")),
            Err(TrackerError::IncompleteUdpUrl(_))
        ));
        assert!(transport_for(&config("udp://tracker.example:6969/announce")).is_ok());
        assert!(transport_for(&config("http://tracker.example/announce")).is_ok());
    }
}
