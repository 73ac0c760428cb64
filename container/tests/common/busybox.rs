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
    std::fs::copy(&busybox, bin.join("busybox")).unwrap();
    super::settle(&bin.join("busybox"), &["true"]);
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
    rootfs_or_skip(extra)
}

/// The busybox rootfs, or `None` when busybox-static is missing (said, or a failure under
/// `MOLDE_REQUIRE_ALL=1`).
fn rootfs_or_skip(extra: &[&str]) -> Option<tempfile::TempDir> {
    let root = rootfs(extra);
    if !super::require(
        root.is_some(),
        "needs busybox-static (apt-get install busybox-static)",
    ) {
        return None;
    }
    root
}

/// [`ready`], rootless too: a busybox rootfs when this test can launch containers as root, or
/// as a user with subordinate id ranges (xtask's unprivileged pass), whose specs from [`spec`]
/// get a user namespace with those ranges.
pub fn ready_rootless_too(extra: &[&str]) -> Option<tempfile::TempDir> {
    if !super::containers_or_skip() {
        return None;
    }
    rootfs_or_skip(extra)
}

/// `Spec::new(root, program)`, in a user namespace with this process's id maps when it is not
/// privileged (as molde's containers are).
pub fn spec(root: &Path, program: &str) -> Spec {
    let mut spec = Spec::new(root, program);
    spec.user_namespace = molde_container::launch::IdMaps::for_current_process().cloned();
    spec
}

/// `sh -c script` in `root`, stdout and stderr piped.
pub fn sh(root: &Path, script: &str) -> Spec {
    let mut spec = spec(root, "sh");
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

/// An image of static busybox with a link per applet, `/etc/passwd` (root, and `appuser`
/// uid 1000) and `/etc/group` (with `tty`, gid 5), `PATH` set, `cmd` `/bin/sh`; `None` when
/// busybox-static is not installed.
pub fn image(store: &molde_container::image::Store) -> Option<molde_container::image::Image> {
    let busybox = molde_container::image::base::static_busybox()?;
    let list = std::process::Command::new(&busybox)
        .arg("--list")
        .output()
        .unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, mode: u32, body: &[u8], link: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(body.len() as u64);
        h.set_mtime(0);
        if kind == tar::EntryType::Symlink {
            tar.append_link(&mut h, path, link).unwrap();
        } else {
            h.set_cksum();
            tar.append_data(&mut h, path, body).unwrap();
        }
    };
    for (dir, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("root", 0o700),
        ("home", 0o755),
        ("tmp", 0o1777),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
    ] {
        entry(dir, tar::EntryType::Directory, mode, b"", "");
    }
    let body = std::fs::read(&busybox).unwrap();
    entry("bin/busybox", tar::EntryType::Regular, 0o755, &body, "");
    entry(
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nappuser:x:1000:1000::/home:/bin/sh\n",
        "",
    );
    entry(
        "etc/group",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:\ntty:x:5:\nappuser:x:1000:\n",
        "",
    );
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            entry(
                &format!("bin/{applet}"),
                tar::EntryType::Symlink,
                0o777,
                b"",
                "busybox",
            );
        }
    }
    let bytes = tar.into_inner().unwrap();
    let layer = store.add_layer(&bytes[..]).unwrap().layer;
    Some(
        store
            .commit(
                molde_container::image::ImageBuilder::new()
                    .layer(layer, "busybox")
                    .env("PATH", "/bin")
                    .env("HOME", "/root")
                    .cmd(["/bin/sh"]),
            )
            .unwrap(),
    )
}
