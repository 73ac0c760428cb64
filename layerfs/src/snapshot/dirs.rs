//! A snapshot's directory: the lowers checked (canonical, outside it, not inside each other),
//! the directory made for a prepare or a view, and found again by open.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::SnapshotError;

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
pub(super) fn canonical(path: &Path) -> io::Result<PathBuf> {
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
pub(super) fn prepare_dir(lowers: &[PathBuf], dir: &Path) -> Result<PathBuf, SnapshotError> {
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
pub(super) fn open_dir(
    lowers: &[PathBuf],
    dir: &Path,
    parts: &[&str],
) -> Result<PathBuf, SnapshotError> {
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

pub(super) fn create_subdir(path: &Path) -> Result<(), SnapshotError> {
    fs::create_dir(path).map_err(|source| SnapshotError::Dir {
        path: path.to_path_buf(),
        source,
    })
}
