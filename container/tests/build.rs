//! Image builds with the typed builder: RUN/COPY/ADD/config steps, history, cache and
//! reproducible digests. Real containers, real stores.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use molde_container::Container;
use molde_container::build::{Build, BuildError, Copy, Port};
use molde_image::{ImageBuilder, Store};

fn base(store: &Store) -> molde_image::Image {
    // A base with the same digest in every store: from_host's layer, fixed config.
    let host: Vec<&Path> = [
        "/bin/sh",
        "/bin/cat",
        "/bin/ls",
        "/bin/mkdir",
        "/bin/touch",
        "/bin/echo",
    ]
    .iter()
    .map(Path::new)
    .filter(|p| p.exists())
    .collect();
    let img = molde_image::base::from_host(store, &host).unwrap();
    let b = ImageBuilder::new()
        .created("2020-01-01T00:00:00Z")
        .layer(img.layers()[0], "host binaries")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    store.commit(b).unwrap()
}

fn can_run() -> bool {
    common::containers_or_skip()
}

#[test]
fn steps_layers_history_and_config() {
    if !can_run() {
        return;
    }
    let store = Store::temporary().unwrap();
    let base = base(&store);
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("hello.txt"), "hello\n").unwrap();
    fs::create_dir(ctx.path().join("site")).unwrap();
    fs::write(ctx.path().join("site/index.html"), "<h1>hi</h1>").unwrap();
    fs::set_permissions(
        ctx.path().join("hello.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let report = Build::from_image(&base)
        .env("GREETING", "hi there")
        .workdir("/app")
        .copy(
            Copy::new(ctx.path().join("hello.txt"), "hello.txt")
                .chown("1000:1001")
                .chmod(0o640),
        )
        .copy(Copy::new(ctx.path().join("site"), "/srv/www/"))
        .run("echo \"$GREETING from $(pwd)\" > out.txt; cat hello.txt >> out.txt")
        .run_exec(["/bin/mkdir", "-p", "/data/x"])
        .user("1000")
        .expose(8080)
        .expose(Port::udp(53))
        .volume("/data")
        .label("org.example.team", "builders")
        .entrypoint(["/bin/sh", "-c"])
        .cmd(["cat /app/out.txt"])
        .stop_signal(nix::sys::signal::Signal::SIGINT)
        .build(&store, "demo:1")
        .unwrap();
    let img = &report.image;
    assert_eq!(store.resolve("demo:1").unwrap().id(), img.id());
    // base 1 layer + WORKDIR + COPY + COPY + RUN + RUN
    assert_eq!(img.layers().len(), 6, "{:#?}", img.history());
    let hist = img.history();
    let by: Vec<String> = hist
        .iter()
        .map(|h| h.created_by.clone().unwrap_or_default())
        .collect();
    assert_eq!(hist.len(), 1 + 14, "{by:#?}");
    assert_eq!(by[1], "ENV GREETING=hi there");
    assert!(hist[1].layer.is_none());
    assert_eq!(by[2], "WORKDIR /app");
    assert!(hist[2].layer.is_some());
    // Sources named by their file names, never by their host paths.
    assert_eq!(
        by[3],
        "COPY --chown=1000:1001 --chmod=640 hello.txt hello.txt"
    );
    assert_eq!(by[4], "COPY site /srv/www/");
    assert!(by[5].starts_with("RUN /bin/sh -c echo"), "{}", by[5]);
    assert_eq!(by[6], r#"RUN ["/bin/mkdir","-p","/data/x"]"#);
    assert!(hist[7..].iter().all(|h| h.layer.is_none()));
    assert_eq!(img.env_var("GREETING"), Some("hi there"));
    assert_eq!(img.working_dir(), Some("/app"));
    assert_eq!(img.user(), Some("1000"));
    assert_eq!(img.exposed_ports(), vec!["53/udp", "8080/tcp"]);
    assert_eq!(img.volumes(), vec!["/data"]);
    assert_eq!(img.labels()["org.example.team"], "builders");
    assert_eq!(img.entrypoint(), ["/bin/sh", "-c"]);
    assert_eq!(img.cmd(), ["cat /app/out.txt"]);
    assert_eq!(img.stop_signal(), Some("SIGINT"));
    assert!(report.steps.iter().all(|s| !s.cached));
    assert_eq!(report.runs_executed(), 2);

    // Run the result as root to look at owners and modes.
    let out = Container::builder(&store, img)
        .user("0")
        .entrypoint(["/bin/sh", "-c"])
        .arg("cat /app/out.txt; ls -ln /app/hello.txt /srv/www/index.html; ls -ld /data/x")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("hi there from /app\nhello\n"), "{text}");
    let hello = text
        .lines()
        .find(|l| l.ends_with("/app/hello.txt"))
        .unwrap();
    assert!(hello.starts_with("-rw-r-----"), "{hello}");
    let f: Vec<&str> = hello.split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("1000", "1001"), "{hello}");
    let index = text.lines().find(|l| l.ends_with("index.html")).unwrap();
    let f: Vec<&str> = index.split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("0", "0"), "{index}");
    assert!(
        text.lines()
            .any(|l| l.starts_with('d') && l.ends_with("/data/x")),
        "{text}"
    );
    // The image's own CMD runs as user 1000.
    let out = Container::builder(&store, img).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi there from /app\nhello\n"
    );
}

