//! create: check and resolve everything, then allocate the writable layer, hold the image and
//! write the record. Nothing runs yet.

use std::fs;
use std::path::PathBuf;

use molde_layerfs::OverlayXattr;
use molde_layerfs::snapshot::{Backend, Snapshot};
use molde_layerfs::view::UnionView;

use super::builder::{ContainerBuilder, Stdio};
use super::{Child, Container, Output, list};
use crate::config;
use crate::error::{ContainerError, io_err};
use crate::launch::Network;
use crate::record::{
    self, ContainerPaths, LayerStorage, MountRecord, Record, RunConfig, State, names,
};
use crate::volume::Volume;

/// The builder's verbs: each makes the container, then starts, runs or collects it.
impl ContainerBuilder {
    /// Create the container (state created: writable layer allocated, image held, record
    /// written). Every setting is checked, the user resolved, before anything is made.
    pub fn create(self) -> Result<Container, ContainerError> {
        create(self)
    }

    /// Create and start the container.
    pub fn start(self) -> Result<Container, ContainerError> {
        let mut c = self.create()?;
        c.start()?;
        Ok(c)
    }

    /// Create and start the container, giving a [`Child`] (dropping it kills the process and
    /// removes the container).
    pub fn spawn(self) -> Result<Child, ContainerError> {
        Child::new(self.start()?)
    }

    /// Run the container to the end and collect its output (stdout and stderr piped, stdin
    /// null unless set), then remove it.
    pub fn output(mut self) -> Result<Output, ContainerError> {
        self.stdin.get_or_insert_with(Stdio::null);
        self.stdout.get_or_insert_with(Stdio::piped);
        self.stderr.get_or_insert_with(Stdio::piped);
        self.spawn()?.wait_with_output()
    }
}

/// The signal number an image's `StopSignal` names (`SIGTERM`, `TERM`, `15`); SIGTERM when
/// unset or unknown.
pub(crate) fn parse_signal(name: Option<&str>) -> i32 {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return libc::SIGTERM;
    };
    if let Ok(n) = name.parse::<i32>() {
        return n;
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .map_or(libc::SIGTERM, |s| s as i32)
}

/// Volumes a create made, removed when it fails: each one still empty and mounted by no
/// container (another container may have taken it up meanwhile: then it stays).
struct NewVolumes {
    store: molde_image::Store,
    made: Vec<Volume>,
}

impl NewVolumes {
    /// Makes the named volumes the mounts ask for that do not exist yet, and checks that
    /// bind sources exist.
    fn make(store: &molde_image::Store, mounts: &[MountRecord]) -> Result<Self, ContainerError> {
        let mut new = NewVolumes {
            store: store.clone(),
            made: Vec::new(),
        };
        for m in mounts {
            match m {
                MountRecord::Volume { name, .. } => {
                    let existed = Volume::open(store, name).is_ok();
                    let volume = Volume::create(store, name)?;
                    if !existed {
                        new.made.push(volume);
                    }
                }
                MountRecord::Bind { source, .. } => {
                    fs::symlink_metadata(source).map_err(io_err("bind mount source", source))?;
                }
                MountRecord::Tmpfs { .. } => {}
            }
        }
        Ok(new)
    }
}

impl Drop for NewVolumes {
    fn drop(&mut self) {
        for volume in self.made.drain(..) {
            let empty = fs::read_dir(volume.path()).is_ok_and(|mut d| d.next().is_none());
            if empty {
                let _ = volume.remove(&self.store);
            }
        }
    }
}

