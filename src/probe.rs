//! What this host supports for this process: [`probe`].
//!
//! Each answer comes from trying the thing where that is cheap (a forked child enters a user
//! namespace, mounts an overlay in it) and from the settings that decide it otherwise; a
//! missing feature says which setting or package forbids it and how to allow it.

use std::ffi::CString;
use std::fmt;
use std::path::Path;

/// Whether one feature is usable, and if not, why and how to allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Usable; the detail says how (e.g. `"pasta"`, `"65536 uids from 100000"`).
    Available(String),
    /// Not usable.
    Missing {
        /// What forbids it (a sysctl, a missing package, a kernel feature).
        why: String,
        /// How to allow it.
        fix: String,
    },
}

impl Support {
    /// Whether the feature is usable.
    pub fn is_available(&self) -> bool {
        matches!(self, Support::Available(_))
    }

    fn missing(why: impl Into<String>, fix: impl Into<String>) -> Support {
        Support::Missing {
            why: why.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Available(how) => write!(f, "yes ({how})"),
            Support::Missing { why, fix } => write!(f, "no: {why}; to allow it: {fix}"),
        }
    }
}

/// What this host supports for this process (see [`probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Root in the initial user namespace: containers need no user namespace.
    pub privileged: bool,
    /// Unprivileged user namespaces (for a privileged process: not needed, available).
    pub user_namespaces: Support,
    /// Subordinate id ranges for this user (`/etc/subuid`, `/etc/subgid`, `newuidmap`): many
    /// uids and gids inside a rootless container.
    pub subordinate_ids: Support,
    /// overlayfs mountable by this process (in a user namespace, with `userxattr`, when
    /// unprivileged): copy-on-write containers instead of a copy of the image per container.
    pub overlay: Support,
    /// cgroup limits (memory, pids, cpu): cgroup v2 delegated to this user, or root.
    pub cgroups: Support,
    /// A user-mode network stack for rootless networks (`pasta` or `slirp4netns`).
    pub user_mode_network: Support,
    /// seccomp filters.
    pub seccomp: Support,
    /// Landlock (`ContainerBuilder::landlock`): the kernel's ABI version.
    pub landlock: Support,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "privileged (root in the initial user namespace): {}",
            if self.privileged { "yes" } else { "no" }
        )?;
        for (name, s) in [
            ("user namespaces", &self.user_namespaces),
            ("subordinate ids", &self.subordinate_ids),
            ("overlay", &self.overlay),
            ("cgroup limits", &self.cgroups),
            ("user-mode network", &self.user_mode_network),
            ("seccomp", &self.seccomp),
            ("landlock", &self.landlock),
        ] {
            writeln!(f, "{name}: {s}")?;
        }
        Ok(())
    }
}

