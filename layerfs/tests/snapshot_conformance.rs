//! The snapshot conformance suite: one set of tests, run against every backend (kernel
//! overlayfs and the copy fallback) through the `conformance!` macro at the bottom.
//!
//! Each test builds a real stack of lower layers in overlay format (whiteouts as char 0/0
//! devices, an opaque directory), performs the snapshot's mounts for real, and checks what a
//! container would rely on: the merged view, copy-on-write writes, untouched lowers, the diff as
//! a layer tar, read-only views, and a remove that leaves nothing behind.

mod common;
mod mount_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use molde_layerfs::OverlayXattr;
use molde_layerfs::diff::DiffOptions;
use molde_layerfs::mount::{Mount, overlay_supported};
use molde_layerfs::snapshot::{Backend, CopyBackend, OverlayBackend, Snapshot, SnapshotError};
use molde_layerfs::view::UnionView;
use mount_support::{LayerDir, MountGuard, fingerprint, is_mounted, mounts_under, names};
use sha2::Digest as _;

/// Three lowers, topmost first, with a whiteout, an opaque directory, overrides, a setuid file
/// and a symlink.
fn stack(base: &Path) -> Vec<PathBuf> {
    stack_with(base, OverlayXattr::Trusted)
}

fn stack_with(base: &Path, x: OverlayXattr) -> Vec<PathBuf> {
    let bottom = LayerDir::new(base.join("l2"), x);
    bottom
        .file("etc/hostname", b"bottom\n", 0o644)
        .file("etc/passwd", b"root\n", 0o644)
        .file("etc/gone", b"deleted in the middle layer\n", 0o644)
        .file("opaque/old", b"hidden by the opaque dir\n", 0o644)
        .file("bin/tool", b"#!/bin/sh\n", 0o4755)
        .symlink("bin/link", "tool")
        .file("keep/a", b"a", 0o644)
        .file("keep/b", b"b", 0o644)
        .file("rename-me", b"r", 0o600);
    let middle = LayerDir::new(base.join("l1"), x);
    middle
        .file("etc/hostname", b"middle\n", 0o644)
        .whiteout("etc/gone")
        .opaque("opaque")
        .file("opaque/mid", b"mid", 0o644);
    let top = LayerDir::new(base.join("l0"), x);
    top.file("opaque/top", b"top", 0o644)
        .file("only-top", b"t", 0o644);
    vec![top.root.clone(), middle.root.clone(), bottom.root.clone()]
}

fn check_merged(root: &Path) {
    assert_eq!(fs::read(root.join("etc/hostname")).unwrap(), b"middle\n");
    assert_eq!(
        names(&root.join("etc")),
        ["hostname", "passwd"],
        "whiteout hides etc/gone"
    );
    assert_eq!(
        names(&root.join("opaque")),
        ["mid", "top"],
        "opaque hides opaque/old"
    );
    assert_eq!(
        fs::metadata(root.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::read_link(root.join("bin/link")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        names(root),
        ["bin", "etc", "keep", "only-top", "opaque", "rename-me"]
    );
}

/// The mounts of a snapshot, performed at a target and unmounted on drop.
struct Mounted {
    target: PathBuf,
    guards: Vec<MountGuard>,
}

impl Mounted {
    fn new(snapshot: &Snapshot, target: &Path) -> Mounted {
        fs::create_dir_all(target).unwrap();
        let mut guards = Vec::new();
        for mount in &snapshot.mounts {
            mount
                .mount_at(target)
                .unwrap_or_else(|e| panic!("mount {mount:?}: {e}"));
            guards.push(MountGuard::new(target));
        }
        Mounted {
            target: target.to_path_buf(),
            guards,
        }
    }

    fn unmount(mut self) {
        while let Some(guard) = self.guards.pop() {
            guard.unmount();
        }
        assert!(!is_mounted(&self.target));
    }
}

/// One entry of a layer tar.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TarEntry {
    kind: tar::EntryType,
    mode: u32,
    data: Vec<u8>,
    /// A symlink's target or a hardlink's source.
    link: Option<String>,
}

/// The entries of an uncompressed layer tar, by path (no `./` prefix, no trailing `/`).
fn read_layer(bytes: &[u8]) -> BTreeMap<String, TarEntry> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let previous = out.insert(
            path.clone(),
            TarEntry {
                kind,
                mode,
                data,
                link,
            },
        );
        assert!(previous.is_none(), "{path} appears twice in the layer");
    }
    out
}