pub(crate) fn create(b: ContainerBuilder) -> Result<Container, ContainerError> {
    let store = b.store.clone();
    let image = b.image.clone();
    let xattr = OverlayXattr::for_current_process();
    if let Some(name) = &b.name {
        names::check_name(name)?;
    }
    // Everything that can be checked is checked before anything is made.
    let lowers = lower_dirs(&b, &store, &image)?;
    let run = run_config(&b, &image, &lowers, xattr)?;
    // The volumes this create makes: removed again if it fails (see NewVolumes).
    let mut new_volumes = NewVolumes::make(&store, &b.mounts)?;
    let id = record::new_id().map_err(|source| ContainerError::Io {
        op: "making a container id",
        path: PathBuf::from("/dev/urandom"),
        source,
    })?;
    let paths = ContainerPaths::new(&store, &id);
    fs::create_dir_all(paths.dir()).map_err(io_err("creating", paths.dir()))?;
    // Held through the creation: a concurrent list leaves a half-made container alone.
    let guard = record::lock(&paths)?;
    let made = make(&b, &id, &paths, &lowers, run);
    drop(guard);
    let (backend, snapshot, record) = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = super::networking::release(&store, &id);
            list::discard(&store, &paths, &id);
            if let Some(name) = &b.name {
                let _ = names::release(&store, name, &id);
            }
            return Err(e);
        }
    };
    new_volumes.made.clear();
    Ok(Container {
        store,
        id,
        image,
        paths,
        backend,
        snapshot,
        record,
        xattr,
        stdin: b.stdin,
        stdout: b.stdout,
        stderr: b.stderr,
        terminal_size: b.terminal_size,
        process: None,
        cgroup: None,
        owner: None,
        timeout: None,
        remove_on_drop: true,
        net: None,
        log_pump: None,
        removed: false,
    })
}

/// The image's layer directories, top first, as the union mounts them. A deep image's
/// containers mount its flattened stack: one lower directory. Where it cannot be made (a
/// hard link refused: EMLINK on a much-shared inode, EXDEV across mounts), the layers
/// themselves.
fn lower_dirs(
    b: &ContainerBuilder,
    store: &molde_image::Store,
    image: &molde_image::Image,
) -> Result<Vec<PathBuf>, ContainerError> {
    let flat = if b.flatten {
        molde_image::unpack::flattened(store, image).unwrap_or_else(|e| {
            tracing::warn!("mounting the layers of {} one by one: {e}", image.id());
            None
        })
    } else {
        None
    };
    Ok(match flat {
        Some(flat) => vec![flat],
        None => molde_image::unpack::unpack(store, image)?
            .into_iter()
            .rev()
            .map(|u| u.path)
            .collect(),
    })
}

/// What the container runs, resolved against the image and its files (user names looked up
/// in the image's /etc/passwd): checked whole before anything is made.
fn run_config(
    b: &ContainerBuilder,
    image: &molde_image::Image,
    lowers: &[PathBuf],
    xattr: OverlayXattr,
) -> Result<RunConfig, ContainerError> {
    let view = UnionView::new(lowers.to_vec(), None, xattr);
    let identity = config::resolve_identity(
        &view,
        b.user.as_deref().or(image.user()),
        b.group.as_deref(),
    )?;
    let argv = config::argv(
        image.entrypoint(),
        image.cmd(),
        b.command.as_deref(),
        b.entrypoint.as_deref(),
        b.args.as_deref(),
    )?;
    let cwd = config::workdir(image.working_dir(), b.cwd.as_deref())?;
    let env = config::merge_env(image.env(), &b.env, identity.home.as_deref());
    let run = RunConfig {
        argv,
        env,
        cwd,
        uid: identity.uid,
        gid: identity.gid,
        groups: identity.groups,
        hostname: b.hostname.clone(),
        mounts: b.mounts.clone(),
        read_only_rootfs: b.read_only_rootfs,
        host_network: b.network == Network::Host,
        memory_bytes: b.memory,
        pids: b.pids,
        cpu_quota: b.cpu,
        rlimits: b.rlimits.clone(),
        init: b.init,
        stop_signal: b
            .stop_signal
            .unwrap_or_else(|| parse_signal(image.stop_signal())),
        timeout_ms: b.timeout.map(|d| d.as_millis() as u64),
        network: Default::default(),
        ambient_capabilities: b.ambient_capabilities.clone(),
        no_new_privileges: b.no_new_privileges,
        seccomp: b.seccomp.clone(),
        landlock: b.landlock.clone(),
        logs: b.logs,
        tty: b.tty,
    };
    let limits = crate::cgroup::Limits {
        memory_bytes: run.memory_bytes,
        pids: run.pids,
        cpu_quota: run.cpu_quota,
    };
    if !limits.is_empty() {
        limits.validate().map_err(|source| ContainerError::Cgroup {
            id: String::new(),
            source,
        })?;
    }
    Ok(run)
}

