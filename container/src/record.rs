//! Container records persisted in the store, so that another process can list every container
//! (like `ps -a`), and open, stop, restart, commit or remove one.
//!
//! ```text
//! <store>/molde/containers/<id>/record.json   the record as created (written atomically)
//! <store>/molde/containers/<id>/lock          flock'ed exclusively around every record update;
//!                                             its extended attribute `user.molde.state` is
//!                                             the lifecycle state (state, pid, exit code,
//!                                             times), replaced at every start, exit and
//!                                             removal
//! <store>/molde/containers/<id>/state         the lifecycle state as a symlink's target,
//!                                             where the filesystem has no user xattrs (and
//!                                             as an older molde kept it)
//! <store>/molde/containers/<id>/snapshot/     the writable layer (a layerfs snapshot); the
//!                                             rootfs is mounted over it, inside the
//!                                             container's own mount namespace only
//! ```
//!
//! The container's directory itself is the *owner lock*: `flock`ed by the process that owns
//! the running container's PID 1 (its parent), while it runs.
//!
//! Every file or directory made and deleted per container costs an inode allocated and freed
//! (and a directory a block, freed with a synchronous TRIM on a `discard` mount); on ext4
//! without a journal each new inode is found by skipping every inode freed in the last minutes,
//! so the churn of one container slows the next ones. Hence no `owner.lock` file and no empty
//! `rootfs/` mount point (an older molde had both), and a state that changes in place (an
//! xattr) rather than by renaming a new symlink over the old one.
//!
//! A record that says `running` while nobody holds its owner lock and its process is gone
//! is stale (its owner was killed): reading it marks it exited.
//!
//! The record file is written at creation and not rewritten by the lifecycle (only
//! [`Record::update`] of fields beyond the state does), so a handle that made or opened a
//! container reads only the state again ([`Record::reload_state`]).
//!
//! **No fsync.** Records describe processes, which a host crash ends anyway; nothing here is
//! content. The state changes at every start and exit, so it lives apart from the record file,
//! in the lock file's inode (an xattr of under 60 bytes: ext4 keeps it in the inode, so no data
//! block is allocated, written back or freed; `setxattr` replaces it atomically, so a reader
//! sees the old or the new state, never a torn one), or in a symlink's target (the same size
//! limit; a rename replaces it atomically). After a crash, whatever the disk kept is put right
//! by `recover`: a `running` state is stale and marked exited; a record that never reached the
//! disk (or did only in part) is an interrupted creation and is cleared with its writable
//! layer; holds are taken again from the records (see `molde_container::recover`).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use molde_image::Store;
use molde_image::lock::{FileLock, LockKind};
use serde::{Deserialize, Serialize};

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The record is not valid JSON of the expected shape.
    #[error("container record {path}: {source}")]
    Json {
        /// The record file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The record parses but cannot be used as it is (edited by hand, or damaged).
    #[error("container record {path}: {reason}")]
    Invalid {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RecordError + 'a {
    move |source| RecordError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Where a container's files live.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    dir: PathBuf,
}

/// The directory holding every container of a store.
pub fn containers_dir(store: &Store) -> PathBuf {
    store.layout().state().join("containers")
}

impl ContainerPaths {
    /// The paths of container `id` in `store`.
    pub fn new(store: &Store, id: &str) -> ContainerPaths {
        ContainerPaths {
            dir: containers_dir(store).join(id),
        }
    }
    /// The container's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `record.json`.
    pub fn record(&self) -> PathBuf {
        self.dir.join("record.json")
    }
    /// The state link (where the lock file cannot hold the state xattr).
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    /// The update lock.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    /// The owner lock: the container's directory itself (`flock`ed).
    pub fn owner_lock(&self) -> PathBuf {
        self.dir.clone()
    }
    /// The snapshot (writable layer) directory.
    pub fn snapshot(&self) -> PathBuf {
        self.dir.join("snapshot")
    }
    /// The rootfs mount point: the snapshot directory, mounted over inside the container's
    /// own mount namespace (the overlay's upper and work directories in it are opened before).
    pub fn rootfs(&self) -> PathBuf {
        self.snapshot()
    }
}

/// The lifecycle state written in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Writable layer allocated, image held, never started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended.
    Exited,
    /// Removal started (and may have been interrupted).
    Removing,
}

