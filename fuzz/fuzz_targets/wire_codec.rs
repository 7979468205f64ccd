//! Feeds arbitrary bytes to the peer wire codecs, as a hostile peer would.
//!
//! The first input byte picks chunk sizes so that frames are split at varied boundaries.
//! Nothing may panic, and every message decoded must encode back to bytes that decode to
//! the same message.

#![no_main]

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use torrent_actors::wire::{HandshakeCodec, Message, MessageCodec};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };

    // The handshake codec sees the whole input at once and in chunks.
    let _ = HandshakeCodec.decode_eof(&mut BytesMut::from(input));
    let _ = feed(&mut HandshakeCodec, input, seed);

    // A small maximum exercises the length bound as well as the default one does.
    for mut codec in [MessageCodec::default(), MessageCodec::new(0)] {
        let messages = feed(&mut codec, input, seed);
        for message in messages {
            check_round_trip(&mut codec, &message);
        }
    }
});

/// Decodes `input` in chunks whose sizes cycle through values derived from `seed`,
/// stopping at the first error as a connection would.
fn feed<D: Decoder>(codec: &mut D, input: &[u8], seed: u8) -> Vec<D::Item> {
    let sizes = [
        usize::from(seed % 7) + 1,
        usize::from(seed / 7 % 13) + 1,
        usize::from(seed) + 1,
    ];
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut turn = 0;
    while !rest.is_empty() {
        let take = sizes[turn % sizes.len()].min(rest.len());
        turn += 1;
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                Err(_) => return out,
            }
        }
    }
    while let Ok(Some(item)) = codec.decode_eof(&mut buf) {
        out.push(item);
    }
    out
}

fn check_round_trip(codec: &mut MessageCodec, message: &Message) {
    let mut wire = BytesMut::new();
    match codec.encode(message, &mut wire) {
        Ok(()) => {}
        // Unknown messages lost their payload on decode and are not meant to be re-sent.
        Err(_) if matches!(message, Message::Unknown { .. }) => return,
        Err(e) => panic!("decoded message {message:?} failed to encode: {e}"),
    }
    match codec.decode(&mut wire) {
        Ok(Some(again)) => assert_eq!(&again, message, "round trip changed the message"),
        other => panic!("re-encoded {message:?} decoded as {other:?}"),
    }
    assert!(wire.is_empty(), "re-encoded message left {} bytes", wire.len());
}
