//! The container lifecycle end to end: real images from host binaries, real overlay writable
//! layers, records read back through a second store handle.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use molde_container::config::ConfigError;
use molde_container::{Container, ContainerError, Status};
use molde_image::layerfs::Digest;
use molde_image::layerfs::diff::Change;
use molde_image::{Image, ImageBuilder, Store, StoreError};

const BINARIES: &[&str] = &[
    "/bin/sh",
    "/bin/cat",
    "/bin/ls",
    "/bin/echo",
    "/bin/sleep",
    "/bin/true",
    "/bin/touch",
    "/bin/rm",
    "/bin/mkdir",
];

fn can_run() -> bool {
    common::containers_or_skip()
}

/// Whether containers with limits run here: as root. Rootless (xtask's unprivileged pass: no
/// cgroup v2 subtree is delegated to that user on this host) the test asserts instead the
/// typed error such a container gets, nothing left behind, and ends.
fn can_limit() -> bool {
    if !can_run() {
        return false;
    }
    if common::privileged() {
        return true;
    }
    let (dir, store, image) = setup();
    let err = sh(&store, &image, "true").pids(64).start().unwrap_err();
    assert!(
        matches!(
            &err,
            ContainerError::Cgroup {
                source: molde_container::cgroup::CgroupError::PermissionDenied { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Delegate=yes"), "{err}");
    assert!(Container::list(&store).unwrap().is_empty());
    drop(dir);
    false
}

/// A store in a temp dir and an image of host binaries with an /etc/passwd and /etc/group
/// (user `appuser`, uid 1000, groups 1000 and 10), as its own layer on top.
fn setup() -> (tempfile::TempDir, Store, Image) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let bins: Vec<&Path> = BINARIES
        .iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .collect();
    let base = molde_image::base::from_host(&store, &bins).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for (name, body) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nappuser:x:1000:1000::/home/appuser:/bin/sh\n",
        ),
        (
            "etc/group",
            "root:x:0:\nappuser:x:1000:\nwheel:x:10:appuser\n",
        ),
        ("etc/motd", "hello from the image\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, body.as_bytes()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_cksum();
    tar.append_data(&mut h, "scratch", &[][..]).unwrap();
    let bytes = tar.into_inner().unwrap();
    let layer = store.add_layer(&bytes[..]).unwrap().layer;
    let image = store
        .commit(ImageBuilder::from_image(&base).layer(layer, "passwd"))
        .unwrap();
    (dir, store, image)
}

/// sha256 of every layer blob, and a fingerprint of every unpacked layer directory.
fn image_fingerprint(store: &Store, image: &Image) -> Vec<(Digest, String)> {
    molde_image::unpack::unpack(store, image).unwrap();
    let mut out = Vec::new();
    for (layer, chain) in image.layers().iter().zip(image.chain_ids()) {
        let blob = store.open_blob(&layer.digest).unwrap();
        let (digest, _) = Digest::of_reader(blob).unwrap();
        assert_eq!(digest, layer.digest, "layer blob changed");
        let dir = store.layout().layer(&chain);
        out.push((digest, tree_fingerprint(&dir)));
    }
    out
}

fn tree_fingerprint(dir: &Path) -> String {
    let mut entries = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        let mut line = format!(
            "{:o} {} {} {}",
            meta.mode(),
            meta.uid(),
            meta.size(),
            meta.mtime()
        );
        if meta.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if meta.is_file() {
            let (d, _) = Digest::of_reader(fs::File::open(&p).unwrap()).unwrap();
            line.push_str(&d.to_string());
        }
        entries.insert(p.strip_prefix(dir).unwrap().to_path_buf(), line);
    }
    format!("{entries:?}")
}

fn ids(store: &Store) -> Vec<String> {
    Container::list(store)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[test]
fn create_holds_image_and_second_handle_lists_opens_removes() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let a = Container::builder(&store, &image).create().unwrap();
    let b = Container::builder(&store, &image)
        .command("/bin/true")
        .create()
        .unwrap();
    // Held images cannot be removed.
    let err = store.remove(&image.id().to_string()).unwrap_err();
    assert!(matches!(err, StoreError::Held { .. }), "{err}");
    // Another handle on the store sees both containers, created.
    let other = Store::open(store.root()).unwrap();
    let list = Container::list(&other).unwrap();
    assert_eq!(list.len(), 2);
    for s in &list {
        assert_eq!(s.status, Status::Created);
        assert_eq!(s.image, image.manifest_digest().to_string());
        assert!([a.id(), b.id()].contains(&s.id.as_str()));
    }
    // Open by a prefix, from the other handle, and remove.
    let opened = Container::open(&other, &b.id()[..12]).unwrap();
    assert_eq!(opened.id(), b.id());
    assert_eq!(opened.image().manifest_digest(), image.manifest_digest());
    let b_id = b.keep();
    opened.remove().unwrap();
    assert_eq!(ids(&store), vec![a.id().to_owned()]);
    assert!(matches!(
        Container::open(&store, &b_id),
        Err(ContainerError::NotFound(_))
    ));
    // Dropping the last handle removes the container and releases the hold.
    drop(a);
    assert!(ids(&store).is_empty());
    assert!(store.holds().unwrap().is_empty());
    store.remove(&image.id().to_string()).unwrap();
    let containers = store.layout().state().join("containers");
    assert_eq!(fs::read_dir(&containers).unwrap().count(), 0);
}

#[test]
fn unknown_user_is_an_error_before_anything_is_made() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let err = Container::builder(&store, &image)
        .user("nosuchuser")
        .create()
        .unwrap_err();
    assert!(
        matches!(&err, ContainerError::Config(ConfigError::UnknownUser { name, .. }) if name == "nosuchuser"),
        "{err}"
    );
    let err = Container::builder(&store, &image)
        .user("appuser:nosuchgroup")
        .create()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ContainerError::Config(ConfigError::UnknownGroup { .. })
        ),
        "{err}"
    );
    assert!(ids(&store).is_empty());
    assert!(store.holds().unwrap().is_empty());
}

