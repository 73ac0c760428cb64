//! How a container runs, as its record keeps it for restarts.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A mount inside the container, as the builder gave it (persisted for restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountRecord {
    /// A bind mount of a host path.
    Bind {
        /// The host path.
        source: PathBuf,
        /// The target in the container.
        target: PathBuf,
        /// Read-only.
        read_only: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// The target in the container.
        target: PathBuf,
        /// Size limit in bytes.
        size_bytes: Option<u64>,
        /// Mode of its root.
        mode: u32,
    },
    /// A named volume of the store.
    Volume {
        /// The volume's name.
        name: String,
        /// The target in the container.
        target: PathBuf,
        /// Read-only.
        read_only: bool,
    },
}

/// Everything needed to start the container's process again (restart, also from another
/// process). Standard streams are not persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The program and its arguments (`argv`).
    pub argv: Vec<OsString>,
    /// The environment.
    pub env: Vec<(OsString, OsString)>,
    /// The working directory in the container.
    pub cwd: PathBuf,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Hostname.
    pub hostname: Option<String>,
    /// Further mounts.
    pub mounts: Vec<MountRecord>,
    /// Read-only root filesystem.
    pub read_only_rootfs: bool,
    /// Share the host's network.
    pub host_network: bool,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Pids limit.
    pub pids: Option<u64>,
    /// CPU quota and period in microseconds.
    pub cpu_quota: Option<(u64, u64)>,
    /// Resource limits: (resource, soft, hard).
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Run a minimal init as PID 1.
    pub init: bool,
    /// The signal `stop` sends first.
    pub stop_signal: i32,
    /// The wall-clock timeout of a run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Bridge networks, addresses and published ports.
    #[serde(default, skip_serializing_if = "crate::network::Attachments::is_empty")]
    pub network: crate::network::Attachments,
    /// Keep stdout and stderr in the container's log files (see [`crate::logs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<crate::logs::LogConfig>,
    /// Capabilities raised as ambient, asked for by name (a non-root user holds no others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ambient_capabilities: Vec<crate::launch::Capability>,
    /// Set `PR_SET_NO_NEW_PRIVS` (absent in older records: set).
    #[serde(default = "yes")]
    pub no_new_privileges: bool,
    /// The system call filter (absent in older records: the default profile).
    #[serde(default, skip_serializing_if = "is_default_seccomp")]
    pub seccomp: crate::seccomp::Seccomp,
    /// The Landlock ruleset, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock: Option<crate::landlock::Landlock>,
    /// Its process runs on a terminal of its own (`docker run -t`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
}

fn is_default_seccomp(s: &crate::seccomp::Seccomp) -> bool {
    *s == crate::seccomp::Seccomp::Default
}

fn yes() -> bool {
    true
}
