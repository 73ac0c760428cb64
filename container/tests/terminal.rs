//! Containers on a terminal (`docker run -it`, `docker exec -it`): driven through the host's
//! end of a real pseudo-terminal, as a user at a keyboard would.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use molde_container::{Container, Status, Terminal};
use molde_image::{Image, Store};

/// What the reader thread has seen, and whether the terminal ended; its condition variable.
type Seen = Arc<(Mutex<(Vec<u8>, bool)>, Condvar)>;

/// A terminal's screen as the host reads it, filled by a reader thread; `expect` waits for
/// text to appear.
struct Screen {
    terminal: Terminal,
    seen: Seen,
    cursor: usize,
}

impl Screen {
    fn new(terminal: Terminal) -> Screen {
        let seen: Seen = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
        let mut reader = terminal.try_clone().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = reader.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*sink;
                let mut s = lock.lock().unwrap();
                if n == 0 {
                    s.1 = true;
                    cv.notify_all();
                    return;
                }
                s.0.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        Screen {
            terminal,
            seen,
            cursor: 0,
        }
    }

    fn send(&mut self, keys: &str) {
        self.terminal.write_all(keys.as_bytes()).unwrap();
    }

    /// Wait (10 s at most) for `needle` after what earlier `expect`s consumed; the text up to
    /// and with it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (lock, cv) = &*self.seen;
        let mut s = lock.lock().unwrap();
        loop {
            let text = String::from_utf8_lossy(&s.0[self.cursor..]).into_owned();
            if let Some(at) = text.find(needle) {
                let end = at + needle.len();
                self.cursor += text[..end].len();
                return text[..end].to_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && !s.1,
                "waiting for {needle:?}, the terminal shows {text:?}"
            );
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Wait for the terminal's end (EOF: no process holds it any more).
    fn expect_end(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (lock, cv) = &*self.seen;
        let mut s = lock.lock().unwrap();
        while !s.1 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the terminal did not end");
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }
}

fn setup() -> Option<(tempfile::TempDir, Store, Image)> {
    // Root, or rootless with subordinate ids (the unprivileged pass).
    if !common::containers_or_skip() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = common::busybox::image(&store);
    if !common::require(
        image.is_some(),
        "needs busybox-static (apt-get install busybox-static)",
    ) {
        return None;
    }
    Some((dir, store, image.unwrap()))
}

/// A shell on a terminal of `rows` x `cols`, its prompt `$ ` seen.
fn shell(store: &Store, image: &Image, rows: u16, cols: u16) -> (Container, Screen) {
    let mut c = Container::builder(store, image)
        .command("/bin/sh")
        .env("PS1", "$ ")
        .tty(true)
        .terminal_size(rows, cols)
        .start()
        .unwrap();
    let mut screen = Screen::new(c.take_terminal().expect("a terminal"));
    screen.expect("$ ");
    (c, screen)
}

#[test]
fn tty_names_a_pts_of_the_container_and_stty_size_is_the_size_given_then_resized() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let (mut c, mut t) = shell(&store, &image, 37, 111);
    t.send("tty; stty size; echo do''ne\r");
    let out = t.expect("done\r\n");
    assert!(out.contains("\r\n/dev/pts/0\r\n"), "{out:?}");
    assert!(out.contains("\r\n37 111\r\n"), "{out:?}");
    // The container's own devpts instance: its /dev/pts holds only this terminal; the slave is
    // /dev/console too; programs that open /dev/tty reach it.
    t.send(
        "ls -1 /dev/pts; stat -c '%t:%T' /dev/console $(tty); echo hi > /dev/tty; echo do''ne\r",
    );
    let out = t.expect("done\r\n");
    assert!(out.contains("\r\n0\r\nptmx\r\n"), "{out:?}");
    let numbers: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.split_once(':').is_some_and(|(a, b)| {
                [a, b]
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_hexdigit()))
            })
        })
        .collect();
    assert_eq!(numbers.len(), 2, "{out:?}");
    assert_eq!(numbers[0], numbers[1], "/dev/console is the terminal");
    assert!(out.contains("\r\nhi\r\n"), "{out:?}");
    // A resize while running shows at once.
    let mut terminal = c.take_terminal();
    assert!(terminal.is_none(), "taken once");
    terminal = Some(t.terminal.try_clone().unwrap());
    terminal.as_ref().unwrap().resize(50, 132).unwrap();
    assert_eq!(
        terminal.as_ref().unwrap().size().unwrap(),
        molde_container::WindowSize {
            rows: 50,
            cols: 132
        }
    );
    t.send("stty size\r");
    t.expect("\r\n50 132\r\n");
    // Ctrl-D ends the shell with the status of its last command.
    t.send("false\r");
    t.expect("$ ");
    t.send("\x04");
    t.expect_end();
    assert_eq!(
        c.wait().unwrap(),
        Status::Exited {
            code: Some(1),
            signal: None
        }
    );
}

