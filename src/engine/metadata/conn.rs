//! The MetadataPeer actor: one per connection while a magnet link's info dictionary is
//! unknown.
//!
//! Without the info dictionary there is no piece count, so none of the Peer actor's
//! piece logic applies yet. This actor only does the extension handshake, forwards
//! `ut_metadata` answers (and `ut_pex` peers) to the MetadataFetcher and sends the
//! requests the fetcher assigns; `bitfield`, `have` and the rest are read and ignored.
//! Once the metadata is verified these connections are closed and the torrent's Peer
//! actors dial the same addresses again.

use std::sync::Arc;

use crate::engine::metrics::{ActorMetrics, OwnMetrics, Tracked};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::engine::transport::PeerStream;
use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use bytes::Bytes;
use slog::{debug, o, Logger};
use tokio_util::codec::FramedRead;

use super::MetadataFetcher;
use crate::engine::messages::{
    HashAnswer, HashesFromPeer, MetadataFromPeer, MetadataPeerLeft, MetadataPeerReady, PeerSource,
    PeersFound, ToMetadataPeer,
};
use crate::engine::peer::{our_ext_handshake, PauseOnFullSocket, OUR_UT_METADATA, OUR_UT_PEX};
use crate::engine::PeerKey;
use crate::wire::ext::{self, ExtHandshake, MetadataMessage, PexMessage};
use crate::wire::{Handshake, Message, MessageCodec, WireError, DEFAULT_MAX_MESSAGE_LEN};

/// Without an extension handshake by then, the peer cannot give us metadata.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// With nothing received for this long, the connection is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// See the module documentation.
pub struct MetadataPeer {
    key: PeerKey,
    fetcher: Tracked<MetadataFetcher>,
    /// The counters of all MetadataPeers (the engine's metrics).
    metrics: OwnMetrics,
    out: Option<FramedWrite<Message, PauseOnFullSocket, MessageCodec>>,
    /// The id the peer wants `ut_metadata` messages under, once it said so.
    their_metadata_id: Option<u8>,
    /// Its extension handshake arrived.
    ready: bool,
    /// Whether peers from its `ut_pex` messages are used.
    pex: bool,
    /// When its last `ut_pex` was used: more often than the Peer's
    /// [`PEX_MIN_INTERVAL`](crate::engine::peer::PEX_MIN_INTERVAL) is ignored, as there.
    pex_heard: Option<Instant>,
    last_received: Instant,
    started: Instant,
    close_reason: Option<String>,
    log: Logger,
}

impl MetadataPeer {
    /// Starts the actor on a handshaken connection. A peer without the extension
    /// protocol is closed at once: it cannot send metadata.
    pub fn start(
        key: PeerKey,
        stream: PeerStream,
        handshake: Handshake,
        fetcher: Tracked<MetadataFetcher>,
        pex: bool,
        metrics: Arc<ActorMetrics>,
        log: &Logger,
    ) -> Tracked<MetadataPeer> {
        let counters = metrics.clone();
        let addr = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let codec = MessageCodec::new(DEFAULT_MAX_MESSAGE_LEN);
        let (read, write) = stream.into_split();
        let extended = handshake.reserved.extension_protocol();
        let fast = handshake.reserved.fast_extension();
        let addr = MetadataPeer::create(move |ctx| {
            ctx.add_stream(FramedRead::new(read, codec));
            let out = FramedWrite::new(PauseOnFullSocket::new(write), codec, ctx);
            let now = Instant::now();
            let mut peer = MetadataPeer {
                key,
                fetcher,
                metrics: OwnMetrics::started_as(metrics, key.0).labelled(&addr.to_string()),
                out: Some(out),
                their_metadata_id: None,
                ready: false,
                pex,
                pex_heard: None,
                last_received: now,
                started: now,
                close_reason: None,
                log: log.new(o!("peer" => addr.to_string(), "key" => key.0, "phase" => "metadata")),
            };
            if extended {
                let ours = our_ext_handshake(None, pex, None, None);
                peer.send(Message::Extended {
                    id: ext::HANDSHAKE_ID,
                    payload: ours.encode().into(),
                });
                if fast {
                    peer.send(Message::HaveNone);
                }
            } else {
                peer.close_reason = Some("no extension protocol, so no metadata".into());
                ctx.stop();
            }
            peer
        });
        Tracked::new(addr, counters)
    }

    fn send(&mut self, message: Message) {
        if let Some(out) = &mut self.out {
            out.write(message);
        }
    }

    fn close(&mut self, reason: impl Into<String>, ctx: &mut Context<Self>) {
        self.close_reason.get_or_insert_with(|| reason.into());
        ctx.stop();
    }

