//! OCI runtime bundles exported by molde (`ContainerBuilder::export_bundle`,
//! `Container::export_bundle`): the image's env, user, workdir, entrypoint and cmd and the
//! container's mounts and limits in a `config.json` built with oci-spec's runtime types, and
//! a rootfs copied from its union view. runc runs the bundle and prints what molde's own run
//! prints (stdout: `id`, `pwd`, env, mounts, limits; the exit code). crun 1.8 refuses a host
//! with cgroup v2 controllers in hybrid mode (this CI's) whatever the bundle, even with its
//! cgroup manager disabled; elsewhere it runs a bundle (with `--cgroup-manager=disabled`) and
//! must print what runc prints.

mod common;

use std::path::Path;
use std::process::Command;

use molde_container::{Container, ContainerBuilder, ContainerError, Status};
use molde_image::{Image, ImageBuilder, Store};

const SCRIPT: &str = "id; pwd; env | sort; cat /data/hello; echo tmpfs > /scratch/x && \
                      cat /scratch/x; grep -E 'open files|processes' /proc/self/limits; \
                      cat /state 2>/dev/null; exit 3";

fn can_run() -> bool {
    common::require(
        common::privileged(),
        "needs root to run containers and runc",
    ) && common::require(
        common::have_tool("runc"),
        "needs runc (apt-get install runc)",
    )
}

/// A temporary store and the [`image`] with `user` in it; `None` (saying why) where the test
/// cannot run.
fn setup(user: &str) -> Option<(Store, Image)> {
    if !can_run() {
        return None;
    }
    let store = Store::temporary().unwrap();
    let Some(image) = image(&store, user) else {
        assert!(common::require(false, "needs busybox-static"));
        return None;
    };
    Some((store, image))
}

/// The busybox image with an env, a workdir, a user, an entrypoint and a cmd in its config.
fn image(store: &Store, user: &str) -> Option<Image> {
    let base = common::busybox::image(store)?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o777);
    h.set_size(0);
    tar.append_data(&mut h, "work", &[][..]).unwrap();
    let layer = store
        .add_layer(&tar.into_inner().unwrap()[..])
        .unwrap()
        .layer;
    Some(
        store
            .commit(
                ImageBuilder::from_image(&base)
                    .layer(layer, "WORKDIR /work")
                    .env("FOO", "bar baz")
                    .working_dir("/work")
                    .user(user)
                    .entrypoint(["/bin/sh", "-c"])
                    .cmd([SCRIPT]),
            )
            .unwrap(),
    )
}

/// The container configuration both runs use: a bind mount, a tmpfs, limits.
fn configured(store: &Store, image: &Image, data: &Path) -> ContainerBuilder {
    Container::builder(store, image)
        .mount_bind_ro(data, "/data")
        .mount_tmpfs("/scratch", Some(1 << 20))
        .memory(64 << 20)
        .pids(50)
        .rlimit(molde_container::rlimit::Resource::RLIMIT_NOFILE, 512, 512)
}

/// Run the bundle in `dir` with `runtime` (`runc`, or `crun` with its extra options): exit
/// code, stdout, stderr.
fn run_bundle(runtime: &[&str], dir: &Path) -> (Option<i32>, String, String) {
    let state = tempfile::tempdir().unwrap();
    let id = format!("molde-export-{}", std::process::id());
    let out = Command::new(runtime[0])
        .args(&runtime[1..])
        .arg("--root")
        .arg(state.path())
        .args(["run", "--bundle"])
        .arg(dir)
        .arg(&id)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn data_dir() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello"), "bound from the host\n").unwrap();
    data
}

