//! Both ends of the handshake in memory, and each way a stranger can break it.

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

const TORRENT: InfoHash = InfoHash([7; 20]);

/// Moves bytes between the two ends, `chunk` bytes at a time, until both are done.
fn pump(
    initiator: &mut Initiator,
    receiver: &mut Receiver<'_>,
    chunk: usize,
) -> (Result<Established, MseError>, Result<Established, MseError>) {
    let (mut a_done, mut b_done) = (None, None);
    for _ in 0..10_000 {
        let to_b = initiator.take_output();
        for piece in to_b.chunks(chunk) {
            if b_done.is_none() {
                match receiver.input(piece) {
                    Ok(Some(e)) => b_done = Some(Ok(e)),
                    Ok(None) => {}
                    Err(e) => b_done = Some(Err(e)),
                }
            }
        }
        let to_a = receiver.take_output();
        for piece in to_a.chunks(chunk) {
            if a_done.is_none() {
                match initiator.input(piece) {
                    Ok(Some(e)) => a_done = Some(Ok(e)),
                    Ok(None) => {}
                    Err(e) => a_done = Some(Err(e)),
                }
            }
        }
        if a_done.is_some() && b_done.is_some() {
            break;
        }
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
    }
    (
        a_done.unwrap_or(Err(MseError::Finished)),
        b_done.unwrap_or(Err(MseError::Finished)),
    )
}

/// Checks that what one side encrypts the other decrypts.
fn assert_ciphers_match(a: &mut Established, b: &mut Established) {
    let (a, b) = (a.cipher.as_mut().unwrap(), b.cipher.as_mut().unwrap());
    let mut msg = b"\x00\x00\x00\x01\x02 interested".to_vec();
    a.encrypt.apply(&mut msg);
    assert_ne!(&msg[..], b"\x00\x00\x00\x01\x02 interested");
    b.decrypt.apply(&mut msg);
    assert_eq!(&msg[..], b"\x00\x00\x00\x01\x02 interested");
    let mut back = b"reply".to_vec();
    b.encrypt.apply(&mut back);
    a.decrypt.apply(&mut back);
    assert_eq!(&back[..], b"reply");
}

#[test]
fn both_sides_agree_on_rc4_and_the_initial_payload_arrives() {
    for (seed, chunk) in [(1, 4096), (2, 1), (3, 7), (4, 97)] {
        let table = SkeyTable::single(TORRENT);
        let mut a = Initiator::new(TORRENT, CRYPTO_RC4, b"bittorrent handshake", &mut rng(seed));
        let mut b = Receiver::new(&table, CRYPTO_RC4 | CRYPTO_PLAINTEXT, &mut rng(seed + 100));
        let (a_end, b_end) = pump(&mut a, &mut b, chunk);
        let (mut a_end, mut b_end) = (a_end.unwrap(), b_end.unwrap());
        assert_eq!(a_end.method, CRYPTO_RC4);
        assert_eq!(b_end.method, CRYPTO_RC4);
        assert_eq!(b_end.info_hash, TORRENT);
        assert_eq!(b_end.received, b"bittorrent handshake");
        assert!(a_end.received.is_empty());
        assert_ciphers_match(&mut a_end, &mut b_end);
    }
}

#[test]
fn plaintext_is_selected_when_the_initiator_provides_only_plaintext() {
    let table = SkeyTable::single(TORRENT);
    let mut a = Initiator::new(TORRENT, CRYPTO_PLAINTEXT, b"hello", &mut rng(5));
    let mut b = Receiver::new(&table, CRYPTO_RC4 | CRYPTO_PLAINTEXT, &mut rng(6));
    let (a_end, b_end) = pump(&mut a, &mut b, 50);
    let (a_end, b_end) = (a_end.unwrap(), b_end.unwrap());
    assert_eq!(
        (a_end.method, b_end.method),
        (CRYPTO_PLAINTEXT, CRYPTO_PLAINTEXT)
    );
    assert!(a_end.cipher.is_none() && b_end.cipher.is_none());
    assert_eq!(b_end.received, b"hello");
}

