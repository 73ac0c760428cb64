//! The data of a `RUN` step: its command, mounts and network; and the health check a
//! `HEALTHCHECK` stores.

use std::path::PathBuf;

use super::copy_from::CopyFrom;

/// How a `RUN` step gives its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCommand {
    /// Shell form: run through the image's `/bin/sh -c`.
    Shell(String),
    /// Exec form: an argv, run as it is (no shell).
    Exec(Vec<String>),
}

/// The network of a `RUN` (`RUN --network=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNetwork {
    /// The build's network (see [`Build::network`](super::Build::network)).
    Default,
    /// No network: only loopback.
    None,
    /// The host's network.
    Host,
}

/// How several builds share one cache mount (`sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Used by several `RUN`s at once.
    #[default]
    Shared,
    /// One `RUN` at a time; the others wait.
    Locked,
    /// Each concurrent `RUN` gets its own (empty) directory when the cache is in use.
    Private,
}

/// A mount of a `RUN` (`RUN --mount=...`): present while the command runs, never in the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    /// A cache directory kept in the store (`<store>/molde/build-mounts/<id>`), shared between
    /// builds: `type=cache`.
    Cache {
        /// Where it is mounted.
        target: String,
        /// Its id (default: the target).
        id: String,
        /// How concurrent uses share it.
        sharing: Sharing,
        /// Mounted read-only.
        readonly: bool,
        /// The mode, owner of the directory when it is made.
        mode: u32,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
    },
    /// A host directory or file, or a path of an earlier stage or image: `type=bind`.
    Bind {
        /// Where it is mounted.
        target: String,
        /// The source: a host path, or a path in `from`.
        source: PathBuf,
        /// A stage or an image to take `source` from.
        from: Option<CopyFrom>,
        /// Writable (the writes are thrown away).
        rw: bool,
        /// The build context a host `source` is in: descriptions name the source relative
        /// to it, never as a host path.
        context: Option<PathBuf>,
    },
    /// An empty tmpfs: `type=tmpfs`.
    Tmpfs {
        /// Where it is mounted.
        target: String,
        /// Its size limit.
        size: Option<u64>,
    },
    /// A secret file the caller gives ([`Build::secret`](super::Build::secret)): `type=secret`.
    /// Its content is never in a layer, the history or a cache key.
    Secret {
        /// The secret's id.
        id: String,
        /// Where it is mounted (default `/run/secrets/<id>`).
        target: String,
        /// Fail when the caller gave no such secret (else the mount is skipped).
        required: bool,
    },
}

impl RunMount {
    /// The mount as `--mount=` writes it (for history and cache keys; no secret content).
    pub fn describe(&self) -> String {
        match self {
            RunMount::Cache {
                target,
                id,
                sharing,
                readonly,
                mode,
                uid,
                gid,
            } => format!(
                "type=cache,id={id},target={target},sharing={sharing:?},ro={readonly},mode={mode:o},uid={uid},gid={gid}"
            ),
            RunMount::Bind {
                target,
                source,
                from,
                rw,
                context,
            } => {
                let from = match from {
                    None => String::new(),
                    Some(CopyFrom::Stage(s)) => format!(",from={s}"),
                    Some(CopyFrom::Image(i)) => format!(",from={}", i.id()),
                };
                let shown = match context.as_deref().map(|c| source.strip_prefix(c)) {
                    Some(Ok(r)) if r.as_os_str().is_empty() => ".".to_owned(),
                    Some(Ok(r)) => r.display().to_string(),
                    _ if from.is_empty() => source
                        .file_name()
                        .map_or_else(|| ".".into(), |n| n.to_string_lossy().into_owned()),
                    _ => source.display().to_string(),
                };
                let rw = if *rw { ",rw" } else { "" };
                format!("type=bind,source={shown}{from},target={target}{rw}")
            }
            RunMount::Tmpfs { target, size } => match size {
                Some(n) => format!("type=tmpfs,target={target},size={n}"),
                None => format!("type=tmpfs,target={target}"),
            },
            RunMount::Secret {
                id,
                target,
                required,
            } => {
                format!("type=secret,id={id},target={target},required={required}")
            }
        }
    }
}

/// A `RUN`: its command, mounts, network and Landlock ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub(crate) command: RunCommand,
    pub(crate) mounts: Vec<RunMount>,
    pub(crate) network: RunNetwork,
    pub(crate) shell: Option<Vec<String>>,
    pub(crate) landlock: Option<crate::landlock::Landlock>,
}

impl Run {
    /// `RUN` in shell form (`/bin/sh -c command`, or the stage's `SHELL`).
    pub fn shell(command: impl Into<String>) -> Run {
        Run::of(RunCommand::Shell(command.into()))
    }
    /// `RUN` in exec form.
    pub fn exec<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Run {
        Run::of(RunCommand::Exec(argv.into_iter().map(Into::into).collect()))
    }
    /// A `RUN` of `command`.
    pub fn of(command: RunCommand) -> Run {
        Run {
            command,
            mounts: Vec::new(),
            network: RunNetwork::Default,
            shell: None,
            landlock: None,
        }
    }
    /// Add a mount.
    pub fn mount(mut self, mount: RunMount) -> Run {
        self.mounts.push(mount);
        self
    }
    /// Its network.
    pub fn network(mut self, network: RunNetwork) -> Run {
        self.network = network;
        self
    }
    /// Confine the step's processes to these paths of its filesystem with Landlock, as
    /// [`ContainerBuilder::landlock`](crate::ContainerBuilder::landlock) does (a build
    /// fetching and running untrusted code). The ruleset is part of the step's cache key.
    pub fn landlock(mut self, rules: crate::landlock::Landlock) -> Run {
        self.landlock = Some(rules);
        self
    }
    /// The command.
    pub fn command(&self) -> &RunCommand {
        &self.command
    }
    /// The mounts.
    pub fn mounts(&self) -> &[RunMount] {
        &self.mounts
    }
}

/// A health check (`HEALTHCHECK`), stored in the image's config as Docker stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    /// The test: `["NONE"]`, `["CMD", argv...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// Time between checks, in nanoseconds (0: the default).
    pub interval: u64,
    /// Time a check may take, in nanoseconds.
    pub timeout: u64,
    /// Grace period after start, in nanoseconds.
    pub start_period: u64,
    /// Time between checks during the start period, in nanoseconds.
    pub start_interval: u64,
    /// Failures in a row before unhealthy (0: the default).
    pub retries: u64,
}