fn require_backend(backend: &dyn Backend) -> bool {
    if !common::require(common::privileged(), "needs root to mount") {
        return false;
    }
    backend.name() != "overlay"
        || common::require(
            overlay_supported(),
            "the overlay backend needs kernel overlayfs",
        )
}

fn check_removed(backend: &dyn Backend, snapshot: Snapshot, base: &Path) {
    let dir = snapshot.dir.clone();
    backend.remove(snapshot).unwrap();
    assert!(!dir.exists(), "{}: snapshot dir removed", backend.name());
    assert_eq!(mounts_under(base), Vec::<PathBuf>::new(), "no mount left");
    for layer in ["l0", "l1", "l2"] {
        assert!(base.join(layer).is_dir(), "lowers are never removed");
    }
}

/// prepare -> mount -> merged view -> writes (new, copy-up, delete, rename, mkdir, chmod)
/// -> unmount -> lowers unchanged -> diff is the expected layer -> remove.
fn prepare_write_diff_remove(backend: &dyn Backend) {
    if !require_backend(backend) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = stack(tmp.path());
    let before: Vec<_> = lowers.iter().map(|l| fingerprint(l)).collect();

    let snapshot = backend.prepare(&lowers, &tmp.path().join("snap")).unwrap();
    assert!(snapshot.writable);
    assert_eq!(snapshot.lowers, lowers);
    assert_eq!(snapshot.backend(), backend.name());
    let mounted = Mounted::new(&snapshot, &tmp.path().join("rootfs"));
    let root = tmp.path().join("rootfs");
    check_merged(&root);

    fs::write(root.join("new-file"), b"new").unwrap();
    fs::write(root.join("etc/passwd"), b"root\nuser\n").unwrap();
    fs::remove_file(root.join("keep/a")).unwrap();
    fs::rename(root.join("rename-me"), root.join("renamed")).unwrap();
    fs::create_dir(root.join("newdir")).unwrap();
    fs::write(root.join("newdir/inner"), b"i").unwrap();
    fs::remove_file(root.join("opaque/mid")).unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(fs::read(root.join("etc/passwd")).unwrap(), b"root\nuser\n");
    assert_eq!(names(&root.join("keep")), ["b"]);
    assert_eq!(fs::read(root.join("renamed")).unwrap(), b"r");
    mounted.unmount();

    let after: Vec<_> = lowers.iter().map(|l| fingerprint(l)).collect();
    assert!(before == after, "{}: lowers changed", backend.name());

    let mut layer = Vec::new();
    let report = backend
        .diff(&snapshot, &mut layer, &DiffOptions::default())
        .unwrap();
    assert_eq!(report.size, layer.len() as u64);
    let sha = sha2::Sha256::digest(&layer);
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        report.diff_id.to_string(),
        format!("sha256:{hex}"),
        "DiffID of the stream"
    );

    let entries = read_layer(&layer);
    let file = |path: &str, data: &[u8]| {
        let e = entries.get(path).unwrap_or_else(|| {
            panic!(
                "{}: {path} missing from {:?}",
                backend.name(),
                entries.keys()
            )
        });
        assert_eq!(e.kind, tar::EntryType::Regular, "{path}");
        assert_eq!(e.data, data, "{path}");
        e.mode
    };
    file("new-file", b"new");
    file("etc/passwd", b"root\nuser\n");
    file("renamed", b"r");
    file("newdir/inner", b"i");
    assert_eq!(
        file("bin/tool", b"#!/bin/sh\n") & 0o7777,
        0o755,
        "chmod is a change"
    );
    for whiteout in ["keep/.wh.a", ".wh.rename-me", "opaque/.wh.mid"] {
        file(whiteout, b"");
    }
    assert_eq!(entries["newdir"].kind, tar::EntryType::Directory);
    // Nothing else: every other entry is a directory on the way to a change.
    let expected = [
        "new-file",
        "etc/passwd",
        "renamed",
        "newdir/inner",
        "bin/tool",
        "keep/.wh.a",
        ".wh.rename-me",
        "opaque/.wh.mid",
        "newdir",
    ];
    for (path, entry) in &entries {
        if expected.contains(&path.as_str()) {
            continue;
        }
        assert_eq!(
            entry.kind,
            tar::EntryType::Directory,
            "{}: unexpected {path}",
            backend.name()
        );
        assert!(
            expected.iter().any(|e| e.starts_with(&format!("{path}/"))),
            "{}: directory {path} holds no change",
            backend.name()
        );
    }

    check_removed(backend, snapshot, tmp.path());
}

