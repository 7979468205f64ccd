//! Feeds hostile bytes to both ends of the message stream encryption handshake.
//!
//! Random bytes alone never get past the key exchange (they cannot know the secret), so
//! besides raw input the target plays an honest counterpart and lets the input flip bits
//! in its messages after the public key: as RC4 is a stream XOR, a flipped bit of the
//! ciphertext is the same bit flipped in the plaintext, which reaches the verification
//! constant, crypto_provide/select, the padding lengths and the initial payload with a
//! valid key. Nothing may panic, and a handshake that ends well must name our torrent and
//! a method we offered.

#![no_main]

use rand::rngs::SmallRng;
use rand::SeedableRng;
use torrent_actors::wire::mse::{
    Established, Initiator, MseError, MseHandshake, Receiver, SkeyTable, CRYPTO_PLAINTEXT,
    CRYPTO_RC4, DH_KEY_LEN,
};
use torrent_actors::InfoHash;

const TORRENT: InfoHash = InfoHash([0x5a; 20]);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let seed = u64::from(mode);
    let table = SkeyTable::single(TORRENT);
    match mode % 4 {
        // Raw bytes at a receiver, then at an initiator.
        0 => {
            let mut receiver = Receiver::new(&table, CRYPTO_RC4 | CRYPTO_PLAINTEXT, &mut rng(seed));
            check(feed(&mut receiver, input, seed));
        }
        1 => {
            let mut initiator = Initiator::new(TORRENT, CRYPTO_RC4, b"IA", &mut rng(seed));
            initiator.take_output();
            check(feed(&mut initiator, input, seed));
        }
        // An honest initiator's messages, flipped by the input, at a receiver.
        2 => {
            let mut honest = Initiator::new(
                TORRENT,
                CRYPTO_RC4 | CRYPTO_PLAINTEXT,
                b"initial payload",
                &mut rng(seed),
            );
            let mut receiver =
                Receiver::new(&table, CRYPTO_RC4 | CRYPTO_PLAINTEXT, &mut rng(seed + 1));
            let step1 = honest.take_output();
            if receiver.input(&step1).is_err() {
                return;
            }
            if honest.input(&receiver.take_output()).is_err() {
                return;
            }
            let step3 = flipped(honest.take_output(), input);
            check(feed(&mut receiver, &step3, seed));
        }
        // An honest receiver's answer, flipped by the input, at an initiator.
        _ => {
            let mut initiator = Initiator::new(TORRENT, CRYPTO_RC4, b"IA", &mut rng(seed));
            let mut honest =
                Receiver::new(&table, CRYPTO_RC4 | CRYPTO_PLAINTEXT, &mut rng(seed + 1));
            if honest.input(&initiator.take_output()).is_err() {
                return;
            }
            let step2 = honest.take_output();
            let Ok(None) = initiator.input(&step2[..DH_KEY_LEN.min(step2.len())]) else {
                return;
            };
            let step3 = initiator.take_output();
            if !matches!(honest.input(&step3), Ok(Some(_))) {
                return;
            }
            let mut answer = step2[DH_KEY_LEN.min(step2.len())..].to_vec();
            answer.extend_from_slice(&honest.take_output());
            check(feed(&mut initiator, &flipped(answer, input), seed));
        }
    }
});

fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// `message` with the input XORed over it, and whatever input is left appended.
fn flipped(mut message: Vec<u8>, input: &[u8]) -> Vec<u8> {
    let (over, rest) = input.split_at(input.len().min(message.len()));
    for (m, i) in message.iter_mut().zip(over) {
        *m ^= i;
    }
    message.extend_from_slice(rest);
    message
}

/// Feeds `input` in chunks whose sizes follow `seed`, stopping at the first end.
fn feed(
    machine: &mut impl MseHandshake,
    input: &[u8],
    seed: u64,
) -> Result<Option<Established>, MseError> {
    let sizes = [(seed % 7) as usize + 1, (seed % 61) as usize + 1, 997];
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(sizes[i % sizes.len()].min(rest.len()));
        rest = tail;
        i += 1;
        match machine.input(chunk) {
            Ok(None) => {
                // Whatever it asks to send is bounded: a key and at most 512 bytes of
                // padding, or a hash pair and an encrypted header.
                assert!(machine.take_output().len() <= 96 + 512 + 40 + 14 + 512 + 2 + 65_535);
            }
            done => return done,
        }
    }
    Ok(None)
}

fn check(result: Result<Option<Established>, MseError>) {
    if let Ok(Some(done)) = result {
        assert_eq!(done.info_hash, TORRENT);
        assert!(done.method == CRYPTO_RC4 || done.method == CRYPTO_PLAINTEXT);
        assert_eq!(done.cipher.is_some(), done.method == CRYPTO_RC4);
    }
}
