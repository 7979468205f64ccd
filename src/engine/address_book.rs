//! The address book: every peer address a torrent (or a magnet's metadata phase) knows
//! of, what it thinks of each, and whom it will not talk to.
//!
//! It owns the addresses to dial and in what order, the back-off of addresses that
//! failed, the bans and the bad-data strikes, and the count of connections per IP. Every
//! part is bounded, because every address in it came from a stranger: a tracker reply, a
//! DHT node, a peer's `ut_pex`, a magnet link. It is pure: no actors, no sockets, no
//! clock of its own (callers pass the time), so each rule below is unit- and
//! property-tested.
//!
//! The rules, each a constant here:
//!
//! - **Per message**: at most [`MAX_PEERS_PER_TRACKER_REPLY`] addresses are taken from
//!   one tracker reply, [`MAX_PEERS_PER_DHT_ANSWER`] from one DHT answer,
//!   [`MAX_PEERS_PER_PEX_MESSAGE`] from one `ut_pex` message and
//!   [`MAX_PEERS_PER_MAGNET`] from a magnet link; the rest of the message is ignored.
//! - **In all**: at most [`MAX_KNOWN`] addresses. When full, a new address takes the place
//!   of the least useful known one: given up on first, then the one that failed most,
//!   then one never connected, then the oldest. Addresses that never failed are not
//!   pushed out by new ones (a new address is no better than an untried one), nor are
//!   addresses being dialed or connected, nor those the user gave (`--peer`). Nothing
//!   to evict: the new address is dropped.
//! - **Back-off**: a failed dial (or a connection that ended within
//!   [`USEFUL_CONNECTION`]) is retried after [`RETRY_BASE`], doubling each time up to
//!   [`RETRY_MAX`]; after [`GIVE_UP_AFTER`] failures in a row it is not dialed again. A
//!   connection that lasted [`USEFUL_CONNECTION`] clears the count.
//! - **Bans** are by IP (an IPv6 address by its /64), so a banned peer cannot come back
//!   from another port, except for loopback addresses and the addresses the user gave,
//!   which are banned by address and port: on one host many honest peers share
//!   127.0.0.1, and the user's own choice of peer stays theirs. At most [`MAX_BANNED`]
//!   bans and [`MAX_STRUCK`] struck addresses are kept, each table dropping its oldest
//!   first; strikes and bans are kept apart, so a flood of struck addresses never costs
//!   a ban.
//! - **Connections per IP**: at most [`MAX_CONNECTIONS_PER_IP`] (dials in flight,
//!   incoming handshakes and connected peers together) from one non-loopback IP that the
//!   user did not give; loopback and the user's addresses are not counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::messages::PeerSource;

/// Addresses taken from one tracker reply (libtorrent asks trackers for 200 by default).
/// A 2 MiB compact reply can list about 350,000; the rest are ignored.
pub const MAX_PEERS_PER_TRACKER_REPLY: usize = 200;

/// Addresses taken from one DHT answer (one batch of `get_peers` values).
pub const MAX_PEERS_PER_DHT_ANSWER: usize = 100;

/// Addresses taken from one `ut_pex` message (BEP 11 peers send at most 50 added).
pub const MAX_PEERS_PER_PEX_MESSAGE: usize = crate::wire::ext::MAX_PEX_ADDED;

/// Addresses taken from a magnet link's `x.pe` parameters (and the names they resolve to).
pub const MAX_PEERS_PER_MAGNET: usize = 200;

/// Addresses known at once, per torrent (libtorrent keeps 3000 by default).
pub const MAX_KNOWN: usize = 3000;

/// Bans kept at once, per torrent; the oldest goes first.
pub const MAX_BANNED: usize = 1000;

/// Addresses with bad-data strikes kept at once, per torrent; the oldest goes first.
pub const MAX_STRUCK: usize = 1000;

/// The first pause before an address that failed is dialed again.
pub const RETRY_BASE: Duration = Duration::from_secs(10);

/// The longest pause between dials of one address.
pub const RETRY_MAX: Duration = Duration::from_secs(10 * 60);

/// Failures in a row after which an address is not dialed again (about 21 minutes of
/// trying, with the pauses above).
pub const GIVE_UP_AFTER: u32 = 8;

/// A connection that lasts this long was worth having: its address's failures are
/// forgotten. One that ends sooner counts as a failure, so a peer that accepts and drops
/// us at once is dialed less and less often.
pub const USEFUL_CONNECTION: Duration = Duration::from_secs(60);

