//! Message stream encryption (MSE, also called PE): the handshake that hides a BitTorrent
//! connection behind a Diffie-Hellman key exchange and RC4, as a state machine over bytes.
//!
//! This module owns the handshake's byte format and its checks, for both ends: the
//! [`Initiator`] (who dialed) and the [`Receiver`] (who accepted, possibly for many
//! torrents, found by the SKEY hash through a [`SkeyTable`]). It is sans-IO: a caller feeds
//! it the bytes it read ([`MseHandshake::input`]) and sends what it asks
//! ([`MseHandshake::take_output`]); once done it hands over an [`Established`] with the
//! ciphers of the rest of the stream and the payload bytes it has already read. It must not
//! touch sockets, timers or actors: the engine's `connection` module drives it, and the
//! engine's `transport` module applies the ciphers.
//!
//! The five steps, with A the initiator and B the receiver:
//!
//! 1. A→B: Ya, PadA
//! 2. B→A: Yb, PadB
//! 3. A→B: HASH("req1", S), HASH("req2", SKEY) xor HASH("req3", S),
//!    ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4. B→A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! 5. A→B: ENCRYPT2(payload)
//!
//! Y is a 96-byte public key on the 768-bit prime [`PRIME`] with generator 2, S the shared
//! secret, SKEY the info-hash, VC eight zero bytes. A encrypts with RC4 keyed by
//! HASH("keyA", S, SKEY), B with HASH("keyB", S, SKEY), each dropping its first 1024 bytes
//! of key stream. ENCRYPT2 is RC4 going on if RC4 was selected, plaintext otherwise.
//!
//! Every length a peer controls is bounded: padding at most [`MAX_PAD`] bytes, the
//! synchronisation marks searched for within the padding allowed and no further, so a
//! stranger costs at most a few hundred bytes of buffer and ends in a typed [`MseError`].
//!
//! Crates: RustCrypto's `crypto-bigint` for the modular arithmetic (fixed-size Montgomery
//! numbers, the [`dh`] module says why and how its cost is kept down), `rc4` and `sha1`;
//! no cipher or big-integer multiplication is written here. MSE is obfuscation against
//! traffic shaping, not authenticated secrecy, and its keys live for one connection.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};

use crate::InfoHash;
use dh::KeyPair;

/// The 768-bit prime of the key exchange, big-endian.
pub const PRIME: [u8; DH_KEY_LEN] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
];

/// Length of a public key (Ya, Yb) and of the shared secret: the prime's 96 bytes.
pub const DH_KEY_LEN: usize = 96;

/// Length of a private key: 160 random bits, as every implementation uses.
pub const PRIVATE_KEY_LEN: usize = 20;

/// The most padding any of PadA, PadB, PadC, PadD may hold; a longer PadC or PadD is
/// refused with [`MseError::PaddingTooLong`], and a PadA or PadB longer than this leaves
/// the synchronisation mark past where it is looked for ([`MseError::NoSync`]).
pub const MAX_PAD: usize = 512;

/// The verification constant: eight zero bytes, encrypted, so each side can tell it has
/// the right key.
pub const VC: [u8; 8] = [0; 8];

/// Key stream dropped from the start of each RC4 cipher (its first bytes leak the key).
pub const KEYSTREAM_DISCARD: usize = 1024;

/// `crypto_provide`/`crypto_select` bit of a plaintext stream after the handshake.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;

/// `crypto_provide`/`crypto_select` bit of an RC4 stream after the handshake.
pub const CRYPTO_RC4: u32 = 0x02;

/// Bytes a receiver reads at most before it must have found HASH("req1", S): Ya, the
/// largest PadA and the hash itself.
pub const MAX_BEFORE_REQ1: usize = DH_KEY_LEN + MAX_PAD + 20;

/// Bytes an initiator reads at most, after Yb, before it must have found the encrypted VC:
/// the largest PadB and the VC itself.
pub const MAX_BEFORE_VC: usize = MAX_PAD + VC.len();