/// Everything the container holds, made under its record lock: its name, its network
/// addresses, the hold on its image, its writable layer and its record. On an error the
/// caller discards what was made.
fn make(
    b: &ContainerBuilder,
    id: &str,
    paths: &ContainerPaths,
    lowers: &[PathBuf],
    mut run: RunConfig,
) -> Result<(Box<dyn Backend>, Snapshot, Record), ContainerError> {
    let store = &b.store;
    // Claimed first (under the store's name lock): a taken name fails before anything else
    // is made.
    if let Some(name) = &b.name
        && let Err(holder) = names::claim(store, name, id)?
    {
        return Err(ContainerError::NameInUse {
            name: name.clone(),
            holder,
        });
    }
    run.network = super::networking::create(b, id, paths)?;
    store.hold(&b.image, &record::hold_name(id))?;
    let snap_dir = paths.snapshot();
    let privileged = molde_layerfs::privilege::is_privileged();
    let storage = match b.storage {
        LayerStorage::Tmpfs if !privileged => LayerStorage::TmpfsInNamespace,
        other => other,
    };
    if storage == LayerStorage::Tmpfs {
        mount_tmpfs(&snap_dir)?;
    }
    let backend = super::backend::for_container(store);
    // The rootfs is mounted over the snapshot directory itself, in the container's own
    // mount namespace: no mount point of its own to make and delete.
    let snapshot = backend.prepare(lowers, &snap_dir)?;
    if storage == LayerStorage::TmpfsInNamespace && snapshot.mounts.is_empty() {
        // The copy backend (overlay not mountable in a user namespace here): the image's
        // copy is the rootfs, which a tmpfs would hide.
        let _ = backend.remove(snapshot);
        return Err(ContainerError::LayerOutOfReach {
            id: id.to_owned(),
            op: "have an ephemeral writable layer (overlay cannot be mounted in a user \
                 namespace here, and the copy backend's rootfs is on disk)",
        });
    }
    let record = Record {
        id: id.to_owned(),
        name: b.name.clone(),
        image: b.image.manifest_digest().to_string(),
        image_id: b.image.id().to_string(),
        created: molde_image::builder::now_rfc3339(),
        state: State::Created,
        pid: None,
        pid_start: None,
        program_pid: None,
        program_pid_start: None,
        started: None,
        finished: None,
        exit_code: None,
        exit_signal: None,
        backend: backend.name().to_owned(),
        lowers: lowers.to_vec(),
        storage,
        run,
    };
    record.write(paths)?;
    Ok((backend, snapshot, record))
}

/// The writable layer of an `ephemeral` container: a tmpfs on its snapshot directory.
fn mount_tmpfs(snap_dir: &std::path::Path) -> Result<(), ContainerError> {
    fs::create_dir(snap_dir).map_err(io_err("creating", snap_dir))?;
    nix::mount::mount(
        Some("tmpfs"),
        snap_dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(|e| io_err("mounting a tmpfs for the writable layer on", snap_dir)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn stop_signal_names() {
        assert_eq!(parse_signal(None), libc::SIGTERM);
        assert_eq!(parse_signal(Some("SIGQUIT")), libc::SIGQUIT);
        assert_eq!(parse_signal(Some("int")), libc::SIGINT);
        assert_eq!(parse_signal(Some("9")), 9);
        assert_eq!(parse_signal(Some("bogus")), libc::SIGTERM);
    }
}
