//! Launching the rank processes (under `mpirun`, or as children of the bench) and driving steps
//! across them over the control channel.

use super::control::{self, Channel, FromRank, RankConfig, StepResult, Target, ToRank};
use anyhow::{Context, bail};
use crossbeam::channel::{Receiver, RecvTimeoutError, unbounded};
use indicatif::ProgressBar;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long ranks have to connect back.
const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// Longest silence from the ranks during a step (progress arrives every 100 ms).
const STEP_SILENCE: Duration = Duration::from_secs(300);

/// How rank processes are started.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// `mpirun` when it is on PATH, else the bench itself.
    Auto,
    /// `mpirun -n P` (Open MPI; as root with --allow-run-as-root --oversubscribe).
    Mpirun,
    /// The bench starts P copies of itself.
    #[value(name = "self")]
    Bench,
}

/// The running ranks.
pub struct Ranks {
    writers: Vec<TcpStream>,
    rx: Receiver<(u32, anyhow::Result<Option<FromRank>>)>,
    children: Vec<Child>,
    /// How they were launched, for the report.
    pub launched_by: &'static str,
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

impl Ranks {
    /// Starts `cfg.ranks` rank processes and waits until each is connected to every target.
    pub fn launch(launcher: Launcher, cfg: &RankConfig) -> anyhow::Result<Ranks> {
        let listener = TcpListener::bind("127.0.0.1:0").context("control channel: bind 127.0.0.1:0")?;
        let addr = listener.local_addr().context("control channel: getsockname")?;
        let exe = std::env::current_exe().context("finding the rustre-bench executable")?;
        let use_mpirun = match launcher {
            Launcher::Auto => on_path("mpirun"),
            Launcher::Mpirun => true,
            Launcher::Bench => false,
        };
        let mut children = Vec::new();
        let launched_by = if use_mpirun {
            let mut c = Command::new("mpirun");
            c.arg("-n").arg(cfg.ranks.to_string());
            if is_root() {
                c.args(["--allow-run-as-root", "--oversubscribe"]);
            } else {
                c.arg("--oversubscribe");
            }
            c.arg(&exe).arg("io500-rank").arg("--control").arg(addr.to_string());
            c.stdin(Stdio::null());
            children.push(c.spawn().context("starting mpirun (is Open MPI installed?)")?);
            "mpirun"
        } else {
            for r in 0..cfg.ranks {
                let child = Command::new(&exe)
                    .arg("io500-rank")
                    .arg("--control")
                    .arg(addr.to_string())
                    .arg("--rank")
                    .arg(r.to_string())
                    .stdin(Stdio::null())
                    .spawn()
                    .with_context(|| format!("starting rank {r} ({})", exe.display()))?;
                children.push(child);
            }
            "rustre-bench"
        };
        let mut ranks = Ranks {
            writers: Vec::new(),
            rx: unbounded().1,
            children,
            launched_by,
        };
        ranks.accept(&listener, cfg)?;
        Ok(ranks)
    }