#[test]
fn copy_in_diff_commit_copy_out_while_stopped() {
    if !can_run() {
        return;
    }
    let (dir, store, image) = setup();
    let before = image_fingerprint(&store, &image);
    let mut c = Container::builder(&store, &image).create().unwrap();
    assert_eq!(c.backend(), "overlay");
    let host = dir.path().join("host");
    fs::create_dir_all(host.join("tree/sub")).unwrap();
    fs::write(host.join("tree/sub/f"), b"deep").unwrap();
    fs::write(host.join("new.txt"), b"new file").unwrap();
    fs::set_permissions(host.join("new.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(host.join("motd"), b"changed motd\n").unwrap();
    c.copy_in(host.join("new.txt"), "/data/new.txt").unwrap();
    c.copy_in(host.join("motd"), "/etc/motd").unwrap();
    c.copy_in(host.join("tree"), "/etc/tree").unwrap();
    assert!(matches!(
        c.copy_in(host.join("motd"), "/../x"),
        Err(ContainerError::BadPath { .. })
    ));
    // Read back through the union view, without mounting.
    assert_eq!(c.read_file("/etc/motd").unwrap(), b"changed motd\n");
    assert_eq!(c.read_file("/etc/tree/sub/f").unwrap(), b"deep");
    assert!(c.read_file("/etc/passwd").unwrap().starts_with(b"root:"));
    let diff = c.diff().unwrap();
    let want = [
        Change::Added("/data".into()),
        Change::Added("/data/new.txt".into()),
        Change::Modified("/etc".into()),
        Change::Modified("/etc/motd".into()),
        Change::Added("/etc/tree".into()),
        Change::Added("/etc/tree/sub".into()),
        Change::Added("/etc/tree/sub/f".into()),
    ];
    assert_eq!(diff, want);
    // Copy out a directory and a file.
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    c.copy_out("/etc/tree", out.join("tree")).unwrap();
    assert_eq!(fs::read(out.join("tree/sub/f")).unwrap(), b"deep");
    c.copy_out("/data/new.txt", out.join("n")).unwrap();
    assert_eq!(fs::metadata(out.join("n")).unwrap().mode() & 0o777, 0o640);

    // Commit: one new layer on top; the base layers are shared.
    let committed = c.commit("added files").unwrap();
    assert_eq!(committed.layers().len(), image.layers().len() + 1);
    assert_eq!(&committed.layers()[..image.layers().len()], image.layers());
    assert_eq!(committed.cmd(), image.cmd());
    let unpacked = molde_image::unpack::unpack(&store, &committed).unwrap();
    let (top, base) = unpacked.split_last().unwrap();
    assert!(
        base.iter().all(|u| u.existed),
        "base layers already unpacked"
    );
    assert!(!top.existed);
    assert!(
        committed
            .history()
            .last()
            .unwrap()
            .created_by
            .as_deref()
            .unwrap()
            .contains("added files")
    );
    // A container of the new image sees the committed files.
    let c2 = Container::builder(&store, &committed).create().unwrap();
    assert_eq!(c2.read_file("/etc/motd").unwrap(), b"changed motd\n");
    assert_eq!(c2.read_file("/data/new.txt").unwrap(), b"new file");
    assert!(c2.diff().unwrap().is_empty());
    c2.close().unwrap();
    c.close().unwrap();
    assert_eq!(image_fingerprint(&store, &image), before);
    assert!(store.holds().unwrap().is_empty());
}

#[test]
fn named_volume_outlives_its_container() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let c = Container::builder(&store, &image)
        .volume("shared", "/shared")
        .create()
        .unwrap();
    let vol = molde_container::Volume::open(&store, "shared").unwrap();
    assert!(matches!(
        vol.clone().remove(&store),
        Err(molde_container::ContainerError::Volume(
            molde_container::VolumeError::InUse { .. }
        ))
    ));
    fs::write(vol.path().join("kept"), b"1").unwrap();
    c.close().unwrap();
    let vol = molde_container::Volume::open(&store, "shared").unwrap();
    assert_eq!(fs::read(vol.path().join("kept")).unwrap(), b"1");
    vol.remove(&store).unwrap();
}

// ---- running containers ----

fn sh(store: &Store, image: &Image, script: &str) -> molde_container::ContainerBuilder {
    Container::builder(store, image)
        .command("/bin/sh")
        .args(["-c", script])
}

#[test]
fn output_collects_stdout_stderr_and_exit_code() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let out = sh(&store, &image, "echo out; echo err >&2; exit 3")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(
        out.status,
        Status::Exited {
            code: Some(3),
            signal: None
        }
    );
    assert!(ids(&store).is_empty(), "output() removes its container");
    // Env from the image plus overrides; the hostname.
    let out = sh(
        &store,
        &image,
        "echo $PATH $GREETING; cat /proc/sys/kernel/hostname",
    )
    .env("GREETING", "hi")
    .hostname("boxy")
    .output()
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin hi\nboxy\n"
    );
}

#[test]
fn user_by_name_runs_with_its_uid_and_home() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let out = sh(&store, &image, "echo $HOME; cat /proc/self/status")
        .user("appuser")
        .output()
        .unwrap();
    assert!(out.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("/home/appuser\n"), "{text}");
    let uid = text.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().nth(1), Some("1000"), "{uid}");
    let groups = text.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert!(groups.split_whitespace().any(|g| g == "10"), "{groups}");
}