/// Probe what this host supports for this process: user namespaces and which sysctl or
/// AppArmor setting blocks them, subordinate id ranges, overlay (in a user namespace when
/// unprivileged), cgroup delegation, pasta/slirp4netns, seccomp, Landlock. A harness uses it to skip
/// cleanly and say why.
///
/// ```
/// let p = molde::probe();
/// println!("{p}");
/// if !p.user_namespaces.is_available() {
///     eprintln!("skipping: {}", p.user_namespaces);
/// }
/// ```
pub fn probe() -> Probe {
    let privileged = molde_layerfs::privilege::is_privileged();
    let user_namespaces = user_namespaces(privileged);
    Probe {
        privileged,
        subordinate_ids: subordinate_ids(privileged),
        overlay: overlay(privileged, user_namespaces.is_available()),
        user_namespaces,
        cgroups: cgroups(privileged),
        user_mode_network: user_mode_network(),
        seccomp: seccomp(),
        landlock: landlock(),
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn user_namespaces(privileged: bool) -> Support {
    if privileged {
        return Support::Available("not needed: root in the initial user namespace".into());
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").is_some_and(|v| v == "0") {
        return Support::missing(
            "sysctl kernel.unprivileged_userns_clone=0",
            "sysctl -w kernel.unprivileged_userns_clone=1",
        );
    }
    if read("/proc/sys/user/max_user_namespaces").is_some_and(|v| v == "0") {
        return Support::missing(
            "sysctl user.max_user_namespaces=0",
            "sysctl -w user.max_user_namespaces=15000",
        );
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").is_some_and(|v| v == "1") {
        return Support::missing(
            "AppArmor restricts unprivileged user namespaces \
             (kernel.apparmor_restrict_unprivileged_userns=1)",
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile \
             with `userns,` for this program",
        );
    }
    match in_child(|| unshare(libc::CLONE_NEWUSER)) {
        Ok(true) => Support::Available("unprivileged, tried".into()),
        Ok(false) => Support::missing(
            "unshare(CLONE_NEWUSER) is refused (a seccomp filter, a security module, or \
             the limit user.max_user_namespaces reached)",
            "allow unprivileged user namespaces for this program, or run as root",
        ),
        Err(e) => Support::missing(format!("could not try: {e}"), "run as root"),
    }
}

fn subordinate_ids(privileged: bool) -> Support {
    if privileged {
        return Support::Available("not needed: root maps any id".into());
    }
    let fix = "apt-get install uidmap; as root: usermod --add-subuids 100000-165535 \
               --add-subgids 100000-165535 USER";
    match molde_layerfs::idmap::IdMaps::subordinate() {
        Ok(Some(maps)) => {
            let count = |m: &[molde_layerfs::idmap::IdMap]| -> u64 {
                m.iter().map(|l| u64::from(l.count)).sum()
            };
            Support::Available(format!(
                "{} uids and {} gids through newuidmap/newgidmap",
                count(&maps.uid_map),
                count(&maps.gid_map)
            ))
        }
        Ok(None) if !Path::new("/usr/bin/newuidmap").exists() => {
            Support::missing("newuidmap/newgidmap are not installed", fix)
        }
        Ok(None) => Support::missing("no range for this user in /etc/subuid or /etc/subgid", fix),
        Err(e) => Support::missing(e.to_string(), fix),
    }
}

fn overlay(privileged: bool, userns: bool) -> Support {
    if !read("/proc/filesystems").is_some_and(|f| f.contains("\toverlay")) {
        return Support::missing(
            "the kernel has no overlayfs",
            "modprobe overlay (containers use a copy of the image meanwhile)",
        );
    }
    if privileged {
        return Support::Available("root".into());
    }
    if !userns {
        return Support::missing(
            "no user namespace to mount it in",
            "allow unprivileged user namespaces (see user_namespaces)",
        );
    }
    match try_overlay_in_userns() {
        Ok(true) => Support::Available("in a user namespace with userxattr, tried".into()),
        Ok(false) => Support::missing(
            "the kernel refuses overlay in a user namespace (needs Linux 5.11+), or \
             the temporary directory's filesystem lacks user xattrs",
            "a newer kernel (containers use a copy of the image meanwhile)",
        ),
        Err(e) => Support::missing(format!("could not try: {e}"), "run as root"),
    }
}

/// Mount a tmpfs and an overlay on it inside a new user and mount namespace, in a child.
fn try_overlay_in_userns() -> std::io::Result<bool> {
    let dir = tempfile::tempdir()?;
    let c = |s: &str| CString::new(s).map_err(std::io::Error::other);
    let root = c(&dir.path().to_string_lossy())?;
    let tmpfs = c("tmpfs")?;
    let overlay = c("overlay")?;
    let opts = c("lowerdir=l,upperdir=u,workdir=w,userxattr")?;
    let names = [c("l")?, c("u")?, c("w")?, c("m")?];
    let uid_map = format!("0 {} 1", nix::unistd::geteuid());
    let gid_map = format!("0 {} 1", nix::unistd::getegid());
    let files = [
        (c("/proc/self/uid_map")?, uid_map),
        (c("/proc/self/setgroups")?, "deny".to_owned()),
        (c("/proc/self/gid_map")?, gid_map),
    ];
    in_child(|| {
        if !unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) {
            return false;
        }
        // SAFETY: raw system calls on C strings made before the fork; nothing allocates.
        unsafe {
            for (path, text) in &files {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, text.as_ptr().cast(), text.len()) < 0 {
                    return false;
                }
                libc::close(fd);
            }
            if libc::mount(
                tmpfs.as_ptr(),
                root.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ) != 0
                || libc::chdir(root.as_ptr()) != 0
            {
                return false;
            }
            for n in &names {
                if libc::mkdir(n.as_ptr(), 0o755) != 0 {
                    return false;
                }
            }
            libc::mount(
                overlay.as_ptr(),
                names[3].as_ptr(),
                overlay.as_ptr(),
                0,
                opts.as_ptr().cast(),
            ) == 0
        }
    })
}

