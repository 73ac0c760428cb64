//! OCI runtime bundles: a `config.json` as `runc spec` writes it, plus a busybox rootfs, runs
//! under molde's launcher (`launch::spec_from_bundle`) and under runc itself, and both print
//! the same (user and groups, working directory, environment, hostname, no_new_privs, exit
//! code).

mod common;

use std::path::Path;
use std::process::Command;

use molde_container::launch::{self, BundleError, ExitStatus, Stdio};

const SCRIPT: &str = "id; pwd; echo \"FOO=$FOO\"; env | sort; hostname; \
                      grep NoNewPrivs /proc/self/status; ls /; exit 3";

/// `runc spec` in `dir`, its root pointed at `rootfs`, its process made to run [`SCRIPT`].
fn bundle(dir: &Path, rootfs: &Path) {
    let ok = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "runc spec");
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
    let p = &mut config["process"];
    p["terminal"] = false.into();
    p["args"] = serde_json::json!(["sh", "-c", SCRIPT]);
    p["env"].as_array_mut().unwrap().push("FOO=bar baz".into());
    p["cwd"] = "/tmp".into();
    p["user"] = serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]});
    config["hostname"] = "bundled".into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[test]
fn a_runc_spec_bundle_runs_the_same_under_molde_and_runc() {
    let Some(rootfs) = common::busybox::ready(&["env", "sort", "grep", "pwd"]) else {
        return;
    };
    if !common::require(
        common::have_tool("runc"),
        "needs runc (apt-get install runc)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path(), rootfs.path());

    let mut spec = launch::spec_from_bundle(dir.path()).unwrap();
    assert!(spec.readonly_rootfs, "runc spec's root is read-only");
    spec.stdout = Stdio::Piped;
    spec.stderr = Stdio::Piped;
    let (status, molde_out, molde_err) = common::busybox::run(&spec);
    assert_eq!(status, ExitStatus::Exited(3), "{molde_err}");

    let state = tempfile::tempdir().unwrap();
    let id = format!("molde-bundle-{}", std::process::id());
    let runc = Command::new("runc")
        .arg("--root")
        .arg(state.path())
        .args(["run", "--bundle"])
        .arg(dir.path())
        .arg(&id)
        .output()
        .unwrap();
    let runc_out = String::from_utf8_lossy(&runc.stdout);
    assert_eq!(
        runc.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&runc.stderr)
    );
    assert_eq!(molde_out, runc_out);
    for line in [
        "uid=1000 gid=1000 groups=10,20",
        "/tmp",
        "FOO=bar baz",
        "bundled",
        "NoNewPrivs:\t1",
    ] {
        assert!(
            molde_out.lines().any(|l| l == line),
            "{line} in {molde_out}"
        );
    }
}

#[test]
fn what_the_launcher_cannot_honour_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    if !common::require(
        common::have_tool("runc"),
        "needs runc (apt-get install runc)",
    ) {
        return;
    }
    // `runc spec` asks for a terminal.
    assert!(
        Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success()
    );
    match launch::spec_from_bundle(dir.path()) {
        Err(BundleError::Unsupported { what, detail }) => {
            assert_eq!(what, "process.terminal");
            assert!(detail.contains("false"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // A config that is not one.
    std::fs::write(dir.path().join("config.json"), "{").unwrap();
    assert!(matches!(
        launch::spec_from_bundle(dir.path()),
        Err(BundleError::Config { .. })
    ));
}
