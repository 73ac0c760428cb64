//! Snapshot backends: containerd's snapshotter vocabulary over a stack of layer directories.
//!
//! - **prepare**: a writable snapshot over read-only lowers; returns the mounts that show it.
//! - **view**: a read-only snapshot over lowers.
//! - **diff**: the changes written into a snapshot, as a layer.
//! - **remove**: delete a snapshot's own state (never the lowers).
//! - **open**: the snapshot an earlier prepare or view left in its directory (after a restart).
//! - **mounts**: what to mount to see the snapshot ([`Snapshot::mounts`]), as data.
//!
//! Lowers are layer directories in overlay format ([`crate::Format::Overlay`]), topmost first.
//! Backends: kernel overlayfs ([`OverlayBackend`]), and a copy-based fallback where overlay is
//! not available ([`CopyBackend`]); [`default_backend`] picks one. Every backend passes the
//! same conformance suite (`layerfs/tests/snapshot_conformance.rs`).
//!
//! A backend never mounts anything itself: whoever needs to see a snapshot performs its
//! [`Snapshot::mounts`] (on the host, or in a container's mount namespace) and unmounts them
//! before [`Backend::remove`].
//!
//! ```no_run
//! use std::path::{Component, Path, PathBuf};
//! use molde_layerfs::snapshot::{default_backend, Backend};
//!
//! let backend = default_backend();
//! let lowers = vec![PathBuf::from("/layers/2"), PathBuf::from("/layers/1")];
//! let snapshot = backend.prepare(&lowers, Path::new("/snapshots/c1"))?;
//! let rootfs = Path::new("/run/c1/rootfs");
//! for mount in &snapshot.mounts {
//!     mount.mount_at(rootfs)?;
//! }
//! // ... run something in rootfs, then:
//! molde_layerfs::mount::unmount(rootfs)?;
//! backend.remove(snapshot)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod copy;
mod overlay;

pub use copy::CopyBackend;
pub use overlay::OverlayBackend;

use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use crate::diff::{DiffOptions, DiffReport};
use crate::mount::Mount;

/// A snapshot backend: prepares writable and read-only snapshots over a stack of lower layer
/// directories, describes the mounts that show them, diffs their changes into a layer, and
/// removes them.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The backend's name (`overlay`, `copy`).
    fn name(&self) -> &'static str;

    /// A writable snapshot over `lowers` (layer directories in overlay format, topmost first),
    /// kept in `dir`: the snapshot's own directory, created if missing, and empty.
    fn prepare(&self, lowers: &[PathBuf], dir: &Path) -> Result<Snapshot, SnapshotError>;

    /// A read-only snapshot over `lowers`, kept in `dir` (as for [`Backend::prepare`]). Its
    /// mounts refuse writes with `EROFS`.
    fn view(&self, lowers: &[PathBuf], dir: &Path) -> Result<Snapshot, SnapshotError>;

    /// The snapshot an earlier [`Backend::prepare`] (`writable`) or [`Backend::view`] (not
    /// `writable`) of the same `lowers` left in `dir`, e.g. to mount a stopped container's
    /// snapshot again after a restart. Nothing is created or changed; a missing part of the
    /// snapshot's layout is an error.
    ///
    /// (overlayfs refuses to mount again an upper that was mounted `volatile`: such a snapshot
    /// opens, but its mount fails.)
    fn open(
        &self,
        lowers: &[PathBuf],
        dir: &Path,
        writable: bool,
    ) -> Result<Snapshot, SnapshotError>;

    /// Write the changes made in the writable `snapshot` to `out` as a deterministic layer tar
    /// (uncompressed). The snapshot's mounts may still be mounted, but nothing should be
    /// writing through them.
    fn diff(
        &self,
        snapshot: &Snapshot,
        out: &mut dyn Write,
        opts: &DiffOptions,
    ) -> Result<DiffReport, SnapshotError>;

    /// Delete the snapshot's directory and everything in it; never the lowers. Its mounts must
    /// be unmounted first: a mount found inside the directory or on its upper layer is refused
    /// with [`SnapshotError::Busy`].
    fn remove(&self, snapshot: Snapshot) -> Result<(), SnapshotError>;
}

