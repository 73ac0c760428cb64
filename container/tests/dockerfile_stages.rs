//! Real multi-stage Dockerfile builds on a busybox-static image: stages, the target's layers
//! only, unneeded stages skipped, independent stages at the same time, RUN mounts, the
//! `.dockerignore`, the cache, ONBUILD/HEALTHCHECK/SHELL in the config.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;

use molde_container::Container;
use molde_container::build::dockerfile::Dockerfile;
use molde_container::build::{Build, Copy, Healthcheck};
use molde_image::Store;

const APPLETS: &[&str] = &[
    "sed", "chmod", "mkdir", "cp", "test", "[", "touch", "rm", "sleep", "wc", "grep", "find",
    "expr", "seq",
];

/// A store with `busybox:test`, an image of busybox-static and its applets; `None` when the
/// test cannot run here.
fn busybox_store() -> Option<(Store, tempfile::TempDir)> {
    let root = common::busybox::ready_rootless_too(APPLETS)?;
    let store = Store::temporary().unwrap();
    let report = Build::scratch()
        .copy(Copy::new(root.path(), "/"))
        .source_date_epoch(1_700_000_000)
        .build(&store, "busybox:test")
        .unwrap();
    assert_eq!(report.image.layers().len(), 1);
    Some((store, root))
}

