//! The process's own resource use, as Linux reports it in `/proc/self`: for progress
//! lines, reports and the swarm command. Elsewhere every figure reads as absent.

/// Memory and file use of a process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcStats {
    /// Resident memory now, in bytes.
    pub rss_bytes: u64,
    /// The most resident memory so far, in bytes.
    pub peak_rss_bytes: u64,
    /// Open file descriptors (sockets included).
    pub open_files: u64,
}

/// This process's figures, if `/proc` is there to read.
pub fn current() -> Option<ProcStats> {
    of_pid("self")
}

/// The figures of process `pid` ("self" for this one), if `/proc` has them.
pub fn of_pid(pid: &str) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcStats {
        rss_bytes: kib_field(&status, "VmRSS:")?,
        peak_rss_bytes: kib_field(&status, "VmHWM:")?,
        open_files,
    })
}

/// A `Name:   1234 kB` line of `/proc/*/status`, in bytes.
fn kib_field(status: &str, name: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_bytes() {
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(kib_field(status, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_memory_and_files() {
        let s = current().expect("/proc/self on Linux");
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes && s.open_files >= 3);
    }
}
