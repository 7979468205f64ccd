//! The `WebSeed` actor: one per web seed URL of a torrent (BEP 19), a source that has
//! every piece and speaks HTTP instead of the peer wire.
//!
//! It takes work as a Peer does: it asks the Coordinator with [`PickBlocks`] and gets
//! leases from the `Picker`, which stays the owner of record (a web seed that dies gives
//! every lease back through [`PeerLeft`], whatever it remembered). The Coordinator hands
//! it whole pieces in long contiguous runs (`Picker::pick_run`), so one HTTP range
//! request covers many pieces; a run that crosses files becomes one request per file.
//! The bytes go to the PieceManager as [`StoreBlocks`] of one block each, with the
//! lease's attempt, exactly as a Peer's blocks do, so hashing, smart ban and strikes
//! treat a web seed as a peer.
//!
//! Bounds: at most `max_runs` requests in flight, each at most `run_bytes` (or one
//! piece); a body is read no further than the bytes asked for, and no further than
//! [`STORE_CREDIT`] ahead of the PieceManager (the body is not polled while the credit is
//! spent, so TCP holds the server back); every wait has a time limit. No handler waits on
//! a reply: picks and runs are futures spawned in the actor's context.
//!
//! What a server does wrong decides between retrying and giving up: 404 and 410, a
//! server that ignores `Range` (a 200 with the whole file), a `Content-Range` other than
//! asked, other 4xx and a refused redirect end this web seed, with the reason; 503 and
//! 429 (after `Retry-After`, capped), other 5xx, dropped connections, short bodies and
//! timeouts are retried with a growing back-off, at most `max_failures` times in a row.
//! This module must not parse `url-list` (`metainfo::webseed` does) nor judge data (the
//! PieceManager hashes, the Coordinator strikes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use slog::{debug, info, o, warn, Logger};
use url::Url;

use super::messages::{Lease, PeerLeft, PeerStats, PickBlocks, ReceivedBlock, StoreBlocks};
use super::metrics::{Tracked, TrackedRecipient};
use super::peer::STORE_CREDIT;
use super::piece_manager::PieceManager;
use super::redirect::{pinned_hop, HopError};
use super::tracker::error_chain;
use super::PeerKey;
use crate::layout::{Layout, BLOCK_SIZE};
use crate::metainfo::WebSeedUrl;
use crate::tracker::http::RedirectError;

/// How long a web seed whose pick came up empty waits before asking again, unless woken
/// sooner ([`ToWebSeed::WakeUp`], when a piece is verified or fails): the backstop for
/// work freed otherwise (a peer leaving, a release).
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Tunables of a web seed; the defaults suit a mirror on the Internet.
#[derive(Debug, Clone, Copy)]
pub struct WebSeedConfig {
    /// Requests (runs) in flight at once.
    pub max_runs: usize,
    /// Bytes one run asks for at most (at least one whole piece).
    pub run_bytes: u64,
    /// Failures in a row (retryable ones) before the web seed is given up.
    pub max_failures: u32,
    /// The first back-off after a failure; it doubles with each one in a row.
    pub backoff: Duration,
    /// The longest back-off, and the longest `Retry-After` obeyed (a longer one is cut
    /// to this).
    pub max_backoff: Duration,
    /// How long connecting and each wait for response headers or body bytes may take.
    pub io_timeout: Duration,
    /// Redirects one request may follow.
    pub max_redirects: usize,
}

