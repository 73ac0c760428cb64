//! The default seccomp profile for real (issue 11): a static helper (tests/data/syscalls.c,
//! built with gcc) tries each escape class inside a container and prints the errno of each
//! call. Under the default profile each fails with EPERM; unconfined, the ones that need no
//! capability go through (so the filter, not the kernel, refused them); the profile's
//! capability-dependent rules and argument filters; exec'd processes; a profile of the
//! caller's in Docker's JSON.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use molde_container::launch::{self, Capability, ExecSpec, Spec, Stdio};
use molde_container::seccomp::Seccomp;

/// The escape classes: each must fail with EPERM under the default profile.
const ESCAPES: &[&str] = &[
    "keyctl",
    "add_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "open_by_handle_at",
    "mount",
    "unshare_user",
    "clone_newuser",
    "personality_bad",
    "socket_vsock",
];
const EPERM: i32 = 1;
const ENOSYS: i32 = 38;

/// A busybox rootfs with the helper as /bin/syscalls; `None` when the test cannot run.
fn ready() -> Option<tempfile::TempDir> {
    if !common::require(
        common::have_tool("gcc"),
        "needs gcc (apt-get install gcc libc6-dev)",
    ) {
        return None;
    }
    let root = common::busybox::ready_rootless_too(&[])?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/syscalls.c");
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(root.path().join("bin/syscalls"))
        .arg(&source)
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc -static: {out:?}");
    Some(root)
}

/// The helper's report: errno by call name.
fn parse(out: &str) -> BTreeMap<String, i32> {
    out.lines()
        .filter_map(|l| {
            let (name, errno) = l.split_once(' ')?;
            Some((name.to_owned(), errno.parse().ok()?))
        })
        .collect()
}

fn helper(root: &Path, f: impl FnOnce(&mut Spec)) -> BTreeMap<String, i32> {
    let mut spec = common::busybox::spec(root, "/bin/syscalls");
    spec.stdout = Stdio::Piped;
    spec.stderr = Stdio::Piped;
    f(&mut spec);
    let (status, out, err) = common::busybox::run(&spec);
    assert!(status.success(), "{status}: {out}\n{err}");
    parse(&out)
}

fn assert_escapes_fail(got: &BTreeMap<String, i32>, what: &str) {
    for call in ESCAPES {
        assert_eq!(got.get(*call), Some(&EPERM), "{what}: {call} in {got:?}");
    }
}

#[test]
fn the_default_profile_refuses_each_escape_with_eperm() {
    let Some(root) = ready() else { return };
    let got = helper(root.path(), |_| {});
    assert_escapes_fail(&got, "default profile, root");
    // clone3 answers ENOSYS (libc then falls back to clone, whose flags a filter can see);
    // what the profile allows still works.
    assert_eq!(got["clone3"], ENOSYS, "{got:?}");
    for allowed in ["personality_query", "socket_unix", "getpid", "clone_plain"] {
        assert_eq!(got[allowed], 0, "{allowed} in {got:?}");
    }
    // As a non-root user too.
    let got = helper(root.path(), |s| {
        s.uid = 1000;
        s.gid = 1000;
    });
    assert_escapes_fail(&got, "default profile, uid 1000");
}

#[test]
fn unconfined_lets_through_what_the_kernel_allows() {
    let Some(root) = ready() else { return };
    let got = helper(root.path(), |s| s.seccomp = Seccomp::Unconfined);
    // No capability is needed for these: refused above by the filter alone. (clone_newuser
    // comes after unshare_user, in a user namespace where the helper's uid is unmapped: the
    // kernel refuses it there.)
    let free = [
        "keyctl",
        "add_key",
        "userfaultfd",
        "unshare_user",
        "personality_bad",
        "socket_vsock",
        "clone3",
    ];
    for call in free {
        assert_eq!(got[call], 0, "unconfined: {call} in {got:?}");
    }
}

#[test]
fn capability_dependent_rules_follow_the_containers_capabilities() {
    let Some(root) = ready() else { return };
    // With CAP_SYS_ADMIN the profile allows mount, unshare, clone3 (as Docker's does for
    // --cap-add SYS_ADMIN): the kernel then decides.
    let got = helper(root.path(), |s| {
        s.capabilities.push(Capability::CAP_SYS_ADMIN)
    });
    assert_eq!(got["mount"], 0, "{got:?}");
    assert_eq!(got["unshare_user"], 0, "{got:?}");
    assert_eq!(got["clone3"], 0, "{got:?}");
    // Still refused: not tied to CAP_SYS_ADMIN.
    for call in [
        "keyctl",
        "add_key",
        "kexec_load",
        "personality_bad",
        "socket_vsock",
    ] {
        assert_eq!(got[call], EPERM, "{call} in {got:?}");
    }
}

#[test]
fn exec_d_processes_are_filtered_too() {
    let Some(root) = ready() else { return };
    let mut spec = common::busybox::sh(root.path(), "sleep 30");
    spec.stdout = Stdio::Null;
    let mut target = launch::spawn(&spec).unwrap();
    let mut exec = ExecSpec::new("/bin/syscalls");
    exec.stdout = Stdio::Piped;
    let p = launch::exec(target.pid(), &exec).unwrap();
    let (status, out, _) = p.wait_with_output().unwrap();
    assert!(status.success());
    assert_escapes_fail(&parse(&String::from_utf8_lossy(&out)), "exec");
    target.kill().unwrap();
    target.wait().unwrap();
}

#[test]
fn a_profile_of_ones_own_in_dockers_json() {
    let Some(root) = ready() else { return };
    let json = br#"{
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99},
            {"names": ["keyctl"], "action": "SCMP_ACT_ERRNO",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}
        ]
    }"#;
    let profile = Seccomp::from_json(json).unwrap();
    let got = helper(root.path(), |s| s.seccomp = profile.clone());
    assert_eq!(got["getpid"], 99, "{got:?}");
    assert_eq!(got["keyctl"], EPERM, "{got:?}");
    assert_eq!(got["socket_unix"], 97, "AF_UNIX is 1: {got:?}");
    assert_ne!(got["socket_vsock"], 97, "other families pass: {got:?}");
    assert_eq!(got["add_key"], 0, "allowed by default: {got:?}");
    // With no_new_privs off (filter installed before the ids change) as a non-root user.
    let got = helper(root.path(), |s| {
        s.seccomp = profile;
        s.no_new_privs = false;
        s.uid = 1000;
    });
    assert_eq!(got["getpid"], 99, "{got:?}");
}

#[test]
fn a_bad_profile_is_a_typed_error() {
    let err = Seccomp::from_json(br#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap_err();
    assert!(err.to_string().contains("not JSON of Docker's"), "{err}");
}