/// What one side does about encryption: the `--encryption` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Dial encrypted and fall back to plaintext if the peer does not answer; accept both.
    #[default]
    Prefer,
    /// Dial and accept RC4-encrypted connections only.
    Require,
    /// Never encrypt: dial plaintext and refuse encrypted incoming connections.
    Off,
}

impl Encryption {
    /// Whether outgoing connections start with the encrypted handshake.
    pub fn dials_encrypted(self) -> bool {
        self != Encryption::Off
    }

    /// Whether an incoming plaintext BitTorrent handshake is accepted.
    pub fn accepts_plaintext(self) -> bool {
        self != Encryption::Require
    }

    /// Whether an incoming encrypted handshake is accepted.
    pub fn accepts_encrypted(self) -> bool {
        self != Encryption::Off
    }

    /// The `crypto_provide` of our outgoing handshakes. `prefer` offers RC4 and
    /// plaintext and lets the peer choose, as libtorrent and Transmission do (libtorrent
    /// by default picks plaintext after the obfuscated handshake, sparing both sides the
    /// cipher); `require` offers RC4 alone.
    pub fn provide(self) -> u32 {
        match self {
            Encryption::Require => CRYPTO_RC4,
            _ => CRYPTO_RC4 | CRYPTO_PLAINTEXT,
        }
    }

    /// The methods we select from an incoming `crypto_provide` (with both offered, the
    /// engine selects plaintext: see `Receiver::preferring_plaintext`).
    pub fn accepted_methods(self) -> u32 {
        match self {
            Encryption::Prefer => CRYPTO_RC4 | CRYPTO_PLAINTEXT,
            Encryption::Require => CRYPTO_RC4,
            Encryption::Off => 0,
        }
    }
}

impl FromStr for Encryption {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prefer" => Ok(Encryption::Prefer),
            "require" => Ok(Encryption::Require),
            "off" => Ok(Encryption::Off),
            other => Err(format!(
                "unknown encryption mode {other:?}: use prefer, require or off"
            )),
        }
    }
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
            Encryption::Off => "off",
        })
    }
}

/// Why an encrypted handshake failed. Each variant but [`MseError::Finished`] is the
/// peer's doing (or names a torrent we do not serve): the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    /// The peer's public key is not a usable number: 0, 1, p - 1 or not below p.
    #[error("the peer's public key is out of range")]
    BadPublicKey,
    /// The synchronisation mark (HASH("req1", S) for a receiver, the encrypted VC for an
    /// initiator) was not within the padding allowed: a garbage key, a key of another
    /// exchange, or padding over 512 bytes.
    #[error("no synchronisation mark within {limit} bytes")]
    NoSync {
        /// Bytes searched.
        limit: usize,
    },
    /// The SKEY hash names no torrent we serve.
    #[error("the handshake names no torrent of ours")]
    UnknownTorrent,
    /// The decrypted verification constant was not eight zero bytes.
    #[error("wrong verification constant")]
    BadVerification,
    /// PadC or PadD is longer than [`MAX_PAD`].
    #[error("padding of {len} bytes, over the {MAX_PAD} allowed")]
    PaddingTooLong {
        /// The length the peer sent.
        len: usize,
    },
    /// The peer's `crypto_provide` holds no method we accept.
    #[error("no common crypto method (peer provides {provided:#x}, we accept {accepted:#x})")]
    NoCommonMethod {
        /// The peer's `crypto_provide`.
        provided: u32,
        /// The methods we accept.
        accepted: u32,
    },
    /// The receiver's `crypto_select` is not exactly one of the methods we provided.
    #[error("crypto_select {selected:#x} is not one of the provided {provided:#x}")]
    BadSelect {
        /// The peer's `crypto_select`.
        selected: u32,
        /// Our `crypto_provide`.
        provided: u32,
    },
    /// Bytes arrived after the handshake failed or finished.
    #[error("the handshake is already over")]
    Finished,
}

