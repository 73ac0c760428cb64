//! The launcher against real namespaces and mounts, on a rootfs of static busybox.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use molde_container::cgroup::{Cgroup, CgroupError, Limits};
use molde_container::launch::{
    self, ContainerMount, ExecSpec, ExitStatus, MountKind, Spec, Stage, Stdio,
};
use molde_layerfs::mount::{Mount, OverlayMount};
use nix::errno::Errno;
use nix::sys::resource::Resource;
use nix::sys::signal::Signal;

fn ready() -> Option<tempfile::TempDir> {
    common::busybox::ready_rootless_too(&[])
}

use common::busybox::{run, sh, spec};

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

#[test]
fn true_exits_zero_and_leaves_no_mount() {
    let Some(root) = ready() else { return };
    let before = mountinfo();
    let mut p = launch::spawn(&spec(root.path(), "true")).unwrap();
    assert_eq!(p.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(mountinfo(), before);
}

#[test]
fn exit_codes_and_signals() {
    let Some(root) = ready() else { return };
    assert_eq!(run(&sh(root.path(), "exit 7")).0, ExitStatus::Exited(7));
    assert_eq!(
        run(&sh(root.path(), "kill -TERM $$; sleep 5")).0,
        // PID 1 ignores signals it has no handler for, even its own: the sleep ends it.
        ExitStatus::Exited(0)
    );
    let mut p = launch::spawn(&sh(root.path(), "sleep 30")).unwrap();
    assert_eq!(p.try_wait().unwrap(), None);
    assert_eq!(p.wait_timeout(Duration::from_millis(50)).unwrap(), None);
    p.kill().unwrap();
    assert_eq!(p.wait().unwrap(), ExitStatus::Signaled(Signal::SIGKILL));
}

#[test]
fn stdout_and_stderr_piped_stdin_written() {
    let Some(root) = ready() else { return };
    let (status, out, err) = run(&sh(root.path(), "echo out; echo err >&2"));
    assert!(status.success());
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");

    let mut spec = spec(root.path(), "cat");
    spec.stdin = Stdio::Piped;
    spec.stdout = Stdio::Piped;
    let mut p = launch::spawn(&spec).unwrap();
    use std::io::Write;
    let mut stdin = p.take_stdin().unwrap();
    stdin.write_all(b"through the container\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    p.take_stdout().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "through the container\n");
    assert!(p.wait().unwrap().success());
}

#[test]
fn isolation_hostname_pid_files_mounts_network() {
    let Some(root) = ready() else { return };
    let host_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut spec = sh(
        root.path(),
        "hostname; echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
         ls /; ls /sys/class/net; mount -t tmpfs none /tmp 2>&1 && echo MOUNTED; \
         cat /proc/kcore | wc -c; ls /proc/acpi 2>&1 | wc -l; \
         touch /proc/sysrq-trigger 2>&1 && echo WROTE; ls /dev",
    );
    spec.hostname = Some("box".into());
    let (status, out, err) = run(&spec);
    assert!(status.success(), "{status} {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "box");
    assert_eq!(lines[1], "1", "the shell is PID 1 of its own pid namespace");
    assert!(lines[2].starts_with("sh -c"), "{out}");
    assert!(
        !out.contains("home") && !out.contains("usr"),
        "host files visible: {out}"
    );
    assert!(out.contains("\nlo\n"), "{out}");
    assert!(
        !out.contains("eth") && !out.contains("ens"),
        "host interfaces visible: {out}"
    );
    assert!(
        !out.lines().any(|l| l == "MOUNTED"),
        "mount worked inside: {out}"
    );
    assert!(out.contains("\n0\n"), "/proc/kcore not masked: {out}");
    assert!(!out.lines().any(|l| l == "WROTE"), "{out}");
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
    ] {
        assert!(out.lines().any(|l| l == dev), "/dev/{dev} missing: {out}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname
    );
}

#[test]
fn setup_failures_are_typed() {
    let Some(root) = ready() else { return };
    let e = launch::spawn(&spec(root.path(), "no-such-program")).unwrap_err();
    assert_eq!((e.stage, e.errno), (Stage::Exec, Errno::ENOENT), "{e}");
    let mut spec = spec(root.path(), "true");
    spec.cwd = PathBuf::from("/no/such/dir");
    let e = launch::spawn(&spec).unwrap_err();
    assert_eq!((e.stage, e.errno), (Stage::Chdir, Errno::ENOENT), "{e}");
    assert!(e.to_string().contains("working directory"), "{e}");
}

#[test]
fn proc_or_sys_symlinked_in_the_image_is_refused() {
    let Some(root) = ready() else { return };
    let elsewhere = tempfile::tempdir().unwrap();
    for (name, stage) in [("proc", Stage::Proc), ("sys", Stage::Sys)] {
        let target = root.path().join(name);
        std::fs::remove_dir(&target).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &target).unwrap();
        let e = launch::spawn(&spec(root.path(), "true")).unwrap_err();
        assert_eq!((e.stage, e.errno), (stage, Errno::ENOTDIR), "{e}");
        assert_eq!(e.path, Some(PathBuf::from(format!("/{name}"))), "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
        std::fs::remove_file(&target).unwrap();
        std::fs::create_dir(&target).unwrap();
    }
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    run_ok(&spec(root.path(), "true"));
}

const CLOSED_STDIO_ENV: &str = "MOLDE_TEST_CLOSED_STDIO";

#[test]
fn a_host_with_closed_stdio_still_gets_setup_errors_and_output() {
    let Some(_root) = ready() else { return };
    // In a process of its own: closing this process's stdio would disturb the other tests.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "closed_stdio_helper",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CLOSED_STDIO_ENV, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
#[ignore = "helper: run by a_host_with_closed_stdio_still_gets_setup_errors_and_output"]
fn closed_stdio_helper() {
    assert!(
        std::env::var_os(CLOSED_STDIO_ENV).is_some(),
        "a helper: started by a_host_with_closed_stdio_still_gets_setup_errors_and_output"
    );
    use std::os::fd::{FromRawFd, OwnedFd};
    let root = common::busybox::rootfs(&[]).unwrap();
    let saved: Vec<OwnedFd> = (0..3)
        .map(|fd| {
            // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor nothing else owns.
            unsafe { OwnedFd::from_raw_fd(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10)) }
        })
        .collect();
    for fd in 0..3 {
        // SAFETY: closing the standard descriptors; copies are kept in `saved`.
        unsafe { libc::close(fd) };
    }
    // No panics while stdio is closed: results are checked once it is back.
    let mut failing = spec(root.path(), "no-such-program");
    failing.stdin = Stdio::Null;
    failing.stdout = Stdio::Null;
    failing.stderr = Stdio::Null;
    let failed = launch::spawn(&failing).map(|mut p| p.wait());
    let mut echo = sh(root.path(), "echo hi");
    echo.stdin = Stdio::Null;
    echo.stderr = Stdio::Null;
    let echoed = launch::spawn(&echo).map(|p| p.wait_with_output());
    for (fd, copy) in saved.iter().enumerate() {
        // SAFETY: both descriptors are valid; dup2 puts the copy back in place.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(copy), fd as i32) };
    }
    match failed {
        Err(e) => assert_eq!((e.stage, e.errno), (Stage::Exec, Errno::ENOENT), "{e}"),
        Ok(status) => panic!("a failed exec went unreported: {status:?}"),
    }
    let (status, out, _) = echoed.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(out, b"hi\n");
}

#[test]
fn init_reaps_zombies_and_reports_status() {
    let Some(root) = ready() else { return };
    // The shell's orphaned background child becomes a zombie under PID 1 unless reaped.
    let mut spec = sh(
        root.path(),
        "sh -c 'sleep 0.1 & exit 0'; sleep 0.3; ps -o stat,comm | grep -c '^Z' ; exit 3",
    );
    spec.init = true;
    let (status, out, _) = run(&spec);
    assert_eq!(status, ExitStatus::Exited(3));
    assert_eq!(out.trim(), "0", "zombies left: {out}");
}

#[test]
fn exec_into_running_container() {
    let Some(root) = ready() else { return };
    let mut spec = sh(root.path(), "echo ready > /tmp/mark; sleep 30");
    spec.hostname = Some("target".into());
    let mut first = launch::spawn(&spec).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut e = ExecSpec::new("sh");
    e.args = vec!["-c".into(), "hostname; cat /tmp/mark; echo $$".into()];
    e.stdout = Stdio::Piped;
    let p = launch::exec(first.pid(), &e).unwrap();
    let (status, out, _) = p.wait_with_output().unwrap();
    assert!(status.success());
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["target", "ready"], "{out}");
    assert_ne!(lines[2], "1");
    first.kill().unwrap();
    first.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_containers() {
    let Some(root) = ready() else { return };
    let root = std::sync::Arc::new(root);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let root = root.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let (status, out, _) = run(&sh(root.path(), &format!("echo {i}")));
            assert!(status.success());
            assert_eq!(out.trim(), i.to_string());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn hundred_sequential_runs() {
    let Some(root) = ready() else { return };
    let start = std::time::Instant::now();
    for _ in 0..100 {
        let mut p = launch::spawn(&spec(root.path(), "true")).unwrap();
        assert!(p.wait().unwrap().success());
    }
    eprintln!("100 sequential /bin/true containers: {:?}", start.elapsed());
}

/// The lines of a shell's stdout, after checking that it succeeded.
fn run_ok(spec: &Spec) -> String {
    let (status, out, err) = run(spec);
    assert!(status.success(), "{status}: {out}\n{err}");
    out
}

#[test]
fn bind_mounts_read_write_and_read_only_and_tmpfs() {
    let Some(root) = ready() else { return };
    let host = tempfile::tempdir().unwrap();
    let rw = host.path().join("rw");
    let ro = host.path().join("ro");
    std::fs::create_dir(&rw).unwrap();
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("given"), "from the host\n").unwrap();
    let file = host.path().join("single-file");
    std::fs::write(&file, "one file\n").unwrap();
    let before = mountinfo();
    let mut spec = sh(
        root.path(),
        "echo written > /data/rw/new && echo RW-OK; \
         cat /data/ro/given; echo nope > /data/ro/new 2>&1 || echo RO-REFUSED; \
         cat /etc/single; \
         stat -c '%a' /scratch; echo x > /scratch/f && echo TMPFS-OK; \
         df -k /scratch | tail -1 | awk '{print $2}'",
    );
    spec.mounts = vec![
        ContainerMount {
            target: "/data/rw".into(),
            kind: MountKind::Bind {
                source: rw.clone(),
                read_only: false,
            },
        },
        ContainerMount {
            target: "/data/ro".into(),
            kind: MountKind::Bind {
                source: ro.clone(),
                read_only: true,
            },
        },
        ContainerMount {
            target: "/etc/single".into(),
            kind: MountKind::Bind {
                source: file.clone(),
                read_only: true,
            },
        },
        ContainerMount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs {
                size_bytes: Some(1 << 20),
                mode: 0o1777,
            },
        },
    ];
    let (status, out, err) = run(&spec);
    assert!(status.success(), "{status}: {out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "RW-OK",
            "from the host",
            "RO-REFUSED",
            "one file",
            "1777",
            "TMPFS-OK",
            "1024"
        ],
        "{err}"
    );
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        std::fs::read_to_string(rw.join("new")).unwrap(),
        "written\n"
    );
    assert!(!ro.join("new").exists());
    // The mount points were made in the rootfs; nothing stays mounted on the host.
    assert!(root.path().join("data/rw").is_dir());
    assert_eq!(mountinfo(), before);
}

