//! A rank process: connects back to the coordinator, then runs each step it is sent on rustre or
//! on the POSIX baseline, reporting progress, its stonewall count, and its result.

use super::control::{Channel, FromRank, RankConfig, StepResult, Target, ToRank};
use super::fs::{Fs, PosixFs, RustreFs};
use super::pattern;
use anyhow::{Context, bail};
use std::time::{Duration, Instant};

/// ior-hard record size (as IO500).
pub const HARD_RECORD: u64 = 47008;
/// mdtest-hard file size (as IO500).
pub const MD_HARD_BYTES: usize = 3901;
/// find looks for files whose name holds this.
pub const FIND_PATTERN: &[u8] = b"01";
/// Progress is reported at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// `rustre-bench io500-rank` options (started by `rustre-bench io500`, not by hand).
#[derive(clap::Args, Debug)]
pub struct RankArgs {
    /// The coordinator's control address (127.0.0.1:PORT).
    #[arg(long)]
    pub control: String,
    /// This rank's number (default: from the MPI launcher's environment).
    #[arg(long)]
    pub rank: Option<u32>,
}

/// Names of the files and directories of a run, relative to a root.
pub mod names {
    /// ior-easy file of `rank`.
    pub fn easy_file(root: &str, rank: u32) -> String {
        format!("{root}/ior-easy/ior.{rank}")
    }
    /// Directory of the ior-hard shared file (striped as `--hard-stripe-count` says).
    pub fn hard_dir(root: &str) -> String {
        format!("{root}/ior-hard")
    }
    /// ior-hard shared file.
    pub fn hard_file(root: &str) -> String {
        format!("{}/shared", hard_dir(root))
    }
    /// mdtest-easy directory of `rank`.
    pub fn md_easy_dir(root: &str, rank: u32) -> String {
        format!("{root}/mdtest-easy/rank.{rank}")
    }
    /// mdtest-easy file name.
    pub fn md_easy_name(i: u64) -> String {
        format!("f.{i:07}")
    }
    /// mdtest-hard file name.
    pub fn md_hard_name(rank: u32, i: u64) -> String {
        format!("h.{rank}.{i:07}")
    }
    /// The shared directories, parents first.
    pub fn shared_dirs(root: &str) -> Vec<String> {
        ["", "/ior-easy", "/ior-hard", "/mdtest-easy", "/mdtest-hard"]
            .iter()
            .map(|d| format!("{root}{d}"))
            .collect()
    }
}

/// Seeds of the data pattern, by what was written and who wrote it.
fn seed_easy(rank: u32) -> u64 {
    (1 << 40) | u64::from(rank)
}
fn seed_hard(rank: u32) -> u64 {
    (2 << 40) | u64::from(rank)
}
fn seed_md(rank: u32, i: u64) -> u64 {
    (3 << 40) | (u64::from(rank) << 32) | i
}

/// The rank's rank number: `--rank`, else the MPI launcher's environment.
fn rank_number(args: &RankArgs) -> anyhow::Result<u32> {
    if let Some(r) = args.rank {
        return Ok(r);
    }
    for var in ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"] {
        if let Ok(v) = std::env::var(var) {
            return v
                .trim()
                .parse()
                .with_context(|| format!("{var}={v:?} is not a rank number"));
        }
    }
    bail!("no --rank and no MPI rank in the environment (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK)")
}

