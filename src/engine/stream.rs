//! Streaming one file while it downloads: a [`StreamReader`] reads a byte range of one
//! file, a piece at a time, through its torrent's Coordinator, which answers only from
//! verified pieces (it owns the `have` bitfield) and reads them from the FileReader.
//! A read that reaches a piece not yet verified waits for it, bounded in time, while the
//! Coordinator makes the piece and a read-ahead window after it time-critical in the
//! picker. The reader holds no state of the engine's: it names its position with each
//! read, and tells the Coordinator when it is dropped so its window stops counting.
//!
//! Nothing here parses input from strangers; `serve` validates ranges and file indices
//! before it makes a reader (`StreamReader::new` checks the file index again).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use bytes::Bytes;
use futures::Stream;

use super::messages::{StorageError, StreamClosed, StreamRead};
use crate::layout::Layout;

/// Names one open stream for the Coordinator's window table; never reused in a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// A fresh id.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        StreamId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Most streams a torrent serves at once; one more is refused
/// ([`StreamError::TooManyStreams`]), which bounds the Coordinator's windows and waiters.
pub const MAX_STREAMS: usize = 16;

/// Bytes read ahead of a stream's position: the window made time-critical.
pub const READ_AHEAD_BYTES: u64 = 8 << 20;

/// Most pieces in one stream's window, whatever the piece length.
pub const MAX_WINDOW_PIECES: u32 = 32;

/// Most bytes one read returns: the memory a read in flight costs.
pub const MAX_READ: u32 = 256 * 1024;

/// How long a read waits for its piece by default before giving up. A player whose read
/// failed asks again with a range, as players do after a stall. It is also the longest a
/// stream whose player went away keeps its window where the server cannot watch the
/// connection (`serve` and `get --stream` watch theirs and end the read at once).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// How long a read may wait for its piece before the piece counts as stalled: its
/// blocks are then asked of up to four fast peers at once rather than two, so one slow
/// or silent holder cannot hold the player until the peer's 30 s request timeout.
pub const STALL_AFTER: Duration = Duration::from_secs(2);

/// Why a stream read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// The file index is not one of the torrent's files.
    #[error("no file {0} in this torrent")]
    NoSuchFile(usize),
    /// The byte range is outside the file.
    #[error("bytes {start}..{end} are outside the file of {length} bytes")]
    OutOfRange {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The file's length.
        length: u64,
    },
    /// The piece belongs only to files not selected for download, so it never comes.
    #[error("the file is not selected for download; select it to stream it")]
    NotSelected,
    /// The piece did not arrive in time.
    #[error("piece {piece} did not arrive within {} s", wait.as_secs())]
    TimedOut {
        /// The piece waited for.
        piece: u32,
        /// How long the read waited.
        wait: Duration,
    },
    /// The torrent already serves [`MAX_STREAMS`] streams.
    #[error("{0} streams of this torrent are open; close one")]
    TooManyStreams(usize),
    /// The torrent is stopping or gone.
    #[error("the torrent is not running")]
    Stopped,
    /// The verified piece could not be read from disk.
    #[error("cannot read the file: {0}")]
    Storage(#[from] StorageError),
}

/// Where a stream reads from: its torrent's Coordinator (as two recipients) and the
/// layout that maps file bytes to pieces.
#[derive(Clone)]
pub struct StreamSource {
    /// Reads from verified pieces, waiting for missing ones.
    pub read: Recipient<StreamRead>,
    /// Told when a reader goes, so its window stops counting.
    pub close: Recipient<StreamClosed>,
    /// The torrent's piece and file maths.
    pub layout: Arc<Layout>,
}

impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSource")
            .field("files", &self.layout.files().len())
            .finish_non_exhaustive()
    }
}

/// One piece-aligned read: `length` bytes at `offset` in `piece`, with the window of
/// pieces to make time-critical after it. Pure, so the maths is tested alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// The piece holding the first byte.
    pub piece: u32,
    /// Offset of the first byte in the piece.
    pub offset: u32,
    /// Bytes to read: to the end of the piece, of the range or [`MAX_READ`], whichever
    /// comes first.
    pub length: u32,
    /// The last piece of the read-ahead window (inclusive), never past the file.
    pub window_end: u32,
}

/// The read at byte `pos` of `file` (its offset in the torrent and length), reading up
/// to `end` (exclusive, in the file); `None` at or past `end`.
pub fn plan_read(layout: &Layout, file: usize, pos: u64, end: u64) -> Option<ReadPlan> {
    let entry = layout.files().get(file)?;
    let end = end.min(entry.length);
    if pos >= end {
        return None;
    }
    let piece_length = u64::from(layout.piece_length());
    let at = entry.offset + pos;
    let piece = (at / piece_length) as u32;
    let offset = (at % piece_length) as u32;
    let in_piece = piece_length - u64::from(offset);
    let length = in_piece.min(end - pos).min(u64::from(MAX_READ)) as u32;
    let last_of_file = layout.file_pieces(file).end.saturating_sub(1);
    let ahead = (READ_AHEAD_BYTES / piece_length).clamp(1, u64::from(MAX_WINDOW_PIECES)) as u32;
    Some(ReadPlan {
        piece,
        offset,
        length,
        window_end: piece.saturating_add(ahead).min(last_of_file).max(piece),
    })
}

/// Reads one file of a torrent from verified pieces; see the module documentation.
/// Dropping it closes the stream.
pub struct StreamReader {
    source: StreamSource,
    id: StreamId,
    file: usize,
    /// How long one read waits for its piece.
    wait: Duration,
}

