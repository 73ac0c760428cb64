//! Whether the process a record names is still the same process: its start time from
//! `/proc/<pid>/stat`, against pid reuse.

use std::fs::File;

/// The start time of `pid` (clock ticks since boot) and whether it is a zombie; `None` if
/// there is no such process.
pub fn pid_info(pid: u32) -> Option<(u64, bool)> {
    use std::io::Read;
    let mut file = File::open(format!("/proc/{pid}/stat")).ok()?;
    // One read: the line is a few hundred bytes (a longer one is read to its end). The
    // command name may be any bytes; the fields after it are ASCII.
    let mut buf = [0u8; 1024];
    let n = file.read(&mut buf).ok()?;
    if n < buf.len() {
        return parse_stat(&String::from_utf8_lossy(&buf[..n]));
    }
    let mut text = buf.to_vec();
    file.read_to_end(&mut text).ok()?;
    parse_stat(&String::from_utf8_lossy(&text))
}

/// The start time and zombie state from the text of a `/proc/<pid>/stat`.
fn parse_stat(stat: &str) -> Option<(u64, bool)> {
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = *fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

/// Whether the process a record names is still alive (same pid, same start time, not a
/// zombie).
pub fn alive(pid: Option<u32>, start: Option<u64>) -> bool {
    match (pid, start) {
        (Some(pid), Some(start)) => {
            matches!(pid_info(pid), Some((s, zombie)) if s == start && !zombie)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_uses_start_time() {
        let me = std::process::id();
        let (start, zombie) = pid_info(me).unwrap();
        assert!(!zombie);
        assert!(alive(Some(me), Some(start)));
        assert!(!alive(Some(me), Some(start + 1)));
        assert!(!alive(None, None));
    }

    #[test]
    fn short_or_odd_stat_text_is_none_not_a_panic() {
        for text in ["", "1 (x)", "1 (x", "1 (a) b)", "1 (x) R 1"] {
            assert_eq!(parse_stat(text), None, "{text:?}");
        }
        // Fields 4 to 22 (the start time) after the state, numbered as in proc(5).
        let fields: Vec<String> = (4..=22).map(|i| i.to_string()).collect();
        let text = format!("7 (a (b) c) Z {}", fields.join(" "));
        assert_eq!(parse_stat(&text), Some((22, true)));
    }
}