/// A gzipped tar of `conf/app.conf` owned by 33:44 at `path`.
fn owned_tar(path: &Path) {
    let f = fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_ustar();
    h.set_path("conf/app.conf").unwrap();
    h.set_size(6);
    h.set_mode(0o600);
    h.set_uid(33);
    h.set_gid(44);
    h.set_cksum();
    b.append(&h, &b"key=1\n"[..]).unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

/// `ADD` of [`owned_tar`] at /opt/bundle on `base`: the new layer's tar headers keep 33:44
/// (no container needed: any user, a single-id one too). Returns the built image.
fn add_owned_tar(store: &Store, base: &molde_image::Image, ctx: &Path) -> molde_image::Image {
    let tar_path = ctx.join("bundle.tar.gz");
    owned_tar(&tar_path);
    let report = Build::from_image(base)
        .add_tar(&tar_path, "/opt/bundle")
        .build(store, "added:1")
        .unwrap();
    assert_eq!(report.image.layers().len(), 2);
    let top = store.open_blob(&report.image.layers()[1].digest).unwrap();
    let (_, plain) = molde_image::layerfs::compression::decompress(top).unwrap();
    let mut layer = tar::Archive::new(plain);
    let owners: Vec<(String, u64, u64)> = layer
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let path = e.path().unwrap().display().to_string();
            (path, h.uid().unwrap(), h.gid().unwrap())
        })
        .collect();
    assert!(
        owners.contains(&("opt/bundle/conf/app.conf".into(), 33, 44)),
        "{owners:?}"
    );
    report.image
}

/// The environment variable that tells [`add_tar_as_nobody_helper`] where to work.
const NOBODY_ENV: &str = "MOLDE_TEST_ADD_AS_NOBODY";

/// An `ADD`ed tar's owners with a single-id user namespace (nobody has no subordinate ids):
/// kept through umoci's `user.rootlesscontainers` xattr. This binary, copied where nobody can
/// run it, re-runs [`add_tar_as_nobody_helper`] as uid 65534.
#[test]
fn add_tar_keeps_owners_as_nobody() {
    use std::os::unix::fs::PermissionsExt;
    if !common::require(common::have_tool("setpriv"), "needs setpriv(1)")
        || !common::require(common::privileged(), "needs root to become nobody")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let exe = tmp.path().join("build-test");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "add_tar_as_nobody_helper",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(NOBODY_ENV, tmp.path())
        .env("TMPDIR", tmp.path())
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "a helper: run by add_tar_keeps_owners_as_nobody"]
fn add_tar_as_nobody_helper() {
    let work = std::env::var_os(NOBODY_ENV).expect("started by add_tar_keeps_owners_as_nobody");
    assert!(!common::privileged(), "must run unprivileged");
    assert!(
        molde_layerfs::idmap::IdMaps::subordinate_for_current_process().is_none(),
        "nobody has no subordinate ids here"
    );
    let store = Store::open(Path::new(&work).join("store")).unwrap();
    let base = base(&store);
    let ctx = tempfile::tempdir_in(&work).unwrap();
    add_owned_tar(&store, &base, ctx.path());
}

