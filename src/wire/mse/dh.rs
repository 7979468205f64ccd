//! The Diffie-Hellman arithmetic of the handshake: a key pair on the 768-bit prime with
//! generator 2, and the shared secret.
//!
//! Every connection, encrypted or not, that is dialed or accepted with encryption offered
//! costs each end two exponentiations, so with thousands of peers they are the largest
//! single cost of connecting. Two things keep them cheap:
//!
//! - The numbers are fixed-size (`crypto-bigint`'s `U768` in Montgomery form, with the
//!   prime as a compile-time modulus): no allocation, and about 41 µs for `Y^x` with a
//!   160-bit `x` on this project's test machine, where `num-bigint` took 60 µs.
//! - The public key `2^x` has a fixed base, so its powers are computed once per process:
//!   [`FixedBase`] holds `2^(j·16^i)` for every 4-bit digit `j` at every position `i` of
//!   a 160-bit exponent (40 × 16 values, 60 KiB), and `2^x` is the product of one value per
//!   digit: 40 multiplications and no squaring, about 7 µs.
//!
//! Neither path branches on the private key, but the table is indexed by its digits, so
//! this is not hardened against an attacker timing our cache. That is acceptable for MSE,
//! which hides traffic from shaping and keeps each key for one connection.

use std::sync::OnceLock;

use crypto_bigint::modular::{ConstMontyForm, ConstMontyParams};
use crypto_bigint::{const_monty_params, U192, U768};
use rand::Rng;

use super::{MseError, DH_KEY_LEN, PRIVATE_KEY_LEN};

const_monty_params!(
    DhPrime,
    U768,
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563",
    "The prime of the key exchange ([`super::PRIME`]) as a Montgomery modulus."
);

/// A number modulo the prime, in Montgomery form.
type Residue = ConstMontyForm<DhPrime, { U768::LIMBS }>;

/// Bits of a private key.
const PRIVATE_BITS: u32 = PRIVATE_KEY_LEN as u32 * 8;

/// Bits of one digit of the fixed-base table.
const DIGIT_BITS: u32 = 4;

/// Digits of a private key.
const DIGITS: usize = (PRIVATE_BITS / DIGIT_BITS) as usize;

/// Values one digit takes.
const DIGIT_VALUES: usize = 1 << DIGIT_BITS;

/// `2^(j·16^i)` at `[i][j]`: the powers of the generator that `2^x` multiplies together.
struct FixedBase(Box<[[Residue; DIGIT_VALUES]; DIGITS]>);

impl FixedBase {
    /// The process's table, built on first use (about 0.2 ms).
    fn get() -> &'static FixedBase {
        static TABLE: OnceLock<FixedBase> = OnceLock::new();
        TABLE.get_or_init(FixedBase::build)
    }

    fn build() -> FixedBase {
        let mut rows = Box::new([[Residue::ONE; DIGIT_VALUES]; DIGITS]);
        // 2^(16^i), starting from 2^1.
        let mut base = Residue::new(&U768::from_u8(2));
        for row in rows.iter_mut() {
            for j in 1..DIGIT_VALUES {
                row[j] = row[j - 1].mul(&base);
            }
            base = row[DIGIT_VALUES - 1].mul(&base);
        }
        FixedBase(rows)
    }

    /// `2^private`, by one multiplication per digit (a zero digit multiplies by one, so
    /// the work does not depend on the key's value).
    fn power_of_two(&self, private: &[u8; PRIVATE_KEY_LEN]) -> Residue {
        let mut acc = Residue::ONE;
        for (i, row) in self.0.iter().enumerate() {
            // Digit i counts from the least significant end of the big-endian key.
            let byte = private[PRIVATE_KEY_LEN - 1 - i / 2];
            let digit = if i % 2 == 0 { byte & 0x0f } else { byte >> 4 };
            acc = acc.mul(&row[usize::from(digit)]);
        }
        acc
    }
}

/// Our half of the key exchange.
pub(super) struct KeyPair {
    private: [u8; PRIVATE_KEY_LEN],
    /// Y = 2^private mod p, 96 bytes big-endian.
    pub(super) public: [u8; DH_KEY_LEN],
}

impl KeyPair {
    pub(super) fn new(rng: &mut impl Rng) -> Self {
        let mut private = [0u8; PRIVATE_KEY_LEN];
        rng.fill(&mut private[..]);
        let public = FixedBase::get().power_of_two(&private).retrieve();
        KeyPair {
            private,
            public: public.to_be_bytes().into(),
        }
    }

