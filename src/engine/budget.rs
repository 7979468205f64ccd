//! The connection budget: how many peer connections every torrent of a process may hold
//! together, dials in flight included.
//!
//! One `serve` process runs many torrents, each with its own `max_peers`; their sum can
//! be far more sockets than the machine (or its open-files limit) affords. The budget is
//! the one cap over all of them. A Coordinator takes a [`ConnectionPermit`] before it
//! dials and for every peer it takes in, and holds it until the dial fails or the peer
//! leaves; the permit gives its slot back when dropped, so no path can forget to.
//!
//! It is a counter, not state with an owner: permits are taken and given back from every
//! Coordinator's thread, so it is an atomic shared through an `Arc` (the one exception to
//! "one owner per piece of state", as a message round trip per dial would buy nothing).
//! It must not block: a torrent that finds it empty waits for its next dial tick.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A count of connections in use against a maximum, shared by the torrents of a process.
#[derive(Debug)]
pub struct ConnectionBudget {
    /// The most connections (and dials) at once.
    max: usize,
    /// Permits alive now; never above `max`.
    in_use: AtomicUsize,
}

impl ConnectionBudget {
    /// A budget of `max` connections, shared by whoever holds a clone of the `Arc`.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            in_use: AtomicUsize::new(0),
        })
    }

    /// Takes one slot, or `None` when all `max` are in use. The slot comes back when the
    /// permit is dropped.
    pub fn try_take(self: &Arc<Self>) -> Option<ConnectionPermit> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionPermit {
            budget: self.clone(),
        })
    }

    /// Slots taken now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    /// The most slots.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One slot of a [`ConnectionBudget`], held for a dial in flight or a connected peer.
#[derive(Debug)]
pub struct ConnectionPermit {
    budget: Arc<ConnectionBudget>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_maximum_and_come_back_when_dropped() {
        let budget = ConnectionBudget::new(2);
        let a = budget.try_take().expect("first slot");
        let b = budget.try_take().expect("second slot");
        assert!(budget.try_take().is_none());
        assert_eq!(budget.in_use(), 2);
        drop(a);
        assert_eq!(budget.in_use(), 1);
        let c = budget.try_take().expect("the freed slot");
        assert!(budget.try_take().is_none());
        drop((b, c));
        assert_eq!(budget.in_use(), 0);
        assert_eq!(budget.max(), 2);
    }

    #[test]
    fn a_budget_of_zero_gives_nothing() {
        let budget = ConnectionBudget::new(0);
        assert!(budget.try_take().is_none());
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_maximum() {
        let budget = ConnectionBudget::new(7);
        let peak = Arc::new(AtomicUsize::new(0));
        let granted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                let peak = peak.clone();
                let granted = granted.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(permit) = budget.try_take() {
                            granted.fetch_add(1, Ordering::Relaxed);
                            peak.fetch_max(budget.in_use(), Ordering::Relaxed);
                            drop(permit);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a taker thread");
        }
        assert!(peak.load(Ordering::Relaxed) <= 7);
        assert!(granted.load(Ordering::Relaxed) > 0);
        assert_eq!(budget.in_use(), 0);
    }
}
