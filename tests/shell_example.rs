//! `examples/shell.rs` (`docker run -it`), driven through a real terminal from the test's side
//! (a pseudo-terminal of expectrl): a host shell on it records `stty -a`, runs the example,
//! and records `stty -a` again once the example has ended, normally or by SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use expectrl::Expect;
use expectrl::session::OsSession as Session;

/// Whether this test can run; otherwise skipped with the reason, or a failure under
/// `MOLDE_REQUIRE_ALL=1` (see `molde::containers_supported_or_skip`).
fn ready() -> bool {
    if !molde::containers_supported_or_skip() {
        return false;
    }
    // The example is built by the cargo that built this test: in xtask's unprivileged pass
    // (root's toolchain out of reach of the test user) there is none to run.
    let cargo_runs = Command::new(env!("CARGO"))
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let why = if molde::image::base::static_busybox().is_none() {
        Some("needs busybox-static (apt-get install busybox-static)")
    } else if !cargo_runs {
        Some("needs the cargo that built this test, to build examples/shell")
    } else {
        None
    };
    if let Some(why) = why {
        assert!(
            std::env::var_os("MOLDE_REQUIRE_ALL").is_none_or(|v| v != "1"),
            "MOLDE_REQUIRE_ALL=1 and this test cannot run: {why}"
        );
        eprintln!("skipping: {why}");
        return false;
    }
    true
}

/// The example's binary, built if need be (beside this test's own binary).
fn example() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "shell"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success());
    let deps = std::env::current_exe().unwrap();
    let exe = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/shell");
    assert!(exe.exists(), "{}", exe.display());
    exe
}

/// A host shell on a new terminal of 24 x 80 running `script` (`$EX` is the example, `$W` a
/// work directory), its prompt `host$ `.
fn host_shell(work: &Path, script: &str) -> Session {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .env("EX", example())
        .env("W", work)
        .env("MOLDE_STORE", work.join("store"));
    let mut s = Session::spawn(cmd).unwrap();
    s.set_expect_timeout(Some(Duration::from_secs(20)));
    s
}

/// The pid of the example under the host shell `shell` (its only child).
fn example_pid(shell: u32) -> u32 {
    for _ in 0..100 {
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no example under the host shell {shell}");
}

/// The script: `stty -a` before, the example (`args`), its status, `stty -a` after.
fn script(args: &str) -> String {
    format!(
        "stty -a > $W/before; $EX {args}; echo \"EXIT=$?\"; stty -a > $W/after; echo D''ONE; \
         sleep 1"
    )
}

fn same_modes(work: &Path) {
    let before = std::fs::read_to_string(work.join("before")).unwrap();
    let after = std::fs::read_to_string(work.join("after")).unwrap();
    assert!(
        before.contains("icanon") && before.contains("echo"),
        "{before}"
    );
    // The window size is the test's doing (it resizes the terminal); the modes must be back.
    let modes = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        modes(&before),
        modes(&after),
        "the host terminal's modes changed"
    );
}

