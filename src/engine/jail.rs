//! The download folder as a directory handle: every file the engine opens, creates,
//! truncates, renames or deletes for a torrent is reached *beneath* that handle, never by
//! a path string handed to the kernel from the top.
//!
//! A [`SafePath`](crate::metainfo::SafePath) is already made of plain names, so joining
//! it under the folder cannot climb out of it. The jail closes what a string check
//! cannot: a symbolic link planted inside the folder (by another program, another user,
//! or a torrent downloaded there earlier) between two runs. Every open resolves its path
//! relative to the folder's handle with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`,
//! so the kernel refuses any symlink on the way and any step above the folder. On a kernel
//! without `openat2` (before Linux 5.6, or where a seccomp filter hides it) the path is
//! walked one name at a time with `openat(O_NOFOLLOW)`, which refuses the same links.
//!
//! The jail also checks every name it is given, whatever made it: a name that is empty,
//! `.`, `..`, longer than 255 bytes or holding `/` or NUL is refused before any system
//! call. The download folder itself is trusted: the user chose it, and it may be a link.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::metainfo::MAX_COMPONENT_BYTES;

/// How a path beneath the folder is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// One `openat2` call; the kernel refuses links and escapes.
    Openat2,
    /// One `openat(O_NOFOLLOW)` per name: for kernels without `openat2`.
    Walk,
}

/// Set once `openat2` is found missing, so later opens go straight to the walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// What an open may do to the file it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write, made empty if absent, its contents kept if present.
    Create,
    /// Write only, a new file: fails if anything (a file or a link) has the name.
    CreateNew,
}

impl Access {
    fn flags(self) -> OFlags {
        match self {
            Access::Read => OFlags::RDONLY,
            Access::ReadWrite => OFlags::RDWR,
            Access::Create => OFlags::RDWR | OFlags::CREATE,
            Access::CreateNew => OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        }
    }
}

/// A download folder, held open. Cheap to clone: clones share the handle.
#[derive(Debug, Clone)]
pub struct Jail {
    /// The folder's handle; every path is resolved beneath it.
    dir: Arc<OwnedFd>,
    /// The folder's path, for messages only: no open goes through it.
    shown: PathBuf,
    /// Forced to [`Resolver::Walk`] in tests of the fallback; `None` picks by kernel.
    resolver: Option<Resolver>,
}

/// The error for a name the jail will not pass to the kernel.
fn unsafe_name(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("unsafe path component {name:?}"),
    )
}

/// Checks one name of a path inside the folder, as it will reach the kernel.
pub fn check_name(name: &str) -> io::Result<()> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_COMPONENT_BYTES
        && !name.contains(['/', '\0']);
    if plain {
        Ok(())
    } else {
        Err(unsafe_name(name))
    }
}

/// An OS error with the jail's reading of it: a link met on the way says so plainly.
/// (ELOOP is what `RESOLVE_NO_SYMLINKS` and `O_NOFOLLOW` answer for a link; names are
/// checked, so no other path step can loop.)
fn os_error(e: Errno) -> io::Error {
    if e == Errno::LOOP {
        io::Error::other(
            "a symbolic link is in the way; files of a download are never reached through links",
        )
    } else {
        io::Error::from(e)
    }
}

/// The error for a folder on the way that could not be opened: a link there (which
/// `O_NOFOLLOW | O_DIRECTORY` reports as "not a directory") is named as one.
fn folder_error(parent: std::os::fd::BorrowedFd<'_>, name: &str, e: Errno) -> io::Error {
    let is_link = e == Errno::NOTDIR
        && rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
        });
    os_error(if is_link { Errno::LOOP } else { e })
}

