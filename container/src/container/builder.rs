//! [`ContainerBuilder`]: a container made from an image, configured the way
//! `std::process::Command` configures a process, plus the container's own settings.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use molde_image::{Image, Store};

use crate::config::EnvOp;
use crate::launch::{Capability, Network};
use crate::record::{LayerStorage, MountRecord};

/// Where a standard stream of the container's process goes, like [`std::process::Stdio`].
#[derive(Debug)]
pub struct Stdio(pub(crate) StdioKind);

#[derive(Debug)]
pub(crate) enum StdioKind {
    Inherit,
    Null,
    Piped,
    Fd(OwnedFd),
}

impl Stdio {
    /// A pipe to this process (see [`Child`](crate::Child)'s `stdin`, `stdout`, `stderr`).
    pub fn piped() -> Stdio {
        Stdio(StdioKind::Piped)
    }
    /// This process's own stream.
    pub fn inherit() -> Stdio {
        Stdio(StdioKind::Inherit)
    }
    /// `/dev/null`.
    pub fn null() -> Stdio {
        Stdio(StdioKind::Null)
    }

    /// The launcher's form of this stream, for one start (a file is duplicated, so the stream
    /// serves again at a restart).
    pub(crate) fn to_launch(&self) -> io::Result<crate::launch::Stdio> {
        Ok(match &self.0 {
            StdioKind::Inherit => crate::launch::Stdio::Inherit,
            StdioKind::Null => crate::launch::Stdio::Null,
            StdioKind::Piped => crate::launch::Stdio::Piped,
            StdioKind::Fd(fd) => crate::launch::Stdio::Fd(fd.try_clone()?),
        })
    }
}

impl From<File> for Stdio {
    fn from(f: File) -> Stdio {
        Stdio(StdioKind::Fd(f.into()))
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Stdio {
        Stdio(StdioKind::Fd(fd))
    }
}

/// Builds a [`Container`](crate::Container) from an [`Image`]. The image's config (env, cmd, entrypoint,
/// workdir, user, stop signal) applies unless overridden here.
///
/// ```no_run
/// use molde_container::{Container, Stdio};
/// # fn f(store: &molde_image::Store, image: &molde_image::Image) -> Result<(), molde_container::ContainerError> {
/// let out = Container::builder(store, image)
///     .command("/bin/sh")
///     .args(["-c", "echo hello"])
///     .env("GREETING", "hi")
///     .memory(64 << 20)
///     .output()?;
/// assert_eq!(out.stdout, b"hello\n");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ContainerBuilder {
    pub(crate) store: Store,
    pub(crate) image: Image,
    pub(crate) command: Option<OsString>,
    pub(crate) entrypoint: Option<Vec<OsString>>,
    pub(crate) args: Option<Vec<OsString>>,
    pub(crate) env: Vec<EnvOp>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) stdin: Option<Stdio>,
    pub(crate) stdout: Option<Stdio>,
    pub(crate) stderr: Option<Stdio>,
    pub(crate) hostname: Option<String>,
    pub(crate) mounts: Vec<MountRecord>,
    pub(crate) read_only_rootfs: bool,
    pub(crate) network: Network,
    pub(crate) memory: Option<u64>,
    pub(crate) pids: Option<u64>,
    pub(crate) cpu: Option<(u64, u64)>,
    pub(crate) rlimits: Vec<(u32, u64, u64)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) init: bool,
    pub(crate) storage: LayerStorage,
    pub(crate) stop_signal: Option<i32>,
    /// Mount a deep image's flattened stack (made on first use); a build's RUN steps, each on
    /// a new intermediate image, do not.
    pub(crate) flatten: bool,
    /// Networks joined and ports published.
    pub(crate) net: Requested,
    pub(crate) ambient_capabilities: Vec<Capability>,
    pub(crate) no_new_privileges: bool,
    pub(crate) seccomp: crate::seccomp::Seccomp,
    pub(crate) landlock: Option<crate::landlock::Landlock>,
    pub(crate) logs: Option<crate::logs::LogConfig>,
    pub(crate) name: Option<String>,
    pub(crate) tty: bool,
    pub(crate) terminal_size: crate::launch::WindowSize,
}

/// The networks and ports the builder asked for (`container::networking` acts on them).
#[derive(Debug, Default)]
pub(crate) struct Requested {
    pub(crate) joins: Vec<crate::network::Network>,
    pub(crate) aliases: Vec<String>,
    pub(crate) publish: Vec<crate::network::PublishedPort>,
    pub(crate) publish_all: bool,
}