#[test]
fn ctrl_c_interrupts_the_foreground_job_ctrl_z_stops_one_and_the_shell_lives_on() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let (mut c, mut t) = shell(&store, &image, 24, 80);
    let started = Instant::now();
    t.send("sleep 100\r");
    t.expect("sleep 100\r\n");
    std::thread::sleep(Duration::from_millis(200));
    t.send("\x03");
    t.expect("$ ");
    assert!(started.elapsed() < Duration::from_secs(20));
    t.send("echo status $?\r");
    t.expect("status 130\r\n");
    // Job control: Ctrl-Z stops the foreground job, `jobs` lists it stopped, `fg` brings it
    // back and Ctrl-C ends it.
    t.send("sleep 200\r");
    t.expect("sleep 200\r\n");
    std::thread::sleep(Duration::from_millis(200));
    t.send("\x1a");
    t.expect("Stopped");
    t.expect("$ ");
    t.send("jobs\r");
    t.expect("sleep 200");
    t.expect("$ ");
    t.send("fg\r");
    t.expect("sleep 200");
    std::thread::sleep(Duration::from_millis(200));
    t.send("\x03");
    t.expect("$ ");
    // The shell is its session's leader, and the terminal its controlling terminal.
    t.send("echo pid $$ session $(cut -d' ' -f6 /proc/$$/stat); echo al''ive\r");
    let out = t.expect("alive\r\n");
    assert!(out.contains("pid 1 session 1\r\n"), "{out:?}");
    t.send("exit 3\r");
    t.expect_end();
    assert_eq!(
        c.wait().unwrap(),
        Status::Exited {
            code: Some(3),
            signal: None
        }
    );
}

#[test]
fn the_terminal_belongs_to_the_containers_user_and_reading_it_after_the_end_is_eof() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let mut c = Container::builder(&store, &image)
        .command("/bin/sh")
        .args(["-c", "stat -c '%u %g %a' $(tty); id -u"])
        .user("appuser")
        .tty(true)
        .start()
        .unwrap();
    let mut terminal = c.take_terminal().unwrap();
    let mut out = String::new();
    // EIO once the process is gone is the end, not an error.
    terminal.read_to_string(&mut out).unwrap();
    assert_eq!(out, "1000 1000 620\r\n1000\r\n");
    assert_eq!(
        c.wait().unwrap(),
        Status::Exited {
            code: Some(0),
            signal: None
        }
    );
    // A restart gets a new terminal.
    c.start().unwrap();
    let mut again = String::new();
    c.take_terminal()
        .unwrap()
        .read_to_string(&mut again)
        .unwrap();
    assert_eq!(again, out);
}