#[test]
fn three_containers_at_once_each_write_only_their_own_layer() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let before = image_fingerprint(&store, &image);
    let mut children: Vec<_> = (0..3)
        .map(|i| {
            sh(
                &store,
                &image,
                &format!("echo {i} > /scratch/mine; sleep 1; ls /scratch"),
            )
            .stdout(molde_container::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut outs = Vec::new();
    for c in &mut children {
        let mut s = String::new();
        c.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(
            c.wait().unwrap(),
            Status::Exited {
                code: Some(0),
                signal: None
            }
        );
        outs.push(s);
    }
    // Each saw only its own file.
    assert!(outs.iter().all(|s| s == "mine\n"), "{outs:?}");
    for (i, c) in children.iter().enumerate() {
        let cont = c.container();
        assert_eq!(
            cont.read_file("/scratch/mine").unwrap(),
            format!("{i}\n").as_bytes()
        );
    }
    // One writes a file the others do not see.
    let (first, rest) = children.split_first().unwrap();
    assert!(
        first
            .container()
            .writable_layer()
            .join("scratch/mine")
            .exists()
    );
    for c in rest {
        assert_ne!(
            c.container().writable_layer(),
            first.container().writable_layer()
        );
    }
    drop(children);
    assert_eq!(
        image_fingerprint(&store, &image),
        before,
        "image layers unchanged"
    );
    assert!(ids(&store).is_empty());
}

#[test]
fn stop_restart_keep_changes_and_diff_lists_adds_changes_deletes() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let mut c = sh(
        &store,
        &image,
        "echo run >> /scratch/runs; echo x > /etc/motd; rm -f /bin/true; sleep 30",
    )
    .stdout(molde_container::Stdio::null())
    .start()
    .unwrap();
    assert_eq!(c.status().unwrap(), Status::Running);
    // Give the script time to write before stopping it.
    let runs = c.writable_layer().join("scratch/runs");
    for _ in 0..100 {
        if runs.exists() && c.writable_layer().join("usr/bin/true").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = c.stop(Duration::from_millis(500)).unwrap();
    // PID 1 of its namespace without a handler ignores SIGTERM: SIGKILL after the grace.
    assert_eq!(
        st,
        Status::Exited {
            code: None,
            signal: Some(libc::SIGKILL)
        }
    );
    assert_eq!(c.read_file("/scratch/runs").unwrap(), b"run\n");
    c.start().unwrap();
    for _ in 0..100 {
        if fs::read(&runs).unwrap_or_default() == b"run\nrun\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.kill().unwrap();
    let st = c.wait().unwrap();
    assert_eq!(
        st,
        Status::Exited {
            code: None,
            signal: Some(libc::SIGKILL)
        }
    );
    assert_eq!(
        c.read_file("/scratch/runs").unwrap(),
        b"run\nrun\n",
        "restart kept the layer"
    );
    let diff = c.diff().unwrap();
    assert!(
        diff.contains(&Change::Added("/scratch/runs".into())),
        "{diff:?}"
    );
    assert!(
        diff.contains(&Change::Modified("/etc/motd".into())),
        "{diff:?}"
    );
    // /bin is a symlink to usr/bin in the image: the file deleted is /usr/bin/true.
    assert!(
        diff.contains(&Change::Deleted(PathBuf::from("/usr/bin/true"))),
        "{diff:?}"
    );
    assert!(
        diff.contains(&Change::Modified("/usr/bin".into())),
        "{diff:?}"
    );
    c.close().unwrap();
}

#[test]
fn remove_while_running_kills_and_cleans() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let c = sh(&store, &image, "sleep 60").start().unwrap();
    let pid = c.pid().unwrap();
    let dir = store.layout().state().join("containers").join(c.id());
    assert!(dir.exists());
    c.remove().unwrap();
    assert!(!dir.exists());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process gone");
    assert!(store.holds().unwrap().is_empty());
}

#[test]
fn list_from_second_handle_sees_running_and_exited_with_codes() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let mut done = sh(&store, &image, "exit 7").start().unwrap();
    done.wait().unwrap();
    let running = sh(&store, &image, "sleep 60").start().unwrap();
    let other = Store::open(store.root()).unwrap();
    let list = Container::list(&other).unwrap();
    let by_id: BTreeMap<_, _> = list.iter().map(|s| (s.id.as_str(), s)).collect();
    assert_eq!(
        by_id[done.id()].status,
        Status::Exited {
            code: Some(7),
            signal: None
        }
    );
    assert_eq!(by_id[done.id()].exit_code, Some(7));
    assert_eq!(by_id[running.id()].status, Status::Running);
    assert_eq!(by_id[running.id()].pid, running.pid());
    // Another handle stops it.
    let mut opened = Container::open(&other, running.id()).unwrap();
    let st = opened.stop(Duration::from_millis(200)).unwrap();
    assert!(matches!(st, Status::Exited { .. }), "{st:?}");
    drop(opened);
    running.close().unwrap();
    done.close().unwrap();
}

#[test]
fn timeout_kills_the_run() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let err = sh(&store, &image, "sleep 30")
        .timeout(Duration::from_millis(300))
        .output()
        .unwrap_err();
    assert!(matches!(err, ContainerError::TimedOut { .. }), "{err}");
    assert!(ids(&store).is_empty());
}

/// The mounts of this mount namespace that mention `dir` (as mount point, source or option):
/// other tests and other processes mount things meanwhile, so only these are compared.
fn mounts_mentioning(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    let mut v: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir))
        .map(|l| l.split(' ').skip(3).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

fn my_children() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        if rest.split(' ').nth(1) == Some(&me.to_string()) {
            out.push(pid);
        }
    }
    out
}

fn store_tree(store: &Store) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["containers", "volumes"] {
        let d = store.layout().state().join(sub);
        if let Ok(rd) = fs::read_dir(&d) {
            out.extend(rd.flatten().map(|e| e.path()));
        }
    }
    out.sort();
    out
}

fn molde_cgroups() -> Vec<String> {
    molde_container::cgroup::Parent::default()
        .list()
        .unwrap_or_default()
}

/// Set in the subprocess that runs the 200 cycles alone (so that its process list holds only
/// what the cycles leave).
const ISOLATED_ENV: &str = "MOLDE_TEST_ISOLATED";

#[test]
fn two_hundred_cycles_leave_no_trace() {
    if !can_limit() {
        return;
    }
    if std::env::var_os(ISOLATED_ENV).is_none() {
        let st = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "two_hundred_cycles_leave_no_trace",
                "--test-threads=1",
            ])
            .env(ISOLATED_ENV, "1")
            .status()
            .unwrap();
        assert!(st.success(), "the isolated run failed: {st}");
        return;
    }
    let (dir, store, image) = setup();
    // Warm up (unpacks the layers, creates the containers directory).
    sh(&store, &image, "true").output().unwrap();
    let mounts = mounts_mentioning(dir.path());
    let children = my_children();
    let tree = store_tree(&store);
    let mut ids = Vec::new();
    for i in 0..200 {
        let mut b =
            sh(&store, &image, "echo $0 > /scratch/x").stdout(molde_container::Stdio::null());
        if i % 2 == 0 {
            b = b.pids(64);
        }
        let mut c = b.create().unwrap();
        c.start().unwrap();
        ids.push(c.id().to_owned());
        let st = c.wait().unwrap();
        assert_eq!(
            st,
            Status::Exited {
                code: Some(0),
                signal: None
            },
            "cycle {i}"
        );
        c.remove().unwrap();
    }
    assert_eq!(mounts_mentioning(dir.path()), mounts, "mount table");
    assert_eq!(my_children(), children, "processes");
    assert_eq!(store_tree(&store), tree, "store directories");
    let cgroups = molde_cgroups();
    assert!(ids.iter().all(|id| !cgroups.contains(id)), "cgroups left");
    assert!(store.holds().unwrap().is_empty());
}

