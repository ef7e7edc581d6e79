//! The local cluster the bench starts when given no configuration, and the ceilings: fio on the
//! OSTs' file system (the device) and the fabric bench's raw transport.

use super::{Io500Args, Work};
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A ceiling and what it is.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// What was measured.
    pub name: String,
    /// Sequential write, GiB/s.
    pub write_gib_s: f64,
    /// Sequential read (or one-way stream), GiB/s.
    pub read_gib_s: f64,
}

/// A cluster started with `rustre cluster up` on a scratch directory; `down` when dropped.
pub struct LocalCluster {
    dir: tempfile::TempDir,
    rustre: PathBuf,
}

/// `rustre` next to this executable, in `$RUSTRE_BIN_DIR`, or on PATH.
fn rustre_binary() -> PathBuf {
    if let Some(d) = std::env::var_os("RUSTRE_BIN_DIR") {
        let p = PathBuf::from(d).join("rustre");
        if p.is_file() {
            return p;
        }
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(p) = exe.parent().map(|d| d.join("rustre"))
        && p.is_file()
    {
        return p;
    }
    PathBuf::from("rustre")
}

impl LocalCluster {
    /// Brings a cluster up for `work`. Each OST device is sized to hold every phase's data (the
    /// layout decides which OSTs a file lands on) and, where the file system can, preallocated
    /// (`ostd mkfs --preallocate`, which on tmpfs also writes the file once): the phases then
    /// write blocks the file system has already allocated, as on a block device, as fio's
    /// median round does (see [`device_ceilings`]), instead of timing the allocation of a sparse
    /// file's blocks (on /dev/shm, its memory). The directory is checked for that room first;
    /// without it the temporary directory is used, or the run stops with the figures.
    pub fn up(args: &Io500Args, work: &Work) -> anyhow::Result<LocalCluster> {
        let per_ost = ost_bytes(work, args.ranks);
        let need = footprint(per_ost, args.osts, args.size);
        let room = |d: &Path| d.is_dir() && direct_io(d) && free_bytes(d).is_some_and(|f| f >= need);
        let parent = if room(&args.cluster_dir) {
            args.cluster_dir.clone()
        } else {
            let tmp = std::env::temp_dir();
            if !room(&tmp) {
                bail!(
                    "the local cluster needs about {:.1} GiB for this --size on a file system that takes \
                     O_DIRECT; neither {} nor {} is one with that much free (pass --cluster-dir, or a \
                     smaller --size)",
                    need as f64 / f64::from(1u32 << 30),
                    args.cluster_dir.display(),
                    tmp.display()
                );
            }
            eprintln!(
                "rustre-bench io500: {} refuses O_DIRECT or lacks the {:.1} GiB this run writes; the local \
                 cluster goes to {}",
                args.cluster_dir.display(),
                need as f64 / f64::from(1u32 << 30),
                tmp.display()
            );
            tmp
        };
        let dir = tempfile::Builder::new()
            .prefix("rustre-io500-")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a scratch directory in {}", parent.display()))?;
        let rustre = rustre_binary();
        let mut c = Command::new(&rustre);
        c.args(["cluster", "up", "--data"])
            .arg(dir.path())
            .args(["--osts", &args.osts.to_string(), "--fabric", &args.fabric])
            .args(["--size-per-ost", &per_ost.to_string(), "--mdt-size", "1G"]);
        if preallocates(&parent) {
            c.arg("--preallocate");
        } else {
            eprintln!(
                "rustre-bench io500: {} cannot preallocate files: the OST devices stay sparse",
                parent.display()
            );
        }
        if let Some(h) = &args.host {
            c.args(["--host", h]);
        }
        let out = c
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} cluster up", rustre.display()))?;
        let cluster = LocalCluster { dir, rustre };
        if !out.status.success() {
            bail!(
                "{} cluster up failed ({}): {}{}",
                cluster.rustre.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(cluster)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its client configuration.
    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("client.toml")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let st = Command::new(&self.rustre)
            .args(["cluster", "down", "--data"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !matches!(st, Ok(s) if s.success()) {
            eprintln!(
                "rustre-bench io500: `rustre cluster down --data {}` failed",
                self.dir.path().display()
            );
        }
    }
}

/// Size of each OST device: every phase's data (small files take a block each), a quarter again
/// for the OST's own tables and journal, and 256 MiB, in whole MiB.
fn ost_bytes(work: &Work, ranks: u32) -> u64 {
    let per_rank = work.easy_count * work.easy_xfer
        + work.hard_count * super::rank::HARD_RECORD
        + (work.md_easy_count + work.md_hard_count) * 4096;
    let data = per_rank * u64::from(ranks);
    (data / 4 * 5 + (256 << 20)).next_multiple_of(1 << 20)
}

/// Bytes a run takes on the cluster's file system: the preallocated OST devices, fio's ceiling
/// file, and 256 MiB for the MDT (a sparse file; its journal and tables).
fn footprint(per_ost: u64, osts: u32, size: f64) -> u64 {
    per_ost * u64::from(osts) + fio_bytes(size) + (256 << 20)
}

/// True when files in `dir` can be opened with O_DIRECT, as the OSTs' devices must be (tmpfs takes
/// it from Linux 6.6 on only).
fn direct_io(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(probe) = tempfile::Builder::new().prefix(".rustre-odirect-").tempfile_in(dir) else {
        return false;
    };
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(probe.path())
        .is_ok()
}

/// True when the file system of `dir` can preallocate a file's blocks (fallocate(2); a 9p or
/// NFS share may not).
fn preallocates(dir: &Path) -> bool {
    let Ok(probe) = tempfile::Builder::new().prefix(".rustre-fallocate-").tempfile_in(dir) else {
        return false;
    };
    let f = probe.as_file();
    f.set_len(4096).is_ok() && rustre_ostd::dev::preallocate(f).is_ok()
}

/// Size of fio's ceiling file for `--size`: 256 MiB per unit, whole MiB.
fn fio_bytes(size: f64) -> u64 {
    ((256u64 << 20) as f64 * size.max(1.0)) as u64 & !((1 << 20) - 1)
}

/// Free bytes of the file system holding `dir` (for an unprivileged user).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` is plain data filled by the call through a pointer to a live local; the
    // path is a NUL-terminated string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // Both are u64 here, narrower on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (avail, frsize) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Some(avail.saturating_mul(frsize))
}

/// The directory of the OST devices, from the `cluster.toml` beside a client configuration file.
pub fn ost_dir_of(spec: &str) -> Option<PathBuf> {
    let cluster = Path::new(spec).parent()?.join("cluster.toml");
    let text = std::fs::read_to_string(cluster).ok()?;
    let v: toml::Table = text.parse().ok()?;
    let dev = v.get("ost")?.as_array()?.first()?.get("device")?.as_str()?;
    Path::new(dev).parent().map(Path::to_path_buf)
}

/// Rounds of the device ceiling (write then read), of which the median counts: at the default
/// size one fio pass takes a tenth of a second, so a single pass is at the mercy of the machine.
const FIO_ROUNDS: usize = 3;

/// Loopback streams of the tcp-to-device ceiling ([`crate::ceiling::tcp_device`]).
const PIPELINE_STREAMS: u64 = 16;

/// The ceilings measured on the OSTs' file system.
#[derive(Default)]
pub struct DeviceCeilings {
    /// fio alone.
    pub fio: Option<Ceiling>,
    /// The tcp-to-device pipeline: transport and device on the same CPUs.
    pub pipeline: Option<Ceiling>,
}

/// fio (io_uring, O_DIRECT, 1 MiB, sequential) on a scratch file in the OSTs' directory: the
/// device the OST images live on. (Not the images themselves: writing them would destroy the
/// file system.) The file is made once and preallocated where the file system can; each of
/// [`FIO_ROUNDS`] rounds writes it and reads it back, and the medians are the ceiling. Only the
/// first round writes pages for the first time: on /dev/shm that costs their allocation, which
/// made a pass on a fresh file anything from 0.4 to 9 GiB/s on the same machine.
///
/// With `tcp`, the same rounds of the tcp-to-device pipeline on the same file follow
/// ([`crate::ceiling::tcp_device`], [`PIPELINE_STREAMS`] streams of 1 MiB): the ceiling of a tcp
/// client and a server storing on that device when both share this machine's CPUs.
pub fn device_ceilings(dir: Option<&Path>, size: f64, tcp: bool) -> DeviceCeilings {
    let Some(dir) = dir else {
        eprintln!("rustre-bench io500: no device ceiling: the OST devices' directory is unknown");
        return DeviceCeilings::default();
    };
    let file = dir.join("fio-ceiling.img");
    let bytes = fio_bytes(size);
    let mut out = DeviceCeilings::default();
    let made = (|| -> anyhow::Result<()> {
        let f = std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
        f.set_len(bytes)
            .with_context(|| format!("sizing {} to {bytes} bytes", file.display()))?;
        if preallocates(dir) {
            rustre_ostd::dev::preallocate(&f)
                .with_context(|| format!("preallocating {} ({bytes} bytes)", file.display()))?;
        }
        Ok(())
    })();
    let fio_rounds = || -> anyhow::Result<Ceiling> {
        let (mut ws, mut rs) = (Vec::new(), Vec::new());
        for _ in 0..FIO_ROUNDS {
            ws.push(fio(&file, bytes, "write")?);
            rs.push(fio(&file, bytes, "read")?);
        }
        Ok(Ceiling {
            name: format!(
                "fio io_uring O_DIRECT 1 MiB qd 8 on {}, median of {FIO_ROUNDS}",
                dir.display()
            ),
            write_gib_s: crate::ost::median(ws),
            read_gib_s: crate::ost::median(rs),
        })
    };
    let pipeline_rounds = || -> anyhow::Result<Ceiling> {
        let (ws, rs) = crate::ceiling::tcp_device_rounds(&file, 1 << 20, PIPELINE_STREAMS, bytes, FIO_ROUNDS)?;
        Ok(Ceiling {
            name: format!(
                "tcp to device on the same CPUs: {PIPELINE_STREAMS} loopback streams of 1 MiB messages, each written to (read from) a file in {} with O_DIRECT, nothing else; median of {FIO_ROUNDS}",
                dir.display()
            ),
            write_gib_s: crate::ost::median(ws),
            read_gib_s: crate::ost::median(rs),
        })
    };
    match made.and_then(|()| fio_rounds()) {
        Ok(c) => out.fio = Some(c),
        Err(e) => eprintln!("rustre-bench io500: no device ceiling: {e:#}"),
    }
    if tcp && out.fio.is_some() {
        match pipeline_rounds() {
            Ok(c) => out.pipeline = Some(c),
            Err(e) => eprintln!("rustre-bench io500: no tcp-to-device ceiling: {e:#}"),
        }
    }
    let _ = std::fs::remove_file(&file);
    out
}

fn fio(file: &Path, bytes: u64, rw: &str) -> anyhow::Result<f64> {
    let out = Command::new("fio")
        .args([
            "--name=rustre-io500-ceiling",
            &format!("--filename={}", file.display()),
            "--ioengine=io_uring",
            "--direct=1",
            "--bs=1M",
            "--iodepth=8",
            &format!("--rw={rw}"),
            &format!("--size={bytes}"),
            "--numjobs=1",
            "--output-format=json",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running fio (is it installed?)")?;
    if !out.status.success() {
        bail!("fio --rw={rw} failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find('{').context("fio printed no JSON")?;
    let j: serde_json::Value = serde_json::from_str(&text[start..]).context("parsing fio's JSON")?;
    let bw = j["jobs"][0][rw]["bw_bytes"]
        .as_f64()
        .context("fio JSON without jobs[0].bw_bytes")?;
    Ok(bw / f64::from(1u32 << 30))
}

/// The fabric bench's raw transport figure (`rustre-bench fabric`, run as a child of this
/// process): plain TCP over loopback, or verbs (perftest) when the cluster's fabric is verbs.
pub fn transport_ceiling(args: &Io500Args) -> Option<Ceiling> {
    let r = (|| -> anyhow::Result<Ceiling> {
        let exe = std::env::current_exe().context("finding the rustre-bench executable")?;
        let json = tempfile::NamedTempFile::new().context("creating a scratch file")?;
        let provider = if args.fabric == "verbs" { "verbs" } else { "tcp" };
        let mut c = Command::new(exe);
        c.args([
            "fabric",
            "--provider",
            provider,
            "--seconds",
            "0.5",
            "--rounds",
            "1",
            "--json",
        ])
        .arg(json.path());
        if provider == "verbs"
            && let Some(h) = &args.host
        {
            c.args(["--listen", &format!("verbs://{h}:0")]);
        }
        let out = c.stdin(Stdio::null()).output().context("running rustre-bench fabric")?;
        if !out.status.success() {
            bail!("rustre-bench fabric failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = std::fs::read_to_string(json.path()).context("reading rustre-bench fabric's JSON")?;
        let j: serde_json::Value = serde_json::from_str(&text).context("parsing rustre-bench fabric's JSON")?;
        let gib = j["baseline_gib_s"]
            .as_f64()
            .context("fabric JSON without baseline_gib_s")?;
        let name = j["baseline"].as_str().unwrap_or(provider).to_string();
        Ok(Ceiling {
            name: format!(
                "{provider} transport: {name}; rustre fabric bulk {:.2} GiB/s",
                j["bulk_gib_s"].as_f64().unwrap_or(f64::NAN)
            ),
            write_gib_s: gib,
            read_gib_s: gib,
        })
    })();
    match r {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("rustre-bench io500: no transport ceiling: {e:#}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprint_counts_every_phase_and_fio() {
        let w = Work {
            easy_xfer: 2 << 20,
            easy_count: 64,
            hard_count: 1000,
            md_easy_count: 1000,
            md_hard_count: 500,
        };
        let data: u64 = 2 * (64 * (2 << 20) + 1000 * 47008 + 1500 * 4096);
        let per_ost = ost_bytes(&w, 2);
        assert_eq!(per_ost, (data / 4 * 5 + (256 << 20)).next_multiple_of(1 << 20));
        assert!(ost_bytes(&w, 4) > per_ost, "more ranks write more");
        let f = footprint(per_ost, 4, 1.0);
        assert_eq!(f, 4 * per_ost + (256 << 20) + (256 << 20));
        assert!(footprint(per_ost, 4, 2.0) > f, "a larger fio file");
        assert!(free_bytes(Path::new("/")).is_some());
        assert!(!direct_io(Path::new("/no/such/dir")));
        assert!(preallocates(Path::new("/dev/shm")), "tmpfs allocates on fallocate");
        assert!(!preallocates(Path::new("/no/such/dir")));
        assert!(free_bytes(Path::new("/no/such/dir")).is_none());
    }
}
