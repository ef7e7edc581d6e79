//! The control channel between the coordinator and its rank processes: one loopback TCP
//! connection per rank, one JSON message per line. It carries barriers (a phase starts when the
//! coordinator sends it to every rank), progress, and the stonewall count exchange.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Longest control message accepted (a line).
const MAX_LINE: usize = 64 * 1024;

/// Which file system a phase runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// rustre through librustre.
    Rustre,
    /// POSIX on the local baseline directory.
    Posix,
}

/// What every rank needs to know, sent once after it says hello.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankConfig {
    /// Number of ranks.
    pub ranks: u32,
    /// librustre client spec (config file or MDS addresses).
    pub rustre_spec: String,
    /// Top directory of the run in rustre.
    pub rustre_root: String,
    /// Top directory of the run on the POSIX baseline (None: no baseline).
    pub posix_root: Option<String>,
    /// Work of one rank per phase (the stonewall may cut writes short).
    pub work: Work,
    /// Seconds after which write phases stop (then complete to the furthest rank).
    pub stonewall_s: f64,
    /// librustre write-behind bytes for the ranks' clients (None: as the client spec says).
    #[serde(default)]
    pub write_behind: Option<u64>,
    /// librustre read-ahead bytes for the ranks' clients (None: as the client spec says).
    #[serde(default)]
    pub read_ahead: Option<u64>,
    /// Stripe count of the ior-hard directory (-1: every OST, 0: the default).
    #[serde(default)]
    pub hard_stripe_count: i64,
}

/// Amount of work per rank.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Work {
    /// ior-easy transfer size, bytes.
    pub easy_xfer: u64,
    /// ior-easy transfers per rank.
    pub easy_count: u64,
    /// ior-hard records per rank (47008 bytes each).
    pub hard_count: u64,
    /// mdtest-easy files per rank.
    pub md_easy_count: u64,
    /// mdtest-hard files per rank (3901 bytes each).
    pub md_hard_count: u64,
}

/// Coordinator to rank.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToRank {
    /// The run's configuration.
    Config(RankConfig),
    /// Run one step (a phase, or setup/cleanup) on a target; `count`: items per rank for the
    /// phases that follow a write (what every rank wrote).
    Step {
        /// The step.
        step: String,
        /// The file system.
        target: Target,
        /// Items per rank written earlier (reads, stats, deletes).
        count: u64,
    },
    /// The furthest rank's count at the stonewall: complete up to it.
    Max {
        /// Items.
        count: u64,
    },
    /// Exit.
    Quit,
}

/// Rank to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromRank {
    /// First message: who this is.
    Hello {
        /// Rank number.
        rank: u32,
        /// Process id.
        pid: u32,
    },
    /// Ready (connected to every target).
    Ready,
    /// Items done so far in the current phase.
    Progress {
        /// Items.
        done: u64,
    },
    /// Items done when the stonewall struck.
    Count {
        /// Items.
        count: u64,
    },
    /// The step is over.
    Done(StepResult),
    /// The step failed.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// One rank's result of one step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepResult {
    /// Items (transfers, records, files, entries) done.
    pub items: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Bytes that did not match the pattern (reads), or names missing (find).
    pub bad: u64,
    /// Bytes checked against the pattern.
    pub verified: u64,
    /// find: matching files found.
    pub found: u64,
    /// Items done before the stonewall struck (write phases).
    pub before_stonewall: u64,
    /// Seconds this rank spent in the step.
    pub seconds: f64,
    /// ior-hard-write on rustre: the OSTs the shared file is striped over (rank 0 says).
    #[serde(default)]
    pub stripes: Option<u32>,
}

/// A line-framed JSON channel over a TCP stream.
pub struct Channel {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
}

impl Channel {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> anyhow::Result<Channel> {
        stream.set_nodelay(true).context("control channel: setsockopt")?;
        let writer = stream.try_clone().context("control channel: dup")?;
        Ok(Channel {
            reader: BufReader::new(stream),
            writer,
            line: String::new(),
        })
    }

    /// A second handle for writing (the coordinator writes from one thread, reads in another).
    pub fn writer(&self) -> anyhow::Result<TcpStream> {
        self.writer.try_clone().context("control channel: dup")
    }

    /// Sends one message.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> anyhow::Result<()> {
        send(&mut self.writer, msg)
    }

    /// Receives one message; None when the peer closed the channel.
    pub fn recv<T: for<'de> Deserialize<'de>>(&mut self) -> anyhow::Result<Option<T>> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut self.line)
            .context("control channel: read")?;
        if n == 0 {
            return Ok(None);
        }
        if !self.line.ends_with('\n') {
            bail!("control channel: message longer than {MAX_LINE} bytes or cut short");
        }
        let msg = serde_json::from_str(self.line.trim_end())
            .with_context(|| format!("control channel: bad message {:?}", self.line.trim_end()))?;
        Ok(Some(msg))
    }
}

/// Sends one message on a stream.
pub fn send<T: Serialize>(w: &mut TcpStream, msg: &T) -> anyhow::Result<()> {
    let mut s = serde_json::to_string(msg).context("control channel: encode")?;
    s.push('\n');
    w.write_all(s.as_bytes()).context("control channel: write")
}