fn cgroups(privileged: bool) -> Support {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if privileged {
        return Support::Available(
            if v2 {
                "root, cgroup v2"
            } else {
                "root, cgroup v1"
            }
            .into(),
        );
    }
    let fix = "delegate a cgroup v2 subtree to the user: systemd-run --user --scope -p \
               Delegate=yes CMD, or as root: mkdir /sys/fs/cgroup/molde-USER; chown -R USER \
               /sys/fs/cgroup/molde-USER; echo '+memory +pids +cpu' > \
               /sys/fs/cgroup/cgroup.subtree_control; run from a process in that cgroup";
    if !v2 {
        return Support::missing("cgroup v2 is not mounted at /sys/fs/cgroup", fix);
    }
    let own = read("/proc/self/cgroup")
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_default();
    let dir = format!("/sys/fs/cgroup{own}");
    let procs = CString::new(format!("{dir}/cgroup.procs")).unwrap_or_default();
    let dir_c = CString::new(dir.clone()).unwrap_or_default();
    // SAFETY: access(2) on valid C strings.
    let writable = unsafe {
        libc::access(dir_c.as_ptr(), libc::W_OK) == 0
            && libc::access(procs.as_ptr(), libc::W_OK) == 0
    };
    if writable {
        Support::Available(format!("cgroup v2 delegated: {dir}"))
    } else {
        Support::missing(
            format!("this process's cgroup {dir} is not delegated to the user"),
            fix,
        )
    }
}

fn user_mode_network() -> Support {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    match ["pasta", "slirp4netns"].into_iter().find(|t| on_path(t)) {
        Some(tool) => Support::Available(tool.into()),
        None => Support::missing(
            "neither pasta nor slirp4netns is installed",
            "apt-get install passt (or slirp4netns)",
        ),
    }
}

fn seccomp() -> Support {
    match read("/proc/self/status").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Seccomp_filters:"))
            .map(str::to_owned)
    }) {
        Some(_) => Support::Available("filters".into()),
        None => Support::missing(
            "the kernel has no seccomp filters (CONFIG_SECCOMP_FILTER)",
            "a kernel built with CONFIG_SECCOMP_FILTER",
        ),
    }
}

fn landlock() -> Support {
    match molde_container::landlock::abi() {
        Ok(v) => Support::Available(format!("ABI {v}")),
        Err(libc::EOPNOTSUPP) => Support::missing(
            "Landlock is built into the kernel but not enabled",
            "add `landlock` to the kernel's `lsm=` boot parameter",
        ),
        Err(_) => Support::missing(
            "the kernel has no Landlock",
            "Linux 5.13 or later built with CONFIG_SECURITY_LANDLOCK",
        ),
    }
}

fn unshare(flags: libc::c_int) -> bool {
    // SAFETY: a system call without pointers.
    unsafe { libc::unshare(flags) == 0 }
}

/// Run `check` in a forked child (it makes system calls only: nothing allocates after a fork
/// of a maybe multi-threaded process) and return its answer.
fn in_child(check: impl FnOnce() -> bool) -> std::io::Result<bool> {
    // SAFETY: the child runs `check`, which only makes system calls, then `_exit`s.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let code = if check() { 0 } else { 1 };
            // SAFETY: ends the child at once, without the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)? {
            nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(true),
            _ => Ok(false),
        },
    }
}
