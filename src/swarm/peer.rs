//! One swarm peer at work: a listener on 127.0.0.1 and a tokio task per connection,
//! speaking the wire protocol through the crate's codec and acting out the peer's plan.
//!
//! The peers are not actors and hold nothing of the engine; they are the world the
//! engine is tested against. Each counts what it did in its own atomics, which the front end
//! reads once a second: the only state shared across threads, and only ever added to.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::data::SyntheticData;
use super::link::{DelayLine, LinkProfile};
use super::profile::{PeerPlan, Profile};
use crate::engine::connection::{self, ConnectError};
use crate::engine::transport::{Carrier, PeerStream};
use crate::engine::utp::Utp;
use crate::wire::mse::{Encryption, SkeyTable};
use crate::wire::BLOCK_SIZE;
use crate::wire::{Bitfield, Block, BlockRequest, Handshake, Message, MessageCodec, Reserved};
use crate::InfoHash;

/// Connections one peer takes at once; the leechers need one each, so more is a leecher
/// that dialed twice, and is turned away.
const MAX_CONNECTIONS: i64 = 16;

/// How long a leecher may take to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests queued per connection; more are ignored, as a real client caps its queue.
const MAX_QUEUE: usize = 500;

/// Bytes of encoded messages waiting for the socket, above which no block is added: so a
/// connection holds at most this plus one block, whatever the leecher asks.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// A keep-alive goes out after this long without sending anything, well inside the
/// leechers' idle limit.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// What every peer of one swarm shares: the torrent and the clock it plans by.
pub(crate) struct SwarmShared {
    pub info_hash: InfoHash,
    pub data: SyntheticData,
    /// When the swarm started: flaky and partial peers plan by the time since.
    pub started: Instant,
}

/// What one peer did, counted by the peer.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Connections accepted, over either carrier.
    pub connections: AtomicU64,
    /// Of those, the ones uTP carried.
    pub utp_connections: AtomicU64,
    /// Connections that got past the handshake.
    pub handshakes: AtomicU64,
    /// Block bytes sent (spoiled ones included).
    pub bytes_served: AtomicU64,
    /// Blocks sent.
    pub blocks_served: AtomicU64,
    /// Blocks sent spoiled (liars only).
    pub spoiled_blocks: AtomicU64,
    /// Connections the leecher closed (each also reported as a [`RemoteClose`], which
    /// says whether it was a drop).
    pub closed_by_leecher: AtomicU64,
    /// Connections this peer closed or turned away: a flaky peer going down, a leecher
    /// over the connection cap, a handshake that did not come.
    pub closed_by_peer: AtomicU64,
    /// Requests ignored: sent while choked, for pieces not held, or past the queue.
    pub ignored_requests: AtomicU64,
    /// Connections open now.
    pub open: AtomicI64,
}

/// A connection the leecher closed, told to the front end so it can judge, once it knows when
/// each leecher ended, whether the leecher dropped the peer or was leaving.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteClose {
    /// The peer's index.
    pub peer: u32,
    /// When the close was seen.
    pub at: std::time::Instant,
    /// Whether the leecher was waiting on the peer then: before the peer's handshake (a
    /// silent peer), or with requests of its own still queued here.
    pub waiting: bool,
}

/// Why a connection ended.
enum End {
    /// The swarm is stopping.
    Shutdown,
    /// The leecher closed it (or it broke); `waiting` if it was waiting on us then.
    Remote { waiting: bool },
    /// This peer closed it.
    Ours,
}

/// Everything a peer's tasks need.
#[derive(Clone)]
pub(crate) struct PeerTask {
    pub plan: Arc<PeerPlan>,
    pub shared: Arc<SwarmShared>,
    pub counters: Arc<PeerCounters>,
    pub cancel: CancellationToken,
    /// Where connections the leecher closed are reported.
    pub closes: std::sync::mpsc::Sender<RemoteClose>,
    /// The network link this peer's connections go through (none: plain loopback).
    pub link: LinkProfile,
}