#[test]
fn payload_after_the_handshake_is_decrypted_into_received() {
    let table = SkeyTable::single(TORRENT);
    let mut a = Initiator::new(TORRENT, CRYPTO_RC4, b"IA", &mut rng(7));
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(8));
    // Step 1 to B, step 2 to A, step 3 to B: B is done and answers with step 4.
    b.input(&a.take_output()).unwrap();
    a.input(&b.take_output()).unwrap();
    let mut b_end = b.input(&a.take_output()).unwrap().unwrap();
    // B's step 4 and its first payload bytes arrive together.
    let mut wire = b.take_output();
    let mut payload = b"first message".to_vec();
    b_end.cipher.as_mut().unwrap().encrypt.apply(&mut payload);
    wire.extend_from_slice(&payload);
    let a_end = a.input(&wire).unwrap().unwrap();
    assert_eq!(a_end.received, b"first message");
}

#[test]
fn a_shared_table_finds_the_torrent_among_many() {
    let mut table = SkeyTable::default();
    for i in 0..50u8 {
        table.insert(InfoHash([i; 20]));
    }
    let wanted = InfoHash([33; 20]);
    let mut a = Initiator::new(wanted, CRYPTO_RC4, b"", &mut rng(9));
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(10));
    let (a_end, b_end) = pump(&mut a, &mut b, 4096);
    assert!(a_end.is_ok());
    assert_eq!(b_end.unwrap().info_hash, wanted);
}

#[test]
fn an_unknown_torrent_is_refused() {
    let table = SkeyTable::single(TORRENT);
    let mut a = Initiator::new(InfoHash([8; 20]), CRYPTO_RC4, b"", &mut rng(11));
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(12));
    let (_, b_end) = pump(&mut a, &mut b, 4096);
    assert_eq!(b_end.unwrap_err(), MseError::UnknownTorrent);
}

#[test]
fn a_removed_torrent_is_no_longer_found() {
    let mut table = SkeyTable::single(TORRENT);
    table.remove(&TORRENT);
    let mut a = Initiator::new(TORRENT, CRYPTO_RC4, b"", &mut rng(13));
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(14));
    assert_eq!(
        pump(&mut a, &mut b, 4096).1.unwrap_err(),
        MseError::UnknownTorrent
    );
}

#[test]
fn no_common_method_is_refused() {
    let table = SkeyTable::single(TORRENT);
    let mut a = Initiator::new(TORRENT, CRYPTO_PLAINTEXT, b"", &mut rng(15));
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(16));
    assert_eq!(
        pump(&mut a, &mut b, 4096).1.unwrap_err(),
        MseError::NoCommonMethod {
            provided: CRYPTO_PLAINTEXT,
            accepted: CRYPTO_RC4
        }
    );
}

#[test]
fn a_public_key_out_of_range_is_refused() {
    let table = SkeyTable::single(TORRENT);
    let mut p_minus_1 = PRIME;
    p_minus_1[DH_KEY_LEN - 1] -= 1;
    for key in [[0u8; DH_KEY_LEN], [0xFF; DH_KEY_LEN], PRIME, p_minus_1] {
        let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(17));
        assert_eq!(b.input(&key).unwrap_err(), MseError::BadPublicKey);
        let mut a = Initiator::new(TORRENT, CRYPTO_RC4, b"", &mut rng(18));
        assert_eq!(a.input(&key).unwrap_err(), MseError::BadPublicKey);
    }
    let mut one = [0u8; DH_KEY_LEN];
    one[DH_KEY_LEN - 1] = 1;
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(19));
    assert_eq!(b.input(&one).unwrap_err(), MseError::BadPublicKey);
}

#[test]
fn a_truncated_key_waits_for_more_and_sends_nothing() {
    let table = SkeyTable::single(TORRENT);
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(20));
    assert!(b.input(&[5u8; 60]).unwrap().is_none());
    assert!(b.take_output().is_empty());
    let mut a = Initiator::new(TORRENT, CRYPTO_RC4, b"", &mut rng(21));
    a.take_output();
    assert!(a.input(&[5u8; 95]).unwrap().is_none());
    assert!(a.take_output().is_empty());
}

