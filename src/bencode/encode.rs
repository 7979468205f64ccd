//! The encoder: values we build ourselves (extension handshakes, DHT messages, `.torrent`
//! files) out to canonical bencode, with dictionary keys sorted as BEP 3 asks.

use std::collections::BTreeMap;

use super::{Kind, Value};

/// An owned bencode value, for building messages. A `BTreeMap` keeps keys sorted, so the
/// encoding is canonical by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BValue {
    /// An integer.
    Int(i64),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<BValue>),
    /// A dictionary with sorted, unique keys.
    Dict(BTreeMap<Vec<u8>, BValue>),
}

impl BValue {
    /// A byte string holding `s`'s UTF-8 bytes.
    pub fn string(s: &str) -> Self {
        BValue::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary from `(key, value)` pairs; a later duplicate key replaces an earlier one.
    pub fn dict<K: AsRef<[u8]>>(entries: impl IntoIterator<Item = (K, BValue)>) -> Self {
        BValue::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_vec(), v))
                .collect(),
        )
    }

    /// The bencoded bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the bencoded bytes to `out`. Recursive: values we build are shallow, and a
    /// decoded value converted with [`Value::to_owned_value`] is no deeper than the
    /// decoder's depth limit.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            BValue::Int(n) => write_int(out, *n),
            BValue::Bytes(b) => write_bytes(out, b),
            BValue::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode_into(out);
                }
                out.push(b'e');
            }
            BValue::Dict(entries) => {
                out.push(b'd');
                for (k, v) in entries {
                    write_bytes(out, k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }
}

impl Value<'_> {
    /// An owned copy, e.g. to edit a decoded dictionary and encode it again.
    pub fn to_owned_value(&self) -> BValue {
        match self.kind() {
            Kind::Int(n) => BValue::Int(*n),
            Kind::Bytes(b) => BValue::Bytes(b.to_vec()),
            Kind::List(items) => BValue::List(items.iter().map(Value::to_owned_value).collect()),
            Kind::Dict(d) => BValue::Dict(
                d.iter()
                    .map(|(k, v)| (k.to_vec(), v.to_owned_value()))
                    .collect(),
            ),
        }
    }
}

/// Appends `i<n>e`.
pub fn write_int(out: &mut Vec<u8>, n: i64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

/// Appends `<len>:<bytes>`.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}
