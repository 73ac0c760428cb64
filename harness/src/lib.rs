//! # molde-harness
//!
//! A fresh, isolated, ready service per test, in milliseconds, with no daemon: what
//! testcontainers gives over Docker, built on molde's copy-on-write containers.
//!
//! - A [`Harness`] is a store shared by every test process (`$MOLDE_HARNESS_ROOT`, else
//!   `<tmp>/molde-harness-<uid>`). Opening it removes whatever a killed test process left.
//! - A [`Fixture`] is an image plus setup steps (e.g. `initdb` and a schema), built once per key
//!   under a file lock (cargo-nextest's process per test builds it once), cached in that store.
//!   Its source is pulled from a registry (`Fixture::pull`, cargo feature `registry`, on by
//!   default), an archive, or an image of the store; images of keys no build used for a week
//!   are pruned ([`Harness::prune_fixtures`]).
//! - [`LocalRegistry`] runs a real `docker-registry` on 127.0.0.1 for tests;
//!   [`fixture_reference`] names the Debian fixture images `cargo xtask fixtures` pushed.
//! - [`Harness::start`] runs a test's own container of it: logs kept, removed when the
//!   [`TestContainer`] drops (on panic too, after printing its last log lines).
//! - [`ready::wait`] waits until it serves: a TCP or unix-socket connect, a log line, an exec'd
//!   command, an HTTP GET, the image's HEALTHCHECK.
//!
//! ```no_run
//! use molde_harness::{Fixture, Harness, ready::{self, WaitFor}};
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let harness = Harness::shared()?;
//! let image = Fixture::archive("redis", "target/fixtures/services.oci.tar").build(harness)?;
//! let sock = tempfile::tempdir()?;
//! let mut redis = harness.start(
//!     harness
//!         .container(&image)
//!         .user("redis")
//!         .mount_bind(sock.path(), "/sock")
//!         .command("redis-server")
//!         .args(["--port", "0", "--unixsocket", "/sock/redis.sock"]),
//! )?;
//! ready::wait(&mut redis, &[WaitFor::unix_socket(sock.path().join("redis.sock"))])?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

#[cfg(feature = "tokio")]
pub mod asynch;
mod fixture;
mod owner;
mod prune;
pub mod ready;
pub mod registry;
pub mod services;

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::OnceLock;

use molde_container::{Container, ContainerBuilder, ContainerError, LogConfig};
use molde_image::{Image, Store, StoreError};

pub use fixture::{Fixture, FixtureError};
pub use prune::{FIXTURE_IDLE, PruneReport};
pub use registry::{LocalRegistry, fixture_reference};

/// The oci-archive of fixture image `name` that `cargo xtask fixtures` made (`debian`,
/// `services`): in `$MOLDE_FIXTURES`, else this workspace's `target/fixtures`; `None` if it
/// is not there.
pub fn fixture_archive(name: &str) -> Option<PathBuf> {
    Some(registry::fixtures_dir().join(format!("{name}.oci.tar"))).filter(|p| p.is_file())
}

/// Why the harness failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The store could not be opened.
    #[error("harness store: {0}")]
    Store(#[from] StoreError),
    /// A container could not be made, started or removed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The harness's own files (which process owns which container) could not be written.
    #[error("harness state in {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The harness: a store for fixtures and the tests' containers, shared by every test process.
#[derive(Debug, Clone)]
pub struct Harness {
    store: Store,
}

static SHARED: OnceLock<Harness> = OnceLock::new();

impl Harness {
    /// Open the harness store at `root`, removing what killed test processes left (their
    /// containers, with their writable layers, mounts and cgroups) and stale container records,
    /// and fixture images no build used for [`FIXTURE_IDLE`] ([`Harness::prune_fixtures`]).
    pub fn open(root: impl Into<PathBuf>) -> Result<Harness, HarnessError> {
        let store = Store::open(root.into())?;
        molde_container::recover(&store)?;
        owner::sweep(&store)?;
        let harness = Harness { store };
        // Fixture images whose key no build used for a week (their recipe changed).
        if let Err(e) = harness.prune_fixtures(FIXTURE_IDLE) {
            tracing::warn!("pruning unused fixture images: {e}");
        }
        Ok(harness)
    }

    /// The default root: `$MOLDE_HARNESS_ROOT`, else `<tmp>/molde-harness-<uid>`.
    pub fn default_root() -> PathBuf {
        std::env::var_os("MOLDE_HARNESS_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("molde-harness-{}", nix::unistd::geteuid()))
            })
    }

    /// The process's harness at [`Harness::default_root`], opened (and swept) once.
    pub fn shared() -> Result<&'static Harness, HarnessError> {
        if let Some(h) = SHARED.get() {
            return Ok(h);
        }
        let h = Harness::open(Harness::default_root())?;
        Ok(SHARED.get_or_init(|| h))
    }

    /// Its store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A builder for a test container of `image`: output kept as logs (1 MiB, two files), the
    /// writable layer on a tmpfs (a test's writes never reach the disk) where this process may
    /// mount one (as root; rootless, it stays in the store's directory).
    pub fn container(&self, image: &Image) -> ContainerBuilder {
        Container::builder(&self.store, image)
            .logs(LogConfig {
                max_bytes: 1 << 20,
                files: 2,
            })
            .ephemeral(molde_image::layerfs::privilege::is_privileged())
    }

    /// Create and start the container `builder` describes, owned by this process: removed when
    /// the returned guard drops, or by the next harness opened if this process is killed.
    pub fn start(&self, builder: ContainerBuilder) -> Result<TestContainer, HarnessError> {
        let guard = self.create(builder)?;
        let mut guard = guard;
        guard.start()?;
        Ok(guard)
    }

    /// Create (not start) the container `builder` describes, owned by this process.
    pub fn create(&self, builder: ContainerBuilder) -> Result<TestContainer, HarnessError> {
        let dir = owner::dir(&self.store);
        // This process's entry exists before the container does.
        owner::entry(&dir).map_err(|source| HarnessError::State {
            path: dir.clone(),
            source,
        })?;
        let container = builder.create()?;
        owner::mark(&dir, container.id()).map_err(|source| HarnessError::State {
            path: dir.clone(),
            source,
        })?;
        Ok(TestContainer {
            container: Some(container),
            dir,
        })
    }

    /// Remove what killed test processes left; how many containers.
    pub fn sweep(&self) -> Result<usize, HarnessError> {
        molde_container::recover(&self.store)?;
        Ok(owner::sweep(&self.store)?)
    }
}

/// A test's container: derefs to [`Container`]; dropping it kills and removes the container
/// (during a panic, first printing its last log lines).
#[derive(Debug)]
pub struct TestContainer {
    container: Option<Container>,
    dir: PathBuf,
}

impl TestContainer {
    /// Remove the container now, reporting errors (what drop does silently).
    pub fn close(mut self) -> Result<(), HarnessError> {
        let c = self.container.take().expect("present until drop");
        let id = c.id().to_owned();
        c.close()?;
        owner::unmark(&self.dir, &id);
        Ok(())
    }
}

impl Deref for TestContainer {
    type Target = Container;
    fn deref(&self) -> &Container {
        self.container.as_ref().expect("present until drop")
    }
}

impl DerefMut for TestContainer {
    fn deref_mut(&mut self) -> &mut Container {
        self.container.as_mut().expect("present until drop")
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        if let Some(c) = self.container.take() {
            let id = c.id().to_owned();
            drop(c);
            owner::unmark(&self.dir, &id);
        }
    }
}