/// A tree as the tests compare it: path -> (kind, mode, contents or symlink target).
type Tree = BTreeMap<PathBuf, (char, u32, Vec<u8>)>;

/// The tree under a directory (a mount), without its root.
fn tree_of_dir(root: &Path) -> Tree {
    fingerprint(root)
        .into_iter()
        .filter(|(path, _)| !path.as_os_str().is_empty())
        .map(|(path, p)| (path, (p.kind, p.mode, p.data)))
        .collect()
}

/// The tree the union of `lowers` shows.
fn tree_of_lowers(lowers: &[PathBuf]) -> Tree {
    let view = UnionView::new(lowers.to_vec(), None, OverlayXattr::Trusted);
    let mut tree = Tree::new();
    view.walk(|rel, entry| {
        let ft = entry.file_type();
        let at = Path::new("/").join(rel);
        let (kind, data) = if ft.is_dir() {
            ('d', Vec::new())
        } else if ft.is_symlink() {
            (
                'l',
                view.read_link(&at)?.into_os_string().into_encoded_bytes(),
            )
        } else {
            ('f', view.read(&at)?)
        };
        tree.insert(
            rel.to_path_buf(),
            (kind, entry.metadata.mode() & 0o7777, data),
        );
        Ok(())
    })
    .unwrap();
    tree
}

/// Apply a layer's entries to `tree` the image-spec's way: whiteouts and opaque markers
/// remove lower content first, then the entries are added.
fn apply(tree: &mut Tree, layer: &BTreeMap<String, TarEntry>) {
    let remove_under = |tree: &mut Tree, dir: &Path| {
        tree.retain(|path, _| !(path.starts_with(dir) && path != dir));
    };
    for path in layer.keys() {
        let path = Path::new(path);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let parent = path.parent().unwrap();
        if name == ".wh..wh..opq" {
            remove_under(tree, parent);
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            let hidden = parent.join(hidden);
            remove_under(tree, &hidden);
            tree.remove(&hidden);
        }
    }
    for (path, entry) in layer {
        let path = PathBuf::from(path);
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".wh.")
        {
            continue;
        }
        let value = match entry.kind {
            tar::EntryType::Directory => ('d', entry.mode & 0o7777, Vec::new()),
            tar::EntryType::Symlink => ('l', 0o777, entry.link.clone().unwrap().into_bytes()),
            tar::EntryType::Link => tree[Path::new(entry.link.as_deref().unwrap())].clone(),
            _ => ('f', entry.mode & 0o7777, entry.data.clone()),
        };
        if value.0 != 'd' {
            remove_under(tree, &path);
        }
        tree.insert(path, value);
    }
}

/// Make changes through a snapshot of `backend` (a new file, a copy-up, deletions, a rename, a
/// directory deleted and made again): the diff applied over the lowers must give exactly the
/// tree the mount showed. Returns that tree and the diff's entries.
fn diff_reproduces_mount(backend: &dyn Backend, base: &Path) -> (Tree, BTreeMap<String, TarEntry>) {
    let lowers = stack(base);
    let snapshot = backend.prepare(&lowers, &base.join("snap")).unwrap();
    let root = base.join("rootfs");
    let mounted = Mounted::new(&snapshot, &root);
    fs::write(root.join("new-file"), b"new").unwrap();
    fs::write(root.join("etc/passwd"), b"root\nuser\n").unwrap();
    fs::remove_file(root.join("keep/a")).unwrap();
    fs::rename(root.join("rename-me"), root.join("renamed")).unwrap();
    fs::remove_dir_all(root.join("opaque")).unwrap();
    fs::create_dir(root.join("opaque")).unwrap();
    fs::write(root.join("opaque/again"), b"again").unwrap();
    fs::remove_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin"), b"a file where a directory was").unwrap();
    fs::remove_file(root.join("etc/hostname")).unwrap();
    std::os::unix::fs::symlink("../new-file", root.join("etc/hostname")).unwrap();
    let shown = tree_of_dir(&root);
    mounted.unmount();

    let mut layer = Vec::new();
    backend
        .diff(&snapshot, &mut layer, &DiffOptions::default())
        .unwrap();
    backend.remove(snapshot).unwrap();
    let entries = read_layer(&layer);
    let mut applied = tree_of_lowers(&lowers);
    apply(&mut applied, &entries);
    assert_eq!(
        applied,
        shown,
        "{}: lowers + diff == what the mount showed",
        backend.name()
    );
    (shown, entries)
}