impl Default for WebSeedConfig {
    fn default() -> Self {
        WebSeedConfig {
            max_runs: 3,
            run_bytes: 2 << 20,
            max_failures: 6,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            io_timeout: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

/// Why a request to a web seed failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebSeedFetchError {
    /// 404 or 410: the server does not have the file.
    #[error("{url}: not found ({status})")]
    NotFound {
        /// The file's URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// A 200 with the whole file to a request for part of it: reading on would mean
    /// taking the whole file for every range.
    #[error("{url}: the server ignores Range requests (200 instead of 206)")]
    IgnoresRange {
        /// The file's URL.
        url: String,
    },
    /// A 206 for another range than the one asked, or without `Content-Range`.
    #[error("{url}: answered range {got:?}, asked {asked}")]
    WrongRange {
        /// The file's URL.
        url: String,
        /// What was asked, as `start-end`.
        asked: String,
        /// What the server said it sent.
        got: Option<String>,
    },
    /// A 4xx other than 404, 410 and 429, or a 3xx that is not a usable redirect.
    #[error("{url}: refused ({status})")]
    Refused {
        /// The file's URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// A redirect that may not be followed (too many, scheme change, inward).
    #[error("redirect refused: {0}")]
    Redirect(#[from] RedirectError),
    /// 503 or 429: busy, try again after the given time (`Retry-After`, capped).
    #[error("busy ({status}), retry after {after:?}")]
    Busy {
        /// The status.
        status: u16,
        /// How long to wait.
        after: Duration,
    },
    /// Another 5xx.
    #[error("server error ({0})")]
    ServerError(u16),
    /// The body ended before the bytes asked for.
    #[error("short body: {got} of {wanted} bytes")]
    ShortRead {
        /// Bytes received.
        got: u64,
        /// Bytes asked for.
        wanted: u64,
    },
    /// Connecting, sending or reading failed (refused, reset, closed).
    #[error("connection failed: {0}")]
    Connection(String),
    /// Nothing came for the time limit.
    #[error("no answer for {0:?}")]
    TimedOut(Duration),
    /// The PieceManager is gone: the torrent is stopping.
    #[error("the torrent is stopping")]
    Stopping,
}

impl WebSeedFetchError {
    /// Whether trying again may help; if not, the web seed is given up.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            WebSeedFetchError::Busy { .. }
                | WebSeedFetchError::ServerError(_)
                | WebSeedFetchError::ShortRead { .. }
                | WebSeedFetchError::Connection(_)
                | WebSeedFetchError::TimedOut(_)
        )
    }
}

/// Coordinator → WebSeed: everything the Coordinator tells a web seed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum ToWebSeed {
    /// Its last pick came up short and a piece was verified or failed since: the budget
    /// or the pieces to fetch may have room now, so ask again (one pending at a time).
    WakeUp,
    /// Stop and give every lease back (the torrent is complete or stopping, or the web
    /// seed sent data that failed its hash), for this reason.
    Stop(String),
}

/// Where a web seed stands, as the Coordinator's source list shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WebSeedStatus {
    /// Its URL, as the torrent gives it.
    pub url: String,
    /// `"active"`, or `"stopped"` once it is given up or done.
    pub state: &'static str,
    /// Why it was given up or stopped; `None` while active.
    pub reason: Option<String>,
    /// Block bytes it delivered this run.
    pub downloaded: u64,
}

/// What a WebSeed is given to start.
pub struct WebSeedParts {
    /// Its key in the Coordinator's tables and in every message about it.
    pub key: PeerKey,
    /// The web seed's URL.
    pub url: WebSeedUrl,
    /// The torrent's pieces and files.
    pub layout: Arc<Layout>,
    /// The torrent has a `files` list (BEP 19 builds file URLs differently then).
    pub multi_file: bool,
    /// Its limits: runs in flight, run size, retries and back-off.
    pub config: WebSeedConfig,
    /// The Coordinator, asked for work.
    pub pick: TrackedRecipient<PickBlocks>,
    /// The Coordinator, told the bytes delivered.
    pub stats: TrackedRecipient<PeerStats>,
    /// The Coordinator, told when it stops (and every lease it still holds).
    pub left: TrackedRecipient<PeerLeft>,
    /// Where blocks go.
    pub piece_manager: Tracked<PieceManager>,
    /// The torrent's logger.
    pub log: Logger,
}

/// See the module documentation.
pub struct WebSeed {
    /// Everything it was started with.
    parts: WebSeedParts,
    /// The HTTP client, its connections kept alive between runs; follows no redirect
    /// by itself (see [`fetch_range`]).
    client: reqwest::Client,
    /// A `PickBlocks` is in flight (one at a time, as for a Peer).
    asking: bool,
    /// Runs in flight, by number, with the leases each holds: given back on stopping.
    runs: HashMap<u64, Vec<Lease>>,
    next_run: u64,
    /// Blocks the PieceManager took, not yet reported to the Coordinator.
    received: Vec<Lease>,
    /// Leases given up (a failed run's rest), not yet reported.
    released: Vec<Lease>,
    /// Block bytes the PieceManager took, counted by the runs as each store is answered:
    /// shared with them, so bytes of a run still in flight when the web seed stops (the
    /// torrent completing, say) are reported too.
    stored_bytes: Arc<AtomicU64>,
    /// The part of `stored_bytes` already sent in a `PeerStats`.
    reported_bytes: u64,
    /// Retryable failures in a row; the runs that fail while a back-off is on count as
    /// one with it, so runs in flight together do not use up the retries at once.
    failures: u32,
    /// No new run before this (back-off after a failure).
    paused: bool,
    /// Why it stopped, once it did.
    reason: Option<String>,
    log: Logger,
}

impl WebSeed {
    /// Starts a web seed on the current arbiter.
    pub fn spawn(parts: WebSeedParts) -> Addr<WebSeed> {
        let log = parts
            .log
            .new(o!("web seed" => parts.url.as_str().to_string()));
        let client = reqwest::Client::builder()
            .connect_timeout(parts.config.io_timeout)
            .read_timeout(parts.config.io_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("torrent-actors/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        WebSeed {
            parts,
            client,
            asking: false,
            runs: HashMap::new(),
            next_run: 0,
            received: Vec::new(),
            released: Vec::new(),
            stored_bytes: Arc::default(),
            reported_bytes: 0,
            failures: 0,
            paused: false,
            reason: None,
            log,
        }
        .start()
    }

    /// Asks the Coordinator for a run, unless one is being asked for, the runs in
    /// flight are at their limit, or a back-off is on.
    fn ask(&mut self, ctx: &mut Context<Self>) {
        if self.asking
            || self.paused
            || self.reason.is_some()
            || self.runs.len() >= self.parts.config.max_runs
        {
            return;
        }
        self.asking = true;
        let run_blocks = self
            .parts
            .config
            .run_bytes
            .max(u64::from(self.parts.layout.piece_length()))
            .div_ceil(u64::from(BLOCK_SIZE));
        let request = PickBlocks {
            key: self.parts.key,
            received: std::mem::take(&mut self.received),
            released: std::mem::take(&mut self.released),
            want: usize::try_from(run_blocks).unwrap_or(usize::MAX),
        };
        ctx.spawn(
            self.parts
                .pick
                .send(request)
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.asking = false;
                    match res {
                        Ok(picked) if !picked.blocks.is_empty() => {
                            act.start_run(picked.blocks, ctx);
                            act.ask(ctx);
                        }
                        Ok(_) => {
                            ctx.run_later(IDLE_POLL, |act, ctx| act.ask(ctx));
                        }
                        Err(_) => act.give_up("the torrent is gone".into(), ctx),
                    }
                }),
        );
    }