/// Connections at once from one non-loopback IP the user did not give. A few, not one:
/// several honest peers may share an address behind a NAT.
pub const MAX_CONNECTIONS_PER_IP: usize = 3;

/// At most this many addresses of `source` are taken from one message.
pub fn per_message_cap(source: &PeerSource) -> usize {
    match source {
        PeerSource::Tracker(_) | PeerSource::TrackerV2Swarm(_) => MAX_PEERS_PER_TRACKER_REPLY,
        PeerSource::Dht => MAX_PEERS_PER_DHT_ANSWER,
        PeerSource::Pex => MAX_PEERS_PER_PEX_MESSAGE,
        PeerSource::Magnet => MAX_PEERS_PER_MAGNET,
        // The user's own list, and our own listener's peers, are not a stranger's claim.
        PeerSource::Manual | PeerSource::Incoming => usize::MAX,
    }
}

/// What a ban (or a strike) is held against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BanKey {
    /// Every port of an IP (an IPv6 address: its /64).
    Ip(IpAddr),
    /// One address and port: loopback, and the addresses the user gave.
    Endpoint(SocketAddr),
}

/// An IP as bans and the per-IP cap see it: IPv4-mapped IPv6 as IPv4, other IPv6
/// addresses cut to their /64 (one host's share of a network).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Why an address was not taken into the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefused {
    /// It is banned.
    #[error("the address is banned")]
    Banned,
    /// It is where we listen.
    #[error("the address is our own")]
    OurOwn,
    /// The book holds [`MAX_KNOWN`] addresses, none of them worth less than a new one.
    #[error("the address book is full ({MAX_KNOWN} addresses)")]
    Full,
    /// Not a dialable address (port 0, or an unspecified or multicast IP).
    #[error("not a dialable address")]
    Unusable,
}

/// A connection refused by the per-IP cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{ip} already has {MAX_CONNECTIONS_PER_IP} connections")]
pub struct TooManyFromIp {
    /// The IP (as [`ip_key`] sees it).
    pub ip: IpAddr,
}

/// A slot of the per-IP count, held by one dial, handshake or connection and given back
/// with [`AddressBook::release_slot`]. `None` inside: an address the cap does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a slot must be given back with release_slot"]
pub struct IpSlot(Option<IpAddr>);

impl IpSlot {
    /// A slot the cap does not count (nothing to give back).
    pub const UNCOUNTED: IpSlot = IpSlot(None);
}

/// What became of the addresses of one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    /// New addresses, now queued to dial.
    pub added: usize,
    /// Addresses left out past the message's cap.
    pub over_cap: usize,
    /// Addresses refused (banned, ours, unusable, or the book full of better ones).
    pub refused: usize,
}

/// What happens next with an address whose dial failed or whose connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It is dialed again after this long.
    After(Duration),
    /// It failed [`GIVE_UP_AFTER`] times in a row: never again.
    GaveUp,
    /// It is banned (or no longer in the book): never again.
    Never,
}

/// The pause after the `failures`-th failure in a row.
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    RETRY_BASE.saturating_mul(1 << doublings).min(RETRY_MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the dial queue.
    Queued,
    /// Waiting for its retry time.
    Waiting(Instant),
    /// Being dialed, or connected.
    Busy,
    /// Failed [`GIVE_UP_AFTER`] times in a row.
    GaveUp,
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    /// Failures in a row (dials, and connections that ended too soon).
    failures: u32,
    /// Some connection to it ever got through the handshake.
    ever_connected: bool,
    /// When it was learned (a counter), so the oldest goes first among equals.
    learned: u64,
}

impl Entry {
    /// How readily it is evicted: the larger, the sooner. `None`: never (busy, or not
    /// worse than a new address).
    fn eviction_rank(&self) -> Option<(bool, u32, bool, Reverse<u64>)> {
        if self.state == State::Busy || (self.failures == 0 && self.state != State::GaveUp) {
            return None;
        }
        Some((
            self.state == State::GaveUp,
            self.failures,
            !self.ever_connected,
            Reverse(self.learned),
        ))
    }
}

/// A bounded set of keys that forgets its oldest first, with a value per key.
#[derive(Debug, Clone)]
struct OldestFirst<V> {
    map: HashMap<BanKey, V>,
    order: VecDeque<BanKey>,
    cap: usize,
}

