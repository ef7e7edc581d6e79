//! Figures per phase, the IO500 score, the table, the JSON document and the plot.

use super::baselines::Ceiling;
use super::control::{RankConfig, StepResult};
use super::{Io500Args, PHASES};
use std::path::Path;
use std::time::Duration;

/// One phase on one file system.
#[derive(Debug, Clone)]
pub struct PhaseFigures {
    /// Phase name.
    pub name: &'static str,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Items over all ranks.
    pub items: u64,
    /// Bytes over all ranks.
    pub bytes: u64,
    /// Items that did not verify.
    pub bad: u64,
    /// Bytes checked against the pattern.
    pub verified: u64,
    /// find: matches.
    pub found: u64,
    /// Items done before the stonewall over all ranks (write phases).
    pub before_stonewall: u64,
    /// GiB/s (ior phases) or kIOPS (the others).
    pub value: f64,
    /// "GiB/s" or "kIOPS".
    pub unit: &'static str,
    /// The OSTs the phase's file is striped over, where a rank reported it (ior-hard-write).
    pub stripes: Option<u32>,
}

impl PhaseFigures {
    /// Sums the ranks' results.
    pub fn from_results(name: &'static str, elapsed: Duration, r: &[StepResult]) -> PhaseFigures {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let sum = |f: fn(&StepResult) -> u64| r.iter().map(f).sum::<u64>();
        let bandwidth = PHASES.iter().any(|p| p.0 == name && p.2);
        let (items, bytes) = (sum(|x| x.items), sum(|x| x.bytes));
        PhaseFigures {
            name,
            seconds: secs,
            items,
            bytes,
            bad: sum(|x| x.bad),
            verified: sum(|x| x.verified),
            found: sum(|x| x.found),
            before_stonewall: sum(|x| x.before_stonewall),
            value: if bandwidth {
                bytes as f64 / secs / f64::from(1u32 << 30)
            } else {
                items as f64 / secs / 1000.0
            },
            unit: if bandwidth { "GiB/s" } else { "kIOPS" },
            stripes: r.iter().filter_map(|x| x.stripes).max(),
        }
    }
}

