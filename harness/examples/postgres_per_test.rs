//! Each test its own PostgreSQL, from a fixture whose data directory and schema were made once.
//!
//! ```text
//! cargo xtask fixtures                                           # the Debian images, once
//! cargo test -p molde-harness --example postgres_per_test        # as root
//! cargo nextest run -p molde-harness --examples                  # a process per test: the
//!                                                                # fixture is still built once
//! ```
//!
//! The image comes as users get theirs: pulled (by digest) from a registry, here a real
//! `docker-registry` on 127.0.0.1 that serves what `cargo xtask fixtures` pushed, started once
//! per test process. Every test connects with the `postgres` crate through a unix socket in a
//! directory of its own (no network, no port to clash), writes its own rows, and sees no other
//! test's.

fn main() {
    eprintln!("run the tests: cargo test -p molde-harness --example postgres_per_test");
}

/// The tests (the example is a test suite: `test = true` in Cargo.toml).
#[cfg(test)]
mod suite {
    use std::sync::OnceLock;
    use std::time::Instant;

    use molde_harness::services::postgres::{self as pg_fixture, Postgres};
    use molde_harness::services::redis::Redis;
    use molde_harness::{Fixture, Harness};
    use molde_image::Image;

    /// The harness and the services image's reference (PostgreSQL 15, Redis) in the fixture
    /// registry (a real `docker-registry` on 127.0.0.1, serving what `cargo xtask fixtures`
    /// pushed, started once for this process); `None` when this host cannot run the tests.
    fn services() -> Option<(&'static Harness, String)> {
        let rootless_ok =
            molde_image::layerfs::idmap::IdMaps::subordinate_for_current_process().is_some();
        let why = if !nix::unistd::geteuid().is_root() && !rootless_ok {
            "needs root, or subordinate ids for this user (/etc/subuid, /etc/subgid and \
             newuidmap: PostgreSQL and Redis run as their own users of the image)"
                .to_owned()
        } else {
            match molde_harness::fixture_reference("services") {
                Ok(Some(reference)) => {
                    return Some((Harness::shared().expect("opening the harness"), reference));
                }
                Ok(None) => "needs the fixture images in the fixture registry: run \
                             `cargo xtask fixtures`"
                    .to_owned(),
                Err(e) => format!("the fixture registry: {e}"),
            }
        };
        if std::env::var_os("MOLDE_REQUIRE_ALL").is_some_and(|v| v == "1") {
            panic!("MOLDE_REQUIRE_ALL=1 and this test cannot run: {why}");
        }
        eprintln!("skipping: {why}");
        None
    }

    /// The fixture: the services image pulled from the fixture registry, initdb and the
    /// schema, run once (in this process, or found in the cache).
    fn fixture(harness: &Harness, reference: &str) -> Image {
        static IMAGE: OnceLock<Image> = OnceLock::new();
        IMAGE
            .get_or_init(|| {
                let began = Instant::now();
                let image = pg_fixture::initdb(Fixture::pull("postgres", reference))
                    .run_as(
                        "postgres",
                        pg_fixture::sql(
                            "create table visits (test text not null, at timestamptz default now());
                             insert into visits (test) values ('fixture')",
                        ),
                    )
                    .build(harness)
                    .expect("building the postgres fixture");
                eprintln!("postgres fixture ready in {:?}", began.elapsed());
                image
            })
            .clone()
    }

    /// Start a server, record this test's visit, and check that only it (and the fixture's row)
    /// is there.
    fn visit(test: &str) {
        let Some((harness, reference)) = services() else {
            return;
        };
        let image = fixture(harness, &reference);
        let began = Instant::now();
        let pg = Postgres::start(harness, &image).unwrap();
        let mut client = postgres::Client::connect(&pg.conninfo(), postgres::NoTls).unwrap();
        eprintln!("{test}: connected after {:?}", began.elapsed());
        for _ in 0..3 {
            client
                .execute("insert into visits (test) values ($1)", &[&test])
                .unwrap();
        }
        let rows = client
            .query(
                "select test, count(*) from visits group by test order by test",
                &[],
            )
            .unwrap();
        let seen: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut want = vec![("fixture".to_owned(), 1), (test.to_owned(), 3)];
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn alice_sees_only_her_rows() {
        visit("alice");
    }

    #[test]
    fn bob_sees_only_his_rows() {
        visit("bob");
    }

    #[test]
    fn carol_sees_only_her_rows() {
        visit("carol");
    }

    #[test]
    fn each_server_is_its_own() {
        let Some((harness, reference)) = services() else {
            return;
        };
        let image = fixture(harness, &reference);
        let a = Postgres::start(harness, &image).unwrap();
        let b = Postgres::start(harness, &image).unwrap();
        let mut ca = postgres::Client::connect(&a.conninfo(), postgres::NoTls).unwrap();
        let mut cb = postgres::Client::connect(&b.conninfo(), postgres::NoTls).unwrap();
        ca.batch_execute("create table only_in_a (x int)").unwrap();
        let e = cb.batch_execute("select * from only_in_a").unwrap_err();
        assert_eq!(
            e.code(),
            Some(&postgres::error::SqlState::UNDEFINED_TABLE),
            "{e:?}"
        );
        ca.batch_execute("select * from only_in_a").unwrap();
        assert_ne!(a.socket_dir(), b.socket_dir());
    }

    #[test]
    fn redis_of_its_own() {
        let Some((harness, reference)) = services() else {
            return;
        };
        let image = Fixture::pull("services", reference).build(harness).unwrap();
        let redis = Redis::start(harness, &image).unwrap();
        let mut conn = std::os::unix::net::UnixStream::connect(redis.socket()).unwrap();
        // RESP, as any client speaks it.
        assert_eq!(resp(&mut conn, &["PING"]), "+PONG\r\n");
        assert_eq!(resp(&mut conn, &["SET", "greeting", "hola"]), "+OK\r\n");
        assert_eq!(resp(&mut conn, &["GET", "greeting"]), "$4\r\nhola\r\n");
        assert_eq!(resp(&mut conn, &["DBSIZE"]), ":1\r\n");
    }

    /// Send one command, read one reply (small replies: one read).
    fn resp(conn: &mut std::os::unix::net::UnixStream, words: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut cmd = format!("*{}\r\n", words.len());
        for w in words {
            cmd += &format!("${}\r\n{w}\r\n", w.len());
        }
        conn.write_all(cmd.as_bytes()).unwrap();
        let mut buf = [0u8; 256];
        let n = conn.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}
