//! `rustre-bench md`: metadata rates of a real `mdsd` over the tcp fabric: create, stat and
//! unlink of N empty files from P clients, beside the null RPC rate (a no-op request through the
//! same transport and the same event loop) measured in the same run, and the daemon's resident
//! memory per inode.
//!
//! The clients are P threads of this process, each with its own connection (and client id), so
//! the server sees P independent peers; processes would add nothing the server can tell apart.
//! `mdsd` and `ostd` run as separate processes (binaries next to this one by default) on files in
//! /dev/shm; the one OST serves the MDS's object precreation.

use anyhow::{Context, bail};
use prost::Message;
use rustre_fabric::{Address, ClientConn, ConnOptions, connect};
use rustre_proto::frame::FLAG_ERROR;
use rustre_proto::{Opcode, pb};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

/// `rustre-bench md` options.
#[derive(clap::Args, Debug)]
pub struct MdArgs {
    /// Files created, stat'ed and unlinked (in total, split over the clients).
    #[arg(long, default_value_t = 10_000)]
    pub files: u64,
    /// Concurrent clients (threads, one connection each).
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Connect to this running mdsd instead of starting one (RSS is then not measured).
    #[arg(long)]
    pub mds: Option<String>,
    /// The `mdsd` binary (default: next to this binary).
    #[arg(long)]
    pub mdsd: Option<PathBuf>,
    /// The `ostd` binary (default: next to this binary).
    #[arg(long)]
    pub ostd: Option<PathBuf>,
    /// Directory for the MDT and OST device files.
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// MDT device size in bytes (default: 2 KiB per file, at least 256 MiB).
    #[arg(long)]
    pub mdt_size: Option<u64>,
}

struct Proc {
    child: Child,
    files: Vec<PathBuf>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn sibling(given: &Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    let p = match given {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name(name),
    };
    if !p.exists() {
        bail!(
            "{} not found; build it (cargo build --release -p rustre-{name}) or pass --{name}",
            p.display()
        );
    }
    Ok(p)
}

fn spawn_until(mut cmd: Command, prefix: &str, files: Vec<PathBuf>) -> anyhow::Result<(Proc, String)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let out = child.stdout.take().context("child stdout")?;
    let proc = Proc { child, files };
    let mut line = String::new();
    let mut r = BufReader::new(out);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("{cmd:?} exited before printing {prefix:?}");
        }
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            let addr = rest.rsplit(' ').next().unwrap_or(rest).to_string();
            std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
            return Ok((proc, addr));
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

fn call<R: Message + Default>(c: &Arc<dyn ClientConn>, op: Opcode, req: &impl Message) -> anyhow::Result<R> {
    let r = c.call(op.as_u16(), &req.encode_to_vec())?;
    if r.header.flags & FLAG_ERROR != 0 {
        let e = pb::ErrorReply::decode(&r.body[..])?;
        bail!("{}: errno {} {}", op.name(), e.errno, e.message);
    }
    Ok(R::decode(&r.body[..])?)
}

fn creds() -> Option<pb::Credentials> {
    Some(pb::Credentials {
        uid: 0,
        gid: 0,
        groups: vec![],
    })
}

fn fid(ino: u64) -> Option<pb::Fid> {
    Some(pb::Fid { ino, generation: 0 })
}

/// Runs `per_client(client_index, conn)` on every client at once; returns ops/s over `total` ops.
fn phase(
    conns: &[Arc<dyn ClientConn>],
    total: u64,
    f: impl Fn(usize, &Arc<dyn ClientConn>) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<(f64, f64)> {
    let t0 = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let hs: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let f = &f;
                s.spawn(move || f(i, c))
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        }
        Ok(())
    })?;
    let secs = t0.elapsed().as_secs_f64();
    Ok((total as f64 / secs, secs))
}