/// Accepts connections, over TCP and (when the swarm's peers speak it) uTP, until the
/// swarm stops, each served by its own task.
pub(crate) async fn run(listener: TcpListener, utp: Option<Utp>, task: PeerTask) {
    let mut connection: u64 = 0;
    // Without uTP this stream never yields, and only TCP is accepted.
    let mut over_utp = match &utp {
        Some(utp) => utp.incoming().boxed(),
        None => futures::stream::pending().boxed(),
    };
    loop {
        let accepted: std::io::Result<Carrier> = tokio::select! {
            _ = task.cancel.cancelled() => return,
            accepted = listener.accept() => accepted.map(|(tcp, _)| Carrier::from(tcp)),
            accepted = over_utp.next() => match accepted {
                Some(accepted) => accepted.map(|(carrier, _)| carrier),
                // The uTP socket's task is gone: TCP alone from now on.
                None => {
                    over_utp = futures::stream::pending().boxed();
                    continue;
                }
            },
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(_) => {
                // Out of descriptors, most likely: wait for some to close.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if stream.is_utp() {
            task.counters
                .utp_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        let c = &task.counters;
        c.connections.fetch_add(1, Ordering::Relaxed);
        let elapsed = task.shared.started.elapsed();
        let down = task
            .plan
            .flaky
            .is_some_and(|f| f.down_for(elapsed).is_some());
        if down || c.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            c.closed_by_peer.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        connection += 1;
        c.open.fetch_add(1, Ordering::Relaxed);
        let task = task.clone();
        tokio::spawn(async move {
            let end = serve(stream, &task, connection).await;
            let c = &task.counters;
            c.open.fetch_sub(1, Ordering::Relaxed);
            match end {
                End::Shutdown => {}
                End::Ours => {
                    c.closed_by_peer.fetch_add(1, Ordering::Relaxed);
                }
                End::Remote { waiting } => {
                    c.closed_by_leecher.fetch_add(1, Ordering::Relaxed);
                    // The front end may have stopped listening at the very end; nothing to do.
                    let _ = task.closes.send(RemoteClose {
                        peer: task.plan.index,
                        at: std::time::Instant::now(),
                        waiting,
                    });
                }
            }
        });
    }
}

async fn serve(stream: Carrier, task: &PeerTask, connection: u64) -> End {
    let _ = stream.set_nodelay();
    if task.plan.profile == Profile::Silent {
        return stay_silent(stream, &task.cancel).await;
    }
    // Plaintext or encrypted, as a leecher dials: with both offered, plaintext is
    // selected, so only a leecher requiring RC4 gets it.
    let skeys = SkeyTable::single(task.shared.info_hash);
    let read = tokio::select! {
        _ = task.cancel.cancelled() => return End::Shutdown,
        read = connection::read_incoming_handshake(
            stream, &skeys, Encryption::Prefer, HANDSHAKE_TIMEOUT,
        ) => read,
    };
    let mut stream = match read {
        Ok((stream, theirs)) if theirs.info_hash == task.shared.info_hash => stream,
        Err(ConnectError::Io(_)) => return End::Remote { waiting: true },
        _ => return End::Ours,
    };
    let ours = Handshake::new(Reserved::none(), task.shared.info_hash, task.plan.peer_id);
    if stream.write_all(&ours.encode()).await.is_err() || stream.flush().await.is_err() {
        return End::Remote { waiting: true };
    }
    task.counters.handshakes.fetch_add(1, Ordering::Relaxed);
    if task.plan.profile == Profile::Idle {
        return stay_idle(stream, &task.cancel).await;
    }
    Session::new(task, connection).run(stream).await
}

/// An idle peer, after its handshake, has nothing to offer: it never unchokes, reads and
/// drops whatever comes, and sends a keep-alive every 30 s so the leecher holds the
/// connection.
async fn stay_idle(mut stream: PeerStream, cancel: &CancellationToken) -> End {
    let mut sink = [0u8; 16 * 1024];
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return End::Shutdown,
            _ = keepalive.tick() => {
                if stream.write_all(&[0, 0, 0, 0]).await.is_err() || stream.flush().await.is_err() {
                    return End::Remote { waiting: false };
                }
            }
            read = stream.read(&mut sink) => match read {
                Ok(0) | Err(_) => return End::Remote { waiting: false },
                Ok(_) => {}
            },
        }
    }
}

/// A silent peer reads whatever comes and never answers, until the leecher gives up
/// waiting for its handshake.
async fn stay_silent(mut stream: Carrier, cancel: &CancellationToken) -> End {
    let mut sink = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return End::Shutdown,
            read = stream.read(&mut sink) => match read {
                Ok(0) | Err(_) => return End::Remote { waiting: true },
                Ok(_) => {}
            },
        }
    }
}

