//! Bounded fuzzing of every rustre decoder on a stable toolchain.
//!
//! cargo-fuzz needs nightly; this driver needs nothing but the workspace. For each target it runs
//! the target's valid encodings (a corpus built in code), then, until the target's time is up,
//! inputs made from them by structure-unaware mutations (bit flips, byte edits, insertions and
//! deletions, varint and length-field edits, splicing, truncation) and plain random bytes. An
//! input fails the run when the decoder panics, when it uses more CPU time than the time limit
//! or stays blocked for ten times as long (a watchdog thread; CPU time, so that a loaded machine
//! does not turn a preempted input into a hang), or when it allocates more than the allocation
//! limit (the binary installs
//! [`alloc::CountingAlloc`] as its global allocator). The failure report names the target, the seed,
//! the input number and the input in hex, which `rustre-fuzz --target T --input HEX` replays.
//!
//! Everything is derived from one printed seed, so a run is reproducible.

pub mod alloc;
pub mod mutate;
pub mod report;
pub mod targets;

use mutate::Rng;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// What a target does with one input: decode it through the real decode path. Returns whether
/// the input was accepted (decoded to a value); a decoder bug panics.
pub type RunFn = Box<dyn FnMut(&[u8]) -> bool>;

/// An optional repair applied to some mutated inputs so they get past checksums (for example
/// re-sealing 4 KiB blocks) and reach the decoding logic behind them.
pub type FixupFn = Box<dyn Fn(&mut Vec<u8>, &mut Rng)>;

/// A target's ready state: its corpus, its decode function and its fixup.
pub struct Harness {
    /// Valid encodings to start from.
    pub seeds: Vec<Vec<u8>>,
    /// Decodes one input.
    pub run: RunFn,
    /// Repairs a mutated input (applied to half of them).
    pub fixup: Option<FixupFn>,
}

/// One fuzz target.
pub struct Target {
    /// Name on the command line.
    pub name: &'static str,
    /// One line: what it decodes.
    pub about: &'static str,
    /// Longest input generated.
    pub max_len: usize,
    /// Builds the harness (devices, corpora) once per run.
    pub setup: fn() -> Harness,
}

/// Limits of a run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time per target.
    pub duration: Duration,
    /// Stop after this many inputs (for reproduction), if given.
    pub max_execs: Option<u64>,
    /// Longest a single input may take.
    pub timeout: Duration,
    /// Most bytes a single input may have allocated at once (beyond what was live before it).
    pub alloc_limit: usize,
}

/// What one target's run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Inputs run (seeds included).
    pub execs: u64,
    /// Inputs the decoder accepted.
    pub accepted: u64,
    /// Seeds in the corpus.
    pub seeds: usize,
    /// Seeds the decoder accepted.
    pub seeds_accepted: usize,
    /// Largest allocation peak of one input, bytes.
    pub peak_alloc: usize,
    /// Time spent.
    pub elapsed: Duration,
}

/// A failing input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The target.
    pub target: &'static str,
    /// The run seed.
    pub seed: u64,
    /// Which input of the run (0-based; seeds first).
    pub exec: u64,
    /// The input.
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rustre-fuzz: FAILED target={} kind=panic seed={} exec={} len={}",
            self.target,
            self.seed,
            self.exec,
            self.input.len()
        )?;
        writeln!(f, "  panic: {}", self.message)?;
        writeln!(f, "  input: {}", report::hex(&self.input))?;
        write!(
            f,
            "  replay: rustre-fuzz --target {} --input {}",
            self.target,
            report::hex(&self.input)
        )
    }
}

/// The per-target seed derived from the run seed.
pub fn target_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs one input under the watchdog and the allocation limit. `Err` holds the panic message.
pub fn run_one(
    run: &mut RunFn,
    target: &'static str,
    seed: u64,
    exec: u64,
    input: &[u8],
    limits: &Limits,
) -> Result<(bool, usize), String> {
    report::begin(target, seed, exec, input, limits.timeout);
    alloc::arm(limits.alloc_limit);
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| run(input)));
    let peak = alloc::disarm();
    report::end();
    match r {
        Ok(accepted) => Ok((accepted, peak)),
        Err(_) => Err(report::take_panic_message()),
    }
}

