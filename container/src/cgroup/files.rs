//! Reading and writing cgroupfs files and directories, with errors that name the path.

use std::fs::OpenOptions;
use std::io::{self, ErrorKind, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::CgroupError;

/// Turns an I/O error on `path` into a [`CgroupError`]: permission problems (EACCES, EPERM,
/// EROFS) become [`CgroupError::PermissionDenied`], the rest [`CgroupError::Io`].
pub(crate) fn error(op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    match source.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => CgroupError::PermissionDenied {
            op,
            path: path.to_path_buf(),
            source,
        },
        _ => CgroupError::Io {
            op,
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Writes `value` to a cgroupfs file in one `write(2)` (no truncation, no creation).
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_raw(path, value).map_err(|e| error("write", path, e))
}

/// [`write()`] keeping the raw error, for callers that handle particular errnos.
pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    // cgroupfs takes one value per write(2); `write_all` would retry a short write, which the
    // kernel never does for these small values.
    let n = file.write(value.as_bytes())?;
    if n != value.len() {
        return Err(io::Error::new(
            ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

/// Reads a cgroupfs file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|e| error("read", path, e))
}

/// Reads a numeric value that may be `max` (unlimited): `Ok(None)` for `max`.
pub(crate) fn parse_max(path: &Path, text: &str) -> Result<Option<u64>, CgroupError> {
    let text = text.trim();
    if text == "max" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        text: text.to_owned(),
    })
}

/// Parses a number from a cgroupfs file.
pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    let text = text.trim();
    text.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        text: text.to_owned(),
    })
}

/// Finds `key value` in a flat-keyed file (`memory.events`, `memory.oom_control`).
pub(crate) fn keyed(path: &Path, text: &str, key: &str) -> Result<Option<u64>, CgroupError> {
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() == Some(key) {
            let value = parts.next().unwrap_or("");
            return parse_u64(path, value).map(Some);
        }
    }
    Ok(None)
}

/// The pids listed in a `cgroup.procs` file (v1 may repeat them; callers dedup).
pub(crate) fn read_pids(path: &Path) -> Result<Vec<u32>, CgroupError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // A directory removed under us holds no processes.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(error("read", path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| CgroupError::Parse {
                path: path.to_path_buf(),
                text: l.to_owned(),
            })
        })
        .collect()
}

/// Creates a directory; an existing one is fine when `exist_ok`.
pub(crate) fn mkdir(path: &Path, exist_ok: bool) -> Result<bool, CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if exist_ok {
                Ok(false)
            } else {
                Err(CgroupError::Exists {
                    path: path.to_path_buf(),
                })
            }
        }
        Err(e) => Err(error("create", path, e)),
    }
}

/// Removes a cgroup directory, retrying while the kernel still reports it busy (processes that
/// were just killed leave it a moment later). A directory already gone is fine.
pub(crate) fn rmdir(path: &Path, patience: Duration) -> Result<(), CgroupError> {
    let deadline = Instant::now() + patience;
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(error("remove", path, e)),
        }
    }
}