/// A token bucket holding at most one block, for slow peers.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1) as f64,
            tokens: 0.0,
            at: Instant::now(),
        }
    }

    /// Takes `n` tokens, or says when they will be there.
    fn take(&mut self, n: u32, now: Instant) -> Result<(), Instant> {
        let capacity = f64::from(BLOCK_SIZE).max(f64::from(n));
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(capacity);
        self.at = now;
        if self.tokens >= f64::from(n) {
            self.tokens -= f64::from(n);
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((f64::from(n) - self.tokens) / self.rate))
        }
    }
}

/// A connection's two directions through its link: messages read wait in `inbound`
/// until they would have arrived; bytes written wait in `outbound`, then move to `wire`,
/// the socket's own buffer.
struct Link {
    inbound: DelayLine<Message>,
    outbound: DelayLine<bytes::Bytes>,
    wire: BytesMut,
}

/// What one message read counts for in the inbound line (leechers send small ones; a
/// bitfield counts as its length).
fn inbound_size(message: &Message) -> usize {
    match message {
        Message::Bitfield(b) => b.len() + 5,
        Message::Piece(b) => b.data.len() + 13,
        _ => 17,
    }
}

/// What woke the connection's loop.
enum Event {
    Shutdown,
    Received(Option<Result<Message, crate::wire::WireError>>),
    Wrote(std::io::Result<usize>),
    Timer,
}

/// One connection after the handshake.
struct Session<'a> {
    task: &'a PeerTask,
    /// Which connection of this peer it is, for the choker's timing.
    connection: u64,
    /// Whether we choke the leecher; every connection starts choked.
    choking: bool,
    /// Whether the leecher said it is interested.
    interested: bool,
    /// A choker's spell: `Some(until)` while the next change is due.
    choker_until: Option<Instant>,
    /// A choker's count of spells on this connection.
    choker_turn: u64,
    /// True while a choker chokes on purpose (an interested leecher stays choked).
    choker_holds: bool,
    /// The leecher's requests, oldest first.
    queue: VecDeque<BlockRequest>,
    /// A slow peer's rate.
    bucket: Option<Bucket>,
    /// When a slow peer may send the next block.
    next_send: Option<Instant>,
    /// Pieces a partial peer holds now, and when it gains the next.
    partial_count: u32,
    next_growth: Option<Instant>,
    /// When a flaky peer goes down and closes this connection.
    close_at: Option<Instant>,
    /// When we last sent anything, for keep-alives.
    last_sent: Instant,
}

impl<'a> Session<'a> {
    fn new(task: &'a PeerTask, connection: u64) -> Self {
        let now = Instant::now();
        let elapsed = now.duration_since(task.shared.started);
        let plan = &task.plan;
        let partial_count = plan
            .partial
            .as_ref()
            .map_or(task.shared.data.num_pieces(), |p| p.count_at(elapsed));
        let next_growth = plan.partial.as_ref().map(|p| {
            let every = p.grow_every.as_millis().max(1) as u64;
            let into = elapsed.as_millis() as u64 % every;
            now + Duration::from_millis(every - into)
        });
        Self {
            task,
            connection,
            choking: true,
            interested: false,
            choker_until: None,
            choker_turn: 0,
            choker_holds: false,
            queue: VecDeque::new(),
            bucket: plan.rate.map(Bucket::new),
            next_send: None,
            partial_count,
            next_growth,
            close_at: plan
                .flaky
                .and_then(|f| f.up_for(elapsed))
                .map(|left| now + left),
            last_sent: now,
        }
    }