impl Jail {
    /// Opens the folder at `root`, which must exist and be a directory (a link to one is
    /// followed: the user named it).
    pub fn open(root: &Path) -> io::Result<Self> {
        let dir = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            dir: Arc::new(dir),
            shown: root.to_path_buf(),
            resolver: None,
        })
    }

    /// Opens the folder at `root`, creating it and its parents first if need be.
    pub fn create(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Self::open(root)
    }

    /// The folder `rel` beneath this one, made if `create` and need be, as a jail of its
    /// own: a link on the way is refused like any other.
    pub fn subdir<S: AsRef<str>>(&self, rel: &[S], create: bool) -> io::Result<Self> {
        if create {
            self.create_dirs(rel)?;
        }
        let dir = self.open_dir(rel)?;
        Ok(Self {
            dir: Arc::new(dir),
            shown: self.display(rel),
            resolver: self.resolver,
        })
    }

    /// The same folder, resolving with `resolver` whatever the kernel offers: for tests
    /// of the fallback.
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// The folder's path.
    pub fn root(&self) -> &Path {
        &self.shown
    }

    /// The path of `rel` under the folder, for messages.
    pub fn display<S: AsRef<str>>(&self, rel: &[S]) -> PathBuf {
        let mut p = self.shown.clone();
        p.extend(rel.iter().map(AsRef::as_ref));
        p
    }

    fn resolver(&self) -> Resolver {
        match self.resolver {
            Some(r) => r,
            None if NO_OPENAT2.load(Ordering::Relaxed) => Resolver::Walk,
            None => Resolver::Openat2,
        }
    }

    /// Opens `rel` (names, each checked) beneath the folder with `flags`; never follows
    /// a link, never leaves the folder.
    fn open_beneath<S: AsRef<str>>(&self, rel: &[S], flags: OFlags) -> io::Result<OwnedFd> {
        for name in rel {
            check_name(name.as_ref())?;
        }
        // NONBLOCK: a FIFO or device planted under a file's name fails the regular-file
        // check at once instead of blocking the open (it changes nothing for files).
        // (openat2 takes no other flag beside O_PATH.)
        let flags = if flags.contains(OFlags::PATH) {
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW
        } else {
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK
        };
        // openat2 refuses a mode unless the call may create.
        let mode = if flags.contains(OFlags::CREATE) {
            Mode::from_raw_mode(0o666)
        } else {
            Mode::empty()
        };
        if rel.is_empty() {
            return rustix::fs::openat(&*self.dir, ".", flags, mode).map_err(os_error);
        }
        if self.resolver() == Resolver::Openat2 {
            let joined = rel.iter().map(AsRef::as_ref).collect::<Vec<_>>().join("/");
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            let mut retries = 0;
            loop {
                match rustix::fs::openat2(&*self.dir, joined.as_str(), flags, mode, how) {
                    // A rename elsewhere raced the lookup; the kernel asks for a retry.
                    Err(Errno::AGAIN) if retries < 8 => retries += 1,
                    // No openat2 on this kernel: the walk from now on.
                    Err(Errno::NOSYS) if self.resolver.is_none() => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    // A seccomp filter may hide it as EPERM; the walk answers for itself.
                    Err(Errno::PERM) if self.resolver.is_none() => break,
                    other => return other.map_err(os_error),
                }
            }
        }
        self.walk(rel, flags, mode)
    }

    /// The fallback: each folder on the way opened with `O_NOFOLLOW | O_DIRECTORY`, the
    /// last name with `O_NOFOLLOW`, each relative to the one before.
    fn walk<S: AsRef<str>>(&self, rel: &[S], flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let Some((last, folders)) = rel.split_last() else {
            return Err(unsafe_name(""));
        };
        let mut at: Option<OwnedFd> = None;
        for name in folders {
            let parent = at.as_ref().map_or(self.dir.as_fd(), AsFd::as_fd);
            let next = rustix::fs::openat(
                parent,
                name.as_ref(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| folder_error(parent, name.as_ref(), e))?;
            at = Some(next);
        }
        let parent = at.as_ref().map_or(self.dir.as_fd(), AsFd::as_fd);
        rustix::fs::openat(parent, last.as_ref(), flags, mode).map_err(os_error)
    }

    /// Opens the folder `rel` beneath the jail's (the jail's own for an empty `rel`).
    fn open_dir<S: AsRef<str>>(&self, rel: &[S]) -> io::Result<OwnedFd> {
        self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// Opens the file `rel` as `access` says.
    pub fn open_file<S: AsRef<str>>(&self, rel: &[S], access: Access) -> io::Result<File> {
        let fd = self.open_beneath(rel, access.flags())?;
        let file = File::from(fd);
        // A folder or a device where a file should be is refused, not read or written.
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(file)
    }

    /// Creates the folders `rel` names, each beneath the one before; a name already
    /// taken by a folder is fine, by a link or a file is an error.
    pub fn create_dirs<S: AsRef<str>>(&self, rel: &[S]) -> io::Result<()> {
        let mut at: Option<OwnedFd> = None;
        for name in rel {
            let name = name.as_ref();
            check_name(name)?;
            let parent = at.as_ref().map_or(self.dir.as_fd(), AsFd::as_fd);
            match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(os_error(e)),
            }
            let next = rustix::fs::openat(
                parent,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| folder_error(parent, name, e))?;
            at = Some(next);
        }
        Ok(())
    }

    /// The metadata of the file `rel`, or `None` if nothing has that name. A link, or a
    /// folder, where the file should be is an error.
    pub fn metadata<S: AsRef<str>>(&self, rel: &[S]) -> io::Result<Option<Metadata>> {
        match self.open_beneath(rel, OFlags::PATH) {
            Ok(fd) => {
                let meta = File::from(fd).metadata()?;
                if meta.is_file() {
                    Ok(Some(meta))
                } else {
                    Err(io::Error::other("not a regular file"))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the whole file `rel`, refusing one longer than `limit` bytes; `None` if it
    /// does not exist.
    pub fn read<S: AsRef<str>>(&self, rel: &[S], limit: u64) -> io::Result<Option<Vec<u8>>> {
        let file = match self.open_file(rel, Access::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        io::Read::read_to_end(
            &mut io::Read::take(&file, limit.saturating_add(1)),
            &mut bytes,
        )?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::other(format!("longer than {limit} bytes")));
        }
        Ok(Some(bytes))
    }

    /// Splits `rel` into its folder's handle and its last name.
    fn parent_of<'a, S: AsRef<str>>(&self, rel: &'a [S]) -> io::Result<(OwnedFd, &'a str)> {
        let (last, folders) = rel.split_last().ok_or_else(|| unsafe_name(""))?;
        check_name(last.as_ref())?;
        Ok((self.open_dir(folders)?, last.as_ref()))
    }

    /// Deletes the file `rel`: the name itself, which is never followed (a link there is
    /// removed, not what it points to). Returns whether there was one; a folder on the
    /// way that is a link is an error.
    pub fn remove_file<S: AsRef<str>>(&self, rel: &[S]) -> io::Result<bool> {
        let (parent, name) = match self.parent_of(rel) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match rustix::fs::unlinkat(&parent, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(os_error(e)),
        }
    }

    /// Deletes the folder `rel` if it is empty; `Ok(false)` if it is not, or is gone.
    pub fn remove_empty_dir<S: AsRef<str>>(&self, rel: &[S]) -> io::Result<bool> {
        let (parent, name) = match self.parent_of(rel) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(os_error(e)),
        }
    }

    /// Renames `from` to `to`, both beneath the folder; whatever had the name `to` (a
    /// file, or a link, which is not followed) is replaced.
    pub fn rename<S: AsRef<str>, T: AsRef<str>>(&self, from: &[S], to: &[T]) -> io::Result<()> {
        let (from_dir, from_name) = self.parent_of(from)?;
        let (to_dir, to_name) = self.parent_of(to)?;
        rustix::fs::renameat(&from_dir, from_name, &to_dir, to_name).map_err(os_error)
    }

    /// Syncs the folder `rel` (its list of names), after a rename into it.
    pub fn sync_dir<S: AsRef<str>>(&self, rel: &[S]) -> io::Result<()> {
        rustix::fs::fsync(self.open_dir(rel)?).map_err(os_error)
    }

    /// Writes `bytes` as the file `rel` through a temporary file `tmp` beside it, synced
    /// and renamed over the old one: a crash leaves the old file or the new one. A
    /// temporary file left by an earlier crash (or a link put there) is removed first.
    pub fn write_atomically<S: AsRef<str>>(
        &self,
        rel: &[S],
        tmp: &str,
        bytes: &[u8],
    ) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let (last, folders) = rel.split_last().ok_or_else(|| unsafe_name(""))?;
        check_name(last.as_ref())?;
        let tmp_rel: Vec<&str> = folders.iter().map(AsRef::as_ref).chain([tmp]).collect();
        self.remove_file(&tmp_rel)?;
        let write = || -> io::Result<()> {
            let f = self.open_file(&tmp_rel, Access::CreateNew)?;
            f.write_all_at(bytes, 0)?;
            f.sync_all()?;
            self.rename(&tmp_rel, rel)?;
            self.sync_dir(folders)
        };
        write().inspect_err(|_| {
            let _ = self.remove_file(&tmp_rel);
        })
    }

    /// The size in bytes of the filesystem that holds the folder; `None` when it cannot
    /// say.
    pub fn capacity(&self) -> Option<u64> {
        let stats = rustix::fs::fstatvfs(&*self.dir).ok()?;
        let capacity = stats.f_blocks.checked_mul(stats.f_frsize)?;
        (capacity > 0).then_some(capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn both(root: &Path) -> [Jail; 2] {
        let jail = Jail::open(root).unwrap();
        [
            jail.clone().with_resolver(Resolver::Openat2),
            jail.with_resolver(Resolver::Walk),
        ]
    }

    /// A folder with `out/` (the jail) and `secret` beside it, and links inside `out`
    /// that point at `secret` and at the folder that holds it.
    fn planted() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(t.path().join("secret"), b"keep me").unwrap();
        symlink(t.path().join("secret"), out.join("file-link")).unwrap();
        symlink(t.path(), out.join("dir-link")).unwrap();
        (t, out)
    }

    fn kernel_has_openat2(root: &Path) -> bool {
        let dir = Jail::open(root).unwrap().dir;
        let how = ResolveFlags::BENEATH;
        rustix::fs::openat2(&*dir, ".", OFlags::RDONLY, Mode::empty(), how).is_ok()
    }

    #[test]
    fn files_inside_are_made_read_renamed_and_deleted() {
        let t = tempfile::tempdir().unwrap();
        let has = kernel_has_openat2(t.path());
        for (n, jail) in both(t.path()).into_iter().enumerate() {
            if n == 0 && !has {
                continue;
            }
            let d = format!("d{n}");
            jail.create_dirs(&[d.as_str(), "e"]).unwrap();
            jail.create_dirs(&[d.as_str(), "e"]).unwrap();
            let f = jail
                .open_file(&[d.as_str(), "e", "f"], Access::Create)
                .unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"abc", 0).unwrap();
            let meta = jail.metadata(&[d.as_str(), "e", "f"]).unwrap().unwrap();
            assert_eq!(meta.len(), 3);
            assert!(jail.metadata(&[d.as_str(), "nothing"]).unwrap().is_none());
            jail.write_atomically(&[d.as_str(), "g"], "g.tmp", b"xyz")
                .unwrap();
            assert_eq!(jail.read(&[d.as_str(), "g"], 10).unwrap().unwrap(), b"xyz");
            assert!(jail.read(&[d.as_str(), "g"], 2).is_err());
            assert!(jail.remove_file(&[d.as_str(), "e", "f"]).unwrap());
            assert!(!jail.remove_file(&[d.as_str(), "e", "f"]).unwrap());
            assert!(jail.remove_empty_dir(&[d.as_str(), "e"]).unwrap());
            assert!(!jail.remove_empty_dir(&[d.as_str()]).unwrap());
        }
    }

    #[test]
    fn unsafe_names_never_reach_the_kernel() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("out");
        std::fs::create_dir(&root).unwrap();
        for jail in both(&root) {
            let long = "a".repeat(256);
            for bad in ["", ".", "..", "a/b", "a\0", long.as_str()] {
                assert!(jail.open_file(&[bad], Access::Create).is_err(), "{bad:?}");
                assert!(
                    jail.open_file(&[bad, "x"], Access::Create).is_err(),
                    "{bad:?}"
                );
                assert!(jail.create_dirs(&[bad]).is_err(), "{bad:?}");
                assert!(jail.create_dirs(&[bad, "y"]).is_err(), "{bad:?}");
                assert!(jail.remove_file(&["x", bad]).is_err(), "{bad:?}");
            }
            assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        }
        // `..` then a name would be made beside the folder by a walk without the check.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    /// A link that stays inside the folder is refused too: the jail follows no link,
    /// not only the ones that leave (RESOLVE_BENEATH alone would allow this one).
    #[test]
    fn links_inside_the_folder_are_refused_too() {
        let t = tempfile::tempdir().unwrap();
        let has = kernel_has_openat2(t.path());
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::fs::write(t.path().join("real").join("f"), b"x").unwrap();
        symlink("real", t.path().join("in")).unwrap();
        symlink("real/f", t.path().join("g")).unwrap();
        for (n, jail) in both(t.path()).into_iter().enumerate() {
            if n == 0 && !has {
                continue;
            }
            assert!(jail.open_file(&["in", "f"], Access::Read).is_err());
            assert!(jail.open_file(&["g"], Access::Read).is_err());
            assert!(jail.subdir(&["in"], false).is_err());
            assert!(jail.open_file(&["real", "f"], Access::Read).is_ok());
        }
    }

    #[test]
    fn a_fifo_under_a_files_name_is_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.path().join("p"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for jail in both(t.path()) {
            assert!(jail.open_file(&["p"], Access::Read).is_err());
            assert!(jail.read(&["p"], 10).is_err());
        }
    }

    #[test]
    fn planted_links_are_never_followed() {
        let (t, out) = planted();
        let has = kernel_has_openat2(&out);
        for (n, jail) in both(&out).into_iter().enumerate() {
            if n == 0 && !has {
                continue;
            }
            let via_file = ["file-link"];
            let via_dir = ["dir-link", "secret"];
            for rel in [&via_file[..], &via_dir[..]] {
                for access in [
                    Access::Read,
                    Access::ReadWrite,
                    Access::Create,
                    Access::CreateNew,
                ] {
                    assert!(jail.open_file(rel, access).is_err(), "{rel:?} {access:?}");
                }
                assert!(jail.metadata(rel).is_err(), "{rel:?}");
                assert!(jail.read(rel, 100).is_err(), "{rel:?}");
            }
            assert!(jail.create_dirs(&["dir-link", "x"]).is_err());
            assert!(jail.remove_file(&via_dir).is_err());
            assert!(jail.write_atomically(&via_dir, "t", b"no").is_err());
            assert!(jail.rename(&["dir-link", "secret"], &["stolen"]).is_err());
            assert_eq!(std::fs::read(t.path().join("secret")).unwrap(), b"keep me");
            assert!(!t.path().join("x").exists());
        }
        // Deleting the link's own name removes the link, never its target.
        let jail = Jail::open(&out).unwrap();
        assert!(jail.remove_file(&["file-link"]).unwrap());
        assert_eq!(std::fs::read(t.path().join("secret")).unwrap(), b"keep me");
        // A rename over a link replaces the link.
        jail.write_atomically(&["dir-link"], "t.tmp", b"new")
            .unwrap();
        assert!(t.path().join("secret").exists());
        assert_eq!(std::fs::read(out.join("dir-link")).unwrap(), b"new");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Paths from the whole pipeline (checks, repairs, renaming), made for real
        /// beneath a folder: every file made resolves, links and all, inside it.
        #[test]
        fn paths_from_the_pipeline_resolve_inside_the_folder(
            paths in proptest::collection::vec(
                proptest::collection::vec(crate::metainfo::path::tests::component(), 1..4),
                1..6,
            )
        ) {
            let t = tempfile::tempdir().unwrap();
            let root = t.path().join("out");
            let jail = Jail::create(&root).unwrap();
            let real_root = root.canonicalize().unwrap();
            let mut kept: Vec<crate::metainfo::SafePath> = paths
                .iter()
                .filter_map(|p| crate::metainfo::SafePath::new(p).ok())
                .collect();
            if crate::metainfo::dedupe(&mut kept).is_err() {
                return Ok(());
            }
            for p in &kept {
                let names = p.components();
                let (_, folders) = names.split_last().unwrap();
                jail.create_dirs(folders).unwrap();
                jail.open_file(names, Access::Create).unwrap();
                let real = p.under(&root).canonicalize().unwrap();
                proptest::prop_assert!(real.starts_with(&real_root), "{:?}", real);
            }
            // Nothing was made beside the folder.
            let beside: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
            proptest::prop_assert_eq!(beside.len(), 1);
        }
    }

    #[test]
    fn a_folder_is_not_opened_as_a_file() {
        let t = tempfile::tempdir().unwrap();
        let jail = Jail::open(t.path()).unwrap();
        jail.create_dirs(&["d"]).unwrap();
        assert!(jail.open_file(&["d"], Access::Read).is_err());
        assert!(jail.metadata(&["d"]).is_err());
    }
}