/// One direction's RC4 cipher, its first [`KEYSTREAM_DISCARD`] bytes already dropped.
pub struct Keystream(Rc4);

impl Keystream {
    /// The cipher keyed by `key`, past the discarded bytes.
    fn new(key: &[u8; 20]) -> Self {
        // A 20-byte key is within RC4's 1..=256 bytes, so this never fails.
        let mut rc4 = match Rc4::new_from_slice(key) {
            Ok(rc4) => rc4,
            Err(_) => unreachable!("a 20-byte key is a valid RC4 key"),
        };
        let mut discard = [0u8; KEYSTREAM_DISCARD];
        rc4.apply_keystream(&mut discard);
        Keystream(rc4)
    }

    /// Encrypts or decrypts `data` in place (XOR with the next key stream bytes).
    pub fn apply(&mut self, data: &mut [u8]) {
        self.0.apply_keystream(data);
    }
}

impl fmt::Debug for Keystream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keystream(..)")
    }
}

/// The ciphers of an RC4 stream after the handshake.
#[derive(Debug)]
pub struct Rc4Pair {
    /// Applied to every byte we send.
    pub encrypt: Keystream,
    /// Applied to every byte we receive.
    pub decrypt: Keystream,
}

/// A finished handshake: what the rest of the connection needs.
#[derive(Debug)]
pub struct Established {
    /// The torrent the handshake was for (the SKEY).
    pub info_hash: InfoHash,
    /// The method selected, [`CRYPTO_RC4`] or [`CRYPTO_PLAINTEXT`].
    pub method: u32,
    /// The ciphers when the method is RC4; `None` when the stream goes on in plaintext.
    pub cipher: Option<Rc4Pair>,
    /// Payload bytes already received, decrypted: for a receiver the initial payload (IA)
    /// and whatever followed it, for an initiator whatever followed PadD. The stream reads
    /// these first.
    pub received: Vec<u8>,
}

/// Either end of the handshake, as its driver sees it.
pub trait MseHandshake {
    /// Takes bytes read from the peer; `Ok(Some(..))` once the handshake is done (send
    /// [`MseHandshake::take_output`] first), `Ok(None)` when more are needed.
    fn input(&mut self, data: &[u8]) -> Result<Option<Established>, MseError>;

    /// The bytes to send now (empty when there is nothing).
    fn take_output(&mut self) -> Vec<u8>;
}

/// The torrents a receiver can be reached for, by HASH("req2", info-hash).
#[derive(Debug, Clone, Default)]
pub struct SkeyTable(HashMap<[u8; 20], InfoHash>);

impl SkeyTable {
    /// A table of one torrent.
    pub fn single(info_hash: InfoHash) -> Self {
        let mut table = SkeyTable::default();
        table.insert(info_hash);
        table
    }

    /// Adds a torrent.
    pub fn insert(&mut self, info_hash: InfoHash) {
        self.0.insert(hash(&[b"req2", &info_hash.0]), info_hash);
    }

    /// Removes a torrent.
    pub fn remove(&mut self, info_hash: &InfoHash) {
        self.0.remove(&hash(&[b"req2", &info_hash.0]));
    }

    /// The torrent whose HASH("req2", info-hash) is `req2`.
    fn find(&self, req2: &[u8; 20]) -> Option<InfoHash> {
        self.0.get(req2).copied()
    }
}

/// SHA-1 of the concatenated `parts`.
fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut sha = Sha1::new();
    for part in parts {
        sha.update(part);
    }
    sha.finalize().into()
}

/// Random padding of 0..=[`MAX_PAD`] bytes.
fn random_pad(rng: &mut impl Rng) -> Vec<u8> {
    let mut pad = vec![0u8; rng.random_range(0..=MAX_PAD)];
    rng.fill(&mut pad[..]);
    pad
}

/// The two ciphers of a connection: (A's, B's).
fn ciphers(secret: &[u8; DH_KEY_LEN], skey: &InfoHash) -> (Keystream, Keystream) {
    (
        Keystream::new(&direction_key(b"keyA", secret, skey)),
        Keystream::new(&direction_key(b"keyB", secret, skey)),
    )
}