    /// The simulated peer's life: one `select!` over its socket, its clocks and its
    /// plan (flaky drops, lies).
    async fn run(mut self, stream: PeerStream) -> End {
        let num_pieces = self.task.shared.data.num_pieces();
        let (read, mut write) = stream.into_split();
        let mut reader = FramedRead::new(read, MessageCodec::for_piece_count(num_pieces));
        let mut out = BytesMut::with_capacity(OUT_HIGH_WATER + 2 * BLOCK_SIZE as usize);
        self.send_bitfield(&mut out);
        let mut link = self.link();
        loop {
            let now = Instant::now();
            let mut wake = self.next_wake();
            if let Some(link) = &mut link {
                wake = self.pump_link(link, &mut out, now, wake);
            } else {
                self.fill(&mut out);
            }
            let reading = link.as_ref().is_none_or(|l| l.inbound.has_room(now));
            let buffer = match &mut link {
                Some(link) => &mut link.wire,
                None => &mut out,
            };
            let writing = !buffer.is_empty();
            // Encrypted bytes the socket did not take yet go out before more is written.
            let flushing = !writing && write.has_pending();
            let event = tokio::select! {
                _ = self.task.cancel.cancelled() => Event::Shutdown,
                message = reader.next(), if reading => Event::Received(message),
                wrote = async {
                    if writing {
                        write.write_buf(buffer).await
                    } else {
                        write.flush().await.map(|()| 1)
                    }
                }, if writing || flushing => Event::Wrote(wrote),
                _ = tokio::time::sleep_until(wake) => Event::Timer,
            };
            if let Some(end) = self.on_event(event, &mut link, &mut out) {
                return end;
            }
        }
    }

    /// Our bitfield, the first message.
    fn send_bitfield(&mut self, out: &mut BytesMut) {
        let num_pieces = self.task.shared.data.num_pieces();
        let mut bitfield = Bitfield::new(num_pieces);
        for piece in (0..num_pieces).filter(|&p| self.holds(p)) {
            let _ = bitfield.set(piece);
        }
        self.send(out, &Message::Bitfield(bitfield.to_payload()));
    }

    /// The delay lines of the task's link profile, if it has one.
    fn link(&self) -> Option<Link> {
        let link_profile = self.task.link;
        (!link_profile.is_none()).then(|| Link {
            inbound: DelayLine::new(link_profile, self.task.plan.key ^ self.connection),
            outbound: DelayLine::new(link_profile, !self.task.plan.key ^ self.connection),
            wire: BytesMut::with_capacity(OUT_HIGH_WATER + 2 * BLOCK_SIZE as usize),
        })
    }

    /// Moves what is due through the link: inbound messages that have arrived are
    /// handled, what we wrote enters the outbound line, and outbound bytes that have
    /// arrived go to the wire. Returns `wake`, or sooner if a line wants a turn sooner.
    fn pump_link(
        &mut self,
        link: &mut Link,
        out: &mut BytesMut,
        now: Instant,
        wake: Instant,
    ) -> Instant {
        while let Some(message) = link.inbound.pop_due(now) {
            self.on_message(message, out);
        }
        if link.outbound.has_room(now) {
            self.fill(out);
        }
        if !out.is_empty() {
            let len = out.len();
            link.outbound.push(out.split().freeze(), len, now);
        }
        while link.wire.len() < OUT_HIGH_WATER {
            let Some(bytes) = link.outbound.pop_due(now) else {
                break;
            };
            link.wire.extend_from_slice(&bytes);
        }
        let line_wake = [link.inbound.next_wake(now), link.outbound.next_wake(now)];
        line_wake.into_iter().flatten().fold(wake, Instant::min)
    }

    /// Handles what the `select!` woke for; `Some` when the connection ends.
    fn on_event(
        &mut self,
        event: Event,
        link: &mut Option<Link>,
        out: &mut BytesMut,
    ) -> Option<End> {
        match event {
            Event::Shutdown => return Some(End::Shutdown),
            Event::Received(Some(Ok(message))) => match link {
                Some(link) => {
                    let size = inbound_size(&message);
                    link.inbound.push(message, size, Instant::now());
                }
                None => self.on_message(message, out),
            },
            // The leecher closed, or broke the protocol: either way it is gone.
            // Requests still queued mean it gave up waiting, or it completed with
            // endgame duplicates left here; the front end tells the two apart by when
            // the leechers ended.
            Event::Received(_) | Event::Wrote(Err(_)) | Event::Wrote(Ok(0)) => {
                return Some(End::Remote {
                    waiting: !self.queue.is_empty(),
                })
            }
            Event::Wrote(Ok(_)) => {}
            Event::Timer => {
                if self.on_timers(out) {
                    return Some(End::Ours);
                }
            }
        }
        None
    }

    fn holds(&self, piece: u32) -> bool {
        match &self.task.plan.partial {
            Some(p) => p.holds(piece, self.partial_count),
            None => piece < self.task.shared.data.num_pieces(),
        }
    }

    fn send(&mut self, out: &mut BytesMut, message: &Message) {
        // Only messages we build go through here, each valid by construction.
        let _ = message.encode(out);
        self.last_sent = Instant::now();
    }