fn build(store: &Store, ctx: &Path, text: &str, tag: &str) -> molde_container::build::BuildReport {
    Dockerfile::parse(text, ctx, &[])
        .unwrap()
        .into_build(store)
        .unwrap()
        .build(store, tag)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn run(store: &Store, img: &molde_image::Image, cmd: &str) -> String {
    let out = Container::builder(store, img)
        .entrypoint(["/bin/sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every byte of every layer of `img`, uncompressed.
fn layer_bytes(store: &Store, img: &molde_image::Image) -> Vec<u8> {
    let mut all = Vec::new();
    for l in img.layers() {
        let f = fs::File::open(store.layout().blob(&l.digest)).unwrap();
        let (_, mut r) =
            molde_layerfs::compression::decompress(std::io::BufReader::new(f)).unwrap();
        r.read_to_end(&mut all).unwrap();
    }
    all
}

const MULTI: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=busybox:test
FROM $BASE AS builder
WORKDIR /src
COPY hello.sh.in .
RUN sed 's/@NAME@/molde/' hello.sh.in > hello.sh && chmod 755 hello.sh
RUN --mount=type=cache,target=/cache,id=counter \
    n=$(cat /cache/count 2>/dev/null || echo 0); \
    echo $((n+1)) > /cache/count; cp /cache/count /src/runs

FROM $BASE AS unused
RUN exit 1

FROM ${BASE} AS other
RUN echo other > /other.txt

FROM $BASE
COPY --from=builder /src/hello.sh /usr/local/bin/hello
COPY --from=other /other.txt /
ENTRYPOINT ["/usr/local/bin/hello"]
"#;

#[test]
fn multi_stage_build_keeps_the_final_stage_only() {
    let Some((store, _root)) = busybox_store() else {
        return;
    };
    let base = store.resolve("busybox:test").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("hello.sh.in"),
        "#!/bin/sh\necho hello @NAME@\n",
    )
    .unwrap();
    let report = build(&store, ctx.path(), MULTI, "app:1");
    let img = &report.image;
    // The base's layer and the two COPYs; nothing of the builder stages.
    assert_eq!(
        img.layers().len(),
        base.layers().len() + 2,
        "{}",
        img.history_table()
    );
    assert_eq!(&img.layers()[..1], base.layers());
    let stages: std::collections::BTreeSet<&str> =
        report.steps.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(
        stages,
        ["3", "builder", "other"].into(),
        "the unused stage never ran"
    );
    let out = Container::builder(&store, img).output().unwrap();
    assert!(out.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"hello molde\n");
    assert_eq!(
        run(&store, img, "cat /other.txt; ls /src 2>&1 || true"),
        "other\nls: /src: No such file or directory\n"
    );
    let by: Vec<String> = img
        .history()
        .iter()
        .filter_map(|h| h.created_by.clone())
        .collect();
    assert!(
        by.contains(&"COPY --from=builder /src/hello.sh /usr/local/bin/hello".into()),
        "{by:#?}"
    );
    // Only the target's image is left in the store's index, besides the base.
    let tagged: Vec<String> = store
        .list()
        .unwrap()
        .iter()
        .map(|i| i.image.id().to_string())
        .collect();
    assert_eq!(tagged.len(), 2, "{tagged:?}");

    // The builder stage as a target: the cache mount's content is in no layer, its mount
    // point is not in the image, and a build without the cache runs again with the same cache.
    let df = |no_cache| {
        Dockerfile::parse(MULTI, ctx.path(), &[])
            .unwrap()
            .target("builder")
            .into_build(&store)
            .unwrap()
            .no_cache(no_cache)
            .build(&store, "builder:1")
            .unwrap()
    };
    let b1 = df(false);
    assert_eq!(
        run(
            &store,
            &b1.image,
            "cat /src/runs; ls -d /cache 2>/dev/null || echo no-cache-dir"
        ),
        "1\nno-cache-dir\n"
    );
    let b2 = df(true);
    assert!(b2.runs_executed() >= 2);
    assert_eq!(
        run(&store, &b2.image, "cat /src/runs"),
        "2\n",
        "the cache mount was kept between builds"
    );
    let b3 = df(false);
    assert_eq!(
        b3.runs_executed(),
        0,
        "unchanged: everything from the build cache"
    );
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let Some((store, _root)) = busybox_store() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    // Each stage waits (up to 60 s) for the other's mark in a shared cache mount: built one
    // after the other, the first would time out and fail.
    let wait = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,target=/meet,id=meet-{pid} touch /meet/{me}; i=0; \
             while [ ! -e /meet/{other} ]; do i=$((i+1)); [ $i -lt 600 ] || exit 7; sleep 0.1; done; echo {me} > /{me}",
            pid = std::process::id()
        )
    };
    let text = format!(
        "FROM busybox:test AS a\n{}\nFROM busybox:test AS b\n{}\nFROM busybox:test\nCOPY --from=a /a /\nCOPY --from=b /b /\n",
        wait("a", "b"),
        wait("b", "a")
    );
    let report = build(&store, ctx.path(), &text, "meet:1");
    assert_eq!(run(&store, &report.image, "cat /a /b"), "a\nb\n");
}

#[test]
fn run_mounts_leave_nothing_in_the_image() {
    let Some((store, _root)) = busybox_store() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    fs::create_dir(ctx.path().join("data")).unwrap();
    fs::write(ctx.path().join("data/a"), "from the context\n").unwrap();
    let secret = ctx.path().join("token.secret");
    fs::write(&secret, "s3cr3t-Value-42\n").unwrap();
    let text = "FROM busybox:test AS src\nRUN mkdir -p /opt && echo from-stage > /opt/file\n\
        FROM busybox:test\n\
        RUN --mount=type=secret,id=token,required=true grep -q Value-42 /run/secrets/token && echo used > /secret-used\n\
        RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && test -f /scratch/x\n\
        RUN --mount=type=bind,source=data,target=/data cat /data/a > /a.copy\n\
        RUN --mount=type=bind,from=src,source=/opt,target=/mnt/opt cat /mnt/opt/file > /b.copy\n\
        RUN --network=none cat /a.copy\n";
    let stages = Dockerfile::parse(text, ctx.path(), &[])
        .unwrap()
        .into_build(&store)
        .unwrap();
    // A required secret not given: refused before anything runs.
    let err = stages.clone().build(&store, "m:0").unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");
    assert!(err.to_string().starts_with("Dockerfile:4:1: "), "{err}");
    // A step failing while it runs names its line too.
    let err = Dockerfile::parse("FROM busybox:test\n\n  RUN exit 3\n", ctx.path(), &[])
        .unwrap()
        .into_build(&store)
        .unwrap()
        .build(&store, "fails:1")
        .unwrap_err();
    assert!(err.to_string().starts_with("Dockerfile:3:3: "), "{err}");
    let report = stages
        .secret("token", &secret)
        .build(&store, "m:1")
        .unwrap();
    let img = &report.image;
    assert_eq!(
        run(
            &store,
            img,
            "cat /secret-used /a.copy /b.copy; ls -d /run/secrets /scratch /data /mnt 2>&1 | wc -l"
        ),
        "used\nfrom the context\nfrom-stage\n4\n",
    );
    assert_eq!(
        run(
            &store,
            img,
            "ls /run/secrets /scratch /data /mnt/opt 2>/dev/null | wc -w"
        ),
        "0\n"
    );
    let bytes = layer_bytes(&store, img);
    assert!(
        !bytes.windows(6).any(|w| w == b"s3cr3t"),
        "the secret is in a layer"
    );
    let history = format!("{:?}", img.history());
    assert!(
        !history.contains("s3cr3t") && !history.contains(&ctx.path().display().to_string()),
        "{history}"
    );
    assert!(
        report
            .steps
            .iter()
            .any(|s| s.output == b"from the context\n")
    );
}

#[test]
fn dockerignore_and_context_cache() {
    let Some((store, _root)) = busybox_store() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::write(c.join("app.sh"), "echo app\n").unwrap();
    fs::write(c.join("README.md"), "docs\n").unwrap();
    fs::write(c.join("keep.md"), "kept\n").unwrap();
    fs::create_dir_all(c.join("build/obj")).unwrap();
    fs::write(c.join("build/obj/x.o"), "obj\n").unwrap();
    fs::write(c.join("unrelated.txt"), "1\n").unwrap();
    fs::write(c.join(".dockerignore"), "*.md\n!keep.md\nbuild\n**/*.tmp\n").unwrap();
    fs::write(c.join("a.tmp"), "t\n").unwrap();
    let text = "FROM busybox:test\nCOPY . /all/\nCOPY *.sh /bin-dir/\nRUN ls -A /all | sort | tr '\\n' ' ' > /listing\nFROM busybox:test AS app\nCOPY app.sh /app/\nRUN sh /app/app.sh > /out\n";
    let first = build(&store, c, text, "ctx:1");
    let all = Dockerfile::parse(text, c, &[]).unwrap().target("0");
    let report = all
        .into_build(&store)
        .unwrap()
        .build(&store, "ctx:all")
        .unwrap();
    assert_eq!(
        run(&store, &report.image, "cat /listing; ls /bin-dir"),
        ".dockerignore app.sh keep.md unrelated.txt app.sh\n"
    );
    // Touching, even rewriting, a file no COPY of the target reads: nothing runs again.
    fs::write(c.join("unrelated.txt"), "2\n").unwrap();
    fs::write(c.join("README.md"), "changed docs\n").unwrap();
    let again = build(&store, c, text, "ctx:2");
    assert_eq!(again.runs_executed(), 0);
    assert_eq!(again.image.layers(), first.image.layers());
    fs::write(c.join("app.sh"), "echo app v2\n").unwrap();
    let changed = build(&store, c, text, "ctx:3");
    assert_eq!(changed.runs_executed(), 1);
    assert_eq!(run(&store, &changed.image, "cat /out"), "app v2\n");
}

#[test]
fn onbuild_healthcheck_and_shell_are_kept_in_the_config() {
    let Some((store, _root)) = busybox_store() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f.txt"), "file\n").unwrap();
    let parent = build(
        &store,
        ctx.path(),
        "FROM busybox:test\nRUN mkdir -m 1777 /shared\nSHELL [\"/bin/sh\", \"-ec\"]\nHEALTHCHECK --interval=5s --retries=2 CMD [\"/bin/true\"]\nONBUILD COPY f.txt /from-trigger.txt\nONBUILD RUN echo triggered > /shared/trig\nMAINTAINER someone\nSTOPSIGNAL SIGINT\nUSER 1000:1000\nEXPOSE 8000-8001/udp\n",
        "parent:1",
    );
    let p = &parent.image;
    let h = Healthcheck::of(p).unwrap();
    assert_eq!(
        (h.test.as_slice(), h.interval, h.retries),
        (
            &["CMD".to_owned(), "/bin/true".to_owned()][..],
            5_000_000_000,
            2
        )
    );
    assert_eq!(
        p.docker_field("Shell").unwrap(),
        &serde_json::json!(["/bin/sh", "-ec"])
    );
    assert_eq!(
        p.docker_field("OnBuild").unwrap().as_array().unwrap().len(),
        2
    );
    assert_eq!(p.config().author().as_deref(), Some("someone"));
    assert_eq!(p.exposed_ports(), vec!["8000/udp", "8001/udp"]);
    assert_eq!(p.user(), Some("1000:1000"));
    // A build FROM it runs the triggers first, in its own context; they do not pass on.
    let child = build(
        &store,
        ctx.path(),
        "FROM parent:1\nUSER 0\nRUN cat /shared/trig /from-trigger.txt > /both\n",
        "child:1",
    );
    let c = &child.image;
    assert_eq!(run(&store, c, "cat /both"), "triggered\nfile\n");
    assert!(c.docker_field("OnBuild").is_none());
    assert_eq!(Healthcheck::of(c), Some(h), "inherited");
    // Kept through an oci-archive export and an import into another store.
    let mut archive = Vec::new();
    molde_image::archive::oci::export_archive(&store, &["parent:1"], &mut archive).unwrap();
    let other = Store::temporary().unwrap();
    let imported =
        molde_image::archive::import(&other, std::io::Cursor::new(archive), &Default::default())
            .unwrap();
    let again = &imported.images[0].image;
    assert_eq!(Healthcheck::of(again), Healthcheck::of(p));
    assert_eq!(again.docker_field("OnBuild"), p.docker_field("OnBuild"));
}