    fn accept(&mut self, listener: &TcpListener, cfg: &RankConfig) -> anyhow::Result<()> {
        listener
            .set_nonblocking(true)
            .context("control channel: nonblocking accept")?;
        let deadline = Instant::now() + CONNECT_WAIT;
        let mut chans: Vec<Option<Channel>> = (0..cfg.ranks).map(|_| None).collect();
        let mut connected = 0;
        while connected < cfg.ranks {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).context("control channel: blocking mode")?;
                    s.set_read_timeout(Some(CONNECT_WAIT))
                        .context("control channel: timeout")?;
                    let mut ch = Channel::new(s)?;
                    let rank = match ch.recv::<FromRank>()? {
                        Some(FromRank::Hello { rank, .. }) => rank,
                        other => bail!("a rank process sent {other:?} instead of hello"),
                    };
                    let slot = chans
                        .get_mut(rank as usize)
                        .with_context(|| format!("rank {rank} connected, but there are {} ranks", cfg.ranks))?;
                    if slot.is_some() {
                        bail!("rank {rank} connected twice");
                    }
                    *slot = Some(ch);
                    connected += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    for c in &mut self.children {
                        if let Some(st) = c.try_wait().context("waiting for a rank process")? {
                            bail!("a rank process exited before connecting ({st})");
                        }
                    }
                    if Instant::now() > deadline {
                        bail!("{connected} of {} ranks connected within {CONNECT_WAIT:?}", cfg.ranks);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e).context("control channel: accept"),
            }
        }
        let (tx, rx) = unbounded();
        for (rank, ch) in chans.into_iter().enumerate() {
            let mut ch = ch.context("a rank slot left empty")?;
            ch.send(&ToRank::Config(cfg.clone()))?;
            match ch.recv::<FromRank>()? {
                Some(FromRank::Ready) => {}
                Some(FromRank::Failed { error }) => bail!("{error}"),
                other => bail!("rank {rank} sent {other:?} instead of ready"),
            }
            let w = ch.writer()?;
            w.set_read_timeout(None).context("control channel: timeout")?;
            self.writers.push(w);
            let tx = tx.clone();
            let rank = rank as u32;
            std::thread::spawn(move || {
                loop {
                    let m = ch.recv::<FromRank>();
                    let end = !matches!(m, Ok(Some(_)));
                    if tx.send((rank, m)).is_err() || end {
                        break;
                    }
                }
            });
        }
        self.rx = rx;
        Ok(())
    }

    fn broadcast(&mut self, msg: &ToRank) -> anyhow::Result<()> {
        for w in &mut self.writers {
            control::send(w, msg)?;
        }
        Ok(())
    }

    /// Runs one step on every rank: the wall time from its start (sent to all at once) to the
    /// last rank's end, and each rank's result. Write steps exchange stonewall counts.
    pub fn step(
        &mut self,
        step: &str,
        target: Target,
        count: u64,
        bar: &ProgressBar,
    ) -> anyhow::Result<(Duration, Vec<StepResult>)> {
        let n = self.writers.len();
        // The clock starts before the first rank can: a rank may finish a short step before the
        // broadcast returns.
        let start = Instant::now();
        self.broadcast(&ToRank::Step {
            step: step.to_string(),
            target,
            count,
        })?;
        let mut progress = vec![0u64; n];
        let mut counts: Vec<Option<u64>> = vec![None; n];
        let mut results: Vec<Option<StepResult>> = vec![None; n];
        let mut done = 0;
        while done < n {
            let (rank, msg) = match self.rx.recv_timeout(STEP_SILENCE) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => bail!("{step}: no word from any rank for {STEP_SILENCE:?}"),
                Err(RecvTimeoutError::Disconnected) => bail!("{step}: every rank went away"),
            };
            let r = rank as usize;
            match msg.with_context(|| format!("{step}: rank {rank}"))? {
                None => bail!("{step}: rank {rank} exited"),
                Some(FromRank::Progress { done }) => {
                    progress[r] = done;
                    bar.set_position(progress.iter().sum());
                }
                Some(FromRank::Count { count }) => {
                    counts[r] = Some(count);
                    if counts.iter().all(Option::is_some) {
                        let max = counts.iter().flatten().copied().max().unwrap_or(0);
                        self.broadcast(&ToRank::Max { count: max })?;
                    }
                }
                Some(FromRank::Done(res)) => {
                    progress[r] = res.items;
                    bar.set_position(progress.iter().sum());
                    results[r] = Some(res);
                    done += 1;
                }
                Some(FromRank::Failed { error }) => bail!("{error}"),
                Some(other) => bail!("{step}: rank {rank} sent {other:?}"),
            }
        }
        let elapsed = start.elapsed();
        Ok((elapsed, results.into_iter().flatten().collect()))
    }

    /// Tells the ranks to exit and waits for them.
    pub fn quit(mut self) -> anyhow::Result<()> {
        self.broadcast(&ToRank::Quit)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for c in &mut self.children {
            loop {
                if let Some(st) = c.try_wait().context("waiting for a rank process")? {
                    if !st.success() {
                        bail!("a rank process exited with {st}");
                    }
                    break;
                }
                if Instant::now() > deadline {
                    bail!("a rank process did not exit within 30 s");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.children.clear();
        Ok(())
    }
}

impl Drop for Ranks {
    fn drop(&mut self) {
        // Only on failure paths: the ranks (or mpirun) this run started.
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