    fn on_message(&mut self, message: Message, out: &mut BytesMut) {
        let c = &self.task.counters;
        match message {
            Message::Interested => {
                self.interested = true;
                if self.choking && !self.choker_holds {
                    self.unchoke(out);
                }
            }
            Message::NotInterested => self.interested = false,
            Message::Request(request) => {
                if self.choking || !self.valid(&request) || self.queue.len() >= MAX_QUEUE {
                    c.ignored_requests.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.queue.push_back(request);
                }
            }
            Message::Cancel(request) => self.queue.retain(|r| *r != request),
            // What the leecher has, its keep-alives and anything else change nothing here.
            _ => {}
        }
    }

    fn valid(&self, r: &BlockRequest) -> bool {
        let len = self.task.shared.data.piece_len(r.piece);
        self.holds(r.piece)
            && r.length <= BLOCK_SIZE
            && r.offset.checked_add(r.length).is_some_and(|end| end <= len)
    }

    fn unchoke(&mut self, out: &mut BytesMut) {
        self.choking = false;
        self.send(out, &Message::Unchoke);
        if self.task.plan.profile == Profile::Choker {
            let (unchoked, _) = self
                .task
                .plan
                .choker_spells(self.connection, self.choker_turn);
            self.choker_until = Some(Instant::now() + unchoked);
        }
    }

    /// Adds blocks to `out` while the socket keeps up and the rate allows.
    fn fill(&mut self, out: &mut BytesMut) {
        let now = Instant::now();
        if self.next_send.is_some_and(|at| at > now) {
            return;
        }
        self.next_send = None;
        while out.len() < OUT_HIGH_WATER && !self.choking {
            let Some(&request) = self.queue.front() else {
                break;
            };
            if let Some(bucket) = &mut self.bucket {
                if let Err(at) = bucket.take(request.length, now) {
                    self.next_send = Some(at);
                    break;
                }
            }
            self.queue.pop_front();
            let mut data = BytesMut::zeroed(request.length as usize);
            self.task
                .shared
                .data
                .fill(request.piece, request.offset, &mut data);
            let c = &self.task.counters;
            if self.task.plan.spoils(request.piece, request.offset) {
                for b in data.iter_mut().take(8) {
                    *b = !*b;
                }
                c.spoiled_blocks.fetch_add(1, Ordering::Relaxed);
            }
            c.bytes_served
                .fetch_add(u64::from(request.length), Ordering::Relaxed);
            c.blocks_served.fetch_add(1, Ordering::Relaxed);
            let block = Block {
                piece: request.piece,
                offset: request.offset,
                data: data.freeze(),
            };
            self.send(out, &Message::Piece(block));
        }
    }

    fn next_wake(&self) -> Instant {
        [
            self.next_send,
            self.choker_until,
            self.next_growth,
            self.close_at,
            Some(self.last_sent + KEEPALIVE),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + KEEPALIVE)
    }

    /// Acts on whatever is due; true when the connection is to close.
    fn on_timers(&mut self, out: &mut BytesMut) -> bool {
        let now = Instant::now();
        if self.close_at.is_some_and(|at| at <= now) {
            return true;
        }
        if self.choker_until.is_some_and(|at| at <= now) {
            self.choker_until = None;
            if self.choker_holds {
                self.choker_holds = false;
                self.choker_turn += 1;
                if self.interested {
                    self.unchoke(out);
                }
            } else {
                // Without the fast extension a choke voids every queued request.
                self.choking = true;
                self.choker_holds = true;
                self.queue.clear();
                self.send(out, &Message::Choke);
                let (_, choked) = self
                    .task
                    .plan
                    .choker_spells(self.connection, self.choker_turn);
                self.choker_until = Some(now + choked);
            }
        }
        if let (Some(at), Some(partial)) = (self.next_growth, &self.task.plan.partial) {
            if at <= now {
                let count = partial.count_at(now.duration_since(self.task.shared.started));
                let gained: Vec<u32> =
                    partial.order[self.partial_count as usize..count as usize].to_vec();
                self.partial_count = count;
                for piece in gained {
                    self.send(out, &Message::Have(piece));
                }
                self.next_growth =
                    (count < self.task.shared.data.num_pieces()).then(|| at + partial.grow_every);
            }
        }
        if self.last_sent + KEEPALIVE <= now {
            self.send(out, &Message::KeepAlive);
        }
        false
    }
}
