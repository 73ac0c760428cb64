//! Privileged launches join mount namespaces made ahead by a background thread instead of
//! copying the host's mount table. One test in its own process: every launch counted here is
//! this test's, and its thread (from which the launcher's threads are made) works in a private
//! mount namespace of its own, where it makes shared mounts as a systemd host has them.

mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::ffi::OsString;

use molde_container::launch::{self, ContainerMount, ExitStatus, MountKind, Spec, Stdio};
use molde_layerfs::mount::{Mount, OverlayMount};

use common::busybox::{run, sh};

fn host_mounts() -> String {
    std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap()
}

/// The mount points of a `/proc/self/mountinfo`.
fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

/// The container's mount table holds its root and what the launcher mounts in it: nothing of
/// the host's, nothing of the namespace it joined, nothing of another container.
fn assert_only_own_mounts(mountinfo: &str, bind_target: Option<&str>) {
    let points = mount_points(mountinfo);
    assert_eq!(
        points.iter().filter(|p| *p == "/").count(),
        1,
        "one root:\n{mountinfo}"
    );
    for p in &points {
        let own = p == "/"
            || ["/proc", "/sys", "/dev"]
                .iter()
                .any(|d| p == d || p.starts_with(&format!("{d}/")))
            || Some(p.as_str()) == bind_target;
        assert!(own, "mount point {p} is not the container's:\n{mountinfo}");
    }
    if let Some(t) = bind_target {
        assert!(points.iter().any(|p| p == t), "{t} missing:\n{mountinfo}");
    }
}

fn overlay(spec: &mut Spec, lower: &Path, dir: &Path) -> PathBuf {
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    spec.rootfs_mounts = vec![Mount::Overlay(OverlayMount {
        lowerdirs: vec![lower.to_path_buf()],
        upperdir: Some(upper.clone()),
        workdir: Some(work),
        userxattr: false,
        volatile: false,
    })];
    upper
}

/// Copy the busybox rootfs `from` (directories, files, symlinks) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `NS_GET_MNTNS_ID` (`_IOR(0xb7, 5, u64)`): a mount namespace's 64-bit id, never reused and
/// growing with each namespace made.
fn mntns_id(ns_file: &Path) -> u64 {
    const NS_GET_MNTNS_ID: libc::c_ulong = 0x8008_b705;
    let f = std::fs::File::open(ns_file).unwrap();
    let mut id = 0u64;
    // SAFETY: the ioctl writes one u64 into `id`.
    let ret = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_MNTNS_ID, &mut id as *mut u64) };
    assert_eq!(
        ret,
        0,
        "NS_GET_MNTNS_ID: {}",
        std::io::Error::last_os_error()
    );
    id
}

/// How many mounts the mount namespace `ns_id` holds under its root mount, reachable from its
/// processes' roots or not (`listmount(2)` from the namespace's root, Linux 6.8).
fn mounts_in_namespace(ns_id: u64) -> usize {
    #[repr(C)]
    struct MntIdReq {
        size: u32,
        spare: u32,
        mnt_id: u64,
        param: u64,
        mnt_ns_id: u64,
    }
    const SYS_LISTMOUNT: libc::c_long = 458;
    const LSMT_ROOT: u64 = u64::MAX;
    let mut ids = vec![0u64; 4096];
    let mut count = 0;
    let mut last = 0u64;
    loop {
        let req = MntIdReq {
            size: std::mem::size_of::<MntIdReq>() as u32,
            spare: 0,
            mnt_id: LSMT_ROOT,
            param: last,
            mnt_ns_id: ns_id,
        };
        // SAFETY: `req` and `ids` live across the call; the count is passed.
        let n = unsafe {
            libc::syscall(
                SYS_LISTMOUNT,
                &req as *const MntIdReq,
                ids.as_mut_ptr(),
                ids.len(),
                0u32,
            )
        };
        assert!(n >= 0, "listmount: {}", std::io::Error::last_os_error());
        if n == 0 {
            return count;
        }
        count += n as usize;
        last = ids[n as usize - 1];
    }
}