#[test]
fn a_garbage_key_finds_no_sync_mark_within_the_padding_allowed() {
    // A random number is a valid key, but the peer does not know its exponent: what
    // follows never holds HASH("req1", S) for our S.
    let table = SkeyTable::single(TORRENT);
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(22));
    let mut garbage = vec![0u8; 2000];
    rng(23).fill(&mut garbage[..]);
    garbage[0] = 0x10;
    let mut result = Ok(None);
    for piece in garbage.chunks(100) {
        result = b.input(piece);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        result.unwrap_err(),
        MseError::NoSync {
            limit: MAX_BEFORE_REQ1
        }
    );
    let mut a = Initiator::new(TORRENT, CRYPTO_RC4, b"", &mut rng(24));
    assert_eq!(
        a.input(&garbage).unwrap_err(),
        MseError::NoSync {
            limit: MAX_BEFORE_VC
        }
    );
}

/// An initiator under the test's control: step 1 with `pad_a` bytes of padding.
struct Hostile {
    keys: KeyPair,
}

impl Hostile {
    fn new(seed: u64) -> Self {
        Hostile {
            keys: KeyPair::new(&mut rng(seed)),
        }
    }

    /// Step 3 as written by hand, once the receiver's key is known.
    fn step3(&self, yb: &[u8], vc: [u8; 8], provide: u32, pad_c: usize) -> Vec<u8> {
        let secret = self.keys.shared_secret(&yb[..DH_KEY_LEN]).unwrap();
        let (mut encrypt, _) = ciphers(&secret, &TORRENT);
        let mut out = hash(&[b"req1", &secret]).to_vec();
        let req2 = hash(&[b"req2", &TORRENT.0]);
        let req3 = hash(&[b"req3", &secret]);
        out.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
        let mut plain = vc.to_vec();
        plain.extend_from_slice(&provide.to_be_bytes());
        plain.extend_from_slice(&(pad_c as u16).to_be_bytes());
        plain.extend(std::iter::repeat_n(0, pad_c));
        plain.extend_from_slice(&0u16.to_be_bytes());
        encrypt.apply(&mut plain);
        out.extend_from_slice(&plain);
        out
    }
}

#[test]
fn a_wrong_verification_constant_is_refused() {
    let table = SkeyTable::single(TORRENT);
    let hostile = Hostile::new(25);
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(26));
    b.input(&hostile.keys.public).unwrap();
    let yb = b.take_output();
    let step3 = hostile.step3(&yb, [1, 0, 0, 0, 0, 0, 0, 0], CRYPTO_RC4, 0);
    assert_eq!(b.input(&step3).unwrap_err(), MseError::BadVerification);
}

#[test]
fn pad_c_over_512_bytes_is_refused() {
    let table = SkeyTable::single(TORRENT);
    let hostile = Hostile::new(27);
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(28));
    b.input(&hostile.keys.public).unwrap();
    let yb = b.take_output();
    let step3 = hostile.step3(&yb, VC, CRYPTO_RC4, 513);
    assert_eq!(
        b.input(&step3).unwrap_err(),
        MseError::PaddingTooLong { len: 513 }
    );
    // 512 is still fine.
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(28));
    b.input(&hostile.keys.public).unwrap();
    let yb = b.take_output();
    assert!(b
        .input(&hostile.step3(&yb, VC, CRYPTO_RC4, 512))
        .unwrap()
        .is_some());
}

#[test]
fn pad_a_over_512_bytes_finds_no_sync_mark() {
    let table = SkeyTable::single(TORRENT);
    let hostile = Hostile::new(29);
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(30));
    let mut step1 = hostile.keys.public.to_vec();
    step1.extend(std::iter::repeat_n(0xAB, MAX_PAD + 1));
    assert!(b.input(&step1).unwrap().is_none());
    let yb = b.take_output();
    let step3 = hostile.step3(&yb, VC, CRYPTO_RC4, 0);
    assert_eq!(
        b.input(&step3).unwrap_err(),
        MseError::NoSync {
            limit: MAX_BEFORE_REQ1
        }
    );
    // 512 bytes of PadA are within the limit.
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(30));
    step1.truncate(DH_KEY_LEN + MAX_PAD);
    b.input(&step1).unwrap();
    let yb = b.take_output();
    assert!(b
        .input(&hostile.step3(&yb, VC, CRYPTO_RC4, 0))
        .unwrap()
        .is_some());
}

