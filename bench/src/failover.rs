//! `rustre-bench failover`: how long a kill -9 of the active server interrupts a client.
//!
//! Starts an OSS pair (two `ostd` on one OST file, the second `--standby`) and an MDS pair (two
//! `mdsd` on one MDT file, the OSS pair as the OST's failover group), binaries next to this one
//! by default, on files in `--dir`, 127.0.0.1 only. Each trial kills the active MDS with SIGKILL
//! and times one client operation that needs it (a create, which blocks through the failover),
//! then does the same for the active OSS with a write; the killed server is restarted as the new
//! standby. Before every kill the client writes a file of its own content; afterwards each of
//! those files is read back and compared: `lost_acknowledged` counts the ones that are missing
//! or differ. The baseline is the system rustre replaces, whose failover takes minutes (a 300 s
//! recovery window by default); the targets are p50 < 5 s and max < 10 s.

use anyhow::{Context, bail};
use clap::Args;
use rustre::{Client, ClientConfig, OpenFlags};
use rustre_testkit::{Node, free_port};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Options of `rustre-bench failover`.
#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// Trials (each kills the active MDS once and the active OSS once).
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// MMP interval of every server, milliseconds (production default 1000).
    #[arg(long, default_value_t = 200)]
    pub mmp_interval_ms: u64,
    /// Directory for the device files.
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// The `mdsd` binary (default: next to this binary).
    #[arg(long)]
    pub mdsd: Option<PathBuf>,
    /// The `ostd` binary (default: next to this binary).
    #[arg(long)]
    pub ostd: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn sibling(given: &Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    let p = match given {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name(name),
    };
    if !p.is_file() {
        bail!("{}: no such binary (build it, or pass --{name})", p.display());
    }
    Ok(p)
}

/// Starts one server process (stdout read as lines, stderr discarded).
fn spawn(bin: &Path, args: &[String]) -> anyhow::Result<Node> {
    Node::spawn(bin, args).with_context(|| format!("start {}", bin.display()))
}

/// Waits up to `limit` for a line of `node` starting with `prefix`.
fn wait_line(node: &Node, prefix: &str, limit: Duration) -> anyhow::Result<()> {
    match node.wait_prefix(prefix, limit) {
        Some(_) => Ok(()),
        None => bail!("no {prefix:?} line within {limit:?}"),
    }
}

/// Stops `node` cleanly (SIGTERM) and waits; true when it exited with success.
fn stop(node: &mut Node) -> bool {
    node.stop().is_ok_and(|s| s.success())
}

/// One failover pair: the active node, the standby, and how to start either.
struct Pair {
    bin: PathBuf,
    ports: [u16; 2],
    args: Box<dyn Fn(u16, bool) -> Vec<String>>,
    serving: &'static str,
    standing_by: &'static str,
    active: Node,
    standby: Node,
    active_slot: usize,
}

impl Pair {
    fn start(
        bin: PathBuf,
        ports: [u16; 2],
        args: Box<dyn Fn(u16, bool) -> Vec<String>>,
        serving: &'static str,
        standing_by: &'static str,
    ) -> anyhow::Result<Pair> {
        let active = spawn(&bin, &args(ports[0], false))?;
        wait_line(&active, serving, Duration::from_secs(30))?;
        let standby = spawn(&bin, &args(ports[1], true))?;
        wait_line(&standby, standing_by, Duration::from_secs(30))?;
        Ok(Pair {
            bin,
            ports,
            args,
            serving,
            standing_by,
            active,
            standby,
            active_slot: 0,
        })
    }

    /// Kills the active node with SIGKILL; returns the time of the kill.
    fn kill_active(&mut self) -> Instant {
        let _ = self.active.kill9();
        Instant::now()
    }

    /// Waits for the standby to take over, then restarts the killed node as the new standby.
    fn restore(&mut self) -> anyhow::Result<()> {
        wait_line(&self.standby, self.serving, Duration::from_secs(30))?;
        let dead = self.ports[self.active_slot];
        self.active_slot = 1 - self.active_slot;
        let next = spawn(&self.bin, &(self.args)(dead, true))?;
        wait_line(&next, self.standing_by, Duration::from_secs(30))?;
        self.active = std::mem::replace(&mut self.standby, next);
        Ok(())
    }
}