#[test]
fn readonly_rootfs_refuses_writes() {
    let Some(root) = ready() else { return };
    let mut spec = sh(
        root.path(),
        "touch /new-file; echo $?; echo x > /tmp/x; echo $?",
    );
    spec.readonly_rootfs = true;
    let (status, out, err) = run(&spec);
    assert!(status.success(), "{status}: {err}");
    assert_eq!(out, "1\n1\n", "{err}");
    assert_eq!(err.matches("Read-only file system").count(), 2, "{err}");
    assert!(!root.path().join("new-file").exists());
    // A writable tmpfs on a read-only root still takes writes.
    let mut spec = sh(root.path(), "echo x > /tmp/x && cat /tmp/x");
    spec.readonly_rootfs = true;
    spec.mounts = vec![ContainerMount {
        target: "/tmp".into(),
        kind: MountKind::Tmpfs {
            size_bytes: None,
            mode: 0o1777,
        },
    }];
    assert_eq!(run_ok(&spec), "x\n");
}

/// `upper`, `work` and `merged` directories made in `dir`, for an overlay rootfs.
fn overlay_dirs(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let dirs = (dir.join("upper"), dir.join("work"), dir.join("merged"));
    for d in [&dirs.0, &dirs.1, &dirs.2] {
        std::fs::create_dir(d).unwrap();
    }
    dirs
}