    fn on_extended(&mut self, id: u8, payload: Bytes, ctx: &mut Context<Self>) {
        match id {
            ext::HANDSHAKE_ID => {
                let hs = match ExtHandshake::decode(&payload) {
                    Ok(hs) => hs,
                    Err(e) => return self.close(format!("bad extension handshake: {e}"), ctx),
                };
                self.their_metadata_id = hs.id_of(ext::UT_METADATA);
                let first = !self.ready;
                self.ready = true;
                if first {
                    self.fetcher.do_send(MetadataPeerReady {
                        key: self.key,
                        metadata_size: hs
                            .metadata_size
                            .filter(|_| self.their_metadata_id.is_some()),
                    });
                }
            }
            OUR_UT_METADATA => match MetadataMessage::decode(&payload) {
                // We have nothing to give yet.
                Ok(MetadataMessage::Request { piece }) => {
                    if let Some(id) = self.their_metadata_id {
                        self.send(Message::Extended {
                            id,
                            payload: MetadataMessage::Reject { piece }.encode().into(),
                        });
                    }
                }
                Ok(message) => self.fetcher.do_send(MetadataFromPeer {
                    key: self.key,
                    message,
                }),
                Err(e) => self.close(format!("bad ut_metadata message: {e}"), ctx),
            },
            OUR_UT_PEX if self.pex => {
                let too_soon = self
                    .pex_heard
                    .is_some_and(|t| t.elapsed() < crate::engine::peer::PEX_MIN_INTERVAL);
                if too_soon {
                    return;
                }
                if let Ok(pex) = PexMessage::decode(&payload) {
                    self.pex_heard = Some(Instant::now());
                    if !pex.added.is_empty() {
                        // Peer lists are timed, not counted in the mailbox depth (see
                        // `engine::metrics`).
                        self.fetcher.addr().do_send(PeersFound {
                            peers: pex.added,
                            source: PeerSource::Pex,
                        });
                    }
                }
            }
            // Extensions we did not offer: ignored, as BEP 10 asks.
            _ => {}
        }
    }
}

impl Actor for MetadataPeer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            if !act.ready && act.started.elapsed() > HANDSHAKE_TIMEOUT {
                act.close("no extension handshake", ctx);
            } else if act.last_received.elapsed() > IDLE_TIMEOUT {
                act.close("silent for too long", ctx);
            }
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        let reason = self.close_reason.take().unwrap_or_else(|| "closed".into());
        debug!(self.log, "metadata peer leaving"; "reason" => &reason);
        self.fetcher.do_send(MetadataPeerLeft {
            key: self.key,
            reason,
        });
        if let Some(mut out) = self.out.take() {
            out.close();
        }
        Running::Stop
    }
}

impl StreamHandler<Result<Message, WireError>> for MetadataPeer {
    fn handle(&mut self, item: Result<Message, WireError>, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_unqueued(match &item {
            Ok(message) => message.name(),
            Err(_) => "wire error",
        });
        self.last_received = Instant::now();
        match item {
            Ok(Message::Extended { id, payload }) => self.on_extended(id, payload, ctx),
            // BEP 52, while a v2 torrent's piece layers are fetched: answers go to the
            // fetcher, which checks them; we have no tree to answer from yet.
            Ok(Message::Hashes(hashes)) => self.fetcher.do_send(HashesFromPeer {
                key: self.key,
                answer: HashAnswer::Hashes(hashes),
            }),
            Ok(Message::HashReject(request)) => self.fetcher.do_send(HashesFromPeer {
                key: self.key,
                answer: HashAnswer::Reject(request),
            }),
            Ok(Message::HashRequest(request)) => self.send(Message::HashReject(request)),
            Ok(_) => {}
            Err(e) => self.close(format!("protocol error: {e}"), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.close("connection closed by peer", ctx);
    }
}

impl WriteHandler<WireError> for MetadataPeer {
    fn error(&mut self, err: WireError, _: &mut Context<Self>) -> Running {
        self.close_reason
            .get_or_insert_with(|| format!("write failed: {err}"));
        Running::Stop
    }
}

impl Handler<ToMetadataPeer> for MetadataPeer {
    type Result = ();

    fn handle(&mut self, msg: ToMetadataPeer, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<ToMetadataPeer>();
        match msg {
            ToMetadataPeer::Request(piece) => {
                if let Some(id) = self.their_metadata_id {
                    self.send(Message::Extended {
                        id,
                        payload: MetadataMessage::Request { piece }.encode().into(),
                    });
                }
            }
            ToMetadataPeer::AskHashes(request) => self.send(Message::HashRequest(request)),
            ToMetadataPeer::Disconnect(reason) => self.close(reason, ctx),
        }
    }
}