/// Both backends turn the same changes into layers that reproduce the mounted tree exactly
/// (their entries may differ: only the overlay upper knows a directory was deleted and made
/// again, which it records as an opaque marker rather than a whiteout per lower entry).
#[test]
fn backends_agree_on_the_diff() {
    if !require_backend(&OverlayBackend::with_xattr(OverlayXattr::Trusted)) {
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (overlay_tree, overlay) =
        diff_reproduces_mount(&OverlayBackend::with_xattr(OverlayXattr::Trusted), a.path());
    let (copy_tree, copy) =
        diff_reproduces_mount(&CopyBackend::with_xattr(OverlayXattr::Trusted), b.path());
    assert_eq!(
        overlay_tree, copy_tree,
        "the same changes show the same tree"
    );
    assert!(
        overlay.contains_key("opaque/.wh..wh..opq"),
        "{:?}",
        overlay.keys()
    );
    assert!(copy.contains_key("opaque/.wh.mid"), "{:?}", copy.keys());
    assert_eq!(overlay["bin"].kind, tar::EntryType::Regular);
    assert_eq!(copy["bin"].kind, tar::EntryType::Regular);
}

/// open() gives back a stopped snapshot (as after a restart): the same description, and its
/// mounts show the changes made before.
fn open_reopens_a_snapshot(backend: &dyn Backend) {
    if !require_backend(backend) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = stack(tmp.path());
    let snapshot = backend.prepare(&lowers, &tmp.path().join("snap")).unwrap();
    let root = tmp.path().join("rootfs");
    let mounted = Mounted::new(&snapshot, &root);
    fs::write(root.join("kept"), b"from the first run").unwrap();
    fs::remove_file(root.join("keep/a")).unwrap();
    mounted.unmount();

    let reopened = backend.open(&lowers, &snapshot.dir, true).unwrap();
    assert_eq!(reopened, snapshot);
    let mounted = Mounted::new(&reopened, &root);
    assert_eq!(fs::read(root.join("kept")).unwrap(), b"from the first run");
    assert_eq!(names(&root.join("keep")), ["b"]);
    fs::write(root.join("second"), b"2").unwrap();
    mounted.unmount();
    let mut layer = Vec::new();
    backend
        .diff(&reopened, &mut layer, &DiffOptions::default())
        .unwrap();
    let entries = read_layer(&layer);
    for path in ["kept", "second", "keep/.wh.a"] {
        assert!(
            entries.contains_key(path),
            "{}: {path} in {:?}",
            backend.name(),
            entries.keys()
        );
    }

    let view = backend.view(&lowers, &tmp.path().join("view")).unwrap();
    assert_eq!(backend.open(&lowers, &view.dir, false).unwrap(), view);

    let err = backend
        .open(&lowers, &tmp.path().join("no-such-snapshot"), true)
        .unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Dir { source, .. } if source.kind() == ErrorKind::NotFound),
        "{err}"
    );
    backend.remove(view).unwrap();
    check_removed(backend, reopened, tmp.path());
}

/// A view shows the merged lowers and refuses writes with EROFS; it has nothing to diff.
fn view_is_read_only(backend: &dyn Backend) {
    if !require_backend(backend) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = stack(tmp.path());
    let before: Vec<_> = lowers.iter().map(|l| fingerprint(l)).collect();
    let snapshot = backend.view(&lowers, &tmp.path().join("view")).unwrap();
    assert!(!snapshot.writable);
    let mounted = Mounted::new(&snapshot, &tmp.path().join("rootfs"));
    let root = tmp.path().join("rootfs");
    check_merged(&root);
    for attempt in [
        fs::write(root.join("new"), b"x"),
        fs::write(root.join("etc/passwd"), b"x"),
        fs::remove_file(root.join("only-top")),
        fs::create_dir(root.join("d")),
    ] {
        let err = attempt.unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EROFS),
            "{}: {err}",
            backend.name()
        );
    }
    mounted.unmount();
    let after: Vec<_> = lowers.iter().map(|l| fingerprint(l)).collect();
    assert!(before == after, "{}: lowers changed", backend.name());
    let err = backend
        .diff(&snapshot, &mut Vec::new(), &DiffOptions::default())
        .unwrap_err();
    assert!(matches!(err, SnapshotError::NotWritable(_)), "{err}");
    check_removed(backend, snapshot, tmp.path());
}

