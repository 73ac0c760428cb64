//! PostgreSQL 15 per test: a fixture whose data directory is initialised once (`initdb`, plus
//! any schema), and a server per test on a copy-on-write copy of it.
//!
//! ```no_run
//! use molde_harness::Harness;
//! use molde_harness::services::postgres::{self, Postgres};
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let harness = Harness::shared()?;
//! let image = postgres::fixture("target/fixtures/services.oci.tar")
//!     .run_as("postgres", postgres::sql("create table t (x int)"))
//!     .build(harness)?;
//! let pg = Postgres::start(harness, &image)?;
//! println!("connect with: {}", pg.conninfo()); // host=/tmp/molde-sock-... user=postgres
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use molde_image::Image;

use super::{ServiceError, socket_dir};
use crate::ready::{self, WaitFor};
use crate::{Fixture, Harness, TestContainer};

/// The data directory in the image.
pub const DATA: &str = "/var/lib/postgresql/data";

/// Settings for a throwaway test server: no durability (a test's data dies with it), no TCP,
/// the socket in `/sock`.
const CONF: &str = "listen_addresses = ''\n\
unix_socket_directories = '/sock'\n\
fsync = off\n\
synchronous_commit = off\n\
full_page_writes = off\n\
max_connections = 20\n\
shared_buffers = 16MB\n";

/// The fixture: the image of `archive` with a data directory initialised by `initdb`
/// (superuser `postgres`, trust authentication, C locale) and configured for tests. Add
/// schema steps with [`sql`].
pub fn fixture(archive: impl Into<PathBuf>) -> Fixture {
    initdb(Fixture::archive("postgres", archive))
}

/// `source` (an image with PostgreSQL 15, e.g. `Fixture::pull` of the services image) with
/// the steps of [`fixture`]: a data directory initialised by `initdb` and configured for
/// tests.
pub fn initdb(source: Fixture) -> Fixture {
    let script = format!(
        "initdb -D {DATA} -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null \
         && printf \"{}\" >> {DATA}/postgresql.conf",
        CONF.replace('\n', "\\n")
    );
    source.run_as("postgres", ["/bin/sh", "-c", &script])
}

/// A fixture step that runs `statements` (SQL) on the fixture's database, with the server
/// started for the step and stopped cleanly after it.
pub fn sql(statements: &str) -> Vec<String> {
    let script = format!(
        "mkdir -p /tmp/s && pg_ctl -D {DATA} -o \"-k /tmp/s\" -w -s start \
         && psql -h /tmp/s -U postgres -v ON_ERROR_STOP=1 -q -c \"$SQL\" \
         && pg_ctl -D {DATA} -m fast -w -s stop"
    );
    let escaped = statements.replace('\'', "'\\''");
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("SQL='{escaped}'; {script}"),
    ]
}

/// A test's own PostgreSQL server, listening on a unix socket in a directory of its own.
/// Dropping it removes the container (its writable layer too).
#[derive(Debug)]
pub struct Postgres {
    container: TestContainer,
    sock: tempfile::TempDir,
}

impl Postgres {
    /// Start a server on a copy of the fixture `image`'s data directory and wait until it
    /// accepts connections (its log says so: a connect to the socket alone could reach it
    /// while it still starts up).
    pub fn start(harness: &Harness, image: &Image) -> Result<Postgres, ServiceError> {
        let sock = socket_dir()?;
        let mut container = harness.start(
            harness
                .container(image)
                .user("postgres")
                .mount_bind(sock.path(), "/sock")
                .command("postgres")
                .args(["-D", DATA]),
        )?;
        ready::wait(
            &mut container,
            &[
                WaitFor::log("database system is ready to accept connections")
                    .map_err(ServiceError::Ready)?,
            ],
        )?;
        Ok(Postgres { container, sock })
    }

    /// The directory of its socket (`.s.PGSQL.5432`), on the host.
    pub fn socket_dir(&self) -> &Path {
        self.sock.path()
    }

    /// A connection string for the `postgres` / `tokio-postgres` crates and libpq.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} user=postgres dbname=postgres",
            self.sock.path().display()
        )
    }

    /// Its container.
    pub fn container(&mut self) -> &mut TestContainer {
        &mut self.container
    }
}