/// A container's directory holds its update lock, its record and its writable layer, nothing
/// more, in every state: the state changes in place (the lock file's xattr: same inode, no
/// file made), the owner lock is the directory itself, and the rootfs is mounted over the
/// writable layer's directory only in the container's own mount namespace.
#[test]
fn a_container_directory_holds_only_lock_record_and_snapshot() {
    if !can_run() {
        return;
    }
    use molde_container::record::{self, ContainerPaths};
    let (dir, store, image) = setup();
    let mut c = sh(&store, &image, "echo hi > /scratch/x; sleep 30")
        .stdout(molde_container::Stdio::null())
        .create()
        .unwrap();
    let paths = ContainerPaths::new(&store, c.id());
    let names = || {
        let mut n: Vec<String> = fs::read_dir(paths.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    };
    let expected = ["lock", "record.json", "snapshot"];
    let snapshot = paths.snapshot();
    let snapshot_names = || {
        let mut n: Vec<String> = fs::read_dir(&snapshot)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(), expected);
    assert_eq!(snapshot_names(), ["upper", "work"]);
    let lock_inode = fs::metadata(paths.lock()).unwrap().ino();
    let mounts = mounts_mentioning(dir.path());
    for run in 0..2 {
        c.start().unwrap();
        assert_eq!(names(), expected, "run {run}: running");
        assert!(
            record::try_own(&paths).unwrap().is_none(),
            "the starting handle holds the owner lock"
        );
        let mut other = Container::open(&store, c.id()).unwrap();
        assert_eq!(other.status().unwrap(), Status::Running);
        // `echo hi > x` creates the file before it writes to it: wait for the content,
        // not for the file.
        for _ in 0..200 {
            if c.read_file("/scratch/x").is_ok_and(|b| b == b"hi\n") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            c.read_file("/scratch/x").unwrap(),
            b"hi\n",
            "the rootfs works"
        );
        assert_eq!(
            mounts_mentioning(dir.path()),
            mounts,
            "nothing mounted on the host"
        );
        assert_eq!(snapshot_names(), ["upper", "work"], "upper and work only");
        c.stop(Duration::from_millis(100)).unwrap();
        assert!(matches!(other.status().unwrap(), Status::Exited { .. }));
        assert_eq!(names(), expected, "run {run}: exited");
        assert_eq!(fs::metadata(paths.lock()).unwrap().ino(), lock_inode);
        assert!(record::try_own(&paths).unwrap().is_some(), "released");
    }
    c.remove().unwrap();
    assert!(!paths.dir().exists());
}

// ---- stale state (item 7, container side) ----

#[test]
fn stale_records_are_marked_exited_and_interrupted_work_cleared() {
    if !can_run() {
        return;
    }
    use molde_container::record::{ContainerPaths, Record, State};
    let (_dir, store, image) = setup();
    // A container whose owner "died" while it ran: its pid is gone, nobody holds its owner lock.
    let dead = std::process::Command::new("/bin/true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let stale = Container::builder(&store, &image).create().unwrap().keep();
    let paths = ContainerPaths::new(&store, &stale);
    Record::update(&paths, |r| {
        r.state = State::Running;
        r.pid = Some(dead_pid);
        r.pid_start = Some(1);
    })
    .unwrap();
    // A removal interrupted half-way.
    let removing = Container::builder(&store, &image).create().unwrap().keep();
    Record::update(&ContainerPaths::new(&store, &removing), |r| {
        r.state = State::Removing
    })
    .unwrap();
    // A creation interrupted before its record was written.
    let half = "ab".repeat(32);
    let half_paths = ContainerPaths::new(&store, &half);
    fs::create_dir_all(half_paths.snapshot().join("upper")).unwrap();
    fs::write(half_paths.lock(), b"").unwrap();
    store
        .hold(&image, &molde_container::record::hold_name(&half))
        .unwrap();

    let other = Store::open(store.root()).unwrap();
    molde_container::recover(&other).unwrap();
    let list = Container::list(&other).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].id, stale);
    assert_eq!(
        list[0].status,
        Status::Exited {
            code: None,
            signal: None
        }
    );
    assert_eq!(Record::read(&paths).unwrap().state, State::Exited);
    assert!(!ContainerPaths::new(&store, &removing).dir().exists());
    assert!(!half_paths.dir().exists());
    let holds: Vec<String> = store.holds().unwrap().into_iter().map(|h| h.name).collect();
    assert_eq!(holds, vec![format!("container:{stale}")]);
    Container::open(&other, &stale).unwrap().remove().unwrap();
    assert!(store.holds().unwrap().is_empty());
}