/// IO500 score of a set of phases: (bandwidth GiB/s, metadata kIOPS, score).
pub fn score(phases: &[PhaseFigures]) -> (f64, f64, f64) {
    let geo = |v: Vec<f64>| {
        if v.is_empty() || v.iter().any(|x| *x <= 0.0) {
            0.0
        } else {
            (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
        }
    };
    let bw = geo(phases.iter().filter(|p| p.unit == "GiB/s").map(|p| p.value).collect());
    let md = geo(phases.iter().filter(|p| p.unit == "kIOPS").map(|p| p.value).collect());
    (bw, md, (bw * md).sqrt())
}

/// Everything measured in one run.
pub struct Report {
    ranks: u32,
    size: f64,
    stonewall: f64,
    launched_by: &'static str,
    /// `--write-behind` (None: as the client configuration says).
    write_behind: Option<u64>,
    /// `--read-ahead` (None: as the client configuration says).
    read_ahead: Option<u64>,
    work: serde_json::Value,
    /// rustre.
    pub ours: Vec<PhaseFigures>,
    /// POSIX baseline.
    pub posix: Option<Vec<PhaseFigures>>,
    /// fio ceiling.
    pub device: Option<Ceiling>,
    /// Transport ceiling.
    pub transport: Option<Ceiling>,
    /// The tcp-to-device pipeline on the same CPUs (tcp runs only): what this host leaves for a
    /// tcp client and a server storing on the OSTs' device together.
    pub pipeline: Option<Ceiling>,
    posix_dir: String,
}

/// A client byte limit the bench set, or that it left to the configuration.
fn client_bytes(b: Option<u64>) -> String {
    match b {
        None => "as the client configuration says".to_string(),
        Some(0) => "off".to_string(),
        Some(b) => format!("{b} bytes"),
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

impl Report {
    /// A report of the phases; the ceilings are filled in after.
    pub fn new(
        args: &Io500Args,
        cfg: &RankConfig,
        launched_by: &'static str,
        ours: Vec<PhaseFigures>,
        posix: Option<Vec<PhaseFigures>>,
    ) -> Report {
        Report {
            ranks: cfg.ranks,
            size: args.size,
            stonewall: args.stonewall,
            launched_by,
            write_behind: cfg.write_behind,
            read_ahead: cfg.read_ahead,
            work: serde_json::to_value(cfg.work).unwrap_or_default(),
            ours,
            posix,
            device: None,
            transport: None,
            pipeline: None,
            posix_dir: args.posix_dir.display().to_string(),
        }
    }

    /// Items that failed verification, over every phase of both file systems.
    pub fn verification_failures(&self) -> u64 {
        self.ours.iter().chain(self.posix.iter().flatten()).map(|p| p.bad).sum()
    }

    /// The smaller of the device and transport ceilings for a write or read phase.
    fn ceiling(&self, write: bool) -> Option<f64> {
        [&self.device, &self.transport]
            .into_iter()
            .flatten()
            .map(|c| if write { c.write_gib_s } else { c.read_gib_s })
            .reduce(f64::min)
    }

    /// Prints the table.
    pub fn print(&self) {
        println!(
            "rustre-bench io500: {} ranks (launched by {}), size {}, stonewall {} s, write-behind {}, read-ahead {}",
            self.ranks,
            self.launched_by,
            self.size,
            self.stonewall,
            client_bytes(self.write_behind),
            client_bytes(self.read_ahead),
        );
        println!(
            "{:<20}{:>12}{:>12}{:>9}{:>9}  {:<7}{:>10}{:>9}",
            "phase", "rustre", "posix", "ratio", "time s", "unit", "ceiling", "ratio"
        );
        for (i, p) in self.ours.iter().enumerate() {
            let b = self.posix.as_ref().and_then(|v| v.get(i));
            let fmt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3}"));
            let ceil = (p.unit == "GiB/s")
                .then(|| self.ceiling(p.name.ends_with("write")))
                .flatten();
            let mut flags = String::new();
            if p.bad > 0 {
                flags.push_str(&format!("  {} NOT VERIFIED", p.bad));
            }
            if p.before_stonewall > 0 && p.before_stonewall < p.items {
                flags.push_str("  (stonewalled)");
            }
            println!(
                "{:<20}{:>12.3}{:>12}{:>9}{:>9.2}  {:<7}{:>10}{:>9}{flags}",
                p.name,
                p.value,
                fmt(b.map(|b| b.value)),
                fmt(b.and_then(|b| ratio(p.value, b.value))),
                p.seconds,
                p.unit,
                fmt(ceil),
                fmt(ceil.and_then(|c| ratio(p.value, c)))
            );
        }
        let (bw, md, s) = score(&self.ours);
        let (pbw, pmd, ps) = self.posix.as_deref().map_or((f64::NAN, f64::NAN, f64::NAN), score);
        println!(
            "{:<20}{:>12.3}{:>12.3}{:>9.3}{:>9}  GiB/s",
            "bandwidth",
            bw,
            pbw,
            bw / pbw,
            ""
        );
        println!(
            "{:<20}{:>12.3}{:>12.3}{:>9.3}{:>9}  kIOPS",
            "metadata",
            md,
            pmd,
            md / pmd,
            ""
        );
        println!("{:<20}{:>12.3}{:>12.3}{:>9.3}", "SCORE", s, ps, s / ps);
        if let Some(n) = self.ours.iter().find_map(|p| p.stripes) {
            println!("ior-hard: one shared file striped over {n} OST(s) (--hard-stripe-count)");
        }
        if self.posix.is_some() {
            println!("posix: the same phases and ranks on {}", self.posix_dir);
        }
        for c in [&self.device, &self.transport].into_iter().flatten() {
            println!(
                "ceiling: {:.3} GiB/s write, {:.3} GiB/s read: {}",
                c.write_gib_s, c.read_gib_s, c.name
            );
        }
        if let Some(c) = &self.pipeline {
            let fmt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
            let min = |write| {
                fmt(self
                    .ceiling(write)
                    .and_then(|m| ratio(if write { c.write_gib_s } else { c.read_gib_s }, m)))
            };
            let easy = |name, of| fmt(self.value(name).and_then(|v| ratio(v, of)));
            println!(
                "tcp-to-device ceiling: {:.3} GiB/s write ({}x the ceiling above), {:.3} GiB/s read ({}x): {}",
                c.write_gib_s,
                min(true),
                c.read_gib_s,
                min(false),
                c.name
            );
            println!(
                "  against it: ior-easy-write {}x, ior-easy-read {}x",
                easy("ior-easy-write", c.write_gib_s),
                easy("ior-easy-read", c.read_gib_s)
            );
        }
    }

    /// Our value of a phase.
    fn value(&self, name: &str) -> Option<f64> {
        self.ours.iter().find(|p| p.name == name).map(|p| p.value)
    }

    /// The JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        let phases = |v: &[PhaseFigures]| {
            v.iter()
                .map(|p| {
                    let mut j = serde_json::json!({
                        "value": p.value, "unit": p.unit, "seconds": p.seconds, "items": p.items,
                        "bytes": p.bytes, "verified_bytes": p.verified, "not_verified": p.bad,
                        "found": p.found, "before_stonewall": p.before_stonewall,
                    });
                    if let Some(n) = p.stripes {
                        j["stripe_count"] = n.into();
                    }
                    (p.name.to_string(), j)
                })
                .collect::<serde_json::Map<_, _>>()
        };
        let (bw, md, s) = score(&self.ours);
        let posix = self.posix.as_deref().map(|v| {
            let (bw, md, s) = score(v);
            serde_json::json!({"dir": self.posix_dir, "phases": phases(v), "bandwidth_gib_s": bw, "metadata_kiops": md, "score": s})
        });
        let ratios: serde_json::Map<_, _> = self
            .ours
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let b = self.posix.as_ref().and_then(|v| v.get(i));
                (
                    p.name.to_string(),
                    serde_json::json!(b.and_then(|b| ratio(p.value, b.value))),
                )
            })
            .collect();
        serde_json::json!({
            "ranks": self.ranks, "size": self.size, "stonewall_s": self.stonewall, "write_behind_bytes": self.write_behind, "read_ahead_bytes": self.read_ahead,
            "launched_by": self.launched_by, "work_per_rank": self.work,
            "phases": phases(&self.ours),
            "bandwidth_gib_s": bw, "metadata_kiops": md, "score": s,
            "verification_failures": self.verification_failures(),
            "baselines": {
                "posix": posix,
                "ratio_to_posix": ratios,
                "device": self.device,
                "transport": self.transport,
                "tcp_to_device": self.pipeline,
                "ratio_to_tcp_to_device": self.pipeline.as_ref().map(|c| serde_json::json!({
                    "ior-easy-write": self.value("ior-easy-write").and_then(|v| ratio(v, c.write_gib_s)),
                    "ior-easy-read": self.value("ior-easy-read").and_then(|v| ratio(v, c.read_gib_s)),
                })),
            },
        })
    }
}

