//! The session's state file: which torrents the daemon holds and how each was set, so a
//! restart brings them all back. Pure data and its atomic write; no actor code.
//!
//! `STATE/session.json` lists the torrents; each `.torrent` (given, or fetched for a magnet
//! link) is kept beside it as `STATE/torrents/INFOHASH.torrent`. Progress is not here: each
//! torrent's own resume file, beside its data, says which pieces are verified.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state file's format version.
pub const STATE_VERSION: u32 = 1;

/// Largest state file read back, against a file that grew absurd.
const MAX_STATE_BYTES: u64 = 64 << 20;

/// Everything the session keeps between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    pub version: u32,
    pub settings: SavedSettings,
    pub torrents: Vec<SavedTorrent>,
}

/// The daemon-wide limits, in bytes per second (0 for none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSettings {
    pub upload_limit: u64,
    pub download_limit: u64,
}

/// One torrent as the session holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedTorrent {
    /// Hex info-hash: the torrent's id.
    pub info_hash: String,
    pub name: String,
    /// The magnet link it was added by, if any (its `x.pe` peers are used at every
    /// start).
    pub magnet: Option<String>,
    /// Whether `torrents/INFOHASH.torrent` holds the metadata.
    pub has_torrent_file: bool,
    /// A v2 or hybrid torrent's whole v2 info-hash (64 hex digits), so that when its kept
    /// `.torrent` cannot be read its metadata can be fetched again under it (absent for v1
    /// torrents and in older state files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_hash_v2: Option<String>,
    /// The sub-folder of the download root, relative (`""` for the root).
    pub dir: String,
    pub paused: bool,
    /// A magnet link added to choose files: its metadata is in, no download until told.
    pub awaiting_files: bool,
    /// Selected file indices; `None` for every file.
    pub selection: Option<Vec<u32>>,
    /// High-priority file indices, sorted (absent in older state files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub high_priority: Vec<u32>,
    /// This torrent's own seeding goal, if set (else the daemon's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_goal: Option<super::SeedGoal>,
    /// It reached its seeding goal and stopped: not started again until resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    pub labels: Vec<String>,
    pub upload_limit: u64,
    pub download_limit: u64,
    /// Unix seconds.
    pub added_at: u64,
    /// Totals over every run before this one.
    pub uploaded: u64,
    pub downloaded: u64,
    /// Seconds seeded over every run before this one (absent in older state files).
    #[serde(default)]
    pub seeded_secs: u64,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a state file of this version: {message}")]
    Format { path: String, message: String },
}

/// Where things live in the state folder.
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    pub fn session_file(&self) -> PathBuf {
        self.0.join("session.json")
    }

    pub fn torrent_file(&self, info_hash_hex: &str) -> PathBuf {
        self.0
            .join("torrents")
            .join(format!("{info_hash_hex}.torrent"))
    }

    /// Reads the session, or an empty one when there is no file yet.
    pub fn load(&self) -> Result<SavedSession, StateError> {
        let path = self.session_file();
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SavedSession {
                    version: STATE_VERSION,
                    ..SavedSession::default()
                })
            }
            Err(e) => return Err(io(e)),
        };
        let mut bytes = Vec::new();
        use std::io::Read;
        file.take(MAX_STATE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let saved: SavedSession =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Format {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        if saved.version != STATE_VERSION {
            return Err(StateError::Format {
                path: path.display().to_string(),
                message: format!("version {}", saved.version),
            });
        }
        Ok(saved)
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one:
/// a temporary file beside it, synced, renamed over it, and the folder synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// A paused torrent `film` in `films`, added by a `.torrent`, files 0 and 2 chosen.
#[cfg(test)]
pub(crate) fn sample_torrent() -> SavedTorrent {
    SavedTorrent {
        info_hash: "ab".repeat(20),
        name: "film".into(),
        magnet: None,
        has_torrent_file: true,
        info_hash_v2: None,
        dir: "films".into(),
        paused: true,
        awaiting_files: false,
        selection: Some(vec![0, 2]),
        high_priority: vec![2],
        seed_goal: Some(super::SeedGoal {
            ratio: Some(1.5),
            time_secs: None,
        }),
        finished: false,
        labels: vec!["x".into()],
        upload_limit: 5,
        download_limit: 6,
        added_at: 7,
        uploaded: 8,
        downloaded: 9,
        seeded_secs: 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedSession {
        SavedSession {
            version: STATE_VERSION,
            settings: SavedSettings {
                upload_limit: 1000,
                download_limit: 0,
            },
            torrents: vec![sample_torrent()],
        }
    }

    #[test]
    fn a_saved_session_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir(dir.path().to_path_buf());
        assert!(state.load().unwrap().torrents.is_empty());
        let saved = sample();
        write_atomically(&state.session_file(), &serde_json::to_vec(&saved).unwrap()).unwrap();
        assert_eq!(state.load().unwrap(), saved);
    }

    #[test]
    fn garbage_or_another_version_is_an_error_not_an_empty_session() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir(dir.path().to_path_buf());
        std::fs::write(state.session_file(), b"{not json").unwrap();
        assert!(matches!(state.load(), Err(StateError::Format { .. })));
        let mut other = sample();
        other.version = 99;
        std::fs::write(state.session_file(), serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(matches!(state.load(), Err(StateError::Format { .. })));
    }
}