/// A receiver under the test's control answering `initiator` with `select` and `pad_d`.
fn hostile_step4(initiator: &mut Initiator, seed: u64, select: u32, pad_d: usize) -> Vec<u8> {
    let keys = KeyPair::new(&mut rng(seed));
    let ya = initiator.take_output();
    let secret = keys.shared_secret(&ya[..DH_KEY_LEN]).unwrap();
    let (_, mut encrypt) = ciphers(&secret, &TORRENT);
    let mut out = keys.public.to_vec();
    let mut plain = VC.to_vec();
    plain.extend_from_slice(&select.to_be_bytes());
    plain.extend_from_slice(&(pad_d as u16).to_be_bytes());
    plain.extend(std::iter::repeat_n(0, pad_d));
    encrypt.apply(&mut plain);
    out.extend_from_slice(&plain);
    out
}

#[test]
fn a_select_we_did_not_provide_is_refused() {
    for select in [CRYPTO_PLAINTEXT, CRYPTO_RC4 | CRYPTO_PLAINTEXT, 0, 0x8] {
        let mut a = Initiator::new(TORRENT, CRYPTO_RC4, b"", &mut rng(31));
        let step4 = hostile_step4(&mut a, 32, select, 0);
        assert_eq!(
            a.input(&step4).unwrap_err(),
            MseError::BadSelect {
                selected: select,
                provided: CRYPTO_RC4
            }
        );
    }
}

#[test]
fn pad_d_over_512_bytes_is_refused() {
    let mut a = Initiator::new(TORRENT, CRYPTO_RC4, b"", &mut rng(33));
    let step4 = hostile_step4(&mut a, 34, CRYPTO_RC4, 600);
    assert_eq!(
        a.input(&step4).unwrap_err(),
        MseError::PaddingTooLong { len: 600 }
    );
    let mut a = Initiator::new(TORRENT, CRYPTO_RC4, b"", &mut rng(33));
    let step4 = hostile_step4(&mut a, 34, CRYPTO_RC4, 512);
    assert!(a.input(&step4).unwrap().is_some());
}

#[test]
fn input_after_a_failure_is_refused() {
    let table = SkeyTable::single(TORRENT);
    let mut b = Receiver::new(&table, CRYPTO_RC4, &mut rng(35));
    assert!(b.input(&[0u8; DH_KEY_LEN]).is_err());
    assert_eq!(b.input(b"more").unwrap_err(), MseError::Finished);
}

#[test]
fn public_keys_are_96_bytes_below_the_prime() {
    for seed in 0..20 {
        let keys = KeyPair::new(&mut rng(seed));
        // Both big-endian and of one length, so byte order is number order.
        assert!(keys.public < PRIME);
    }
}

#[test]
fn encryption_modes_parse_and_print() {
    for mode in [Encryption::Prefer, Encryption::Require, Encryption::Off] {
        assert_eq!(mode.to_string().parse::<Encryption>().unwrap(), mode);
    }
    assert!("maybe".parse::<Encryption>().is_err());
    assert_eq!(Encryption::default(), Encryption::Prefer);
}

#[test]
fn a_receiver_preferring_plaintext_picks_it_only_when_offered() {
    let table = SkeyTable::single(TORRENT);
    let both = CRYPTO_RC4 | CRYPTO_PLAINTEXT;
    for (provide, want) in [(both, CRYPTO_PLAINTEXT), (CRYPTO_RC4, CRYPTO_RC4)] {
        let mut a = Initiator::new(TORRENT, provide, b"", &mut rng(36));
        let mut b = Receiver::new(&table, both, &mut rng(37)).preferring_plaintext();
        let (a_end, b_end) = pump(&mut a, &mut b, 4096);
        assert_eq!((a_end.unwrap().method, b_end.unwrap().method), (want, want));
    }
    // RC4 first otherwise.
    let mut a = Initiator::new(TORRENT, both, b"", &mut rng(38));
    let mut b = Receiver::new(&table, both, &mut rng(39));
    assert_eq!(pump(&mut a, &mut b, 4096).1.unwrap().method, CRYPTO_RC4);
}