/// A snapshot made by a [`Backend`]: its lowers, its own directory, and the mounts that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The lower layer directories, topmost first.
    pub lowers: Vec<PathBuf>,
    /// The snapshot's own directory (its writable layer, work directory, or copy).
    pub dir: PathBuf,
    /// What to mount, in order, at one target to see the snapshot.
    pub mounts: Vec<Mount>,
    /// Whether the mounts are writable (made by [`Backend::prepare`]).
    pub writable: bool,
    /// The backend that made it.
    backend: &'static str,
    /// Where the snapshot's writes land: the overlay upper, or the copy.
    changes: PathBuf,
}

impl Snapshot {
    /// The name of the backend that made the snapshot.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The directory where writes through the snapshot's mounts land (overlay: the upper
    /// directory, with whiteouts; copy: the whole copied tree).
    pub fn changes_dir(&self) -> &Path {
        &self.changes
    }
}

/// Why a snapshot operation failed. Every variant names the directory or layer involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The snapshot directory cannot be created or read.
    #[error("snapshot directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The snapshot directory already has entries.
    #[error("snapshot directory {0} is not empty")]
    DirNotEmpty(PathBuf),
    /// A lower layer directory is missing or not a directory.
    #[error("lower layer {path}: {source}")]
    Lower {
        /// The layer directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A lower layer and the snapshot directory contain one another: removing the snapshot
    /// or writing to it would touch the layer.
    #[error("lower layer {lower} and snapshot directory {dir} overlap")]
    Overlap {
        /// The layer directory.
        lower: PathBuf,
        /// The snapshot directory.
        dir: PathBuf,
    },
    /// More lower layers than the backend can stack.
    #[error("{backend} backend: {count} lower layers, more than its maximum of {max}")]
    TooManyLayers {
        /// The backend.
        backend: &'static str,
        /// How many were given.
        count: usize,
        /// The most it takes.
        max: usize,
    },
    /// Flattening the lowers into a copy failed.
    #[error("copying the lower layers into {dir}: {source}")]
    Copy {
        /// The copy's directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: crate::view::ViewError,
    },
    /// Diffing the snapshot failed.
    #[error("diff of snapshot {dir}: {source}")]
    Diff {
        /// The snapshot directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: crate::diff::DiffError,
    },
    /// A read-only snapshot has no changes to diff.
    #[error("snapshot {0} is a read-only view: it has no changes to diff")]
    NotWritable(PathBuf),
    /// The snapshot was made by another backend.
    #[error("snapshot {dir} was made by the {made_by} backend, not {backend}")]
    WrongBackend {
        /// The snapshot directory.
        dir: PathBuf,
        /// The backend that made it.
        made_by: &'static str,
        /// The backend asked to handle it.
        backend: &'static str,
    },
    /// Something is still mounted inside the snapshot or uses its upper directory.
    #[error("snapshot {dir} is still in use by the mount at {mount_point}: unmount it first")]
    Busy {
        /// The snapshot directory.
        dir: PathBuf,
        /// The mount point.
        mount_point: PathBuf,
    },
    /// Deleting the snapshot directory failed.
    #[error("removing snapshot directory {dir}: {source}")]
    Remove {
        /// The snapshot directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The best backend for this process: kernel overlayfs where it can be mounted, the copy
/// backend otherwise.
pub fn default_backend() -> Box<dyn Backend> {
    if crate::mount::overlay_supported() {
        Box::new(OverlayBackend::new())
    } else {
        Box::new(CopyBackend::new())
    }
}

/// Whether `path` is already canonical (what `fs::canonicalize` would return): absolute, only
/// plain components, and no symlink on the way, as one `openat2(RESOLVE_NO_SYMLINKS)` finds
/// instead of a `readlink` per component. `Err` when it cannot be opened that way (missing, a
/// symlink on the way, no `openat2`): the caller resolves it the slow way.
fn is_canonical(path: &Path) -> nix::Result<()> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain {
        return Err(nix::errno::Errno::EINVAL);
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    nix::fcntl::openat2(nix::fcntl::AT_FDCWD, path, how).map(drop)
}

/// `fs::canonicalize(path)`, in one system call when `path` is canonical already (as the
/// paths a store builds under its root usually are).
fn canonical(path: &Path) -> io::Result<PathBuf> {
    match is_canonical(path) {
        Ok(()) => Ok(path.components().collect()),
        Err(_) => fs::canonicalize(path),
    }
}

/// `path` made absolute with every existing part resolved (symlinks included), the part that
/// does not exist yet appended as given.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    // Usually: a canonical path, or a missing directory in a canonical parent (`ENOENT` for
    // the path itself while its parent opens: its last component is what is missing; a
    // symlink there would have been `ELOOP`).
    match is_canonical(&absolute) {
        Ok(()) => return Ok(absolute.components().collect()),
        Err(nix::errno::Errno::ENOENT) => {
            if let (Some(parent), Some(_)) = (absolute.parent(), absolute.file_name())
                && is_canonical(parent).is_ok()
            {
                return Ok(absolute.components().collect());
            }
        }
        Err(_) => {}
    }
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match fs::canonicalize(existing) {
            Ok(real) => {
                return Ok(rest.iter().rev().fold(real, |p, name| p.join(name)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(e);
                };
                rest.push(name.to_os_string());
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Check that every lower is a directory and that none overlaps the snapshot directory
/// `dir_abs` (resolved); `dir` is how the caller named it.
fn check_lowers(lowers: &[PathBuf], dir: &Path, dir_abs: &Path) -> Result<(), SnapshotError> {
    // Lowers are usually siblings (a store's unpacked layers): resolve each parent once, and
    // a lower that is itself a plain directory (not a symlink) by its parent's resolved path.
    let mut parents: Vec<(PathBuf, PathBuf)> = Vec::new();
    for lower in lowers {
        let lower_error = |source| SnapshotError::Lower {
            path: lower.clone(),
            source,
        };
        let meta = fs::symlink_metadata(lower).map_err(lower_error)?;
        let plain = lower.is_absolute()
            && lower
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let lower_abs = match (meta.is_dir(), plain, lower.parent(), lower.file_name()) {
            (true, true, Some(parent), Some(name)) => {
                let resolved = match parents.iter().find(|(p, _)| p == parent) {
                    Some((_, r)) => r.clone(),
                    None => {
                        let r = canonical(parent).map_err(lower_error)?;
                        parents.push((parent.to_path_buf(), r.clone()));
                        r
                    }
                };
                resolved.join(name)
            }
            _ => {
                let meta = fs::metadata(lower).map_err(lower_error)?;
                if !meta.is_dir() {
                    return Err(lower_error(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        "not a directory",
                    )));
                }
                fs::canonicalize(lower).map_err(lower_error)?
            }
        };
        if lower_abs.starts_with(dir_abs) || dir_abs.starts_with(&lower_abs) {
            return Err(SnapshotError::Overlap {
                lower: lower.clone(),
                dir: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Check the lowers, then make `dir` an existing, empty directory that overlaps no lower.
/// Nothing is created before the checks pass. Returns the resolved snapshot directory.
fn prepare_dir(lowers: &[PathBuf], dir: &Path) -> Result<PathBuf, SnapshotError> {
    let dir_error = |source| SnapshotError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    let dir_abs = resolve(dir).map_err(dir_error)?;
    check_lowers(lowers, dir, &dir_abs)?;
    match fs::create_dir(&dir_abs) {
        // Made just now: empty.
        Ok(()) => return Ok(dir_abs),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir_abs).map_err(dir_error)?
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(dir_error(e)),
    }
    if fs::read_dir(&dir_abs).map_err(dir_error)?.next().is_some() {
        return Err(SnapshotError::DirNotEmpty(dir.to_path_buf()));
    }
    Ok(dir_abs)
}

/// Check the lowers and that the snapshot directory `dir` and its `parts` exist as
/// directories. Returns the resolved snapshot directory.
fn open_dir(lowers: &[PathBuf], dir: &Path, parts: &[&str]) -> Result<PathBuf, SnapshotError> {
    let dir_abs = canonical(dir).map_err(|source| SnapshotError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    check_lowers(lowers, dir, &dir_abs)?;
    for part in std::iter::once(&"").chain(parts) {
        let path = dir_abs.join(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(SnapshotError::Dir {
                    path,
                    source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                });
            }
            Err(source) => return Err(SnapshotError::Dir { path, source }),
        }
    }
    Ok(dir_abs)
}

fn create_subdir(path: &Path) -> Result<(), SnapshotError> {
    fs::create_dir(path).map_err(|source| SnapshotError::Dir {
        path: path.to_path_buf(),
        source,
    })
}

/// Decode mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// One line of `/proc/self/mountinfo`.
struct MountInfo {
    /// `major:minor` of the filesystem.
    device: String,
    /// The directory of the filesystem that is the root of this mount.
    root: PathBuf,
    /// Where it is mounted.
    point: PathBuf,
    /// The filesystem type.
    fstype: String,
    /// The superblock options.
    options: String,
}

/// Parse the text of a `mountinfo` file.
fn parse_mountinfo(info: &str) -> Vec<MountInfo> {
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountInfo {
                device: fields.get(2)?.to_string(),
                root: unescape_mountinfo(fields.get(3)?),
                point: unescape_mountinfo(fields.get(4)?),
                fstype: fields.get(sep + 1)?.to_string(),
                options: fields.get(sep + 3).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// The calling thread's mount table, parsed, with what tells whether it is still current.
struct MountTable {
    /// The mount namespace it describes (device and inode of `/proc/thread-self/ns/mnt`).
    ns: (u64, u64),
    /// `mountinfo`, opened in that namespace: `poll` reports `POLLPRI` once the namespace's
    /// mounts changed since the last `poll` (or since the open).
    file: fs::File,
    mounts: Vec<MountInfo>,
}

impl MountTable {
    /// Whether a mount was made or removed in the namespace since the last call (or the open).
    fn changed(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, an open descriptor, no waiting.
        let n = unsafe { libc::poll(&mut fd, 1, 0) };
        n != 0 && (n < 0 || fd.revents & (libc::POLLPRI | libc::POLLERR) != 0)
    }

    /// Read the table again from the start of the file.
    fn reload(&mut self) -> io::Result<()> {
        use std::io::{Read, Seek};
        self.file.rewind()?;
        let mut text = String::new();
        self.file.read_to_string(&mut text)?;
        self.mounts = parse_mountinfo(&text);
        Ok(())
    }

    fn open() -> io::Result<MountTable> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata("/proc/thread-self/ns/mnt")?;
        let mut file = fs::File::open("/proc/thread-self/mountinfo")?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(MountTable {
            ns: (meta.dev(), meta.ino()),
            file,
            mounts: parse_mountinfo(&text),
        })
    }
}

/// The calling thread's mount table, read again only when its mount namespace changed (a
/// mount or unmount in it, or the thread is in another namespace than at the last read):
/// removing a snapshot costs a `stat` and a `poll` rather than reading and parsing the whole
/// table. An empty table if `/proc` cannot tell.
fn with_mounts<R>(f: impl FnOnce(&[MountInfo]) -> R) -> R {
    use std::os::unix::fs::MetadataExt;
    static TABLE: std::sync::Mutex<Option<MountTable>> = std::sync::Mutex::new(None);
    let mut table = TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ns = fs::metadata("/proc/thread-self/ns/mnt")
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let current = match table.as_mut() {
        Some(t) if Some(t.ns) == ns => !t.changed() || t.reload().is_ok(),
        _ => false,
    };
    if !current {
        *table = MountTable::open().ok();
    }
    match table.as_ref() {
        Some(t) => f(&t.mounts),
        None => f(&[]),
    }
}

/// A mount of this mount namespace that uses the snapshot directory `dir` (resolved): one
/// mounted at or under it, a bind mount of it or of something in it (found by the mount's
/// root within the same filesystem), or an overlay whose `upperdir` is `upper` (as the
/// mount was given it, so best effort). Returns its mount point.
fn mount_using(dir: &Path, upper: Option<&Path>) -> Option<PathBuf> {
    with_mounts(|mounts| mount_in(mounts, dir, upper))
}

/// [`mount_using`] in the table `mounts`.
fn mount_in(mounts: &[MountInfo], dir: &Path, upper: Option<&Path>) -> Option<PathBuf> {
    // `a` is `b` or under it. The byte prefix is the cheap necessary condition (a host may
    // have thousands of mounts, and this runs at every removal); the component-wise check
    // decides.
    use std::os::unix::ffi::OsStrExt;
    let under = |a: &Path, b: &Path| {
        a.as_os_str()
            .as_bytes()
            .starts_with(b.as_os_str().as_bytes())
            && a.starts_with(b)
    };
    // The mount holding `dir` (the last, i.e. topmost, with the longest mount point), and
    // `dir`'s path inside that filesystem.
    let holder = mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| under(dir, &m.point))
        .max_by_key(|(i, m)| (m.point.as_os_str().len(), *i))
        .map(|(i, _)| i);
    let inside = holder.and_then(|i| {
        let m = &mounts[i];
        let rest = dir.strip_prefix(&m.point).ok()?;
        Some((i, m.device.clone(), m.root.join(rest)))
    });
    for (i, m) in mounts.iter().enumerate() {
        if under(&m.point, dir) {
            return Some(m.point.clone());
        }
        if let Some((holder, device, dir_in_fs)) = &inside {
            if i != *holder && m.device == *device && under(&m.root, dir_in_fs) {
                return Some(m.point.clone());
            }
        }
        if let Some(upper) = upper {
            let names_upper = m.fstype == "overlay"
                && m.options.split(',').any(|option| {
                    option
                        .strip_prefix("upperdir=")
                        .is_some_and(|u| unescape_mountinfo(u) == upper)
                });
            if names_upper {
                return Some(m.point.clone());
            }
        }
    }
    None
}

/// Delete the snapshot directory after checking nothing uses it.
fn remove_dir(snapshot: &Snapshot, backend: &'static str) -> Result<(), SnapshotError> {
    if snapshot.backend != backend {
        return Err(SnapshotError::WrongBackend {
            dir: snapshot.dir.clone(),
            made_by: snapshot.backend,
            backend,
        });
    }
    let dir = match canonical(&snapshot.dir) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SnapshotError::Remove {
                dir: snapshot.dir.clone(),
                source,
            });
        }
    };
    let upper = (backend == "overlay").then_some(snapshot.changes.as_path());
    if let Some(mount_point) = mount_using(&dir, upper) {
        return Err(SnapshotError::Busy {
            dir: snapshot.dir.clone(),
            mount_point,
        });
    }
    remove_tree(&dir).map_err(|source| SnapshotError::Remove {
        dir: snapshot.dir.clone(),
        source,
    })
}

/// Remove a snapshot's directory tree, including the mode-000 directories overlayfs leaves in
/// its work directory (`work/work`, and `work/work/incompat/volatile` after a `volatile`
/// mount), which an unprivileged owner cannot enter until it gives itself the permission back.
///
/// A rootless container with subordinate ids leaves files and directories of those ids in its
/// writable layer, which the caller cannot remove itself: those trees are removed as root of
/// a user namespace with the same maps ([`crate::userns::remove_tree`]).
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    let result = match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            open_up(dir).and_then(|()| fs::remove_dir_all(dir))
        }
        other => other,
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            match crate::idmap::IdMaps::subordinate_for_current_process() {
                Some(maps) => crate::userns::remove_tree(maps, dir).map_err(|_| e),
                None => Err(e),
            }
        }
        other => other,
    }
}

/// Give the owner rwx on every directory under `dir` (not following symlinks).
fn open_up(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = fs::symlink_metadata(&d)?;
        if !meta.is_dir() {
            continue;
        }
        if meta.permissions().mode() & 0o700 != 0o700 {
            fs::set_permissions(
                &d,
                fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
            )?;
        }
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}