/// HASH(`which`, S, SKEY), the key of one direction.
fn direction_key(which: &[u8; 4], secret: &[u8; DH_KEY_LEN], skey: &InfoHash) -> [u8; 20] {
    hash(&[which, secret, &skey.0])
}

/// A big-endian u16 at the start of `b`.
fn be16(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}

/// A big-endian u32 at the start of `b`.
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A padding length (len(PadC) or len(PadD)) at the start of `b`, at most [`MAX_PAD`].
fn pad_len(b: &[u8]) -> Result<usize, MseError> {
    match be16(b) {
        len if len > MAX_PAD => Err(MseError::PaddingTooLong { len }),
        len => Ok(len),
    }
}

/// What one state of a handshake made of the buffered bytes; the state it leaves the side
/// in is in the side's `state`.
// `Done` is as large as the `Option<Established>` it becomes; boxing it would allocate.
#[allow(clippy::large_enum_variant)]
enum Progress {
    /// It is over: go on from the next state.
    Next,
    /// It needs more bytes: wait in this state.
    Wait,
    /// The handshake is done.
    Done(Established),
}

/// One side of the handshake as a state machine over its buffered bytes: one method per
/// state, each reading the bytes of one part of the protocol.
trait Steps {
    /// Whether the bytes the current state reads at once are buffered.
    fn ready(&self) -> bool;

    /// Runs the current state on the buffered bytes. It takes the state out, so a state
    /// that fails leaves the side over.
    fn advance(&mut self) -> Result<Progress, MseError>;

    /// Advances as far as the buffered bytes allow.
    fn step(&mut self) -> Result<Option<Established>, MseError> {
        loop {
            if !self.ready() {
                return Ok(None);
            }
            match self.advance()? {
                Progress::Next => {}
                Progress::Wait => return Ok(None),
                Progress::Done(established) => return Ok(Some(established)),
            }
        }
    }
}

/// Where the initiator is.
enum InitiatorState {
    /// Waiting for Yb.
    AwaitKey,
    /// Looking for the encrypted VC after Yb.
    AwaitVc {
        ciphers: Rc4Pair,
        /// VC as the receiver's cipher encrypts it.
        mark: [u8; 8],
    },
    /// Waiting for crypto_select and len(PadD).
    AwaitSelect { ciphers: Rc4Pair },
    /// Waiting for PadD.
    AwaitPadD {
        ciphers: Rc4Pair,
        method: u32,
        len: usize,
    },
    /// Done or failed.
    Over,
}

/// crypto_select and len(PadD), read at once.
const SELECT_LEN: usize = 4 + 2;

impl InitiatorState {
    /// Bytes the state reads at once, so must have buffered before it runs (none for
    /// the search for VC).
    fn wanted(&self) -> usize {
        match self {
            InitiatorState::AwaitKey => DH_KEY_LEN,
            InitiatorState::AwaitSelect { .. } => SELECT_LEN,
            InitiatorState::AwaitPadD { len, .. } => *len,
            InitiatorState::AwaitVc { .. } | InitiatorState::Over => 0,
        }
    }
}

/// The side that dialed. See the module documentation.
pub struct Initiator {
    keys: KeyPair,
    skey: InfoHash,
    /// Our `crypto_provide`.
    provide: u32,
    /// The initial payload sent in step 3 (our BitTorrent handshake).
    initial_payload: Vec<u8>,
    /// Our PadC.
    pad_c: Vec<u8>,
    state: InitiatorState,
    /// Received bytes not yet consumed.
    buf: Vec<u8>,
    /// Bytes to send.
    out: Vec<u8>,
}

