//! Soak (issue 11; `cargo xtask soak`, not part of `cargo test`): thousands of
//! create / start / exec / stop / remove cycles across 4 threads, with random SIGKILLs of
//! containers and of a second process sharing the store. Afterwards the host's mounts, this
//! process's children and descriptors, molde's cgroups and the store's containers are as
//! before, and the image still runs.
//!
//! `MOLDE_SOAK_CYCLES` sets the total (default 2000).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio as StdStdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use molde_container::{Container, ContainerError, Stdio};
use molde_image::{Image, Store};

const THREADS: usize = 4;
/// Tells the helper (the second process) where the store is.
const STORE_ENV: &str = "MOLDE_SOAK_STORE";

fn cycles() -> usize {
    std::env::var("MOLDE_SOAK_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

/// A small xorshift, seeded per thread: which cycles kill, and when.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn image(store: &Store) -> Image {
    let bins: Vec<&Path> = ["/bin/sh", "/bin/sleep", "/bin/true"]
        .iter()
        .map(Path::new)
        .collect();
    molde_container::image::base::from_host(store, &bins).unwrap()
}

/// One cycle: create, start, exec, then stop, or a SIGKILL of the container's PID 1 from
/// outside, or a drop while running; then remove.
fn cycle(store: &Store, image: &Image, rng: &mut Rng) -> Result<(), ContainerError> {
    let mut b = Container::builder(store, image)
        .command("/bin/sh")
        .args(["-c", "sleep 30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if rng.next() % 4 == 0 {
        b = b.pids(64);
    }
    let mut c = b.start()?;
    let out = c.exec("/bin/true").output()?;
    assert!(out.success(), "{out:?}");
    match rng.next() % 3 {
        0 => {
            c.stop(Duration::from_millis(50))?;
            c.remove()
        }
        1 => {
            let pid = nix::unistd::Pid::from_raw(c.pid().unwrap() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL).unwrap();
            c.wait()?;
            c.remove()
        }
        _ => {
            // Dropped while running: Drop kills and removes.
            drop(c);
            Ok(())
        }
    }
}

/// The second process: cycles on the same store until killed.
fn helper_process(store_dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "soak_helper", "--ignored", "--nocapture"])
        .env(STORE_ENV, store_dir)
        .stdout(StdStdio::null())
        .stderr(StdStdio::null())
        .spawn()
        .unwrap()
}

/// What must be as before: host mounts mentioning the store, molde's cgroups, this process's
/// descriptors and children.
fn snapshot(store_dir: &Path) -> (Vec<String>, Vec<String>, usize, usize) {
    let dir = store_dir.to_str().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir))
        .map(str::to_owned)
        .collect();
    let mut cgroups = Vec::new();
    for root in [
        "/sys/fs/cgroup/molde",
        "/sys/fs/cgroup/unified/molde",
        "/sys/fs/cgroup/pids/molde",
    ] {
        if let Ok(entries) = std::fs::read_dir(root) {
            cgroups.extend(
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path().display().to_string()),
            );
        }
    }
    cgroups.sort();
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let me = std::process::id().to_string();
    let children = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest = &stat[stat.rfind(')').unwrap_or(0) + 2..];
            rest.split(' ').nth(1) == Some(me.as_str())
        })
        .count();
    (mounts, cgroups, fds, children)
}

#[test]
#[ignore = "long: run by cargo xtask soak"]
fn soak() {
    if !common::require(common::privileged(), "needs root to mount and make cgroups") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir).unwrap();
    let image = image(&store);
    assert!(
        Container::builder(&store, &image)
            .command("/bin/true")
            .output()
            .unwrap()
            .success()
    );
    let before = snapshot(&store_dir);
    let total = cycles();
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let mut helper = helper_process(&store_dir);
    let mut helper_kills = 0;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (store, image, done) = (&store, &image, &done);
            s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1000_0001));
                while done.fetch_add(1, Ordering::SeqCst) < total {
                    cycle(store, image, &mut rng).unwrap_or_else(|e| panic!("thread {t}: {e}"));
                }
            });
        }
        // Meanwhile: SIGKILL the second process now and then, and start it again.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        while done.load(Ordering::SeqCst) < total {
            std::thread::sleep(Duration::from_millis(200 + rng.next() % 800));
            helper.kill().unwrap();
            helper.wait().unwrap();
            helper_kills += 1;
            helper = helper_process(&store_dir);
        }
    });
    helper.kill().unwrap();
    helper.wait().unwrap();
    eprintln!(
        "soak: {total} cycles in {:.1?}, the second process SIGKILLed {helper_kills} times",
        start.elapsed()
    );
    // What the killed helper left: recovered (marked exited), then removed.
    molde_container::recover(&store).unwrap();
    for summary in Container::list(&store).unwrap() {
        Container::open(&store, &summary.id)
            .unwrap()
            .remove()
            .unwrap();
    }
    assert!(Container::list(&store).unwrap().is_empty());
    let after = snapshot(&store_dir);
    assert_eq!(after.0, before.0, "host mounts of the store");
    assert_eq!(after.1, before.1, "molde's cgroups");
    assert_eq!(after.2, before.2, "this process's descriptors");
    assert_eq!(after.3, before.3, "this process's children");
    let out = Container::builder(&store, &image)
        .command("/bin/true")
        .output()
        .unwrap();
    assert!(out.success(), "the image still runs");
}

/// The second process sharing the store: cycles until killed.
#[test]
#[ignore = "helper: run by soak"]
fn soak_helper() {
    let Some(dir) = std::env::var_os(STORE_ENV) else {
        return;
    };
    let store = Store::open(dir).unwrap();
    let Some(image) = store.list().unwrap().into_iter().next().map(|s| s.image) else {
        return;
    };
    let mut rng = Rng(std::process::id() as u64 | 1);
    loop {
        let _ = cycle(&store, &image, &mut rng);
    }
}
