//! A strict reader of the Prometheus text exposition format (version 0.0.4), for tests and
//! tools that scrape a daemon: every line must be a `# HELP`, a `# TYPE`, another comment, a
//! blank line or a well-formed sample; a family's samples are contiguous and after its `TYPE`;
//! a histogram's buckets carry `le`, never decrease, and end with `+Inf` equal to `_count`.

use std::collections::HashMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Labels in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k`.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

/// The value of the sample named `name` whose labels are exactly `labels` (in any order).
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name && s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
        })
        .map(|s| s.value)
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut b = s.bytes();
    let first = |c: u8| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':');
    match b.next() {
        Some(c) if first(c) => b.all(|c| first(c) || c.is_ascii_digit()),
        _ => false,
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse::<f64>().ok().filter(|_| !s.contains(['i', 'I', 'n', 'N'])),
    }
}

/// Parses `{k="v",…}` at the start of `s`; returns the labels and the rest.
type Labels = Vec<(String, String)>;

fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name:?} twice"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => v.push('\\'),
                    Some((_, '"')) => v.push('"'),
                    Some((_, 'n')) => v.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in label value".into()),
                Some((_, c)) => v.push(c),
            }
        };
        labels.push((name.to_owned(), v));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram" || t == "summary")
        {
            return base;
        }
    }
    name
}

/// Parses and checks a whole exposition; the error names the line.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, ()> = HashMap::new();
    let mut done: HashMap<String, ()> = HashMap::new();
    let mut current: Option<String> = None;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let mut parts = c.trim_start().splitn(3, ' ');
            let bad = match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _) => !is_name(name, true) || helps.insert(name.to_owned(), ()).is_some(),
                (Some("TYPE"), Some(name), Some(t)) => {
                    !is_name(name, true)
                        || !matches!(t, "counter" | "gauge" | "histogram" | "summary" | "untyped")
                        || types.insert(name.to_owned(), t.to_owned()).is_some()
                        || done.contains_key(name)
                        || current.as_deref() == Some(name)
                }
                _ => false,
            };
            if bad {
                return Err(at("bad, repeated or late HELP or TYPE".into()));
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("expected a space".into()))?
            .split(' ');
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| at("bad value".into()))?;
        match fields.next() {
            None => {}
            Some(ts) if ts.parse::<i64>().is_ok() && fields.next().is_none() => {}
            Some(_) => return Err(at("trailing garbage".into())),
        }
        let family = family_of(name, &types).to_owned();
        if current.as_deref() != Some(family.as_str()) {
            if done.contains_key(&family) {
                return Err(at(format!("samples of {family} are not contiguous")));
            }
            if let Some(c) = current.take() {
                done.insert(c, ());
            }
            current = Some(family.clone());
        }
        match types.get(&family).map(String::as_str) {
            Some("counter") if value < 0.0 => return Err(at("negative counter".into())),
            Some("histogram") if name.ends_with("_bucket") && labels.iter().all(|(k, _)| k != "le") => {
                return Err(at("bucket without le".into()));
            }
            _ => {}
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    check_histograms(&samples, &types)?;
    Ok(samples)
}

fn check_histograms(samples: &[Sample], types: &HashMap<String, String>) -> Result<(), String> {
    // Per histogram series (labels without le): buckets in order, then _count.
    let mut last: HashMap<(String, Labels), (f64, f64)> = HashMap::new();
    for s in samples {
        let Some(base) = s.name.strip_suffix("_bucket") else {
            continue;
        };
        if types.get(base).map(String::as_str) != Some("histogram") {
            continue;
        }
        let le = s.label("le").and_then(parse_value).ok_or("bad le")?;
        let key: Labels = s.labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        let e = last.entry((base.to_owned(), key)).or_insert((f64::NEG_INFINITY, 0.0));
        if le <= e.0 || s.value < e.1 {
            return Err(format!("{}: buckets out of order or decreasing at le={le}", s.name));
        }
        *e = (le, s.value);
    }
    for ((base, key), (le, n)) in &last {
        if *le != f64::INFINITY {
            return Err(format!("{base}: no +Inf bucket"));
        }
        let count = samples
            .iter()
            .find(|s| s.name == format!("{base}_count") && s.labels == *key)
            .ok_or_else(|| format!("{base}: no _count"))?;
        if count.value != *n {
            return Err(format!("{base}: +Inf bucket {n} != count {}", count.value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyedTable, Registry};

    #[test]
    fn the_registry_output_parses() {
        let r = Registry::new();
        r.counter("a_total", "A.", &[("op", "x\"y\\z\nw")]).add(3);
        let h = r.histogram("lat_seconds", "L.", &[("op", "r")]);
        h.observe_ns(1_000);
        h.observe_ns(u64::MAX);
        r.keyed(KeyedTable::new("job", &[("j_total", "J.")], 2))
            .entry("a b")
            .add(0, 9);
        let s = parse(&r.render()).unwrap();
        assert_eq!(value(&s, "a_total", &[("op", "x\"y\\z\nw")]), Some(3.0));
        assert_eq!(value(&s, "lat_seconds_count", &[("op", "r")]), Some(2.0));
        assert_eq!(
            value(&s, "lat_seconds_bucket", &[("op", "r"), ("le", "+Inf")]),
            Some(2.0)
        );
        assert_eq!(value(&s, "j_total", &[("job", "a b")]), Some(9.0));
        assert_eq!(value(&s, "j_total", &[]), None);
    }

    #[test]
    fn malformed_expositions_are_refused() {
        let ok = "# HELP c_total C.\n# TYPE c_total counter\nc_total{a=\"1\"} 2\nc_total 3 1700000000\n";
        assert_eq!(parse(ok).unwrap().len(), 2);
        for bad in [
            "c_total 1",                                                                      // no final newline
            "c_total\n",                                                                      // no value
            "c_total x\n",                                                                    // bad value
            "c-total 1\n",                                                                    // bad name
            "c{a=1} 1\n",                                                                     // unquoted
            "c{a=\"1} 1\n",                                                                   // unterminated
            "c{a=\"\\t\"} 1\n",                                                               // bad escape
            "c{a=\"1\",a=\"2\"} 1\n",                                                         // repeated label
            "c{1a=\"1\"} 1\n",                                                                // bad label name
            "c{a=\"1\"}1\n",                                                                  // no space
            "c 1 2 3\n",                                                                      // trailing fields
            "# TYPE c counter\n# TYPE c counter\n",                                           // TYPE twice
            "# TYPE c bogus\n",                                                               // unknown type
            "# TYPE c counter\nc -1\n",                                                       // negative counter
            "a 1\nb 1\na 2\n",                                                                // not contiguous
            "c 1\n# TYPE c counter\n",                                                        // TYPE after samples
            "# TYPE h histogram\nh_bucket 1\n",                                               // no le
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // decreasing
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n",                          // no +Inf
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 2\n",                       // count mismatch
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