/// Runs a rank until the coordinator says quit or goes away.
pub fn run(args: &RankArgs) -> anyhow::Result<()> {
    let rank = rank_number(args)?;
    let stream = std::net::TcpStream::connect(&args.control)
        .with_context(|| format!("rank {rank}: connecting to the coordinator at {}", args.control))?;
    let mut ch = Channel::new(stream)?;
    ch.send(&FromRank::Hello {
        rank,
        pid: std::process::id(),
    })?;
    let cfg = match ch.recv::<ToRank>()? {
        Some(ToRank::Config(c)) => c,
        Some(other) => bail!("rank {rank}: expected the configuration, got {other:?}"),
        None => return Ok(()),
    };
    if rank >= cfg.ranks {
        bail!("rank {rank} of {} ranks", cfg.ranks);
    }
    let connected = rustre::ClientConfig::from_spec(&cfg.rustre_spec).and_then(|mut c| {
        if let Some(bytes) = cfg.write_behind {
            c.limits.write_behind_bytes = bytes;
        }
        if let Some(bytes) = cfg.read_ahead {
            c.limits.read_ahead_bytes = bytes;
        }
        rustre::Client::connect(c)
    });
    let client = match connected {
        Ok(c) => c,
        Err(e) => {
            let error = format!("rank {rank}: connecting to rustre with {}: {e}", cfg.rustre_spec);
            ch.send(&FromRank::Failed { error: error.clone() })?;
            bail!(error);
        }
    };
    let rustre = RustreFs { client };
    ch.send(&FromRank::Ready)?;
    let mut r = Rank { ch, cfg, rank };
    loop {
        match r.ch.recv::<ToRank>()? {
            Some(ToRank::Step { step, target, count }) => {
                let res = match target {
                    Target::Rustre => {
                        let root = r.cfg.rustre_root.clone();
                        r.step(&rustre, &root, &step, count)
                    }
                    Target::Posix => match r.cfg.posix_root.clone() {
                        Some(root) => r.step(&PosixFs, &root, &step, count),
                        None => Err(anyhow::anyhow!("no POSIX baseline directory configured")),
                    },
                };
                match res {
                    Ok(res) => r.ch.send(&FromRank::Done(res))?,
                    Err(e) => r.ch.send(&FromRank::Failed {
                        error: format!("rank {rank}: {step} on {target:?}: {e:#}"),
                    })?,
                }
            }
            Some(ToRank::Quit) | None => break,
            Some(other) => bail!("rank {rank}: unexpected {other:?} between steps"),
        }
    }
    rustre.client.disconnect();
    Ok(())
}

struct Rank {
    ch: Channel,
    cfg: RankConfig,
    rank: u32,
}

/// Progress reporting with a rate limit.
struct Ticker {
    last: Instant,
}

impl Ticker {
    fn new() -> Ticker {
        Ticker { last: Instant::now() }
    }

    fn tick(&mut self, ch: &mut Channel, done: u64) -> anyhow::Result<()> {
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            ch.send(&FromRank::Progress { done })?;
        }
        Ok(())
    }
}

impl Rank {
    /// The rank whose data this rank reads, stats or reads back (as IO500 shifts readers so that
    /// no rank reads what it wrote itself).
    fn source(&self) -> u32 {
        (self.rank + 1) % self.cfg.ranks
    }

