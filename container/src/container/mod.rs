//! [`Container`]: one container of a store, through its lifecycle: created (writable layer
//! allocated, image held) -> running -> exited (code or signal) -> restarted (same writable
//! layer) -> removed (writable layer deleted, hold released). One file per verb.

pub(crate) mod backend;
pub(crate) mod builder;
pub(crate) mod bundle;
pub(crate) mod child;
pub(crate) mod commit;
pub(crate) mod copy;
pub(crate) mod create;
pub(crate) mod exec;
pub(crate) mod list;
pub(crate) mod logs;
pub(crate) mod networking;
pub(crate) mod published;
pub(crate) mod remove;
pub(crate) mod remove_volume;
pub(crate) mod start;
pub(crate) mod stop;
pub(crate) mod timeout;

use std::path::{Path, PathBuf};

use molde_image::lock::FileLock;
use molde_image::{Image, Store};
use molde_layerfs::OverlayXattr;
use molde_layerfs::snapshot::{Backend, CopyBackend, OverlayBackend, Snapshot};
use molde_layerfs::view::UnionView;

pub use child::{Child, Output};
pub use exec::{ExecBuilder, ExecChild};
pub use list::ContainerSummary;

use crate::error::ContainerError;
use crate::launch::Process;
use crate::record::{ContainerPaths, Record, State};
pub use builder::{ContainerBuilder, Stdio};

/// Where a container is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created (writable layer allocated, image held), never started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended: with `code`, or killed by `signal` (both `None` when the process
    /// ended unobserved, e.g. its owner was killed).
    Exited {
        /// The exit code.
        code: Option<i32>,
        /// The number of the signal that killed it.
        signal: Option<i32>,
    },
    /// Removed: writable layer deleted, hold released, record gone.
    Removed,
}

impl Status {
    pub(crate) fn from_record(r: &Record) -> Status {
        match r.state {
            State::Created => Status::Created,
            State::Running => Status::Running,
            State::Exited => Status::Exited {
                code: r.exit_code,
                signal: r.exit_signal,
            },
            State::Removing => Status::Removed,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Created => f.write_str("created"),
            Status::Running => f.write_str("running"),
            Status::Exited {
                code: Some(c),
                signal: _,
            } => write!(f, "exited ({c})"),
            Status::Exited {
                code: None,
                signal: Some(s),
            } => write!(f, "exited (signal {s})"),
            Status::Exited { .. } => f.write_str("exited (unknown)"),
            Status::Removed => f.write_str("removed"),
        }
    }
}

/// A container of a store. Made by [`Container::builder`] (then dropping it kills its
/// processes and removes it, also during a panic; [`Container::close`] does the same and
/// reports errors; [`Container::keep`] leaves it) or opened by id with [`Container::open`]
/// (then dropping the handle leaves the container as it is, except for a process this handle
/// started, which it kills).
///
/// ```no_run
/// use std::time::Duration;
/// use molde_container::{Container, Status};
/// # fn f(store: &molde_image::Store, image: &molde_image::Image) -> Result<(), molde_container::ContainerError> {
/// let mut c = Container::builder(store, image)
///     .command("/bin/sh")
///     .args(["-c", "echo hi > /greeting; sleep 60"])
///     .memory(64 << 20)
///     .start()?;
/// c.stop(Duration::from_secs(2))?;             // stop signal, then SIGKILL
/// assert_eq!(c.read_file("/greeting")?, b"hi\n"); // through the union view
/// for change in c.diff()? {
///     println!("{change}");                      // A /greeting
/// }
/// let image2 = c.commit("greeting")?;            // one new layer on the image
/// c.start()?;                                    // restart: same writable layer
/// let id = c.keep();                             // leave it for another process:
/// let again = Container::open(store, &id)?;      // (there: list, open, stop, remove)
/// again.remove()?;
/// # let _ = image2; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Container {
    pub(crate) store: Store,
    pub(crate) id: String,
    pub(crate) image: Image,
    pub(crate) paths: ContainerPaths,
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) snapshot: Snapshot,
    pub(crate) record: Record,
    pub(crate) xattr: OverlayXattr,
    pub(crate) stdin: Option<Stdio>,
    pub(crate) stdout: Option<Stdio>,
    pub(crate) stderr: Option<Stdio>,
    /// The window size of the terminal a start makes (with `tty`).
    pub(crate) terminal_size: crate::launch::WindowSize,
    pub(crate) process: Option<Process>,
    pub(crate) cgroup: Option<crate::cgroup::Cgroup>,
    pub(crate) owner: Option<FileLock>,
    pub(crate) timeout: Option<timeout::RunTimeout>,
    pub(crate) remove_on_drop: bool,
    pub(crate) removed: bool,
    /// The published ports of the run this handle started, and what serves them.
    pub(crate) net: Option<published::Running>,
    /// The thread writing the logs of the process this handle started.
    pub(crate) log_pump: Option<crate::logs::pump::Pump>,
}

