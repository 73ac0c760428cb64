//! [`CgroupError`]: what went wrong with a cgroup.

use std::io;
use std::path::PathBuf;

use super::Controller;

/// What went wrong with a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup filesystem is mounted (nothing in `/proc/self/mountinfo`).
    #[error(
        "no cgroup filesystem is mounted (none in /proc/self/mountinfo): resource limits are not \
         available; run without limits"
    )]
    NotMounted,
    /// The kernel refused for lack of permission.
    #[error(
        "cannot {op} {path}: {source}: resource limits need root or a delegated cgroup (systemd \
         `Delegate=yes`, passed as Parent::at); run without limits to go on without them"
    )]
    PermissionDenied {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A limit was asked for whose controller this host does not offer.
    #[error(
        "the {controller} controller is not available (neither a v1 hierarchy nor the v2 \
         hierarchy's cgroup.controllers has it): run without the {controller} limit"
    )]
    ControllerUnavailable {
        /// The missing controller.
        controller: Controller,
    },
    /// The kernel refused to enable a controller for the molde parent.
    #[error(
        "cannot enable the {controller} controller in {path}: {source} (EBUSY: that cgroup holds \
         processes of its own, which cgroup v2 forbids for a parent; choose a parent without)"
    )]
    EnableController {
        /// The controller.
        controller: Controller,
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A cgroup of this name already exists.
    #[error("cgroup {path} already exists")]
    Exists {
        /// The directory.
        path: PathBuf,
    },
    /// The name is not usable as a cgroup directory.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A limit is out of range.
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// A cgroupfs file held something unexpected.
    #[error("unexpected content in {path}: {text:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        text: String,
    },
    /// Processes were still in the cgroup after killing them.
    #[error("cgroup {path} still holds processes {pids:?} after SIGKILL")]
    NotEmpty {
        /// A directory of the cgroup.
        path: PathBuf,
        /// The pids left.
        pids: Vec<u32>,
    },
    /// A process could not be moved into the cgroup.
    #[error("cannot move process {pid} into {path}: {source}")]
    AddPid {
        /// The process.
        pid: u32,
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// The error (ESRCH: no such process).
        #[source]
        source: io::Error,
    },
    /// Another I/O error.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}