/// A mount inside the container, as the builder gave it (persisted for restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountRecord {
    /// A bind mount of a host path.
    Bind {
        /// The host path.
        source: PathBuf,
        /// The target in the container.
        target: PathBuf,
        /// Read-only.
        read_only: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// The target in the container.
        target: PathBuf,
        /// Size limit in bytes.
        size_bytes: Option<u64>,
        /// Mode of its root.
        mode: u32,
    },
    /// A named volume of the store.
    Volume {
        /// The volume's name.
        name: String,
        /// The target in the container.
        target: PathBuf,
        /// Read-only.
        read_only: bool,
    },
}

/// Everything needed to start the container's process again (restart, also from another
/// process). Standard streams are not persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The program and its arguments (`argv`).
    pub argv: Vec<OsString>,
    /// The environment.
    pub env: Vec<(OsString, OsString)>,
    /// The working directory in the container.
    pub cwd: PathBuf,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Hostname.
    pub hostname: Option<String>,
    /// Further mounts.
    pub mounts: Vec<MountRecord>,
    /// Read-only root filesystem.
    pub read_only_rootfs: bool,
    /// Share the host's network.
    pub host_network: bool,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Pids limit.
    pub pids: Option<u64>,
    /// CPU quota and period in microseconds.
    pub cpu_quota: Option<(u64, u64)>,
    /// Resource limits: (resource, soft, hard).
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Run a minimal init as PID 1.
    pub init: bool,
    /// The signal `stop` sends first.
    pub stop_signal: i32,
    /// The wall-clock timeout of a run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Bridge networks, addresses and published ports.
    #[serde(default, skip_serializing_if = "crate::network::Attachments::is_empty")]
    pub network: crate::network::Attachments,
    /// Keep stdout and stderr in the container's log files (see [`crate::logs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<crate::logs::LogConfig>,
    /// Capabilities raised as ambient, asked for by name (a non-root user holds no others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ambient_capabilities: Vec<crate::launch::Capability>,
    /// Set `PR_SET_NO_NEW_PRIVS` (absent in older records: set).
    #[serde(default = "yes")]
    pub no_new_privileges: bool,
    /// The system call filter (absent in older records: the default profile).
    #[serde(default, skip_serializing_if = "is_default_seccomp")]
    pub seccomp: crate::seccomp::Seccomp,
}

fn is_default_seccomp(s: &crate::seccomp::Seccomp) -> bool {
    *s == crate::seccomp::Seccomp::Default
}

fn yes() -> bool {
    true
}

/// How the writable layer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LayerStorage {
    /// On disk, under the store.
    #[default]
    Disk,
    /// On a tmpfs mounted on the snapshot directory (throwaway containers).
    Tmpfs,
}

/// A container's persisted record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The container id (64 hex digits).
    pub id: String,
    /// The image's manifest digest.
    pub image: String,
    /// The image's id (config digest).
    pub image_id: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The state.
    pub state: State,
    /// Host pid of its PID 1 while running.
    pub pid: Option<u32>,
    /// Start time of that pid (field 22 of `/proc/<pid>/stat`), against pid reuse.
    pub pid_start: Option<u64>,
    /// With an init as PID 1: host pid of the program (the init's child) while running, the
    /// process an exec joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_pid: Option<u32>,
    /// Start time of that pid, against pid reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_pid_start: Option<u64>,
    /// When it last started.
    pub started: Option<String>,
    /// When it last exited.
    pub finished: Option<String>,
    /// Exit code of the last run.
    pub exit_code: Option<i32>,
    /// Signal that ended the last run.
    pub exit_signal: Option<i32>,
    /// The snapshot backend (`overlay`, `copy`).
    pub backend: String,
    /// The lower layer directories, topmost first.
    pub lowers: Vec<PathBuf>,
    /// Where the writable layer lives.
    pub storage: LayerStorage,
    /// How to run it.
    pub run: RunConfig,
}

