//! Fuzzes what the engine reads back at start: the resume file (`ResumeData::parse`), the
//! part file's header, and the decision `plan_start` takes from them and from what the
//! files on disk look like.
//!
//! Nothing may panic, and the decision must keep the promises the start-up check relies
//! on: a piece is trusted only if the resume file claims it and every file it touches is
//! as recorded (or, for a shared piece, in an unchanged part file); a piece not trusted
//! that touches a file holding data is hashed; nothing is both. An accepted resume file
//! costs work in proportion to the torrent, never to what the file claims.
//!
//! Input layout (see `seeds/resume/` for examples):
//!
//! ```text
//! 0       mode: bit 0 set = structured resume data, clear = the rest is JSON text;
//!         bit 1 set = the rest is also tried as a part-file header
//! 1..3    piece length - 1, big-endian u16
//! 3       number of files - 1 (mod 6)
//! then, per file, 4 bytes: length (big-endian u16, times 1 + flags >> 5),
//!         flags (bit 0 padding; bits 1-2: 0 absent now, 1 the recorded size and time,
//!         2 another size, 3 a size but no time), and a modification time
//! then    1 byte: the part file now (0: none, else its size in 4 KiB and its time)
//! rest    JSON text, or bytes that build resume data
//! ```
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use torrent_actors::engine::parts::PartSlots;
use torrent_actors::engine::resume::{plan_start, FileRecord, ResumeData, RESUME_VERSION};
use torrent_actors::layout::Layout;
use torrent_actors::metainfo::SafePath;
use torrent_actors::wire::Bitfield;
use torrent_actors::InfoHash;

/// The torrent every input's resume file should belong to.
const INFO_HASH: InfoHash = InfoHash([7; 20]);

/// Larger torrents add nothing but time per input.
const MAX_PIECES: u64 = 4096;

/// A torrent shape and the files as they are on disk now.
struct Disk {
    layout: Layout,
    before: Vec<FileRecord>,
    parts_before: Option<FileRecord>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((disk, rest)) = read_disk(rest) else {
        return;
    };
    if mode & 2 != 0 {
        check_parts_header(&disk.layout, rest);
    }
    let parsed = if mode & 1 == 0 {
        ResumeData::parse(rest, INFO_HASH, &disk.layout).ok()
    } else {
        let Ok(built) = build_resume(&mut Unstructured::new(rest), &disk) else {
            return;
        };
        let parsed = ResumeData::parse(&built.to_json(), INFO_HASH, &disk.layout).ok();
        // What we write and accept comes back unchanged.
        if let Some(p) = &parsed {
            assert_eq!(p, &built);
        }
        parsed
    };
    if let Some(resume) = &parsed {
        check_accepted(resume, &disk.layout);
    }
    check_plan(&disk, parsed.as_ref());
    // Whatever the resume file says, a run without one decides the same on its own.
    check_plan(&disk, None);
});

/// Reads the torrent shape and the state of its files from the input's header.
fn read_disk(bytes: &[u8]) -> Option<(Disk, &[u8])> {
    let (head, mut rest) = bytes.split_at_checked(3)?;
    let piece_length = u64::from(u16::from_be_bytes([head[0], head[1]])) + 1;
    let count = usize::from(head[2] % 6) + 1;
    let mut files = Vec::with_capacity(count);
    let mut before = Vec::with_capacity(count);
    for i in 0..count {
        let (f, tail) = rest.split_at_checked(4)?;
        rest = tail;
        let length = u64::from(u16::from_be_bytes([f[0], f[1]])) * (1 + u64::from(f[2] >> 5));
        let padding = f[2] & 1 != 0;
        let mtime = u128::from(f[3]);
        before.push(match (f[2] >> 1) & 3 {
            0 => FileRecord {
                size: None,
                mtime_ns: None,
            },
            1 => FileRecord {
                size: Some(length),
                mtime_ns: Some(mtime),
            },
            2 => FileRecord {
                size: Some(length / 2),
                mtime_ns: Some(mtime),
            },
            _ => FileRecord {
                size: Some(length),
                mtime_ns: None,
            },
        });
        let path = SafePath::new(&["t".to_string(), format!("f{i}")]).ok()?;
        files.push((path, length, padding));
    }
    let (&parts, rest) = rest.split_first()?;
    let parts_before = (parts != 0).then(|| FileRecord {
        size: Some(u64::from(parts) * 4096),
        mtime_ns: Some(u128::from(parts)),
    });
    let layout = Layout::new(piece_length, files).ok()?;
    if u64::from(layout.num_pieces()) > MAX_PIECES {
        return None;
    }
    Some((
        Disk {
            layout,
            before,
            parts_before,
        },
        rest,
    ))
}

