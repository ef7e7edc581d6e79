//! Byte sizes on the command line and in files: `4G`, `256M`, `1M`, `512K`, `4096` (binary units).

use std::fmt;
use std::str::FromStr;

/// A byte count written with an optional binary suffix (`K`, `M`, `G`, `T`; `KiB`… and `KB`… are
/// read the same way: 1K = 1024 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad size {input:?}: {reason} (examples: 4G, 256M, 1M, 4096)")]
pub struct BadSize {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = BadSize;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| BadSize {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if digits_end == 0 {
            return Err(bad("expected a whole number first"));
        }
        let n: u64 = t[..digits_end].parse().map_err(|_| bad("number too large"))?;
        let shift = match t[digits_end..].trim().to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(bad("unknown unit; use K, M, G or T")),
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| bad("too large for 64 bits"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that divides the size exactly, so that the text reads back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        for (shift, unit) in UNITS {
            let step = 1u64 << shift;
            if self.0 >= step && self.0.is_multiple_of(step) {
                return write!(f, "{}{unit}", self.0 / step);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A size for people to read: `3.2 GiB`, `512.0 MiB`, `17 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = next;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("4096".parse::<ByteSize>().unwrap().bytes(), 4096);
        assert_eq!("4G".parse::<ByteSize>().unwrap().bytes(), 4 << 30);
        assert_eq!("256M".parse::<ByteSize>().unwrap().bytes(), 256 << 20);
        assert_eq!("1MiB".parse::<ByteSize>().unwrap().bytes(), 1 << 20);
        assert_eq!("64k".parse::<ByteSize>().unwrap().bytes(), 64 << 10);
        assert_eq!("2T".parse::<ByteSize>().unwrap().bytes(), 2 << 40);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "G", "1.5G", "4X", "-1", "99999999999999999999", "20000000T"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn display_reads_back() {
        for n in [0u64, 1, 1000, 1024, 3 << 20, (1 << 30) + 1, 4 << 30, 5 << 40] {
            let text = ByteSize(n).to_string();
            assert_eq!(text.parse::<ByteSize>().unwrap(), ByteSize(n), "{text}");
        }
        assert_eq!(ByteSize(4 << 30).to_string(), "4G");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(17), "17 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(2 << 30), "2.0 GiB");
    }
}
