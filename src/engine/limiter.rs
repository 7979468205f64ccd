//! The RateLimiter actor: the one owner of a torrent's upload and download token buckets.
//!
//! Limits are shared by every peer of the torrent, and state is never shared between
//! actors, so the buckets live here and Peers ask for bytes with [`Grant`]. The reply comes
//! when the bucket allows it; a Peer awaits it before sending a block (uploads) or before
//! reading its socket again (downloads), so a limit slows the sockets exactly as
//! backpressure does. With no limit set, the Coordinator gives Peers no limiter at all and
//! nothing is asked.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::messages::{Direction, Grant};
use super::metrics::{ActorKind, ActorMetrics, LiveGuard};
use super::ratelimit::TokenBucket;

/// See the module documentation.
pub struct RateLimiter {
    upload: TokenBucket,
    download: TokenBucket,
    metrics: Arc<ActorMetrics>,
    _live: Option<LiveGuard>,
}

impl RateLimiter {
    /// Limits in bytes per second; 0 means unlimited.
    pub fn new(upload: u64, download: u64) -> Self {
        Self {
            upload: TokenBucket::with_rate(upload),
            download: TokenBucket::with_rate(download),
            metrics: Arc::new(ActorMetrics::detached(ActorKind::RateLimiter)),
            _live: None,
        }
    }

    /// Counts this limiter and its messages into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ActorMetrics>) -> Self {
        self._live = Some(metrics.started());
        self.metrics = metrics;
        self
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;
}

impl Handler<Grant> for RateLimiter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Grant, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling("Grant");
        let bucket = match msg.direction {
            Direction::Upload => &mut self.upload,
            Direction::Download => &mut self.download,
        };
        // The bucket reserves the bytes now, so callers are served in the order they ask.
        let wait = bucket.take(msg.bytes, Instant::now());
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        })
    }
}
