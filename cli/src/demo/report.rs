//! The demo's result table.

use std::fmt;
use std::time::Duration;

/// One measured phase of the demo.
#[derive(Debug, Clone)]
pub struct Phase {
    /// What was done: "write", "read + verify", "create", …
    pub name: &'static str,
    /// How much: bytes for bandwidth phases, operations for metadata phases.
    pub amount: u64,
    /// Whether `amount` counts bytes (else operations).
    pub bytes: bool,
    /// Wall time of the phase.
    pub elapsed: Duration,
}

impl Phase {
    /// GiB/s for byte phases, ops/s for the others.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        if self.bytes {
            self.amount as f64 / secs / f64::from(1u32 << 30)
        } else {
            self.amount as f64 / secs
        }
    }
}

/// Everything the demo measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The phases, in the order they ran.
    pub phases: Vec<Phase>,
    /// A one-line description of the big file's layout.
    pub layout: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<16} {:>14} {:>10} {:>14}", "phase", "amount", "time", "rate")?;
        for p in &self.phases {
            let amount = if p.bytes {
                format!("{:.2} GiB", p.amount as f64 / f64::from(1u32 << 30))
            } else {
                format!("{} files", p.amount)
            };
            let rate = if p.bytes {
                format!("{:.2} GiB/s", p.rate())
            } else {
                format!("{:.0} ops/s", p.rate())
            };
            writeln!(
                f,
                "{:<16} {:>14} {:>9.2}s {:>14}",
                p.name,
                amount,
                p.elapsed.as_secs_f64(),
                rate
            )?;
        }
        if !self.layout.is_empty() {
            writeln!(f, "big file layout: {}", self.layout)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_table() {
        let report = Report {
            phases: vec![
                Phase {
                    name: "write",
                    amount: 2 << 30,
                    bytes: true,
                    elapsed: Duration::from_secs(2),
                },
                Phase {
                    name: "create",
                    amount: 3000,
                    bytes: false,
                    elapsed: Duration::from_millis(500),
                },
            ],
            layout: "4 stripes of 1M".into(),
        };
        assert!((report.phases[0].rate() - 1.0).abs() < 1e-9);
        assert!((report.phases[1].rate() - 6000.0).abs() < 1e-6);
        let text = report.to_string();
        assert!(
            text.contains("1.00 GiB/s") && text.contains("6000 ops/s") && text.contains("3000 files"),
            "{text}"
        );
    }
}
