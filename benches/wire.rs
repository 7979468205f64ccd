//! Cost of the peer wire codec on the two streams a connection carries: `piece` messages
//! with 16 KiB blocks (measured in bytes per second, since a download is bounded by how
//! fast blocks go through) and small control messages, `have` and `request`, which a
//! swarm sends in the thousands (measured in messages per second).
//!
//! Each stream is decoded twice. `decode` hands `MessageCodec` a buffer that already holds
//! every frame, so it measures the codec alone, which never copies block data. `framed_read`
//! goes through `tokio_util::codec::FramedRead` over an in-memory reader, as a Peer's read
//! half does over its socket, so it also pays the copy from the reader into the frame
//! buffer and the buffer growth: that is what a real connection costs, less the system call.
//!
//! `cargo bench --bench wire`

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;
use tokio_util::codec::{Decoder, Encoder, FramedRead};
use torrent_actors::wire::{Block, BlockRequest, Message, MessageCodec, BLOCK_SIZE};

/// Piece messages per iteration: 1 MiB of block data, four 256 KiB pieces.
const PIECE_MESSAGES: u32 = 64;

/// Small messages per iteration.
const SMALL_MESSAGES: u32 = 1024;

/// `PIECE_MESSAGES` full blocks, as a peer serving four pieces in order would send them.
fn piece_messages() -> Vec<Message> {
    let blocks_per_piece = 16;
    (0..PIECE_MESSAGES)
        .map(|i| {
            // Each block a different byte, so nothing downstream can share one buffer.
            let data = Bytes::from(vec![i as u8; BLOCK_SIZE as usize]);
            Message::Piece(Block {
                piece: i / blocks_per_piece,
                offset: (i % blocks_per_piece) * BLOCK_SIZE,
                data,
            })
        })
        .collect()
}

/// Alternating `have` and `request`, the chatter of a busy swarm: every verified piece is
/// announced to every peer, and every block is asked for once.
fn small_messages() -> Vec<Message> {
    (0..SMALL_MESSAGES)
        .map(|i| {
            if i % 2 == 0 {
                Message::Have(i * 7)
            } else {
                Message::Request(BlockRequest {
                    piece: i / 16,
                    offset: (i % 16) * BLOCK_SIZE,
                    length: BLOCK_SIZE,
                })
            }
        })
        .collect()
}

/// The messages as they arrive on the wire, length prefixes and all.
fn encoded(messages: &[Message]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut codec = MessageCodec::default();
    for m in messages {
        if let Err(e) = codec.encode(m, &mut buf) {
            panic!("encoding {m:?} failed: {e}");
        }
    }
    buf.to_vec()
}

/// Encodes every message into `buf`, which keeps its capacity between iterations as a
/// connection's write buffer does.
fn encode_all(messages: &[Message], buf: &mut BytesMut) -> usize {
    buf.clear();
    let mut codec = MessageCodec::default();
    for m in messages {
        if let Err(e) = codec.encode(m, buf) {
            panic!("encoding {m:?} failed: {e}");
        }
    }
    buf.len()
}

/// Decodes every frame of a filled buffer; returns how many, so none is optimised away.
fn decode_all(mut buf: BytesMut) -> usize {
    let mut codec = MessageCodec::default();
    let mut decoded = Vec::with_capacity(PIECE_MESSAGES.max(SMALL_MESSAGES) as usize);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(m)) => decoded.push(m),
            Ok(None) => break,
            Err(e) => panic!("decoding failed: {e}"),
        }
    }
    decoded.len()
}

/// Reads every message from `wire` through `FramedRead`; the decoded messages are kept until
/// the end, as the blocks of a piece are kept by the PieceManager, so the read buffer cannot
/// reuse the memory they share with it.
fn framed_read_all(wire: &[u8]) -> usize {
    futures::executor::block_on(async {
        let mut framed = FramedRead::new(wire, MessageCodec::default());
        let mut decoded = Vec::with_capacity(PIECE_MESSAGES.max(SMALL_MESSAGES) as usize);
        while let Some(m) = framed.next().await {
            match m {
                Ok(m) => decoded.push(m),
                Err(e) => panic!("decoding failed: {e}"),
            }
        }
        decoded.len()
    })
}

fn stream(c: &mut Criterion, name: &str, messages: &[Message], throughput: Throughput) {
    let wire = encoded(messages);
    let mut group = c.benchmark_group(name);
    group.throughput(throughput);

    let mut buf = BytesMut::with_capacity(wire.len());
    group.bench_function("encode", |b| b.iter(|| encode_all(messages, &mut buf)));
    // The copy into a fresh buffer is set-up, not timed: in a real connection it is the
    // socket read, which `framed_read` below does include.
    group.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            decode_all,
            BatchSize::LargeInput,
        )
    });
    group.bench_with_input(
        BenchmarkId::new("framed_read", wire.len()),
        &wire,
        |b, wire| b.iter(|| framed_read_all(wire)),
    );
    group.finish();
}

fn wire(c: &mut Criterion) {
    let pieces = piece_messages();
    let block_bytes = u64::from(PIECE_MESSAGES) * u64::from(BLOCK_SIZE);
    stream(c, "wire_piece_16k", &pieces, Throughput::Bytes(block_bytes));

    let small = small_messages();
    stream(
        c,
        "wire_have_request",
        &small,
        Throughput::Elements(u64::from(SMALL_MESSAGES)),
    );
}

criterion_group!(benches, wire);
criterion_main!(benches);