    /// A write loop with the stonewall: runs `op(i)` for i = 0.. until `budget` or the deadline,
    /// reports its count, then completes to the furthest rank's count. Returns (items, before).
    fn stonewalled(
        &mut self,
        budget: u64,
        mut op: impl FnMut(u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<(u64, u64)> {
        let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.stonewall_s);
        let mut ticker = Ticker::new();
        let mut i = 0;
        while i < budget && Instant::now() < deadline {
            op(i)?;
            i += 1;
            ticker.tick(&mut self.ch, i)?;
        }
        let before = i;
        self.ch.send(&FromRank::Count { count: i })?;
        let max = match self.ch.recv::<ToRank>()? {
            Some(ToRank::Max { count }) => count,
            Some(other) => bail!("expected the stonewall count, got {other:?}"),
            None => bail!("the coordinator went away at the stonewall"),
        };
        while i < max {
            op(i)?;
            i += 1;
            ticker.tick(&mut self.ch, i)?;
        }
        Ok((i, before))
    }

    /// A loop over `count` items with progress.
    fn each(&mut self, count: u64, mut op: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let mut ticker = Ticker::new();
        for i in 0..count {
            op(i)?;
            ticker.tick(&mut self.ch, i + 1)?;
        }
        Ok(())
    }

    fn step<F: Fs>(&mut self, fs: &F, root: &str, step: &str, count: u64) -> anyhow::Result<StepResult> {
        let start = Instant::now();
        let mut res = StepResult::default();
        let rank = self.rank;
        let ranks = u64::from(self.cfg.ranks);
        let w = self.cfg.work;
        let src = self.source();
        match step {
            "setup-shared" => {
                if rank == 0 {
                    let hard = names::hard_dir(root);
                    for d in names::shared_dirs(root) {
                        if d == hard {
                            fs.mkdir_striped(&d, self.cfg.hard_stripe_count)?;
                        } else {
                            fs.mkdir(&d)?;
                        }
                    }
                }
            }
            "setup-rank" => fs.mkdir(&names::md_easy_dir(root, rank))?,
            "cleanup-rank" => {
                // Present unless a phase failed half way; the coordinator removes the POSIX tree
                // in any case, rustre's belongs to a scratch cluster or is reported.
                fs.unlink(&names::easy_file(root, rank))?;
                fs.rmdir(&names::md_easy_dir(root, rank))?;
            }
            "cleanup-shared" => {
                if rank == 0 {
                    fs.unlink(&names::hard_file(root))?;
                    for d in names::shared_dirs(root).iter().rev() {
                        fs.rmdir(d)?;
                    }
                }
            }
            "ior-easy-write" => {
                let f = fs.create(&names::easy_file(root, rank), true)?;
                let xfer = w.easy_xfer;
                let mut buf = vec![0u8; xfer as usize];
                let (n, before) = self.stonewalled(w.easy_count, |i| {
                    pattern::fill(&mut buf, i * xfer, seed_easy(rank));
                    fs.pwrite(&f, &buf, i * xfer)
                })?;
                fs.fsync(&f)?;
                fs.close(f)?;
                res.items = n;
                res.before_stonewall = before;
                res.bytes = n * xfer;
            }
            "ior-easy-read" => {
                let f = fs.open_read(&names::easy_file(root, src))?;
                let xfer = w.easy_xfer;
                let mut buf = vec![0u8; xfer as usize];
                let mut bad = 0;
                self.each(count, |i| {
                    let n = fs.pread(&f, &mut buf, i * xfer)?;
                    if n != buf.len() || pattern::check(&buf, i * xfer, seed_easy(src)).is_some() {
                        bad += 1;
                    }
                    Ok(())
                })?;
                fs.close(f)?;
                res.items = count;
                res.bytes = count * xfer;
                res.verified = res.bytes;
                res.bad = bad;
            }
            "ior-hard-write" => {
                let f = fs.create(&names::hard_file(root), false)?;
                let mut buf = vec![0u8; HARD_RECORD as usize];
                let (n, before) = self.stonewalled(w.hard_count, |i| {
                    let off = (i * ranks + u64::from(rank)) * HARD_RECORD;
                    pattern::fill(&mut buf, off, seed_hard(rank));
                    fs.pwrite(&f, &buf, off)
                })?;
                fs.fsync(&f)?;
                fs.close(f)?;
                if rank == 0 {
                    res.stripes = fs.stripe_count(&names::hard_file(root))?;
                }
                res.items = n;
                res.before_stonewall = before;
                res.bytes = n * HARD_RECORD;
            }
            "ior-hard-read" => {
                let f = fs.open_read(&names::hard_file(root))?;
                let mut buf = vec![0u8; HARD_RECORD as usize];
                let mut bad = 0;
                self.each(count, |i| {
                    let off = (i * ranks + u64::from(src)) * HARD_RECORD;
                    let n = fs.pread(&f, &mut buf, off)?;
                    if n != buf.len() || pattern::check(&buf, off, seed_hard(src)).is_some() {
                        bad += 1;
                    }
                    Ok(())
                })?;
                fs.close(f)?;
                res.items = count;
                res.bytes = count * HARD_RECORD;
                res.verified = res.bytes;
                res.bad = bad;
            }
            "mdtest-easy-write" => {
                let dir = names::md_easy_dir(root, rank);
                let (n, before) = self.stonewalled(w.md_easy_count, |i| {
                    let f = fs.create(&format!("{dir}/{}", names::md_easy_name(i)), true)?;
                    fs.close(f)
                })?;
                res.items = n;
                res.before_stonewall = before;
            }
            "mdtest-easy-stat" => {
                let dir = names::md_easy_dir(root, src);
                let mut bad = 0;
                self.each(count, |i| {
                    if fs.stat_size(&format!("{dir}/{}", names::md_easy_name(i)))? != 0 {
                        bad += 1;
                    }
                    Ok(())
                })?;
                res.items = count;
                res.bad = bad;
            }
            "mdtest-easy-delete" => {
                let dir = names::md_easy_dir(root, rank);
                self.each(count, |i| fs.unlink(&format!("{dir}/{}", names::md_easy_name(i))))?;
                res.items = count;
            }
            "mdtest-hard-write" => {
                let mut buf = vec![0u8; MD_HARD_BYTES];
                let (n, before) = self.stonewalled(w.md_hard_count, |i| {
                    let f = fs.create(&format!("{root}/mdtest-hard/{}", names::md_hard_name(rank, i)), true)?;
                    pattern::fill(&mut buf, 0, seed_md(rank, i));
                    fs.pwrite(&f, &buf, 0)?;
                    fs.close(f)
                })?;
                res.items = n;
                res.before_stonewall = before;
                res.bytes = n * MD_HARD_BYTES as u64;
            }
            "mdtest-hard-stat" => {
                let mut bad = 0;
                self.each(count, |i| {
                    let p = format!("{root}/mdtest-hard/{}", names::md_hard_name(src, i));
                    if fs.stat_size(&p)? != MD_HARD_BYTES as u64 {
                        bad += 1;
                    }
                    Ok(())
                })?;
                res.items = count;
                res.bad = bad;
            }
            "mdtest-hard-read" => {
                // One byte more than the file holds: a longer file does not check out.
                let mut buf = vec![0u8; MD_HARD_BYTES + 1];
                let mut bad = 0;
                self.each(count, |i| {
                    let f = fs.open_read(&format!("{root}/mdtest-hard/{}", names::md_hard_name(src, i)))?;
                    let n = fs.pread(&f, &mut buf, 0)?;
                    if n != MD_HARD_BYTES || pattern::check(&buf[..n], 0, seed_md(src, i)).is_some() {
                        bad += 1;
                    }
                    fs.close(f)
                })?;
                res.items = count;
                res.bytes = count * MD_HARD_BYTES as u64;
                res.verified = res.bytes;
                res.bad = bad;
            }
            "mdtest-hard-delete" => {
                self.each(count, |i| {
                    fs.unlink(&format!("{root}/mdtest-hard/{}", names::md_hard_name(rank, i)))
                })?;
                res.items = count;
            }
            "find" => {
                let ranks = self.cfg.ranks;
                let mut ticker = Ticker::new();
                let ch = &mut self.ch;
                let (scanned, found) = find_share(fs, root, rank, ranks, |n| ticker.tick(ch, n))?;
                res.items = scanned;
                res.found = found;
            }
            other => bail!("unknown step {other:?}"),
        }
        res.seconds = start.elapsed().as_secs_f64();
        Ok(res)
    }
}

fn holds_pattern(name: &[u8]) -> bool {
    name.windows(FIND_PATTERN.len()).any(|w| w == FIND_PATTERN)
}

/// One rank's share of the parallel find (as IO500's parallel find splits a tree over ranks):
/// every rank reads the same top of the tree breadth-first until at least `ranks` directories
/// wait to be read (or none is left), sorts them, and walks every `ranks`-th of them, starting
/// with its own number, with everything below. The entries of the directories read while
/// splitting count for rank 0 only, so the ranks' sums are exactly the whole tree's.
/// Returns (entries scanned, files whose name holds the pattern); `tick` gets the running count.
pub fn find_share<F: Fs>(
    fs: &F,
    root: &str,
    rank: u32,
    ranks: u32,
    mut tick: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, u64)> {
    let ranks = ranks.max(1) as usize;
    let (mut scanned, mut found) = (0u64, 0u64);
    let count = |name: &[u8], is_dir: bool, scanned: &mut u64, found: &mut u64| {
        *scanned += 1;
        if !is_dir && holds_pattern(name) {
            *found += 1;
        }
    };
    let join = |dir: &str, name: &[u8]| format!("{dir}/{}", String::from_utf8_lossy(name));
    let mut frontier = std::collections::VecDeque::from([root.to_string()]);
    while frontier.len() < ranks {
        let Some(dir) = frontier.pop_front() else { break };
        for (name, is_dir) in fs.readdir(&dir)? {
            if rank == 0 {
                count(&name, is_dir, &mut scanned, &mut found);
            }
            if is_dir {
                frontier.push_back(join(&dir, &name));
            }
        }
    }
    let mut shared: Vec<String> = frontier.into_iter().collect();
    shared.sort_unstable();
    let mut stack: Vec<String> = shared
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % ranks == rank as usize)
        .map(|(_, d)| d)
        .collect();
    while let Some(dir) = stack.pop() {
        for (name, is_dir) in fs.readdir(&dir)? {
            count(&name, is_dir, &mut scanned, &mut found);
            if is_dir {
                stack.push(join(&dir, &name));
            }
        }
        tick(scanned)?;
    }
    Ok((scanned, found))
}