    /// Fetches the blocks of `leases` in the actor's context, alongside its mailbox.
    fn start_run(&mut self, leases: Vec<Lease>, ctx: &mut Context<Self>) {
        let id = self.next_run;
        self.next_run += 1;
        self.runs.insert(id, leases.clone());
        let run = Run {
            client: self.client.clone(),
            seed: self.parts.url.clone(),
            layout: self.parts.layout.clone(),
            multi_file: self.parts.multi_file,
            key: self.parts.key,
            piece_manager: self.parts.piece_manager.clone(),
            config: self.parts.config,
            stored_bytes: self.stored_bytes.clone(),
        };
        ctx.spawn(
            run.fetch(leases)
                .into_actor(self)
                .map(move |outcome, act, ctx| act.run_done(id, outcome, ctx)),
        );
    }

    /// Sends the Coordinator the bytes stored since the last report, if any.
    fn report_downloaded(&mut self) {
        let stored = self.stored_bytes.load(Ordering::Relaxed);
        if stored > self.reported_bytes {
            self.parts.stats.do_send(PeerStats {
                key: self.parts.key,
                downloaded: stored - self.reported_bytes,
                uploaded: 0,
            });
            self.reported_bytes = stored;
        }
    }

    fn run_done(&mut self, id: u64, outcome: RunOutcome, ctx: &mut Context<Self>) {
        let Some(leases) = self.runs.remove(&id) else {
            return;
        };
        self.report_downloaded();
        let stored = outcome.stored;
        self.released
            .extend(leases.iter().filter(|l| !stored.contains(l)).copied());
        self.received.extend(stored);
        match outcome.error {
            None => {
                self.failures = 0;
                self.ask(ctx);
            }
            Some(WebSeedFetchError::Stopping) => ctx.stop(),
            Some(e) if e.retryable() && self.paused => {
                // Another run of the same bad spell: counted once, with the first.
                debug!(self.log, "web seed request failed during a back-off"; "error" => %e);
                self.report_now(ctx);
            }
            Some(e) if e.retryable() => {
                self.failures += 1;
                if self.failures > self.parts.config.max_failures {
                    let reason = format!("gave up after {} failures in a row: {e}", self.failures);
                    return self.give_up(reason, ctx);
                }
                let backoff = match &e {
                    WebSeedFetchError::Busy { after, .. } => *after,
                    _ => self
                        .parts
                        .config
                        .backoff
                        .saturating_mul(1 << self.failures.min(16).saturating_sub(1)),
                }
                .min(self.parts.config.max_backoff);
                info!(self.log, "web seed request failed, retrying"; "error" => %e,
                      "in" => ?backoff, "failures" => self.failures);
                self.paused = true;
                ctx.run_later(backoff, |act, ctx| {
                    act.paused = false;
                    act.ask(ctx);
                });
                // The leases go back now, so other sources can take them meanwhile.
                self.report_now(ctx);
            }
            Some(e) => self.give_up(e.to_string(), ctx),
        }
    }