fn same_under_runc(user: &str, expect_id: &str) {
    let Some((store, image)) = setup(user) else {
        return;
    };
    let data = data_dir();
    let out = configured(&store, &image, data.path()).output().unwrap();
    let molde_out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        matches!(out.status, Status::Exited { code: Some(3), .. }),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bundle = tempfile::tempdir().unwrap();
    configured(&store, &image, data.path())
        .export_bundle(bundle.path())
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.path().join("config.json")).unwrap()).unwrap();
    let limits = &config["linux"]["resources"];
    assert_eq!(limits["memory"]["limit"], 64 << 20, "{config:#}");
    assert_eq!(limits["pids"]["limit"], 50, "{config:#}");
    let (code, runc_out, runc_err) = run_bundle(&["runc"], bundle.path());
    assert_eq!(code, Some(3), "{runc_err}");
    assert_eq!(molde_out, runc_out);
    for line in [
        expect_id,
        "/work",
        "FOO=bar baz",
        "bound from the host",
        "tmpfs",
        "Max open files            512                  512                  files     ",
    ] {
        assert!(
            molde_out.lines().any(|l| l == line),
            "{line:?} in {molde_out}"
        );
    }
    // No leftovers: the builder's container is gone.
    assert!(Container::list(&store).unwrap().is_empty());
}

#[test]
fn an_exported_image_runs_the_same_under_runc() {
    same_under_runc("", "uid=0(root) gid=0(root)");
}

#[test]
fn an_exported_image_with_a_user_runs_the_same_under_runc() {
    same_under_runc("appuser", "uid=1000(appuser) gid=1000(appuser)");
}

/// A container's writable layer goes into the bundle: a file copied into it is there under
/// runc; and crun (without cgroups: it refuses this host's hybrid layout) prints the same as
/// runc.
#[test]
fn an_exported_container_keeps_its_writable_layer() {
    let Some((store, image)) = setup("") else {
        return;
    };
    let data = data_dir();
    let state = data.path().join("state");
    std::fs::write(&state, "in the writable layer\n").unwrap();
    let mut c = Container::builder(&store, &image)
        .mount_bind_ro(data.path(), "/data")
        .mount_tmpfs("/scratch", None)
        .create()
        .unwrap();
    c.copy_in(&state, "/state").unwrap();
    let bundle = tempfile::tempdir().unwrap();
    c.export_bundle(bundle.path()).unwrap();
    let (code, runc_out, runc_err) = run_bundle(&["runc"], bundle.path());
    assert_eq!(code, Some(3), "{runc_err}");
    assert!(
        runc_out.contains("bound from the host\ntmpfs\n"),
        "{runc_out}"
    );
    assert!(runc_out.ends_with("in the writable layer\n"), "{runc_out}");

    // crun 1.8 refuses a host with cgroup v2 controllers in hybrid mode (this CI's), even
    // with its cgroup manager disabled: there, its refusal must be that one; elsewhere it
    // prints what runc printed.
    if common::require(
        common::have_tool("crun"),
        "needs crun (apt-get install crun)",
    ) {
        let (code, crun_out, crun_err) =
            run_bundle(&["crun", "--cgroup-manager=disabled"], bundle.path());
        if crun_err.contains("cgroups in hybrid mode not supported") {
            eprintln!(
                "crun refuses this host's hybrid cgroup layout: {}",
                crun_err.trim()
            );
        } else {
            assert_eq!(code, Some(3), "{crun_err}");
            assert_eq!(crun_out, runc_out);
        }
    }
}

/// What a bundle cannot say is refused, naming it: bridge networks.
#[test]
fn a_container_on_a_network_is_refused() {
    let Some((store, image)) = setup("") else {
        return;
    };
    let net = molde_container::network::Network::create(&store, "export-refused").unwrap();
    let bundle = tempfile::tempdir().unwrap();
    let err = Container::builder(&store, &image)
        .join(&net)
        .export_bundle(bundle.path())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ContainerError::Export {
                what: "networks",
                ..
            }
        ),
        "{err}"
    );
    assert!(Container::list(&store).unwrap().is_empty());
    net.remove(&store).unwrap();
}
