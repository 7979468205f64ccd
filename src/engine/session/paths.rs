//! Paths that come from API callers, held inside the download root.
//!
//! Pure apart from reading the filesystem to resolve symbolic links: no actor code. The
//! daemon takes two kinds of path from its callers, a sub-folder to download into and a
//! `.torrent` on the server, and both must stay inside the root it was given, whatever
//! `..`, absolute paths or links they try.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FolderError {
    /// The path leaves the download root, by `..`, an absolute path elsewhere, or a link.
    #[error("{0:?} is outside the download root")]
    Escapes(String),
    /// Not usable as a path at all (a NUL byte, a prefix, too long).
    #[error("{0:?} is not a usable path")]
    Unusable(String),
    /// The path does not exist (for a `.torrent` to read).
    #[error("{0:?} does not exist")]
    Missing(String),
    /// The path is a folder, a FIFO, a device: not a file to read.
    #[error("{0:?} is not a regular file")]
    NotAFile(String),
}

/// Longest path accepted from a caller, in bytes.
const MAX_PATH_BYTES: usize = 1024;

/// A sub-folder of the download root, given relative to it (`""` is the root itself).
/// Returns the cleaned relative form (`a/b`), which is what is stored and shown.
///
/// Only plain names are allowed: no `..`, no root, no `.` tricks; and where the folder
/// already exists, resolving its links must leave it inside `root`.
pub fn sub_folder(root: &Path, rel: &str) -> Result<String, FolderError> {
    if rel.len() > MAX_PATH_BYTES || rel.contains('\0') {
        return Err(FolderError::Unusable(rel.to_string()));
    }
    let mut parts = Vec::new();
    for component in Path::new(rel).components() {
        match component {
            Component::Normal(name) => {
                let name = name
                    .to_str()
                    .ok_or_else(|| FolderError::Unusable(rel.to_string()))?;
                parts.push(name.to_string());
            }
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(FolderError::Escapes(rel.to_string()))
            }
        }
    }
    let clean = parts.join("/");
    // An existing prefix of the folder may be a link out of the root.
    let mut probe = root.to_path_buf();
    for part in &parts {
        probe.push(part);
        match probe.canonicalize() {
            Ok(real) if !real.starts_with(root) => {
                return Err(FolderError::Escapes(rel.to_string()))
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(clean)
}

/// A file on the server named by a caller: absolute, or relative to the root. It must
/// exist and, with every link resolved, lie inside `root` (itself canonical).
pub fn existing_file(root: &Path, given: &str) -> Result<PathBuf, FolderError> {
    if given.is_empty() || given.len() > MAX_PATH_BYTES || given.contains('\0') {
        return Err(FolderError::Unusable(given.to_string()));
    }
    let path = Path::new(given);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    let real = joined
        .canonicalize()
        .map_err(|_| FolderError::Missing(given.to_string()))?;
    if !real.starts_with(root) {
        return Err(FolderError::Escapes(given.to_string()));
    }
    // Only a regular file: opening a FIFO or a device would block or never end.
    if !std::fs::metadata(&real).is_ok_and(|m| m.is_file()) {
        return Err(FolderError::NotAFile(given.to_string()));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        (dir, root)
    }

    #[test]
    fn plain_sub_folders_are_cleaned_and_kept() {
        let (_d, root) = root();
        assert_eq!(sub_folder(&root, "").unwrap(), "");
        assert_eq!(sub_folder(&root, "a/./b/").unwrap(), "a/b");
        assert_eq!(sub_folder(&root, "films").unwrap(), "films");
    }

    #[test]
    fn parent_and_absolute_folders_are_refused() {
        let (_d, root) = root();
        for bad in ["..", "a/../../b", "/etc", "a/..", "/"] {
            assert!(
                matches!(sub_folder(&root, bad), Err(FolderError::Escapes(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            sub_folder(&root, "a\0b"),
            Err(FolderError::Unusable(_))
        ));
        assert!(matches!(
            sub_folder(&root, &"a/".repeat(600)),
            Err(FolderError::Unusable(_))
        ));
    }

    #[test]
    fn a_link_out_of_the_root_is_refused() {
        let (_d, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        assert!(matches!(
            sub_folder(&root, "out/films"),
            Err(FolderError::Escapes(_))
        ));
        std::fs::write(outside.path().join("x.torrent"), b"d").unwrap();
        assert!(matches!(
            existing_file(&root, "out/x.torrent"),
            Err(FolderError::Escapes(_))
        ));
    }

    #[test]
    fn server_files_must_exist_inside_the_root() {
        let (_d, root) = root();
        std::fs::write(root.join("a.torrent"), b"d").unwrap();
        assert_eq!(
            existing_file(&root, "a.torrent").unwrap(),
            root.join("a.torrent")
        );
        let absolute = root.join("a.torrent").display().to_string();
        assert!(existing_file(&root, &absolute).is_ok());
        assert!(matches!(
            existing_file(&root, "/etc/passwd"),
            Err(FolderError::Escapes(_))
        ));
        assert!(matches!(
            existing_file(&root, "../a.torrent"),
            Err(FolderError::Missing(_)) | Err(FolderError::Escapes(_))
        ));
        assert!(matches!(
            existing_file(&root, "nope.torrent"),
            Err(FolderError::Missing(_))
        ));
        // A FIFO would block the reader forever; a folder is no file either.
        let fifo = root.join("pipe.torrent");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        assert!(matches!(
            existing_file(&root, "pipe.torrent"),
            Err(FolderError::NotAFile(_))
        ));
        std::fs::create_dir(root.join("dir.torrent")).unwrap();
        assert!(matches!(
            existing_file(&root, "dir.torrent"),
            Err(FolderError::NotAFile(_))
        ));
    }
}