/// The backend a record names.
pub(crate) fn backend_named(name: &str) -> Box<dyn Backend> {
    match name {
        "copy" => Box::new(CopyBackend::new()),
        // As root `trusted.overlay.*`; not root, `userxattr` (mounted in the container's user
        // namespace).
        _ => Box::new(OverlayBackend::new()),
    }
}

impl Container {
    /// A builder for a container of `image`, like `std::process::Command::new`.
    pub fn builder(store: &Store, image: &Image) -> ContainerBuilder {
        ContainerBuilder::new(store, image)
    }

    /// Open a container of `store`, made by this or another process, as `docker stop x`
    /// finds it: `x` is its full id, its [name](ContainerBuilder::name), or a unique prefix of
    /// its id (at least 4 digits), in that order. A prefix several ids start with is
    /// [`ContainerError::Ambiguous`], listing them. A stale record (its owner died) is marked
    /// exited first.
    pub fn open(store: &Store, x: &str) -> Result<Container, ContainerError> {
        let id = list::find(store, x)?;
        let paths = ContainerPaths::new(store, &id);
        list::refresh(store, &paths)?;
        let record = Record::read(&paths)?;
        if record.state == State::Removing {
            return Err(ContainerError::NotFound(id));
        }
        let image = store.resolve(&record.image)?;
        let backend = backend_named(&record.backend);
        let snapshot = backend.open(&record.lowers, &paths.snapshot(), true)?;
        Ok(Container {
            store: store.clone(),
            id,
            image,
            paths,
            backend,
            snapshot,
            record,
            xattr: OverlayXattr::for_current_process(),
            stdin: Some(Stdio::null()),
            stdout: Some(Stdio::null()),
            stderr: Some(Stdio::null()),
            terminal_size: crate::launch::WindowSize::default(),
            process: None,
            cgroup: None,
            owner: None,
            timeout: None,
            remove_on_drop: false,
            net: None,
            removed: false,
            log_pump: None,
        })
    }

    /// Every container of `store`, like `ps -a`, oldest first. Stale records (owner died) are
    /// marked exited, and leftovers of interrupted creations and removals cleared.
    pub fn list(store: &Store) -> Result<Vec<ContainerSummary>, ContainerError> {
        list::list(store)
    }

