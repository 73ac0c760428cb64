//! [`ContainerError`]: every way a container operation fails, gathered from the crate's parts.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use molde_image::StoreError;
use molde_layerfs::snapshot::SnapshotError;

use crate::config::ConfigError;
use crate::launch::LaunchError;
use crate::record::RecordError;
use crate::volume::VolumeError;

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The image's config and the builder's settings do not give a runnable process (an
    /// unknown user, no command...). Nothing was started.
    #[error("container config: {0}")]
    Config(#[from] ConfigError),
    /// The image store failed (unpacking, holding, committing).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writable layer could not be prepared, diffed or removed.
    #[error("writable layer: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The container's record could not be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A named volume failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// A named volume is kept because the containers could not be listed, so whether any
    /// mounts it is unknown.
    #[error("volume {name:?}: listing the containers that may mount it: {source}")]
    VolumeUsers {
        /// The volume.
        name: String,
        /// Why listing failed.
        #[source]
        source: Box<ContainerError>,
    },
    /// A network, an address or a published port failed.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// The launcher could not set the container up.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The container's cgroup could not be made or removed.
    #[error("cgroup of container {id}: {source}")]
    Cgroup {
        /// The container.
        id: String,
        /// The cause.
        #[source]
        source: crate::cgroup::CgroupError,
    },
    /// Waiting for, signalling or reading from the container's process failed.
    #[error("container {id}: {op}: {source}")]
    Process {
        /// The container.
        id: String,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file operation on the container's files failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No container matches the id or prefix.
    #[error("no container {0:?} in the store")]
    NotFound(String),
    /// The name given to a new container is not a valid name.
    #[error(transparent)]
    Name(#[from] crate::record::names::NameError),
    /// The name given to a new container is already taken (Docker: "Conflict. The container
    /// name is already in use").
    #[error(
        "conflict: the container name {name:?} is already in use by container {holder}; \
         remove that container or choose another name"
    )]
    NameInUse {
        /// The name.
        name: String,
        /// The id of the container that holds it.
        holder: String,
    },
    /// A prefix matches several containers.
    #[error(
        "container id prefix {prefix:?} is ambiguous: it matches {candidates:?}; give more \
         digits of the id, or the container's name"
    )]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// The ids it matches.
        candidates: Vec<String>,
    },
    /// The operation needs a state the container is not in.
    #[error("container {id} is {state}: cannot {op}")]
    State {
        /// The container.
        id: String,
        /// Its state.
        state: String,
        /// What was asked.
        op: &'static str,
    },
    /// The process the record names (PID 1, or the program under an init) is gone: the pid is
    /// free or now names another process (the record is stale, or its owner has not collected
    /// the exit yet).
    #[error("container {id}: its process {pid} is gone (the pid is free or names another process)")]
    ProcessGone {
        /// The container.
        id: String,
        /// The pid the record names.
        pid: u32,
    },
    /// The run lasted longer than its timeout and was killed.
    #[error("container {id} ran longer than its timeout of {timeout:?} and was killed")]
    TimedOut {
        /// The container.
        id: String,
        /// The timeout.
        timeout: Duration,
    },
    /// A path given for copy in or out is not usable.
    #[error("container path {path}: {reason}")]
    BadPath {
        /// The path in the container.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The container cannot be written as an OCI runtime bundle: a part of its configuration
    /// has no equivalent in `config.json`.
    #[error("container {id}: its {what} cannot be written to an OCI runtime bundle: {detail}")]
    Export {
        /// The container.
        id: String,
        /// Which part (`networks`, `argv`, `env` ...).
        what: &'static str,
        /// What it held, and what to do.
        detail: String,
    },
    /// Without root, an `ephemeral` container's writable layer is a tmpfs inside the
    /// container's own mount namespace ([`LayerStorage::TmpfsInNamespace`](crate::record::LayerStorage)):
    /// what reads or writes it from the host cannot.
    #[error(
        "container {id}: cannot {op}: without root, an ephemeral container's writable layer is \
         a tmpfs inside the container's own mount namespace, out of the host's reach; create \
         the container without ephemeral(true) to do this"
    )]
    LayerOutOfReach {
        /// The container.
        id: String,
        /// What was asked.
        op: &'static str,
    },
    /// Several cleanup steps failed (from `close` or `remove`).
    #[error("removing container {id}: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Cleanup {
        /// The container.
        id: String,
        /// What failed.
        errors: Vec<ContainerError>,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}