/// The id of a mount namespace made now (by a thread that leaves at once).
fn fresh_mntns_id() -> u64 {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        mntns_id(Path::new("/proc/thread-self/ns/mnt"))
    })
    .join()
    .unwrap()
}

/// Make `dir` a mount of its own, shared (as systemd makes every mount): a clone of it is its
/// peer unless made otherwise.
fn shared_mount(dir: &Path) {
    use nix::mount::MsFlags;
    nix::mount::mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
    nix::mount::mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
}

/// A container printing its mount table, the bind at /data and its root's listing; on an
/// overlay in `dir` if given (its upper returned).
fn inspecting(root: &Path, host: &Path, dir: Option<&Path>) -> (Spec, Option<PathBuf>) {
    let mut spec = sh(
        root,
        "cat /proc/self/mountinfo; echo ---; cat /data/given; ls /; echo x > /tmp/new",
    );
    spec.mounts = vec![ContainerMount {
        target: PathBuf::from("/data"),
        kind: MountKind::Bind {
            source: host.to_path_buf(),
            read_only: true,
        },
    }];
    let upper = dir.map(|dir| {
        let target = dir.join("merged");
        std::fs::create_dir_all(&target).unwrap();
        spec.root = target;
        overlay(&mut spec, root, dir)
    });
    (spec, upper)
}

fn check_inspecting(spec: &Spec, upper: Option<&Path>) {
    let (status, out, err) = run(spec);
    assert_eq!(status, ExitStatus::Exited(0), "{out}\n{err}");
    let (table, rest) = out.split_once("---\n").unwrap();
    assert_only_own_mounts(table, Some("/data"));
    assert!(rest.starts_with("from the host\n"), "{rest}");
    assert!(rest.lines().any(|l| l == "bin"), "the rootfs at /: {rest}");
    if let Some(upper) = upper {
        assert_eq!(
            std::fs::read_to_string(upper.join("tmp/new")).unwrap(),
            "x\n"
        );
        let root_line = table
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap();
        assert!(root_line.contains(" - overlay "), "{table}");
    }
}