#[test]
fn a_record_not_understood_is_skipped_never_deleted_a_torn_one_is_cleared() {
    if !can_run() {
        return;
    }
    use molde_container::record::ContainerPaths;
    let (_dir, store, image) = setup();
    // Complete JSON this molde does not understand (a newer molde's, or edited by hand).
    let newer = Container::builder(&store, &image).create().unwrap();
    let precious = newer.writable_layer().join("precious");
    fs::write(&precious, b"keep me").unwrap();
    let newer = newer.keep();
    let newer_paths = ContainerPaths::new(&store, &newer);
    let text = fs::read_to_string(newer_paths.record()).unwrap();
    assert!(text.contains(r#""storage":"disk""#), "{text}");
    fs::write(
        newer_paths.record(),
        text.replace(r#""storage":"disk""#, r#""storage":"zram""#),
    )
    .unwrap();
    // A record cut short by a host crash, and an empty one: interrupted creations.
    let torn = Container::builder(&store, &image).create().unwrap().keep();
    let torn_paths = ContainerPaths::new(&store, &torn);
    let text = fs::read(torn_paths.record()).unwrap();
    fs::write(torn_paths.record(), &text[..text.len() / 2]).unwrap();
    let empty = Container::builder(&store, &image).create().unwrap().keep();
    let empty_paths = ContainerPaths::new(&store, &empty);
    fs::write(empty_paths.record(), b"").unwrap();

    let other = Store::open(store.root()).unwrap();
    molde_container::recover(&other).unwrap();
    assert!(Container::list(&other).unwrap().is_empty());
    assert!(!torn_paths.dir().exists());
    assert!(!empty_paths.dir().exists());
    // Left alone: its writable layer, its hold.
    assert_eq!(fs::read(&precious).unwrap(), b"keep me");
    let holds: Vec<String> = store.holds().unwrap().into_iter().map(|h| h.name).collect();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert!(holds[0].ends_with(&newer), "{holds:?}");
    // Opening it names the problem.
    let err = Container::open(&other, &newer).unwrap_err();
    assert!(err.to_string().contains("zram"), "{err}");
}

#[test]
fn recover_releases_only_container_holds_and_keeps_reading_old_bare_ones() {
    if !can_run() {
        return;
    }
    use molde_container::record::{ContainerPaths, hold_name};
    let (_dir, store, image) = setup();
    // A user's hold named like an image id, and a container hold whose container is gone.
    let users = "cd".repeat(32);
    store.hold(&image, &users).unwrap();
    store.hold(&image, &hold_name(&"ef".repeat(32))).unwrap();
    // A container of an older molde: its hold is its bare id.
    let old = Container::builder(&store, &image).create().unwrap().keep();
    store.release(&hold_name(&old)).unwrap();
    store.hold(&image, &old).unwrap();
    let current = Container::builder(&store, &image).create().unwrap().keep();

    molde_container::recover(&store).unwrap();
    let mut holds: Vec<String> = store.holds().unwrap().into_iter().map(|h| h.name).collect();
    holds.sort();
    let mut want = vec![users.clone(), old.clone(), hold_name(&current)];
    want.sort();
    assert_eq!(holds, want);
    // The error of a refused image removal names the container.
    let err = store
        .remove(&image.manifest_digest().to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&hold_name(&current)), "{err}");
    // Removing the old container releases its bare hold.
    Container::open(&store, &old).unwrap().remove().unwrap();
    Container::open(&store, &current).unwrap().remove().unwrap();
    assert!(!ContainerPaths::new(&store, &old).dir().exists());
    let holds: Vec<String> = store.holds().unwrap().into_iter().map(|h| h.name).collect();
    assert_eq!(holds, vec![users]);
}

#[test]
fn ephemeral_writable_layer_lives_on_a_tmpfs() {
    if !can_run() {
        return;
    }
    if !common::privileged() {
        return ephemeral_rootless();
    }
    let (dir, store, image) = setup();
    let mounts = mounts_mentioning(dir.path());
    let mut c = Container::builder(&store, &image)
        .ephemeral(true)
        .create()
        .unwrap();
    let snap = store
        .layout()
        .state()
        .join("containers")
        .join(c.id())
        .join("snapshot");
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        info.lines()
            .any(|l| l.split(' ').nth(4) == Some(snap.to_str().unwrap()) && l.contains(" tmpfs ")),
        "the writable layer is a tmpfs"
    );
    fs::write(dir.path().join("f"), b"on tmpfs").unwrap();
    c.copy_in(dir.path().join("f"), "/f").unwrap();
    assert_eq!(c.read_file("/f").unwrap(), b"on tmpfs");
    c.close().unwrap();
    assert!(!snap.exists());
    assert_eq!(mounts_mentioning(dir.path()), mounts);
}

/// Rootless, the tmpfs is mounted in the container's own namespaces at each start: writes
/// land there (not in the upper directory on disk), a second run starts fresh, and what would
/// read the layer from the host is refused with a typed error.
fn ephemeral_rootless() {
    let (dir, store, image) = setup();
    let mounts = mounts_mentioning(dir.path());
    let script = "[ -e /f ] && exit 9; echo x > /f && [ -s /f ] && exit 5";
    let mut c = sh(&store, &image, script)
        .ephemeral(true)
        .stdout(molde_container::Stdio::null())
        .create()
        .unwrap();
    let five = Status::Exited {
        code: Some(5),
        signal: None,
    };
    for run in ["first", "second (a fresh tmpfs: no /f)"] {
        c.start().unwrap();
        assert_eq!(c.wait().unwrap(), five, "{run} run");
        assert!(
            !c.writable_layer().join("f").exists(),
            "the write went to the upper on disk"
        );
        assert_eq!(
            mounts_mentioning(dir.path()),
            mounts,
            "no mount on the host"
        );
    }
    for err in [
        c.commit("ephemeral").map(drop).unwrap_err(),
        c.read_file("/etc/passwd").map(drop).unwrap_err(),
        c.diff().map(drop).unwrap_err(),
        c.copy_out("/etc", dir.path().join("out")).unwrap_err(),
    ] {
        assert!(
            matches!(err, ContainerError::LayerOutOfReach { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("ephemeral(true)"), "{err}");
    }
    assert!(!dir.path().join("out").exists());
    let snap = c.writable_layer().parent().unwrap().to_owned();
    c.close().unwrap();
    assert!(!snap.exists());
    assert_eq!(mounts_mentioning(dir.path()), mounts);
}

#[test]
fn exec_runs_in_the_running_container_as_its_user_or_another() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let c = sh(&store, &image, "echo inside > /scratch/w; sleep 30")
        .stdout(molde_container::Stdio::null())
        .start()
        .unwrap();
    for _ in 0..100 {
        // The file exists before `echo` writes to it: wait for its content.
        if fs::read(c.writable_layer().join("scratch/w")).is_ok_and(|b| b == b"inside\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = c.exec("cat").arg("/scratch/w").output().unwrap();
    assert_eq!(out.stdout, b"inside\n");
    assert!(out.success());
    let out = c
        .exec("/bin/sh")
        .args(["-c", "echo $HOME; cat /proc/self/status; exit 4"])
        .user("appuser")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("/home/appuser\n"), "{text}");
    let uid = text.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().nth(1), Some("1000"), "{uid}");
    assert_eq!(
        out.status,
        Status::Exited {
            code: Some(4),
            signal: None
        }
    );
    // The exec'd process shares the container's pid namespace: it sees PID 1 (sleep's shell).
    let out = c.exec("cat").arg("/proc/1/cmdline").output().unwrap();
    assert!(
        out.stdout.starts_with(b"/bin/sh"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(matches!(
        c.exec("id").user("nobody-here").spawn(),
        Err(ContainerError::Config(ConfigError::UnknownUser { .. }))
    ));
    c.close().unwrap();
}

#[test]
fn exec_refuses_a_recorded_pid_that_names_another_process() {
    if !can_run() {
        return;
    }
    use molde_container::record::{ContainerPaths, Record};
    let (_dir, store, image) = setup();
    let c = sh(&store, &image, "sleep 30")
        .stdout(molde_container::Stdio::null())
        .start()
        .unwrap();
    let pid = c.pid().unwrap();
    // The pid now names "another" process: its start time is not the recorded one.
    Record::update(&ContainerPaths::new(&store, c.id()), |r| {
        r.pid_start = r.pid_start.map(|s| s + 1)
    })
    .unwrap();
    let other = Container::open(&store, c.id()).unwrap();
    match other.exec("/bin/true").output() {
        Err(ContainerError::ProcessGone { pid: p, .. }) => assert_eq!(p, pid),
        r => panic!("exec through a reused pid: {r:?}"),
    }
    // The launcher checks again once it holds a pidfd.
    let mut e = molde_container::launch::ExecSpec::new("/bin/true");
    e.target_start = Some(u64::MAX);
    let err = molde_container::launch::exec(pid, &e).unwrap_err();
    assert_eq!(err.stage, molde_container::launch::Stage::Setns, "{err}");
    // This handle's own child is still reachable.
    assert!(c.exec("/bin/true").output().unwrap().success());
    c.close().unwrap();
}

#[test]
fn exec_joins_the_container_cgroup() {
    if !can_limit() {
        return;
    }
    let (_dir, store, image) = setup();
    let c = sh(&store, &image, "sleep 30")
        .pids(64)
        .stdout(molde_container::Stdio::null())
        .start()
        .unwrap();
    let cgroup_of = |pid: u32| fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let pid1 = cgroup_of(c.pid().unwrap());
    assert!(pid1.contains(c.id()), "{pid1}");
    // From this handle and from another one (which opens the cgroup its starter made).
    let other = Container::open(&store, c.id()).unwrap();
    for handle in [&c, &other] {
        let mut p = handle.exec("sleep").arg("30").spawn().unwrap();
        assert_eq!(cgroup_of(p.pid()), pid1);
        p.kill().unwrap();
        p.wait().unwrap();
    }
    drop(other);
    // The cgroup is still there for the owner to remove.
    c.close().unwrap();
}

#[test]
fn a_kept_running_container_can_be_restarted_once_it_ends() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let c = sh(&store, &image, "sleep 0.3").start().unwrap();
    let pid = c.pid().unwrap();
    let id = c.keep();
    // While it runs, it is running for everyone.
    let mut other = Container::open(&store, &id).unwrap();
    assert_eq!(other.status().unwrap(), Status::Running);
    drop(other);
    // Once it ended (a zombie of this process), a handle of this same process marks it
    // exited and starts it again.
    for _ in 0..200 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.rsplit(')').next().unwrap().starts_with(" Z") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    other = Container::open(&store, &id).unwrap();
    assert!(
        matches!(other.status().unwrap(), Status::Exited { .. }),
        "{:?}",
        other.status()
    );
    other.start().unwrap();
    assert!(matches!(
        other.wait().unwrap(),
        Status::Exited { code: Some(0), .. }
    ));
    other.remove().unwrap();
}

#[test]
fn a_record_with_an_empty_command_line_is_a_typed_error_at_start() {
    if !can_run() {
        return;
    }
    use molde_container::record::{ContainerPaths, Record, RecordError};
    let (_dir, store, image) = setup();
    let id = sh(&store, &image, "true").create().unwrap().keep();
    let paths = ContainerPaths::new(&store, &id);
    Record::update(&paths, |r| r.run.argv.clear()).unwrap();
    let mut c = Container::open(&store, &id).unwrap();
    match c.start() {
        Err(ContainerError::Record(RecordError::Invalid { path, .. })) => {
            assert_eq!(path, paths.record())
        }
        r => panic!("start with an empty argv: {r:?}"),
    }
    assert_eq!(c.status().unwrap(), Status::Created);
    c.remove().unwrap();
}

/// Exec into a container whose PID 1 is the init (a non-dumpable copy of the host binary): the
/// exec joins through the program, the init's child, from this handle and from another one.
fn exec_into_an_init_container(store: &Store, image: &Image) {
    let c = sh(store, image, "echo inside > /tmp/w; exec sleep 30")
        .init(true)
        .stdout(molde_container::Stdio::null())
        .start()
        .unwrap();
    for _ in 0..100 {
        if c.writable_layer().join("tmp/w").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = c.exec("cat").arg("/tmp/w").output().unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, b"inside\n");
    // Same pid namespace: the program is the init's child, pid 2.
    let out = c.exec("cat").arg("/proc/2/cmdline").output().unwrap();
    assert!(
        out.stdout.starts_with(b"sleep"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Another handle finds the program's pid in the record.
    let other = Container::open(store, c.id()).unwrap();
    let out = other.exec("cat").arg("/tmp/w").output().unwrap();
    assert_eq!(out.stdout, b"inside\n", "{out:?}");
    drop(other);
    c.close().unwrap();
}

#[test]
fn exec_into_a_container_with_init() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    exec_into_an_init_container(&store, &image);
}

#[test]
fn init_runs_the_program_as_its_child() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let plain = sh(&store, &image, "echo $$").output().unwrap();
    assert_eq!(plain.stdout, b"1\n");
    let with_init = sh(&store, &image, "echo $$").init(true).output().unwrap();
    assert!(with_init.success(), "{with_init:?}");
    assert_ne!(with_init.stdout, b"1\n");
}

#[test]
fn dropping_during_a_panic_kills_and_removes() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = store.clone();
    let i2 = image.clone();
    let r = std::thread::spawn(move || {
        let child = sh(&s2, &i2, "sleep 60").spawn().unwrap();
        tx.send(child.pid().unwrap()).unwrap();
        panic!("boom while a container runs");
    })
    .join();
    assert!(r.is_err());
    let pid = rx.recv().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "killed");
    assert!(ids(&store).is_empty(), "removed");
    assert!(store.holds().unwrap().is_empty());
}

#[test]
fn stop_sends_the_stop_signal_then_kills_after_grace() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    // A handler for SIGTERM: stop ends it with its own code, well before the grace period.
    let mut c = sh(
        &store,
        &image,
        "trap 'exit 42' TERM; echo ready > /scratch/r; while :; do sleep 0.1; done",
    )
    .start()
    .unwrap();
    for _ in 0..100 {
        if c.writable_layer().join("scratch/r").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = std::time::Instant::now();
    let st = c.stop(Duration::from_secs(20)).unwrap();
    assert_eq!(
        st,
        Status::Exited {
            code: Some(42),
            signal: None
        }
    );
    assert!(t.elapsed() < Duration::from_secs(15));
    // The image's (here: the builder's) stop signal is the one sent.
    let mut c = sh(
        &store,
        &image,
        "trap 'exit 7' USR1; trap '' TERM; echo ready > /scratch/r; while :; do sleep 0.1; done",
    )
    .stop_signal(nix::sys::signal::Signal::SIGUSR1)
    .start()
    .unwrap();
    for _ in 0..100 {
        if c.writable_layer().join("scratch/r").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        c.stop(Duration::from_secs(20)).unwrap(),
        Status::Exited {
            code: Some(7),
            signal: None
        }
    );
    // Ignoring it: SIGKILL after the grace period.
    c.close().unwrap();
    let mut c = sh(
        &store,
        &image,
        "trap '' TERM; echo ready > /scratch/r; while :; do sleep 0.1; done",
    )
    .start()
    .unwrap();
    for _ in 0..100 {
        if c.writable_layer().join("scratch/r").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        c.stop(Duration::from_millis(300)).unwrap(),
        Status::Exited {
            code: None,
            signal: Some(libc::SIGKILL)
        }
    );
    c.close().unwrap();
}

#[test]
fn mounts_read_only_rootfs_rlimits_and_file_stdio() {
    if !can_run() {
        return;
    }
    let (dir, store, image) = setup();
    let rw = dir.path().join("rw");
    let ro = dir.path().join("ro");
    fs::create_dir_all(&rw).unwrap();
    fs::create_dir_all(&ro).unwrap();
    fs::write(ro.join("given"), b"from host\n").unwrap();
    let log = dir.path().join("log");
    let out = sh(
        &store,
        &image,
        "cat /ro/given; echo w > /rw/out; touch /ro/x 2>/dev/null && echo ro-writable; \
         echo t > /tmpfs/t && cat /tmpfs/t; touch /rootfile 2>/dev/null && echo root-writable; \
         cat /proc/self/limits; echo to-file >&2",
    )
    .mount_bind(&rw, "/rw")
    .mount_bind_ro(&ro, "/ro")
    .mount_tmpfs("/tmpfs", Some(1 << 20))
    .read_only_rootfs(true)
    .rlimit(molde_container::rlimit::Resource::RLIMIT_NOFILE, 64, 64)
    .stderr(fs::File::create(&log).unwrap())
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("from host\nt\n"), "{text}");
    assert!(
        !text.contains("ro-writable") && !text.contains("root-writable"),
        "{text}"
    );
    let files = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(files.split_whitespace().nth(3), Some("64"), "{files}");
    assert_eq!(fs::read(rw.join("out")).unwrap(), b"w\n");
    assert_eq!(fs::read(&log).unwrap(), b"to-file\n");
    assert!(out.stderr.is_empty());
}