/// Runs the benchmark.
pub fn run(a: &MdArgs) -> anyhow::Result<()> {
    let p = a.clients.max(1) as u64;
    let per = a.files.div_ceil(p);
    let n = per * p;
    let mut _procs: Vec<Proc> = Vec::new();
    let (mds_addr, mds_pid) = match &a.mds {
        Some(addr) => (addr.clone(), None),
        None => {
            let mdsd = sibling(&a.mdsd, "mdsd")?;
            let ostd = sibling(&a.ostd, "ostd")?;
            let tag = std::process::id();
            let mdt = a.dir.join(format!("rustre-bench-md-{tag}.mdt"));
            let ost = a.dir.join(format!("rustre-bench-md-{tag}.ost"));
            let mdt_size = a.mdt_size.unwrap_or((n * 2048).max(256 << 20));
            let st = Command::new(&ostd)
                .args([
                    "mkfs",
                    "--index",
                    "0",
                    "--fsname",
                    "mdbench",
                    "--size",
                    &(1u64 << 30).to_string(),
                ])
                // Every file gets an object: room for all of them plus the precreated pool.
                .args(["--max-objects", &(n * 2 + (1 << 16)).to_string()])
                .arg(&ost)
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                let _ = std::fs::remove_file(&ost);
                bail!("ostd mkfs failed");
            }
            let mut c = Command::new(&ostd);
            c.args(["serve", "--device"])
                .arg(&ost)
                .args(["--listen", "tcp://127.0.0.1:0"]);
            let (op, ost_addr) = spawn_until(c, "ostd: serving", vec![ost.clone()])?;
            _procs.push(op);
            let st = Command::new(&mdsd)
                .args(["mkfs", "--fsname", "mdbench", "--size", &mdt_size.to_string()])
                .arg(&mdt)
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                let _ = std::fs::remove_file(&mdt);
                bail!("mdsd mkfs failed");
            }
            let mut c = Command::new(&mdsd);
            c.args(["serve", "--device"]).arg(&mdt).args([
                "--listen",
                "tcp://127.0.0.1:0",
                "--ost",
                &format!("0={ost_addr}"),
            ]);
            c.args(["--precreate-batch", "8192"]);
            let (mp, addr) = spawn_until(c, "mdsd: serving on", vec![mdt.clone()])?;
            let pid = mp.child.id();
            _procs.push(mp);
            (addr, Some(pid))
        }
    };
    let addr: Address = mds_addr
        .parse()
        .map_err(|e| anyhow::anyhow!("mds address {mds_addr}: {e}"))?;
    let conns: Vec<Arc<dyn ClientConn>> = (0..p)
        .map(|i| {
            connect(
                &addr,
                &ConnOptions {
                    client_id: 1000 + i,
                    ..ConnOptions::default()
                },
            )
        })
        .collect::<Result<_, _>>()?;
    let _: pb::HandshakeReply = call(
        &conns[0],
        Opcode::Handshake,
        &pb::HandshakeRequest {
            client_id: 1000,
            ..Default::default()
        },
    )?;
    // One directory per client (mdtest -u), made before timing.
    let top = format!("mdbench.{}", std::process::id());
    let top_attr: pb::MdsMkdirReply = call(
        &conns[0],
        Opcode::MdsMkdir,
        &pb::MdsMkdirRequest {
            creds: creds(),
            parent: fid(1),
            name: top.clone().into_bytes(),
            walk: Vec::new(),
            mode: 0o755,
            default_layout: None,
        },
    )?;
    let top_ino = top_attr
        .attr
        .and_then(|a| a.fid)
        .map(|f| f.ino)
        .context("mkdir reply without fid")?;
    let mut dirs = Vec::new();
    for i in 0..p {
        let r: pb::MdsMkdirReply = call(
            &conns[0],
            Opcode::MdsMkdir,
            &pb::MdsMkdirRequest {
                creds: creds(),
                parent: fid(top_ino),
                name: format!("c{i}").into_bytes(),
                walk: Vec::new(),
                mode: 0o755,
                default_layout: None,
            },
        )?;
        dirs.push(
            r.attr
                .and_then(|a| a.fid)
                .map(|f| f.ino)
                .context("mkdir reply without fid")?,
        );
    }
    // Warm the precreate pool so the first creates do not measure the first refill.
    std::thread::sleep(std::time::Duration::from_millis(300));

    let null_phase = |count: u64| {
        phase(&conns, count * p, |_, c| {
            for _ in 0..count {
                let _: pb::MdsNullReply = call(c, Opcode::MdsNull, &pb::MdsNullRequest { payload: Vec::new() })?;
            }
            Ok(())
        })
    };
    // Warm-up (threads, connections, caches), then the baseline measured before and after the
    // metadata phases; the faster of the two is reported so the ratio is not flattered.
    null_phase(per.min(1000))?;
    let (null_before, null_s) = null_phase(per)?;
    let rss0 = mds_pid.and_then(rss_kib);
    let (create_ops, create_s) = phase(&conns, n, |i, c| {
        for j in 0..per {
            let _: pb::MdsCreateReply = call(
                c,
                Opcode::MdsCreate,
                &pb::MdsCreateRequest {
                    creds: creds(),
                    parent: fid(dirs[i]),
                    name: format!("f{j}").into_bytes(),
                    walk: Vec::new(),
                    mode: 0o644,
                    flags: pb::OpenFlag::Create as u32 | pb::OpenFlag::Excl as u32 | pb::OpenFlag::Write as u32,
                    layout: None,
                },
            )?;
        }
        Ok(())
    })?;
    let rss1 = mds_pid.and_then(rss_kib);
    let (stat_ops, stat_s) = phase(&conns, n, |i, c| {
        for j in 0..per {
            let _: pb::MdsLookupReply = call(
                c,
                Opcode::MdsLookup,
                &pb::MdsLookupRequest {
                    creds: creds(),
                    parent: fid(dirs[i]),
                    name: format!("f{j}").into_bytes(),
                    more: Vec::new(),
                },
            )?;
        }
        Ok(())
    })?;
    let (unlink_ops, unlink_s) = phase(&conns, n, |i, c| {
        for j in 0..per {
            let _: pb::MdsUnlinkReply = call(
                c,
                Opcode::MdsUnlink,
                &pb::MdsUnlinkRequest {
                    creds: creds(),
                    parent: fid(dirs[i]),
                    name: format!("f{j}").into_bytes(),
                    walk: Vec::new(),
                },
            )?;
        }
        Ok(())
    })?;
    let (null_after, _) = null_phase(per)?;
    let null_ops = null_before.max(null_after);
    let bytes_per_inode = match (rss0, rss1) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a) * 1024) as f64 / n as f64),
        _ => None,
    };
    let ratio = create_ops / null_ops;
    println!("rustre-bench md: {n} files, {p} clients (threads, one tcp connection each), mdsd at {mds_addr}");
    println!(
        "  null rpc : {null_ops:>12.0} ops/s  (before {null_before:.0}, after {null_after:.0}; {null_s:.2} s)   <- baseline: same transport, same event loop"
    );
    println!("  create   : {create_ops:>12.0} ops/s  ({create_s:.2} s)   durable: group-committed WAL");
    println!("  stat     : {stat_ops:>12.0} ops/s  ({stat_s:.2} s)");
    println!("  unlink   : {unlink_ops:>12.0} ops/s  ({unlink_s:.2} s)");
    println!("  create / null rpc ratio: {ratio:.3}");
    if let Some(b) = bytes_per_inode {
        println!("  mdsd RSS growth per inode: {b:.0} bytes");
    }
    if let Some(path) = &a.json {
        let j = serde_json::json!({
            "files": n,
            "clients": p,
            "client_kind": "threads",
            "transport": "tcp",
            "null_rpc_ops": null_ops,
            "create_ops": create_ops,
            "stat_ops": stat_ops,
            "unlink_ops": unlink_ops,
            "create_ratio": ratio,
            "bytes_per_inode": bytes_per_inode,
            "create_seconds": create_s,
        });
        std::fs::write(path, serde_json::to_string_pretty(&j)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for c in &conns {
        c.close();
    }
    // mdsd first, then the OST it talks to.
    while let Some(p) = _procs.pop() {
        drop(p);
    }
    Ok(())
}
