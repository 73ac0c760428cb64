//! The opt-in Landlock ruleset for real (issue 11): in a busybox container whose ruleset
//! grants `/` read-only and `/tmp` and `/dev` read-write, root itself cannot write outside
//! them (EACCES, "Permission denied"), can inside; the same for what its shell forks and
//! execs, for a process exec'd into the running container, and through the container API
//! (`ContainerBuilder::landlock`, kept in the record for exec). A path the container lacks is
//! a typed error naming it.

mod common;

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

#[test]
fn the_container_api_keeps_the_ruleset_for_exec() {
    let Some(_root) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = molde_container::image::Store::open(dir.path()).unwrap();
    let Some(image) = common::busybox::image(&store) else {
        return;
    };
    let mut c = molde_container::Container::builder(&store, &image)
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
