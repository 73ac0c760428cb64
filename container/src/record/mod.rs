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
//! <store>/molde/names/<name>                 a link to the id of the container named so
//!                                             (see [`names`])
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

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use molde_image::Store;
use molde_image::lock::{FileLock, LockKind};
use serde::{Deserialize, Serialize};

pub mod names;
mod process;
mod run;
mod state;

pub use process::{alive, pid_info};
pub use run::{MountRecord, RunConfig};
use state::{STATE_XATTR, StateLink, no_state_xattr, read_state};

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

/// How the writable layer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LayerStorage {
    /// On disk, under the store.
    #[default]
    Disk,
    /// On a tmpfs mounted on the snapshot directory (throwaway containers).
    Tmpfs,
    /// On a tmpfs mounted on the snapshot directory inside the container's own mount
    /// namespace, at each start (throwaway containers without root, who cannot mount one on
    /// the host): out of the host's reach, and fresh at each start.
    #[serde(rename = "tmpfs-in-namespace")]
    TmpfsInNamespace,
}

/// A container's persisted record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The container id (64 hex digits).
    pub id: String,
    /// The name it was given (unique in the store; see [`names`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(id: &str) -> Record {
        Record {
            id: id.into(),
            name: Some("n".into()),
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
                argv: vec!["/bin/sh".into(), std::ffi::OsString::from("-c")],
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
                landlock: None,
                tty: true,
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
