//! Ready-made services for tests, from the Debian fixture image (`cargo xtask fixtures`:
//! `services.oci.tar`, PostgreSQL 15 and Redis): each test its own server, reached through a
//! unix socket in a directory of its own that is bound into the container. No network is
//! needed at all (the container keeps its own, empty, network namespace), no port can clash,
//! and a connect over a unix socket is the cheapest there is.

pub mod postgres;
pub mod redis;

use std::os::unix::fs::PermissionsExt;

use crate::HarnessError;
use crate::ready::ReadyError;

/// Why a service did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Its container could not be made or started.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// It did not become ready.
    #[error(transparent)]
    Ready(#[from] ReadyError),
    /// Its socket directory could not be made.
    #[error("making a socket directory: {0}")]
    SocketDir(#[source] std::io::Error),
}

/// A fresh directory for a service's unix socket, writable by the container's user.
fn socket_dir() -> Result<tempfile::TempDir, ServiceError> {
    let dir = tempfile::Builder::new()
        .prefix("molde-sock-")
        .tempdir()
        .map_err(ServiceError::SocketDir)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .map_err(ServiceError::SocketDir)?;
    Ok(dir)
}