/// Draws ours against the baselines: bandwidth phases (with the ceilings as lines) and metadata
/// phases, log scale.
pub fn plot(rep: &Report, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(380);
    for (area, unit) in [(top, "GiB/s"), (bottom, "kIOPS")] {
        let ours: Vec<&PhaseFigures> = rep.ours.iter().filter(|p| p.unit == unit).collect();
        let posix: Vec<Option<f64>> = ours
            .iter()
            .map(|o| {
                rep.posix
                    .as_ref()
                    .and_then(|v| v.iter().find(|p| p.name == o.name))
                    .map(|p| p.value)
            })
            .collect();
        let mut ceilings: Vec<(String, f64)> = Vec::new();
        if unit == "GiB/s" {
            for c in [&rep.device, &rep.transport, &rep.pipeline].into_iter().flatten() {
                let short = if c.name.starts_with("fio") {
                    "device (fio)"
                } else if c.name.starts_with("tcp to device") {
                    "tcp to device"
                } else {
                    "transport"
                };
                if c.write_gib_s == c.read_gib_s {
                    ceilings.push((short.to_string(), c.write_gib_s));
                } else {
                    ceilings.push((format!("{short} write"), c.write_gib_s));
                    ceilings.push((format!("{short} read"), c.read_gib_s));
                }
            }
        }
        let all = ours
            .iter()
            .map(|p| p.value)
            .chain(posix.iter().flatten().copied())
            .chain(ceilings.iter().map(|c| c.1))
            .filter(|v| *v > 0.0);
        let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if hi > 0.0 { (lo / 3.0, hi * 3.0) } else { (0.001, 1.0) };
        let n = ours.len();
        let names: Vec<&str> = ours.iter().map(|p| p.name).collect();
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!("rustre io500: {} ({} ranks), rustre vs POSIX", unit, rep.ranks),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (lo..hi).log_scale())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc(unit)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let bar = |i: usize, v: f64, left: bool| {
            let x0 = i as f64 + if left { -0.38 } else { 0.02 };
            [(x0, lo), (x0 + 0.36, v)]
        };
        chart
            .draw_series(
                ours.iter()
                    .enumerate()
                    .map(|(i, p)| Rectangle::new(bar(i, p.value, true), BLUE.filled())),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("rustre")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], BLUE.filled()));
        chart
            .draw_series(
                posix
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| Rectangle::new(bar(i, v, false), RGBColor(200, 120, 0).filled()))),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("POSIX (local)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], RGBColor(200, 120, 0).filled()));
        let colors = [RED, MAGENTA, GREEN, CYAN, BLACK, RGBColor(120, 60, 160)];
        for (k, (name, v)) in ceilings.iter().enumerate() {
            let c = colors[k % colors.len()];
            chart
                .draw_series(LineSeries::new([(-0.5, *v), (n as f64 - 0.5, *v)], c.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
