//! The `--flags` of an instruction: which each instruction takes, their values, durations.

/// An instruction's flags, checked against the ones it takes.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: Vec<(String, Option<String>)>,
}

/// The flags each instruction takes (`*` after a name: it may repeat).
fn allowed(command: &str) -> &'static [&'static str] {
    match command {
        "FROM" => &["platform"],
        "RUN" => &["mount*", "network", "security"],
        "COPY" => &["from", "chown", "chmod", "link", "parents", "exclude*"],
        "ADD" => &[
            "chown",
            "chmod",
            "link",
            "checksum",
            "keep-git-dir",
            "exclude*",
            "unpack",
        ],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    }
}

impl Flags {
    /// Parse `flags` (`--name=value` or `--name`) of `command`.
    pub(crate) fn parse(command: &str, flags: &[String]) -> Result<Flags, String> {
        let ok = allowed(command);
        let mut values: Vec<(String, Option<String>)> = Vec::new();
        for f in flags {
            let body = f.strip_prefix("--").unwrap_or(f);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_owned())),
                None => (body.to_ascii_lowercase(), None),
            };
            let repeat = ok.contains(&format!("{name}*").as_str());
            if !repeat && !ok.contains(&name.as_str()) {
                return Err(if ok.is_empty() {
                    format!("{command} takes no flags, got --{name}")
                } else {
                    format!(
                        "unknown flag --{name} (supported: {})",
                        ok.iter()
                            .map(|n| format!("--{}", n.trim_end_matches('*')))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            }
            if !repeat && values.iter().any(|(n, _)| *n == name) {
                return Err(format!("--{name} is given twice"));
            }
            values.push((name, value));
        }
        Ok(Flags { values })
    }

    /// The value of `--name=value` (an error for a bare `--name`).
    pub(crate) fn value(&self, name: &str) -> Result<Option<&str>, String> {
        match self.values.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, Some(v))) => Ok(Some(v)),
            Some((_, None)) => Err(format!("--{name} needs a value (--{name}=...)")),
        }
    }

    /// Every value of a repeated flag.
    pub(crate) fn values(&self, name: &str) -> Result<Vec<&str>, String> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| {
                v.as_deref()
                    .ok_or_else(|| format!("--{name} needs a value"))
            })
            .collect()
    }

    /// A boolean flag: `--name`, `--name=true|false`.
    pub(crate) fn bool(&self, name: &str) -> Result<bool, String> {
        match self.values.iter().find(|(n, _)| n == name) {
            None => Ok(false),
            Some((_, None)) => Ok(true),
            Some((_, Some(v))) => {
                parse_bool(v).ok_or_else(|| format!("--{name}={v}: expected true or false"))
            }
        }
    }

    /// Whether `--name` was given at all.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.values.iter().any(|(n, _)| n == name)
    }
}

pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// A Go duration (`30s`, `1m30s`, `500ms`, `1.5h`) in nanoseconds.
pub(crate) fn duration_ns(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 30s, 1m30s, 500ms)");
    if s == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Ok(total as u64)
}

/// A size: bytes, or with a `k`, `m`, `g` suffix (powers of 1024).
pub(crate) fn size_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("invalid size {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_values() {
        let f = Flags::parse(
            "COPY",
            &[
                "--from=a".into(),
                "--link".into(),
                "--exclude=*.o".into(),
                "--exclude=x".into(),
            ],
        )
        .unwrap();
        assert_eq!(f.value("from").unwrap(), Some("a"));
        assert!(f.bool("link").unwrap());
        assert_eq!(f.values("exclude").unwrap(), ["*.o", "x"]);
        assert!(
            Flags::parse("COPY", &["--nope".into()])
                .unwrap_err()
                .contains("--from")
        );
        assert!(Flags::parse("ENV", &["--x".into()]).is_err());
        assert!(Flags::parse("COPY", &["--from=a".into(), "--from=b".into()]).is_err());
        assert_eq!(duration_ns("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(duration_ns("500ms").unwrap(), 500_000_000);
        assert!(duration_ns("5x").is_err());
        assert_eq!(size_bytes("64m").unwrap(), 64 << 20);
    }
}