fn content(i: usize) -> Vec<u8> {
    (0..(8192 + i * 113)).map(|k| (k * 29 + i * 7) as u8).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Files(Vec<PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Runs the benchmark.
pub fn run(a: &FailoverArgs) -> anyhow::Result<()> {
    if a.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let mdsd = sibling(&a.mdsd, "mdsd")?;
    let ostd = sibling(&a.ostd, "ostd")?;
    let tag = std::process::id();
    let ost_dev = a.dir.join(format!("rustre-bench-failover-{tag}.ost"));
    let mdt_dev = a.dir.join(format!("rustre-bench-failover-{tag}.mdt"));
    let _files = Files(vec![ost_dev.clone(), mdt_dev.clone()]);
    let st = Command::new(&ostd)
        .args(["mkfs", "--index", "0", "--fsname", "bfo", "--size", "268435456"])
        .arg(&ost_dev)
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("ostd mkfs {} failed", ost_dev.display());
    }
    let st = Command::new(&mdsd)
        .args(["mkfs", "--fsname", "bfo", "--size", "67108864"])
        .arg(&mdt_dev)
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("mdsd mkfs {} failed", mdt_dev.display());
    }
    let iv = a.mmp_interval_ms.max(10).to_string();
    let oss_ports = [free_port()?, free_port()?];
    let mds_ports = [free_port()?, free_port()?];
    let ost_list = format!("0=tcp://127.0.0.1:{},tcp://127.0.0.1:{}", oss_ports[0], oss_ports[1]);
    let mut oss = {
        let (dev, iv) = (ost_dev.display().to_string(), iv.clone());
        Pair::start(
            ostd,
            oss_ports,
            Box::new(move |port, standby| serve_args(&dev, port, &[], &iv, &format!("oss-{port}"), standby)),
            "ostd: serving OST",
            "ostd: standby for",
        )?
    };
    let mut mds = {
        let dev = mdt_dev.display().to_string();
        Pair::start(
            mdsd,
            mds_ports,
            Box::new(move |port, standby| {
                let ost = ["--ost".to_string(), ost_list.clone()];
                serve_args(&dev, port, &ost, &iv, &format!("mds-{port}"), standby)
            }),
            "mdsd: serving on",
            "mdsd: standby for",
        )?
    };
    let spec = format!("tcp://127.0.0.1:{},tcp://127.0.0.1:{}", mds_ports[0], mds_ports[1]);
    let mut config = ClientConfig::from_addresses(&spec)?;
    config.limits.call_timeout_ms = 60_000;
    config.limits.connect_timeout_ms = 1_000;
    let client = Client::connect(config)?;
    let wflags = OpenFlags {
        write: true,
        create: true,
        excl: true,
        ..OpenFlags::default()
    };
    let mut acked = 0usize;
    let mut put = |client: &Client, name: String, i: usize| -> anyhow::Result<()> {
        let fd = client.open(&name, wflags, 0o644, None)?;
        client.pwrite(fd, &content(i), 0)?;
        client.close(fd)?;
        acked += 1;
        Ok(())
    };
    let (mut mds_s, mut oss_s) = (Vec::new(), Vec::new());
    for t in 0..a.trials {
        put(&client, format!("/acked-m{t}"), 2 * t)?;
        let t0 = mds.kill_active();
        // The first operation needing the MDS after the kill: blocks through the failover.
        let fd = client.open(&format!("/probe-m{t}"), wflags, 0o644, None)?;
        mds_s.push(t0.elapsed().as_secs_f64());
        client.close(fd)?;
        mds.restore()?;

        put(&client, format!("/acked-o{t}"), 2 * t + 1)?;
        let fd = client.open(
            &format!("/probe-o{t}"),
            OpenFlags {
                write: true,
                create: true,
                ..OpenFlags::default()
            },
            0o644,
            None,
        )?;
        let t0 = oss.kill_active();
        // The first operation needing the OSS after the kill.
        client.pwrite(fd, &content(t), 0)?;
        oss_s.push(t0.elapsed().as_secs_f64());
        client.close(fd)?;
        oss.restore()?;
        eprintln!("trial {}: mds {:.2} s, oss {:.2} s", t + 1, mds_s[t], oss_s[t]);
    }
    // Every acknowledged file, byte for byte.
    let mut lost = 0usize;
    let rflags = OpenFlags {
        read: true,
        ..OpenFlags::default()
    };
    for t in 0..a.trials {
        for (name, i) in [(format!("/acked-m{t}"), 2 * t), (format!("/acked-o{t}"), 2 * t + 1)] {
            let want = content(i);
            let ok = client.open(&name, rflags, 0, None).is_ok_and(|fd| {
                let mut got = vec![0u8; want.len() + 1];
                let n = client.pread(fd, &mut got, 0).unwrap_or(0);
                let _ = client.close(fd);
                got[..n] == want[..]
            });
            if !ok {
                lost += 1;
            }
        }
    }
    client.disconnect();
    drop(client);
    // Clean stops, then both checkers on the devices that went through every failover.
    let stopped = stop(&mut mds.active) & stop(&mut oss.active);
    let mdsd_bin = mds.bin.clone();
    let ostd_bin = oss.bin.clone();
    drop(mds);
    drop(oss);
    let mdt_clean = Command::new(&mdsd_bin)
        .arg("check")
        .arg(&mdt_dev)
        .output()?
        .status
        .success();
    let ost_clean = Command::new(&ostd_bin)
        .arg("check")
        .arg(&ost_dev)
        .output()?
        .status
        .success();

    mds_s.sort_by(f64::total_cmp);
    oss_s.sort_by(f64::total_cmp);
    let (mp50, mmax) = (percentile(&mds_s, 0.5), mds_s.last().copied().unwrap_or(0.0));
    let (op50, omax) = (percentile(&oss_s, 0.5), oss_s.last().copied().unwrap_or(0.0));
    println!(
        "failover over {} trials (MMP interval {} ms), kill -9 to the first successful client operation:",
        a.trials, a.mmp_interval_ms
    );
    println!("  MDS: p50 {mp50:.2} s, max {mmax:.2} s");
    println!("  OSS: p50 {op50:.2} s, max {omax:.2} s");
    println!("  acknowledged files checked: {acked}, lost: {lost}");
    println!(
        "  clean stops: {}, mdsd check: {}, ostd check: {}",
        if stopped { "yes" } else { "NO" },
        if mdt_clean { "clean" } else { "PROBLEMS" },
        if ost_clean { "clean" } else { "PROBLEMS" }
    );
    println!(
        "  baseline (default recovery window 300 s): ratio {:.0}x (MDS p50), {:.0}x (OSS p50)",
        300.0 / mp50.max(1e-9),
        300.0 / op50.max(1e-9)
    );
    let pass = mp50 < 5.0 && mmax < 10.0 && op50 < 5.0 && omax < 10.0 && lost == 0;
    println!(
        "  targets (p50 < 5 s, max < 10 s, nothing lost): {}",
        if pass { "met" } else { "NOT met" }
    );
    if let Some(path) = &a.json {
        let j = serde_json::json!({
            "trials": a.trials,
            "mmp_interval_ms": a.mmp_interval_ms,
            "mds_p50_s": mp50,
            "mds_max_s": mmax,
            "oss_p50_s": op50,
            "oss_max_s": omax,
            "mds_s": mds_s,
            "oss_s": oss_s,
            "acknowledged": acked,
            "lost_acknowledged": lost,
            "mdsd_check_clean": mdt_clean,
            "ostd_check_clean": ost_clean,
            "baseline_recovery_window_s": 300,
        });
        std::fs::write(path, serde_json::to_string_pretty(&j)?).with_context(|| format!("write {}", path.display()))?;
    }
    if lost > 0 {
        bail!("{lost} acknowledged files lost");
    }
    if !(stopped && mdt_clean && ost_clean) {
        bail!("unclean stop or check after the failovers");
    }
    Ok(())
}

/// `serve --device DEV --listen tcp://127.0.0.1:PORT EXTRA… --mmp-interval-ms IV --node NODE
/// [--standby]`: the command line of one server of a pair.
fn serve_args(dev: &str, port: u16, extra: &[String], iv: &str, node: &str, standby: bool) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "serve".into(),
        "--device".into(),
        dev.into(),
        "--listen".into(),
        format!("tcp://127.0.0.1:{port}"),
    ];
    v.extend_from_slice(extra);
    v.extend(["--mmp-interval-ms".into(), iv.into(), "--node".into(), node.into()]);
    if standby {
        v.push("--standby".into());
    }
    v
}
