//! A container's lifecycle state (state, pid, exit code, times), kept apart from its record
//! file: in the `user.molde.state` xattr of its lock file, or in a symlink's target.

use std::fs;
use std::io;

use super::{ContainerPaths, Record, RecordError, State, io_err};

/// The lifecycle state kept in the lock file's xattr (or the `state` symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StateLink {
    state: State,
    pid: Option<u32>,
    pid_start: Option<u64>,
    started: Option<String>,
    finished: Option<String>,
    exit_code: Option<i32>,
    exit_signal: Option<i32>,
    /// With an init as PID 1: the program's own host pid and start time, which `exec` joins
    /// through (PID 1 stays non-dumpable).
    program_pid: Option<u32>,
    program_pid_start: Option<u64>,
}

impl StateLink {
    pub(super) fn of(r: &Record) -> StateLink {
        StateLink {
            state: r.state,
            pid: r.pid,
            pid_start: r.pid_start,
            started: r.started.clone(),
            finished: r.finished.clone(),
            exit_code: r.exit_code,
            exit_signal: r.exit_signal,
            program_pid: r.program_pid,
            program_pid_start: r.program_pid_start,
        }
    }

    pub(super) fn apply(self, r: &mut Record) {
        r.state = self.state;
        r.pid = self.pid;
        r.pid_start = self.pid_start;
        r.started = self.started;
        r.finished = self.finished;
        r.exit_code = self.exit_code;
        r.exit_signal = self.exit_signal;
        r.program_pid = self.program_pid;
        r.program_pid_start = self.program_pid_start;
    }

    /// `1,<state>,<pid>,<start>,<code>,<signal>,<started>,<finished>`, empty for none, then
    /// `,<program pid>,<its start>` only when there is an init; times as `20260101T000000Z`
    /// (RFC 3339 without its separators), which keeps a typical state under the 60 bytes ext4
    /// stores in the inode.
    pub(super) fn encode(&self) -> String {
        fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
            v.as_ref().map(|v| v.to_string()).unwrap_or_default()
        }
        fn time(t: &Option<String>) -> String {
            t.as_deref().map(compact_time).unwrap_or_default()
        }
        let state = match self.state {
            State::Created => 'c',
            State::Running => 'r',
            State::Exited => 'e',
            State::Removing => 'x',
        };
        let mut out = format!(
            "1,{state},{},{},{},{},{},{}",
            opt(&self.pid),
            opt(&self.pid_start),
            opt(&self.exit_code),
            opt(&self.exit_signal),
            time(&self.started),
            time(&self.finished)
        );
        if self.program_pid.is_some() {
            out.push_str(&format!(
                ",{},{}",
                opt(&self.program_pid),
                opt(&self.program_pid_start)
            ));
        }
        out
    }

    pub(super) fn decode(s: &str) -> Option<StateLink> {
        let f: Vec<&str> = s.split(',').collect();
        if !(f.len() == 8 || f.len() == 10) || f[0] != "1" {
            return None;
        }
        fn num<T: std::str::FromStr>(s: &str) -> Option<Option<T>> {
            if s.is_empty() {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        }
        fn time(s: &str) -> Option<String> {
            (!s.is_empty()).then(|| expand_time(s))
        }
        Some(StateLink {
            state: match f[1] {
                "c" => State::Created,
                "r" => State::Running,
                "e" => State::Exited,
                "x" => State::Removing,
                _ => return None,
            },
            pid: num(f[2])?,
            pid_start: num(f[3])?,
            exit_code: num(f[4])?,
            exit_signal: num(f[5])?,
            started: time(f[6]),
            finished: time(f[7]),
            program_pid: f.get(8).map_or(Some(None), |v| num(v))?,
            program_pid_start: f.get(9).map_or(Some(None), |v| num(v))?,
        })
    }
}

/// `2026-01-01T00:00:00Z` as `20260101T000000Z`; anything else unchanged.
fn compact_time(t: &str) -> String {
    let b = t.as_bytes();
    let shape = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if shape && !t.contains(',') {
        t.chars().filter(|c| *c != '-' && *c != ':').collect()
    } else {
        t.replace(',', "")
    }
}

/// The inverse of [`compact_time`].
fn expand_time(t: &str) -> String {
    let b = t.as_bytes();
    if b.len() == 16 && b[8] == b'T' && b[15] == b'Z' && t.is_ascii() {
        format!(
            "{}-{}-{}T{}:{}:{}Z",
            &t[0..4],
            &t[4..6],
            &t[6..8],
            &t[9..11],
            &t[11..13],
            &t[13..15]
        )
    } else {
        t.to_owned()
    }
}