impl Record {
    /// Read the record at `paths` (the record as created, with its current state).
    pub fn read(paths: &ContainerPaths) -> Result<Record, RecordError> {
        let p = paths.record();
        let bytes = fs::read(&p).map_err(io_err("reading", &p))?;
        let mut r: Record = serde_json::from_slice(&bytes)
            .map_err(|source| RecordError::Json { path: p, source })?;
        if let Some(state) = read_state(paths)? {
            state.apply(&mut r);
        }
        Ok(r)
    }

    /// Write the whole record atomically (the record file, then the state). Not
    /// fsynced: see the module's documentation.
    pub fn write(&self, paths: &ContainerPaths) -> Result<(), RecordError> {
        let p = paths.record();
        let bytes = serde_json::to_vec(self).map_err(|source| RecordError::Json {
            path: p.clone(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".record-")
            .tempfile_in(paths.dir())
            .map_err(io_err("creating a temp file in", paths.dir()))?;
        tmp.write_all(&bytes)
            .map_err(io_err("writing", tmp.path()))?;
        tmp.persist(&p)
            .map_err(|e| io_err("writing", &p)(e.error))?;
        self.write_state(paths)
    }

    /// Write only the lifecycle state (state, pid, exit code, times), atomically, without
    /// rewriting the record file: the lock file's `user.molde.state` xattr, or where the
    /// filesystem has no user xattrs (or there is no lock file) the state link. The caller
    /// holds the update lock.
    pub fn write_state(&self, paths: &ContainerPaths) -> Result<(), RecordError> {
        let target = StateLink::of(self).encode();
        let lock = paths.lock();
        match xattr::set(&lock, STATE_XATTR, target.as_bytes()) {
            Ok(()) => {
                // A state link an older molde wrote would go stale for one still reading it.
                let link = paths.state();
                return match fs::remove_file(&link) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        Err(io_err("removing the old state link", &link)(e))
                    }
                    _ => Ok(()),
                };
            }
            // Neither can hold an xattr written before: the link is the state.
            Err(e) if no_state_xattr(&e) => {}
            Err(e) => return Err(io_err("writing the state xattr of", &lock)(e)),
        }
        let tmp = paths.dir().join(".state.tmp");
        match std::os::unix::fs::symlink(&target, &tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Left by a writer that crashed (writers hold the update lock).
                fs::remove_file(&tmp).map_err(io_err("removing", &tmp))?;
                std::os::unix::fs::symlink(&target, &tmp).map_err(io_err("writing", &tmp))?;
            }
            Err(e) => return Err(io_err("writing", &tmp)(e)),
        }
        let p = paths.state();
        fs::rename(&tmp, &p).map_err(io_err("writing", &p))
    }

    /// Take the update lock, read, apply `f`, write; returns the new record. Only the state
    /// is rewritten when `f` changed nothing else.
    pub fn update(
        paths: &ContainerPaths,
        f: impl FnOnce(&mut Record),
    ) -> Result<Record, RecordError> {
        let _g = lock(paths)?;
        let r = Record::read(paths)?;
        r.change(paths, |r| {
            f(r);
            true
        })
    }

    /// Replace this record's lifecycle state with the one on disk (the lock file's xattr or
    /// the state link), keeping the rest: for a handle whose record came from this
    /// container's record file, which the lifecycle never rewrites. A container without a
    /// readable state (an older molde's, or one being deleted) is read whole.
    pub fn reload_state(&mut self, paths: &ContainerPaths) -> Result<(), RecordError> {
        match read_state(paths)? {
            Some(link) => link.apply(self),
            None => *self = Record::read(paths)?,
        }
        Ok(())
    }

    /// [`Record::update`] for a handle that holds the record (`known`, see
    /// [`Record::reload_state`]): under the update lock, the current state is read (not the
    /// record file), `f` applied and, if it returns true, the change written. Returns the
    /// record as it now is.
    pub(crate) fn update_known(
        known: &Record,
        paths: &ContainerPaths,
        f: impl FnOnce(&mut Record) -> bool,
    ) -> Result<Record, RecordError> {
        let _g = lock(paths)?;
        let mut r = known.clone();
        r.reload_state(paths)?;
        r.change(paths, f)
    }

    /// Apply `f` to this record (read under the update lock) and, if it returns true, write
    /// it: only the state when `f` changed nothing else.
    fn change(
        mut self,
        paths: &ContainerPaths,
        f: impl FnOnce(&mut Record) -> bool,
    ) -> Result<Record, RecordError> {
        let before = self.clone();
        if !f(&mut self) {
            return Ok(self);
        }
        let mut rest = before;
        StateLink::of(&self).apply(&mut rest);
        if rest == self {
            self.write_state(paths)?;
        } else {
            self.write(paths)?;
        }
        Ok(self)
    }
}

