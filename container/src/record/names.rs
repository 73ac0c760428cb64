//! Container names, unique in a store, as `docker run --name` gives them.
//!
//! ```text
//! <store>/molde/names/<name>    a symlink whose target is the id of the container holding it
//! <store>/molde/names/.lock     the name lock: flock'ed around every claim, release and repair
//! ```
//!
//! The record keeps the name too (it is the truth after a crash: links, like records, are not
//! fsynced); the link is the index that makes a claim one atomic check-and-create under the
//! lock, so that two processes claiming one name at once end with exactly one holder, and a
//! lookup by name one `readlink`. A link outlives its container only when a removal or a
//! creation was cut short: a claim finds its target gone (or never finished, or being
//! removed) and takes the name over.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use molde_image::Store;
use molde_image::lock::{FileLock, LockKind};

use super::{ContainerPaths, Record, RecordError, State, io_err};

/// Why a name cannot name a container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid container name {name:?}: {reason}; use a letter or digit, then letters, digits, \
     '_', '.' or '-' (at most 255 bytes)"
)]
pub struct NameError {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The longest name: a file name's limit.
const MAX_LEN: usize = 255;

/// Check `name` against Docker's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let bad = |reason| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.bytes().next() else {
        return bad("it is empty");
    };
    if !first.is_ascii_alphanumeric() {
        return bad("it must start with a letter or digit");
    }
    if name.len() > MAX_LEN {
        return bad("it is too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return bad("it holds a character other than a letter, digit, '_', '.' or '-'");
    }
    Ok(())
}

fn names_dir(store: &Store) -> PathBuf {
    store.layout().state().join("names")
}

fn name_lock(store: &Store) -> Result<FileLock, RecordError> {
    let dir = names_dir(store);
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let p = dir.join(".lock");
    FileLock::acquire(&p, LockKind::Exclusive).map_err(io_err("locking", &p))
}

/// The id the link `name` points to, if there is one.
fn read_link(link: &Path) -> Result<Option<String>, RecordError> {
    match fs::read_link(link) {
        Ok(target) => Ok(target.to_str().map(str::to_owned)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", link)(e)),
    }
}

/// Whether container `id` holds `name`: its record names it and is not being removed, or it
/// has no record yet and its creation is under way (its update lock is held).
fn holds(store: &Store, id: &str, name: &str) -> bool {
    let paths = ContainerPaths::new(store, id);
    match Record::read(&paths) {
        Ok(r) => r.state != State::Removing && r.name.as_deref() == Some(name),
        Err(RecordError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            // No record: a creation under way (it holds the update lock) or one interrupted.
            let Ok(f) = fs::File::open(paths.lock()) else {
                return false;
            };
            matches!(FileLock::try_exclusive(f), Ok(None))
        }
        // Present but unreadable (a newer molde's, or cut short by a crash): not ours to
        // take over.
        Err(_) => paths.dir().exists(),
    }
}

/// Claim `name` for container `id`: `Ok(Err(holder))` if another container holds it.
pub fn claim(store: &Store, name: &str, id: &str) -> Result<Result<(), String>, RecordError> {
    let _g = name_lock(store)?;
    let link = names_dir(store).join(name);
    match read_link(&link)? {
        Some(holder) if holder == id => return Ok(Ok(())),
        Some(holder) if holds(store, &holder, name) => return Ok(Err(holder)),
        Some(_) => fs::remove_file(&link).map_err(io_err("removing the stale name", &link))?,
        None => {}
    }
    std::os::unix::fs::symlink(id, &link).map_err(io_err("writing the name", &link))?;
    Ok(Ok(()))
}

/// Free `name` if container `id` holds it (a name taken over since is left alone).
pub fn release(store: &Store, name: &str, id: &str) -> Result<(), RecordError> {
    let _g = name_lock(store)?;
    let link = names_dir(store).join(name);
    if read_link(&link)?.as_deref() == Some(id) {
        match fs::remove_file(&link) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("removing the name", &link)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The id of the container holding `name`, if any.
pub fn lookup(store: &Store, name: &str) -> Result<Option<String>, RecordError> {
    if check_name(name).is_err() {
        return Ok(None);
    }
    let Some(id) = read_link(&names_dir(store).join(name))? else {
        return Ok(None);
    };
    Ok(holds(store, &id, name).then_some(id))
}

/// Put the name index right with the records (after a crash either may have lost writes):
/// every link whose container does not hold it is removed, and every named container in
/// `named` (id, name) whose name has no link gets it back.
pub fn repair(store: &Store, named: &[(String, String)]) -> Result<(), RecordError> {
    let dir = names_dir(store);
    if named.is_empty() && !dir.exists() {
        return Ok(());
    }
    let _g = name_lock(store)?;
    let rd = fs::read_dir(&dir).map_err(io_err("reading", &dir))?;
    for entry in rd {
        let entry = entry.map_err(io_err("reading", &dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if check_name(&name).is_err() {
            continue;
        }
        let link = entry.path();
        if let Some(id) = read_link(&link)?
            && !holds(store, &id, &name)
        {
            let _ = fs::remove_file(&link);
        }
    }
    for (id, name) in named {
        let link = dir.join(name);
        if read_link(&link)?.is_none() {
            std::os::unix::fs::symlink(id, &link).map_err(io_err("writing the name", &link))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_name_rule() {
        for ok in [
            "a",
            "my-container",
            "A.b_c-1",
            "0",
            "x".repeat(255).as_str(),
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            "é",
            "a:b",
            &"x".repeat(256),
        ] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.name, bad);
            assert!(e.to_string().contains("letter or digit"), "{e}");
        }
    }
}