#[test]
fn add_tar_unpacks_under_destination() {
    // Runs rootless too (the unprivileged pass): the owners the tar records (33:44) are the
    // image's there as well, through the subordinate ids (and, for one id, see
    // add_tar_keeps_owners_as_nobody).
    let store = Store::temporary().unwrap();
    let base = base(&store);
    let ctx = tempfile::tempdir().unwrap();
    let image = add_owned_tar(&store, &base, ctx.path());
    if !can_run() {
        return;
    }
    let out = Container::builder(&store, &image)
        .command("/bin/sh")
        .args([
            "-c",
            "cat /opt/bundle/conf/app.conf; ls -ln /opt/bundle/conf/app.conf",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("key=1\n-rw-------"), "{text}");
    let f: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("33", "44"), "{text}");
    // Not a tar: refused before any work.
    let err = Build::from_image(&base)
        .add_tar(
            ctx.path().join("bundle.tar.gz").with_extension("nope"),
            "/x",
        )
        .build(&store, "bad:1")
        .unwrap_err();
    assert!(matches!(err, BuildError::Invalid { step: 1, .. }), "{err}");
}

#[test]
fn invalid_recipes_fail_before_any_work() {
    if !can_run() {
        return;
    }
    let store = Store::temporary().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "x").unwrap();
    let marker = ctx.path().join("never");
    // RUN on scratch, after a config step: step 2 named, nothing built.
    let err = Build::scratch()
        .env("A", "b")
        .run(format!("touch {}", marker.display()))
        .build(&store, "s:1")
        .unwrap_err();
    match &err {
        BuildError::Invalid {
            step,
            instruction,
            reason,
            ..
        } => {
            assert_eq!(*step, 2);
            assert!(
                instruction.starts_with("RUN /bin/sh -c touch"),
                "{instruction}"
            );
            assert!(reason.contains("scratch"), "{reason}");
        }
        e => panic!("{e}"),
    }
    assert!(store.resolve("s:1").is_err());
    // A base without /bin/sh: the shell-form RUN is refused, an exec form of a present binary
    // is not checked against the shell.
    let cat_only = molde_image::base::from_host(&store, &[Path::new("/bin/cat")]).unwrap();
    let err = Build::from_image(&cat_only)
        .copy(Copy::new(ctx.path().join("f"), "/f"))
        .label("a", "b")
        .run("true")
        .build(&store, "nosh:1");
    // The COPY might have brought a shell: found at the RUN itself.
    match err.unwrap_err() {
        BuildError::Step { step, source, .. } => {
            assert_eq!(step, 3);
            assert!(source.to_string().contains("/bin/sh"), "{source}");
        }
        e => panic!("{e}"),
    }
    let err = Build::from_image(&cat_only)
        .run("true")
        .build(&store, "nosh:2")
        .unwrap_err();
    assert!(matches!(err, BuildError::Invalid { step: 1, .. }), "{err}");
    // Missing source, bad user spec, unknown user name, bad tag.
    let err = Build::from_image(&cat_only)
        .copy(Copy::new(ctx.path().join("missing"), "/x"))
        .build(&store, "x:1")
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    let err = Build::from_image(&cat_only)
        .user("a:")
        .build(&store, "x:1")
        .unwrap_err();
    assert!(matches!(err, BuildError::Invalid { step: 1, .. }), "{err}");
    let err = Build::from_image(&cat_only)
        .user("nobody")
        .build(&store, "x:1")
        .unwrap_err();
    assert!(err.to_string().contains("nobody"), "{err}");
    let err = Build::from_image(&cat_only)
        .build(&store, "Bad Tag")
        .unwrap_err();
    assert!(matches!(err, BuildError::Invalid { step: 0, .. }), "{err}");
    // A failing RUN names its step and its stderr.
    let b = base(&store);
    let err = Build::from_image(&b)
        .run("echo oops >&2; exit 3")
        .build(&store, "x:1")
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("step 1") && msg.contains("oops"), "{msg}");
}