/// The lifecycle state kept in the lock file's xattr (or the `state` symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
struct StateLink {
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
    fn of(r: &Record) -> StateLink {
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

    fn apply(self, r: &mut Record) {
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
    fn encode(&self) -> String {
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

    fn decode(s: &str) -> Option<StateLink> {
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
const STATE_XATTR: &str = "user.molde.state";

/// Whether `e`, from reading or writing the state xattr, means there is none and can be none:
/// the filesystem has no user xattrs, or there is no lock file.
fn no_state_xattr(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// The lifecycle state of a container: its lock file's xattr, else its state link, else
/// `None` (a record written by an older molde has its state in the record file only). A
/// state this molde cannot decode is `None` too: the record file's state counts.
fn read_state(paths: &ContainerPaths) -> Result<Option<StateLink>, RecordError> {
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

/// Take a container's update lock.
pub fn lock(paths: &ContainerPaths) -> Result<FileLock, RecordError> {
    let p = paths.lock();
    FileLock::acquire(&p, LockKind::Exclusive).map_err(io_err("locking", &p))
}

/// Take the owner lock (a `flock` on the container's directory) without waiting: `None` if
/// another handle (in this or another process) owns the running container.
pub fn try_own(paths: &ContainerPaths) -> Result<Option<FileLock>, RecordError> {
    let p = paths.owner_lock();
    let f = File::open(&p).map_err(io_err("opening", &p))?;
    FileLock::try_exclusive(f).map_err(io_err("locking", &p))
}

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

/// The prefix of a container's hold on its image: `container:<id>`, so that a hold a user
/// named like a container id is never taken for one.
pub const HOLD_PREFIX: &str = "container:";

/// The name of the hold container `id` keeps on its image.
pub fn hold_name(id: &str) -> String {
    format!("{HOLD_PREFIX}{id}")
}

/// The container id a hold named `name` belongs to: `container:<64 hex digits>`, or (`legacy`
/// true) a bare 64-hex-digit name as an older molde wrote, which only counts as a
/// container's hold while that container exists.
pub fn hold_owner(name: &str) -> Option<(&str, bool)> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match name.strip_prefix(HOLD_PREFIX) {
        Some(id) if is_id(id) => Some((id, false)),
        Some(_) => None,
        None if is_id(name) => Some((name, true)),
        None => None,
    }
}

/// A fresh container id: 64 hex digits from the kernel's random source.
pub fn new_id() -> io::Result<String> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the valid buffer slice given.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> Record {
        Record {
            id: id.into(),
            image: "sha256:00".into(),
            image_id: "sha256:11".into(),
            created: "2026-01-01T00:00:00Z".into(),
            state: State::Created,
            pid: None,
            pid_start: None,
            program_pid: None,
            program_pid_start: None,
            started: None,
            finished: None,
            exit_code: None,
            exit_signal: None,
            backend: "overlay".into(),
            lowers: vec!["/l/2".into(), "/l/1".into()],
            storage: LayerStorage::Disk,
            run: RunConfig {
                argv: vec!["/bin/sh".into(), OsString::from("-c")],
                env: vec![("A".into(), "b".into())],
                cwd: "/".into(),
                uid: 1,
                gid: 2,
                groups: vec![3],
                hostname: Some("h".into()),
                mounts: vec![MountRecord::Volume {
                    name: "v".into(),
                    target: "/data".into(),
                    read_only: false,
                }],
                read_only_rootfs: false,
                host_network: false,
                memory_bytes: Some(1 << 20),
                pids: None,
                cpu_quota: Some((5000, 100000)),
                rlimits: vec![(7, 64, 64)],
                init: true,
                stop_signal: 15,
                timeout_ms: None,
                network: Default::default(),
                ambient_capabilities: vec![crate::launch::Capability::CAP_NET_BIND_SERVICE],
                no_new_privileges: false,
                seccomp: crate::seccomp::Seccomp::Unconfined,
                logs: None,
            },
        }
    }

    #[test]
    fn round_trip_and_update() {
        let store = Store::temporary().unwrap();
        let paths = ContainerPaths::new(&store, "abc");
        fs::create_dir_all(paths.dir()).unwrap();
        let r = sample("abc");
        r.write(&paths).unwrap();
        assert_eq!(Record::read(&paths).unwrap(), r);
        let r2 = Record::update(&paths, |r| {
            r.state = State::Exited;
            r.exit_code = Some(3);
        })
        .unwrap();
        assert_eq!(Record::read(&paths).unwrap(), r2);
        assert_eq!(r2.exit_code, Some(3));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(paths.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().starts_with(".record-"))
        );
    }

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
    fn state_updates_leave_the_record_file_alone() {
        let store = Store::temporary().unwrap();
        let paths = ContainerPaths::new(&store, "keep");
        fs::create_dir_all(paths.dir()).unwrap();
        sample("keep").write(&paths).unwrap();
        let before = fs::read(paths.record()).unwrap();
        let r = Record::update(&paths, |r| {
            r.state = State::Running;
            r.pid = Some(7);
        })
        .unwrap();
        assert_eq!(fs::read(paths.record()).unwrap(), before);
        assert_eq!(Record::read(&paths).unwrap(), r);
        // A change beyond the state rewrites the record file.
        let r = Record::update(&paths, |r| r.run.init = false).unwrap();
        assert_ne!(fs::read(paths.record()).unwrap(), before);
        assert_eq!(Record::read(&paths).unwrap(), r);
        // The xattr replaced the state link (an older molde would have read it stale).
        assert!(fs::symlink_metadata(paths.state()).is_err());
        // A record without a state (an older molde's) keeps its own state.
        assert_eq!(Record::read(&paths).unwrap(), r);
        xattr::remove(paths.lock(), STATE_XATTR).unwrap();
        assert_eq!(Record::read(&paths).unwrap(), r);
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

    #[test]
    fn garbage_record_is_a_typed_error() {
        let store = Store::temporary().unwrap();
        let paths = ContainerPaths::new(&store, "bad");
        fs::create_dir_all(paths.dir()).unwrap();
        fs::write(paths.record(), b"{not json").unwrap();
        assert!(matches!(
            Record::read(&paths),
            Err(RecordError::Json { .. })
        ));
    }

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

    #[test]
    fn owner_lock_is_exclusive() {
        let store = Store::temporary().unwrap();
        let paths = ContainerPaths::new(&store, "own");
        fs::create_dir_all(paths.dir()).unwrap();
        let held = try_own(&paths).unwrap();
        assert!(held.is_some());
        assert!(try_own(&paths).unwrap().is_none());
        drop(held);
        assert!(try_own(&paths).unwrap().is_some());
    }

    #[test]
    fn container_holds_are_namespaced() {
        let id = "ab".repeat(32);
        assert_eq!(hold_name(&id), format!("container:{id}"));
        assert_eq!(hold_owner(&hold_name(&id)), Some((id.as_str(), false)));
        assert_eq!(hold_owner(&id), Some((id.as_str(), true)));
        assert_eq!(hold_owner("container:abc"), None);
        assert_eq!(hold_owner("my-build"), None);
    }

    #[test]
    fn ids_are_unique_hex() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
