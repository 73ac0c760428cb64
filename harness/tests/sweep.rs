//! A test process killed with SIGKILL leaves nothing that the next harness opened does not
//! remove; a live process's containers are never touched.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use molde_container::Container;
use molde_harness::Harness;

mod common;
use common::require;

fn image(harness: &Harness) -> molde_image::Image {
    let bins: Vec<&Path> = ["/bin/sh", "/bin/sleep"].iter().map(Path::new).collect();
    molde_image::base::from_host(harness.store(), &bins).unwrap()
}

/// Mounts of this mount namespace under `root`.
fn mounts_under(root: &Path) -> usize {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&root)))
        .count()
}

/// Run by `a_killed_test_process_leaves_nothing` in a child process: starts two containers
/// in the harness at `$SWEEP_ROOT`, says so, and sleeps until killed.
#[test]
#[ignore = "a helper: killed on purpose"]
fn helper_starts_containers_and_waits_to_be_killed() {
    let harness = Harness::open(std::env::var_os("SWEEP_ROOT").unwrap()).unwrap();
    let image = image(&harness);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            harness
                .start(harness.container(&image).command("/bin/sleep").arg("600"))
                .unwrap(),
        );
    }
    println!("STARTED");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

#[test]
fn a_killed_test_process_leaves_nothing() {
    if !require(
        nix::unistd::geteuid().is_root(),
        "needs root to mount overlay writable layers",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("h");
    let harness = Harness::open(&root).unwrap();
    // A container of this (live) process: the sweep must leave it alone.
    let image = image(&harness);
    let mut mine = harness
        .start(harness.container(&image).command("/bin/sleep").arg("600"))
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_starts_containers_and_waits_to_be_killed",
            "--nocapture",
        ])
        .env("SWEEP_ROOT", &root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("STARTED") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the helper ended early"
        );
    }
    assert_eq!(Container::list(harness.store()).unwrap().len(), 3);
    assert!(
        mounts_under(&root) >= 3,
        "ephemeral writable layers are tmpfs mounts"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let swept = Harness::open(&root).unwrap().sweep().unwrap();
    // (Opening swept already; a second sweep finds nothing.)
    assert_eq!(swept, 0);
    let left = Container::list(harness.store()).unwrap();
    assert_eq!(
        left.len(),
        1,
        "only this process's container is left: {left:?}"
    );
    assert_eq!(left[0].id, mine.id());
    assert_eq!(
        mounts_under(&root),
        1,
        "the killed process's tmpfs mounts are gone"
    );
    assert_eq!(
        std::fs::read_dir(root.join("molde/harness/owned"))
            .unwrap()
            .count(),
        1
    );
    assert!(matches!(
        mine.status().unwrap(),
        molde_container::Status::Running
    ));
    drop(mine);
    assert_eq!(mounts_under(&root), 0);
    assert!(Container::list(harness.store()).unwrap().is_empty());
}