#[test]
fn user_by_name_checked_at_its_step() {
    if !can_run() {
        return;
    }
    let store = Store::temporary().unwrap();
    let b = base(&store);
    let ctx = tempfile::tempdir().unwrap();
    let hostname = ctx.path().join("hostname");
    fs::write(&hostname, "box\n").unwrap();
    let r = Build::from_image(&b)
        .run("echo 'app:x:1234:1235::/home/app:/bin/sh' > /etc/passwd; echo 'app:x:1235:' > /etc/group")
        .user("app")
        .run("echo $(id -u 2>/dev/null || echo none) > /tmp/who; ls -lnd /tmp/who")
        .copy(Copy::many([hostname.as_path()], "/home/app/").chown("app:app"))
        .build(&store, "u:1");
    let r = r.unwrap();
    let out = String::from_utf8_lossy(&r.steps[2].output).into_owned();
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("1234", "1235"), "{out}");
    let out = Container::builder(&store, &r.image)
        .command("/bin/ls")
        .args(["-ln", "/home/app/hostname"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("1234", "1235"), "{text}");
    let err = Build::from_image(&b)
        .run("true")
        .user("ghost")
        .build(&store, "u:2")
        .unwrap_err();
    match err {
        BuildError::Step {
            step, instruction, ..
        } => {
            assert_eq!(step, 2);
            assert_eq!(instruction, "USER ghost");
        }
        e => panic!("{e}"),
    }
}

/// A build context with `src/a.txt` holding `text`.
fn context(text: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs::create_dir(ctx.path().join("src")).unwrap();
    fs::write(ctx.path().join("src/a.txt"), text).unwrap();
    ctx
}

fn recipe(base: &molde_image::Image, ctx: &Path) -> Build {
    Build::from_image(base)
        .copy(Copy::new(ctx.join("src"), "/src/"))
        .run("cat /proc/sys/kernel/random/uuid > /random")
        .env("K", "v")
        .run("cat /src/a.txt > /copied")
}