    /// S from the peer's public key, or [`MseError::BadPublicKey`] when it is not in
    /// 2..=p-2 (0 and 1 and p - 1 give a secret anyone can guess; p and above are not
    /// numbers modulo p).
    pub(super) fn shared_secret(&self, theirs: &[u8]) -> Result<[u8; DH_KEY_LEN], MseError> {
        let bytes: &[u8; DH_KEY_LEN] = theirs.try_into().map_err(|_| MseError::BadPublicKey)?;
        let y = U768::from_be_slice(bytes);
        let p_minus_1 = PRIME.wrapping_sub(&U768::ONE);
        if y < U768::from_u8(2) || y >= p_minus_1 {
            return Err(MseError::BadPublicKey);
        }
        let mut exponent = [0u8; U192::BYTES];
        exponent[U192::BYTES - PRIVATE_KEY_LEN..].copy_from_slice(&self.private);
        let secret = Residue::new(&y)
            .pow_bounded_exp(&U192::from_be_slice(&exponent), PRIVATE_BITS)
            .retrieve();
        Ok(secret.to_be_bytes().into())
    }
}

/// The prime as a number, from the modulus's parameters.
const PRIME: &U768 = <DhPrime as ConstMontyParams<{ U768::LIMBS }>>::PARAMS
    .modulus()
    .as_ref();

#[cfg(test)]
mod tests {
    use num_bigint::BigUint;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::wire::mse::PRIME;

    fn reference_pow(base: &BigUint, private: &[u8]) -> [u8; DH_KEY_LEN] {
        let p = BigUint::from_bytes_be(&PRIME);
        let bytes = base
            .modpow(&BigUint::from_bytes_be(private), &p)
            .to_bytes_be();
        let mut out = [0u8; DH_KEY_LEN];
        out[DH_KEY_LEN - bytes.len()..].copy_from_slice(&bytes);
        out
    }

    #[test]
    fn the_hex_prime_is_the_byte_prime() {
        assert_eq!(<[u8; DH_KEY_LEN]>::from(super::PRIME.to_be_bytes()), PRIME);
    }

    /// The fixed-base table and the Montgomery exponentiation agree with a plain
    /// `modpow` from another crate, keys with zero digits and the extremes included.
    #[test]
    fn public_keys_and_secrets_match_a_reference_modpow() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut keys: Vec<[u8; PRIVATE_KEY_LEN]> = (0..40).map(|_| rng.random()).collect();
        keys.push([0; PRIVATE_KEY_LEN]);
        keys.push([0xff; PRIVATE_KEY_LEN]);
        keys.push([0xf0; PRIVATE_KEY_LEN]);
        let mut one = [0; PRIVATE_KEY_LEN];
        one[PRIVATE_KEY_LEN - 1] = 1;
        keys.push(one);
        let two = BigUint::from(2u32);
        for private in &keys {
            let pair = KeyPair {
                private: *private,
                public: [0; DH_KEY_LEN],
            };
            let public = FixedBase::get().power_of_two(private).retrieve();
            assert_eq!(
                <[u8; DH_KEY_LEN]>::from(public.to_be_bytes()),
                reference_pow(&two, private)
            );
            let theirs = KeyPair::new(&mut rng).public;
            let theirs_big = BigUint::from_bytes_be(&theirs);
            assert_eq!(
                pair.shared_secret(&theirs).unwrap(),
                reference_pow(&theirs_big, private)
            );
        }
    }

    #[test]
    fn public_keys_out_of_range_are_refused() {
        let pair = KeyPair::new(&mut StdRng::seed_from_u64(1));
        let p_minus = |k: u8| {
            let mut key = PRIME;
            key[DH_KEY_LEN - 1] -= k;
            key
        };
        let mut two = [0u8; DH_KEY_LEN];
        two[DH_KEY_LEN - 1] = 2;
        for bad in [[0u8; DH_KEY_LEN], [0xff; DH_KEY_LEN], PRIME, p_minus(1)] {
            assert_eq!(pair.shared_secret(&bad), Err(MseError::BadPublicKey));
        }
        assert_eq!(pair.shared_secret(&[1u8; 95]), Err(MseError::BadPublicKey));
        assert!(pair.shared_secret(&two).is_ok());
        assert!(pair.shared_secret(&p_minus(2)).is_ok());
    }
}
