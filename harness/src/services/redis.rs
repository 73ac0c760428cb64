//! Redis per test: `redis-server` with no persistence, on a unix socket.

use std::path::PathBuf;

use molde_image::Image;

use super::{ServiceError, socket_dir};
use crate::ready::{self, WaitFor};
use crate::{Harness, TestContainer};

/// A test's own Redis server. Dropping it removes the container.
#[derive(Debug)]
pub struct Redis {
    container: TestContainer,
    sock: tempfile::TempDir,
}

impl Redis {
    /// Start `redis-server` from `image` (the services fixture image) and wait until its
    /// socket accepts connections.
    pub fn start(harness: &Harness, image: &Image) -> Result<Redis, ServiceError> {
        let sock = socket_dir()?;
        let mut container = harness.start(
            harness
                .container(image)
                .user("redis")
                .mount_bind(sock.path(), "/sock")
                .command("redis-server")
                .args([
                    "--port",
                    "0",
                    "--unixsocket",
                    "/sock/redis.sock",
                    "--unixsocketperm",
                    "777",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]),
        )?;
        let path = sock.path().join("redis.sock");
        ready::wait(&mut container, &[WaitFor::unix_socket(&path)])?;
        Ok(Redis { container, sock })
    }

    /// Its socket, on the host.
    pub fn socket(&self) -> PathBuf {
        self.sock.path().join("redis.sock")
    }

    /// Its container.
    pub fn container(&mut self) -> &mut TestContainer {
        &mut self.container
    }
}
