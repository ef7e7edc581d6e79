//! Test harness for the rustre daemons: one server process (`ostd`, `mdsd`, …) and the lines
//! it prints on stdout, with waits bounded by a timeout, signals by pid, and a free tcp port.
//!
//! A [`Node`] owns its child: dropping it kills the process (SIGKILL) and reaps it, so a test
//! that panics half-way still stops everything it started.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

/// Prefix of the lines a [`Node::spawn_command_with_stderr`] node read from its stderr.
pub const STDERR_PREFIX: &str = "stderr: ";

/// A running server process and the lines it prints.
///
/// Lines are read by a thread per stream into an unbounded channel: a daemon prints a handful
/// of lines (ready, standby, fenced, stopped), and the reader must never block the daemon's
/// writes, so the channel is drained only as fast as the test asks.
pub struct Node {
    child: Child,
    lines: Receiver<String>,
    /// Set once the child has been reaped: its pid may then belong to another process.
    status: Option<ExitStatus>,
}

impl Drop for Node {
    fn drop(&mut self) {
        // `Child::kill` sends nothing once the child was reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward(stream: impl Read + Send + 'static, tx: Sender<String>, prefix: &'static str) {
    std::thread::spawn(move || {
        for l in BufReader::new(stream).lines().map_while(Result::ok) {
            // Once the node is dropped the sends fail; reading on keeps the daemon's writes
            // from failing until it is killed.
            let _ = tx.send(format!("{prefix}{l}"));
        }
    });
}

impl Node {
    /// Starts `bin` with `args`, stdout piped to this node's lines, stderr discarded.
    pub fn spawn<I, S>(bin: impl AsRef<OsStr>, args: I) -> io::Result<Node>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Node::spawn_command(Command::new(bin).args(args))
    }

    /// Starts `cmd` with stdout piped to this node's lines and stderr discarded.
    pub fn spawn_command(cmd: &mut Command) -> io::Result<Node> {
        Node::start(cmd, false)
    }

    /// Starts `cmd` with stdout and stderr both read into this node's lines, the stderr ones
    /// prefixed with [`STDERR_PREFIX`] (`"stderr: "`).
    pub fn spawn_command_with_stderr(cmd: &mut Command) -> io::Result<Node> {
        Node::start(cmd, true)
    }

