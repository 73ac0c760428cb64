//! What a process inside a container cannot do to the host (issue 4, item 8), tried for real on
//! a rootfs of static busybox: see host files or processes, mount, change the host's hostname,
//! load kernel modules, overwrite the host binary through /proc/<pid>/exe (CVE-2019-5736),
//! reach a host directory through a leaked descriptor (CVE-2024-21626), outgrow its pids or
//! memory limit.

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use molde_container::cgroup::{self, Cgroup, Controller, Limits};
use molde_container::launch::{self, ExecSpec, ExitStatus, Stage, Stdio};
use nix::errno::Errno;

fn ready() -> Option<tempfile::TempDir> {
    common::busybox::ready_rootless_too(&["insmod", "tail", "grep"])
}

use common::busybox::{run, sh};

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn host_files_are_not_visible() {
    let Some(root) = ready() else { return };
    let canary = std::env::temp_dir().join(format!("molde-canary-{}", std::process::id()));
    std::fs::write(&canary, "host secret\n").unwrap();
    let script = format!(
        "cat {0} 2>/dev/null || echo NO-CANARY; ls /tmp | grep -c molde-canary; ls /",
        canary.display()
    );
    let (status, out, err) = run(&sh(root.path(), &script));
    std::fs::remove_file(&canary).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert_eq!(lines(&out)[..2], ["NO-CANARY", "0"], "{out}");
    assert_eq!(
        lines(&out)[2..],
        ["bin", "dev", "etc", "proc", "sys", "tmp"],
        "the root holds only the rootfs: {out}"
    );
}

#[test]
fn host_processes_are_not_visible() {
    let Some(root) = ready() else { return };
    let me = std::process::id();
    let script = format!(
        "echo /proc/[0-9]*; ls /proc/{me} 2>/dev/null || echo NO-HOST-PID; \
         ps -o pid,comm | tail -n +2"
    );
    let (status, out, err) = run(&sh(root.path(), &script));
    assert!(status.success(), "{status}: {err}");
    let lines = lines(&out);
    assert_eq!(lines[..2], ["/proc/1", "NO-HOST-PID"], "{out}");
    // ps: the shell (1), ps and the pipeline's tail: a handful of small pids, nothing else.
    let pids: Vec<u32> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(pids[0], 1, "{out}");
    assert!(pids.len() <= 3 && pids.iter().all(|&p| p < 10), "{out}");
    assert!(!pids.contains(&me), "{out}");
}

#[test]
fn cannot_mount() {
    let Some(root) = ready() else { return };
    let (status, out, err) = run(&sh(
        root.path(),
        "mount -t tmpfs none /tmp; echo $?; mount -t proc proc /tmp; echo $?; \
         mount --bind /bin /tmp; echo $?; grep -c ' /tmp ' /proc/self/mountinfo; true",
    ));
    assert!(status.success(), "{status}: {err}");
    assert_eq!(lines(&out), ["1", "1", "1", "0"], "{out}\n{err}");
    assert_eq!(
        err.matches("permission denied").count(),
        3,
        "every mount refused with EPERM: {err}"
    );
}

#[test]
fn cannot_change_the_hosts_hostname() {
    let Some(root) = ready() else { return };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut spec = sh(
        root.path(),
        "hostname evil; echo $?; echo evil > /proc/sys/kernel/hostname; echo $?; hostname",
    );
    spec.hostname = Some("inside".into());
    let (status, out, err) = run(&spec);
    assert!(status.success(), "{status}: {err}");
    assert_eq!(lines(&out), ["1", "1", "inside"], "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host
    );
}

#[test]
fn cannot_load_kernel_modules() {
    let Some(root) = ready() else { return };
    std::fs::write(
        root.path().join("tmp/evil.ko"),
        b"\x7fELF not really a module",
    )
    .unwrap();
    let (status, out, err) = run(&sh(
        root.path(),
        "grep CapEff /proc/self/status | cut -f2; insmod /tmp/evil.ko; echo $?",
    ));
    assert!(status.success(), "{status}: {err}");
    let lines = lines(&out);
    let cap_eff = u64::from_str_radix(lines[0].trim(), 16).unwrap();
    const CAP_SYS_MODULE: u32 = 16;
    const CAP_SYS_ADMIN: u32 = 21;
    assert_eq!(
        cap_eff & (1 << CAP_SYS_MODULE),
        0,
        "CAP_SYS_MODULE held: {out}"
    );
    assert_eq!(
        cap_eff & (1 << CAP_SYS_ADMIN),
        0,
        "CAP_SYS_ADMIN held: {out}"
    );
    assert_ne!(lines[1], "0", "insmod succeeded: {out}\n{err}");
    if Path::new("/proc/modules").exists() {
        assert!(err.contains("Operation not permitted"), "{err}");
    } else {
        // A kernel without module support refuses everyone (ENOSYS): the capability check
        // above is what this test shows here.
        eprintln!("this kernel has no module support; insmod said: {err}");
    }
}