#[test]
fn overlay_rootfs_through_prepared_mounts() {
    let Some(lower) = ready() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (upper, work, merged) = overlay_dirs(tmp.path());
    let before = mountinfo();
    let mut spec = sh(
        &merged,
        "echo changed > /tmp/new && rm /bin/false && ls /bin/busybox && \
         grep ' / / ' /proc/self/mountinfo | grep -c ' - overlay '",
    );
    spec.rootfs_mounts = vec![Mount::Overlay(OverlayMount {
        lowerdirs: vec![lower.path().to_path_buf()],
        upperdir: Some(upper.clone()),
        workdir: Some(work.clone()),
        userxattr: false,
        volatile: false,
    })];
    assert_eq!(run_ok(&spec), "/bin/busybox\n1\n");
    assert_eq!(
        std::fs::read_to_string(upper.join("tmp/new")).unwrap(),
        "changed\n"
    );
    let whiteout = std::fs::symlink_metadata(upper.join("bin/false")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert!(lower.path().join("bin/false").exists(), "lower untouched");
    assert!(!lower.path().join("tmp/new").exists());
    assert_eq!(std::fs::read_dir(&merged).unwrap().count(), 0);
    assert_eq!(mountinfo(), before);

    // A read-only bind of a rootfs as the rootfs mount.
    let mut spec = sh(
        &merged,
        "touch /x 2>&1; cat /bin/busybox > /dev/null && echo READ",
    );
    spec.rootfs_mounts = vec![Mount::Bind {
        source: lower.path().to_path_buf(),
        read_only: true,
    }];
    let out = run_ok(&spec);
    assert!(
        out.contains("Read-only file system") && out.ends_with("READ\n"),
        "{out}"
    );
}

#[test]
fn rlimits_set_and_clamped_to_the_hard_limit() {
    let Some(root) = ready() else { return };
    let (_, current_hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let may_raise = molde_container::rlimit::may_raise_hard_limits();
    let mut spec = sh(root.path(), "ulimit -Sn; ulimit -Hn; ulimit -Hu");
    spec.rlimits = vec![
        launch::Rlimit {
            resource: libc::RLIMIT_NOFILE,
            soft: current_hard + 1000,
            hard: current_hard + 1000,
        },
        launch::Rlimit {
            resource: libc::RLIMIT_NPROC,
            soft: 500,
            hard: 600,
        },
    ];
    let expected = if may_raise {
        current_hard + 1000
    } else {
        current_hard
    };
    assert_eq!(run_ok(&spec), format!("{expected}\n{expected}\n600\n"));
    eprintln!("CAP_SYS_RESOURCE usable: {may_raise}; NOFILE hard limit seen inside: {expected}");
}

#[test]
fn proc_sys_is_read_only() {
    let Some(root) = ready() else { return };
    let host_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap();
    let (status, out, err) = run(&sh(
        root.path(),
        "echo evil > /proc/sys/kernel/hostname; echo $?; \
         echo 2 > /proc/sys/vm/overcommit_memory; echo $?",
    ));
    assert!(status.success(), "{err}");
    assert_eq!(out, "1\n1\n", "{err}");
    assert_eq!(err.matches("Read-only file system").count(), 2, "{err}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap(),
        overcommit
    );
}

#[test]
fn init_forwards_sigterm_to_the_program() {
    let Some(root) = ready() else { return };
    let mut spec = sh(
        root.path(),
        "trap 'exit 7' TERM; echo ready; while :; do sleep 1; done",
    );
    spec.init = true;
    let mut p = launch::spawn(&spec).unwrap();
    let mut stdout = std::io::BufReader::new(p.take_stdout().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    p.signal(Signal::SIGTERM).unwrap();
    assert_eq!(
        p.wait_timeout(Duration::from_secs(10)).unwrap(),
        Some(ExitStatus::Exited(7))
    );
}

#[test]
fn exec_joins_the_containers_cgroup() {
    let Some(root) = ready() else { return };
    if !common::require(
        molde_container::cgroup::available().is_ok(),
        "needs a mounted cgroup filesystem",
    ) {
        return;
    }
    let name = format!("launch-exec-{}", std::process::id());
    if !common::privileged() {
        // Rootless, with no cgroup delegated to this user (the unprivileged pass): the typed
        // error that says how to allow it.
        let err = Cgroup::create(&name, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, CgroupError::PermissionDenied { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("Delegate=yes"), "{err}");
        return;
    }
    let cgroup = Cgroup::create(&name, &Limits::default()).unwrap();
    let mut spec = sh(root.path(), "sleep 30");
    spec.cgroup_procs = cgroup.procs_files().unwrap();
    let mut first = launch::spawn(&spec).unwrap();
    let mut e = ExecSpec::new("sleep");
    e.args = vec!["30".into()];
    e.cgroup_procs = cgroup.procs_files().unwrap();
    let mut second = launch::exec(first.pid(), &e).unwrap();
    let pids = cgroup.pids().unwrap();
    assert!(
        pids.contains(&first.pid()) && pids.contains(&second.pid()),
        "{pids:?} lacks {} or {}",
        first.pid(),
        second.pid()
    );
    second.kill().unwrap();
    second.wait().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    cgroup.remove().unwrap();
}

/// The `SigBlk` and `SigIgn` masks of `/proc/self/status` as `cat` shows them.
fn signal_masks(status: &str) -> (String, String) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (field("SigBlk:"), field("SigIgn:"))
}

#[test]
fn programs_start_with_default_signal_dispositions_and_nothing_blocked() {
    let Some(root) = ready() else { return };
    // A Rust host ignores SIGPIPE; this one also ignores SIGUSR2 and blocks SIGUSR1 in the
    // launching thread. Ignored signals survive execve: the launcher must reset them.
    // SAFETY: setting a signal to SIG_IGN installs no handler.
    unsafe {
        nix::sys::signal::signal(Signal::SIGUSR2, nix::sys::signal::SigHandler::SigIgn).unwrap();
    }
    let mut blocked = nix::sys::signal::SigSet::empty();
    blocked.add(Signal::SIGUSR1);
    blocked.thread_block().unwrap();
    let host = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let (host_blocked, host_ignored) = signal_masks(&host);
    assert_ne!(
        host_ignored, "0000000000000000",
        "the host ignores SIGPIPE and SIGUSR2"
    );
    assert_ne!(host_blocked, "0000000000000000");
    let none = ("0000000000000000".to_owned(), "0000000000000000".to_owned());

    for init in [false, true] {
        let mut spec = spec(root.path(), "cat");
        spec.args = vec!["/proc/self/status".into()];
        spec.stdout = Stdio::Piped;
        spec.init = init;
        let (status, out, err) = run(&spec);
        assert!(status.success(), "init {init}: {err}");
        assert_eq!(signal_masks(&out), none, "init {init}");
    }

    let mut first = launch::spawn(&sh(root.path(), "sleep 30")).unwrap();
    let mut e = ExecSpec::new("cat");
    e.args = vec!["/proc/self/status".into()];
    e.stdout = Stdio::Piped;
    let (status, out, _) = launch::exec(first.pid(), &e)
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert!(status.success());
    assert_eq!(signal_masks(&String::from_utf8(out).unwrap()), none, "exec");
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn each_container_has_a_fresh_network_namespace_with_loopback_up_and_working_devices() {
    let Some(root) = ready() else { return };
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    // Four alive at once (a namespace made ahead is never handed out twice).
    let children: Vec<_> = (0..4)
        .map(|_| {
            launch::spawn(&sh(
                root.path(),
                "readlink /proc/self/ns/net; cat /sys/class/net/lo/flags; ls /sys/class/net; \
                 stat -c '%a %t %T' /dev/null /dev/zero /dev/full /dev/random /dev/urandom \
                 /dev/tty; echo x > /dev/null && head -c 3 /dev/zero | wc -c; sleep 0.3",
            ))
            .unwrap()
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for child in children {
        let (status, out, err) = child.wait_with_output().unwrap();
        assert!(status.success(), "{}", String::from_utf8_lossy(&err));
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_ne!(std::path::Path::new(lines[0]), host, "host network: {out}");
        assert!(seen.insert(lines[0].to_owned()), "namespace shared: {out}");
        let flags = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16).unwrap();
        assert_eq!(flags & 1, 1, "loopback down: {out}");
        assert_eq!(lines[2], "lo", "{out}");
        assert_eq!(
            lines[3..9],
            [
                "666 1 3", "666 1 5", "666 1 7", "666 1 8", "666 1 9", "666 5 0"
            ],
            "{out}"
        );
        assert_eq!(lines[9], "3", "{out}");
    }
}

#[test]
fn a_rootfs_mount_that_cannot_be_prepared_is_the_typed_cause() {
    let Some(root) = ready() else { return };
    let mut spec = spec(root.path(), "true");
    spec.rootfs_mounts = vec![Mount::Overlay(OverlayMount {
        lowerdirs: Vec::new(),
        upperdir: None,
        workdir: None,
        userxattr: false,
        volatile: false,
    })];
    let err = launch::spawn(&spec).unwrap_err();
    assert_eq!(err.stage, Stage::RootfsMount, "{err}");
    let cause = std::error::Error::source(&err).expect("a source");
    assert!(
        cause
            .downcast_ref::<molde_layerfs::mount::MountError>()
            .is_some(),
        "the MountError itself, not only its errno: {cause}"
    );
    assert!(err.cause.is_some());
}

#[test]
fn the_host_stays_dumpable_when_a_container_runs_as_another_user() {
    let Some(root) = ready() else { return };
    // SAFETY: plain integer arguments.
    let dumpable = || unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    assert_eq!(dumpable(), 1, "a test process starts dumpable");
    let mut spec = sh(root.path(), "id -u");
    spec.uid = 1000;
    spec.gid = 1000;
    let (status, out, err) = run(&spec);
    assert!(status.success(), "{err}");
    assert_eq!(out, "1000\n");
    assert_eq!(
        dumpable(),
        1,
        "the child's change of ids made the shared memory (the host's) non-dumpable"
    );
}

#[test]
fn a_file_bind_onto_a_fifo_in_the_image_does_not_hang_the_launcher() {
    let Some(root) = ready() else { return };
    nix::unistd::mkfifo(
        &root.path().join("etc/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("given");
    std::fs::write(&file, "over the fifo\n").unwrap();
    let mut spec = sh(root.path(), "cat /etc/fifo");
    spec.mounts = vec![ContainerMount {
        target: "/etc/fifo".into(),
        kind: MountKind::Bind {
            source: file,
            read_only: true,
        },
    }];
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(&spec));
    });
    let (status, out, err) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the launch hung on the image's FIFO");
    assert!(status.success(), "{err}");
    assert_eq!(out, "over the fifo\n");
}

#[test]
fn device_nodes_the_image_ships_cannot_be_opened() {
    let Some(lower) = ready() else { return };
    // A node with /dev/null's numbers, as an image layer unpacked as root would carry one (the
    // same for a disk's numbers): opening it must fail, whatever the rootfs mount.
    let made = nix::sys::stat::mknod(
        &lower.path().join("etc/node"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    );
    if !common::privileged() {
        // Rootless, no layer can carry one (an unpack skips nodes, and says so): the host
        // refuses the node, and the container's own /dev/null works.
        assert_eq!(made, Err(Errno::EPERM));
        let (status, out, err) = run(&sh(lower.path(), "echo x > /dev/null && echo DEV-OK"));
        assert!(status.success(), "{err}");
        assert_eq!(out, "DEV-OK\n", "{err}");
        return;
    }
    made.unwrap();
    let script = "echo x > /etc/node && echo OPENED; echo x > /dev/null && echo DEV-OK";
    let tmp = tempfile::tempdir().unwrap();
    let (upper, work, merged) = overlay_dirs(tmp.path());
    let overlay = vec![Mount::Overlay(OverlayMount {
        lowerdirs: vec![lower.path().to_path_buf()],
        upperdir: Some(upper),
        workdir: Some(work),
        userxattr: false,
        volatile: false,
    })];
    for (what, root, mounts) in [
        ("plain root", lower.path().to_path_buf(), Vec::new()),
        ("overlay root", merged, overlay),
    ] {
        let mut spec = sh(&root, script);
        spec.rootfs_mounts = mounts;
        let (status, out, err) = run(&spec);
        assert!(status.success(), "{what}: {err}");
        assert_eq!(out, "DEV-OK\n", "{what}: {out} {err}");
        assert!(err.contains("Permission denied"), "{what}: {err}");
    }
}
