//! A tiny disk for fault tests: a tmpfs mounted on a fresh folder, which can be grown in
//! place to "free space" for the same command to continue.

use std::path::Path;
use std::process::Command;

/// A mounted tmpfs, unmounted (by its path) when dropped.
pub struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `2m`) on a fresh
    /// folder. Needs root, as CI runs: mounting is the only honest way to make a disk full
    /// here, so without it the test fails rather than pass without checking anything.
    pub fn mount(size: &str) -> TinyDisk {
        let dir = tempfile::tempdir().expect("temp folder for a tmpfs");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root): {status}"
        );
        TinyDisk { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes the size limit in place, keeping the files: how a test frees space.
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("running mount -o remount");
        assert!(status.success(), "resizing the tmpfs to {size}: {status}");
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