/// Fuzzes `target` for the limits' time from `seed`. Returns the statistics, or the first
/// failing input. Hangs and allocation overruns end the process from the watchdog or the
/// allocator (see [`report`]).
pub fn fuzz(target: &Target, seed: u64, limits: &Limits) -> Result<Stats, Box<Failure>> {
    report::install();
    let t0 = Instant::now();
    let Harness { seeds, mut run, fixup } =
        std::panic::catch_unwind(target.setup).map_err(|_| setup_failure(target, seed))?;
    let mut rng = Rng::new(target_seed(seed, target.name));
    let mut stats = Stats {
        execs: 0,
        accepted: 0,
        seeds: seeds.len(),
        seeds_accepted: 0,
        peak_alloc: 0,
        elapsed: Duration::ZERO,
    };
    let fail = |exec, input: &[u8], message| {
        Box::new(Failure {
            target: target.name,
            seed,
            exec,
            input: input.to_vec(),
            message,
        })
    };
    let mut input = Vec::with_capacity(target.max_len + 64);
    let start = Instant::now();
    let mut exec = 0u64;
    loop {
        if limits.max_execs.is_some_and(|m| exec >= m) {
            break;
        }
        if (exec as usize) < seeds.len() {
            input.clear();
            input.extend_from_slice(&seeds[exec as usize]);
        } else {
            // Check the clock every 64 inputs.
            if exec % 64 == 0 && limits.max_execs.is_none() && start.elapsed() >= limits.duration {
                break;
            }
            mutate::next_input(&mut rng, &seeds, &mut input, target.max_len);
            if let Some(f) = &fixup
                && rng.below(2) == 0
            {
                f(&mut input, &mut rng);
            }
        }
        match run_one(&mut run, target.name, seed, exec, &input, limits) {
            Ok((accepted, peak)) => {
                stats.accepted += u64::from(accepted);
                if (exec as usize) < seeds.len() {
                    stats.seeds_accepted += usize::from(accepted);
                }
                stats.peak_alloc = stats.peak_alloc.max(peak);
            }
            Err(message) => return Err(fail(exec, &input, message)),
        }
        exec += 1;
        stats.execs = exec;
    }
    stats.elapsed = t0.elapsed();
    Ok(stats)
}

fn setup_failure(target: &Target, seed: u64) -> Box<Failure> {
    Box::new(Failure {
        target: target.name,
        seed,
        exec: 0,
        input: Vec::new(),
        message: format!("the target's setup failed: {}", report::take_panic_message()),
    })
}

/// Runs one given input on `target` (replay of a reported failure).
pub fn replay(target: &Target, input: &[u8], limits: &Limits) -> Result<bool, Box<Failure>> {
    report::install();
    let mut h = std::panic::catch_unwind(target.setup).map_err(|_| setup_failure(target, 0))?;
    run_one(&mut h.run, target.name, 0, 0, input, limits)
        .map(|(accepted, _)| accepted)
        .map_err(|message| {
            Box::new(Failure {
                target: target.name,
                seed: 0,
                exec: 0,
                input: input.to_vec(),
                message,
            })
        })
}

#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: alloc::CountingAlloc = alloc::CountingAlloc;

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(execs: u64) -> Limits {
        Limits {
            duration: Duration::from_secs(5),
            max_execs: Some(execs),
            timeout: Duration::from_secs(5),
            alloc_limit: 64 << 20,
        }
    }

    fn toy_setup() -> Harness {
        Harness {
            seeds: vec![b"hello".to_vec(), vec![1, 2, 3]],
            run: Box::new(|b: &[u8]| {
                // A deliberately broken decoder: indexes by a length byte without checking it.
                if b.first() == Some(&0xAA) {
                    let n = usize::from(b.get(1).copied().unwrap_or(0));
                    let _ = b[2 + n];
                }
                !b.is_empty()
            }),
            fixup: None,
        }
    }

    const TOY: Target = Target {
        name: "toy",
        about: "a decoder with a bug",
        max_len: 64,
        setup: toy_setup,
    };

    fn fine_setup() -> Harness {
        Harness {
            seeds: vec![vec![0; 8]],
            run: Box::new(|b: &[u8]| b.len() > 4),
            fixup: None,
        }
    }

    #[test]
    fn a_panicking_target_is_caught_and_reported() {
        let f = fuzz(&TOY, 7, &limits(200_000)).expect_err("the bug is found");
        assert_eq!((f.target, f.seed), ("toy", 7));
        assert_eq!(f.input[0], 0xAA, "{f}");
        assert!(f.message.contains("index out of bounds"), "{}", f.message);
        let text = f.to_string();
        assert!(text.contains("target=toy") && text.contains("seed=7"), "{text}");
        assert!(text.contains(&report::hex(&f.input)), "{text}");
        // The report replays.
        let again = replay(&TOY, &f.input, &limits(1)).expect_err("replays");
        assert_eq!(again.message, f.message);
        // And the same seed finds the same input at the same place.
        let g = fuzz(&TOY, 7, &limits(200_000)).expect_err("again");
        assert_eq!((g.exec, &g.input), (f.exec, &f.input));
    }

    #[test]
    fn a_sound_target_runs_its_seeds_and_mutations() {
        let t = Target {
            name: "fine",
            about: "",
            max_len: 32,
            setup: fine_setup,
        };
        let s = fuzz(&t, 1, &limits(5_000)).unwrap();
        assert_eq!((s.execs, s.seeds, s.seeds_accepted), (5_000, 1, 1));
        assert!(s.accepted > 0 && s.accepted < s.execs, "{s:?}");
    }

    #[test]
    fn every_target_has_a_unique_name_and_accepts_some_seed() {
        let all = targets::all();
        let mut names: Vec<_> = all.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for t in &all {
            let s = fuzz(t, 3, &limits(300)).unwrap_or_else(|f| panic!("{f}"));
            assert!(s.seeds_accepted > 0, "{}: no seed decodes ({s:?})", t.name);
        }
    }
}
