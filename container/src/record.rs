//! Container records persisted in the store, so that another process can list every container
//! (like `ps -a`), and open, stop, restart, commit or remove one.
//!
//! ```text
//! <store>/molde/containers/<id>/record.json   the record (written atomically)
//! <store>/molde/containers/<id>/lock          flock'ed exclusively around every record update
//! <store>/molde/containers/<id>/owner.lock    flock'ed by the process that owns the running
//!                                             container's PID 1 (its parent), while it runs
//! <store>/molde/containers/<id>/snapshot/     the writable layer (a layerfs snapshot)
//! <store>/molde/containers/<id>/rootfs/       the empty directory the rootfs is mounted on,
//!                                             inside the container's own mount namespace
//! ```
//!
//! A record that says `running` while nobody holds its `owner.lock` and its process is gone
//! is stale (its owner was killed): reading it marks it exited.

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
    /// The update lock.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    /// The owner lock.
    pub fn owner_lock(&self) -> PathBuf {
        self.dir.join("owner.lock")
    }
    /// The snapshot (writable layer) directory.
    pub fn snapshot(&self) -> PathBuf {
        self.dir.join("snapshot")
    }
    /// The rootfs mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
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
    /// Read the record at `paths`.
    pub fn read(paths: &ContainerPaths) -> Result<Record, RecordError> {
        let p = paths.record();
        let bytes = fs::read(&p).map_err(io_err("reading", &p))?;
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Json { path: p, source })
    }

    /// Write the record atomically.
    pub fn write(&self, paths: &ContainerPaths) -> Result<(), RecordError> {
        let p = paths.record();
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| RecordError::Json {
            path: p.clone(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".record-")
            .tempfile_in(paths.dir())
            .map_err(io_err("creating a temp file in", paths.dir()))?;
        tmp.write_all(&bytes)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(io_err("writing", tmp.path()))?;
        tmp.persist(&p)
            .map_err(|e| io_err("writing", &p)(e.error))?;
        Ok(())
    }

    /// Take the update lock, read, apply `f`, write; returns the new record.
    pub fn update(
        paths: &ContainerPaths,
        f: impl FnOnce(&mut Record),
    ) -> Result<Record, RecordError> {
        let _g = lock(paths)?;
        let mut r = Record::read(paths)?;
        f(&mut r);
        r.write(paths)?;
        Ok(r)
    }
}

/// Take a container's update lock.
pub fn lock(paths: &ContainerPaths) -> Result<FileLock, RecordError> {
    let p = paths.lock();
    FileLock::acquire(&p, LockKind::Exclusive).map_err(io_err("locking", &p))
}

/// Take the owner lock without waiting: `None` if another handle (in this or another process)
/// owns the running container.
pub fn try_own(paths: &ContainerPaths) -> Result<Option<FileLock>, RecordError> {
    let p = paths.owner_lock();
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(io_err("opening", &p))?;
    FileLock::try_exclusive(f).map_err(io_err("locking", &p))
}

/// The start time of `pid` (clock ticks since boot) and whether it is a zombie; `None` if
/// there is no such process.
pub fn pid_info(pid: u32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
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
    fn ids_are_unique_hex() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