/// When set, `host_killed_...` is the host process to be killed: it starts a container in the
/// store at this path, prints `<id> <pid>` and waits to be killed.
const HOST_ENV: &str = "MOLDE_TEST_HOST_STORE";

#[test]
fn host_sigkilled_leaves_no_container_process_and_recover_clears_it() {
    if let Some(root) = std::env::var_os(HOST_ENV) {
        let store = Store::open(PathBuf::from(root)).unwrap();
        let image = store
            .resolve(&std::env::var("MOLDE_TEST_HOST_IMAGE").unwrap())
            .unwrap();
        let c = sh(&store, &image, "sleep 600")
            .pids(64)
            .stdout(molde_container::Stdio::null())
            .start()
            .unwrap();
        println!("CONTAINER {} {}", c.id(), c.pid().unwrap());
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    if !can_limit() {
        return;
    }
    let (_dir, store, image) = setup();
    let mut host = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "host_sigkilled_leaves_no_container_process_and_recover_clears_it",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOST_ENV, store.root())
        .env("MOLDE_TEST_HOST_IMAGE", image.id().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    let (id, pid) = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0,
            "host ended"
        );
        // libtest prints the test's name on the same line first.
        if let Some(at) = line.find("CONTAINER ") {
            let rest = line[at + "CONTAINER ".len()..].trim();
            let (id, pid) = rest.split_once(' ').unwrap();
            break (id.to_owned(), pid.parse::<u32>().unwrap());
        }
    };
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(Container::list(&store).unwrap()[0].status, Status::Running);
    assert!(molde_cgroups().contains(&id));
    host.kill().unwrap();
    host.wait().unwrap();
    // PR_SET_PDEATHSIG: the container's PID 1 dies with its host.
    let mut gone = false;
    for _ in 0..100 {
        if molde_container::record::pid_info(pid).is_none_or(|(_, zombie)| zombie) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone, "container process {pid} outlived its host");
    // The next store handle finds the record stale and marks it exited.
    let again = Store::open(store.root()).unwrap();
    molde_container::recover(&again).unwrap();
    let list = Container::list(&again).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    assert_eq!(
        list[0].status,
        Status::Exited {
            code: None,
            signal: None
        }
    );
    Container::open(&again, &id).unwrap().remove().unwrap();
    assert!(again.holds().unwrap().is_empty());
}

