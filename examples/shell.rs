//! An interactive shell in a fresh container, like `docker run -it --rm ubuntu sh`.
//!
//! `cargo run --example shell [-- --name NAME]` — as root, or unprivileged (the container then
//! gets a user namespace of its own). The image is made from nothing downloaded: static
//! busybox (`apt-get install busybox-static`) with its applets, or else this host's `/bin/sh`
//! and a few tools. It is kept in a store (`$MOLDE_STORE`, else `molde-shell` under the
//! temporary directory) and tagged `molde-shell:latest`, so that two terminals running the
//! example at once get two shells of one image, each with its own writable layer.
//!
//! The shell runs on a terminal of its own, joined to this one (raw mode, window size, Ctrl-C
//! and Ctrl-Z for the shell's jobs). Leaving the shell (`exit`, Ctrl-D) removes the container
//! and exits with the shell's status; Ctrl-P Ctrl-Q detaches and leaves it running (its id
//! is printed; it ends with this program); SIGTERM, SIGINT or SIGHUP to this program restore
//! the terminal, remove the container and exit. Without a terminal on stdin the shell reads
//! the piped input.

use std::error::Error;
use std::path::{Path, PathBuf};

use molde::container::attach::{Attached, attach};
use molde::container::{Container, Status, Stdio};
use molde::image::{Image, ImageBuilder, Store, base};

type Res<T> = Result<T, Box<dyn Error>>;

const TAG: &str = "molde-shell:latest";

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("shell: {e}");
            std::process::exit(125);
        }
    }
}

fn run() -> Res<i32> {
    let mut name = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => name = Some(args.next().ok_or("--name needs a value")?),
            other => {
                return Err(format!("unknown argument {other:?} (usage: shell [--name N])").into());
            }
        }
    }
    let root = std::env::var_os("MOLDE_STORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("molde-shell"));
    let store = molde::open_store(root)?;
    let image = shell_image(&store)?;
    // SAFETY: isatty on this process's stdin.
    let host_tty = unsafe { libc::isatty(0) } == 1;
    let mut builder = Container::builder(&store, &image)
        .command("/bin/sh")
        .hostname(name.clone().unwrap_or_else(|| "molde".into()))
        .env("PS1", "\\h:\\w\\$ ");
    if let Some(n) = &name {
        builder = builder.name(n);
    }
    if host_tty {
        let (rows, cols) = host_size().unwrap_or((24, 80));
        builder = builder.tty(true).terminal_size(rows, cols);
    } else {
        builder = builder
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
    }
    let mut c = builder.start()?;
    let status = match c.take_terminal() {
        Some(terminal) => match attach(&terminal)? {
            Attached::Ended => c.wait()?,
            Attached::Detached => {
                // It runs on while this program does (the launcher's parent-death signal
                // ends it with this program): its terminal stays open, unread.
                eprintln!(
                    "\r\ndetached: container {} runs on until this program ends",
                    c.name().unwrap_or(&c.id()[..12])
                );
                let ended = wait_or_signal(&mut c)?;
                drop(terminal);
                c.close()?;
                return Ok(ended);
            }
            Attached::Signal(sig) => {
                drop(terminal);
                c.close()?;
                return Ok(128 + sig as i32);
            }
        },
        None => c.wait()?,
    };
    c.close()?;
    Ok(code_of(status))
}

/// Wait for the container's end, or for SIGTERM, SIGINT or SIGHUP to this program: the exit
/// code to leave with.
fn wait_or_signal(c: &mut Container) -> Res<i32> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(sig);
    }
    // This program's only other thread, the launcher's, blocks every signal: blocked here, they
    // wait to be taken below.
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    let poll = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    loop {
        if let Some(status) = c.wait_timeout(std::time::Duration::ZERO)? {
            return Ok(code_of(status));
        }
        // SAFETY: `set` and `poll` are valid for the call; no siginfo is asked for.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &poll) };
        if sig > 0 {
            return Ok(128 + sig);
        }
    }
}

/// The exit code a shell would give for `status`.
fn code_of(status: Status) -> i32 {
    match status {
        Status::Exited {
            code: Some(code), ..
        } => code,
        Status::Exited {
            signal: Some(sig), ..
        } => 128 + sig,
        _ => 1,
    }
}

/// This terminal's window size.
fn host_size() -> Option<(u16, u16)> {
    // SAFETY: an all-zero winsize is valid.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `size` is a valid winsize the kernel fills.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// The image, made once per store: static busybox and its applets, or this host's shell and
/// a few tools.
fn shell_image(store: &Store) -> Res<Image> {
    if let Ok(image) = store.resolve(TAG) {
        return Ok(image);
    }
    let image = match base::static_busybox() {
        Some(busybox) => busybox_image(store, &busybox)?,
        None => {
            let tools: Vec<&Path> = [
                "/bin/sh",
                "/bin/ls",
                "/bin/cat",
                "/bin/echo",
                "/bin/sleep",
                "/bin/stty",
                "/usr/bin/tty",
                "/bin/rm",
                "/bin/mkdir",
            ]
            .iter()
            .map(Path::new)
            .filter(|p| p.exists())
            .collect();
            base::from_host(store, &tools)?
        }
    };
    store.tag(&image, TAG)?;
    Ok(image)
}

/// One layer: `/bin/busybox`, a link per applet, a root user, `/tmp` and `/root`.
fn busybox_image(store: &Store, busybox: &Path) -> Res<Image> {
    let list = std::process::Command::new(busybox).arg("--list").output()?;
    let mut tar = tar::Builder::new(Vec::new());
    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, &[][..])
    };
    for (path, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("root", 0o700),
        ("tmp", 0o1777),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
    ] {
        dir(&mut tar, path, mode)?;
    }
    let body = std::fs::read(busybox)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(body.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "bin/busybox", &body[..])?;
    for (path, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\ntty:x:5:\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(text.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, text.as_bytes())?;
    }
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let bytes = tar.into_inner()?;
    let layer = store.add_layer(&bytes[..])?.layer;
    Ok(store.commit(
        ImageBuilder::new()
            .layer(layer, "molde: static busybox and its applets")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .cmd(["/bin/sh"]),
    )?)
}
