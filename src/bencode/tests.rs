use super::*;
use proptest::prelude::*;

fn err(input: &[u8]) -> DecodeError {
    decode(input).expect_err("input should be refused")
}

#[test]
fn decodes_each_type() {
    assert_eq!(decode(b"i42e").unwrap().as_int(), Some(42));
    assert_eq!(decode(b"i-7e").unwrap().as_int(), Some(-7));
    assert_eq!(decode(b"i0e").unwrap().as_int(), Some(0));
    assert_eq!(decode(b"4:spam").unwrap().as_bytes(), Some(&b"spam"[..]));
    assert_eq!(decode(b"0:").unwrap().as_bytes(), Some(&b""[..]));
    let list = decode(b"l4:spami1ee").unwrap();
    let items = list.as_list().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].as_int(), Some(1));
    let dict = decode(b"d3:cow3:moo4:spam4:eggse").unwrap();
    let d = dict.as_dict().unwrap();
    assert_eq!(d.get(b"cow").unwrap().as_str(), Some("moo"));
    assert_eq!(d.get(b"spam").unwrap().as_str(), Some("eggs"));
    assert!(d.get(b"none").is_none());
}

#[test]
fn integer_extremes_fit_and_one_past_overflows() {
    assert_eq!(
        decode(b"i9223372036854775807e").unwrap().as_int(),
        Some(i64::MAX)
    );
    assert_eq!(
        decode(b"i-9223372036854775808e").unwrap().as_int(),
        Some(i64::MIN)
    );
    assert_eq!(
        err(b"i9223372036854775808e"),
        DecodeError::IntegerOverflow { offset: 0 }
    );
    assert_eq!(
        err(b"i-9223372036854775809e"),
        DecodeError::IntegerOverflow { offset: 0 }
    );
    assert_eq!(
        err(b"i99999999999999999999999999e"),
        DecodeError::IntegerOverflow { offset: 0 }
    );
}

#[test]
fn malformed_integers_are_refused_with_their_offset() {
    for bad in [
        &b"ie"[..],
        b"i-e",
        b"i03e",
        b"i-0e",
        b"i1x2e",
        b"i+1e",
        b"i 1e",
    ] {
        assert_eq!(
            err(bad),
            DecodeError::InvalidInteger { offset: 0 },
            "{bad:?}"
        );
    }
    assert_eq!(err(b"li1ei03ee"), DecodeError::InvalidInteger { offset: 4 });
    assert_eq!(err(b"i12"), DecodeError::UnexpectedEof { offset: 3 });
}

#[test]
fn string_length_beyond_input_is_refused_before_allocating() {
    assert_eq!(
        err(b"99999999999:x"),
        DecodeError::LengthBeyondInput {
            offset: 0,
            remaining: 1
        }
    );
    // A length that does not even fit a usize.
    assert!(matches!(
        err(b"999999999999999999999999999999:x"),
        DecodeError::LengthBeyondInput { offset: 0, .. }
    ));
    assert_eq!(err(b"05:hello"), DecodeError::InvalidLength { offset: 0 });
    assert_eq!(err(b"5"), DecodeError::UnexpectedEof { offset: 1 });
    assert_eq!(
        err(b"5x"),
        DecodeError::UnexpectedByte {
            offset: 1,
            byte: b'x'
        }
    );
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let mut deep = vec![b'l'; 200_000];
    deep.extend(std::iter::repeat_n(b'e', 200_000));
    assert_eq!(
        err(&deep),
        DecodeError::TooDeep {
            offset: 100,
            limit: 100
        }
    );

    let mut ok = vec![b'l'; 100];
    ok.extend(std::iter::repeat_n(b'e', 100));
    assert!(decode(&ok).is_ok());

    let mut dicts = b"d1:a".repeat(101);
    dicts.extend(std::iter::repeat_n(b'e', 101));
    assert!(matches!(
        err(&dicts),
        DecodeError::TooDeep { limit: 100, .. }
    ));
}

#[test]
fn token_limit_is_enforced() {
    let input = b"li1ei2ei3ee";
    let limits = Limits {
        max_depth: 10,
        max_tokens: 3,
    };
    assert_eq!(
        decode_with(input, limits),
        Err(DecodeError::TooManyTokens {
            offset: 7,
            limit: 3
        })
    );
    assert!(decode_with(
        input,
        Limits {
            max_depth: 10,
            max_tokens: 4
        }
    )
    .is_ok());
}

