//! The launcher's user-namespace path for real: this test binary, copied where `nobody` can run
//! it, re-runs its helper test as uid/gid 65534 (through setpriv(1)), which launches containers
//! with `IdMaps::rootless()`.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use molde_container::launch::{self, ExitStatus, IdMaps, Spec, Stdio};
use molde_layerfs::mount::{Mount, OverlayMount};

/// Tells the helper test where its files are (and that it was started by the outer test).
const ROOTLESS_ENV: &str = "MOLDE_TEST_ROOTLESS_DIR";
/// The unprivileged user the helper runs as.
const NOBODY: u32 = 65534;

/// A busybox tree at `dir` (which exists): /bin/busybox and applet links, empty mount points.
fn busybox_tree(busybox: &Path, dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for name in [
        "sh", "true", "false", "cat", "echo", "hostname", "ls", "id", "sleep", "ps", "touch",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(name)).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir(dir.join(d)).unwrap();
    }
    // As in images: anyone may write in /tmp (the namespace's root is not the owner here).
    chmod(&dir.join("tmp"), 0o1777);
}

/// `chown -Rh uid:uid path`.
fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Containers in a user namespace, as an unprivileged user: `/bin/true`, exit codes, piped
/// output, hostname, PID 1, loopback only, and an overlay rootfs (`userxattr`) whose writes
/// land in the upper directory, owned by the unprivileged user.
#[test]
fn rootless_containers_as_nobody() {
    if !common::require(common::have_tool("setpriv"), "needs setpriv(1)")
        || !common::require(common::privileged(), "needs root to become nobody")
    {
        return;
    }
    let Some(busybox) = molde_container::image::base::static_busybox() else {
        common::require(
            false,
            "needs busybox-static (apt-get install busybox-static)",
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    chmod(base, 0o755);
    let exe = base.join("launch_rootless");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    common::settle(&exe, &["--list"]);
    chmod(&exe, 0o755);
    // A plain rootfs (root-owned: unmapped in the namespace, read-only to it) ...
    std::fs::create_dir(base.join("rootfs")).unwrap();
    busybox_tree(&busybox, &base.join("rootfs"));
    // ... and an overlay whose layers the user owns, as a rootless unpack makes them (a
    // copy-up of a file owned by an unmapped id fails with EOVERFLOW).
    std::fs::create_dir(base.join("lower")).unwrap();
    busybox_tree(&busybox, &base.join("lower"));
    chown_tree(&base.join("lower"), NOBODY);
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir(base.join(d)).unwrap();
        std::os::unix::fs::chown(base.join(d), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();

    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .args([
            "rootless_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOTLESS_ENV, base)
        .env_remove("MOLDE_REQUIRE_ALL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the helper ran:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("rootless child: checked"),
        "{stdout}\n{stderr}"
    );

    // The container's write is in the upper dir, owned by the unprivileged user outside.
    let written = base.join("upper/tmp/written");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "from inside\n");
    let meta = std::fs::metadata(&written).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
    assert!(
        !base.join("lower/tmp/written").exists(),
        "the lower is untouched"
    );
    assert_eq!(
        std::fs::read_dir(base.join("merged")).unwrap().count(),
        0,
        "nothing stays mounted on the host"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        before
    );
}

fn sh(root: &Path, script: &str) -> Spec {
    let mut spec = Spec::new(root, "sh");
    spec.args = vec![OsString::from("-c"), OsString::from(script)];
    spec.stdout = Stdio::Piped;
    spec.stderr = Stdio::Piped;
    spec.user_namespace = Some(IdMaps::rootless());
    spec
}

fn run(spec: &Spec) -> (ExitStatus, String, String) {
    let process = launch::spawn(spec).unwrap_or_else(|e| panic!("spawn: {e}"));
    let (status, out, err) = process.wait_with_output().unwrap();
    (
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Runs as `nobody` for [`rootless_containers_as_nobody`]; does nothing (and says so) when
/// run any other way.
#[test]
#[ignore = "helper: run as nobody by rootless_containers_as_nobody"]
fn rootless_child() {
    let base = std::env::var_os(ROOTLESS_ENV)
        .map(PathBuf::from)
        .expect("a helper: started by rootless_containers_as_nobody, which sets its environment");
    assert!(!common::privileged(), "must run unprivileged");
    assert_eq!(nix::unistd::geteuid().as_raw(), NOBODY);
    let rootfs = base.join("rootfs");

    let mut spec = Spec::new(&rootfs, "/bin/true");
    spec.user_namespace = Some(IdMaps::rootless());
    let mut p = launch::spawn(&spec).unwrap_or_else(|e| panic!("spawn /bin/true: {e}"));
    assert_eq!(p.wait().unwrap(), ExitStatus::Exited(0));

    assert_eq!(run(&sh(&rootfs, "exit 42")).0, ExitStatus::Exited(42));
    let (status, out, err) = run(&sh(&rootfs, "echo out; echo err >&2; exit 3"));
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (ExitStatus::Exited(3), "out\n", "err\n")
    );

    let mut spec = sh(
        &rootfs,
        "hostname; echo $$; id -u; id -g; ls /sys/class/net; echo /proc/[0-9]*",
    );
    spec.hostname = Some("rootless".into());
    let (status, out, err) = run(&spec);
    assert!(status.success(), "{status}: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["rootless", "1", "0", "0", "lo", "/proc/1"],
        "hostname, PID 1, root inside, only lo, only the shell in /proc: {out}"
    );

    // Root in the user namespace holds the default set there, inheriting and ambient none
    // (issue 11: the same rules as outside a user namespace).
    let (status, out, err) = run(&sh(&rootfs, "cat /proc/self/status"));
    assert!(status.success(), "{status}: {err}");
    let caps: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        caps,
        [
            "CapInh: 0000000000000000",
            "CapPrm: 00000000a00425fb",
            "CapEff: 00000000a00425fb",
            "CapBnd: 00000000a00425fb",
            "CapAmb: 0000000000000000",
        ],
        "{out}"
    );

    // Overlay rootfs with userxattr: a write lands in the upper dir.
    let merged = base.join("merged");
    let mut spec = sh(
        &merged,
        "echo 'from inside' > /tmp/written && cat /tmp/written && ls /bin/busybox",
    );
    spec.rootfs_mounts = vec![Mount::Overlay(OverlayMount {
        lowerdirs: vec![base.join("lower")],
        upperdir: Some(base.join("upper")),
        workdir: Some(base.join("work")),
        userxattr: true,
        volatile: false,
    })];
    let (status, out, err) = run(&spec);
    assert!(status.success(), "{status}: {err}");
    assert_eq!(out, "from inside\n/bin/busybox\n");
    eprintln!("rootless child: checked");
}