/// The extended attribute of a container's `lock` file that holds its lifecycle state.
pub(super) const STATE_XATTR: &str = "user.molde.state";

/// Whether `e`, from reading or writing the state xattr, means there is none and can be none:
/// the filesystem has no user xattrs, or there is no lock file.
pub(super) fn no_state_xattr(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// The lifecycle state of a container: its lock file's xattr, else its state link, else
/// `None` (a record written by an older molde has its state in the record file only). A
/// state this molde cannot decode is `None` too: the record file's state counts.
pub(super) fn read_state(paths: &ContainerPaths) -> Result<Option<StateLink>, RecordError> {
    let lock = paths.lock();
    match xattr::get(&lock, STATE_XATTR) {
        Ok(Some(value)) => {
            return Ok(std::str::from_utf8(&value).ok().and_then(StateLink::decode));
        }
        Ok(None) => {}
        Err(e) if no_state_xattr(&e) => {}
        Err(e) => return Err(io_err("reading the state xattr of", &lock)(e)),
    }
    let p = paths.state();
    match fs::read_link(&p) {
        Ok(target) => Ok(target.to_str().and_then(StateLink::decode)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &p)(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use molde_image::Store;

    use super::super::tests::sample;
    use super::super::{ContainerPaths, Record, State, lock};
    use super::*;

    #[test]
    fn state_link_round_trips_and_stays_in_the_inode() {
        let mut r = sample("st");
        r.state = State::Running;
        r.pid = Some(4_194_304);
        r.pid_start = Some(4_294_967_295);
        r.started = Some("2026-01-01T00:00:00Z".into());
        let link = StateLink::of(&r);
        let text = link.encode();
        assert!(text.len() < 60, "{text}");
        assert_eq!(StateLink::decode(&text), Some(link));
        r.state = State::Exited;
        r.exit_code = Some(255);
        r.exit_signal = Some(9);
        r.finished = Some("odd, time".into());
        let link = StateLink::of(&r);
        let mut back = StateLink::decode(&link.encode()).unwrap();
        assert_eq!(back.finished.as_deref(), Some("odd time"));
        back.finished = link.finished.clone();
        assert_eq!(back, link);
        assert_eq!(StateLink::decode("2,r,,,,,,"), None);
        assert_eq!(StateLink::decode("1,q,,,,,,"), None);
    }

    #[test]
    fn the_state_changes_in_place_in_the_lock_file() {
        use std::os::unix::fs::MetadataExt;
        let store = Store::temporary().unwrap();
        let paths = ContainerPaths::new(&store, "inplace");
        fs::create_dir_all(paths.dir()).unwrap();
        // Without a lock file (as an older molde's container may be): the state link.
        let mut r = sample("inplace");
        r.write(&paths).unwrap();
        assert!(fs::symlink_metadata(paths.state()).unwrap().is_symlink());
        drop(lock(&paths).unwrap());
        let ino = fs::metadata(paths.lock()).unwrap().ino();
        let names = || {
            let mut n: Vec<_> = fs::read_dir(paths.dir())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            n.sort();
            n
        };
        // The first state written in place removes the link (an older molde reading it would
        // see a stale state); after that no file is made or replaced.
        let before: Vec<_> = names().into_iter().filter(|n| n != "state").collect();
        for (state, pid) in [(State::Running, Some(9)), (State::Exited, None)] {
            r = Record::update(&paths, |r| {
                r.state = state;
                r.pid = pid;
            })
            .unwrap();
            assert_eq!(Record::read(&paths).unwrap(), r);
            let mut reloaded = sample("inplace");
            reloaded.reload_state(&paths).unwrap();
            assert_eq!(reloaded, r);
            assert_eq!(names(), before);
            assert_eq!(fs::metadata(paths.lock()).unwrap().ino(), ino);
        }
        let value = xattr::get(paths.lock(), STATE_XATTR).unwrap().unwrap();
        assert_eq!(
            StateLink::decode(std::str::from_utf8(&value).unwrap()),
            Some(StateLink::of(&r))
        );
        // An undecodable state (a newer molde's) leaves the record file's state.
        xattr::set(paths.lock(), STATE_XATTR, b"9,z").unwrap();
        assert_eq!(Record::read(&paths).unwrap().state, State::Created);
    }
}