/// Resume data mostly shaped like the torrent, with fields the fuzzer may push off: a
/// wrong version or hash, piece ranges anywhere, file records like or unlike the disk.
fn build_resume(u: &mut Unstructured, disk: &Disk) -> Result<ResumeData> {
    let layout = &disk.layout;
    let n = layout.num_pieces();
    let near = |u: &mut Unstructured, v: u32| -> Result<u32> {
        Ok(match u.int_in_range(0u8..=7)? {
            0 => u.arbitrary()?,
            1 => v.wrapping_add(1),
            _ => v,
        })
    };
    let version = near(u, RESUME_VERSION)?;
    let info_hash = if u.ratio(1, 16)? {
        InfoHash(u.arbitrary()?).to_hex()
    } else {
        INFO_HASH.to_hex()
    };
    let piece_length = near(u, layout.piece_length())?;
    let num_pieces = near(u, n)?;
    let mut verified = Vec::new();
    for _ in 0..u.int_in_range(0u8..=12)? {
        let a = if u.ratio(1, 16)? {
            u.arbitrary()?
        } else {
            u.int_in_range(0..=n)?
        };
        let b = if u.ratio(1, 16)? {
            u.arbitrary()?
        } else {
            u.int_in_range(0..=n)?
        };
        verified.push([a, b]);
    }
    let mut files = Vec::new();
    let mut count = layout.files().len();
    if u.ratio(1, 16)? {
        count = usize::from(u.int_in_range(0u8..=7)?);
    }
    for f in 0..count {
        files.push(match u.int_in_range(0u8..=3)? {
            // Most records say what the disk says now, so pieces can be trusted.
            0 | 1 => disk.before.get(f).copied().unwrap_or(FileRecord {
                size: None,
                mtime_ns: None,
            }),
            2 => FileRecord {
                size: None,
                mtime_ns: None,
            },
            _ => FileRecord {
                size: u.arbitrary()?,
                mtime_ns: u.arbitrary()?,
            },
        });
    }
    let parts = match u.int_in_range(0u8..=2)? {
        0 => None,
        1 => disk.parts_before,
        _ => Some(FileRecord {
            size: u.arbitrary()?,
            mtime_ns: u.arbitrary()?,
        }),
    };
    // Built from `new` so that fields the format adds later keep their own defaults.
    let mut data = ResumeData::new(INFO_HASH, layout, &Bitfield::new(n));
    data.version = version;
    data.info_hash = info_hash;
    data.piece_length = piece_length;
    data.num_pieces = num_pieces;
    data.verified = verified;
    data.files = files;
    data.parts = parts;
    Ok(data)
}

/// What an accepted resume file guarantees: it is this torrent's, and its claims are
/// piece ranges inside the torrent that do not overlap, so turning them into a bitfield
/// is one pass over the pieces whatever the file's size.
fn check_accepted(resume: &ResumeData, layout: &Layout) {
    assert_eq!(resume.version, RESUME_VERSION);
    assert_eq!(resume.info_hash, INFO_HASH.to_hex());
    assert_eq!(resume.piece_length, layout.piece_length());
    assert_eq!(resume.num_pieces, layout.num_pieces());
    assert_eq!(resume.files.len(), layout.files().len());
    let claimed: u64 = resume
        .verified
        .iter()
        .map(|[a, b]| u64::from(b - a) + 1)
        .sum();
    assert!(
        claimed <= u64::from(layout.num_pieces()),
        "{claimed} claims"
    );
    let bits = resume.verified_bitfield();
    assert_eq!(bits.num_pieces(), layout.num_pieces());
    assert_eq!(u64::from(bits.count_ones()), claimed);
}

/// The start-up decision's promises.
fn check_plan(disk: &Disk, resume: Option<&ResumeData>) {
    let layout = &disk.layout;
    let plan = plan_start(layout, resume, &disk.before, disk.parts_before.as_ref());
    assert_eq!(plan.trusted.num_pieces(), layout.num_pieces());
    assert!(
        plan.check.windows(2).all(|w| w[0] < w[1]),
        "check not ascending"
    );
    let claimed = resume.map(ResumeData::verified_bitfield);
    let slots = PartSlots::new(layout);
    let files = layout.files();
    for piece in layout.pieces() {
        let i = piece.get();
        let trusted = plan.trusted.has(i);
        let checked = plan.check.binary_search(&piece).is_ok();
        assert!(!(trusted && checked), "piece {i} both trusted and checked");
        let spans = layout.piece_spans(piece);
        if trusted {
            let (Some(resume), Some(claimed)) = (resume, &claimed) else {
                panic!("piece {i} trusted without a resume file");
            };
            assert!(claimed.has(i), "piece {i} trusted but never claimed");
            let in_slot = slots.slot_offset(piece).is_some();
            for span in &spans {
                let f = span.file;
                if files[f].padding {
                    continue;
                }
                let now = disk.before[f];
                let recorded = resume.files[f];
                let as_recorded =
                    now.size.is_some() && now == recorded && now.size == Some(files[f].length);
                let in_unchanged_parts = now.size.is_none()
                    && recorded.size.is_none()
                    && in_slot
                    && disk.parts_before.is_some()
                    && resume.parts == disk.parts_before;
                assert!(
                    as_recorded || in_unchanged_parts,
                    "piece {i} trusted through file {f}: now {now:?}, recorded {recorded:?}"
                );
            }
        } else {
            let holds_data = spans
                .iter()
                .any(|s| disk.before[s.file].size.is_some_and(|n| n > 0));
            if holds_data {
                assert!(checked, "piece {i} touches existing data and is not hashed");
            }
        }
    }
}

/// The part file's header check must not panic, and accepts the header we write.
fn check_parts_header(layout: &Layout, bytes: &[u8]) {
    let slots = PartSlots::new(layout);
    let _ = slots.check_header(bytes);
    assert_eq!(slots.check_header(&slots.header()), Ok(()));
}