/// The bytes of this test binary, the host binary an attacker in the container would like to
/// overwrite.
fn host_binary() -> (std::path::PathBuf, Vec<u8>) {
    let exe = std::env::current_exe().unwrap();
    let bytes = std::fs::read(&exe).unwrap();
    (exe, bytes)
}

/// A script that tries to open every process's /proc/<pid>/exe for writing (and reading),
/// `rounds` times, printing WROTE or READ on success.
/// The attack runs until `/dev/shm/stop` exists (at most `rounds` rounds): the test stops it
/// once its execs are done, however fast each round is.
fn exe_attack(rounds: u32) -> String {
    format!(
        "i=0; while [ ! -e /dev/shm/stop ] && [ $i -lt {rounds} ]; do \
           for f in /proc/[0-9]*/exe /proc/self/exe; do \
             (echo pwned >> $f) 2>/dev/null && echo WROTE $f; \
             (cat $f > /dev/null) 2>/dev/null || true; \
           done; i=$((i+1)); \
         done; echo DONE"
    )
}

#[test]
fn cannot_overwrite_the_host_binary_through_proc_exe() {
    // Root only: rootless, the racing execs are refused at `setns` of the user namespace
    // (EACCES) while the attacker runs; not yet looked into.
    let Some(root) = common::busybox::ready(&["insmod", "tail", "grep"]) else {
        return;
    };
    let (exe, before) = host_binary();
    let busybox_before = std::fs::read(root.path().join("bin/busybox")).unwrap();

    // From the container's own program.
    let (status, out, err) = run(&sh(
        root.path(),
        "echo pwned >> /proc/self/exe; echo $?; echo pwned >> /proc/1/exe; echo $?",
    ));
    assert!(status.success(), "{status}: {err}");
    assert_eq!(lines(&out), ["1", "1"], "{out}\n{err}");

    // Under an init: PID 1 is a copy of the host binary that never execs; it is not dumpable,
    // so its /proc/1/exe cannot even be opened.
    let mut spec = sh(
        root.path(),
        "cat /proc/1/exe > /dev/null; echo $?; echo pwned >> /proc/1/exe; echo $?",
    );
    spec.init = true;
    let (status, out, err) = run(&spec);
    assert!(status.success(), "{status}: {err}");
    assert_eq!(lines(&out), ["1", "1"], "{out}\n{err}");
    assert!(err.contains("Permission denied"), "{err}");

    // A process racing execs into the container: every process it sees, including the ones
    // still on their way to exec, is attacked.
    let mut spec = sh(root.path(), &exe_attack(1_000_000));
    spec.init = true;
    let mut attacker = launch::spawn(&spec).unwrap();
    let stdout = attacker.take_stdout().unwrap();
    for _ in 0..30 {
        let mut e = ExecSpec::new("true");
        e.stdout = Stdio::Null;
        let mut p = launch::exec(attacker.pid(), &e).unwrap();
        assert!(p.wait().unwrap().success());
        let mut e = ExecSpec::new("sh");
        e.args = vec!["-c".into(), "echo pwned >> /proc/self/exe; echo $?".into()];
        e.stdout = Stdio::Piped;
        e.stderr = Stdio::Null;
        let (status, out, _) = launch::exec(attacker.pid(), &e)
            .unwrap()
            .wait_with_output()
            .unwrap();
        assert!(status.success());
        assert_eq!(out, b"1\n");
    }
    let mut e = ExecSpec::new("sh");
    e.args = vec!["-c".into(), ": > /dev/shm/stop".into()];
    let mut stop = launch::exec(attacker.pid(), &e).unwrap();
    assert!(stop.wait().unwrap().success());
    let mut out = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        out.push_str(&line);
        out.push('\n');
    }
    assert!(attacker.wait().unwrap().success());
    assert!(out.ends_with("DONE\n") && !out.contains("WROTE"), "{out}");

    assert!(
        std::fs::read(&exe).unwrap() == before,
        "host binary changed"
    );
    assert!(
        std::fs::read(root.path().join("bin/busybox")).unwrap() == busybox_before,
        "the container's own binary changed"
    );
}

