//! Build figures: a cached rebuild of an unchanged recipe against its first build.

use std::path::Path;
use std::time::Instant;

use molde::container::build::{Build, Copy};
use molde::image::{Store, base};

use super::{Figure, peak_rss_kib};

/// A 5-step recipe over `base`: ENV, WORKDIR, COPY, RUN, CMD.
fn recipe(base: &molde::image::Image, context: &Path) -> Build {
    Build::from_image(base)
        .env("APP_HOME", "/app")
        .workdir("/app")
        .copy(Copy::new(context.join("app.sh"), "/app/").chmod(0o755))
        .run("echo built > /app/stamp")
        .cmd(["/bin/sh", "/app/app.sh"])
}

/// `rebuild-cached`: rebuild of the unchanged 5-step recipe (everything from the cache) against
/// its first build, each pair in a fresh store on disk.
pub fn figures(fixtures: &Path, pairs: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    if !wanted("rebuild-cached") {
        return Vec::new();
    }
    let context = tempfile::tempdir_in(fixtures).expect("tempdir");
    std::fs::write(context.path().join("app.sh"), "cat /app/stamp\n").unwrap();
    eprintln!("rebuild-cached: cached rebuild vs first build of a 5-step recipe ({pairs} pairs)");
    // A rebuild needs its first build before it, so each pair runs in that order, in a fresh
    // store on disk that is removed afterwards.
    let (mut ratios, mut molde, mut peers, mut rss) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..pairs {
        let dir = tempfile::tempdir_in(fixtures).expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let base = base::from_host(&store, &[Path::new("/bin/sh"), Path::new("/bin/cat")])
            .expect("base image");
        let started = Instant::now();
        recipe(&base, context.path())
            .build(&store, "app:1")
            .expect("first build");
        let first = started.elapsed();
        let started = Instant::now();
        let report = recipe(&base, context.path())
            .build(&store, "app:1")
            .expect("rebuild");
        let again = started.elapsed();
        assert_eq!(report.runs_executed(), 0, "a cached rebuild ran a RUN");
        rss = rss.max(peak_rss_kib());
        ratios.push(again.as_secs_f64() / first.as_secs_f64());
        molde.push(again);
        peers.push(first);
        drop(store);
        dir.close().expect("remove the store");
        eprint!(".");
    }
    eprintln!();
    Vec::from([Figure {
        name: "rebuild-cached",
        peer: "first build",
        goal: 0.05,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "Build::from_image(base).env().workdir().copy().run().cmd().build() again, \
                    unchanged"
            .into(),
        peer_cmd: "the same recipe's first build in a fresh store".into(),
        note: "ENV, WORKDIR, COPY, RUN, CMD over an image of /bin/sh and /bin/cat".into(),
    }])
}
