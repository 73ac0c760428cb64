//! The opt-in Landlock ruleset for real (issue 11): in a busybox container whose ruleset
//! grants `/` read-only and `/tmp` and `/dev` read-write, root itself cannot write outside
//! them (EACCES, "Permission denied"), can inside; the same for what its shell forks and
//! execs, for a process exec'd into the running container, and through the container API
//! (`ContainerBuilder::landlock`, kept in the record for exec), for a rootless user's
//! containers (run as `molde-rootless`), and for a build's `RUN` step (`Run::landlock`). A path
//! the container lacks is a typed error naming it.

mod common;

use molde_container::Build;
use molde_container::build::Run;
use molde_container::landlock::{self, Landlock};
use molde_container::launch::{self, ExecSpec, Stage, Stdio};

/// A busybox rootfs when Landlock is there to test; `None` when the test cannot run.
fn ready() -> Option<tempfile::TempDir> {
    if !common::require(
        landlock::abi().is_ok(),
        "needs Landlock (Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK, `landlock` in lsm=)",
    ) {
        return None;
    }
    common::busybox::ready_rootless_too(&[])
}

fn rules() -> Landlock {
    Landlock::new()
        .read_only(["/"])
        .read_write(["/tmp", "/dev"])
}

/// Writes outside and inside the ruleset, by the shell itself and by a shell it forks and
/// execs; each result on a line of its own.
const SCRIPT: &str = "\
    echo a > /etc/outside; echo \"outside=$?\"; \
    echo b > /tmp/inside && echo \"inside=$(cat /tmp/inside)\"; \
    mkdir /bin/newdir; echo \"mkdir=$?\"; \
    /bin/sh -c 'echo c > /etc/child; echo \"child_outside=$?\"; \
                echo d > /tmp/child && echo child_inside=ok'; \
    cat /etc/passwd >/dev/null 2>&1; ls / >/dev/null && echo read=ok";

#[test]
fn writes_outside_the_ruleset_fail_with_eacces_inside_work_forked_children_too() {
    let Some(root) = ready() else { return };
    let mut spec = common::busybox::sh(root.path(), SCRIPT);
    spec.landlock = Some(rules());
    let (status, out, err) = common::busybox::run(&spec);
    assert!(status.success(), "{status}: {out}\n{err}");
    for line in [
        "outside=1",
        "inside=b",
        "mkdir=1",
        "child_outside=1",
        "child_inside=ok",
        "read=ok",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} in {out}\n{err}");
    }
    // EACCES, not EPERM or EROFS: Landlock refused, as root with every capability.
    assert_eq!(err.matches("Permission denied").count(), 3, "{err}");
    assert!(!root.path().join("etc/outside").exists());
    assert!(!root.path().join("etc/child").exists());
    assert!(root.path().join("tmp/child").exists());
    // Without the ruleset the same writes go through.
    let spec = common::busybox::sh(root.path(), SCRIPT);
    let (status, out, err) = common::busybox::run(&spec);
    assert!(status.success(), "{status}: {out}\n{err}");
    assert!(out.lines().any(|l| l == "outside=0"), "{out}\n{err}");
}

#[test]
fn a_process_exec_d_into_the_container_is_restricted_too() {
    let Some(root) = ready() else { return };
    let mut spec = common::busybox::sh(root.path(), "sleep 30");
    spec.stdout = Stdio::Null;
    spec.landlock = Some(rules());
    let mut target = launch::spawn(&spec).unwrap();
    let mut exec = ExecSpec::new("/bin/sh");
    exec.args = vec![
        "-c".into(),
        "echo x > /etc/exec_outside; echo \"outside=$?\"; echo y > /tmp/exec_inside; \
         echo \"inside=$?\""
            .into(),
    ];
    exec.stdout = Stdio::Piped;
    exec.stderr = Stdio::Piped;
    exec.landlock = Some(rules());
    let (status, out, err) = launch::exec(target.pid(), &exec)
        .unwrap()
        .wait_with_output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    assert!(status.success(), "{status}: {out}\n{err}");
    assert!(
        out.contains("outside=1") && out.contains("inside=0"),
        "{out}\n{err}"
    );
    assert!(err.contains("Permission denied"), "{err}");
    target.kill().unwrap();
    target.wait().unwrap();
}

#[test]
fn a_path_the_container_lacks_is_a_typed_error_naming_it() {
    let Some(root) = ready() else { return };
    let mut spec = common::busybox::sh(root.path(), "true");
    spec.landlock = Some(Landlock::new().read_only(["/", "/no/such/dir"]));
    let e = launch::spawn(&spec).unwrap_err();
    assert_eq!(e.stage, Stage::Landlock, "{e}");
    assert_eq!(e.errno, nix::errno::Errno::ENOENT, "{e}");
    assert_eq!(e.path.as_deref(), Some("/no/such/dir".as_ref()), "{e}");
    assert!(e.to_string().contains("not in the container"), "{e}");
}

