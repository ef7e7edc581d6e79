//! Daemon processes: finding their binaries, pid files, liveness, identity, signals, log tails.

use crate::error::CliError;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Environment variable naming a directory that holds `ostd` and `mdsd` (looked at first).
pub const BIN_DIR_ENV: &str = "RUSTRE_BIN_DIR";

/// Finds a daemon binary: `$RUSTRE_BIN_DIR`, then the directory of the running executable, then PATH.
pub fn find_binary(name: &'static str) -> Result<PathBuf, CliError> {
    let mut searched = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        // Test binaries live in target/<profile>/deps; the daemons one level up.
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = dir.parent()
        {
            dirs.push(up.to_path_buf());
        }
    }
    for dir in &dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        searched.push(dir.display().to_string());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        searched.push("PATH".into());
    }
    Err(CliError::MissingBinary {
        name,
        searched: searched.join(", "),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads a pid file: `Ok(None)` when it does not exist or does not hold a pid.
pub fn read_pid(path: &Path) -> Result<Option<i32>, CliError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse::<i32>().ok().filter(|&p| p > 0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::io("read", path)(e)),
    }
}

/// Writes `pid` into `path`.
pub fn write_pid(path: &Path, pid: u32) -> Result<(), CliError> {
    fs::write(path, format!("{pid}\n")).map_err(CliError::io("write", path))
}

/// Removes a pid file; a missing one is fine.
pub fn remove_pid(path: &Path) -> Result<(), CliError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::io("remove", path)(e)),
    }
}

/// True when process `pid` exists and has not exited (a zombie counts as exited).
pub fn is_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold ") ".
        Ok(stat) => match stat.rfind(") ") {
            Some(i) => !matches!(stat.as_bytes().get(i + 2), Some(b'Z' | b'X') | None),
            None => false,
        },
        Err(_) => false,
    }
}

/// The command line of process `pid`, one entry per argument.
pub fn cmdline(pid: i32) -> Vec<OsString> {
    use std::os::unix::ffi::OsStrExt;
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(bytes) => bytes
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| std::ffi::OsStr::from_bytes(a).to_os_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// True when `pid` is alive and is the daemon we started: its program is named `binary` and it
/// serves `device`. This keeps a recycled pid in a stale pid file from being signalled.
pub fn is_our_daemon(pid: i32, binary: &str, device: &Path) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let args = cmdline(pid);
    let Some(program) = args.first() else { return false };
    let named = Path::new(program).file_name().is_some_and(|n| n == binary);
    named && args.iter().any(|a| Path::new(a) == device)
}

/// The current time as `2026-11-27 01:23:45 UTC`, for log headers.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_text(secs)
}

fn utc_text(secs: u64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes two integers and touches no memory of ours; any pid/signal value is
    // handled by the kernel (ESRCH, EPERM, EINVAL are reported, not undefined).
    let _ = unsafe { libc::kill(pid, signal) };
}

/// Waits until none of `pids` is alive or `limit` passes; returns those still alive.
pub fn wait_all_dead(pids: &[i32], limit: Duration) -> Vec<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `pids`: SIGTERM, up to `grace` for them to exit, then SIGKILL and up to 5 s more.
/// Returns the pids that are still alive after all that (normally none).
pub fn stop(pids: &[i32], grace: Duration) -> Vec<i32> {
    for &pid in pids {
        signal(pid, libc::SIGTERM);
    }
    let left = wait_all_dead(pids, grace);
    for &pid in &left {
        signal(pid, libc::SIGKILL);
    }
    wait_all_dead(&left, Duration::from_secs(5))
}

/// The last `lines` lines of a log file (at most its last 64 KiB), indented for an error message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    log_tail_from(path, 0, lines)
}

/// Like [`log_tail`], but only of what the log holds after byte `start` (one run's output in a
/// log that is appended across restarts).
pub fn log_tail_from(path: &Path, start: u64, lines: usize) -> String {
    const MAX: u64 = 64 << 10;
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX).max(start)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "    (the log is empty)".into();
    }
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn liveness_and_identity() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(is_alive(pid));
        // Between fork and exec the child still shows the test's own command line.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cmdline(pid)
            .first()
            .is_some_and(|a| a.to_string_lossy().ends_with("sleep"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Alive, but not a daemon of ours: never to be signalled through a pid file.
        assert!(!is_our_daemon(pid, "ostd", Path::new("/nowhere/ost0.img")));
        assert!(is_our_daemon(pid, "sleep", Path::new("30")));
        assert!(stop(&[pid], Duration::from_secs(5)).is_empty());
        // Dead but not yet reaped (a zombie) already counts as dead.
        assert!(!is_alive(pid));
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        assert_eq!(read_pid(&path).unwrap(), None);
        write_pid(&path, 1234).unwrap();
        assert_eq!(read_pid(&path).unwrap(), Some(1234));
        fs::write(&path, "garbage").unwrap();
        assert_eq!(read_pid(&path).unwrap(), None);
        remove_pid(&path).unwrap();
        remove_pid(&path).unwrap();
    }

    #[test]
    fn tails_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        assert!(log_tail(&path, 3).contains("empty"));
        let text = (0..100).map(|i| format!("line {i}\n")).collect::<String>();
        fs::write(&path, &text).unwrap();
        let tail = log_tail(&path, 3);
        assert_eq!(tail, "    line 97\n    line 98\n    line 99");
        assert_eq!(
            log_tail_from(&path, text.find("line 98").unwrap() as u64, 5),
            "    line 98\n    line 99"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_text(1_795_743_017), "2026-11-27 01:30:17 UTC");
    }

    #[test]
    fn missing_binary_names_itself() {
        let err = find_binary("rustre-no-such-daemon-binary").unwrap_err().to_string();
        assert!(
            err.contains("rustre-no-such-daemon-binary") && err.contains("PATH"),
            "{err}"
        );
    }
}