#[test]
fn child_pipes_stdin_through_the_container() {
    if !can_run() {
        return;
    }
    use std::io::Write;
    let (_dir, store, image) = setup();
    let mut child = Container::builder(&store, &image)
        .command("cat")
        .stdin(molde_container::Stdio::piped())
        .stdout(molde_container::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(child.pid().is_some());
    assert_eq!(child.try_wait().unwrap(), None);
    assert_eq!(child.wait_timeout(Duration::from_millis(50)).unwrap(), None);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"through the container\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "through the container\n");
    assert_eq!(
        child.wait().unwrap(),
        Status::Exited {
            code: Some(0),
            signal: None
        }
    );
}

#[test]
fn network_is_isolated_unless_host_is_asked_for() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let interfaces = |out: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
            .collect()
    };
    let isolated = sh(&store, &image, "cat /proc/net/dev").output().unwrap();
    assert_eq!(interfaces(&isolated.stdout), ["lo"]);
    let host = sh(&store, &image, "cat /proc/net/dev")
        .network(molde_container::Network::Host)
        .output()
        .unwrap();
    // Veths come and go meanwhile (other processes' containers: molde's `mv*`, others'
    // `veth*`): the rest must be the same list.
    let lasting = |ifs: Vec<String>| -> Vec<String> {
        ifs.into_iter()
            .filter(|n| !n.starts_with("mv") && !n.starts_with("veth"))
            .collect()
    };
    let host_ifs = lasting(interfaces(&host.stdout));
    let ours = lasting(interfaces(&fs::read("/proc/net/dev").unwrap()));
    assert!(host_ifs.len() > 1, "{host_ifs:?}");
    assert_eq!(host_ifs, ours);
}

#[test]
fn another_handle_restarts_and_commits_a_kept_container() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let id = sh(&store, &image, "echo run >> /scratch/runs")
        .stdout(molde_container::Stdio::null())
        .start()
        .map(|mut c| {
            c.wait().unwrap();
            c.keep()
        })
        .unwrap();
    let other = Store::open(store.root()).unwrap();
    let mut c = Container::open(&other, &id).unwrap();
    assert_eq!(
        c.status().unwrap(),
        Status::Exited {
            code: Some(0),
            signal: None
        }
    );
    c.start().unwrap();
    c.wait().unwrap();
    assert_eq!(c.read_file("/scratch/runs").unwrap(), b"run\nrun\n");
    let committed = c.commit("two runs").unwrap();
    drop(c);
    // Dropping an opened handle leaves the container.
    assert_eq!(ids(&store), vec![id.clone()]);
    let fresh = sh(&store, &committed, "cat /scratch/runs")
        .output()
        .unwrap();
    assert_eq!(fresh.stdout, b"run\nrun\n");
    Container::open(&store, &id).unwrap().remove().unwrap();
    assert!(ids(&store).is_empty());
}

#[test]
fn timeout_holds_without_a_waiter() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let mut c = sh(&store, &image, "sleep 30")
        .timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let pid = c.pid().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // Nobody waited, yet the watchdog killed it at its timeout.
    assert!(
        molde_container::record::pid_info(pid).is_none_or(|(_, zombie)| zombie),
        "still running past its timeout"
    );
    assert!(matches!(c.wait(), Err(ContainerError::TimedOut { .. })));
    assert_eq!(
        c.status().unwrap(),
        Status::Exited {
            code: None,
            signal: Some(libc::SIGKILL)
        }
    );
    c.close().unwrap();
}

#[test]
fn copy_in_over_deleted_paths_keeps_overlay_semantics() {
    if !can_run() {
        return;
    }
    let (dir, store, image) = setup();
    let mut c = sh(&store, &image, "rm -r /etc; rm /scratch -r")
        .start()
        .unwrap();
    c.wait().unwrap();
    assert!(c.read_file("/etc/passwd").is_err());
    let host = dir.path().join("newetc");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("only"), b"1").unwrap();
    c.copy_in(&host, "/etc").unwrap();
    c.copy_in(host.join("only"), "/scratch/again/f").unwrap();
    // The new /etc replaces the deleted one: nothing of the image's /etc shows through.
    let names: Vec<_> = c
        .view()
        .read_dir(Path::new("/etc"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["only"]);
    assert_eq!(c.read_file("/scratch/again/f").unwrap(), b"1");
    // A container of the committed image sees the same; exec needs a running container.
    assert!(c.exec("ls").output().is_err());
    let again = c;
    let seen = sh(
        &store,
        &again.commit("etc").unwrap(),
        "ls /etc /scratch/again",
    )
    .output()
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout),
        "/etc:\nonly\n\n/scratch/again:\nf\n",
        "{seen:?}"
    );
    again.close().unwrap();
}

// ---- rootless ----

