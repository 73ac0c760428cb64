//! A rootfs of static busybox for the launcher's tests, and small helpers to run in it.

use std::ffi::OsString;
use std::path::Path;

use molde_container::launch::{self, ExitStatus, Spec, Stdio};

/// The busybox applets every test rootfs links, plus the ones a test file asks for.
const APPLETS: &[&str] = &[
    "sh", "true", "false", "cat", "echo", "hostname", "ls", "mount", "ip", "sleep", "ps",
];

/// A rootfs directory with static busybox as /bin/sh and friends (and `extra` applets).
pub fn rootfs(extra: &[&str]) -> Option<tempfile::TempDir> {
    let busybox = molde_container::image::base::static_busybox()?;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for name in APPLETS.iter().chain(extra) {
        let link = bin.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    Some(dir)
}

/// A busybox rootfs when this test can launch containers as root; `None` (skipped, or a
/// failure under `MOLDE_REQUIRE_ALL=1`) otherwise.
pub fn ready(extra: &[&str]) -> Option<tempfile::TempDir> {
    if !super::require(
        super::privileged(),
        "needs root to create namespaces and mount",
    ) {
        return None;
    }
    let root = rootfs(extra);
    if !super::require(
        root.is_some(),
        "needs busybox-static (apt-get install busybox-static)",
    ) {
        return None;
    }
    root
}

/// `sh -c script` in `root`, stdout and stderr piped.
pub fn sh(root: &Path, script: &str) -> Spec {
    let mut spec = Spec::new(root, "sh");
    spec.args = vec![OsString::from("-c"), OsString::from(script)];
    spec.stdout = Stdio::Piped;
    spec.stderr = Stdio::Piped;
    spec
}

/// Spawn `spec` and wait: its status, stdout and stderr.
pub fn run(spec: &Spec) -> (ExitStatus, String, String) {
    let process = launch::spawn(spec).unwrap_or_else(|e| panic!("spawn: {e}"));
    let (status, out, err) = process.wait_with_output().unwrap();
    (
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}