/// A container of `image` started with the ruleset (through the container API, which keeps
/// it in the record): a process exec'd into it cannot write `/etc`, can write `/tmp`.
fn exec_is_confined(store: &molde_container::image::Store, image: &molde_container::image::Image) {
    let mut c = molde_container::Container::builder(store, image)
        .command("sleep")
        .arg("30")
        .landlock(rules())
        .start()
        .unwrap();
    let out = c
        .exec("sh")
        .arg("-c")
        .arg("echo x > /etc/f; echo \"etc=$?\"; echo y > /tmp/f; echo \"tmp=$?\"")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("etc=1") && text.contains("tmp=0"), "{out:?}");
    c.kill().unwrap();
    c.remove().unwrap();
}

#[test]
fn the_container_api_keeps_the_ruleset_for_exec() {
    let Some(_root) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = molde_container::image::Store::open(dir.path()).unwrap();
    let Some(image) = common::busybox::image(&store) else {
        return;
    };
    exec_is_confined(&store, &image);
}

#[test]
fn in_a_user_namespace_the_ruleset_holds_too() {
    let Some(root) = ready() else { return };
    let mut spec = common::busybox::sh(
        root.path(),
        "echo a > /etc/userns; echo \"outside=$?\"; echo b > /tmp/userns; echo \"inside=$?\"",
    );
    spec.user_namespace = Some(molde_container::launch::IdMaps::rootless());
    spec.landlock = Some(rules());
    let (status, out, err) = common::busybox::run(&spec);
    assert!(status.success(), "{status}: {out}\n{err}");
    assert!(
        out.contains("outside=1") && out.contains("inside=0"),
        "{out}\n{err}"
    );
    assert!(err.contains("Permission denied"), "{err}");
}

/// As an unprivileged user (its containers in a user namespace of its subordinate ranges,
/// rootless overlay, no privilege on the host), the ruleset holds for the first process and
/// for an exec'd one.
#[test]
fn a_rootless_user_s_containers_are_confined_too() {
    if !common::rootless::as_unprivileged_user("a_rootless_user_s_containers_are_confined_too") {
        return;
    }
    if !common::require(
        landlock::abi().is_ok(),
        "needs Landlock (Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK, `landlock` in lsm=)",
    ) {
        return;
    }
    assert!(!common::privileged(), "runs unprivileged");
    let dir = tempfile::tempdir().unwrap();
    let store = molde_container::image::Store::open(dir.path()).unwrap();
    let image = common::busybox::image(&store);
    if !common::require(image.is_some(), "needs busybox-static") {
        return;
    }
    let image = image.unwrap();
    let out = molde_container::Container::builder(&store, &image)
        .command("sh")
        .arg("-c")
        .arg(SCRIPT)
        .landlock(rules())
        .output()
        .unwrap();
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    for line in [
        "outside=1",
        "inside=b",
        "mkdir=1",
        "child_outside=1",
        "read=ok",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}\n{err}");
    }
    assert_eq!(err.matches("Permission denied").count(), 3, "{err}");
    exec_is_confined(&store, &image);
}

/// A build's `RUN` step under a ruleset: writes outside it fail the step (EACCES), inside
/// they make the layer; the ruleset is part of the step's cache key.
#[test]
fn a_build_run_step_is_confined_too() {
    let Some(_root) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = molde_container::image::Store::open(dir.path()).unwrap();
    let Some(image) = common::busybox::image(&store) else {
        return;
    };
    let step = || Run::shell("echo b > /tmp/inside && cat /etc/passwd > /dev/null");
    let report = Build::from_image(&image)
        .run_with(step().landlock(rules()))
        .build(&store, "confined:1")
        .unwrap();
    assert_eq!(report.runs_executed(), 1);
    // The same command without the ruleset is another step: it runs, not a cache hit.
    let report = Build::from_image(&image)
        .run_with(step())
        .build(&store, "free:1")
        .unwrap();
    assert_eq!(report.runs_executed(), 1, "the ruleset is in the cache key");
    let e = Build::from_image(&image)
        .run_with(Run::shell("echo a > /etc/outside").landlock(rules()))
        .build(&store, "refused:1")
        .unwrap_err();
    assert!(e.to_string().contains("Permission denied"), "{e}");
    // Without it the same write goes through.
    Build::from_image(&image)
        .run_with(Run::shell("echo a > /etc/outside"))
        .build(&store, "allowed:1")
        .unwrap();
}