impl<V> OldestFirst<V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// The value for `key`, made with `make` (and the oldest key forgotten if full).
    fn entry(&mut self, key: BanKey, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(&key) {
            while self.map.len() >= self.cap {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(key);
            // Keys removed out of order leave stale places behind; keep them bounded.
            if self.order.len() > 2 * self.cap {
                let map = &self.map;
                let mut seen = HashSet::new();
                self.order
                    .retain(|k| (map.contains_key(k) || *k == key) && seen.insert(*k));
            }
        }
        self.map.entry(key).or_insert_with(make)
    }

    fn remove(&mut self, key: &BanKey) {
        self.map.remove(key);
    }

    fn contains(&self, key: &BanKey) -> bool {
        self.map.contains_key(key)
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct AddressBook {
    /// Every known address to dial, and what we know of it.
    entries: HashMap<SocketAddr, Entry>,
    /// Addresses to dial, in order. May hold stale places (an address no longer
    /// `Queued`), skipped when popped and dropped when the queue grows past twice
    /// [`MAX_KNOWN`].
    queue: VecDeque<SocketAddr>,
    /// Addresses waiting for a retry, soonest first; stale places are skipped likewise.
    retries: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    /// The user's addresses (`--peer`): banned by address and port, never evicted, not
    /// counted per IP.
    allowed: HashSet<SocketAddr>,
    /// Where we listen, never dialed.
    own: Option<SocketAddr>,
    banned: OldestFirst<()>,
    strikes: OldestFirst<u32>,
    /// Dials, handshakes and connections per IP, for [`MAX_CONNECTIONS_PER_IP`].
    per_ip: HashMap<IpAddr, usize>,
    /// Learned-order counter.
    learned: u64,
    /// Failures counted so far, and the count when an eviction last found nothing to
    /// evict: until another failure, nothing can have become evictable, so a full book
    /// refuses new addresses without scanning again.
    failures_seen: u64,
    nothing_to_evict_at: Option<u64>,
    cap: usize,
}

impl Default for AddressBook {
    fn default() -> Self {
        Self::new()
    }
}

impl AddressBook {
    /// An empty book with the limits of the module documentation.
    pub fn new() -> Self {
        Self::with_capacity(MAX_KNOWN)
    }

    /// An empty book holding at most `cap` addresses (tests use small ones).
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            queue: VecDeque::new(),
            retries: BinaryHeap::new(),
            allowed: HashSet::new(),
            own: None,
            banned: OldestFirst::new(MAX_BANNED),
            strikes: OldestFirst::new(MAX_STRUCK),
            per_ip: HashMap::new(),
            learned: 0,
            failures_seen: 0,
            nothing_to_evict_at: None,
            cap: cap.max(1),
        }
    }

    /// Sets where we listen: never dialed.
    pub fn set_own(&mut self, addr: SocketAddr) {
        self.own = Some(addr);
    }

    /// An address the user gave: queued to dial, never evicted, banned by address and
    /// port only, and not counted per IP. Not limited by the book's size.
    pub fn allow(&mut self, addr: SocketAddr) -> Result<bool, AddressRefused> {
        self.allowed.insert(addr);
        self.insert(addr, true)
    }

    /// Whether the user gave this address.
    pub fn is_allowed(&self, addr: &SocketAddr) -> bool {
        self.allowed.contains(addr)
    }

    /// Takes at most [`per_message_cap`] addresses of one message from `source`.
    pub fn take_found(&mut self, peers: &[SocketAddr], source: &PeerSource) -> Taken {
        let cap = per_message_cap(source);
        let mut taken = Taken {
            over_cap: peers.len().saturating_sub(cap),
            ..Taken::default()
        };
        for addr in peers.iter().take(cap) {
            match self.add(*addr) {
                Ok(true) => taken.added += 1,
                Ok(false) => {}
                Err(_) => taken.refused += 1,
            }
        }
        taken
    }

    /// Learns one address. `Ok(true)`: new and queued; `Ok(false)`: already known.
    pub fn add(&mut self, addr: SocketAddr) -> Result<bool, AddressRefused> {
        self.insert(addr, true)
    }

    /// Learns `addr`, queued to dial or (`queue` false) for the caller to place.
    fn insert(&mut self, addr: SocketAddr, queue: bool) -> Result<bool, AddressRefused> {
        if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
            return Err(AddressRefused::Unusable);
        }
        if self.own == Some(addr) {
            return Err(AddressRefused::OurOwn);
        }
        if self.is_banned(&addr) {
            return Err(AddressRefused::Banned);
        }
        if self.entries.contains_key(&addr) {
            return Ok(false);
        }
        if self.entries.len() >= self.cap && !self.allowed.contains(&addr) && !self.evict() {
            return Err(AddressRefused::Full);
        }
        self.learned += 1;
        self.entries.insert(
            addr,
            Entry {
                state: if queue { State::Queued } else { State::Busy },
                failures: 0,
                ever_connected: false,
                learned: self.learned,
            },
        );
        if queue {
            self.push_queue(addr);
        }
        Ok(true)
    }

    /// Makes room for one address: drops the least useful tenth of the evictable
    /// entries at once (at least one), so a stream of new addresses costs one scan per
    /// many of them. Returns false when nothing may be evicted.
    fn evict(&mut self) -> bool {
        if self.nothing_to_evict_at == Some(self.failures_seen) {
            return false;
        }
        let mut ranked: Vec<_> = self
            .entries
            .iter()
            .filter(|(a, _)| !self.allowed.contains(a))
            .filter_map(|(a, e)| e.eviction_rank().map(|r| (r, *a)))
            .collect();
        if ranked.is_empty() {
            self.nothing_to_evict_at = Some(self.failures_seen);
            return false;
        }
        let n = (self.cap / 10).clamp(1, ranked.len());
        ranked.select_nth_unstable_by(n - 1, |a, b| b.0.cmp(&a.0));
        for (_, addr) in ranked.into_iter().take(n) {
            self.entries.remove(&addr);
        }
        true
    }

    fn push_queue(&mut self, addr: SocketAddr) {
        self.queue.push_back(addr);
        if self.queue.len() > 2 * self.cap + self.allowed.len() {
            let entries = &self.entries;
            let mut seen = HashSet::new();
            self.queue.retain(|a| {
                entries.get(a).is_some_and(|e| e.state == State::Queued) && seen.insert(*a)
            });
        }
    }

    fn push_retry(&mut self, at: Instant, addr: SocketAddr) {
        self.retries.push(Reverse((at, addr)));
        if self.retries.len() > 2 * self.cap + self.allowed.len() {
            let entries = &self.entries;
            self.retries.retain(|Reverse((at, a))| {
                entries
                    .get(a)
                    .is_some_and(|e| e.state == State::Waiting(*at))
            });
        }
    }

    /// Moves addresses whose retry time has come into the dial queue.
    fn release_due(&mut self, now: Instant) {
        while let Some(Reverse((at, addr))) = self.retries.peek().copied() {
            if at > now {
                break;
            }
            self.retries.pop();
            let due = self
                .entries
                .get_mut(&addr)
                .filter(|e| e.state == State::Waiting(at));
            if let Some(entry) = due {
                entry.state = State::Queued;
                self.push_queue(addr);
            }
        }
    }

    /// The next address to dial, now marked busy; banned ones met on the way are dropped.
    pub fn next_to_dial(&mut self, now: Instant) -> Option<SocketAddr> {
        self.release_due(now);
        while let Some(addr) = self.queue.pop_front() {
            if !self
                .entries
                .get(&addr)
                .is_some_and(|e| e.state == State::Queued)
            {
                continue;
            }
            if self.is_banned(&addr) {
                self.entries.remove(&addr);
                continue;
            }
            if let Some(e) = self.entries.get_mut(&addr) {
                e.state = State::Busy;
            }
            return Some(addr);
        }
        None
    }

    /// Puts an address [`next_to_dial`](Self::next_to_dial) gave back at the front of the
    /// queue, undialed (no connection could be had for it just now).
    pub fn undial(&mut self, addr: SocketAddr) {
        if let Some(e) = self.entries.get_mut(&addr) {
            if e.state == State::Busy {
                e.state = State::Queued;
                self.queue.push_front(addr);
            }
        }
    }

    /// Puts an address back to wait `delay` before its next dial, without counting a
    /// failure (its IP had no free slot, say).
    pub fn postpone(&mut self, addr: SocketAddr, delay: Duration, now: Instant) {
        if let Some(e) = self.entries.get_mut(&addr) {
            let at = now + delay;
            e.state = State::Waiting(at);
            self.push_retry(at, addr);
        }
    }

    /// A dial to `addr` failed (or its peer was refused before it joined).
    pub fn dial_failed(&mut self, addr: SocketAddr, now: Instant) -> Retry {
        self.failed(addr, now)
    }

    /// Marks `addr` connected (a dial that got through, or an incoming peer's listen
    /// address): not dialed while connected.
    pub fn connected(&mut self, addr: SocketAddr) {
        if let Some(e) = self.entries.get_mut(&addr) {
            e.state = State::Busy;
            e.ever_connected = true;
        }
    }

    /// A connection to (or from) the peer listening at `addr` ended after `lasted`. A
    /// useful one clears the address's failures; a short one counts as a failure. The
    /// address is learned if it was not known (an incoming peer's listen address).
    pub fn disconnected(&mut self, addr: SocketAddr, lasted: Duration, now: Instant) -> Retry {
        if !self.entries.contains_key(&addr) {
            match self.insert(addr, false) {
                Ok(_) => {}
                Err(_) => return Retry::Never,
            }
        }
        let Some(e) = self.entries.get_mut(&addr) else {
            return Retry::Never;
        };
        e.ever_connected = true;
        if lasted >= USEFUL_CONNECTION {
            e.failures = 0;
            let at = now + RETRY_BASE;
            e.state = State::Waiting(at);
            self.push_retry(at, addr);
            return Retry::After(RETRY_BASE);
        }
        self.failed(addr, now)
    }

    fn failed(&mut self, addr: SocketAddr, now: Instant) -> Retry {
        if self.is_banned(&addr) {
            self.entries.remove(&addr);
            return Retry::Never;
        }
        let Some(e) = self.entries.get_mut(&addr) else {
            return Retry::Never;
        };
        self.failures_seen += 1;
        e.failures = e.failures.saturating_add(1);
        if e.failures >= GIVE_UP_AFTER {
            e.state = State::GaveUp;
            return Retry::GaveUp;
        }
        let delay = retry_delay(e.failures);
        let at = now + delay;
        e.state = State::Waiting(at);
        self.push_retry(at, addr);
        Retry::After(delay)
    }

    /// What a ban or strike of `addr` is held against (see the module documentation).
    pub fn ban_key(&self, addr: &SocketAddr) -> BanKey {
        if addr.ip().to_canonical().is_loopback() || self.allowed.contains(addr) {
            BanKey::Endpoint(*addr)
        } else {
            BanKey::Ip(ip_key(addr.ip()))
        }
    }

    /// Whether `addr` is banned (by its IP, or itself).
    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        let key = self.ban_key(addr);
        self.banned.contains(&key)
            || (matches!(key, BanKey::Ip(_)) && self.banned.contains(&BanKey::Endpoint(*addr)))
    }

    /// Bans `addr` by its [`ban_key`](Self::ban_key). True if it was not banned before.
    pub fn ban(&mut self, addr: SocketAddr) -> bool {
        let key = self.ban_key(&addr);
        self.ban_key_now(key, addr)
    }

    /// Bans this address and port only, whatever its IP (a connection to ourselves: other
    /// peers may share our public address).
    pub fn ban_endpoint(&mut self, addr: SocketAddr) -> bool {
        self.ban_key_now(BanKey::Endpoint(addr), addr)
    }

    fn ban_key_now(&mut self, key: BanKey, addr: SocketAddr) -> bool {
        let new = !self.banned.contains(&key);
        self.banned.entry(key, || ());
        self.strikes.remove(&key);
        self.entries.remove(&addr);
        new
    }

    /// Counts a bad-data strike against `addr`; returns its strikes so far.
    pub fn strike(&mut self, addr: SocketAddr) -> u32 {
        let key = self.ban_key(&addr);
        let strikes = self.strikes.entry(key, || 0);
        *strikes = strikes.saturating_add(1);
        *strikes
    }

    /// Bans held now.
    pub fn banned_count(&self) -> usize {
        self.banned.len()
    }

    /// Addresses known now.
    pub fn known_count(&self) -> usize {
        self.entries.len()
    }

    /// Every known address that is not banned, dialed or connected ones first.
    pub fn known(&self) -> Vec<SocketAddr> {
        let mut list: Vec<(bool, u64, SocketAddr)> = self
            .entries
            .iter()
            .filter(|(a, _)| !self.is_banned(a))
            .map(|(a, e)| (e.state != State::Busy, e.learned, *a))
            .collect();
        list.sort_unstable();
        list.into_iter().map(|(_, _, a)| a).collect()
    }

    /// Takes a per-IP slot for a dial, handshake or connection with `addr`; give it back
    /// with [`release_slot`](Self::release_slot) when that ends.
    pub fn take_slot(&mut self, addr: &SocketAddr) -> Result<IpSlot, TooManyFromIp> {
        if addr.ip().to_canonical().is_loopback() || self.allowed.contains(addr) {
            return Ok(IpSlot(None));
        }
        let ip = ip_key(addr.ip());
        let count = self.per_ip.entry(ip).or_insert(0);
        if *count >= MAX_CONNECTIONS_PER_IP {
            return Err(TooManyFromIp { ip });
        }
        *count += 1;
        Ok(IpSlot(Some(ip)))
    }

    /// Gives back a slot of [`take_slot`](Self::take_slot).
    pub fn release_slot(&mut self, slot: IpSlot) {
        if let Some(ip) = slot.0 {
            if let Some(count) = self.per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }

    /// The sizes of the book's parts, for tests of its bounds.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.entries.len(),
            self.queue.len(),
            self.retries.len(),
            self.banned.len(),
            self.strikes.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(a: u8, b: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, a, b], port))
    }

    fn lo(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_banned_ip_cannot_come_back_from_another_port() {
        let mut book = AddressBook::new();
        assert!(book.ban(v4(1, 1, 6881)));
        assert!(book.is_banned(&v4(1, 1, 6882)));
        assert_eq!(book.add(v4(1, 1, 7000)), Err(AddressRefused::Banned));
        assert!(!book.is_banned(&v4(1, 2, 6881)));
        assert_eq!(
            book.ban_key(&v4(1, 1, 1)),
            BanKey::Ip("10.0.1.1".parse().unwrap())
        );
    }

    #[test]
    fn loopback_and_the_users_peers_are_banned_by_address_and_port() {
        let mut book = AddressBook::new();
        book.ban(lo(6881));
        assert!(book.is_banned(&lo(6881)));
        assert!(!book.is_banned(&lo(6882)));
        let mapped = SocketAddr::new("::ffff:127.0.0.1".parse().unwrap(), 7);
        assert_eq!(book.ban_key(&mapped), BanKey::Endpoint(mapped));
        let user = v4(2, 2, 6881);
        book.allow(user).unwrap();
        assert_eq!(book.ban_key(&user), BanKey::Endpoint(user));
        book.ban(user);
        assert!(book.is_banned(&user));
        assert!(!book.is_banned(&v4(2, 2, 6882)));
    }

    #[test]
    fn ipv6_is_banned_by_its_64_and_mapped_ipv4_as_ipv4() {
        let mut book = AddressBook::new();
        let a: SocketAddr = "[2001:db8:1:2::1]:6881".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:ffff::9]:1234".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:6881".parse().unwrap();
        book.ban(a);
        assert!(book.is_banned(&b));
        assert!(!book.is_banned(&c));
        book.ban(v4(3, 3, 1));
        let mapped: SocketAddr = "[::ffff:10.0.3.3]:99".parse().unwrap();
        assert!(book.is_banned(&mapped));
    }

    #[test]
    fn one_message_gives_at_most_its_cap() {
        let mut book = AddressBook::new();
        let many: Vec<SocketAddr> = (0..350_000u32)
            .map(|i| SocketAddr::from((i.to_be_bytes(), 6881)))
            .filter(|a| !a.ip().is_unspecified())
            .collect();
        let t = book.take_found(&many, &PeerSource::Tracker("udp://t".into()));
        assert_eq!(t.added, MAX_PEERS_PER_TRACKER_REPLY);
        assert_eq!(t.over_cap, many.len() - MAX_PEERS_PER_TRACKER_REPLY);
        let t = book.take_found(&many[1000..], &PeerSource::Dht);
        assert_eq!(t.added, MAX_PEERS_PER_DHT_ANSWER);
        let t = book.take_found(&many[2000..], &PeerSource::Pex);
        assert_eq!(t.added, MAX_PEERS_PER_PEX_MESSAGE);
    }

    #[test]
    fn the_book_is_bounded_and_never_drops_an_untried_address_for_a_new_one() {
        let mut book = AddressBook::with_capacity(10);
        let now = Instant::now();
        for i in 0..10 {
            assert_eq!(book.add(v4(0, i, 1)), Ok(true));
        }
        assert_eq!(book.add(v4(0, 99, 1)), Err(AddressRefused::Full));
        // One fails: it is worth less than a new address and makes room.
        let first = book.next_to_dial(now).unwrap();
        assert!(matches!(book.dial_failed(first, now), Retry::After(_)));
        assert_eq!(book.add(v4(0, 99, 1)), Ok(true));
        assert_eq!(book.known_count(), 10);
        assert!(!book.known().contains(&first));
    }

    #[test]
    fn the_most_failed_go_first_and_busy_or_user_addresses_never() {
        let mut book = AddressBook::with_capacity(4);
        let now = Instant::now();
        let user = v4(9, 9, 9);
        book.allow(user).unwrap();
        for i in 0..3 {
            book.add(v4(0, i, 1)).unwrap();
        }
        // The user's address is dialed first and fails; 0.0 is busy; 0.1 fails twice;
        // 0.2 fails once.
        let mut dialed = Vec::new();
        while let Some(a) = book.next_to_dial(now) {
            dialed.push(a);
        }
        assert_eq!(dialed.len(), 4);
        book.dial_failed(user, now);
        book.dial_failed(user, now);
        book.dial_failed(user, now);
        book.dial_failed(v4(0, 1, 1), now);
        book.dial_failed(v4(0, 1, 1), now);
        book.dial_failed(v4(0, 2, 1), now);
        book.add(v4(1, 0, 1)).unwrap();
        let known = book.known();
        assert!(!known.contains(&v4(0, 1, 1)), "{known:?}");
        assert!(known.contains(&user) && known.contains(&v4(0, 0, 1)));
        book.add(v4(1, 1, 1)).unwrap();
        let known = book.known();
        assert!(!known.contains(&v4(0, 2, 1)), "{known:?}");
        // Now only the busy one, the user's and two untried: full.
        assert_eq!(book.add(v4(1, 2, 1)), Err(AddressRefused::Full));
    }

    #[test]
    fn failed_dials_back_off_doubling_and_are_given_up() {
        let mut book = AddressBook::new();
        let a = v4(5, 5, 5);
        book.add(a).unwrap();
        let mut now = Instant::now();
        let mut delays = Vec::new();
        loop {
            let dialed = book.next_to_dial(now);
            assert_eq!(dialed, Some(a));
            match book.dial_failed(a, now) {
                Retry::After(d) => {
                    // Not before its time.
                    assert_eq!(book.next_to_dial(now + d - Duration::from_millis(1)), None);
                    delays.push(d.as_secs());
                    now += d;
                }
                Retry::GaveUp => break,
                Retry::Never => panic!("not banned"),
            }
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 600]);
        assert_eq!(book.next_to_dial(now + RETRY_MAX * 10), None);
    }

    #[test]
    fn a_useful_connection_clears_the_failures_and_a_short_one_counts() {
        let mut book = AddressBook::new();
        let a = v4(6, 6, 6);
        book.add(a).unwrap();
        let now = Instant::now();
        book.next_to_dial(now).unwrap();
        book.dial_failed(a, now);
        book.dial_failed(a, now);
        book.connected(a);
        assert_eq!(
            book.disconnected(a, Duration::from_secs(1), now),
            Retry::After(Duration::from_secs(40))
        );
        book.connected(a);
        assert_eq!(
            book.disconnected(a, USEFUL_CONNECTION, now),
            Retry::After(RETRY_BASE)
        );
        // An incoming peer's listen address is learned when it leaves.
        let b = v4(6, 6, 7);
        assert_eq!(
            book.disconnected(b, USEFUL_CONNECTION, now),
            Retry::After(RETRY_BASE)
        );
        assert_eq!(book.next_to_dial(now + RETRY_BASE), Some(a));
        assert_eq!(book.next_to_dial(now + RETRY_BASE), Some(b));
    }

    #[test]
    fn connections_per_ip_are_capped_except_loopback_and_the_users() {
        let mut book = AddressBook::new();
        let mut slots = Vec::new();
        for port in 0..MAX_CONNECTIONS_PER_IP as u16 {
            slots.push(book.take_slot(&v4(7, 7, 100 + port)).unwrap());
        }
        let over = book.take_slot(&v4(7, 7, 200));
        assert_eq!(
            over,
            Err(TooManyFromIp {
                ip: "10.0.7.7".parse().unwrap()
            })
        );
        assert!(book.take_slot(&v4(7, 8, 200)).is_ok());
        for port in 0..100 {
            assert_eq!(book.take_slot(&lo(port)), Ok(IpSlot(None)));
        }
        let user = v4(7, 7, 300);
        book.allow(user).unwrap();
        assert_eq!(book.take_slot(&user), Ok(IpSlot(None)));
        book.release_slot(slots.pop().unwrap());
        assert!(book.take_slot(&v4(7, 7, 200)).is_ok());
    }

    #[test]
    fn bans_outlive_strikes_and_both_are_bounded() {
        let mut book = AddressBook::new();
        for i in 0..(MAX_BANNED as u32 + 10) {
            book.ban(SocketAddr::from((((i + 1) << 8).to_be_bytes(), 1)));
        }
        assert_eq!(book.banned_count(), MAX_BANNED);
        // The oldest ban went first.
        assert!(!book.is_banned(&SocketAddr::from(((1u32 << 8).to_be_bytes(), 1))));
        let last = MAX_BANNED as u32 + 10;
        assert!(book.is_banned(&SocketAddr::from(((last << 8).to_be_bytes(), 1))));
        // A flood of struck addresses costs no ban.
        for i in 0..(3 * MAX_STRUCK as u32) {
            book.strike(SocketAddr::from(((((i + 1) << 12) | 1).to_be_bytes(), 1)));
        }
        assert_eq!(book.banned_count(), MAX_BANNED);
        assert!(book.sizes().4 <= MAX_STRUCK);
        // A strike counts against the IP as bans do.
        assert_eq!(book.strike(v4(8, 8, 1)), 1);
        assert_eq!(book.strike(v4(8, 8, 2)), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, u8),
        Dial,
        Fail(u8, u8),
        Connect(u8, u8),
        Leave(u8, u8, bool),
        Ban(u8, u8),
        Strike(u8, u8),
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let a = || (0u8..8, 0u8..40);
        prop_oneof![
            4 => a().prop_map(|(i, p)| Op::Add(i, p)),
            3 => Just(Op::Dial),
            2 => a().prop_map(|(i, p)| Op::Fail(i, p)),
            1 => a().prop_map(|(i, p)| Op::Connect(i, p)),
            1 => (a(), any::<bool>()).prop_map(|((i, p), u)| Op::Leave(i, p, u)),
            1 => a().prop_map(|(i, p)| Op::Ban(i, p)),
            1 => a().prop_map(|(i, p)| Op::Strike(i, p)),
            1 => (0u16..700).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Whatever strangers do, the book stays within its bounds and never hands out a
        /// banned address or one that is already busy.
        #[test]
        fn the_book_stays_bounded_and_never_dials_the_banned(ops in proptest::collection::vec(op(), 1..400)) {
            let cap = 16;
            let mut book = AddressBook::with_capacity(cap);
            book.allow(lo(1)).unwrap();
            let mut now = Instant::now();
            let mut busy = HashSet::new();
            let addr = |i: u8, p: u8| if i == 0 { lo(u16::from(p) + 2) } else { v4(i, 0, u16::from(p) + 1) };
            for op in ops {
                match op {
                    Op::Add(i, p) => { let _ = book.add(addr(i, p)); }
                    Op::Dial => {
                        if let Some(a) = book.next_to_dial(now) {
                            prop_assert!(!book.is_banned(&a));
                            prop_assert!(busy.insert(a), "{a} handed out twice");
                        }
                    }
                    Op::Fail(i, p) => {
                        if busy.remove(&addr(i, p)) { book.dial_failed(addr(i, p), now); }
                    }
                    Op::Connect(i, p) => {
                        if busy.contains(&addr(i, p)) { book.connected(addr(i, p)); }
                    }
                    Op::Leave(i, p, useful) => {
                        if busy.remove(&addr(i, p)) {
                            let lasted = if useful { USEFUL_CONNECTION } else { Duration::ZERO };
                            book.disconnected(addr(i, p), lasted, now);
                        }
                    }
                    Op::Ban(i, p) => { book.ban(addr(i, p)); }
                    Op::Strike(i, p) => { book.strike(addr(i, p)); }
                    Op::Wait(s) => now += Duration::from_secs(u64::from(s)),
                }
                let (entries, queue, retries, banned, strikes) = book.sizes();
                prop_assert!(entries <= cap + 1, "{entries} entries");
                prop_assert!(queue <= 2 * cap + 2, "{queue} queued");
                prop_assert!(retries <= 2 * cap + 2, "{retries} retries");
                prop_assert!(banned <= MAX_BANNED && strikes <= MAX_STRUCK);
            }
        }
    }
}