    /// Reports deliveries and releases at once (a back-off would hold them otherwise).
    fn report_now(&mut self, ctx: &mut Context<Self>) {
        if self.asking || (self.received.is_empty() && self.released.is_empty()) {
            return;
        }
        self.asking = true;
        let report = PickBlocks {
            key: self.parts.key,
            received: std::mem::take(&mut self.received),
            released: std::mem::take(&mut self.released),
            want: 0,
        };
        ctx.spawn(
            self.parts
                .pick
                .send(report)
                .into_actor(self)
                .map(|_, act, _| act.asking = false),
        );
    }

    fn give_up(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.reason.is_none() {
            warn!(self.log, "web seed given up"; "reason" => &reason);
            self.reason = Some(reason);
        }
        ctx.stop();
    }
}

impl Actor for WebSeed {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        debug!(self.log, "web seed started");
        self.ask(ctx);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // Runs still in flight are dropped with the context: their leases go back.
        let mut released = std::mem::take(&mut self.released);
        for (_, leases) in self.runs.drain() {
            released.extend(leases);
        }
        self.report_downloaded();
        self.parts.left.do_send(PeerLeft {
            key: self.parts.key,
            received: std::mem::take(&mut self.received),
            released,
            reason: self.reason.clone().unwrap_or_else(|| "stopped".into()),
        });
        Running::Stop
    }
}

impl Handler<ToWebSeed> for WebSeed {
    type Result = ();

    fn handle(&mut self, msg: ToWebSeed, ctx: &mut Context<Self>) {
        match msg {
            ToWebSeed::WakeUp => self.ask(ctx),
            ToWebSeed::Stop(reason) => {
                if self.reason.is_none() {
                    info!(self.log, "web seed stopped"; "reason" => &reason);
                    self.reason = Some(reason);
                }
                ctx.stop();
            }
        }
    }
}

/// What one run achieved.
struct RunOutcome {
    /// The leases whose blocks the PieceManager took (their bytes are in the web seed's
    /// `stored_bytes`).
    stored: Vec<Lease>,
    /// Why it ended early, if it did.
    error: Option<WebSeedFetchError>,
}