/// A view of a single layer, and a view and a prepared snapshot of no layer at all.
fn one_and_no_lowers(backend: &dyn Backend) {
    if !require_backend(backend) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let only = LayerDir::new(tmp.path().join("only"), OverlayXattr::Trusted);
    only.file("f", b"f", 0o644).whiteout("ghost");

    let view = backend
        .view(std::slice::from_ref(&only.root), &tmp.path().join("v1"))
        .unwrap();
    let mounted = Mounted::new(&view, &tmp.path().join("m1"));
    assert_eq!(fs::read(tmp.path().join("m1/f")).unwrap(), b"f");
    assert!(
        fs::symlink_metadata(tmp.path().join("m1/ghost")).is_err(),
        "whiteout hidden"
    );
    mounted.unmount();
    backend.remove(view).unwrap();

    let empty_view = backend.view(&[], &tmp.path().join("v0")).unwrap();
    let mounted = Mounted::new(&empty_view, &tmp.path().join("m0"));
    assert!(names(&tmp.path().join("m0")).is_empty());
    let err = fs::write(tmp.path().join("m0/x"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    mounted.unmount();
    backend.remove(empty_view).unwrap();

    let scratch = backend.prepare(&[], &tmp.path().join("s0")).unwrap();
    let mounted = Mounted::new(&scratch, &tmp.path().join("m2"));
    fs::write(tmp.path().join("m2/hello"), b"hello").unwrap();
    mounted.unmount();
    let mut layer = Vec::new();
    backend
        .diff(&scratch, &mut layer, &DiffOptions::default())
        .unwrap();
    let entries = read_layer(&layer);
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["hello"],
        "{}",
        backend.name()
    );
    assert_eq!(entries["hello"].data, b"hello");
    backend.remove(scratch).unwrap();
    assert_eq!(mounts_under(tmp.path()), Vec::<PathBuf>::new());
}

/// remove() refuses while the snapshot is mounted (inside its dir, or elsewhere), and works
/// after the unmount.
fn remove_refuses_while_mounted(backend: &dyn Backend) {
    if !require_backend(backend) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = stack(tmp.path());
    let snapshot = backend.prepare(&lowers, &tmp.path().join("snap")).unwrap();

    let outside = Mounted::new(&snapshot, &tmp.path().join("rootfs"));
    fs::write(tmp.path().join("rootfs/precious"), b"p").unwrap();
    let err = backend.remove(snapshot.clone()).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Busy { mount_point, .. } if mount_point.ends_with("rootfs")),
        "{}: {err}",
        backend.name()
    );
    assert_eq!(
        fs::read(tmp.path().join("rootfs/precious")).unwrap(),
        b"p",
        "nothing deleted"
    );
    outside.unmount();

    let inside = Mounted::new(&snapshot, &snapshot.dir.join("mnt-inside"));
    let err = backend.remove(snapshot.clone()).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Busy { mount_point, .. } if mount_point.ends_with("mnt-inside")),
        "{}: {err}",
        backend.name()
    );
    inside.unmount();

    check_removed(backend, snapshot, tmp.path());
}

