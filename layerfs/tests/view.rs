//! The union view over real layer directories in overlay format.

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use molde_layerfs::OverlayXattr;
use molde_layerfs::view::UnionView;
use nix::sys::stat::{Mode, SFlag, mknod};

/// A stack of layer directories under one temp dir.
struct Stack {
    tmp: tempfile::TempDir,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// The directory of layer `name` (created).
    fn layer(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

fn file(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn dir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

/// An overlay whiteout (char 0/0). Linux lets anyone create one since 5.8; `false` if refused.
fn whiteout(root: &Path, rel: &str) -> bool {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    match mknod(&p, SFlag::S_IFCHR, Mode::from_bits_truncate(0), 0) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("mknod whiteout {}: {e}", p.display());
            false
        }
    }
}

fn opaque(root: &Path, rel: &str, x: OverlayXattr) {
    let p = root.join(rel);
    fs::create_dir_all(&p).unwrap();
    xattr::set(&p, x.opaque(), b"y").unwrap();
}

fn names(view: &UnionView, path: &str) -> Vec<String> {
    view.read_dir(Path::new(path))
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect()
}

fn read(view: &UnionView, path: &str) -> String {
    String::from_utf8(view.read(Path::new(path)).unwrap()).unwrap()
}

fn errno(r: std::io::Result<impl std::fmt::Debug>) -> i32 {
    r.expect_err("expected an error").raw_os_error().unwrap()
}

fn can_whiteout() -> bool {
    let t = tempfile::tempdir().unwrap();
    common::require(
        whiteout(t.path(), "probe"),
        "cannot create char 0/0 whiteout devices",
    )
}

#[test]
fn merges_layers_topmost_wins() {
    let s = Stack::new();
    let (l1, l2) = (s.layer("l1"), s.layer("l2"));
    file(&l1, "etc/a", "a1");
    file(&l1, "etc/b", "b1");
    file(&l2, "etc/b", "b2");
    file(&l2, "etc/c", "c2");
    file(&l1, "top1", "");
    let view = UnionView::new(vec![l2.clone(), l1.clone()], None, OverlayXattr::User);
    assert_eq!(names(&view, "/"), ["etc", "top1"]);
    assert_eq!(names(&view, "/etc"), ["a", "b", "c"]);
    assert_eq!(read(&view, "etc/a"), "a1");
    assert_eq!(read(&view, "/etc/b"), "b2");
    assert_eq!(
        view.real_path(Path::new("etc/b")).unwrap(),
        l2.join("etc/b")
    );
    assert_eq!(
        view.real_path(Path::new("etc/a")).unwrap(),
        l1.join("etc/a")
    );
    // The merged dir's metadata and real path come from the topmost layer.
    assert_eq!(view.real_path(Path::new("etc")).unwrap(), l2.join("etc"));
    let entries = view.read_dir(Path::new("etc")).unwrap();
    assert_eq!(entries[0].layer, 1);
    assert_eq!(entries[1].layer, 0);
    assert!(entries[2].file_type().is_file());
    assert_eq!(errno(view.metadata(Path::new("etc/nope"))), libc::ENOENT);
    assert_eq!(errno(view.metadata(Path::new("etc/a/x"))), libc::ENOTDIR);
    assert_eq!(errno(view.read_dir(Path::new("etc/a"))), libc::ENOTDIR);
    // A trailing slash asks for a directory.
    assert_eq!(errno(view.metadata(Path::new("etc/a/"))), libc::ENOTDIR);
    assert!(view.metadata(Path::new("etc/")).unwrap().is_dir());
    assert!(view.metadata(Path::new("etc/.")).unwrap().is_dir());
}

#[test]
fn whiteout_hides_the_name_below_only() {
    if !can_whiteout() {
        return;
    }
    let s = Stack::new();
    let (l1, l2, l3) = (s.layer("l1"), s.layer("l2"), s.layer("l3"));
    file(&l1, "etc/gone", "old");
    file(&l1, "etc/back", "old");
    file(&l1, "dir/sub/x", "x");
    assert!(whiteout(&l2, "etc/gone"));
    assert!(whiteout(&l2, "etc/back"));
    assert!(whiteout(&l2, "dir"));
    file(&l3, "etc/back", "new");
    // A whiteout in the lowest layer hides nothing but is not shown either.
    assert!(whiteout(&l1, "lonely"));
    let view = UnionView::new(vec![l3, l2, l1], None, OverlayXattr::User);
    assert_eq!(names(&view, "/etc"), ["back"]);
    assert_eq!(names(&view, "/"), ["etc"]);
    assert_eq!(errno(view.metadata(Path::new("etc/gone"))), libc::ENOENT);
    assert_eq!(errno(view.metadata(Path::new("lonely"))), libc::ENOENT);
    assert_eq!(errno(view.metadata(Path::new("dir/sub/x"))), libc::ENOENT);
    assert_eq!(errno(view.read(Path::new("etc/gone"))), libc::ENOENT);
    assert_eq!(read(&view, "etc/back"), "new");
}

#[test]
fn opaque_dir_hides_lower_entries_but_merges_above() {
    let x = OverlayXattr::User;
    let s = Stack::new();
    let (l1, l2, l3) = (s.layer("l1"), s.layer("l2"), s.layer("l3"));
    file(&l1, "d/old", "1");
    file(&l1, "d/sub/deep", "1");
    opaque(&l2, "d", x);
    file(&l2, "d/mid", "2");
    file(&l3, "d/new", "3");
    let view = UnionView::new(vec![l3.clone(), l2.clone(), l1.clone()], None, x);
    assert_eq!(names(&view, "d"), ["mid", "new"]);
    assert_eq!(errno(view.metadata(Path::new("d/old"))), libc::ENOENT);
    assert_eq!(errno(view.metadata(Path::new("d/sub/deep"))), libc::ENOENT);
    assert_eq!(read(&view, "d/mid"), "2");

    // The same stack read with the other namespace does not see the opaque marker.
    let blind = UnionView::new(vec![l3, l2, l1], None, OverlayXattr::Trusted);
    assert_eq!(names(&blind, "d"), ["mid", "new", "old", "sub"]);
}

#[test]
fn file_hides_dir_below_and_dir_hides_file_below() {
    let s = Stack::new();
    let (l1, l2, l3) = (s.layer("l1"), s.layer("l2"), s.layer("l3"));
    // "a": dir in l1, file in l2 -> a file.
    file(&l1, "a/child", "c");
    file(&l2, "a", "file");
    // "b": file in l1, dir in l2 -> a dir with only l2's entries (and l3's).
    file(&l1, "b", "file");
    file(&l2, "b/in2", "2");
    file(&l3, "b/in3", "3");
    // "c": dir in l1, file in l2, dir in l3 -> only l3's dir (the file cuts the merge).
    file(&l1, "c/in1", "1");
    file(&l2, "c", "file");
    file(&l3, "c/in3", "3");
    let view = UnionView::new(vec![l3, l2, l1], None, OverlayXattr::User);
    assert!(view.metadata(Path::new("a")).unwrap().is_file());
    assert_eq!(read(&view, "a"), "file");
    assert_eq!(errno(view.metadata(Path::new("a/child"))), libc::ENOTDIR);
    assert!(view.metadata(Path::new("b")).unwrap().is_dir());
    assert_eq!(names(&view, "b"), ["in2", "in3"]);
    assert_eq!(names(&view, "c"), ["in3"]);
    assert_eq!(errno(view.metadata(Path::new("c/in1"))), libc::ENOENT);
}

#[test]
fn upper_sits_on_top_of_everything() {
    if !can_whiteout() {
        return;
    }
    let x = OverlayXattr::User;
    let s = Stack::new();
    let (l1, up) = (s.layer("l1"), s.layer("upper"));
    file(&l1, "keep", "k");
    file(&l1, "edit", "old");
    file(&l1, "del", "d");
    file(&l1, "o/lower", "l");
    file(&up, "edit", "new");
    assert!(whiteout(&up, "del"));
    opaque(&up, "o", x);
    file(&up, "o/upper", "u");
    let view = UnionView::new(vec![l1], Some(up.clone()), x);
    assert!(view.has_upper());
    assert_eq!(view.layers()[0], up);
    assert_eq!(names(&view, "/"), ["edit", "keep", "o"]);
    assert_eq!(read(&view, "edit"), "new");
    assert_eq!(names(&view, "o"), ["upper"]);
}

#[test]
fn symlinks_are_followed_inside_the_view() {
    let s = Stack::new();
    let (l1, l2) = (s.layer("l1"), s.layer("l2"));
    file(&l1, "real/dir/f", "inside");
    link(&l1, "abs", "/real/dir");
    link(&l2, "rel", "real/dir");
    link(&l2, "real/up", "../../../../real");
    link(&l2, "escape", "/../../../../etc/hostname");
    link(&l2, "tofile", "real/dir/f");
    link(&l2, "loop1", "loop2");
    link(&l2, "loop2", "loop1");
    link(&l2, "dangling", "/nowhere");
    let view = UnionView::new(vec![l2.clone(), l1.clone()], None, OverlayXattr::User);
    assert_eq!(read(&view, "abs/f"), "inside");
    assert_eq!(read(&view, "rel/f"), "inside");
    assert_eq!(read(&view, "real/up/dir/f"), "inside");
    assert_eq!(read(&view, "tofile"), "inside");
    // `..` is clamped at the view root: the host's /etc is never reached.
    assert!(view.metadata(Path::new("escape")).is_ok());
    assert_eq!(errno(view.read(Path::new("escape"))), libc::ENOENT);
    // The final component is not followed by metadata, read_link, real_path.
    assert!(
        view.metadata(Path::new("abs"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        view.read_link(Path::new("abs")).unwrap(),
        PathBuf::from("/real/dir")
    );
    assert_eq!(view.real_path(Path::new("abs")).unwrap(), l1.join("abs"));
    // Parents are followed by all of them.
    assert_eq!(
        view.real_path(Path::new("abs/f")).unwrap(),
        l1.join("real/dir/f")
    );
    assert!(view.metadata(Path::new("rel/f")).unwrap().is_file());
    assert_eq!(names(&view, "abs"), ["f"]);
    // With a trailing slash the final symlink is followed.
    assert_eq!(
        view.real_path(Path::new("abs/")).unwrap(),
        l1.join("real/dir")
    );
    assert_eq!(errno(view.metadata(Path::new("tofile/"))), libc::ENOTDIR);
    assert_eq!(errno(view.read_link(Path::new("abs/f"))), libc::EINVAL);
    assert_eq!(errno(view.metadata(Path::new("loop1/x"))), libc::ELOOP);
    assert_eq!(errno(view.read(Path::new("loop1"))), libc::ELOOP);
    assert_eq!(errno(view.read(Path::new("dangling"))), libc::ENOENT);
    // `..` in the given path is clamped too, and works after a followed symlink.
    assert_eq!(read(&view, "/../../real/dir/f"), "inside");
    assert_eq!(read(&view, "abs/../dir/f"), "inside");
}

#[test]
fn open_refuses_devices_and_fifos() {
    let s = Stack::new();
    let l1 = s.layer("l1");
    nix::unistd::mkfifo(&l1.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    let view = UnionView::new(vec![l1], None, OverlayXattr::User);
    let err = view.open(Path::new("fifo")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        view.metadata(Path::new("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let mut dir = view.open(Path::new("/")).unwrap();
    assert!(dir.metadata().unwrap().is_dir());
    let mut buf = Vec::new();
    assert!(dir.read_to_end(&mut buf).is_err());
}

#[test]
fn walk_visits_the_union_sorted_depth_first() {
    let s = Stack::new();
    let (l1, l2) = (s.layer("l1"), s.layer("l2"));
    file(&l1, "b/2", "");
    file(&l2, "b/1", "");
    file(&l1, "a", "");
    dir(&l2, "c");
    let view = UnionView::new(vec![l2, l1], None, OverlayXattr::User);
    let mut seen = Vec::new();
    view.walk(|p, _| {
        seen.push(p.to_path_buf());
        Ok(())
    })
    .unwrap();
    let want: Vec<PathBuf> = ["a", "b", "b/1", "b/2", "c"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn view_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<UnionView>();
}

fn set_mtime(p: &Path, secs: i64) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

#[test]
fn copy_to_flattens_with_attributes() {
    let x = OverlayXattr::User;
    let privileged = molde_layerfs::privilege::is_privileged();
    let have_whiteouts = {
        let t = tempfile::tempdir().unwrap();
        whiteout(t.path(), "probe")
    };
    let s = Stack::new();
    let (l1, l2) = (s.layer("l1"), s.layer("l2"));
    file(&l1, "bin/su", "suid");
    file(&l1, "tmp/.keep", "");
    fs::set_permissions(l1.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    file(&l1, "hl/a", "shared");
    fs::hard_link(l1.join("hl/a"), l1.join("hl/b")).unwrap();
    fs::hard_link(l1.join("hl/a"), l1.join("hl/c")).unwrap();
    // l2 replaces hl/c: its link to a/b must not come back in the copy.
    file(&l2, "hl/c", "own");
    file(&l1, "old/x", "x");
    if have_whiteouts {
        assert!(whiteout(&l2, "old"));
    }
    opaque(&l2, "o", x);
    file(&l1, "o/hidden", "");
    file(&l2, "o/shown", "");
    link(&l2, "lnk", "bin/su");
    file(&l2, "attr", "x");
    xattr::set(l2.join("attr"), "user.molde", b"value").unwrap();
    nix::unistd::mkfifo(&l2.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    if privileged {
        std::os::unix::fs::lchown(l1.join("bin/su"), Some(123), Some(456)).unwrap();
        std::os::unix::fs::lchown(l2.join("lnk"), Some(7), Some(8)).unwrap();
        mknod(
            &l2.join("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
    }
    // After the chown, which clears setuid.
    fs::set_permissions(l1.join("bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    set_mtime(&l1.join("bin/su"), 1_000_000);
    set_mtime(&l2.join("lnk"), 2_000_000);
    set_mtime(&l1.join("tmp"), 3_000_000);
    // The root's attributes come from the topmost layer.
    set_mtime(&l2, 4_000_000);

    let view = UnionView::new(vec![l2, l1], None, x);
    let dest = s.tmp.path().join("out/rootfs");
    view.copy_to(&dest).unwrap();

    let mut all = Vec::new();
    view.walk(|p, _| {
        all.push(p.to_path_buf());
        Ok(())
    })
    .unwrap();
    let mut copied = Vec::new();
    walk_plain(&dest, Path::new(""), &mut copied);
    assert_eq!(all, copied);
    if have_whiteouts {
        assert!(!dest.join("old").exists());
    }
    assert!(!dest.join("o/hidden").exists());
    assert!(xattr::get(dest.join("o"), x.opaque()).unwrap().is_none());

    let su = fs::metadata(dest.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert_eq!(su.mtime(), 1_000_000);
    assert_eq!(fs::read(dest.join("bin/su")).unwrap(), b"suid");
    assert_eq!(
        fs::metadata(dest.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(fs::metadata(dest.join("tmp")).unwrap().mtime(), 3_000_000);
    assert_eq!(fs::metadata(&dest).unwrap().mtime(), 4_000_000);
    let lnk = fs::symlink_metadata(dest.join("lnk")).unwrap();
    assert!(lnk.file_type().is_symlink());
    assert_eq!(lnk.mtime(), 2_000_000);
    assert_eq!(
        fs::read_link(dest.join("lnk")).unwrap(),
        PathBuf::from("bin/su")
    );
    assert_eq!(
        xattr::get(dest.join("attr"), "user.molde").unwrap(),
        Some(b"value".to_vec())
    );
    assert!(
        fs::symlink_metadata(dest.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // Hardlinks within a layer are kept; the one replaced by a higher layer is not.
    let (a, b, c) = (
        fs::metadata(dest.join("hl/a")).unwrap(),
        fs::metadata(dest.join("hl/b")).unwrap(),
        fs::metadata(dest.join("hl/c")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_ne!(a.ino(), c.ino());
    assert_eq!(fs::read(dest.join("hl/c")).unwrap(), b"own");
    if privileged {
        assert_eq!((su.uid(), su.gid()), (123, 456));
        assert_eq!((lnk.uid(), lnk.gid()), (7, 8));
        let null = fs::symlink_metadata(dest.join("null")).unwrap();
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    }

    // A second copy into a non-empty directory is refused.
    let err = view.copy_to(&dest).unwrap_err();
    assert!(matches!(
        err,
        molde_layerfs::view::ViewError::DestinationNotEmpty(_)
    ));
}

/// Sorted depth-first listing of a plain directory, like `UnionView::walk`.
fn walk_plain(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let mut names: Vec<OsString> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let p = rel.join(&n);
        out.push(p.clone());
        if fs::symlink_metadata(root.join(&p)).unwrap().is_dir() {
            walk_plain(root, &p, out);
        }
    }
}

#[test]
fn trusted_opaque_as_root() {
    if !common::require(common::privileged(), "needs root to set trusted.* xattrs") {
        return;
    }
    let x = OverlayXattr::Trusted;
    let s = Stack::new();
    let (l1, l2) = (s.layer("l1"), s.layer("l2"));
    file(&l1, "d/old", "");
    opaque(&l2, "d", x);
    file(&l2, "d/new", "");
    let view = UnionView::new(vec![l2, l1], None, x);
    assert_eq!(names(&view, "d"), ["new"]);
    let dest = s.tmp.path().join("flat");
    view.copy_to(&dest).unwrap();
    assert!(xattr::get(dest.join("d"), x.opaque()).unwrap().is_none());
    assert!(!dest.join("d/old").exists());
}

#[test]
fn empty_view_has_an_empty_root() {
    let view = UnionView::new(Vec::new(), None, OverlayXattr::User);
    assert!(view.read_dir(Path::new("/")).unwrap().is_empty());
    assert_eq!(errno(view.metadata(Path::new("/x"))), libc::ENOENT);
}

#[test]
fn opaque_xattr_on_a_layer_root_is_ignored_like_overlayfs() {
    let x = OverlayXattr::User;
    let s = Stack::new();
    let (l1, l2) = (s.layer("l1"), s.layer("l2"));
    file(&l1, "lower", "");
    file(&l2, "upper", "");
    xattr::set(&l2, x.opaque(), b"y").unwrap();
    let view = UnionView::new(vec![l2, l1], None, x);
    assert_eq!(names(&view, "/"), ["lower", "upper"]);
}
