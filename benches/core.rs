//! Throughput of the protocol core on inputs shaped like real ones: a `.torrent` with
//! many files and pieces through bencode and metainfo validation.
//!
//! `cargo bench --bench core`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use torrent_actors::bencode::{self, BValue};
use torrent_actors::metainfo::Metainfo;

/// A multi-file torrent: `files` files of 1 MiB in nested folders, 256 KiB pieces.
fn torrent(files: usize) -> Vec<u8> {
    let file_len = 1 << 20;
    let piece_len = 256 * 1024;
    let pieces = files * file_len / piece_len;
    let list = (0..files)
        .map(|i| {
            BValue::dict([
                ("length", BValue::Int(file_len as i64)),
                (
                    "path",
                    BValue::List(vec![
                        BValue::string(&format!("disc {}", i / 100)),
                        BValue::string(&format!("track {i:05}.flac")),
                    ]),
                ),
            ])
        })
        .collect();
    let info = BValue::dict([
        ("name", BValue::string("collection")),
        ("piece length", BValue::Int(piece_len as i64)),
        ("pieces", BValue::Bytes(vec![0xa5; pieces * 20])),
        ("files", BValue::List(list)),
    ]);
    BValue::dict([
        ("announce", BValue::string("http://127.0.0.1:6969/announce")),
        ("info", info),
    ])
    .encode()
}

fn core(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    for files in [10, 1_000, 10_000] {
        let bytes = torrent(files);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("bencode_decode", files),
            &bytes,
            |b, bytes| b.iter(|| bencode::decode(bytes).map(|v| v.raw().len())),
        );
        group.bench_with_input(
            BenchmarkId::new("metainfo_parse", files),
            &bytes,
            |b, bytes| b.iter(|| Metainfo::from_bytes(bytes).map(|m| m.info.layout.num_pieces())),
        );
    }
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