/// One run's fetch: everything it needs, owned, so it runs as a future beside the actor.
struct Run {
    client: reqwest::Client,
    seed: WebSeedUrl,
    layout: Arc<Layout>,
    multi_file: bool,
    key: PeerKey,
    piece_manager: Tracked<PieceManager>,
    config: WebSeedConfig,
    /// The web seed's count of stored bytes, added to as each store is answered.
    stored_bytes: Arc<AtomicU64>,
}

/// A block being filled, and the blocks of a run still to come, in torrent order.
struct Blocks {
    leases: std::vec::IntoIter<Lease>,
    current: Option<(Lease, BytesMut)>,
}

impl Blocks {
    /// Appends `data` to the blocks in order; returns those now complete.
    fn feed(&mut self, mut data: &[u8], done: &mut Vec<(Lease, Bytes)>) {
        while !data.is_empty() {
            if self.current.is_none() {
                let Some(lease) = self.leases.next() else {
                    return;
                };
                let len = lease.request.length as usize;
                self.current = Some((lease, BytesMut::with_capacity(len)));
            }
            let Some((lease, buf)) = &mut self.current else {
                return;
            };
            let need = lease.request.length as usize - buf.len();
            let take = need.min(data.len());
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if buf.len() == lease.request.length as usize {
                if let Some((lease, buf)) = self.current.take() {
                    done.push((lease, buf.freeze()));
                }
            }
        }
    }
}

impl Run {
    /// Fetches `leases` (sorted into contiguous stretches, each fetched file by file) and
    /// hands each block to the PieceManager, at most [`STORE_CREDIT`] ahead of it.
    async fn fetch(self, mut leases: Vec<Lease>) -> RunOutcome {
        leases.sort_by_key(|l| (l.request.piece, l.request.offset));
        let mut outcome = RunOutcome {
            stored: Vec::new(),
            error: None,
        };
        for stretch in stretches(&self.layout, leases) {
            if let Err(e) = self.fetch_stretch(stretch, &mut outcome).await {
                outcome.error = Some(e);
                break;
            }
        }
        outcome
    }