/// remove() keeps the mount table between calls (read again only once it changed): a mount
/// made after an earlier remove() looked, a bind mount of the writable layer elsewhere and a
/// mount inside the snapshot made in another thread's own mount namespace, are still seen;
/// nothing is deleted through them.
fn remove_sees_mounts_made_since_it_last_looked(backend: &dyn Backend) {
    if !require_backend(backend) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = stack(tmp.path());
    let first = backend.prepare(&lowers, &tmp.path().join("first")).unwrap();
    let snapshot = backend.prepare(&lowers, &tmp.path().join("snap")).unwrap();
    // Reads the mount table: nothing uses `first`.
    backend.remove(first).unwrap();

    fs::write(snapshot.changes_dir().join("precious"), b"p").unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    Mount::Bind {
        source: snapshot.changes_dir().to_path_buf(),
        read_only: false,
    }
    .mount_at(&elsewhere)
    .unwrap();
    let bound = MountGuard::new(&elsewhere);
    for _ in 0..2 {
        let err = backend.remove(snapshot.clone()).unwrap_err();
        assert!(
            matches!(&err, SnapshotError::Busy { mount_point, .. } if mount_point.ends_with("elsewhere")),
            "{}: {err}",
            backend.name()
        );
    }
    assert_eq!(fs::read(elsewhere.join("precious")).unwrap(), b"p");
    bound.unmount();

    // A thread in a mount namespace of its own mounts inside the snapshot: its remove() sees
    // that namespace's mounts, not the table kept for this one.
    let inside = snapshot.dir.join("mnt-inside");
    let in_thread = {
        let (backend_name, snapshot, inside) = (backend.name(), snapshot.clone(), inside.clone());
        std::thread::spawn(move || -> Result<(), String> {
            use nix::mount::{MntFlags, MsFlags, mount, umount2};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| e.to_string())?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| e.to_string())?;
            fs::create_dir(&inside).map_err(|e| e.to_string())?;
            mount(
                Some("tmpfs"),
                &inside,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| e.to_string())?;
            fs::write(inside.join("precious"), b"p").map_err(|e| e.to_string())?;
            let backend: Box<dyn Backend> = if backend_name == "overlay" {
                Box::new(OverlayBackend::with_xattr(OverlayXattr::Trusted))
            } else {
                Box::new(CopyBackend::with_xattr(OverlayXattr::Trusted))
            };
            let result = backend.remove(snapshot);
            let kept = fs::read(inside.join("precious")).ok();
            umount2(&inside, MntFlags::MNT_DETACH).map_err(|e| e.to_string())?;
            match result {
                Err(SnapshotError::Busy { mount_point, .. })
                    if mount_point.ends_with("mnt-inside") && kept.as_deref() == Some(b"p") =>
                {
                    Ok(())
                }
                other => Err(format!(
                    "remove with a mount inside: {other:?}, kept {kept:?}"
                )),
            }
        })
        .join()
        .unwrap()
    };
    in_thread.unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
    assert!(
        !is_mounted(&inside),
        "the thread's mount stayed in its namespace"
    );

    check_removed(backend, snapshot, tmp.path());
}

/// Bad input gets typed errors and touches nothing.
fn refuses_bad_input(backend: &dyn Backend) {
    if !common::require(common::privileged(), "needs root to make whiteout devices") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = stack(tmp.path());

    let busy = tmp.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("x"), b"x").unwrap();
    let err = backend.prepare(&lowers, &busy).unwrap_err();
    assert!(matches!(err, SnapshotError::DirNotEmpty(_)), "{err}");
    assert_eq!(fs::read(busy.join("x")).unwrap(), b"x");

    let mut missing = lowers.clone();
    missing.push(tmp.path().join("no-such-layer"));
    let err = backend
        .prepare(&missing, &tmp.path().join("s1"))
        .unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Lower { path, source } if path.ends_with("no-such-layer") && source.kind() == ErrorKind::NotFound),
        "{err}"
    );

    let err = backend
        .view(&lowers, &lowers[1].join("inside"))
        .unwrap_err();
    assert!(matches!(err, SnapshotError::Overlap { .. }), "{err}");
    assert!(!lowers[1].join("inside").exists() || names(&lowers[1].join("inside")).is_empty());
    let err = backend
        .prepare(&[tmp.path().join("s2/layer")], &tmp.path().join("s2"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Lower { .. } | SnapshotError::Overlap { .. }
        ),
        "{err}"
    );

    // A snapshot of one backend is not another's.
    let other: Box<dyn Backend> = if backend.name() == "copy" {
        Box::new(OverlayBackend::with_xattr(OverlayXattr::Trusted))
    } else {
        Box::new(CopyBackend::with_xattr(OverlayXattr::Trusted))
    };
    if other.name() == "copy" || overlay_supported() {
        let snapshot = other.prepare(&lowers, &tmp.path().join("s3")).unwrap();
        let err = backend.remove(snapshot.clone()).unwrap_err();
        assert!(matches!(err, SnapshotError::WrongBackend { .. }), "{err}");
        other.remove(snapshot).unwrap();
    }
}

