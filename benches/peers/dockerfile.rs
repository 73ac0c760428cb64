//! Dockerfile figures: a cold 3-stage build against `buildah bud` of the same Dockerfile on
//! the same base, and a rebuild after touching a context file no COPY reads against the cold
//! build.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use molde::container::build::dockerfile::Dockerfile;
use molde::container::build::{Build, Copy};
use molde::image::Store;

use super::{Figure, peak_rss_kib};

/// 3 stages, 10 instructions besides the FROMs.
const DOCKERFILE: &str = r#"FROM busybox:bench AS build
WORKDIR /src
COPY app.sh.in .
RUN sed 's/@V@/1/' app.sh.in > app.sh && chmod 755 app.sh
FROM busybox:bench AS assets
COPY assets/ /assets/
RUN mkdir -p /assets/gen && echo gen > /assets/gen/x
FROM busybox:bench
COPY --from=build /src/app.sh /usr/local/bin/app
COPY --from=assets /assets /srv/assets
ENV MODE=prod
LABEL stage=final
CMD ["/usr/local/bin/app"]
"#;

const APPLETS: &[&str] = &["sh", "sed", "chmod", "mkdir", "echo", "cat", "ls"];

/// A build context with the files the Dockerfile copies, and one it never reads.
fn context(dir: &Path) {
    fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(dir.join("app.sh.in"), "#!/bin/sh\necho app @V@\n").unwrap();
    fs::create_dir_all(dir.join("assets")).unwrap();
    for i in 0..20 {
        fs::write(dir.join(format!("assets/{i}.txt")), format!("asset {i}\n")).unwrap();
    }
    fs::write(dir.join("unread.txt"), "0\n").unwrap();
}

/// A rootfs of static busybox and a few applets.
fn busybox_root(dir: &Path, busybox: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
    for d in ["tmp", "etc", "proc", "dev", "sys"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
}

/// A store with `busybox:bench`.
fn base_store(dir: &Path, root: &Path) -> Store {
    let store = Store::open(dir).expect("store");
    Build::scratch()
        .copy(Copy::new(root, "/"))
        .env("PATH", "/usr/local/bin:/bin")
        .source_date_epoch(1_700_000_000)
        .build(&store, "busybox:bench")
        .expect("base image");
    store
}

fn molde_build(store: &Store, ctx: &Path, tag: &str) -> Duration {
    let started = Instant::now();
    Dockerfile::parse(DOCKERFILE, ctx, &[])
        .expect("parse")
        .into_build(store)
        .expect("stages")
        .build(store, tag)
        .expect("molde build");
    started.elapsed()
}

fn buildah(root: &Path) -> Command {
    let mut c = Command::new("buildah");
    c.arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .arg("--storage-driver")
        .arg("overlay")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn ok(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what}: {status}");
}

/// `build-buildah` and `rebuild-context`.
pub fn figures(fixtures: &Path, pairs: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    let mut out = Vec::new();
    if !wanted("build-buildah") && !wanted("rebuild-context") {
        return out;
    }
    // `cargo xtask bench` installs busybox-static: without it the figures are not made, and
    // the run says so as a failed group rather than leaving them out silently.
    let busybox = molde::image::base::static_busybox().expect(
        "build-buildah, rebuild-context need busybox-static (apt-get install busybox-static)",
    );
    let root = tempfile::tempdir_in(fixtures).expect("tempdir");
    busybox_root(root.path(), &busybox);
    let ctx = tempfile::tempdir_in(fixtures).expect("tempdir");
    context(ctx.path());
    // buildah takes ~1.5 s a build: fewer pairs keep the suite short.
    let pairs = pairs.clamp(3, 10);
    if wanted("build-buildah") {
        out.push(build_buildah(fixtures, root.path(), ctx.path(), pairs));
    }
    if wanted("rebuild-context") {
        out.push(rebuild_context(fixtures, root.path(), ctx.path(), pairs));
    }
    out
}

fn build_buildah(fixtures: &Path, root: &Path, ctx: &Path, pairs: usize) -> Figure {
    eprintln!("build-buildah: cold 3-stage build vs buildah bud ({pairs} pairs)");
    let (mut ratios, mut molde, mut peers, mut rss) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..pairs {
        let dir = tempfile::tempdir_in(fixtures).expect("tempdir");
        let store = base_store(&dir.path().join("store"), root);
        // The same base for buildah, from the oci-archive molde exports (not timed).
        let base_tar = dir.path().join("base.tar");
        let f = fs::File::create(&base_tar).unwrap();
        molde::image::archive::oci::export_archive(&store, &["busybox:bench"], f).expect("export");
        let broot = dir.path().join("buildah");
        let out = buildah(&broot)
            .args(["pull", "-q"])
            .arg(format!("oci-archive:{}", base_tar.display()))
            .stdout(Stdio::piped())
            .output()
            .expect("buildah pull");
        assert!(out.status.success(), "buildah pull");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ok(
            buildah(&broot).args(["tag", &id, "localhost/busybox:bench"]),
            "buildah tag",
        );
        let m = molde_build(&store, ctx, "app:1");
        rss = rss.max(peak_rss_kib());
        let started = Instant::now();
        ok(
            buildah(&broot)
                .args(["bud", "-q", "--isolation", "chroot", "-t", "app:1"])
                .arg(ctx),
            "buildah bud",
        );
        let p = started.elapsed();
        ok(
            buildah(&broot).args(["rmi", "--all", "--force"]),
            "buildah rmi",
        );
        ratios.push(m.as_secs_f64() / p.as_secs_f64());
        molde.push(m);
        peers.push(p);
        drop(store);
        dir.close().expect("remove the pair's stores");
        eprint!(".");
    }
    eprintln!();
    Figure {
        name: "build-buildah",
        peer: "buildah bud",
        goal: 0.3,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "Dockerfile::parse(..).into_build(store).build(store, \"app:1\") in a fresh store"
            .into(),
        peer_cmd: "buildah --storage-driver overlay bud --isolation chroot -t app:1 CTX (fresh storage)"
            .into(),
        note: "3 stages (2 independent builders), 10 instructions besides FROM, on a busybox-static base \
               both load from the same oci-archive"
            .into(),
    }
}

fn rebuild_context(fixtures: &Path, root: &Path, ctx: &Path, pairs: usize) -> Figure {
    eprintln!(
        "rebuild-context: rebuild after touching an unread file vs cold build ({pairs} pairs)"
    );
    let (mut ratios, mut molde, mut peers, mut rss) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for i in 0..pairs {
        let dir = tempfile::tempdir_in(fixtures).expect("tempdir");
        let store = base_store(dir.path(), root);
        let cold = molde_build(&store, ctx, "app:1");
        fs::write(ctx.join("unread.txt"), format!("{i}\n")).unwrap();
        // Rebuilt under the same tag, as `docker build -t app .` twice.
        let again = molde_build(&store, ctx, "app:1");
        rss = rss.max(peak_rss_kib());
        ratios.push(again.as_secs_f64() / cold.as_secs_f64());
        molde.push(again);
        peers.push(cold);
        drop(store);
        dir.close().expect("remove the store");
        eprint!(".");
    }
    eprintln!();
    Figure {
        name: "rebuild-context",
        peer: "cold build",
        goal: 0.05,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "the same Dockerfile built again, same tag, after rewriting a context file no COPY reads"
            .into(),
        peer_cmd: "its cold build in a fresh store".into(),
        note: "the 3-stage Dockerfile of build-buildah".into(),
    }
}