#[test]
fn exec_with_a_terminal_into_a_named_running_container() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let mut first = Container::builder(&store, &image)
        .name("box")
        .command("/bin/sh")
        .args(["-c", "echo ready > /tmp/mark; sleep 600"])
        .stdin(molde_container::Stdio::null())
        .stdout(molde_container::Stdio::null())
        .start()
        .unwrap();
    // Another handle, by name (`docker exec -it box sh`).
    let c = Container::open(&store, "box").unwrap();
    let mut child = c
        .exec("sh")
        .env("PS1", "# ")
        .terminal_size(30, 90)
        .spawn()
        .unwrap();
    let mut t = Screen::new(child.terminal.take().expect("a terminal"));
    t.expect("# ");
    t.send("cat /tmp/mark; tty; stty size; ls -1 /dev/pts\r");
    let out = t.expect("ptmx\r\n");
    assert!(out.contains("\r\nready\r\n"), "{out:?}");
    assert!(out.contains("\r\n/dev/pts/0\r\n"), "{out:?}");
    assert!(out.contains("\r\n30 90\r\n"), "{out:?}");
    t.send("sleep 100\r");
    t.expect("sleep 100\r\n");
    std::thread::sleep(Duration::from_millis(200));
    t.send("\x03");
    t.expect("# ");
    t.send("exit 5\r");
    t.expect_end();
    assert_eq!(
        child.wait().unwrap(),
        Status::Exited {
            code: Some(5),
            signal: None
        }
    );
    assert_eq!(
        first.status().unwrap(),
        Status::Running,
        "the container runs on"
    );
    first.close().unwrap();
}

#[test]
fn five_interactive_shells_of_one_image_at_once_each_see_only_their_own_writes() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let mut shells: Vec<(Container, Screen)> =
        (0..5).map(|_| shell(&store, &image, 24, 80)).collect();
    for (i, (_, t)) in shells.iter_mut().enumerate() {
        t.send(&format!(
            "echo shell-{i} > /root/mine; touch /tmp/only-{i}\r"
        ));
        t.expect("$ ");
    }
    for (i, (_, t)) in shells.iter_mut().enumerate() {
        t.send("cat /root/mine; ls /tmp; echo e''nd\r");
        let out = t.expect("end\r\n");
        assert!(out.contains(&format!("\r\nshell-{i}\r\n")), "{out:?}");
        assert!(out.contains(&format!("only-{i}")), "{out:?}");
        for j in (0..5).filter(|j| *j != i) {
            assert!(!out.contains(&format!("only-{j}")), "{i} sees {j}: {out:?}");
        }
    }
    for (c, mut t) in shells {
        t.send("exit\r");
        t.expect_end();
        c.close().unwrap();
    }
    assert!(Container::list(&store).unwrap().is_empty());
}

const ATTACH_ENV: &str = "MOLDE_TEST_ATTACH_PIPES";

/// `attach` with pipes for this program's stdin and stdout (no terminal on the host): the
/// streams are copied, the end of stdin is the terminal's end-of-file, and the container's end
/// ends the attach. Run in a child process of the test (its stdin and stdout are pipes).
#[test]
fn attach_without_a_host_terminal_copies_the_streams() {
    if std::env::var_os(ATTACH_ENV).is_some() {
        let Some((_dir, store, image)) = setup() else {
            return;
        };
        let mut c = Container::builder(&store, &image)
            .command("/bin/sh")
            .env("PS1", "")
            .tty(true)
            .start()
            .unwrap();
        let terminal = c.take_terminal().unwrap();
        let ended = molde_container::attach::attach(&terminal).unwrap();
        let status = c.wait().unwrap();
        eprintln!("ATTACH {ended:?} {status}");
        return;
    }
    if setup().is_none() {
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "attach_without_a_host_terminal_copies_the_streams",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ATTACH_ENV, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo fr''om-pipe $((6*7))\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("from-pipe 42\r\n"), "{stdout}");
    assert!(stderr.contains("ATTACH Ended exited (0)"), "{stderr}");
}

