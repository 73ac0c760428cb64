//! list (`ps -a`), finding a container by id prefix, and clearing stale state: records of
//! containers whose owner died, interrupted creations and removals.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;

use molde_image::Store;
use molde_image::lock::FileLock;

use super::Status;
use crate::error::{ContainerError, io_err};
use crate::record::{self, ContainerPaths, MountRecord, Record, State, containers_dir};

/// One container in a listing, like a row of `docker ps -a`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    /// The container id.
    pub id: String,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// The image's manifest digest.
    pub image: String,
    /// The image id (config digest).
    pub image_id: String,
    /// Its status.
    pub status: Status,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The exit code of its last run.
    pub exit_code: Option<i32>,
    /// The host pid of its PID 1 while running.
    pub pid: Option<u32>,
    /// The command line.
    pub command: Vec<OsString>,
    /// The named volumes it mounts.
    pub volumes: Vec<String>,
}

/// The ids of every container directory of the store.
fn ids(store: &Store) -> Result<Vec<String>, ContainerError> {
    let dir = containers_dir(store);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading", &dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("reading", &dir))?;
        if let Some(name) = entry.file_name().to_str()
            && name.len() == 64
            && name.bytes().all(|b| b.is_ascii_hexdigit())
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// The full id of the container `id` names: a full id, a name, or a unique prefix of an id
/// (at least 4 digits), in that order (Docker's).
pub(crate) fn find(store: &Store, id: &str) -> Result<String, ContainerError> {
    let all = ids(store)?;
    if all.iter().any(|i| i == id) {
        return Ok(id.to_owned());
    }
    if let Some(found) = record::names::lookup(store, id)? {
        return Ok(found);
    }
    if id.len() < 4 {
        return Err(ContainerError::NotFound(id.to_owned()));
    }
    let found: Vec<String> = all.into_iter().filter(|i| i.starts_with(id)).collect();
    match found.len() {
        0 => Err(ContainerError::NotFound(id.to_owned())),
        1 => Ok(found.into_iter().next().unwrap_or_default()),
        _ => Err(ContainerError::Ambiguous {
            prefix: id.to_owned(),
            candidates: found,
        }),
    }
}

/// Bring a record up to date with reality: a `running` record whose process is gone and
/// whose owner is gone too is marked exited (code unknown); an interrupted removal is
/// finished.
pub(crate) fn refresh(store: &Store, paths: &ContainerPaths) -> Result<(), ContainerError> {
    let guard = record::lock(paths)?;
    let r = Record::read(paths)?;
    match r.state {
        State::Running if !record::alive(r.pid, r.pid_start) => {
            if let Some(_owner) = record::try_own(paths)? {
                let mut r = r;
                r.state = State::Exited;
                r.pid = None;
                r.pid_start = None;
                r.program_pid = None;
                r.program_pid_start = None;
                r.exit_code = None;
                r.exit_signal = None;
                r.finished = Some(molde_image::builder::now_rfc3339());
                r.write(paths)?;
                clear_cgroup(&r.id);
            }
        }
        State::Removing if record::try_own(paths)?.is_some() => {
            drop(guard);
            discard(store, paths, &r.id);
        }
        _ => {}
    }
    Ok(())
}

/// Every container, oldest first.
pub(crate) fn list(store: &Store) -> Result<Vec<ContainerSummary>, ContainerError> {
    list_all(store).map(|(listed, _)| listed)
}

/// Every container, oldest first, and the ids of those left out because their record is
/// complete but not understood.
pub(crate) fn list_all(
    store: &Store,
) -> Result<(Vec<ContainerSummary>, Vec<String>), ContainerError> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let ids = ids(store)?;
    for id in &ids {
        let id = id.clone();
        let paths = ContainerPaths::new(store, &id);
        if !paths.record().exists() {
            clear_half_made(store, &paths, &id, false)?;
            continue;
        }
        match refresh(store, &paths) {
            Ok(()) => {}
            // Removed meanwhile by someone else.
            Err(ContainerError::Record(record::RecordError::Io { source, .. }))
                if source.kind() == io::ErrorKind::NotFound =>
            {
                continue;
            }
            // Records are not fsynced: after a host crash one may have reached the disk only
            // in part (empty, or cut short). Its creation never completed as far as the disk
            // knows.
            Err(ContainerError::Record(record::RecordError::Json { source, .. }))
                if source.is_eof() =>
            {
                clear_half_made(store, &paths, &id, true)?;
                continue;
            }
            // Complete but not understood (written by a newer molde, or edited by hand): not
            // ours to judge, and never a reason to delete a writable layer. Leave it out.
            Err(ContainerError::Record(e @ record::RecordError::Json { .. })) => {
                tracing::warn!("skipping container {id}: {e}");
                skipped.push(id);
                continue;
            }
            Err(e) => return Err(e),
        }
        let r = match Record::read(&paths) {
            Ok(r) => r,
            Err(record::RecordError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if r.state == State::Removing {
            continue;
        }
        let mut status = Status::from_record(&r);
        if status == Status::Running && !record::alive(r.pid, r.pid_start) {
            // Ended; its owner (alive) has not collected it yet.
            status = Status::Exited {
                code: None,
                signal: None,
            };
        }
        out.push(ContainerSummary {
            id: r.id.clone(),
            name: r.name.clone(),
            image: r.image.clone(),
            image_id: r.image_id.clone(),
            status,
            created: r.created.clone(),
            exit_code: r.exit_code,
            pid: r.pid.filter(|_| status == Status::Running),
            command: r.run.argv.clone(),
            volumes: r
                .run
                .mounts
                .iter()
                .filter_map(|m| match m {
                    MountRecord::Volume { name, .. } => Some(name.clone()),
                    _ => None,
                })
                .collect(),
        });
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    restore_holds(store, &out, &ids);
    let named: Vec<(String, String)> = out
        .iter()
        .filter_map(|c| Some((c.id.clone(), c.name.clone()?)))
        .collect();
    if let Err(e) = record::names::repair(store, &named) {
        tracing::warn!("repairing the container names: {e}");
    }
    Ok((out, skipped))
}

/// Holds are not fsynced either (see [`crate::record`]): after a host crash a container may
/// have lost its hold, or a removed container's hold may be back. Rebuild them from the
/// containers: every listed container holds its image (as `container:<id>`, or under its bare
/// id, as an older molde named it); a `container:<id>` hold whose container directory is gone
/// is released. Other holds (a user's, even one named like an id) are left alone.
fn restore_holds(store: &Store, listed: &[ContainerSummary], ids: &[String]) {
    let Ok(holds) = store.holds() else { return };
    for c in listed {
        if holds
            .iter()
            .any(|h| record::hold_owner(&h.name).is_some_and(|(id, _)| id == c.id))
        {
            continue;
        }
        // Under the container's lock, and only if no removal began (a removal marks the
        // record first, under that lock, and releases the hold last).
        let paths = ContainerPaths::new(store, &c.id);
        let Ok(_guard) = record::lock(&paths) else {
            continue;
        };
        if !Record::read(&paths).is_ok_and(|r| r.state != State::Removing) {
            continue;
        }
        match store.resolve(&c.image) {
            Ok(image) => {
                if let Err(e) = store.hold(&image, &record::hold_name(&c.id)) {
                    tracing::warn!("taking again the hold of container {}: {e}", c.id);
                }
            }
            Err(e) => tracing::warn!("container {}: its image {}: {e}", c.id, c.image),
        }
    }
    for h in &holds {
        if let Some((id, false)) = record::hold_owner(&h.name)
            && !ids.iter().any(|i| i == id)
            && !ContainerPaths::new(store, id).dir().exists()
        {
            let _ = store.release(&h.name);
        }
    }
}

/// A container directory without a record (or, `unreadable`, with one a crash cut short): a
/// creation in progress (its lock is held) or one interrupted (cleared).
fn clear_half_made(
    store: &Store,
    paths: &ContainerPaths,
    id: &str,
    unreadable: bool,
) -> Result<(), ContainerError> {
    let p = paths.lock();
    let f = match File::options()
        .read(true)
        .write(true)
        .create(false)
        .open(&p)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Not even a lock yet: the creator is between mkdir and lock; leave it.
            return Ok(());
        }
        Err(e) => return Err(io_err("opening", &p)(e)),
    };
    if FileLock::try_exclusive(f)
        .map_err(io_err("locking", &p))?
        .is_some()
        && (unreadable || !paths.record().exists())
    {
        discard(store, paths, id);
    }
    Ok(())
}

/// Best-effort removal of everything a container left: its tmpfs, its directory (writable
/// layer included), its hold.
pub(crate) fn discard(store: &Store, paths: &ContainerPaths, id: &str) {
    clear_cgroup(id);
    let snap = paths.snapshot();
    // A tmpfs writable layer: detach it (EINVAL when it is not a mount point).
    let _ = nix::mount::umount2(&snap, nix::mount::MntFlags::MNT_DETACH);
    if let Err(e) = molde_layerfs::snapshot::remove_tree(paths.dir())
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", paths.dir().display());
    }
    let _ = store.release(&record::hold_name(id));
    // The bare-id hold an older molde took.
    let _ = store.release(id);
}

/// Clear stale state of every container of the store: records of containers whose owner died
/// are marked exited, interrupted creations and removals are finished. `Container::list` and
/// `Container::open` do this too. `molde::open_store` (the facade) opens a store and calls it:
/// use that, or call this after opening a store that a killed process used.
pub fn recover(store: &Store) -> Result<(), ContainerError> {
    list(store)?;
    // Addresses of containers that are gone (a create or remove cut short).
    let live = |id: &str| ContainerPaths::new(store, id).dir().exists();
    crate::network::sweep(store, &live)?;
    Ok(())
}

/// Kill and remove the cgroup a container's dead owner left, if any.
pub(crate) fn clear_cgroup(id: &str) {
    use crate::cgroup::{Cgroup, Parent};
    if let Ok(Some(cg)) = Cgroup::open_in(&Parent::default(), id) {
        let _ = cg.kill_all();
        if let Err(e) = cg.remove() {
            tracing::warn!("removing the cgroup of container {id}: {e}");
        }
    }
}
