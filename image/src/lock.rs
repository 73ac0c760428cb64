//! Advisory file locks (`flock(2)`) that let several processes and threads share one store.
//!
//! Two locks guard a store: the *index lock* serialises every read-modify-write of `index.json`
//! and molde's own state, and the *GC lock* is held shared by anything adding content (blob
//! ingest, layer unpack, image commit) and exclusively by garbage collection, so GC never frees
//! a blob that a concurrent import is about to reference. A temp file being written is itself
//! locked, so a store opening in another process leaves it alone while clearing leftovers.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A held `flock(2)` on an open file; released when dropped.
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
}

/// Which kind of lock to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Many holders at once.
    Shared,
    /// One holder, no shared holders.
    Exclusive,
}

impl FileLock {
    /// Open (creating if needed) `path` and wait for a lock of `kind` on it.
    pub fn acquire(path: &Path, kind: LockKind) -> io::Result<FileLock> {
        let file = open_lock_file(path)?;
        Self::on(file, kind)
    }

    /// Wait for a lock of `kind` on an already open file.
    pub fn on(file: File, kind: LockKind) -> io::Result<FileLock> {
        let arg = match kind {
            LockKind::Shared => FlockArg::LockShared,
            LockKind::Exclusive => FlockArg::LockExclusive,
        };
        Flock::lock(file, arg)
            .map(|lock| FileLock { _lock: lock })
            .map_err(|(_, errno)| io::Error::from(errno))
    }

    /// Take an exclusive lock on `file` without waiting: `Ok(None)` if someone else holds one.
    pub fn try_exclusive(file: File) -> io::Result<Option<FileLock>> {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(FileLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(io::Error::from(errno)),
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}