const ROOTLESS_ENV: &str = "MOLDE_TEST_TERMINAL_ROOTLESS";

/// Terminals as an unprivileged user: this test binary, copied where `nobody` can run it,
/// re-runs its helper as uid/gid 65534 (setpriv): the container is in a user namespace of its
/// own, its devpts too; `exec -t` joins it.
#[test]
fn rootless_terminals_as_nobody() {
    use std::os::unix::fs::PermissionsExt;
    if !common::require(common::have_tool("setpriv"), "needs setpriv(1)")
        || !common::require(common::privileged(), "needs root to become nobody")
        || setup().is_none()
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let exe = tmp.path().join("terminal");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .args([
            "rootless_terminals_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOTLESS_ENV, tmp.path())
        .env("TMPDIR", tmp.path())
        .env_remove("MOLDE_REQUIRE_ALL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "helper failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("rootless terminals: checked"),
        "{stdout}\n{stderr}"
    );
}

/// Runs as `nobody` for [`rootless_terminals_as_nobody`].
#[test]
#[ignore = "helper: run as nobody by rootless_terminals_as_nobody"]
fn rootless_terminals_helper() {
    let work = std::env::var_os(ROOTLESS_ENV)
        .map(std::path::PathBuf::from)
        .expect("a helper: started by rootless_terminals_as_nobody");
    assert!(!common::privileged(), "must run unprivileged");
    let store = Store::open(work.join("store")).unwrap();
    let image = common::busybox::image(&store).unwrap();
    let (mut c, mut t) = shell(&store, &image, 33, 99);
    t.send("tty; stty size; stat -c '%u' $(tty); cat /proc/self/uid_map; echo do''ne\r");
    let out = t.expect("done\r\n");
    assert!(out.contains("\r\n/dev/pts/0\r\n33 99\r\n0\r\n"), "{out:?}");
    assert!(
        out.contains(" 65534 "),
        "a user namespace mapping nobody: {out:?}"
    );
    let mut child = c.exec("sh").env("PS1", "# ").tty(true).spawn().unwrap();
    let mut e = Screen::new(child.terminal.take().unwrap());
    e.expect("# ");
    e.send("tty; ls -1 /dev/pts; exit 2\r");
    let out = String::from_utf8_lossy(&{
        e.expect_end();
        let (lock, _) = &*e.seen;
        lock.lock().unwrap().0.clone()
    })
    .into_owned();
    assert!(
        out.contains("\r\n/dev/pts/1\r\n0\r\n1\r\nptmx\r\n"),
        "{out:?}"
    );
    assert_eq!(
        child.wait().unwrap(),
        Status::Exited {
            code: Some(2),
            signal: None
        }
    );
    t.send("exit\r");
    t.expect_end();
    c.wait().unwrap();
    c.close().unwrap();
    eprintln!("rootless terminals: checked");
}

/// `output()` of a run on a terminal collects what the terminal shows (stdout and stderr,
/// `\r\n` line ends), and does not hang on more than a terminal buffers.
#[test]
fn output_of_a_run_on_a_terminal_is_what_the_terminal_shows() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let out = Container::builder(&store, &image)
        .command("/bin/sh")
        .args([
            "-c",
            "echo out; echo err >&2; [ -t 1 ] && echo tty; seq 1 20000 | tail -n 1",
        ])
        .tty(true)
        .output()
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out\r\nerr\r\ntty\r\n20000\r\n"
    );
    let mut c = Container::builder(&store, &image)
        .command("/bin/sleep")
        .arg("60")
        .start()
        .unwrap();
    let big = c
        .exec("/bin/sh")
        .args(["-c", "seq 1 30000; [ -t 0 ] && echo tty-in"])
        .tty(true)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&big.stdout);
    assert!(
        text.ends_with("29999\r\n30000\r\ntty-in\r\n"),
        "{}",
        &text[text.len() - 40..]
    );
    c.kill().unwrap();
}