/// Tells the rootless helper where its files are (and that the outer test started it).
const ROOTLESS_ENV: &str = "MOLDE_TEST_LIFECYCLE_ROOTLESS_DIR";

/// The whole lifecycle as an unprivileged user: this test binary, copied where `nobody` can
/// run it, re-runs its helper as uid/gid 65534 through setpriv(1). The launcher puts the
/// container in a user namespace, where its overlay writable layer is mounted (`userxattr`):
/// the host would not let this user mount it.
#[test]
fn rootless_lifecycle_as_nobody() {
    if !common::require(common::have_tool("setpriv"), "needs setpriv(1)")
        || !common::require(common::privileged(), "needs root to become nobody")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
    let exe = base.join("lifecycle");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let work = base.join("work");
    fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .args([
            "rootless_lifecycle_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOTLESS_ENV, &work)
        .env("TMPDIR", &work)
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
        stderr.contains("rootless lifecycle: checked"),
        "{stdout}\n{stderr}"
    );
}

/// Runs as `nobody` for [`rootless_lifecycle_as_nobody`].
#[test]
#[ignore = "helper: run as nobody by rootless_lifecycle_as_nobody"]
fn rootless_lifecycle_helper() {
    let work = std::env::var_os(ROOTLESS_ENV)
        .map(PathBuf::from)
        .expect("a helper: started by rootless_lifecycle_as_nobody, which sets its environment");
    assert!(!common::privileged(), "must run unprivileged");
    let store = Store::open(work.join("store")).unwrap();
    let bins: Vec<&Path> = BINARIES
        .iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .collect();
    let image = molde_image::base::from_host(&store, &bins).unwrap();
    let out = sh(&store, &image, "echo hi; cat /proc/self/status")
        .output()
        .unwrap();
    assert!(out.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("hi\n"), "{text}");
    let uid = text.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().nth(1),
        Some("0"),
        "root inside: {uid}"
    );

    let before = image_fingerprint(&store, &image);
    let mut c = sh(&store, &image, "echo changed > /etc/new; rm /usr/bin/ls")
        .create()
        .unwrap();
    assert_eq!(
        c.backend(),
        "overlay",
        "overlay (userxattr) mounted in the container's user namespace"
    );
    c.start().unwrap();
    assert_eq!(
        c.wait().unwrap(),
        Status::Exited {
            code: Some(0),
            signal: None
        }
    );
    let diff = c.diff().unwrap();
    assert!(diff.contains(&Change::Added("/etc/new".into())), "{diff:?}");
    assert!(
        diff.contains(&Change::Deleted("/usr/bin/ls".into())),
        "{diff:?}"
    );
    // The writes are in the upper directory: the new file, and a whiteout (char 0/0) for the
    // deleted one; the image's layers are as they were.
    let upper = c.writable_layer().to_owned();
    assert!(upper.ends_with("upper"), "{}", upper.display());
    assert_eq!(fs::read(upper.join("etc/new")).unwrap(), b"changed\n");
    let wh = fs::symlink_metadata(upper.join("usr/bin/ls")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()) && wh.rdev() == 0,
        "whiteout: {wh:?}"
    );
    assert!(
        !upper.join("usr/bin/cat").exists(),
        "only changes are in the upper"
    );
    let committed = c.commit("rootless").unwrap();
    assert_eq!(
        image_fingerprint(&store, &image),
        before,
        "image layers unchanged"
    );
    assert_eq!(committed.layers().len(), image.layers().len() + 1);
    let c2 = Container::builder(&store, &committed).create().unwrap();
    assert_eq!(c2.read_file("/etc/new").unwrap(), b"changed\n");
    assert!(c2.read_file("/usr/bin/ls").is_err());
    c2.close().unwrap();
    c.close().unwrap();
    exec_into_an_init_container(&store, &image);
    assert!(Container::list(&store).unwrap().is_empty());
    assert!(store.holds().unwrap().is_empty());
    eprintln!("rootless lifecycle: checked");
}

#[test]
fn a_deep_image_runs_on_its_flattened_stack_and_writes_never_reach_the_layers() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let mut builder = ImageBuilder::from_image(&image);
    for i in 0..molde_image::unpack::FLATTEN_MIN_LAYERS {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let body = format!("layer {i}\n");
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "etc/deep", body.as_bytes())
            .unwrap();
        let layer = store
            .add_layer(&tar.into_inner().unwrap()[..])
            .unwrap()
            .layer;
        builder = builder.layer(layer, format!("deep {i}"));
    }
    let deep = store.commit(builder).unwrap();
    let last = molde_image::unpack::FLATTEN_MIN_LAYERS - 1;
    let out = sh(
        &store,
        &deep,
        "cat /etc/deep /etc/motd; echo changed > /etc/deep; echo more >> /etc/motd; cat /etc/deep",
    )
    .output()
    .unwrap();
    assert!(
        matches!(out.status, Status::Exited { code: Some(0), .. }),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("layer {last}\nhello from the image\nchanged\n")
    );
    // The writes were copied up: the flattened stack and the layers are as they were.
    let flat = molde_image::unpack::flattened(&store, &deep)
        .unwrap()
        .unwrap();
    assert_eq!(
        fs::read_to_string(flat.join("etc/deep")).unwrap(),
        format!("layer {last}\n")
    );
    assert_eq!(
        fs::read_to_string(flat.join("etc/motd")).unwrap(),
        "hello from the image\n"
    );
    let layers = molde_image::unpack::unpack(&store, &deep).unwrap();
    assert_eq!(
        fs::read_to_string(layers.last().unwrap().path.join("etc/deep")).unwrap(),
        format!("layer {last}\n")
    );
    // A container's commit of a deep image is an image one layer deeper, with its change.
    let mut c = sh(&store, &deep, "echo committed > /etc/deep")
        .create()
        .unwrap();
    c.start().unwrap();
    c.wait().unwrap();
    let committed = c.commit("deep change").unwrap();
    c.remove().unwrap();
    assert_eq!(committed.layers().len(), deep.layers().len() + 1);
    let out = sh(&store, &committed, "cat /etc/deep").output().unwrap();
    assert_eq!(out.stdout, b"committed\n");
}

#[test]
fn a_create_that_fails_leaves_no_volume_it_made() {
    if !can_run() {
        return;
    }
    let (dir, store, image) = setup();
    let kept = molde_container::Volume::create(&store, "existing").unwrap();
    let err = Container::builder(&store, &image)
        .volume("existing", "/a")
        .volume("fresh", "/b")
        .mount_bind(dir.path().join("no-such-source"), "/c")
        .create()
        .unwrap_err();
    assert!(err.to_string().contains("no-such-source"), "{err}");
    assert!(
        matches!(
            molde_container::Volume::open(&store, "fresh"),
            Err(molde_container::VolumeError::NotFound(_))
        ),
        "the volume the failed create made is gone"
    );
    assert!(kept.path().is_dir(), "a volume that existed before stays");
    assert!(ids(&store).is_empty());
}
