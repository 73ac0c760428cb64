//! cgroups for real: limits enforced by the kernel on real processes, in every hierarchy this
//! host has (v2, v1, or the v1/v2 hybrid).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use molde_container::cgroup::{
    self, Cgroup, CgroupError, Controller, KillStrategy, Layout, Limits, Parent, Placement,
};

/// A parent of this test's own (so concurrent tests and other molde users do not see each
/// other's cgroups), removed when dropped, once empty.
struct TestParent(Parent);

impl TestParent {
    fn new(tag: &str) -> TestParent {
        TestParent(Parent::at(format!("molde-test-{}-{tag}", std::process::id())).unwrap())
    }

    /// Asserts that no cgroup is left below the parent, in any hierarchy.
    fn assert_empty(&self) {
        for dir in self.0.dirs().unwrap() {
            let left: Vec<_> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                left.is_empty(),
                "left behind under {}: {left:?}",
                dir.display()
            );
        }
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        let _ = self.0.remove_if_empty();
    }
}

/// Whether cgroups can be made here: as root. Rootless (xtask's unprivileged pass: no cgroup
/// is delegated to that user) the test asserts instead the typed error a cgroup gets there,
/// the one that says how to allow it, and ends. Skips (or fails under MOLDE_REQUIRE_ALL=1)
/// without a cgroup filesystem.
fn can_run() -> bool {
    if !common::require(
        cgroup::available().is_ok(),
        "needs a mounted cgroup filesystem",
    ) {
        return false;
    }
    if common::privileged() {
        return true;
    }
    let name = format!("molde-test-{}-rootless", std::process::id());
    let limits = Limits {
        pids: Some(8),
        ..Limits::default()
    };
    let err = Cgroup::create(&name, &limits).unwrap_err();
    assert!(
        matches!(err, CgroupError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Delegate=yes"), "{err}");
    false
}

/// `sh -c 'read x; <script>'`: it waits for a line on stdin, so that it is in the cgroup
/// before it does anything.
fn gated(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read x; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Lets a [`gated`] child go on.
fn release(child: &mut Child) {
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
}

/// Polls `cond` for up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The host still works: it can start a process.
fn assert_host_carries_on() {
    assert!(Command::new("true").status().unwrap().success());
}

/// The cgroup directories of `pid`, by hierarchy, from `/proc/<pid>/cgroup`.
fn proc_cgroups(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next();
            let controllers = parts.next().unwrap().to_owned();
            (controllers, parts.next().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn detects_this_hosts_layout_from_mountinfo() {
    let layout = cgroup::available();
    if !common::require(layout.is_ok(), "needs a mounted cgroup filesystem") {
        return;
    }
    let layout = layout.unwrap();
    // An independent reading of mountinfo: (fstype, mount point, super options).
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<(String, PathBuf, String)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut right = right.split(' ');
            let fstype = right.next()?.to_owned();
            let options = right.nth(1)?.to_owned();
            let mount = PathBuf::from(left.split(' ').nth(4)?);
            fstype
                .starts_with("cgroup")
                .then_some((fstype, mount, options))
        })
        .collect();
    let v2 = mounts.iter().find(|m| m.0 == "cgroup2");
    let has_v1 = mounts.iter().any(|m| m.0 == "cgroup");
    match (&layout, v2, has_v1) {
        (Layout::Hybrid { unified, .. }, Some(v2), true) => assert_eq!(unified.mount, v2.1),
        (Layout::V2 { unified }, Some(v2), false) => assert_eq!(unified.mount, v2.1),
        (Layout::V1 { .. }, None, true) => {}
        other => panic!("layout {:?} disagrees with mountinfo {mounts:?}", other.0),
    }
    for controller in [Controller::Memory, Controller::Pids, Controller::Cpu] {
        let v1 = mounts
            .iter()
            .find(|m| m.0 == "cgroup" && m.2.split(',').any(|o| o == controller.name()));
        match (layout.placement(controller), v1) {
            (Some(Placement::V1(h)), Some(m)) => assert_eq!(h.mount, m.1, "{controller}"),
            (Some(Placement::V2(u)), None) => {
                assert!(u.controllers.iter().any(|c| c == controller.name()))
            }
            (None, None) => {}
            (placement, v1) => {
                panic!("{controller}: placement {placement:?} but mountinfo says {v1:?}")
            }
        }
    }
    eprintln!("this host's cgroup layout: {layout:#?}");
}

#[test]
fn memory_hog_is_oom_killed_and_the_host_carries_on() {
    if !can_run() {
        return;
    }
    let parent = TestParent::new("oom");
    let limits = Limits {
        memory_bytes: Some(50 << 20),
        ..Limits::default()
    };
    let cg = Cgroup::create_in(&parent.0, "hog", &limits).unwrap();
    assert_eq!(cg.limits().unwrap().memory_bytes, Some(50 << 20));
    assert_eq!(cg.memory_events_oom().unwrap(), 0);
    // Doubles a string until something stops it: 50 MiB does, long before the host would.
    let mut hog = gated(r#"exec awk 'BEGIN { s = "x"; while (1) s = s s }'"#);
    cg.add_pid(hog.id()).unwrap();
    release(&mut hog);
    let status = hog.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the hog ended with {status:?}");
    let kills = cg.memory_events_oom().unwrap();
    eprintln!("memory hog under 50 MiB: {status:?}, oom kills {kills}");
    assert!(kills >= 1);
    assert_host_carries_on();
    cg.remove().unwrap();
    parent.assert_empty();
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    if !can_run() {
        return;
    }
    let parent = TestParent::new("bomb");
    let limits = Limits {
        pids: Some(20),
        ..Limits::default()
    };
    let cg = Cgroup::create_in(&parent.0, "bomb", &limits).unwrap();
    assert_eq!(cg.limits().unwrap().pids, Some(20));
    let pids_dir = cg.controller_dir(Controller::Pids).unwrap().to_path_buf();
    let mut bomb = gated("b() { b | b & }; b");
    cg.add_pid(bomb.id()).unwrap();
    release(&mut bomb);
    // Watch it for two seconds: the count never passes the limit, and the limit is hit.
    let mut peak = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let current: u64 = std::fs::read_to_string(pids_dir.join("pids.current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(current <= 20, "pids.current {current} is above the limit");
        let listed = cg.pids().unwrap().len();
        assert!(listed <= 20, "{listed} processes listed, above the limit");
        peak = peak.max(current);
    }
    let events = std::fs::read_to_string(pids_dir.join("pids.events")).unwrap();
    let refused: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("fork bomb under pids.max=20: peak pids.current {peak}, forks refused {refused}");
    assert!(refused >= 1, "no fork was refused (peak {peak}): {events}");
    assert!(peak >= 10, "the bomb never grew (peak {peak})");
    assert_host_carries_on();
    cg.kill_all().unwrap();
    assert_eq!(cg.pids().unwrap(), Vec::<u32>::new());
    let _ = bomb.wait().unwrap();
    cg.remove().unwrap();
    parent.assert_empty();
}

#[test]
fn cpu_quota_is_written_and_read_back() {
    if !can_run() {
        return;
    }
    let parent = TestParent::new("cpu");
    let limits = Limits {
        cpu_quota: Some((25_000, 100_000)),
        memory_bytes: Some(64 << 20),
        pids: Some(7),
    };
    let cg = Cgroup::create_in(&parent.0, "cpu", &limits).unwrap();
    assert_eq!(cg.limits().unwrap(), limits);
    let cpu = cg.controller_dir(Controller::Cpu).unwrap();
    let read = |f: &str| std::fs::read_to_string(cpu.join(f)).unwrap();
    if cpu.join("cpu.max").exists() {
        assert_eq!(read("cpu.max").trim(), "25000 100000");
    } else {
        assert_eq!(read("cpu.cfs_quota_us").trim(), "25000");
        assert_eq!(read("cpu.cfs_period_us").trim(), "100000");
    }
    cg.remove().unwrap();
    parent.assert_empty();
}

#[test]
fn kill_all_kills_every_process() {
    if !can_run() {
        return;
    }
    let parent = TestParent::new("killall");
    let cg = Cgroup::create_in(&parent.0, "k", &Limits::default()).unwrap();
    let mut child = gated("sleep 1000 & sleep 1000 & (sleep 1000 &) ; wait");
    cg.add_pid(child.id()).unwrap();
    release(&mut child);
    // The shell and its three sleeps (one of them orphaned, reparented out of our reach).
    eventually("four processes", || cg.pids().unwrap().len() == 4);
    let pids = cg.pids().unwrap();
    cg.kill_all().unwrap();
    assert_eq!(cg.pids().unwrap(), Vec::<u32>::new());
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    for pid in pids {
        // Gone, or a zombie awaiting its reaper; never running.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
            assert_eq!(state, Some("Z"), "process {pid} survived: {stat}");
        }
    }
    cg.remove().unwrap();
    parent.assert_empty();
}

#[test]
fn remove_and_drop_leave_no_directory_in_any_hierarchy() {
    if !can_run() {
        return;
    }
    let layout = cgroup::available().unwrap();
    let name = format!("molde-test-remove-{}", std::process::id());
    // The default parent, shared with other molde users: only our own name is checked.
    let cg = Cgroup::create(&name, &Limits::default()).unwrap();
    let paths: Vec<PathBuf> = cg.paths().into_iter().map(Path::to_path_buf).collect();
    let expected = layout.unified().into_iter().count()
        + layout
            .v1()
            .iter()
            .filter(|h| {
                [
                    Controller::Memory,
                    Controller::Pids,
                    Controller::Cpu,
                    Controller::Freezer,
                ]
                .iter()
                .any(|c| h.has(*c))
            })
            .count();
    assert_eq!(
        paths.len(),
        expected,
        "one directory per hierarchy: {paths:?}"
    );
    assert!(paths.iter().all(|p| p.is_dir()));
    // A process in it shows up in every hierarchy of /proc/<pid>/cgroup.
    let mut child = gated("exec sleep 1000");
    cg.add_pid(child.id()).unwrap();
    let placed = proc_cgroups(child.id());
    let ours = placed.values().filter(|p| p.ends_with(&name)).count();
    assert_eq!(ours, expected, "{placed:?}");
    // remove() kills what is left.
    cg.remove().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    for p in &paths {
        assert!(!p.exists(), "{} is left", p.display());
    }
    // Dropping removes too.
    let cg = Cgroup::create(&name, &Limits::default()).unwrap();
    let paths: Vec<PathBuf> = cg.paths().into_iter().map(Path::to_path_buf).collect();
    drop(cg);
    for p in &paths {
        assert!(!p.exists(), "{} is left after drop", p.display());
    }
}

#[test]
fn procs_files_let_a_parent_place_a_child() {
    if !can_run() {
        return;
    }
    let parent = TestParent::new("procsfiles");
    let cg = Cgroup::create_in(&parent.0, "p", &Limits::default()).unwrap();
    let files = cg.procs_files().unwrap();
    assert_eq!(files.len(), cg.paths().len());
    for fd in &files {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(flags & libc::FD_CLOEXEC != 0, "not close-on-exec");
    }
    let mut child = gated("exec sleep 1000");
    cgroup::write_pid(&files, child.id()).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![child.id()]);
    // A pid that does not exist is refused by the kernel, and said so.
    let missing = cgroup::write_pid(&files, u32::MAX / 2);
    assert!(missing.is_err());
    release(&mut child);
    cg.kill_all().unwrap();
    let _ = child.wait();
    drop(files);
    cg.remove().unwrap();
    parent.assert_empty();
}

#[test]
fn fifty_cycles_leave_nothing_behind() {
    if !can_run() {
        return;
    }
    let parent = TestParent::new("cycles");
    let limits = Limits {
        memory_bytes: Some(32 << 20),
        pids: Some(10),
        cpu_quota: Some((50_000, 100_000)),
    };
    for i in 0..50 {
        let cg = Cgroup::create_in(&parent.0, &format!("c{i}"), &limits).unwrap();
        let mut child = gated("sleep 1000 & exec sleep 1000");
        cg.add_pid(child.id()).unwrap();
        release(&mut child);
        eventually("two processes", || cg.pids().unwrap().len() == 2);
        cg.kill_all().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        cg.remove().unwrap();
    }
    parent.assert_empty();
    assert_eq!(parent.0.list().unwrap(), Vec::<String>::new());
    parent.0.remove_if_empty().unwrap();
    for dir in parent.0.dirs().unwrap() {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

#[test]
fn bad_requests_are_typed_errors() {
    if !can_run() {
        return;
    }
    let parent = TestParent::new("errors");
    let none = Limits::default();
    for name in ["", ".", "..", "a/b", "a\0b"] {
        assert!(
            matches!(
                Cgroup::create_in(&parent.0, name, &none),
                Err(CgroupError::InvalidName { .. })
            ),
            "{name:?}"
        );
    }
    assert!(Parent::at("../escape").is_err());
    assert!(Parent::at("/abs").is_err());
    for bad in [
        Limits {
            memory_bytes: Some(1),
            ..none
        },
        Limits {
            pids: Some(0),
            ..none
        },
        Limits {
            cpu_quota: Some((10, 100_000)),
            ..none
        },
        Limits {
            cpu_quota: Some((10_000, 10)),
            ..none
        },
    ] {
        assert!(
            matches!(
                Cgroup::create_in(&parent.0, "bad", &bad),
                Err(CgroupError::InvalidLimit(_))
            ),
            "{bad:?}"
        );
    }
    let cg = Cgroup::create_in(&parent.0, "twice", &none).unwrap();
    let again = Cgroup::create_in(&parent.0, "twice", &none);
    assert!(
        matches!(again, Err(CgroupError::Exists { .. })),
        "{again:?}"
    );
    // The failed second create must not have removed the first one's directories.
    assert!(cg.paths().iter().all(|p| p.is_dir()));
    // A process that does not exist cannot be added.
    assert!(matches!(
        cg.add_pid(u32::MAX / 2),
        Err(CgroupError::AddPid { .. })
    ));
    // Reopening finds it; a name that does not exist is None.
    let reopened = Cgroup::open_in(&parent.0, "twice").unwrap().unwrap();
    assert_eq!(reopened.paths(), cg.paths());
    reopened.keep();
    assert!(Cgroup::open_in(&parent.0, "nope").unwrap().is_none());
    cg.remove().unwrap();
    parent.assert_empty();
}

/// Run by `unprivileged_caller_gets_a_permission_error` as uid 65534; does nothing otherwise.
#[test]
fn as_nobody_helper() {
    if std::env::var_os("MOLDE_CGROUP_AS_NOBODY").is_none() {
        return;
    }
    let parent = Parent::at(std::env::var("MOLDE_CGROUP_AS_NOBODY").unwrap()).unwrap();
    match Cgroup::create_in(&parent, "nobody", &Limits::default()) {
        Err(e @ CgroupError::PermissionDenied { .. }) => println!("ERROR: {e}"),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

#[test]
fn unprivileged_caller_gets_a_permission_error() {
    if !can_run() {
        return;
    }
    let parent = TestParent::new("nobody");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "as_nobody_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MOLDE_CGROUP_AS_NOBODY", parent.0.relative())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ERROR: "), "{stdout}");
    assert!(stdout.contains("Delegate=yes"), "{stdout}");
    assert!(stdout.contains("run without limits"), "{stdout}");
    parent.assert_empty();
}

#[test]
fn every_kill_strategy_empties_a_forking_cgroup() {
    if !can_run() {
        return;
    }
    let parent = TestParent::new("strategies");
    let limits = Limits {
        pids: Some(20),
        ..Limits::default()
    };
    if !common::require(
        common::have_tool("perl"),
        "needs perl for a persistent fork bomb",
    ) {
        return;
    }
    let probe = Cgroup::create_in(&parent.0, "probe", &limits).unwrap();
    let strategies = probe.kill_strategies();
    probe.remove().unwrap();
    assert_eq!(strategies.last(), Some(&KillStrategy::Signal));
    eprintln!("kill strategies on this host: {strategies:?}");
    for strategy in strategies {
        let cg = Cgroup::create_in(&parent.0, &format!("{strategy:?}"), &limits).unwrap();
        // Every process forks for ever, failed forks included: at the limit, 20 live
        // processes race the killer.
        let mut child = gated("exec perl -e 'while (1) { fork }'");
        cg.add_pid(child.id()).unwrap();
        release(&mut child);
        eventually("the bomb to reach its limit", || {
            cg.pids().unwrap().len() == 20
        });
        cg.kill_all_using(strategy)
            .unwrap_or_else(|e| panic!("{strategy:?}: {e}"));
        assert_eq!(cg.pids().unwrap(), Vec::<u32>::new(), "{strategy:?}");
        let _ = child.wait().unwrap();
        cg.remove().unwrap();
    }
    parent.assert_empty();
}