#[test]
fn cache_hits_misses_and_invalidation() {
    if !can_run() {
        return;
    }
    let store = Store::temporary().unwrap();
    let b = base(&store);
    let ctx = context("one");
    let a = ctx.path().join("src/a.txt");
    let t = Instant::now();
    let first = recipe(&b, ctx.path()).build(&store, "c:1").unwrap();
    let first_time = t.elapsed();
    assert_eq!(first.runs_executed(), 2);
    let t = Instant::now();
    let second = recipe(&b, ctx.path()).build(&store, "c:2").unwrap();
    let second_time = t.elapsed();
    eprintln!("first build {first_time:?}, cached rebuild {second_time:?}");
    assert_eq!(second.runs_executed(), 0);
    assert!(
        second
            .steps
            .iter()
            .filter(|s| s.layer.is_some())
            .all(|s| s.cached)
    );
    // Same layers: the random RUN did not run again.
    assert_eq!(first.image.layers(), second.image.layers());
    // Touching a source keeps the cache.
    let f = fs::File::options().write(true).open(&a).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(100))
        .unwrap();
    drop(f);
    let touched = recipe(&b, ctx.path()).build(&store, "c:3").unwrap();
    assert_eq!(touched.runs_executed(), 0);
    assert_eq!(touched.image.layers(), first.image.layers());
    // Mode change: invalidates COPY and everything after.
    fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
    let moded = recipe(&b, ctx.path()).build(&store, "c:4").unwrap();
    assert_eq!(moded.runs_executed(), 2);
    assert!(!moded.steps[0].cached);
    assert_ne!(
        moded.image.layers()[2],
        first.image.layers()[2],
        "random RUN re-ran"
    );
    // Content change: the same.
    fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&a, "two").unwrap();
    let changed = recipe(&b, ctx.path()).build(&store, "c:5").unwrap();
    assert_eq!(changed.runs_executed(), 2);
    let out = Container::builder(&store, &changed.image)
        .command("/bin/cat")
        .arg("/copied")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"two");
    // Path change (rename): invalidates.
    fs::rename(&a, ctx.path().join("src/b.txt")).unwrap();
    fs::write(&a, "two").unwrap();
    fs::remove_file(ctx.path().join("src/b.txt")).unwrap();
    let same = recipe(&b, ctx.path()).build(&store, "c:6").unwrap();
    assert_eq!(
        same.runs_executed(),
        0,
        "same content, mode and names: cached"
    );
    fs::rename(&a, ctx.path().join("src/b.txt")).unwrap();
    let err = recipe(&b, ctx.path()).build(&store, "c:7").unwrap_err();
    assert!(
        err.to_string().contains("a.txt"),
        "the RUN reads a.txt: {err}"
    );
    let renamed = Build::from_image(&b)
        .copy(Copy::new(ctx.path().join("src"), "/src/"))
        .run("cat /proc/sys/kernel/random/uuid > /random")
        .build(&store, "c:8")
        .unwrap();
    // (c:7 ran the renamed COPY and the random RUN before failing: cached now, but new.)
    assert_ne!(renamed.image.layers()[1], first.image.layers()[1]);
    assert_ne!(renamed.image.layers()[2], first.image.layers()[2]);
    // A later step change keeps the earlier ones cached.
    let later = Build::from_image(&b)
        .copy(Copy::new(ctx.path().join("src"), "/src/"))
        .run("cat /proc/sys/kernel/random/uuid > /random")
        .env("NEW", "1")
        .run("true")
        .build(&store, "c:9")
        .unwrap();
    assert!(later.steps[0].cached && later.steps[1].cached);
    assert!(!later.steps[3].cached);
    // The ENV is part of the key: changing it re-runs the RUN after it.
    let env2 = Build::from_image(&b)
        .copy(Copy::new(ctx.path().join("src"), "/src/"))
        .run("cat /proc/sys/kernel/random/uuid > /random")
        .env("NEW", "2")
        .run("true")
        .build(&store, "c:10")
        .unwrap();
    assert!(!env2.steps[3].cached);
}

