//! [`NetworkError`]: what can go wrong with networks, addresses and published ports.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A failure of a network operation. Nothing is left half made when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The name cannot name a network.
    #[error(
        "invalid network name {name:?}: {reason} (use 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit)"
    )]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The subnet is not a usable IPv4 network.
    #[error("invalid subnet {subnet:?}: {reason}")]
    InvalidSubnet {
        /// The subnet given.
        subnet: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The subnet overlaps a network the host routes or another molde network.
    #[error("subnet {subnet} overlaps {with}: choose another subnet")]
    SubnetOverlaps {
        /// The subnet asked for.
        subnet: String,
        /// What it overlaps (a route of the host, or a network's name).
        with: String,
    },
    /// No private subnet is free for a new network.
    #[error("no free private subnet for a new network: give one with NetworkOptions::subnet")]
    NoFreeSubnet,
    /// A network of that name exists.
    #[error("network {name:?} exists already")]
    Exists {
        /// Its name.
        name: String,
    },
    /// No network of that name.
    #[error("no network named {name:?}")]
    NotFound {
        /// The name looked for.
        name: String,
    },
    /// The network has containers: remove them first.
    #[error("network {name:?} is in use by containers {containers:?}: remove them first")]
    InUse {
        /// The network.
        name: String,
        /// The containers on it (ids).
        containers: Vec<String>,
    },
    /// Every address of the network's subnet is taken.
    #[error(
        "network {name:?} has no free address left in {subnet}: remove containers or use a larger subnet"
    )]
    PoolExhausted {
        /// The network.
        name: String,
        /// Its subnet.
        subnet: String,
    },
    /// A host port to publish on could not be bound.
    #[error("cannot publish on {addr}: {source} (is another program using that port?)")]
    PortUnavailable {
        /// The host address and port.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("{op} {name}: {source}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// The link or network concerned.
        name: String,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the network's state could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A network's record is not valid.
    #[error("network record {} is not valid: {reason}", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Published ports and bridge networks need the container's own network namespace.
    #[error(
        "a container on the host's network cannot join networks or publish ports: its ports are the host's"
    )]
    HostNetwork,
    /// A bridge in the host's network namespace needs `CAP_NET_ADMIN` there.
    #[error(
        "a bridge in the host's network namespace needs CAP_NET_ADMIN there, which this process lacks: run as root with it, or unprivileged (a rootless network's bridge is in a namespace of the store's own)"
    )]
    NeedsRoot,
    /// pasta (the user-mode network stack of rootless containers) is not installed.
    #[error(
        "rootless networking needs pasta, which is not installed: install the Debian package `passt` (apt-get install passt)"
    )]
    PastaMissing,
    /// pasta failed to attach to the container's network namespace.
    #[error("pasta failed ({status}): {stderr}")]
    Pasta {
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
}

/// An `Io` error maker for `map_err`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.into();
    move |source| NetworkError::Io { op, path, source }
}

/// A `Netlink` error maker for `map_err`.
pub(crate) fn nl_err(
    op: &'static str,
    name: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> NetworkError {
    let name = name.into();
    move |source| NetworkError::Netlink { op, name, source }
}