#[test]
fn dictionary_keys_must_be_strings_and_unique() {
    assert_eq!(err(b"di1ei2ee"), DecodeError::NonStringKey { offset: 1 });
    assert_eq!(err(b"dlee1:ae"), DecodeError::NonStringKey { offset: 1 });
    assert_eq!(
        err(b"d1:ai1e1:ai2ee"),
        DecodeError::DuplicateKey { offset: 7 }
    );
    assert_eq!(
        err(b"d1:bi1e1:ai2e1:bi3ee"),
        DecodeError::DuplicateKey { offset: 13 }
    );
    // A key with no value.
    assert_eq!(
        err(b"d1:ae"),
        DecodeError::UnexpectedByte {
            offset: 4,
            byte: b'e'
        }
    );
}

#[test]
fn unsorted_keys_are_accepted_as_found_in_the_wild() {
    let v = decode(b"d1:bi1e1:ai2ee").unwrap();
    let keys: Vec<_> = v.as_dict().unwrap().iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [&b"b"[..], &b"a"[..]]);
}

#[test]
fn trailing_data_and_truncation_are_refused() {
    assert_eq!(err(b"i1ei2e"), DecodeError::TrailingData { offset: 3 });
    assert_eq!(err(b"l"), DecodeError::UnexpectedEof { offset: 1 });
    assert_eq!(err(b"d3:foo"), DecodeError::UnexpectedEof { offset: 6 });
    assert_eq!(err(b""), DecodeError::UnexpectedEof { offset: 0 });
    assert_eq!(
        err(b"e"),
        DecodeError::UnexpectedByte {
            offset: 0,
            byte: b'e'
        }
    );
    assert_eq!(
        err(b"x"),
        DecodeError::UnexpectedByte {
            offset: 0,
            byte: b'x'
        }
    );
}

#[test]
fn decode_prefix_leaves_what_follows() {
    let (v, used) = decode_prefix(b"d1:ai1eeRAWDATA").unwrap();
    assert_eq!(used, 8);
    assert_eq!(v.raw(), b"d1:ai1ee");
}

#[test]
fn raw_span_is_the_original_bytes_even_when_not_canonical() {
    // Unsorted keys inside `info`: a re-encoding would sort them and change the hash.
    let input = b"d4:infod1:zi1e1:ai2ee3:fooi3ee";
    let v = decode(input).unwrap();
    let info = v.as_dict().unwrap().get(b"info").unwrap();
    assert_eq!(info.raw(), b"d1:zi1e1:ai2ee");
    assert_eq!(info.offset(), 7);
    assert_ne!(info.to_owned_value().encode(), info.raw());
}

#[test]
fn encoder_sorts_keys_and_writes_canonical_form() {
    let v = BValue::dict([
        ("b", BValue::Int(-3)),
        (
            "a",
            BValue::List(vec![BValue::string("x"), BValue::Bytes(vec![0, 255])]),
        ),
    ]);
    assert_eq!(v.encode(), b"d1:al1:x2:\x00\xffe1:bi-3ee");
}

#[test]
fn every_error_reports_the_offset_it_names() {
    let e = err(b"l i1e");
    assert_eq!(e.offset(), 1);
    assert_eq!(e.to_string(), "unexpected byte 0x20 at byte 1");
}

fn arb_value() -> impl Strategy<Value = BValue> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(BValue::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(BValue::Bytes),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(BValue::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                inner,
                0..8
            )
            .prop_map(BValue::Dict),
        ]
    })
}

proptest! {
    #[test]
    fn encode_then_decode_round_trips(v in arb_value()) {
        let bytes = v.encode();
        let decoded = decode(&bytes).unwrap();
        prop_assert_eq!(decoded.raw(), &bytes[..]);
        prop_assert_eq!(decoded.to_owned_value(), v);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn mutated_valid_input_never_panics_and_errors_point_inside(
        v in arb_value(), at in any::<prop::sample::Index>(), byte in any::<u8>()
    ) {
        let mut bytes = v.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Err(e) = decode(&bytes) {
            prop_assert!(e.offset() <= bytes.len());
        }
    }

    #[test]
    fn every_truncation_is_refused(v in arb_value(), cut in any::<prop::sample::Index>()) {
        let bytes = v.encode();
        let n = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..n]).is_err());
    }
}