impl ContainerBuilder {
    /// A builder for a container of `image` (which must be in `store`).
    pub fn new(store: &Store, image: &Image) -> ContainerBuilder {
        ContainerBuilder {
            store: store.clone(),
            image: image.clone(),
            command: None,
            entrypoint: None,
            args: None,
            env: Vec::new(),
            cwd: None,
            user: None,
            group: None,
            stdin: None,
            stdout: None,
            stderr: None,
            hostname: None,
            mounts: Vec::new(),
            read_only_rootfs: false,
            network: Network::Isolated,
            memory: None,
            pids: None,
            cpu: None,
            rlimits: Vec::new(),
            timeout: None,
            init: false,
            net: Default::default(),
            storage: LayerStorage::Disk,
            stop_signal: None,
            flatten: true,
            ambient_capabilities: Vec::new(),
            no_new_privileges: true,
            seccomp: crate::seccomp::Seccomp::Default,
            landlock: None,
            logs: None,
            name: None,
            tty: false,
            terminal_size: crate::launch::WindowSize::default(),
        }
    }

    /// Run `program` (a path in the container, or a name searched in its `PATH`) instead of the
    /// image's entrypoint and cmd; [`ContainerBuilder::arg`]s follow it.
    pub fn command(mut self, program: impl AsRef<OsStr>) -> Self {
        self.command = Some(program.as_ref().to_owned());
        self
    }
    /// Replace the image's entrypoint (and, as Docker does, its cmd).
    pub fn entrypoint<S: AsRef<OsStr>>(mut self, ep: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = Some(ep.into_iter().map(|s| s.as_ref().to_owned()).collect());
        self
    }
    /// Add an argument. Arguments replace the image's cmd.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args
            .get_or_insert_with(Vec::new)
            .push(arg.as_ref().to_owned());
        self
    }
    /// Add arguments. Arguments replace the image's cmd.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        let v = self.args.get_or_insert_with(Vec::new);
        v.extend(args.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }
    /// Set an environment variable (over the image's).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push(EnvOp::Set(
            key.as_ref().to_owned(),
            value.as_ref().to_owned(),
        ));
        self
    }
    /// Set several environment variables.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }
    /// Remove an environment variable (the image's too).
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push(EnvOp::Remove(key.as_ref().to_owned()));
        self
    }
    /// Start from an empty environment (dropping the image's). `PATH` and `HOME` still get
    /// their defaults when not set afterwards.
    pub fn env_clear(mut self) -> Self {
        self.env.push(EnvOp::Clear);
        self
    }
    /// The working directory in the container (absolute).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }
    /// The user: a name (looked up in the image's `/etc/passwd`), a uid, or `user:group`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    /// Capabilities a non-root user keeps, raised as ambient (as `docker run --cap-add` with
    /// `--user`, then `capsh --addamb`): without them a process of any uid but 0 holds no
    /// capability at all, as with Docker, runc and crun. Each must be one of the container's
    /// capabilities ([`crate::launch::default_capabilities`]); starting fails otherwise.
    ///
    /// ```no_run
    /// use molde_container::{Container, launch::Capability};
    /// # fn f(store: &molde_image::Store, image: &molde_image::Image) -> Result<(), molde_container::ContainerError> {
    /// // A web server as uid 1000 that may bind port 80.
    /// let c = Container::builder(store, image)
    ///     .user("1000")
    ///     .ambient_capabilities([Capability::CAP_NET_BIND_SERVICE])
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn ambient_capabilities(mut self, caps: impl IntoIterator<Item = Capability>) -> Self {
        self.ambient_capabilities.extend(caps);
        self
    }
    /// Set `PR_SET_NO_NEW_PRIVS` (default: on): no process of the container gains privileges
    /// through a setuid binary or file capabilities. Turn it off (Docker's default) where a
    /// non-root user must become root through `su` or `sudo`.
    pub fn no_new_privileges(mut self, yes: bool) -> Self {
        self.no_new_privileges = yes;
        self
    }
    /// The system call filter of the container's processes, exec'd ones too (default:
    /// [`Seccomp::Default`](crate::Seccomp::Default), moby's profile; a profile of one's own
    /// from [`Seccomp::from_json`](crate::Seccomp::from_json); or
    /// [`Seccomp::Unconfined`](crate::Seccomp::Unconfined)).
    pub fn seccomp(mut self, seccomp: crate::seccomp::Seccomp) -> Self {
        self.seccomp = seccomp;
        self
    }
    /// Restrict what the container's processes (exec'd ones too) may reach of its filesystem
    /// to the paths of a Landlock ruleset (off by default). The launch fails at
    /// [`Stage::Landlock`](crate::launch::Stage::Landlock) where the kernel lacks Landlock.
    pub fn landlock(mut self, landlock: crate::landlock::Landlock) -> Self {
        self.landlock = Some(landlock);
        self
    }
    /// The primary group: a name (looked up in the image's `/etc/group`) or a gid.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
    /// Standard input (default: inherit; null for [`ContainerBuilder::output`]).
    pub fn stdin(mut self, s: impl Into<Stdio>) -> Self {
        self.stdin = Some(s.into());
        self
    }
    /// Standard output (default: inherit; piped for [`ContainerBuilder::output`]).
    pub fn stdout(mut self, s: impl Into<Stdio>) -> Self {
        self.stdout = Some(s.into());
        self
    }
    /// Standard error (default: inherit; piped for [`ContainerBuilder::output`]).
    pub fn stderr(mut self, s: impl Into<Stdio>) -> Self {
        self.stderr = Some(s.into());
        self
    }
    /// Keep stdout and stderr in the store (bounded and rotated as `config` says), to read back
    /// with [`Container::logs`](crate::Container::logs) or follow with [`Container::follow_logs`](crate::Container::follow_logs); this replaces
    /// [`ContainerBuilder::stdout`] and [`ContainerBuilder::stderr`]. A container dropped while
    /// its thread panics prints its last log lines.
    pub fn logs(mut self, config: crate::logs::LogConfig) -> Self {
        self.logs = Some(config);
        self
    }
    /// Name the container (`docker run --name`): unique in the store, kept until the
    /// container is removed, accepted by [`Container::open`](crate::Container::open). Docker's rule applies
    /// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`); a name another container holds fails the create with
    /// [`ContainerError::NameInUse`](crate::ContainerError::NameInUse).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Run the process on a terminal of its own (Docker's `-it`): a pseudo-terminal of the
    /// container's own devpts is its stdin, stdout and stderr (the `stdin`, `stdout` and
    /// `stderr` settings are then unused) and its controlling terminal, in a session of its
    /// own, so a shell has job control; `/dev/console` is bound to it. The host's end is
    /// [`Container::take_terminal`](crate::Container::take_terminal) (or [`Child::terminal`](super::Child::terminal)): read
    /// what the process writes, write its input, [`resize`](crate::launch::Terminal::resize)
    /// it; [`attach`](crate::attach) joins it to this program's own terminal. Kept in the
    /// record: every start gets a new terminal.
    pub fn tty(mut self, yes: bool) -> Self {
        self.tty = yes;
        self
    }
    /// The terminal's window size at start (default 24 rows, 80 columns), with
    /// [`ContainerBuilder::tty`].
    pub fn terminal_size(mut self, rows: u16, cols: u16) -> Self {
        self.terminal_size = crate::launch::WindowSize { rows, cols };
        self
    }
    /// The container's hostname.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.hostname = Some(name.into());
        self
    }
    /// Bind-mount a host path read-write at `target` in the container.
    pub fn mount_bind(mut self, source: impl AsRef<Path>, target: impl AsRef<Path>) -> Self {
        self.mounts.push(MountRecord::Bind {
            source: source.as_ref().to_owned(),
            target: target.as_ref().to_owned(),
            read_only: false,
        });
        self
    }
    /// Bind-mount a host path read-only at `target` in the container.
    pub fn mount_bind_ro(mut self, source: impl AsRef<Path>, target: impl AsRef<Path>) -> Self {
        self.mounts.push(MountRecord::Bind {
            source: source.as_ref().to_owned(),
            target: target.as_ref().to_owned(),
            read_only: true,
        });
        self
    }
    /// Mount a fresh tmpfs (mode 1777) at `target`, of at most `size_bytes` if given.
    pub fn mount_tmpfs(mut self, target: impl AsRef<Path>, size_bytes: Option<u64>) -> Self {
        self.mounts.push(MountRecord::Tmpfs {
            target: target.as_ref().to_owned(),
            size_bytes,
            mode: 0o1777,
        });
        self
    }
    /// Mount the store's named volume `name` (created if missing) at `target`.
    pub fn volume(mut self, name: impl Into<String>, target: impl AsRef<Path>) -> Self {
        self.mounts.push(MountRecord::Volume {
            name: name.into(),
            target: target.as_ref().to_owned(),
            read_only: false,
        });
        self
    }
    /// Make the root filesystem read-only.
    pub fn read_only_rootfs(mut self, yes: bool) -> Self {
        self.read_only_rootfs = yes;
        self
    }
    /// Join the bridge network `network` (root only): the container gets an address on it,
    /// a veth on its bridge, and finds the network's other containers by name. Call again to
    /// join several; the first gives the default route.
    pub fn join(mut self, network: &crate::network::Network) -> Self {
        self.net.joins.push(network.clone());
        self
    }

    /// A further name the container answers to on its networks (its hostname and short id
    /// always do).
    pub fn alias(mut self, name: impl Into<String>) -> Self {
        self.net.aliases.push(name.into());
        self
    }

    /// Publish TCP `port` of the container on an ephemeral port of the host's 127.0.0.1
    /// ([`Container::host_port`](crate::Container::host_port) tells which). As root a container that joins no network
    /// joins the default one; rootless, pasta forwards it.
    pub fn publish(self, port: u16) -> Self {
        self.publish_port(crate::network::PublishedPort::local(
            port,
            crate::network::Protocol::Tcp,
        ))
    }

    /// Publish UDP `port` of the container on an ephemeral port of the host's 127.0.0.1.
    pub fn publish_udp(self, port: u16) -> Self {
        self.publish_port(crate::network::PublishedPort::local(
            port,
            crate::network::Protocol::Udp,
        ))
    }

    /// Publish a port as `port` says (a given host address and port, or port 0 for an
    /// ephemeral one).
    pub fn publish_port(mut self, port: crate::network::PublishedPort) -> Self {
        self.net.publish.push(port);
        self
    }

    /// Publish every port the image EXPOSEs, each on an ephemeral port of 127.0.0.1.
    pub fn publish_all(mut self) -> Self {
        self.net.publish_all = true;
        self
    }

    /// The network (default: [`Network::Isolated`], its own namespace with loopback only).
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }
    /// Limit memory (cgroup) to `bytes`.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }
    /// Limit the number of processes (cgroup).
    pub fn pids(mut self, max: u64) -> Self {
        self.pids = Some(max);
        self
    }
    /// Limit CPU time (cgroup) to `quota_us` per `period_us`.
    pub fn cpu(mut self, quota_us: u64, period_us: u64) -> Self {
        self.cpu = Some((quota_us, period_us));
        self
    }
    /// Set a resource limit (`setrlimit`; `u64::MAX` is unlimited). A hard limit above the
    /// current one is lowered to it when this process may not raise it (no
    /// `CAP_SYS_RESOURCE` in its bounding set), with a warning.
    pub fn rlimit(mut self, resource: crate::rlimit::Resource, soft: u64, hard: u64) -> Self {
        self.rlimits
            .push((resource as libc::__rlimit_resource_t, soft, hard));
        self
    }
    /// Kill the container's process when a run lasts longer than this (wall clock); waiting
    /// then fails with [`ContainerError::TimedOut`](crate::ContainerError::TimedOut).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// Run a minimal init as PID 1 that reaps zombies and forwards signals.
    pub fn init(mut self, yes: bool) -> Self {
        self.init = yes;
        self
    }
    /// Keep the writable layer on a tmpfs instead of on disk: fast, lost at removal.
    ///
    /// As root the tmpfs is mounted on the host, so the layer can be committed, diffed and
    /// copied from. Without root it is mounted inside the container's own user and mount
    /// namespaces at each start (the host would refuse): the layer lasts one run, and what
    /// reads or writes it from the host (`commit`, `diff`, `copy_in`, `copy_out`,
    /// `read_file`, `export_bundle`) fails with
    /// [`ContainerError::LayerOutOfReach`](crate::ContainerError::LayerOutOfReach); it needs
    /// the overlay backend (overlay mountable in a user namespace).
    pub fn ephemeral(mut self, yes: bool) -> Self {
        self.storage = if yes {
            LayerStorage::Tmpfs
        } else {
            LayerStorage::Disk
        };
        self
    }
    /// The signal [`Container::stop`](crate::Container::stop) sends first (default: the image's, else SIGTERM).
    pub fn stop_signal(mut self, sig: nix::sys::signal::Signal) -> Self {
        self.stop_signal = Some(sig as i32);
        self
    }
}