impl Initiator {
    /// Starts a handshake for `skey` offering `provide`, with `initial_payload` (at most
    /// 65,535 bytes; longer is cut) to send with step 3. Step 1 is ready to send.
    pub fn new(skey: InfoHash, provide: u32, initial_payload: &[u8], rng: &mut impl Rng) -> Self {
        let keys = KeyPair::new(rng);
        let mut out = keys.public.to_vec();
        out.extend_from_slice(&random_pad(rng));
        let pad_c = vec![0u8; rng.random_range(0..=MAX_PAD)];
        let initial_payload =
            initial_payload[..initial_payload.len().min(usize::from(u16::MAX))].to_vec();
        Initiator {
            keys,
            skey,
            provide,
            initial_payload,
            pad_c,
            state: InitiatorState::AwaitKey,
            buf: Vec::new(),
            out,
        }
    }

    /// Step 2 read: takes Yb, and sends step 3 under the ciphers it yields.
    fn read_key(&mut self) -> Result<Progress, MseError> {
        let secret = self.keys.shared_secret(&self.buf[..DH_KEY_LEN])?;
        self.buf.drain(..DH_KEY_LEN);
        let (mut encrypt, decrypt) = ciphers(&secret, &self.skey);
        // The VC as B's cipher encrypts it: a second copy of that cipher, as
        // RC4 state is not cloned.
        let mut mark = VC;
        Keystream::new(&direction_key(b"keyB", &secret, &self.skey)).apply(&mut mark);
        self.send_request(&secret, &mut encrypt);
        let ciphers = Rc4Pair { encrypt, decrypt };
        self.state = InitiatorState::AwaitVc { ciphers, mark };
        Ok(Progress::Next)
    }

    /// Step 3: the two hashes, then VC, crypto_provide, PadC and IA under `encrypt`.
    fn send_request(&mut self, secret: &[u8; DH_KEY_LEN], encrypt: &mut Keystream) {
        self.out.extend_from_slice(&hash(&[b"req1", secret]));
        let req2 = hash(&[b"req2", &self.skey.0]);
        let req3 = hash(&[b"req3", secret]);
        self.out.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
        let mut plain = VC.to_vec();
        plain.extend_from_slice(&self.provide.to_be_bytes());
        plain.extend_from_slice(&(self.pad_c.len() as u16).to_be_bytes());
        plain.extend_from_slice(&self.pad_c);
        plain.extend_from_slice(&(self.initial_payload.len() as u16).to_be_bytes());
        plain.extend_from_slice(&self.initial_payload);
        encrypt.apply(&mut plain);
        self.out.extend_from_slice(&plain);
    }

    /// Step 4's start: looks for the encrypted VC past PadB, within [`MAX_BEFORE_VC`].
    fn find_vc(&mut self, mut ciphers: Rc4Pair, mark: [u8; 8]) -> Result<Progress, MseError> {
        match self.buf.windows(VC.len()).position(|w| w == mark) {
            Some(at) if at + VC.len() <= MAX_BEFORE_VC => {
                let mut vc = VC;
                ciphers.decrypt.apply(&mut vc);
                self.buf.drain(..at + VC.len());
                self.state = InitiatorState::AwaitSelect { ciphers };
                Ok(Progress::Next)
            }
            _ if self.buf.len() >= MAX_BEFORE_VC => Err(MseError::NoSync {
                limit: MAX_BEFORE_VC,
            }),
            _ => {
                self.state = InitiatorState::AwaitVc { ciphers, mark };
                Ok(Progress::Wait)
            }
        }
    }

    /// Step 4: crypto_select, which must be one method we provided, and len(PadD).
    fn read_select(&mut self, mut ciphers: Rc4Pair) -> Result<Progress, MseError> {
        let mut head = [0u8; SELECT_LEN];
        head.copy_from_slice(&self.buf[..SELECT_LEN]);
        self.buf.drain(..SELECT_LEN);
        ciphers.decrypt.apply(&mut head);
        let method = be32(&head);
        if method.count_ones() != 1 || method & self.provide == 0 {
            return Err(MseError::BadSelect {
                selected: method,
                provided: self.provide,
            });
        }
        let len = pad_len(&head[4..])?;
        self.state = InitiatorState::AwaitPadD {
            ciphers,
            method,
            len,
        };
        Ok(Progress::Next)
    }