impl StreamReader {
    /// A reader of `file`; fails if the torrent has no such file.
    pub fn new(source: StreamSource, file: usize, wait: Duration) -> Result<Self, StreamError> {
        if file >= source.layout.files().len() {
            return Err(StreamError::NoSuchFile(file));
        }
        Ok(Self {
            source,
            id: StreamId::next(),
            file,
            wait,
        })
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.source.layout.files()[self.file].length
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The bytes at `pos`, up to `end` (exclusive) and at most one piece or
    /// [`MAX_READ`]; empty at or past `end`. Waits for the piece if it is not verified.
    pub async fn read_at(&self, pos: u64, end: u64) -> Result<Bytes, StreamError> {
        self.read_within(pos, end, self.wait).await
    }

    /// As [`StreamReader::read_at`], waiting at most `wait` for the piece (zero: only
    /// if it is verified already; the window is registered all the same).
    pub async fn read_within(
        &self,
        pos: u64,
        end: u64,
        wait: Duration,
    ) -> Result<Bytes, StreamError> {
        let length = self.len();
        if pos > length || end > length {
            return Err(StreamError::OutOfRange {
                start: pos,
                end,
                length,
            });
        }
        let Some(plan) = plan_read(&self.source.layout, self.file, pos, end) else {
            return Ok(Bytes::new());
        };
        let msg = StreamRead {
            stream: self.id,
            plan,
            wait,
        };
        // The Coordinator bounds the wait; the margin covers the read from disk.
        match tokio::time::timeout(wait + Duration::from_secs(30), self.source.read.send(msg)).await
        {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StreamError::Stopped),
            Err(_) => Err(StreamError::TimedOut {
                piece: plan.piece,
                wait,
            }),
        }
    }

    /// The bytes `start..end` of the file as a stream of chunks, read in order.
    pub fn into_stream(
        self,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, StreamError>> {
        futures::stream::unfold(
            (self, start, false),
            move |(reader, pos, failed)| async move {
                if failed || pos >= end {
                    return None;
                }
                match reader.read_at(pos, end).await {
                    Ok(bytes) if bytes.is_empty() => None,
                    Ok(bytes) => {
                        let next = pos + bytes.len() as u64;
                        Some((Ok(bytes), (reader, next, false)))
                    }
                    Err(e) => Some((Err(e), (reader, pos, true))),
                }
            },
        )
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.source.close.do_send(StreamClosed { stream: self.id });
    }
}

/// The pieces to make time-critical for a set of streams, most urgent first, and how
/// many of them are urgent: first the pieces readers wait for now (`waiting`), then
/// the windows interleaved by distance from each stream's position, so every stream's
/// next pieces come before any stream's far ones. `windows` holds each stream's
/// position piece and last window piece, inclusive.
pub fn critical_order(waiting: &[u32], windows: &[(u32, u32)]) -> (Vec<u32>, usize) {
    let mut order: Vec<u32> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &p in waiting {
        if seen.insert(p) {
            order.push(p);
        }
    }
    let urgent = order.len();
    let widest = windows
        .iter()
        .map(|&(a, b)| b.saturating_sub(a))
        .max()
        .unwrap_or(0);
    for d in 0..=widest {
        for &(first, last) in windows {
            let p = first.saturating_add(d);
            if p <= last && seen.insert(p) {
                order.push(p);
            }
        }
    }
    (order, urgent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::SafePath;

    fn layout(piece_length: u64, files: &[u64]) -> Layout {
        Layout::new(
            piece_length,
            files
                .iter()
                .enumerate()
                .map(|(i, &len)| (SafePath::new(&[&format!("f{i}")]).unwrap(), len, false)),
        )
        .unwrap()
    }

    #[test]
    fn a_read_stops_at_the_piece_end_the_range_end_and_the_read_cap() {
        let l = layout(1 << 20, &[100, 5 << 20]);
        // File 1 starts 100 bytes into piece 0.
        let plan = plan_read(&l, 1, 0, 5 << 20).unwrap();
        assert_eq!((plan.piece, plan.offset), (0, 100));
        assert_eq!(plan.length, MAX_READ);
        let plan = plan_read(&l, 1, (1 << 20) - 110, 5 << 20).unwrap();
        assert_eq!(
            (plan.piece, plan.offset, plan.length),
            (0, (1 << 20) - 10, 10)
        );
        let plan = plan_read(&l, 1, 2 << 20, (2 << 20) + 7).unwrap();
        assert_eq!(plan.length, 7);
        assert_eq!(plan_read(&l, 1, 5 << 20, 5 << 20), None);
        assert_eq!(plan_read(&l, 9, 0, 1), None);
    }

    #[test]
    fn the_window_ends_at_the_files_last_piece() {
        let l = layout(1 << 20, &[3 << 20, 20 << 20]);
        let plan = plan_read(&l, 0, 0, 3 << 20).unwrap();
        assert_eq!(plan.window_end, 2);
        let plan = plan_read(&l, 1, 0, 20 << 20).unwrap();
        assert_eq!(plan.piece, 3);
        assert_eq!(plan.window_end, 3 + (READ_AHEAD_BYTES >> 20) as u32);
        let tiny = layout(16 * 1024, &[100 << 20]);
        let plan = plan_read(&tiny, 0, 0, 100 << 20).unwrap();
        assert_eq!(plan.window_end, MAX_WINDOW_PIECES);
    }

    #[test]
    fn waiting_pieces_come_first_then_windows_by_distance() {
        let (order, urgent) = critical_order(&[12, 3], &[(3, 5), (10, 13)]);
        assert_eq!(order, vec![12, 3, 10, 4, 11, 5, 13]);
        assert_eq!(urgent, 2);
        assert_eq!(critical_order(&[], &[]), (vec![], 0));
    }
}
