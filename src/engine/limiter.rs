//! The RateLimiter actor: the one owner of a set of upload and download token buckets,
//! a torrent's or (in `serve`) the whole process's.
//!
//! Limits are shared by every peer of the torrent, and state is never shared between
//! actors, so the buckets live here and Peers ask for bytes with [`Grant`]. The reply comes
//! when the bucket allows it; a Peer awaits it before sending a block (uploads) or before
//! asking for more blocks (downloads: the bytes of the requests it is about to send), so
//! a limit slows the sockets as backpressure does, and no actor waits in a handler. With no limit set and no global limiter, the Coordinator gives Peers
//! no limiter at all and nothing is asked.
//!
//! Limiters chain: a torrent's limiter made [`with_parent`](RateLimiter::with_parent)
//! answers a `Grant` once its own bucket allows the bytes *and then* the parent's does, so
//! a global limit bounds the sum of every torrent while each keeps its own. The parent is
//! asked only after the child's wait, so a torrent held back by its own limit takes no
//! place in the global queue meanwhile. Both limits change at run time with [`SetRates`].

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

pub use super::messages::SetRates;
use super::messages::{Direction, Grant};
use super::metrics::{ActorKind, ActorMetrics, OwnMetrics};
use super::ratelimit::{default_burst, TokenBucket};

/// See the module documentation.
pub struct RateLimiter {
    upload: TokenBucket,
    download: TokenBucket,
    /// The global limiter every grant of ours must also pass, if any.
    parent: Option<Addr<RateLimiter>>,
    metrics: OwnMetrics,
}

impl RateLimiter {
    /// Limits in bytes per second; 0 means unlimited.
    pub fn new(upload: u64, download: u64) -> Self {
        Self {
            upload: TokenBucket::with_rate(upload),
            download: TokenBucket::with_rate(download),
            parent: None,
            metrics: OwnMetrics::detached(ActorKind::RateLimiter),
        }
    }

    /// Chains this limiter to `parent`: each grant waits for our bucket, then for the
    /// parent's.
    pub fn with_parent(mut self, parent: Addr<RateLimiter>) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Counts this limiter and its messages into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ActorMetrics>) -> Self {
        self.metrics.attach(metrics);
        self
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;
}

impl Handler<Grant> for RateLimiter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Grant, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<Grant>();
        let bucket = match msg.direction {
            Direction::Upload => &mut self.upload,
            Direction::Download => &mut self.download,
        };
        // The bucket reserves the bytes now, so callers are served in the order they ask.
        let wait = bucket.take(msg.bytes, Instant::now());
        let parent = self.parent.clone();
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if let Some(parent) = parent {
                // A parent that is gone limits nothing.
                let _ = parent.send(msg).await;
            }
        })
    }
}

impl Handler<SetRates> for RateLimiter {
    type Result = ();

    fn handle(&mut self, msg: SetRates, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<SetRates>();
        let now = Instant::now();
        for (bucket, rate) in [
            (&mut self.upload, msg.upload),
            (&mut self.download, msg.download),
        ] {
            // The burst first: `set_rate` starts a bucket that was unlimited full, and
            // full should mean the new limit's burst.
            bucket.set_burst(default_burst(rate), now);
            bucket.set_rate(rate, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Asks for `blocks` grants of `size` bytes one after the other and returns how long
    /// they took.
    async fn time_grants(limiter: &Addr<RateLimiter>, blocks: usize, size: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..blocks {
            limiter
                .send(Grant {
                    direction: Direction::Upload,
                    bytes: size,
                })
                .await
                .expect("the limiter answers");
        }
        start.elapsed()
    }

    #[test]
    fn set_rates_changes_the_pace_at_run_time() {
        System::new().block_on(async {
            // 64 KiB/s: past the 64 KiB burst, 16 × 16 KiB takes about 3 s.
            let limiter = RateLimiter::new(64 * 1024, 0).start();
            limiter
                .send(SetRates {
                    upload: 0,
                    download: 0,
                })
                .await
                .expect("the limiter answers");
            let free = time_grants(&limiter, 16, 16 * 1024).await;
            assert!(free < Duration::from_millis(200), "unlimited took {free:?}");
            // 256 KiB/s: 64 KiB burst, then 448 KiB to earn, about 1.75 s.
            limiter
                .send(SetRates {
                    upload: 256 * 1024,
                    download: 0,
                })
                .await
                .expect("the limiter answers");
            let limited = time_grants(&limiter, 32, 16 * 1024).await;
            assert!(
                limited >= Duration::from_millis(1500) && limited < Duration::from_secs(4),
                "256 KiB/s for 512 KiB took {limited:?}"
            );
        });
    }

    #[test]
    fn a_parent_limit_bounds_a_child_without_one() {
        System::new().block_on(async {
            let parent = RateLimiter::new(256 * 1024, 0).start();
            let child = RateLimiter::new(0, 0).with_parent(parent.clone()).start();
            // 512 KiB through an unlimited child under a 256 KiB/s parent: about 1.75 s.
            let took = time_grants(&child, 32, 16 * 1024).await;
            assert!(
                took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
                "the parent's 256 KiB/s let 512 KiB through in {took:?}"
            );
            // Lifting the parent's limit frees the child.
            parent
                .send(SetRates {
                    upload: 0,
                    download: 0,
                })
                .await
                .expect("the parent answers");
            let free = time_grants(&child, 32, 16 * 1024).await;
            assert!(free < Duration::from_millis(300), "unlimited took {free:?}");
        });
    }

    #[test]
    fn two_children_share_their_parent_limit() {
        System::new().block_on(async {
            let parent = RateLimiter::new(256 * 1024, 0).start();
            let a = RateLimiter::new(0, 0).with_parent(parent.clone()).start();
            let b = RateLimiter::new(0, 0).with_parent(parent).start();
            let start = Instant::now();
            // 2 × 256 KiB = 512 KiB at 256 KiB/s together, after the 64 KiB burst.
            futures::join!(
                time_grants(&a, 16, 16 * 1024),
                time_grants(&b, 16, 16 * 1024)
            );
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(1500),
                "two children passed 512 KiB through a 256 KiB/s parent in {took:?}"
            );
        });
    }
}
