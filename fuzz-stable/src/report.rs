//! Failure reporting: the panic hook (quiet; keeps the message), the watchdog thread that ends a
//! run whose input takes too long, and the report of an allocation overrun. Hangs and overruns
//! cannot be unwound, so they print the report and end the process: exit code 2 for a hang, 3
//! for unbounded allocation (a panic is returned to the driver, which exits with 1).

use std::io::Write;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// What the current input is, for reports from the watchdog and the allocator.
struct Current {
    target: &'static str,
    seed: u64,
    exec: u64,
    input: Vec<u8>,
}

static CURRENT: Mutex<Current> = Mutex::new(Current {
    target: "",
    seed: 0,
    exec: 0,
    input: Vec::new(),
});
static PANIC: Mutex<String> = Mutex::new(String::new());
/// Nanoseconds since [`epoch`] when the current input started; 0 when none runs.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// CPU time of the running thread when the current input started.
static STARTED_CPU: AtomicU64 = AtomicU64::new(0);
/// The CPU-time clock of the thread running inputs (a `clockid_t`), or -1.
static CPU_CLOCK: AtomicI32 = AtomicI32::new(-1);
static TIMEOUT_NS: AtomicU64 = AtomicU64::new(u64::MAX);
/// A blocked input (sleeping, waiting) uses no CPU: it fails after this many timeouts of wall
/// time instead.
const WALL_FACTOR: u64 = 10;

fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid stack location given.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    (r == 0).then(|| {
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    })
}

/// The calling thread's CPU-time clock.
fn own_cpu_clock() -> Option<libc::clockid_t> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self is always valid for the calling thread; the id is written into a
    // valid stack location.
    let r = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    (r == 0).then_some(id)
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    b.iter()
        .flat_map(|x| [D[usize::from(x >> 4)] as char, D[usize::from(x & 15)] as char])
        .collect()
}

/// Parses hex (as printed by [`hex`]).
pub fn unhex(t: &str) -> Option<Vec<u8>> {
    let t = t.trim().as_bytes();
    if t.len() % 2 != 0 {
        return None;
    }
    let v = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    t.chunks_exact(2).map(|p| Some(v(p[0])? << 4 | v(p[1])?)).collect()
}

/// Installs the panic hook and starts the watchdog (once per process).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        epoch();
        std::panic::set_hook(Box::new(|info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-text payload".into());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if let Ok(mut p) = PANIC.lock() {
                *p = format!("{msg}{at}");
            }
        }));
        let _ = std::thread::Builder::new().name("fuzz-watchdog".into()).spawn(watchdog);
    });
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let started = STARTED.load(Ordering::Acquire);
        if started == 0 {
            continue;
        }
        // CPU time of the input's thread, so that a loaded machine does not make a slow input
        // out of a preempted one; wall time (with a larger bound) for inputs that block.
        let timeout = TIMEOUT_NS.load(Ordering::Relaxed);
        let wall = now_ns().saturating_sub(started);
        let clock = CPU_CLOCK.load(Ordering::Relaxed);
        let cpu = if clock >= 0 {
            clock_ns(clock).map(|c| c.saturating_sub(STARTED_CPU.load(Ordering::Relaxed)))
        } else {
            Some(wall)
        };
        if STARTED.load(Ordering::Acquire) != started {
            continue;
        }
        if let Some(cpu) = cpu
            && cpu > timeout
        {
            fatal(
                "hang",
                &format!("one input used more than {} ms of CPU", cpu / 1_000_000),
                2,
            );
        }
        if wall > timeout.saturating_mul(WALL_FACTOR) {
            fatal(
                "hang",
                &format!("one input ran (blocked) for more than {} ms", wall / 1_000_000),
                2,
            );
        }
    }
}

/// Prints the report of the current input and ends the process with `code`.
fn fatal(kind: &str, what: &str, code: i32) -> ! {
    let text = match CURRENT.try_lock() {
        Ok(c) => format!(
            "rustre-fuzz: FAILED target={} kind={kind} seed={} exec={} len={}\n  {kind}: {what}\n  input: {}\n  replay: rustre-fuzz --target {} --input {}\n",
            c.target,
            c.seed,
            c.exec,
            c.input.len(),
            hex(&c.input),
            c.target,
            hex(&c.input)
        ),
        Err(_) => format!("rustre-fuzz: FAILED kind={kind}: {what} (input unavailable)\n"),
    };
    let text = match CURRENT.try_lock() {
        Ok(c) => format!("{text}{}", save_input(c.target, c.seed, c.exec, &c.input)),
        Err(_) => text,
    };
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes());
    let _ = e.flush();
    // SAFETY: _exit ends the process at once; no Rust state is used afterwards.
    unsafe { libc::_exit(code) }
}

/// Writes a failing input (hex) to a file in the temporary directory, for `--input-file` when it
/// is too long for a command line; returns the line saying where.
pub fn save_input(target: &str, seed: u64, exec: u64, input: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("rustre-fuzz-{target}-{seed}-{exec}.hex"));
    match std::fs::write(&path, hex(input)) {
        Ok(()) => format!(
            "  saved: {} (replay: rustre-fuzz --target {target} --input-file {})\n",
            path.display(),
            path.display()
        ),
        Err(_) => String::new(),
    }
}

/// Called by the allocator when an input would hold more than the limit.
pub(crate) fn alloc_overrun(size: usize, used: usize) -> ! {
    fatal(
        "alloc",
        &format!("an allocation of {size} bytes would take this input to {used} bytes, over the limit"),
        3,
    )
}

/// Records the input about to run.
pub(crate) fn begin(target: &'static str, seed: u64, exec: u64, input: &[u8], timeout: Duration) {
    if let Ok(mut c) = CURRENT.lock() {
        c.target = target;
        c.seed = seed;
        c.exec = exec;
        c.input.clear();
        c.input.extend_from_slice(input);
    }
    TIMEOUT_NS.store(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    let clock = own_cpu_clock();
    CPU_CLOCK.store(clock.unwrap_or(-1), Ordering::Relaxed);
    STARTED_CPU.store(clock.and_then(clock_ns).unwrap_or(0), Ordering::Relaxed);
    STARTED.store(now_ns(), Ordering::Release);
}

/// The current input is done.
pub(crate) fn end() {
    STARTED.store(0, Ordering::Release);
}

/// The message of the last panic.
pub(crate) fn take_panic_message() -> String {
    PANIC.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let b = vec![0, 1, 0xab, 0xff];
        assert_eq!(super::hex(&b), "0001abff");
        assert_eq!(super::unhex("0001abff"), Some(b));
        assert_eq!(super::unhex("0g"), None);
        assert_eq!(super::unhex("abc"), None);
    }
}
