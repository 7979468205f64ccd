//! The bencode layer from outside the crate: decode and encode round trips, the raw span
//! kept for `info`, prefix decoding, the depth and token limits, and the promise that a
//! hostile input of N bytes can neither build more than N/2 values nor exhaust the stack.

use proptest::prelude::*;
use torrent_actors::bencode::{
    decode, decode_prefix, decode_with, BValue, DecodeError, Kind, Limits, Value, DEFAULT_MAX_DEPTH,
};

/// Every value in the tree, dictionary keys included, as the token limit counts them.
fn count_values(value: &Value<'_>) -> usize {
    // An explicit stack rather than recursion, so counting cannot overflow either.
    let mut stack = vec![value];
    let mut count = 0;
    while let Some(v) = stack.pop() {
        count += 1;
        match v.kind() {
            Kind::List(items) => stack.extend(items),
            Kind::Dict(d) => {
                count += d.len();
                stack.extend(d.iter().map(|(_, v)| v));
            }
            Kind::Int(_) | Kind::Bytes(_) => {}
        }
    }
    count
}

#[test]
fn canonical_input_survives_decode_and_encode_unchanged() {
    let input: &[u8] =
        b"d1:ai-9223372036854775808e1:bli0e0:le3:\xff\x00xe1:cd1:di9223372036854775807eee";
    let value = decode(input).unwrap();
    assert_eq!(value.raw(), input);
    assert_eq!(value.to_owned_value().encode(), input);
}

#[test]
fn encoder_sorts_dictionary_keys_by_their_bytes() {
    let v = BValue::dict([
        ("b", BValue::Int(2)),
        ("a", BValue::string("x")),
        ("B", BValue::List(vec![])),
    ]);
    assert_eq!(v.encode(), b"d1:Ble1:a1:x1:bi2ee");
}

#[test]
fn info_value_keeps_its_exact_raw_bytes_and_offset() {
    // Unsorted keys inside `info`: the raw span must be the original bytes, not a
    // canonical re-encoding, because the info-hash is taken over them.
    let info: &[u8] = b"d4:name1:x6:lengthi1ee";
    let mut input = b"d8:announce3:url4:info".to_vec();
    let info_at = input.len();
    input.extend_from_slice(info);
    input.push(b'e');
    let top = decode(&input).unwrap();
    let found = top.as_dict().unwrap().get(b"info").unwrap();
    assert_eq!(found.raw(), info);
    assert_eq!(found.offset(), info_at);
    assert_ne!(found.to_owned_value().encode(), info);
}

#[test]
fn decode_prefix_stops_after_one_value_and_says_where() {
    let input = b"d8:msg_typei1e5:piecei0eeRAW PIECE DATA";
    let (value, used) = decode_prefix(input).unwrap();
    assert_eq!(used, input.len() - b"RAW PIECE DATA".len());
    assert_eq!(value.raw(), &input[..used]);
    assert_eq!(
        decode(input),
        Err(DecodeError::TrailingData { offset: used })
    );
}

#[test]
fn depth_limit_allows_exactly_the_limit() {
    let limits = Limits {
        max_depth: 3,
        max_tokens: 100,
    };
    assert!(decode_with(b"llleee", limits).is_ok());
    assert_eq!(
        decode_with(b"lllleeee", limits),
        Err(DecodeError::TooDeep {
            offset: 3,
            limit: 3
        })
    );
}

#[test]
fn token_limit_counts_keys_and_values() {
    let limits = Limits {
        max_depth: 10,
        max_tokens: 3,
    };
    // The dictionary, its key and its value: three tokens.
    assert!(decode_with(b"d1:ai1ee", limits).is_ok());
    assert_eq!(
        decode_with(b"d1:ai1e1:bi2ee", limits),
        // The second key, at byte 7, is the fourth token.
        Err(DecodeError::TooManyTokens {
            offset: 7,
            limit: 3
        })
    );
}

