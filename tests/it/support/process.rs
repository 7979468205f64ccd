//! Child processes with bounded lifetimes: a guard that kills its child by PID when
//! dropped, a bounded command runner, and loopback port picking.

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often bounded waits look at a child again: short enough that tests do not idle,
/// long enough not to burn one of the machine's two cores.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// How long a child killed with SIGKILL may take to be reaped before we give up on it.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// Ports this test binary has already handed out. The kernel may give the same free port
/// to two tests that ask one after the other before either binds it; remembering them
/// removes that race inside one run.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago and that no other caller in this
/// process has been given. Another program can still take it before the caller binds it,
/// so the starters of long-running children retry on a fresh port when binding fails.
pub fn free_port() -> u16 {
    // Ports below the kernel's ephemeral range: a port the kernel hands out for port 0
    // is also a source port for outgoing connections, and the tests open thousands, so
    // such a port is often taken again before the child binds it.
    let below = ephemeral_low().unwrap_or(32768).clamp(2048, 65535);
    for _ in 0..200 {
        let candidate = 1024 + (rand::random::<u16>() % (below - 1024));
        let Ok(listener) = TcpListener::bind(("127.0.0.1", candidate)) else {
            continue;
        };
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        drop(listener);
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("the kernel kept returning ports this test binary already handed out");
}

/// The low end of the kernel's ephemeral port range.
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A running child that is killed by its PID and reaped when the guard is dropped, so a
/// failing test never leaves a tracker or peer behind.
pub struct ChildGuard {
    child: Child,
    what: String,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `cmd`; `what` names the child in messages.
    pub fn spawn(mut cmd: Command, what: &str) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what} ({cmd:?}): {e}"));
        ChildGuard {
            child,
            what: what.to_string(),
            status: None,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdout, if it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The exit status if the child has ended, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("polling {}: {e}", self.what));
        }
        self.status
    }

    /// Waits up to `timeout` for the child to end by itself; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// Kills the child by its PID if it still runs, and reaps it within a bound. Returns
    /// its exit status, or `None` if it could not be reaped in time.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_status() {
            return Some(status);
        }
        // `Child::kill` sends SIGKILL to this child's PID only, and refuses once the
        // child has been reaped, so it can never hit a process that reused the PID.
        if let Err(e) = self.child.kill() {
            eprintln!("killing {} (pid {}): {e}", self.what, self.pid());
        }
        let status = self.wait_timeout(REAP_LIMIT);
        if status.is_none() {
            eprintln!(
                "{} (pid {}) did not end within {REAP_LIMIT:?} of SIGKILL",
                self.what,
                self.pid()
            );
        }
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` with stdin closed and its output captured. `Err` carries the output so far
/// when the child overran `timeout` and was killed by its PID.
pub fn run_until(mut cmd: Command, timeout: Duration) -> Result<Output, Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut guard = ChildGuard::spawn(cmd, &what);
    // The pipes are drained by threads while we wait, so a chatty child cannot block on
    // a full pipe and look like a hang.
    let stdout = drain(guard.child.stdout.take().expect("piped stdout"));
    let stderr = drain(guard.child.stderr.take().expect("piped stderr"));
    let finished = guard.wait_timeout(timeout);
    let status = match finished {
        Some(status) => status,
        None => guard
            .kill()
            .unwrap_or_else(|| panic!("{what} overran {timeout:?} and could not be reaped")),
    };
    let output = Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    if finished.is_some() {
        Ok(output)
    } else {
        Err(output)
    }
}

/// Runs `cmd` for at most `limit`; a run that overruns fails the test with its stderr.
pub fn run_within(cmd: Command, limit: Duration) -> Output {
    let what = cmd.get_args().next().map_or_else(
        || cmd.get_program().to_string_lossy().into_owned(),
        |first| first.to_string_lossy().into_owned(),
    );
    run_until(cmd, limit).unwrap_or_else(|o| {
        panic!(
            "{what} overran {limit:?}:\n{}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// As [`run_within`], and a run that does not exit 0 fails the test with its output.
pub fn run_ok(cmd: Command, limit: Duration) -> Output {
    let output = run_within(cmd, limit);
    assert!(
        output.status.success(),
        "exited {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The byte count of `get`'s summary line, "N bytes fetched this run".
pub fn fetched(output: &Output) -> u64 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|l| {
            l.split(" bytes fetched this run")
                .next()?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .next_back()
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"))
}

/// Runs `cmd` like [`run_until`] and panics, with everything the child printed, if it
/// overran `timeout`. The exit status is the caller's to judge.
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    run_until(cmd, timeout).unwrap_or_else(|out| {
        panic!(
            "{what} overran {timeout:?} and was killed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error only shortens the captured text; the exit status still tells.
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

fn collect(rx: mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    // A grandchild holding the pipe open would keep the reader busy forever; after a
    // short grace the output is reported as cut instead of blocking the test.
    rx.recv_timeout(Duration::from_secs(2))
        .unwrap_or_else(|_| b"<output not closed in time>".to_vec())
}

/// Resident memory of `pid` in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