    /// Step 4's end: skips PadD; what follows is payload, under the selected method.
    fn read_pad_d(
        &mut self,
        mut ciphers: Rc4Pair,
        method: u32,
        len: usize,
    ) -> Result<Progress, MseError> {
        let mut pad: Vec<u8> = self.buf.drain(..len).collect();
        ciphers.decrypt.apply(&mut pad);
        let mut received = std::mem::take(&mut self.buf);
        let cipher = if method == CRYPTO_RC4 {
            ciphers.decrypt.apply(&mut received);
            Some(ciphers)
        } else {
            None
        };
        Ok(Progress::Done(Established {
            info_hash: self.skey,
            method,
            cipher,
            received,
        }))
    }
}

impl Steps for Initiator {
    fn advance(&mut self) -> Result<Progress, MseError> {
        match std::mem::replace(&mut self.state, InitiatorState::Over) {
            InitiatorState::Over => Err(MseError::Finished),
            InitiatorState::AwaitKey => self.read_key(),
            InitiatorState::AwaitVc { ciphers, mark } => self.find_vc(ciphers, mark),
            InitiatorState::AwaitSelect { ciphers } => self.read_select(ciphers),
            InitiatorState::AwaitPadD {
                ciphers,
                method,
                len,
            } => self.read_pad_d(ciphers, method, len),
        }
    }

    fn ready(&self) -> bool {
        self.buf.len() >= self.state.wanted()
    }
}

impl MseHandshake for Initiator {
    fn input(&mut self, data: &[u8]) -> Result<Option<Established>, MseError> {
        self.buf.extend_from_slice(data);
        self.step()
    }

    fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// Where the receiver is.
enum ReceiverState {
    /// Waiting for Ya.
    AwaitKey,
    /// Looking for HASH("req1", S).
    AwaitReq1 {
        secret: Box<[u8; DH_KEY_LEN]>,
        /// Bytes of PadA read so far, to bound the search.
        scanned: usize,
    },
    /// Waiting for HASH("req2", SKEY) xor HASH("req3", S).
    AwaitSkey { secret: Box<[u8; DH_KEY_LEN]> },
    /// Waiting for VC, crypto_provide and len(PadC).
    AwaitProvide { skey: InfoHash, ciphers: Rc4Pair },
    /// Waiting for PadC and len(IA).
    AwaitPadC { agreed: Agreed, len: usize },
    /// Waiting for IA.
    AwaitPayload { agreed: Agreed, len: usize },
    /// Done or failed.
    Over,
}

/// What a receiver has agreed on by the end of crypto_provide.
struct Agreed {
    skey: InfoHash,
    ciphers: Rc4Pair,
    /// The method selected.
    method: u32,
}

/// VC, crypto_provide and len(PadC), read at once.
const PROVIDE_LEN: usize = VC.len() + 4 + 2;

impl ReceiverState {
    /// Bytes the state reads at once, so must have buffered before it runs (none for
    /// the search for HASH("req1", S)).
    fn wanted(&self) -> usize {
        match self {
            ReceiverState::AwaitKey => DH_KEY_LEN,
            ReceiverState::AwaitSkey { .. } => 20,
            ReceiverState::AwaitProvide { .. } => PROVIDE_LEN,
            // PadC and len(IA).
            ReceiverState::AwaitPadC { len, .. } => len + 2,
            ReceiverState::AwaitPayload { len, .. } => *len,
            ReceiverState::AwaitReq1 { .. } | ReceiverState::Over => 0,
        }
    }
}

/// The side that accepted. See the module documentation.
pub struct Receiver<'t> {
    keys: KeyPair,
    /// The torrents it may be for.
    skeys: &'t SkeyTable,
    /// The methods we select from.
    accepted: u32,
    /// Select plaintext when the peer provides it too (RC4 otherwise comes first).
    plaintext_first: bool,
    /// Our PadB and PadD, drawn at the start.
    pad_b: Vec<u8>,
    pad_d: Vec<u8>,
    state: ReceiverState,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl<'t> Receiver<'t> {
    /// Waits for a handshake for one of the torrents of `skeys`, selecting RC4 if the peer
    /// provides it and `accepted` holds it, else plaintext on the same terms.
    pub fn new(skeys: &'t SkeyTable, accepted: u32, rng: &mut impl Rng) -> Self {
        Receiver {
            keys: KeyPair::new(rng),
            skeys,
            accepted,
            plaintext_first: false,
            pad_b: random_pad(rng),
            pad_d: vec![0u8; rng.random_range(0..=MAX_PAD)],
            state: ReceiverState::AwaitKey,
            buf: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Selects plaintext over RC4 when the peer provides both, as libtorrent does by
    /// default: the handshake stays hidden and neither side pays for the cipher.
    pub fn preferring_plaintext(mut self) -> Self {
        self.plaintext_first = true;
        self
    }

    /// The method to select from the peer's `provided`, if any.
    fn select(&self, provided: u32) -> Option<u32> {
        let common = provided & self.accepted;
        let order = if self.plaintext_first {
            [CRYPTO_PLAINTEXT, CRYPTO_RC4]
        } else {
            [CRYPTO_RC4, CRYPTO_PLAINTEXT]
        };
        order.into_iter().find(|m| common & m != 0)
    }

    /// Step 1 read: takes Ya and sends step 2, Yb and PadB.
    fn read_key(&mut self) -> Result<Progress, MseError> {
        let secret = self.keys.shared_secret(&self.buf[..DH_KEY_LEN])?;
        self.buf.drain(..DH_KEY_LEN);
        self.out.extend_from_slice(&self.keys.public);
        self.out.extend_from_slice(&self.pad_b);
        self.state = ReceiverState::AwaitReq1 {
            secret: Box::new(secret),
            scanned: 0,
        };
        Ok(Progress::Next)
    }

    /// Step 3's start: looks for HASH("req1", S) past PadA, within [`MAX_BEFORE_REQ1`],
    /// keeping only the bytes that may begin it.
    fn find_req1(
        &mut self,
        secret: Box<[u8; DH_KEY_LEN]>,
        scanned: usize,
    ) -> Result<Progress, MseError> {
        let req1 = hash(&[b"req1", &secret[..]]);
        let limit = MAX_BEFORE_REQ1 - DH_KEY_LEN;
        match self.buf.windows(20).position(|w| w == req1) {
            Some(at) if scanned + at + 20 <= limit => {
                self.buf.drain(..at + 20);
                self.state = ReceiverState::AwaitSkey { secret };
                Ok(Progress::Next)
            }
            _ if scanned + self.buf.len() >= limit => Err(MseError::NoSync {
                limit: MAX_BEFORE_REQ1,
            }),
            _ => {
                // Keep the last 19 bytes, which may begin the mark; the rest
                // is padding.
                let drop = self.buf.len().saturating_sub(19);
                self.buf.drain(..drop);
                self.state = ReceiverState::AwaitReq1 {
                    secret,
                    scanned: scanned + drop,
                };
                Ok(Progress::Wait)
            }
        }
    }

    /// Step 3: HASH("req2", SKEY) xor HASH("req3", S), which names the torrent and so
    /// the ciphers.
    fn read_skey(&mut self, secret: Box<[u8; DH_KEY_LEN]>) -> Result<Progress, MseError> {
        let req3 = hash(&[b"req3", &secret[..]]);
        let mut req2 = [0u8; 20];
        for (i, b) in req2.iter_mut().enumerate() {
            *b = self.buf[i] ^ req3[i];
        }
        self.buf.drain(..20);
        let skey = self.skeys.find(&req2).ok_or(MseError::UnknownTorrent)?;
        let (decrypt, encrypt) = ciphers(&secret, &skey);
        let ciphers = Rc4Pair { encrypt, decrypt };
        self.state = ReceiverState::AwaitProvide { skey, ciphers };
        Ok(Progress::Next)
    }

    /// Step 3: VC, crypto_provide (from which it selects the method) and len(PadC).
    fn read_provide(&mut self, skey: InfoHash, mut ciphers: Rc4Pair) -> Result<Progress, MseError> {
        let mut head = [0u8; PROVIDE_LEN];
        head.copy_from_slice(&self.buf[..PROVIDE_LEN]);
        self.buf.drain(..PROVIDE_LEN);
        ciphers.decrypt.apply(&mut head);
        if head[..VC.len()] != VC {
            return Err(MseError::BadVerification);
        }
        let provided = be32(&head[8..]);
        let method = self.select(provided).ok_or(MseError::NoCommonMethod {
            provided,
            accepted: self.accepted,
        })?;
        let len = pad_len(&head[12..])?;
        self.state = ReceiverState::AwaitPadC {
            agreed: Agreed {
                skey,
                ciphers,
                method,
            },
            len,
        };
        Ok(Progress::Next)
    }

    /// Step 3: skips PadC and reads len(IA).
    fn read_pad_c(&mut self, mut agreed: Agreed, len: usize) -> Result<Progress, MseError> {
        let mut pad: Vec<u8> = self.buf.drain(..len + 2).collect();
        agreed.ciphers.decrypt.apply(&mut pad);
        let len = be16(&pad[len..]);
        self.state = ReceiverState::AwaitPayload { agreed, len };
        Ok(Progress::Next)
    }

    /// Step 3's end: takes IA and what follows it, and sends step 4.
    fn read_payload(&mut self, agreed: Agreed, len: usize) -> Result<Progress, MseError> {
        let Agreed {
            skey,
            mut ciphers,
            method,
        } = agreed;
        let mut received = std::mem::take(&mut self.buf);
        // IA is always under the handshake's cipher; what follows it is under
        // the selected method.
        ciphers.decrypt.apply(&mut received[..len]);
        self.send_select(method, &mut ciphers.encrypt);
        let cipher = if method == CRYPTO_RC4 {
            ciphers.decrypt.apply(&mut received[len..]);
            Some(ciphers)
        } else {
            None
        };
        Ok(Progress::Done(Established {
            info_hash: skey,
            method,
            cipher,
            received,
        }))
    }

    /// Step 4: VC, crypto_select and PadD under `encrypt`.
    fn send_select(&mut self, method: u32, encrypt: &mut Keystream) {
        let mut reply = VC.to_vec();
        reply.extend_from_slice(&method.to_be_bytes());
        reply.extend_from_slice(&(self.pad_d.len() as u16).to_be_bytes());
        reply.extend_from_slice(&self.pad_d);
        encrypt.apply(&mut reply);
        self.out.extend_from_slice(&reply);
    }
}

impl Steps for Receiver<'_> {
    fn advance(&mut self) -> Result<Progress, MseError> {
        match std::mem::replace(&mut self.state, ReceiverState::Over) {
            ReceiverState::AwaitKey => self.read_key(),
            ReceiverState::AwaitReq1 { secret, scanned } => self.find_req1(secret, scanned),
            ReceiverState::AwaitSkey { secret } => self.read_skey(secret),
            ReceiverState::AwaitProvide { skey, ciphers } => self.read_provide(skey, ciphers),
            ReceiverState::AwaitPadC { agreed, len } => self.read_pad_c(agreed, len),
            ReceiverState::AwaitPayload { agreed, len } => self.read_payload(agreed, len),
            ReceiverState::Over => Err(MseError::Finished),
        }
    }

    fn ready(&self) -> bool {
        self.buf.len() >= self.state.wanted()
    }
}

impl MseHandshake for Receiver<'_> {
    fn input(&mut self, data: &[u8]) -> Result<Option<Established>, MseError> {
        self.buf.extend_from_slice(data);
        self.step()
    }

    fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

mod dh;
#[cfg(test)]
mod tests;