/// The files find should find and the entries it should scan, given what every rank wrote:
/// (entries, matches).
pub fn find_expected(ranks: u32, easy_files: u64, md_hard_files: u64) -> (u64, u64) {
    let has = |s: &str| holds_pattern(s.as_bytes());
    let (mut entries, mut matches) = (4u64, 0u64); // the four phase directories
    for r in 0..ranks {
        entries += 2; // ior-easy/ior.r and mdtest-easy/rank.r
        if has(&format!("ior.{r}")) {
            matches += 1;
        }
        for i in 0..easy_files {
            entries += 1;
            if has(&names::md_easy_name(i)) {
                matches += 1;
            }
        }
        for i in 0..md_hard_files {
            entries += 1;
            if has(&names::md_hard_name(r, i)) {
                matches += 1;
            }
        }
    }
    entries += 1; // ior-hard/shared
    if has("shared") {
        matches += 1;
    }
    (entries, matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranks' shares of a tree shaped like a run's add up to the whole tree, for any number
    /// of ranks (also more ranks than directories), and with up to four ranks each one works.
    #[test]
    fn find_shares_add_up_to_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        let fs = PosixFs;
        let (writers, easy, hard) = (3u32, 12u64, 25u64);
        for d in names::shared_dirs(&root).iter().skip(1) {
            fs.mkdir(d).unwrap();
        }
        for r in 0..writers {
            fs.close(fs.create(&names::easy_file(&root, r), true).unwrap()).unwrap();
            fs.mkdir(&names::md_easy_dir(&root, r)).unwrap();
            for i in 0..easy {
                let p = format!("{}/{}", names::md_easy_dir(&root, r), names::md_easy_name(i));
                fs.close(fs.create(&p, true).unwrap()).unwrap();
            }
            for i in 0..hard {
                let p = format!("{root}/mdtest-hard/{}", names::md_hard_name(r, i));
                fs.close(fs.create(&p, true).unwrap()).unwrap();
            }
        }
        fs.close(fs.create(&names::hard_file(&root), true).unwrap()).unwrap();
        let want = find_expected(writers, easy, hard);
        for ranks in [1u32, 2, 3, 4, 7, 16] {
            let shares: Vec<(u64, u64)> = (0..ranks)
                .map(|r| find_share(&fs, &root, r, ranks, |_| Ok(())).unwrap())
                .collect();
            let sum = shares.iter().fold((0, 0), |a, s| (a.0 + s.0, a.1 + s.1));
            assert_eq!(sum, want, "{ranks} ranks: {shares:?}");
            // Up to the four phase directories, every rank gets one of them to itself.
            if (2..=4).contains(&ranks) {
                let busy = shares.iter().filter(|s| s.0 > 0).count();
                assert_eq!(
                    busy, ranks as usize,
                    "{ranks} ranks: only {busy} did any work: {shares:?}"
                );
            }
        }
    }
}