fn no_container_left(work: &Path) {
    let store = molde::open_store(work.join("store")).unwrap();
    assert!(
        molde::container::Container::list(&store)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_interactive_shell_its_size_its_jobs_and_the_host_terminal_as_it_was() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut s = host_shell(work.path(), &script("--name sh1"));
    s.expect("sh1:/# ").unwrap();
    s.send("tty; stty size; echo O''K\r").unwrap();
    let out = s.expect("OK\r\n").unwrap();
    let text = String::from_utf8_lossy(out.before()).into_owned();
    assert!(text.contains("/dev/pts/0\r\n"), "{text:?}");
    assert!(text.contains("\r\n24 80\r\n"), "{text:?}");
    // The host terminal resized: SIGWINCH to the example, which passes the size on.
    s.get_process_mut().set_window_size(120, 40).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.send("stty size\r").unwrap();
    s.expect("\r\n40 120\r\n").unwrap();
    // Ctrl-C interrupts the shell's foreground job, never the example.
    s.send("sleep 100\r").unwrap();
    s.expect("sleep 100\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.send("\x03").unwrap();
    s.expect("sh1:/# ").unwrap();
    s.send("echo status $?\r").unwrap();
    s.expect("status 130\r\n").unwrap();
    // Ctrl-Z stops a job.
    s.send("sleep 200\r").unwrap();
    s.expect("sleep 200\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.send("\x1a").unwrap();
    s.expect("Stopped").unwrap();
    s.expect("sh1:/# ").unwrap();
    s.send("fg\r").unwrap();
    s.expect("sleep 200").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.send("\x03").unwrap();
    s.expect("sh1:/# ").unwrap();
    // A write, then Ctrl-D at an empty line: the shell exits with its last status, the example
    // with the shell's, the container is removed.
    s.send("echo kept > /root/f; false\r").unwrap();
    s.expect("sh1:/# ").unwrap();
    s.send("\x04").unwrap();
    s.expect("EXIT=1").unwrap();
    s.expect("DONE").unwrap();
    same_modes(work.path());
    no_container_left(work.path());
}

#[test]
fn a_sigterm_or_sigint_to_the_example_restores_the_host_terminal_and_removes_the_container() {
    if !ready() {
        return;
    }
    use nix::sys::signal::Signal;
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let work = tempfile::tempdir().unwrap();
        let mut s = host_shell(work.path(), &script(""));
        s.expect("molde:/# ").unwrap();
        s.send("sleep 300\r").unwrap();
        s.expect("sleep 300\r\n").unwrap();
        let pid = example_pid(s.get_process().pid().as_raw() as u32);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
        s.expect(format!("EXIT={}", 128 + sig as i32).as_str())
            .unwrap();
        s.expect("DONE").unwrap();
        same_modes(work.path());
        no_container_left(work.path());
    }
}

/// Without a terminal on stdin the example falls back to pipes: the shell reads the input.
#[test]
fn without_a_terminal_the_example_runs_the_shell_on_pipes() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(example())
        .env("MOLDE_STORE", work.path().join("store"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"tty || echo no-tty; echo piped; exit 4\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "not a tty\nno-tty\npiped\n"
    );
    no_container_left(work.path());
}

#[test]
fn detach_keys_leave_the_shell_running_until_the_example_ends() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut s = host_shell(work.path(), &script("--name kept"));
    s.expect("kept:/# ").unwrap();
    s.send("\x10\x11").unwrap();
    s.expect("detached: container kept runs on").unwrap();
    // Another process finds it running, by name.
    let store = molde::open_store(work.path().join("store")).unwrap();
    let mut c = molde::container::Container::open(&store, "kept").unwrap();
    assert_eq!(c.status().unwrap(), molde::container::Status::Running);
    drop(c);
    let pid = example_pid(s.get_process().pid().as_raw() as u32);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    s.expect("DONE").unwrap();
    same_modes(work.path());
    no_container_left(work.path());
}

/// The example as an unprivileged user (nobody): its container in a user namespace of its
/// own, the terminal in the container's devpts all the same.
#[test]
fn rootless_the_example_gives_a_terminal_too() {
    if !ready() {
        return;
    }
    if !molde::layerfs::privilege::is_privileged() {
        // Already unprivileged: the tests above were the rootless case.
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let exe = work.path().join("shell");
    std::fs::copy(example(), &exe).unwrap();
    let mut s = host_shell(
        work.path(),
        "stty -a > $W/before; setpriv --reuid=65534 --regid=65534 --clear-groups \
         --inh-caps=-all env TMPDIR=$W $W/shell; echo \"EXIT=$?\"; stty -a > $W/after; \
         echo D''ONE; sleep 1",
    );
    s.expect("molde:/# ").unwrap();
    s.send("tty; id -u; stty size; cat /proc/self/uid_map; echo O''K\r")
        .unwrap();
    let out = s.expect("OK\r\n").unwrap();
    let text = String::from_utf8_lossy(out.before()).into_owned();
    assert!(text.contains("/dev/pts/0\r\n0\r\n24 80\r\n"), "{text:?}");
    assert!(
        text.contains("65534"),
        "a user namespace mapping nobody: {text:?}"
    );
    s.send("exit 6\r").unwrap();
    s.expect("EXIT=6").unwrap();
    s.expect("DONE").unwrap();
    same_modes(work.path());
}
