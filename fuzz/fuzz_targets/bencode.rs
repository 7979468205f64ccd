//! Fuzzes the bencode decoder, the first thing every untrusted byte meets: it must never
//! panic, an accepted input must be exactly the raw span of its top value, and what the
//! encoder makes of a decoded value must decode back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torrent_actors::bencode::{decode, decode_prefix};

fuzz_target!(|data: &[u8]| {
    // A prefix decode must agree with a whole decode of the bytes it says it used.
    if let Ok((value, used)) = decode_prefix(data) {
        assert_eq!(value.raw(), &data[..used]);
        let whole = decode(&data[..used]).expect("the used prefix decodes on its own");
        assert_eq!(whole, value);
    }

    let Ok(value) = decode(data) else {
        return;
    };
    assert_eq!(value.raw(), data);
    assert_eq!(value.offset(), 0);

    let owned = value.to_owned_value();
    let encoded = owned.encode();
    let again = decode(&encoded).expect("our own encoding decodes");
    assert_eq!(again.to_owned_value(), owned);
    // The encoding is canonical, so encoding it again changes nothing.
    assert_eq!(again.to_owned_value().encode(), encoded);
});