    /// The container id (64 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The pidfd of the process this handle started, while this handle owns it: it becomes
    /// readable when the process ends (register it with an event loop, then call
    /// [`Container::status`] to collect the end).
    pub fn pidfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.process.as_ref().map(|p| p.pidfd())
    }

    /// The store it belongs to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Its name, if it was given one ([`ContainerBuilder::name`]).
    pub fn name(&self) -> Option<&str> {
        self.record.name.as_deref()
    }

    /// The host's end of the terminal of the process this handle started, once per start
    /// (made with [`ContainerBuilder::tty`]).
    pub fn take_terminal(&mut self) -> Option<crate::launch::Terminal> {
        self.process.as_mut()?.take_terminal()
    }

    /// Whether its process runs on a terminal ([`ContainerBuilder::tty`]).
    pub fn tty(&self) -> bool {
        self.record.run.tty
    }

    /// The window size of the terminal the next start makes (24 x 80 unless set).
    pub fn set_terminal_size(&mut self, rows: u16, cols: u16) {
        self.terminal_size = crate::launch::WindowSize { rows, cols };
    }

    /// The image it was made from.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// When it was created (RFC 3339).
    pub fn created(&self) -> &str {
        &self.record.created
    }

    /// The host pid of its PID 1, while running.
    pub fn pid(&self) -> Option<u32> {
        match &self.process {
            Some(p) => Some(p.pid()),
            None => self
                .record
                .pid
                .filter(|_| self.record.state == State::Running),
        }
    }

    /// The host pid of the process a further process is exec'd through, while running: PID 1,
    /// or with [`init`](crate::ContainerBuilder::init) the program (the init's child). The init
    /// is a non-dumpable copy of the host binary (so that the container cannot reach the host
    /// binary through `/proc/1/exe`); an unprivileged caller could not open its namespaces.
    /// Returned with the start time it must still have (checked again by the launcher once it
    /// holds a pidfd): a pid read from the record may since name another process.
    pub(crate) fn exec_target(&self) -> Result<(u32, Option<u64>), ContainerError> {
        let not_running = || ContainerError::State {
            id: self.id.clone(),
            state: "not running".into(),
            op: "exec",
        };
        let (pid, start) = match &self.process {
            // PID 1 is this handle's child, not reaped: its pid is its own. The program under
            // an init is the init's child: checked like a foreign one.
            Some(p) if p.program_pid() == p.pid() => return Ok((p.pid(), None)),
            Some(p) => (p.program_pid(), self.record.program_pid_start),
            None if self.record.state != State::Running => return Err(not_running()),
            None => match self.record.program_pid {
                Some(pid) => (pid, self.record.program_pid_start),
                None => match self.record.pid {
                    Some(pid) => (pid, self.record.pid_start),
                    None => return Err(not_running()),
                },
            },
        };
        if crate::record::alive(Some(pid), start) {
            Ok((pid, start))
        } else {
            Err(ContainerError::ProcessGone {
                id: self.id.clone(),
                pid,
            })
        }
    }

    /// The snapshot backend of its writable layer: `overlay` (kernel overlayfs, mounted in the
    /// container's mount namespace) or `copy` (a copy of the image, where this process cannot
    /// mount overlay).
    pub fn backend(&self) -> &'static str {
        self.snapshot.backend()
    }

    /// The host directory of its writable layer (overlay: the upper directory; copy: the
    /// whole copied tree).
    pub fn writable_layer(&self) -> &Path {
        self.snapshot.changes_dir()
    }

    /// Its current status (a process of this handle that ended is collected; a record
    /// changed by another process is read again).
    pub fn status(&mut self) -> Result<Status, ContainerError> {
        if self.removed {
            return Ok(Status::Removed);
        }
        if let Some(p) = self.process.as_mut() {
            let st = p.try_wait().map_err(|source| ContainerError::Process {
                id: self.id.clone(),
                op: "checking the process",
                source,
            })?;
            if let Some(st) = st {
                self.finish(st)?;
            }
            return Ok(Status::from_record(&self.record));
        }
        match list::refresh(&self.store, &self.paths) {
            Ok(()) => {}
            Err(ContainerError::Record(crate::record::RecordError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                self.removed = true;
                return Ok(Status::Removed);
            }
            Err(e) => return Err(e),
        }
        self.record = Record::read(&self.paths)?;
        let status = Status::from_record(&self.record);
        if status == Status::Running
            && !crate::record::alive(self.record.pid, self.record.pid_start)
        {
            // Ended; its owner (another live process) has not collected it yet.
            return Ok(Status::Exited {
                code: None,
                signal: None,
            });
        }
        Ok(status)
    }

    /// A read-only view of the container's files (image layers plus writable layer), without
    /// mounting: for reading a stopped container's files.
    pub fn view(&self) -> UnionView {
        if self.snapshot.backend() == "copy" {
            UnionView::new(
                vec![self.snapshot.changes_dir().to_owned()],
                None,
                self.xattr,
            )
        } else {
            UnionView::new(
                self.snapshot.lowers.clone(),
                Some(self.snapshot.changes_dir().to_owned()),
                self.xattr,
            )
        }
    }

    /// The contents of the file at `path` in the container (read through [`Container::view`]).
    pub fn read_file(&self, path: impl AsRef<Path>) -> Result<Vec<u8>, ContainerError> {
        self.check_layer_in_reach("read its files from the host")?;
        let path = path.as_ref();
        self.view().read(path).map_err(|source| ContainerError::Io {
            op: "reading in the container",
            path: path.to_owned(),
            source,
        })
    }

    /// Leave the container as it is (record, writable layer, a running process) for
    /// debugging or for another process to open; returns its id. Its published ports stay
    /// served by this process while the container runs.
    pub fn keep(mut self) -> String {
        self.remove_on_drop = false;
        if let Some(p) = self.process.take() {
            // Leave it running: nobody reaps it now but the kernel at this process's exit
            // (PR_SET_PDEATHSIG kills it then).
            std::mem::forget(p);
        }
        if let Some(cg) = self.cgroup.take() {
            std::mem::forget(cg);
        }
        // Its published ports stay served (by this process) until its process ends.
        if let Some(net) = self.net.take() {
            net.leave();
        }
        // Released, not forgotten: a running record nobody owns stays `running` while its
        // process lives, and once it ends any handle (of this process too) marks it exited.
        drop(self.owner.take());
        std::mem::take(&mut self.id)
    }

    /// Kill its processes and remove it, reporting what failed (what `Drop` does silently).
    pub fn close(mut self) -> Result<(), ContainerError> {
        self.remove_on_drop = false;
        self.remove_inner()
    }

    /// Where the rootfs is mounted (inside the container's mount namespace).
    /// [`ContainerError::LayerOutOfReach`] when the writable layer is in the container's
    /// own mount namespace (an `ephemeral` container without root).
    pub(crate) fn check_layer_in_reach(&self, op: &'static str) -> Result<(), ContainerError> {
        if self.record.storage == crate::record::LayerStorage::TmpfsInNamespace {
            return Err(ContainerError::LayerOutOfReach {
                id: self.id.clone(),
                op,
            });
        }
        Ok(())
    }

    pub(crate) fn rootfs(&self) -> PathBuf {
        self.paths.rootfs()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.removed || self.id.is_empty() {
            return;
        }
        if self.remove_on_drop {
            if std::thread::panicking() {
                self.print_last_logs();
            }
            if let Err(e) = self.remove_inner() {
                tracing::warn!("removing container {} on drop: {e}", self.id);
            }
        } else if self.process.is_some() {
            let _ = self.kill();
            let _ = self.wait_inner(false);
        }
    }
}