#[test]
fn malformed_inputs_name_the_offending_byte() {
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", DecodeError::UnexpectedEof { offset: 0 }),
        (b"i12", DecodeError::UnexpectedEof { offset: 3 }),
        (b"li1e", DecodeError::UnexpectedEof { offset: 4 }),
        (b"i-0e", DecodeError::InvalidInteger { offset: 0 }),
        (b"li01ee", DecodeError::InvalidInteger { offset: 1 }),
        (b"ie", DecodeError::InvalidInteger { offset: 0 }),
        (b"i1x2e", DecodeError::InvalidInteger { offset: 0 }),
        (
            b"i9223372036854775808e",
            DecodeError::IntegerOverflow { offset: 0 },
        ),
        (
            b"i-9223372036854775809e",
            DecodeError::IntegerOverflow { offset: 0 },
        ),
        (b"01:a", DecodeError::InvalidLength { offset: 0 }),
        (
            b"5:abc",
            DecodeError::LengthBeyondInput {
                offset: 0,
                remaining: 3,
            },
        ),
        (b"di1ei1ee", DecodeError::NonStringKey { offset: 1 }),
        (
            b"d1:ae",
            DecodeError::UnexpectedByte {
                offset: 4,
                byte: b'e',
            },
        ),
        (
            b"d1:bi1e1:ai2e1:bi3ee",
            DecodeError::DuplicateKey { offset: 13 },
        ),
        (b"i1ei2e", DecodeError::TrailingData { offset: 3 }),
        (
            b"e",
            DecodeError::UnexpectedByte {
                offset: 0,
                byte: b'e',
            },
        ),
    ];
    for (input, want) in cases {
        let got = decode(input);
        assert_eq!(
            got.as_ref().err(),
            Some(want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(got.unwrap_err().offset(), want.offset());
    }
}

#[test]
fn extreme_integers_decode_exactly() {
    assert_eq!(
        decode(b"i9223372036854775807e").unwrap().as_int(),
        Some(i64::MAX)
    );
    assert_eq!(
        decode(b"i-9223372036854775808e").unwrap().as_int(),
        Some(i64::MIN)
    );
    assert_eq!(decode(b"i0e").unwrap().as_int(), Some(0));
}

#[test]
fn deep_nesting_is_refused_without_overflowing_a_small_stack() {
    // A thread with a 128 KiB stack: a recursive decoder would need far more for a
    // million levels, so passing here shows the decoder does not recurse per level.
    let handle = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(|| {
            let n = 1_000_000;
            for open in [&b"l"[..], b"d1:a"] {
                let mut input = open.repeat(n);
                input.extend(std::iter::repeat_n(b'e', n));
                let err = decode(&input).unwrap_err();
                assert!(
                    matches!(err, DecodeError::TooDeep { limit, .. } if limit == DEFAULT_MAX_DEPTH),
                    "{err}"
                );
            }
            // Exactly at the limit the value decodes, and converting, encoding and dropping
            // it (which do recurse) stay within the same small stack.
            let mut input = b"l".repeat(DEFAULT_MAX_DEPTH);
            input.extend(b"e".repeat(DEFAULT_MAX_DEPTH));
            let value = decode(&input).unwrap();
            assert_eq!(value.to_owned_value().encode(), input);
        })
        .unwrap();
    handle.join().expect("no stack overflow or panic");
}

#[test]
fn dense_input_past_the_token_limit_is_refused_where_it_crosses() {
    let limits = Limits {
        max_depth: 10,
        max_tokens: 1000,
    };
    let mut input = b"l".to_vec();
    input.extend(b"0:".repeat(1000));
    input.push(b'e');
    // The list is token 1, so the 1000th empty string is the 1001st token.
    assert_eq!(
        decode_with(&input, limits),
        Err(DecodeError::TooManyTokens {
            offset: 1 + 999 * 2,
            limit: 1000
        })
    );
}

/// Inputs built to make as many values per byte as bencode allows.
fn dense_input(shape: u8, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    match shape {
        // Nested lists up to the depth limit, repeated.
        0 => {
            out.push(b'l');
            for _ in 0..n {
                out.extend(b"l".repeat(DEFAULT_MAX_DEPTH - 1));
                out.extend(b"e".repeat(DEFAULT_MAX_DEPTH - 1));
            }
            out.push(b'e');
        }
        // Many single-digit integers.
        1 => {
            out.push(b'l');
            out.extend(b"i0e".repeat(n));
            out.push(b'e');
        }
        // Many empty strings.
        2 => {
            out.push(b'l');
            out.extend(b"0:".repeat(n));
            out.push(b'e');
        }
        // Many dictionaries, each with the empty key (one per dictionary, as keys must be
        // unique) mapping to an empty string.
        3 => {
            out.push(b'l');
            out.extend(b"d0:0:e".repeat(n));
            out.push(b'e');
        }
        // Many empty lists and dictionaries side by side.
        _ => {
            out.push(b'l');
            out.extend(b"lede".repeat(n));
            out.push(b'e');
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every value takes at least two bytes of its own (`i0e`, `0:`, `le`, `de`), so a
    /// decode of N bytes builds at most N/2 values, whatever the shape.
    #[test]
    fn values_built_are_bounded_by_half_the_input_length(shape in 0u8..5, n in 0usize..3000) {
        let input = dense_input(shape, n);
        let value = decode(&input).unwrap();
        prop_assert!(2 * count_values(&value) <= input.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_input_is_its_own_raw_span(
        bytes in proptest::collection::vec(
            prop_oneof![Just(b'l'), Just(b'd'), Just(b'e'), Just(b'i'), Just(b':'),
                        Just(b'-'), b'0'..=b'9', any::<u8>()],
            0..200,
        )
    ) {
        if let Ok(value) = decode(&bytes) {
            prop_assert_eq!(value.raw(), &bytes[..]);
            prop_assert!(2 * count_values(&value) <= bytes.len());
            let again = value.to_owned_value().encode();
            prop_assert_eq!(decode(&again).unwrap().to_owned_value(), value.to_owned_value());
        }
    }

    #[test]
    fn encoded_values_decode_to_themselves(value in bvalue()) {
        let bytes = value.encode();
        let decoded = decode(&bytes).unwrap();
        prop_assert_eq!(decoded.raw(), &bytes[..]);
        prop_assert_eq!(decoded.to_owned_value(), value);
    }
}

fn bvalue() -> impl Strategy<Value = BValue> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(BValue::Int),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(BValue::Bytes),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(BValue::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..6),
                inner,
                0..6
            )
            .prop_map(BValue::Dict),
        ]
    })
}