    fn start(cmd: &mut Command, with_stderr: bool) -> io::Result<Node> {
        let stderr = if with_stderr { Stdio::piped() } else { Stdio::null() };
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn()?;
        let (tx, lines) = channel();
        if let Some(err) = child.stderr.take() {
            forward(err, tx.clone(), STDERR_PREFIX);
        }
        let out = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("child stdout not piped"))?;
        forward(out, tx, "");
        Ok(Node {
            child,
            lines,
            status: None,
        })
    }

    /// Waits up to `limit` for a line for which `matches` is true and returns it; lines before it
    /// are consumed. `None` when the time runs out or the process closed its output first.
    /// A `limit` too large to add to the current time waits without a deadline.
    pub fn wait_line(&self, mut matches: impl FnMut(&str) -> bool, limit: Duration) -> Option<String> {
        let end = Instant::now().checked_add(limit);
        loop {
            let l = match end {
                Some(end) => {
                    let left = end.checked_duration_since(Instant::now())?;
                    // Timed out, or the process closed its output.
                    self.lines.recv_timeout(left).ok()?
                }
                None => self.lines.recv().ok()?,
            };
            if matches(&l) {
                return Some(l);
            }
        }
    }

    /// Waits up to `limit` for a line starting with `prefix` and returns the rest of it.
    pub fn wait_prefix(&self, prefix: &str, limit: Duration) -> Option<String> {
        self.wait_line(|l| l.starts_with(prefix), limit)
            .map(|l| l[prefix.len()..].to_string())
    }

    /// Waits up to `limit` for the daemon's ready line (`"mdsd: serving on "`,
    /// `"ostd: serving OST0 on "`, …) and returns the address after `prefix`, trimmed.
    pub fn serving_address(&self, prefix: &str, limit: Duration) -> Option<String> {
        self.wait_prefix(prefix, limit).map(|a| a.trim().to_string())
    }

    /// The next line already printed, without waiting.
    pub fn try_line(&self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until every thread of the process is stopped: kill(2) returns before the threads
    /// of a process sent `SIGSTOP` have stopped, and one of them may still be serving meanwhile.
    /// False when that takes longer than `timeout`.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let tasks = format!("/proc/{}/task", self.child.id());
        let deadline = Instant::now() + timeout;
        loop {
            let stopped = std::fs::read_dir(&tasks).is_ok_and(|mut ts| {
                ts.all(|t| {
                    t.and_then(|t| std::fs::read_to_string(t.path().join("stat")))
                        .is_ok_and(|stat| {
                            // The state follows the command name in parentheses, which may hold
                            // spaces and parentheses itself.
                            stat.rsplit_once(')')
                                .and_then(|(_, rest)| rest.trim_start().chars().next())
                                .is_some_and(|state| state == 'T' || state == 't')
                        })
                })
            });
            if stopped {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGSTOP`, …) to the process. Refused once the
    /// process has been reaped through this node, since its pid may have been reused.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        if self.status.is_some() {
            return Err(io::Error::other("the process has already been reaped"));
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) takes no pointers; `pid` is our own child, not yet reaped (checked
        // above, and only this node waits for it), so it names no other process.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) -> io::Result<ExitStatus> {
        self.child.kill()?;
        self.wait()
    }

    /// Asks the process to stop (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.wait()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let st = self.child.wait()?;
        self.status = Some(st);
        Ok(st)
    }

    /// Waits up to `limit` for the process to exit, looking every 20 ms; `None` when it is still
    /// running at the end.
    pub fn wait_timeout(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        let end = Instant::now().checked_add(limit);
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if end.is_some_and(|end| Instant::now() >= end) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let st = self.child.try_wait()?;
        if st.is_some() {
            self.status = st;
        }
        Ok(st)
    }
}

/// A tcp port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Set by `ci/test` around `cargo nextest run --workspace`: that one build made every binary of
/// the workspace together with the tests, so the binaries beside a test's own are current.
pub const BINS_CURRENT_ENV: &str = "RUSTRE_TEST_BINS_CURRENT";

/// Makes sure the binaries `bins` (of the packages `packages`) are built beside `next_to`, the
/// path of one of the test's own `CARGO_BIN_EXE_*` binaries.
///
/// `cargo test -p X` builds only X's binaries, so by default this runs `cargo build -p …`, in the
/// profile `next_to` was built in. Under [`BINS_CURRENT_ENV`] it only checks that they are there:
/// a second build would select other dependency features than the workspace's test build, rebuild
/// half the dependency graph beside it (minutes of CPU and GiBs of disk) and relink binaries that
/// other tests are running. Callers run it once per process.
pub fn ensure_binaries(next_to: &str, packages: &[&str], bins: &[&str]) {
    let dir = std::path::Path::new(next_to)
        .parent()
        .expect("a CARGO_BIN_EXE path has a parent directory");
    if std::env::var_os(BINS_CURRENT_ENV).is_some() {
        for b in bins {
            assert!(
                dir.join(b).is_file(),
                "{BINS_CURRENT_ENV} is set but {} is missing: build the whole workspace \
                 (cargo nextest run --workspace) or unset it",
                dir.join(b).display()
            );
        }
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {} failed", packages.join(" -p "));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn sh(script: &str) -> Node {
        Node::spawn("sh", ["-c", script]).unwrap()
    }

    #[test]
    fn serving_address_is_the_rest_of_the_ready_line() {
        let n = sh("echo starting; echo 'serving on tcp://x:1 '; sleep 5");
        assert_eq!(
            n.serving_address("serving on ", Duration::from_secs(5)).as_deref(),
            Some("tcp://x:1")
        );
        // The line before it was consumed on the way.
        assert_eq!(n.try_line(), None);
    }

    #[test]
    fn wait_line_returns_the_matching_line_and_keeps_the_later_ones() {
        let n = sh("echo a; echo b1; echo b2; sleep 5");
        assert_eq!(
            n.wait_line(|l| l.starts_with('b'), Duration::from_secs(5)).as_deref(),
            Some("b1")
        );
        assert_eq!(n.wait_prefix("b", Duration::from_secs(5)).as_deref(), Some("2"));
    }

    #[test]
    fn wait_line_gives_up_at_the_limit() {
        let n = sh("echo other; sleep 5");
        let t0 = Instant::now();
        assert_eq!(n.wait_prefix("serving on ", Duration::from_millis(300)), None);
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn wait_line_gives_up_when_the_process_ends() {
        let n = sh("echo other");
        let t0 = Instant::now();
        assert_eq!(n.wait_prefix("serving on ", Duration::from_secs(10)), None);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_unbounded_wait_ends_with_the_line() {
        let n = sh("sleep 0.1; echo ready");
        assert_eq!(n.wait_line(|_| true, Duration::MAX).as_deref(), Some("ready"));
    }

    #[test]
    fn stderr_lines_are_prefixed() {
        let n = Node::spawn_command_with_stderr(Command::new("sh").args(["-c", "echo oops >&2; sleep 5"])).unwrap();
        assert_eq!(
            n.wait_line(|_| true, Duration::from_secs(5)).as_deref(),
            Some("stderr: oops")
        );
        // Without it, stderr is discarded.
        let n = sh("echo oops >&2; echo out");
        assert_eq!(n.wait_line(|_| true, Duration::from_secs(5)).as_deref(), Some("out"));
    }

    #[test]
    fn kill9_and_stop_report_how_the_process_ended() {
        use std::os::unix::process::ExitStatusExt;
        let mut n = sh("echo up; sleep 5");
        assert!(n.wait_line(|_| true, Duration::from_secs(5)).is_some());
        let st = n.kill9().unwrap();
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        // Reaped: the pid is no longer ours to signal.
        assert!(n.signal(libc::SIGTERM).is_err());

        let mut n = sh("trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done");
        assert!(n.wait_line(|_| true, Duration::from_secs(5)).is_some());
        assert!(n.stop().unwrap().success());
    }

    #[test]
    fn a_stopped_process_ends_only_after_it_continues() {
        let mut n = sh("echo up; sleep 0.3");
        assert!(n.wait_line(|_| true, Duration::from_secs(5)).is_some());
        n.signal(libc::SIGSTOP).unwrap();
        assert_eq!(n.try_wait().unwrap(), None);
        assert_eq!(n.wait_timeout(Duration::from_millis(500)).unwrap(), None);
        n.signal(libc::SIGCONT).unwrap();
        let st = n
            .wait_timeout(Duration::from_secs(5))
            .unwrap()
            .expect("sleep 0.3 kept running");
        assert!(st.success());
        // Reaped: no more signals to its pid.
        assert!(n.signal(libc::SIGCONT).is_err());
    }

    #[test]
    fn drop_kills_the_process() {
        let n = sh("echo up; sleep 30");
        let pid = n.pid();
        assert!(n.wait_line(|_| true, Duration::from_secs(5)).is_some());
        drop(n);
        // Reaped by the drop: no such process any more.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn free_port_can_be_bound() {
        let p = free_port().unwrap();
        assert_ne!(p, 0);
        std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
    }
}
