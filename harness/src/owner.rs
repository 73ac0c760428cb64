//! Which test process owns which container, so that what a killed process left is removed by
//! the next one, and nothing a live process uses is touched.
//!
//! ```text
//! <store>/molde/harness/procs/<pid>-<start>   flock'ed exclusively by its process while it lives
//! <store>/molde/harness/owned/<container id>  a symlink to the owning process's procs entry
//! ```
//!
//! A process takes its entry once (the first harness it opens) and keeps it to its end; the
//! kernel releases the lock however it ends, SIGKILL included. [`sweep`] removes every container
//! whose owner's entry it can lock (the owner is dead), then the entry.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use molde_container::{Container, ContainerError};
use molde_image::Store;
use molde_image::lock::FileLock;

/// This process's entry, per harness directory (usually one).
/// One harness directory and this process's locked entry in it.
type Entry = (PathBuf, Arc<FileLock>);
static ENTRIES: OnceLock<Mutex<Vec<Entry>>> = OnceLock::new();

/// The harness's state directory of `store`.
pub(crate) fn dir(store: &Store) -> PathBuf {
    store.layout().state().join("harness")
}

/// This process's entry under `dir` (made and locked on first use); its name.
pub(crate) fn entry(dir: &Path) -> io::Result<String> {
    let name = format!("{}-{}", std::process::id(), start_time());
    let mut entries = ENTRIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if !entries.iter().any(|(d, _)| d == dir) {
        let procs = dir.join("procs");
        fs::create_dir_all(&procs)?;
        fs::create_dir_all(dir.join("owned"))?;
        // Locked before it gets its name: a sweeper never sees it unlocked.
        let tmp = procs.join(format!(".{name}"));
        let f = File::create(&tmp)?;
        let lock = FileLock::try_exclusive(f)?
            .ok_or_else(|| io::Error::other("this process's harness entry is locked by another"))?;
        fs::rename(&tmp, procs.join(&name))?;
        entries.push((dir.to_owned(), Arc::new(lock)));
    }
    Ok(name)
}

/// Mark container `id` as this process's.
pub(crate) fn mark(dir: &Path, id: &str) -> io::Result<()> {
    let name = entry(dir)?;
    std::os::unix::fs::symlink(Path::new("../procs").join(name), dir.join("owned").join(id))
}

/// Forget the mark of container `id` (it was removed).
pub(crate) fn unmark(dir: &Path, id: &str) {
    let _ = fs::remove_file(dir.join("owned").join(id));
}

/// This process's start time (clock ticks since boot): with the pid, a name no later process
/// shares.
fn start_time() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 2..];
            after.split_whitespace().nth(19)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Whether the process of entry `path` is gone (its lock can be taken; the file missing
/// counts as gone).
fn dead(path: &Path) -> bool {
    match File::open(path) {
        Ok(f) => matches!(FileLock::try_exclusive(f), Ok(Some(_))),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// Remove what dead processes left: their containers, marks and entries. Returns how many
/// containers were removed.
pub(crate) fn sweep(store: &Store) -> Result<usize, ContainerError> {
    let dir = dir(store);
    let owned = dir.join("owned");
    let Ok(rd) = fs::read_dir(&owned) else {
        return Ok(0);
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let mark = e.path();
        let Ok(target) = fs::read_link(&mark) else {
            continue;
        };
        if !dead(&owned.join(&target)) {
            continue;
        }
        let id = e.file_name().to_string_lossy().into_owned();
        match Container::open(store, &id) {
            Ok(c) => {
                c.remove()?;
                removed += 1;
            }
            Err(ContainerError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let _ = fs::remove_file(&mark);
    }
    // Entries of dead processes, now owning nothing.
    if let Ok(rd) = fs::read_dir(dir.join("procs")) {
        let mine = format!("{}-{}", std::process::id(), start_time());
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != mine && !name.starts_with('.') && dead(&e.path()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(removed)
}