/// A host directory opened without O_CLOEXEC, as a careless host might leak one.
fn leaked_host_dir() -> OwnedFd {
    // SAFETY: a valid NUL-terminated path; the new descriptor is owned by the OwnedFd.
    let fd = unsafe { libc::open(c"/etc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 0);
    // SAFETY: a new descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[test]
fn leaked_descriptors_do_not_reach_the_host() {
    let Some(root) = ready() else { return };
    let leaked = leaked_host_dir();
    let n = leaked.as_raw_fd();
    let script = format!(
        "ls /proc/self/fd; ls /proc/self/fd/{n}/ > /dev/null 2>&1 || echo NO-LEAK; \
         cat /proc/self/fd/{n}/hostname 2>/dev/null || echo NO-HOST-FILE"
    );
    let (status, out, err) = run(&sh(root.path(), &script));
    assert!(status.success(), "{status}: {err}");
    // 0, 1, 2 and ls's own descriptor for /proc/self/fd.
    assert_eq!(
        lines(&out),
        ["0", "1", "2", "3", "NO-LEAK", "NO-HOST-FILE"],
        "{out}"
    );

    // The same through exec into a running container.
    let mut first = launch::spawn(&sh(root.path(), "sleep 30")).unwrap();
    let mut e = ExecSpec::new("sh");
    e.args = vec!["-c".into(), script.clone().into()];
    e.stdout = Stdio::Piped;
    let (status, out, _) = launch::exec(first.pid(), &e)
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "0\n1\n2\n3\nNO-LEAK\nNO-HOST-FILE\n"
    );

    // The leaked descriptor as the working directory or in the program's path (what an image
    // config could name): refused, never a process running in a host directory.
    let mut spec = common::busybox::spec(root.path(), "/bin/true");
    spec.cwd = format!("/proc/self/fd/{n}").into();
    let e = launch::spawn(&spec).unwrap_err();
    assert_eq!(e.stage, Stage::Chdir, "{e}");
    let mut e = ExecSpec::new("/bin/true");
    e.cwd = format!("/proc/self/fd/{n}").into();
    let err = launch::exec(first.pid(), &e).unwrap_err();
    assert_eq!(err.stage, Stage::Chdir, "{err}");
    let spec = common::busybox::spec(root.path(), &format!("/proc/self/fd/{n}/../bin/sh"));
    let e = launch::spawn(&spec).unwrap_err();
    assert_eq!((e.stage, e.errno), (Stage::Exec, Errno::ENOENT), "{e}");
    first.kill().unwrap();
    first.wait().unwrap();
    drop(leaked);
}

/// Whether cgroups can be made here: as root. Rootless (xtask's unprivileged pass: no cgroup
/// is delegated to that user) the test asserts instead the typed error it gets, and ends.
fn cgroups_ready() -> bool {
    if !common::require(
        cgroup::available().is_ok(),
        "needs a mounted cgroup filesystem",
    ) {
        return false;
    }
    if !common::privileged() {
        let name = format!("security-rootless-{}", std::process::id());
        let err = Cgroup::create(&name, &cgroup::Limits::default()).unwrap_err();
        assert!(
            matches!(err, cgroup::CgroupError::PermissionDenied { .. }),
            "{err:?}"
        );
        return false;
    }
    true
}

/// Whether the host can still start a process (it carries on while a container misbehaves).
fn host_carries_on() {
    let status = std::process::Command::new("true").status().unwrap();
    assert!(status.success());
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    let Some(root) = ready() else { return };
    if !cgroups_ready() {
        return;
    }
    const LIMIT: u64 = 40;
    let name = format!("security-forkbomb-{}", std::process::id());
    let cgroup = Cgroup::create(
        &name,
        &Limits {
            pids: Some(LIMIT),
            ..Limits::default()
        },
    )
    .unwrap();
    let mut spec = sh(root.path(), "bomb() { bomb | bomb & }; bomb; sleep 60");
    spec.stderr = Stdio::Null;
    spec.cgroup_procs = cgroup.procs_files().unwrap();
    // pids.current counts zombies too (which cgroup.procs does not list): what the limit
    // applies to.
    let current = cgroup
        .controller_dir(Controller::Pids)
        .expect("a pids controller")
        .join("pids.current");
    let mut bomb = launch::spawn(&spec).unwrap();
    // `pids.events` counts the forks the limit refused: the evidence that the bomb hit it.
    let events = current.with_file_name("pids.events");
    let refused = || -> u64 {
        std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("max ").and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    };
    // Sample until the limit has refused forks and then for one more second (a loaded machine
    // may take a while to get there), never seeing more processes than the limit.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    let mut hit_since: Option<Instant> = None;
    while Instant::now() < deadline
        && hit_since.is_none_or(|t| t.elapsed() < Duration::from_secs(1))
    {
        let n: usize = std::fs::read_to_string(&current)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        most = most.max(n);
        assert!(
            n as u64 <= LIMIT,
            "{n} processes in a cgroup limited to {LIMIT}"
        );
        if hit_since.is_none() && refused() > 0 {
            hit_since = Some(Instant::now());
        }
        host_carries_on();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        refused() > 0,
        "the bomb never reached its limit ({most} processes at most)"
    );
    bomb.kill().unwrap();
    bomb.wait().unwrap();
    cgroup.kill_all().unwrap();
    cgroup.remove().unwrap();
    eprintln!("fork bomb: at most {most} of {LIMIT} processes");
}

#[test]
fn memory_hog_is_killed_at_the_memory_limit() {
    let Some(root) = ready() else { return };
    if !cgroups_ready() {
        return;
    }
    let name = format!("security-memhog-{}", std::process::id());
    let cgroup = Cgroup::create(
        &name,
        &Limits {
            memory_bytes: Some(32 << 20),
            ..Limits::default()
        },
    )
    .unwrap();
    // tail keeps the whole endless line of /dev/zero in memory.
    let mut spec = sh(root.path(), "tail /dev/zero; echo tail ended $?");
    spec.cgroup_procs = cgroup.procs_files().unwrap();
    let mut hog = launch::spawn(&spec).unwrap();
    let status = hog.wait_timeout(Duration::from_secs(60)).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut hog.take_stdout().unwrap(), &mut out).unwrap();
    assert_eq!(status, Some(ExitStatus::Exited(0)), "{out}");
    assert_eq!(out, "tail ended 137\n", "tail was SIGKILLed");
    assert!(
        cgroup.memory_events_oom().unwrap() >= 1,
        "an OOM kill counted"
    );
    host_carries_on();
    cgroup.remove().unwrap();
}

#[test]
fn device_nodes_cannot_be_made_for_host_devices() {
    let Some(root) = ready_with(&["mknod", "head", "wc"]) else {
        return;
    };
    // The host's first disk, by number: what a container's root would try. molde sets no
    // device cgroup, so the node must not be made at all (no CAP_MKNOD by default).
    let disk = ["/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda"]
        .iter()
        .find_map(|d| std::fs::metadata(d).ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            (
                nix::sys::stat::major(m.rdev()),
                nix::sys::stat::minor(m.rdev()),
            )
        })
        .unwrap_or((8, 0));
    for dir in ["/dev", "/tmp", "/dev/shm"] {
        let script = format!(
            "mknod {dir}/disk b {} {} 2>&1 && echo MADE; head -c 512 {dir}/disk 2>/dev/null | wc -c",
            disk.0, disk.1
        );
        let (status, out, err) = run(&sh(root.path(), &script));
        assert!(status.success(), "{status}: {err}");
        assert!(
            out.contains("Operation not permitted") && !out.contains("MADE"),
            "a node for the host's disk was made in {dir}: {out}"
        );
        assert!(
            out.ends_with("0\n"),
            "read the host's disk through {dir}: {out}"
        );
    }
}

fn ready_with(extra: &[&str]) -> Option<tempfile::TempDir> {
    common::busybox::ready_rootless_too(&[&["insmod", "tail", "grep"][..], extra].concat())
}