/// Launch with `launch` until one joins a namespace made ahead (the first launch of a process
/// starts the maker; a launch that finds none ready copies the host's, as before) and returns
/// something (`Option`s: `None` is "launch again"). What the joining launch returned.
fn joining<T: Joined>(mut launch: impl FnMut(usize) -> T) -> T::Value {
    for i in 0..50 {
        let counted = launch::mount_namespaces_made_ahead();
        let got = launch(i);
        if launch::mount_namespaces_made_ahead() > counted
            && let Some(value) = got.value()
        {
            return value;
        }
        // Give the maker its moment.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("no launch joined a mount namespace made ahead");
}

/// What a launch in [`joining`] returns.
trait Joined {
    type Value;
    fn value(self) -> Option<Self::Value>;
}

impl Joined for () {
    type Value = ();
    fn value(self) -> Option<()> {
        Some(())
    }
}

impl<T> Joined for Option<T> {
    type Value = T;
    fn value(self) -> Option<T> {
        self
    }
}

#[test]
fn privileged_launches_join_namespaces_made_ahead_holding_only_the_container() {
    let Some(root) = common::busybox::ready(&[]) else {
        return;
    };
    // This thread's own namespace, decoupled from the host's; the launcher's threads are made
    // from this thread at its first launch, and so live in it too.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host-dir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("given"), "from the host\n").unwrap();
    shared_mount(&host);
    // A rootfs directory on a shared mount, used as it is (a bind of it is the root).
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    shared_mount(&shared);
    let shared_root = shared.join("root");
    copy_tree(root.path(), &shared_root);
    let before = host_mounts();
    let dir = |name: String| tmp.path().join(name);

    // The plain rootfs (a bind of a directory) and an overlay, each in a namespace made ahead.
    joining(|_| {
        let (spec, _) = inspecting(root.path(), &host, None);
        check_inspecting(&spec, None);
    });
    // A root on a shared mount: its bind must not be the host's peer (the container's /proc
    // and /sys would appear on the host). A container that may mount (CAP_SYS_ADMIN) mounts
    // in the shared bind at /data: not on the host either.
    joining(|_| {
        let (mut spec, _) = inspecting(&shared_root, &host, None);
        spec.capabilities.push(launch::Capability::CAP_SYS_ADMIN);
        spec.args[1] = OsString::from(
            "mount -t tmpfs none /data && cat /proc/self/mountinfo && echo --- && \
             echo from the host && ls /",
        );
        let (status, out, err) = run(&spec);
        assert_eq!(status, ExitStatus::Exited(0), "{out}\n{err}");
        let (table, _) = out.split_once("---\n").unwrap();
        assert_only_own_mounts(table, Some("/data"));
        assert_eq!(
            host_mounts(),
            before,
            "a container's mounts reached the host"
        );
    });
    joining(|i| {
        let d = dir(format!("overlay-{i}"));
        let (spec, upper) = inspecting(root.path(), &host, Some(&d));
        check_inspecting(&spec, upper.as_deref());
    });

    // Two containers that stay up (one joined a namespace made ahead), then a burst: their
    // mounts show in no other container, nor on the host.
    let long_lived = long_lived_containers(root.path(), &shared_root, &dir);
    joining(|i| {
        let d = dir(format!("meanwhile-{i}"));
        let (spec, upper) = inspecting(root.path(), &host, Some(&d));
        check_inspecting(&spec, upper.as_deref());
    });

    nsenter_lands_in_the_root(long_lived[1].pid());

    // A chroot escape (Docker's default capabilities hold CAP_SYS_CHROOT) climbs no higher
    // than the container's root: `..` at a mount stacked on its parent's root leads nowhere.
    joining(|i| {
        let (root, escaped) = escape(&dir(format!("escape-{i}")));
        assert!(root.contains(&"usr".to_owned()), "{root:?}");
        assert_eq!(escaped, root, "a chroot escape left the container's root");
    });

    for mut p in long_lived {
        p.kill().unwrap();
        assert_eq!(
            p.wait().unwrap().signal(),
            Some(nix::sys::signal::Signal::SIGKILL)
        );
    }
    assert_eq!(host_mounts(), before, "the host's mount table changed");
    for m in [&shared, &host] {
        nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
}

/// Run [`escape_helper`] in a container (this test binary and its libraries as the image, an
/// overlay over it as the rootfs): the listing of its root, and of where the escape ended.
fn escape(dir: &Path) -> (Vec<String>, Vec<String>) {
    let store = molde_container::image::Store::open(dir.join("store")).unwrap();
    let exe = std::env::current_exe().unwrap();
    let image = molde_container::image::base::from_host(&store, &[&exe]).unwrap();
    let layers = molde_container::image::unpack::unpack(&store, &image).unwrap();
    let target = dir.join("merged");
    std::fs::create_dir_all(&target).unwrap();
    let mut spec = Spec::new(&target, exe.as_os_str());
    overlay(&mut spec, &layers[0].path, dir);
    spec.args = ["--exact", "escape_helper", "--ignored", "--nocapture"]
        .map(OsString::from)
        .to_vec();
    spec.stdout = Stdio::Piped;
    spec.stderr = Stdio::Piped;
    let (status, out, err) = run(&spec);
    assert_eq!(status, ExitStatus::Exited(0), "{out}\n{err}");
    let listed = |prefix: &str| -> Vec<String> {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {out}\n{err}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    (listed("ROOT: "), listed("ESCAPED TO: "))
}

/// Inside a container: the classic chroot escape (a chroot into a subdirectory leaves the
/// working directory outside the new root, from where `..` climbs), then a listing of where
/// it ended.
#[test]
#[ignore = "run inside a container by the test above"]
fn escape_helper() {
    let list = || {
        let mut names: Vec<String> = std::fs::read_dir("/")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.join(" ")
    };
    println!("ROOT: {}", list());
    std::fs::create_dir_all("/tmp/escape").unwrap();
    nix::unistd::chroot("/tmp/escape").unwrap();
    for _ in 0..64 {
        let _ = std::env::set_current_dir("..");
    }
    nix::unistd::chroot(".").unwrap();
    println!("ESCAPED TO: {}", list());
}

/// Two containers that stay up, the first in a namespace made ahead, each holding only its
/// own mounts; then a burst of six that drains the pool: the maker makes the next namespaces
/// from its home, never from one a container uses (whose mounts a copy would hold).
fn long_lived_containers(
    root: &Path,
    shared_root: &Path,
    dir: &impl Fn(String) -> PathBuf,
) -> Vec<launch::Process> {
    let mut long_lived = Vec::new();
    for n in 0..2 {
        // Its namespace was made before the launch, not copied from this one at `clone`: older
        // than one made just before the launch. (The maker may also have finished one in
        // between, which the launch may get: then launch again.)
        let p = joining(|i| {
            let d = dir(format!("long-{n}-{i}"));
            let mut spec = sh(root, "sleep 600");
            if n == 0 {
                let target = d.join("merged");
                std::fs::create_dir_all(&target).unwrap();
                spec.root = target;
                overlay(&mut spec, root, &d);
            } else {
                spec.root = shared_root.to_path_buf();
            }
            spec.stdout = Stdio::Null;
            spec.stderr = Stdio::Null;
            let made_before = fresh_mntns_id();
            let p = launch::spawn(&spec).unwrap();
            let ns = mntns_id(Path::new(&format!("/proc/{}/ns/mnt", p.pid())));
            (ns < made_before).then_some((p, ns))
        });
        // Everything in its namespace under the kernel's initial rootfs (its root, which
        // listmount leaves out): the empty tmpfs beneath the container's root and the
        // container's own mounts, nothing else (no copy of the host's, nor another
        // container's).
        let (p, ns) = p;
        let visible = std::fs::read_to_string(format!("/proc/{}/mountinfo", p.pid())).unwrap();
        assert_only_own_mounts(&visible, None);
        assert_eq!(
            mounts_in_namespace(ns),
            1 + visible.lines().count(),
            "more in the namespace than the container's mounts:\n{visible}"
        );
        long_lived.push(p);
    }
    // A burst of starts drains the pool; the maker makes the next ones from its home, never
    // from a namespace a container uses (whose mounts a copy would hold).
    for i in 0..6 {
        let d = dir(format!("burst-{i}"));
        let target = d.join("merged");
        std::fs::create_dir_all(&target).unwrap();
        let mut spec = sh(root, "sleep 600");
        spec.root = target;
        overlay(&mut spec, root, &d);
        spec.stdout = Stdio::Null;
        spec.stderr = Stdio::Null;
        let counted = launch::mount_namespaces_made_ahead();
        let p = launch::spawn(&spec).unwrap();
        if launch::mount_namespaces_made_ahead() > counted {
            let ns = mntns_id(Path::new(&format!("/proc/{}/ns/mnt", p.pid())));
            let visible = std::fs::read_to_string(format!("/proc/{}/mountinfo", p.pid())).unwrap();
            assert_eq!(mounts_in_namespace(ns), 1 + visible.lines().count());
        }
        long_lived.push(p);
    }
    long_lived
}

/// An outside tool entering a container's mount namespace lands in its root, as with any
/// runtime's containers (its root is the topmost mount on the namespace's root).
fn nsenter_lands_in_the_root(pid: u32) {
    if common::require(common::have_tool("nsenter"), "needs nsenter (util-linux)") {
        let out = Command::new("nsenter")
            .args([
                "--target",
                &pid.to_string(),
                "--mount",
                "--",
                "/bin/ls",
                "/",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.lines().any(|l| l == "bin"), "{listed}");
    }
}
