//! `.torrent` files for tests: made by mktorrent, a tool nobody on the project wrote, and
//! re-pointed at another tracker without touching the info dictionary.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use torrent_actors::bencode::{self, write_bytes};
use torrent_actors::metainfo::Metainfo;
use torrent_actors::InfoHash;

use super::process::run_with_timeout;

/// Makes `out_torrent` from the file or folder `payload_root` with pieces of
/// `2^piece_exp` bytes and `announce_urls` as trackers (one tier each, in order; none at
/// all is allowed). Returns the info-hash.
///
/// The creation date is left out, so the same payload and piece size always give the same
/// file. A tracker's port is only known once it runs, and it must know the info-hash
/// before that, so the usual order is: make the torrent without trackers, start the
/// tracker with the hash, then [`with_announce`].
pub fn make_torrent(
    payload_root: &Path,
    out_torrent: &Path,
    piece_exp: u32,
    announce_urls: &[String],
) -> InfoHash {
    make_torrent_with(payload_root, out_torrent, piece_exp, announce_urls, false)
}

/// [`make_torrent`], with the BEP 27 private flag set.
pub fn make_private_torrent(payload_root: &Path, out_torrent: &Path, piece_exp: u32) -> InfoHash {
    make_torrent_with(payload_root, out_torrent, piece_exp, &[], true)
}

fn make_torrent_with(
    payload_root: &Path,
    out_torrent: &Path,
    piece_exp: u32,
    announce_urls: &[String],
    private: bool,
) -> InfoHash {
    assert!(
        (15..=28).contains(&piece_exp),
        "mktorrent takes piece exponents 15..=28, not {piece_exp}"
    );
    // mktorrent refuses to overwrite its output.
    if out_torrent.exists() {
        fs::remove_file(out_torrent)
            .unwrap_or_else(|e| panic!("removing old {}: {e}", out_torrent.display()));
    }
    let mut cmd = Command::new("mktorrent");
    cmd.arg("--no-date")
        .arg(format!("--piece-length={piece_exp}"))
        .arg("--output")
        .arg(out_torrent);
    for url in announce_urls {
        cmd.arg(format!("--announce={url}"));
    }
    if private {
        cmd.arg("--private");
    }
    cmd.arg(payload_root);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "mktorrent failed ({}) for {}:\n{}{}",
        out.status,
        payload_root.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    read_metainfo(out_torrent).info_hash
}

/// Parses a `.torrent` file with the crate's own reader.
pub fn read_metainfo(torrent: &Path) -> Metainfo {
    let bytes = fs::read(torrent).unwrap_or_else(|e| panic!("reading {}: {e}", torrent.display()));
    Metainfo::from_bytes(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", torrent.display()))
}

/// Writes `dst`: a copy of `src` whose only tracker is `announce`. Every other top-level
/// key, the `info` dictionary above all, is copied byte for byte, so the info-hash stays
/// the same; that is checked before returning it.
pub fn with_announce(src: &Path, dst: &Path, announce: &str) -> InfoHash {
    let bytes = fs::read(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    let top = bencode::decode(&bytes).unwrap_or_else(|e| panic!("decoding {}: {e}", src.display()));
    let dict = top
        .as_dict()
        .unwrap_or_else(|| panic!("{} is not a bencoded dictionary", src.display()));
    // Keys are written in sorted order with `announce` in its sorted place, as BEP 3
    // asks; `announce-list` is dropped so clients cannot fall back to the old trackers.
    let mut entries: Vec<(&[u8], Vec<u8>)> = dict
        .iter()
        .filter(|(key, _)| *key != b"announce" && *key != b"announce-list")
        .map(|(key, value)| (key, value.raw().to_vec()))
        .collect();
    let mut url = Vec::new();
    write_bytes(&mut url, announce.as_bytes());
    entries.push((&b"announce"[..], url));
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = vec![b'd'];
    for (key, value) in entries {
        write_bytes(&mut out, key);
        out.extend_from_slice(&value);
    }
    out.push(b'e');
    fs::write(dst, &out).unwrap_or_else(|e| panic!("writing {}: {e}", dst.display()));

    let before = Metainfo::from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", src.display()))
        .info_hash;
    let after = read_metainfo(dst);
    assert_eq!(
        after.info_hash,
        before,
        "re-pointing {} changed its info-hash",
        src.display()
    );
    assert_eq!(after.trackers, vec![vec![announce.to_string()]]);
    after.info_hash
}