#[test]
fn reproducible_in_two_stores() {
    if !can_run() {
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    fs::create_dir(ctx.path().join("app")).unwrap();
    fs::write(ctx.path().join("app/main.sh"), "echo main\n").unwrap();
    fs::set_permissions(
        ctx.path().join("app/main.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::write(ctx.path().join("README"), "readme").unwrap();
    let build = |store: &Store| {
        let b = base(store);
        Build::from_image(&b)
            .workdir("/srv")
            .copy(Copy::new(ctx.path().join("app"), "app/").chown("10:20"))
            .copy(Copy::new(ctx.path().join("README"), "/srv/README").chmod(0o444))
            .run("mkdir -p /srv/gen && echo deterministic > /srv/gen/out && touch /tmp/t")
            .env("MODE", "prod")
            .label("v", "1")
            .cmd(["/srv/app/main.sh"])
            .source_date_epoch(1_600_000_000)
            .build(store, "repro:1")
            .unwrap()
    };
    let s1 = Store::temporary().unwrap();
    let s2 = Store::temporary().unwrap();
    let r1 = build(&s1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(ctx.path().join("README"), "readme").unwrap();
    let r2 = build(&s2);
    assert_eq!(r1.image.layers(), r2.image.layers());
    assert_eq!(r1.image.id(), r2.image.id());
    assert_eq!(r1.image.manifest_digest(), r2.image.manifest_digest());
    assert_eq!(r1.image.created(), Some("2020-09-13T12:26:40Z"));
    assert!(
        r1.image
            .history()
            .iter()
            .skip(1)
            .all(|h| h.created.as_deref() == Some("2020-09-13T12:26:40Z"))
    );
}

#[test]
fn pruning_the_cache_drops_entries_whose_layers_were_collected() {
    if !can_run() {
        return;
    }
    let store = Store::temporary().unwrap();
    let b = base(&store);
    let ctx = context("one");
    recipe(&b, ctx.path()).build(&store, "keep:1").unwrap();
    fs::write(ctx.path().join("src/a.txt"), "two").unwrap();
    let gone = recipe(&b, ctx.path()).build(&store, "gone:1").unwrap();
    let cache_dir = store.layout().state().join("build-cache");
    let count = || fs::read_dir(&cache_dir).unwrap().count();
    let before = count();
    // An entry that is not an entry at all goes too.
    fs::write(cache_dir.join("ab".repeat(32)), b"not json").unwrap();
    assert_eq!(
        Build::prune_cache(&store).unwrap(),
        1,
        "only the unreadable one"
    );
    assert_eq!(count(), before);

    store.remove("gone:1").unwrap();
    store.gc().unwrap();
    let pruned = Build::prune_cache(&store).unwrap();
    // The second build's COPY, its RUN (random: a new layer) and the last RUN made layers no
    // image uses any more, and its image (recorded for a rebuild) is gone; the first build's
    // entries stay.
    assert_eq!(pruned, 4, "{:?}", gone.steps);
    assert_eq!(count(), before - 4);
    let again = recipe(&b, ctx.path()).build(&store, "gone:2").unwrap();
    assert_eq!(again.runs_executed(), 2, "pruned entries are misses");
    fs::write(ctx.path().join("src/a.txt"), "one").unwrap();
    let kept = recipe(&b, ctx.path()).build(&store, "keep:2").unwrap();
    assert_eq!(kept.runs_executed(), 0, "the kept entries still hit");
}

#[test]
fn build_args_are_in_the_environment_of_later_runs_only() {
    if !can_run() {
        return;
    }
    let store = Store::temporary().unwrap();
    let b = base(&store);
    let report = Build::from_image(&b)
        .run("echo \"[$A]\" > /before")
        .arg("A", "1")
        .env("B", "from env")
        .arg("B", "from arg")
        .run("echo \"$A $B\" > /after; echo '$A' >> /after")
        .cmd(["/bin/cat", "/before", "/after"])
        .build(&store, "args:1")
        .unwrap();
    let out = molde_container::Container::builder(&store, &report.image)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[]\n1 from env\n$A\n",
        "an ARG is seen from its step on, an ENV of the same name wins, the shell expands"
    );
    assert_eq!(report.image.env_var("A"), None, "not in the image's config");
    let created_by: Vec<String> = report
        .image
        .history()
        .iter()
        .filter_map(|h| h.created_by.clone())
        .collect();
    assert!(
        created_by
            .iter()
            .any(|c| c.starts_with("RUN |1 A=1 /bin/sh -c echo")),
        "{created_by:#?}"
    );
    // Another value: the RUN after it runs again, the one before does not.
    let again = Build::from_image(&b)
        .run("echo \"[$A]\" > /before")
        .arg("A", "2")
        .env("B", "from env")
        .arg("B", "from arg")
        .run("echo \"$A $B\" > /after; echo '$A' >> /after")
        .build(&store, "args:2")
        .unwrap();
    assert_eq!(again.runs_executed(), 1);
}