macro_rules! conformance {
    ($($module:ident => $backend:expr;)*) => {$(
        mod $module {
            use super::*;

            fn backend() -> Box<dyn Backend> {
                Box::new($backend)
            }

            #[test]
            fn prepare_write_diff_remove() {
                super::prepare_write_diff_remove(&*backend());
            }

            #[test]
            fn diff_applied_over_lowers_reproduces_the_mount() {
                if !require_backend(&*backend()) {
                    return;
                }
                let tmp = tempfile::tempdir().unwrap();
                super::diff_reproduces_mount(&*backend(), tmp.path());
            }

            #[test]
            fn open_reopens_a_snapshot() {
                super::open_reopens_a_snapshot(&*backend());
            }

            #[test]
            fn view_is_read_only() {
                super::view_is_read_only(&*backend());
            }

            #[test]
            fn one_and_no_lowers() {
                super::one_and_no_lowers(&*backend());
            }

            #[test]
            fn remove_refuses_while_mounted() {
                super::remove_refuses_while_mounted(&*backend());
            }

            #[test]
            fn remove_sees_mounts_made_since_it_last_looked() {
                super::remove_sees_mounts_made_since_it_last_looked(&*backend());
            }

            #[test]
            fn refuses_bad_input() {
                super::refuses_bad_input(&*backend());
            }
        }
    )*};
}

conformance! {
    overlay => OverlayBackend::with_xattr(OverlayXattr::Trusted);
    copy => CopyBackend::with_xattr(OverlayXattr::Trusted);
}

#[test]
fn default_backend_is_overlay_where_supported() {
    let backend = molde_layerfs::snapshot::default_backend();
    let expected = if overlay_supported() {
        "overlay"
    } else {
        "copy"
    };
    assert_eq!(backend.name(), expected);
}

const USERNS_ENV: &str = "MOLDE_TEST_SNAPSHOT_USERNS_DIR";

/// The overlay backend inside a user namespace (`unshare -Urm`): it picks `userxattr` by
/// itself, honours `user.overlay.opaque` lowers, and its diff turns the upper's whiteouts and
/// `user.overlay.opaque` directory into `.wh.` entries.
#[test]
fn overlay_backend_in_user_namespace() {
    if !common::require(common::have_tool("unshare"), "needs unshare(1)")
        || !common::require(common::privileged(), "needs root to make whiteout devices")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    stack_with(tmp.path(), OverlayXattr::User);
    let output = std::process::Command::new("unshare")
        .arg("-Urm")
        .arg(std::env::current_exe().unwrap())
        .args([
            "userns_snapshot_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(USERNS_ENV, tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("userns snapshot child: done"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !tmp.path().join("snap").exists(),
        "the child removed its snapshot"
    );
}

/// Runs inside the user namespace for [`overlay_backend_in_user_namespace`]; does nothing (and
/// says so) when run any other way.
#[test]
#[ignore = "helper: run inside a user namespace by overlay_backend_in_user_namespace"]
fn userns_snapshot_child() {
    let base = std::env::var_os(USERNS_ENV).map(PathBuf::from).expect(
        "a helper: started by overlay_backend_in_user_namespace, which sets its environment",
    );
    let backend = OverlayBackend::new();
    assert_eq!(
        backend.xattr(),
        OverlayXattr::User,
        "picked for a user namespace"
    );
    let lowers = vec![base.join("l0"), base.join("l1"), base.join("l2")];
    let snapshot = backend.prepare(&lowers, &base.join("snap")).unwrap();
    let root = base.join("rootfs");
    let mounted = Mounted::new(&snapshot, &root);
    check_merged(&root);
    fs::remove_file(root.join("keep/a")).unwrap();
    fs::remove_dir_all(root.join("opaque")).unwrap();
    fs::create_dir(root.join("opaque")).unwrap();
    fs::write(root.join("opaque/again"), b"again").unwrap();
    mounted.unmount();
    let mut layer = Vec::new();
    backend
        .diff(&snapshot, &mut layer, &DiffOptions::default())
        .unwrap();
    let entries = read_layer(&layer);
    for path in ["keep/.wh.a", "opaque/.wh..wh..opq", "opaque/again"] {
        assert!(entries.contains_key(path), "{path} in {:?}", entries.keys());
    }
    backend.remove(snapshot).unwrap();
    eprintln!("userns snapshot child: done");
}