    async fn fetch_stretch(
        &self,
        stretch: Vec<Lease>,
        outcome: &mut RunOutcome,
    ) -> Result<(), WebSeedFetchError> {
        let Some(first) = stretch.first() else {
            return Ok(());
        };
        let start = self.absolute(first);
        let len: u64 = stretch.iter().map(|l| u64::from(l.request.length)).sum();
        let mut blocks = Blocks {
            leases: stretch.into_iter(),
            current: None,
        };
        let mut stores = FuturesUnordered::new();
        let mut in_store = 0u64;
        let mut done = Vec::new();
        for part in file_parts(&self.layout, start, len) {
            let file = &self.layout.files()[part.file];
            if file.padding {
                // BEP 47: padding files are zeros, and no server holds them.
                let zeros = vec![0u8; part.len as usize];
                blocks.feed(&zeros, &mut done);
                self.store(&mut done, &mut stores, &mut in_store, outcome)
                    .await?;
                continue;
            }
            let url = self.seed.file_url(file, self.multi_file);
            let mut response = self
                .get_range(url.clone(), part.offset, part.len, file.length)
                .await?;
            let mut got = 0u64;
            while got < part.len {
                let chunk = tokio::time::timeout(self.config.io_timeout, response.chunk())
                    .await
                    .map_err(|_| WebSeedFetchError::TimedOut(self.config.io_timeout))?
                    .map_err(|e| WebSeedFetchError::Connection(error_chain(&e)))?;
                let Some(chunk) = chunk else {
                    return Err(WebSeedFetchError::ShortRead {
                        got,
                        wanted: part.len,
                    });
                };
                // Never more than asked: the rest of an overlong body is not read.
                let take = chunk.len().min((part.len - got) as usize);
                got += take as u64;
                blocks.feed(&chunk[..take], &mut done);
                self.store(&mut done, &mut stores, &mut in_store, outcome)
                    .await?;
            }
        }
        // Every block handed over; their replies are the rest of the credit.
        while let Some(res) = stores.next().await {
            let (lease, bytes) = res?;
            outcome.stored.push(lease);
            self.stored_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Hands the complete blocks in `done` to the PieceManager, waiting for replies while
    /// more than [`STORE_CREDIT`] is with it.
    async fn store(
        &self,
        done: &mut Vec<(Lease, Bytes)>,
        stores: &mut FuturesUnordered<StoreFuture>,
        in_store: &mut u64,
        outcome: &mut RunOutcome,
    ) -> Result<(), WebSeedFetchError> {
        for (lease, data) in done.drain(..) {
            while *in_store >= STORE_CREDIT {
                let Some(res) = stores.next().await else {
                    break;
                };
                let (lease, bytes) = res?;
                *in_store -= bytes;
                outcome.stored.push(lease);
                self.stored_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            let Some(piece) = self.layout.piece(lease.request.piece) else {
                continue;
            };
            let bytes = data.len() as u64;
            *in_store += bytes;
            let send = self.piece_manager.send(StoreBlocks {
                from: self.key,
                blocks: vec![ReceivedBlock {
                    piece,
                    offset: lease.request.offset,
                    attempt: lease.attempt,
                    data,
                }],
            });
            stores.push(Box::pin(async move {
                send.await
                    .map(|()| (lease, bytes))
                    .map_err(|_| WebSeedFetchError::Stopping)
            }));
        }
        Ok(())
    }

    /// The lease's first byte in the torrent's byte stream.
    fn absolute(&self, lease: &Lease) -> u64 {
        self.layout
            .piece(lease.request.piece)
            .map_or(0, |p| self.layout.piece_offset(p))
            + u64::from(lease.request.offset)
    }

    /// Sends `GET url` for `len` bytes from `offset` (of a file of `file_len` bytes),
    /// following allowed redirects, and returns the response once its status and range
    /// are right. Only the headers are read here. Each way a server can answer (redirect,
    /// 503 with `Retry-After`, a status, a wrong range) is one arm.
    async fn get_range(
        &self,
        url: Url,
        offset: u64,
        len: u64,
        file_len: u64,
    ) -> Result<reqwest::Response, WebSeedFetchError> {
        let end = offset + len - 1;
        let range = format!("bytes={offset}-{end}");
        let mut current = url;
        let mut client = self.client.clone();
        let mut hops = 0;
        loop {
            let send = client
                .get(current.clone())
                .header(reqwest::header::RANGE, &range)
                .send();
            let response = tokio::time::timeout(self.config.io_timeout, send)
                .await
                .map_err(|_| WebSeedFetchError::TimedOut(self.config.io_timeout))?
                .map_err(|e| WebSeedFetchError::Connection(error_chain(&e)))?;
            let status = response.status().as_u16();
            let shown = current.as_str().to_string();
            match status {
                206 => return check_range(response, offset, end, shown),
                // The whole file is what was asked: a 200 is the right answer then.
                200 if offset == 0 && len == file_len => return Ok(response),
                200 => return Err(WebSeedFetchError::IgnoresRange { url: shown }),
                301 | 302 | 303 | 307 | 308 => {
                    hops += 1;
                    (client, current) = self.redirect(&current, &response, hops).await?;
                }
                404 | 410 => return Err(WebSeedFetchError::NotFound { url: shown, status }),
                429 | 503 => {
                    let after = self.retry_after(&response);
                    return Err(WebSeedFetchError::Busy { status, after });
                }
                500..=599 => return Err(WebSeedFetchError::ServerError(status)),
                _ => return Err(WebSeedFetchError::Refused { url: shown, status }),
            }
        }
    }
    /// Where a redirect answer leads (an http or https URL) and the client pinned to the
    /// addresses checked for it, as the trackers' redirects are; `hops` counts this one.
    async fn redirect(
        &self,
        current: &Url,
        response: &reqwest::Response,
        hops: usize,
    ) -> Result<(reqwest::Client, Url), WebSeedFetchError> {
        let target = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| current.join(l).ok())
            .ok_or(WebSeedFetchError::Redirect(RedirectError::BadLocation))?;
        if !matches!(target.scheme(), "http" | "https") {
            return Err(RedirectError::BadLocation.into());
        }
        // Pinned to the addresses checked, as the trackers' redirects are.
        let builder = reqwest::Client::builder()
            .connect_timeout(self.config.io_timeout)
            .read_timeout(self.config.io_timeout)
            .redirect(reqwest::redirect::Policy::none());
        let client = pinned_hop(
            current,
            response.remote_addr(),
            &target,
            hops,
            self.config.max_redirects,
            builder,
        )
        .await
        .map_err(|e| match e {
            HopError::Redirect(e) => WebSeedFetchError::Redirect(e),
            HopError::Resolve { host, reason } => {
                WebSeedFetchError::Connection(format!("{host}: {reason}"))
            }
            HopError::Client(text) => WebSeedFetchError::Connection(text),
        })?;
        Ok((client, target))
    }

    /// How long a 429 or 503 answer asks us to wait: its `Retry-After` in seconds, else
    /// the configured backoff, at most the configured maximum.
    fn retry_after(&self, response: &reqwest::Response) -> Duration {
        response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(self.config.backoff, Duration::from_secs)
            .min(self.config.max_backoff)
    }
}

/// A 206 answer if its `Content-Range` is the one asked for (`offset` to `end`).
fn check_range(
    response: reqwest::Response,
    offset: u64,
    end: u64,
    shown: String,
) -> Result<reqwest::Response, WebSeedFetchError> {
    let got = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let want = format!("bytes {offset}-{end}/");
    if got.as_deref().is_some_and(|g| g.starts_with(&want)) {
        return Ok(response);
    }
    Err(WebSeedFetchError::WrongRange {
        url: shown,
        asked: format!("{offset}-{end}"),
        got: got.map(|g| g.chars().take(100).collect()),
    })
}

type StoreFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Lease, u64), WebSeedFetchError>>>>;

/// The leases cut where they stop being contiguous in the torrent's byte stream, so each
/// stretch is one range of bytes.
fn stretches(layout: &Layout, leases: Vec<Lease>) -> Vec<Vec<Lease>> {
    let mut out: Vec<Vec<Lease>> = Vec::new();
    let mut next_at = None;
    for lease in leases {
        let Some(piece) = layout.piece(lease.request.piece) else {
            continue;
        };
        let at = layout.piece_offset(piece) + u64::from(lease.request.offset);
        match out.last_mut() {
            Some(last) if next_at == Some(at) => last.push(lease),
            _ => out.push(vec![lease]),
        }
        next_at = Some(at + u64::from(lease.request.length));
    }
    out
}

/// A part of one file inside a range of the torrent's bytes.
#[derive(Debug, PartialEq, Eq)]
struct FilePart {
    /// The file's index.
    file: usize,
    /// Where in the file it starts.
    offset: u64,
    /// How many bytes.
    len: u64,
}

/// The files that `len` bytes from `start` of the torrent's byte stream fall in, in
/// order (empty files skipped).
fn file_parts(layout: &Layout, start: u64, len: u64) -> Vec<FilePart> {
    let files = layout.files();
    let first = files.partition_point(|f| f.offset + f.length <= start);
    let end = start + len;
    let mut out = Vec::new();
    for (index, file) in files.iter().enumerate().skip(first) {
        if file.offset >= end {
            break;
        }
        let from = start.max(file.offset);
        let to = end.min(file.offset + file.length);
        if to > from {
            out.push(FilePart {
                file: index,
                offset: from - file.offset,
                len: to - from,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::SafePath;
    use crate::wire::BlockRequest;

    fn layout(files: &[(u64, bool)], piece: u32) -> Layout {
        let entries: Vec<(SafePath, u64, bool)> = files
            .iter()
            .enumerate()
            .map(|(i, &(len, pad))| {
                (
                    SafePath::new(&["t".to_string(), format!("f{i}")]).unwrap(),
                    len,
                    pad,
                )
            })
            .collect();
        Layout::new(u64::from(piece), entries).unwrap()
    }

    fn lease(piece: u32, offset: u32, length: u32) -> Lease {
        Lease {
            request: BlockRequest {
                piece,
                offset,
                length,
            },
            attempt: 0,
        }
    }

    #[test]
    fn a_range_across_files_is_cut_at_each_file_and_skips_empty_ones() {
        let l = layout(&[(10, false), (0, false), (5, true), (20, false)], 16);
        let parts = file_parts(&l, 8, 20);
        assert_eq!(
            parts,
            vec![
                FilePart {
                    file: 0,
                    offset: 8,
                    len: 2
                },
                FilePart {
                    file: 2,
                    offset: 0,
                    len: 5
                },
                FilePart {
                    file: 3,
                    offset: 0,
                    len: 13
                },
            ]
        );
        assert!(file_parts(&l, 35, 0).is_empty());
    }

    #[test]
    fn leases_are_cut_into_contiguous_stretches() {
        let l = layout(&[(4 * 16384, false)], 16384);
        let leases = vec![lease(0, 0, 16384), lease(1, 0, 16384), lease(3, 0, 16384)];
        let s = stretches(&l, leases);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].len(), 2);
    }

    #[test]
    fn blocks_fill_in_order_from_chunks_of_any_size() {
        let _l = layout(&[(40, false)], 32);
        let mut blocks = Blocks {
            leases: vec![lease(0, 0, 32), lease(1, 0, 8)].into_iter(),
            current: None,
        };
        let mut done = Vec::new();
        blocks.feed(&[1; 30], &mut done);
        assert!(done.is_empty());
        blocks.feed(&[2; 10], &mut done);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].1.len(), 32);
        assert_eq!(&done[1].1[..], &[2; 8]);
        // More than the leases hold is dropped, never buffered.
        blocks.feed(&[3; 100], &mut done);
        assert_eq!(done.len(), 2);
    }

    #[test]
    fn the_picker_gives_a_web_seed_whole_pieces_in_a_row() {
        use crate::engine::picker::Picker;
        use crate::wire::Bitfield;
        let piece = 2 * BLOCK_SIZE;
        let l = Arc::new(layout(&[(10 * u64::from(piece), false)], piece));
        let none = Bitfield::new(10);
        let mut all = Bitfield::new(10);
        for i in 0..10 {
            all.set(i).unwrap();
        }
        let mut picker = Picker::new(l.clone(), &none, &all, 100 << 20);
        let (seed, other) = (PeerKey(1), PeerKey(2));
        let mut out = Vec::new();
        picker.pick_run(seed, &all, 0, 6, &mut out);
        let pieces: Vec<u32> = out.iter().map(|r| r.piece).collect();
        assert_eq!(pieces, [0, 0, 1, 1, 2, 2]);
        // A peer takes piece 3 (the rarest-first start is random, so it is told which).
        let mut only3 = Bitfield::new(10);
        only3.set(3).unwrap();
        let mut taken = Vec::new();
        picker.pick(other, &only3, 2, &mut taken);
        assert!(taken.iter().all(|r| r.piece == 3));
        // The next run starts at the first missing piece from where the last ended.
        out.clear();
        picker.pick_run(seed, &all, 3, 5, &mut out);
        let pieces: Vec<u32> = out.iter().map(|r| r.piece).collect();
        assert_eq!(pieces, [4, 4, 5, 5], "whole pieces only, never half of one");
        // The leases are the picker's: the web seed leaving gives all of them back.
        assert_eq!(picker.peer_left(seed), 10);
        picker.check_invariants();
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(WebSeedFetchError::ServerError(502).retryable());
        assert!(WebSeedFetchError::ShortRead { got: 1, wanted: 2 }.retryable());
        assert!(!WebSeedFetchError::IgnoresRange { url: "u".into() }.retryable());
        assert!(!WebSeedFetchError::NotFound {
            url: "u".into(),
            status: 404
        }
        .retryable());
    }
}
