//! Native and naive diffs on real trees, read back with the tar crate.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use molde_layerfs::diff::{self, Change, DiffOptions, DiffReport};
use molde_layerfs::view::UnionView;
use molde_layerfs::{Digest, OverlayXattr};
use nix::sys::stat::{Mode, SFlag, mknod};

const X: OverlayXattr = OverlayXattr::User;

// ----- building trees -----

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

fn chmod(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

fn whiteout(root: &Path, rel: &str) -> bool {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    mknod(&p, SFlag::S_IFCHR, Mode::empty(), 0).is_ok()
}

fn opaque(root: &Path, rel: &str, x: OverlayXattr) {
    let p = root.join(rel);
    fs::create_dir_all(&p).unwrap();
    xattr::set(&p, x.opaque(), b"y").unwrap();
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

/// Set every mtime under `root` (and of `root`) to `secs`.
fn set_all_mtimes(root: &Path, secs: i64) {
    for e in fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            set_all_mtimes(&p, secs);
        }
        set_mtime(&p, secs);
    }
    set_mtime(root, secs);
}

fn can_whiteout() -> bool {
    let t = tempfile::tempdir().unwrap();
    common::require(
        whiteout(t.path(), "probe"),
        "cannot create char 0/0 whiteout devices",
    )
}

// ----- reading layers back -----

/// One entry of a layer as read back by the tar crate.
#[derive(Debug, Clone)]
struct Entry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    uname: Vec<u8>,
    gname: Vec<u8>,
    link: Option<String>,
    data: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
    device: Option<(u32, u32)>,
}

fn read_layer(bytes: &[u8]) -> Vec<Entry> {
    let mut ar = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let ustar = h.as_ustar().expect("ustar headers");
        let device = match h.entry_type() {
            tar::EntryType::Char | tar::EntryType::Block => {
                Some((ustar.device_major().unwrap(), ustar.device_minor().unwrap()))
            }
            _ => None,
        };
        out.push(Entry {
            path,
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            uname: ustar.username_bytes().to_vec(),
            gname: ustar.groupname_bytes().to_vec(),
            link,
            data,
            xattrs,
            device,
        });
    }
    out
}

/// One line per entry: `D dir/`, `F file=contents`, `L link->target`, `H name=>first`,
/// `C dev 1:3`, `P fifo`.
fn summary(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| match e.kind {
            tar::EntryType::Directory => format!("D {}", e.path),
            tar::EntryType::Regular => {
                format!("F {}={}", e.path, String::from_utf8_lossy(&e.data))
            }
            tar::EntryType::Symlink => format!("L {}->{}", e.path, e.link.as_deref().unwrap()),
            tar::EntryType::Link => format!("H {}=>{}", e.path, e.link.as_deref().unwrap()),
            tar::EntryType::Char => {
                let (a, b) = e.device.unwrap();
                format!("C {} {a}:{b}", e.path)
            }
            tar::EntryType::Fifo => format!("P {}", e.path),
            other => panic!("unexpected entry type {other:?} for {}", e.path),
        })
        .collect()
}

fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry {path}"))
}

fn run_native(upper: &Path, lowers: &UnionView, opts: &DiffOptions) -> (Vec<u8>, DiffReport) {
    let mut out = Vec::new();
    let report = diff::native(upper, lowers, &mut out, opts).unwrap();
    check_report(&out, &report);
    (out, report)
}

fn run_naive(base: &UnionView, new: &Path, opts: &DiffOptions) -> (Vec<u8>, DiffReport) {
    let mut out = Vec::new();
    let report = diff::naive(base, new, &mut out, opts).unwrap();
    check_report(&out, &report);
    (out, report)
}

fn check_report(out: &[u8], report: &DiffReport) {
    assert_eq!(report.diff_id, Digest::of(out));
    assert_eq!(report.size, out.len() as u64);
    assert_eq!(out.len() % 512, 0);
    // Every entry header is well formed for GNU tar as well.
    if common::have_tool("tar") {
        let mut child = std::process::Command::new("tar")
            .args(["--xattrs", "-tvf", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(out).unwrap();
        assert!(child.wait().unwrap().success(), "GNU tar rejects the layer");
    }
}

fn opts() -> DiffOptions {
    DiffOptions {
        mtime_clamp: None,
        xattr: X,
        owners: None,
    }
}

fn plain_view(dir: &Path) -> UnionView {
    UnionView::new(vec![dir.to_path_buf()], None, X)
}

// ----- native -----

/// Two lower layers and an upper as a container would leave it.
fn native_fixture(t: &Path) -> (PathBuf, UnionView) {
    let (l1, l2, up) = (t.join("l1"), t.join("l2"), t.join("upper"));
    file(&l1, "etc/a", "aaaa");
    file(&l1, "etc/b", "b");
    file(&l1, "etc/c/x", "x");
    file(&l1, "d/old/sub", "s");
    file(&l1, "keep", "k");
    file(&l2, "etc/l2", "2");
    assert!(whiteout(&l2, "etc/gone-below"));
    file(&l1, "etc/gone-below", "hidden by l2");
    // The upper: an edit keeping size, an add, two deletes (a file and a whole dir), an opaque
    // dir over a lower dir, a new opaque dir, a stale whiteout, a file replacing a dir.
    file(&up, "etc/a", "AAAA");
    file(&up, "etc/.new", "n");
    assert!(whiteout(&up, "etc/b"));
    assert!(whiteout(&up, "etc/c"));
    assert!(whiteout(&up, "etc/gone-below"));
    assert!(whiteout(&up, "etc/never-existed"));
    opaque(&up, "d", X);
    file(&up, "d/new", "new");
    assert!(whiteout(&up, "d/inside-opaque"));
    opaque(&up, "fresh", X);
    file(&up, "fresh/f", "f");
    file(&l1, "was-dir/child", "c");
    file(&up, "was-dir", "now a file");
    let lowers = UnionView::new(vec![l2, l1], None, X);
    (up, lowers)
}

#[test]
fn native_writes_the_upper_with_whiteouts_and_opaque_markers() {
    if !can_whiteout() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (up, lowers) = native_fixture(t.path());
    let (out, report) = run_native(&up, &lowers, &opts());
    let entries = read_layer(&out);
    assert_eq!(
        summary(&entries),
        [
            "D d/",
            "F d/.wh..wh..opq=",
            "F d/new=new",
            "D etc/",
            "F etc/.wh.b=",
            "F etc/.wh.c=",
            "F etc/.new=n",
            "F etc/a=AAAA",
            "D fresh/",
            "F fresh/f=f",
            "F was-dir=now a file",
        ]
    );
    assert_eq!(report.counts.whiteouts, 2);
    assert_eq!(report.counts.opaques, 1);
    assert_eq!(report.counts.dirs, 3);
    assert_eq!(report.counts.files, 5);
    // No overlay xattr leaks into the layer.
    assert!(entries.iter().all(|e| e.xattrs.is_empty()));
}

#[test]
fn changes_lists_adds_modifies_deletes() {
    if !can_whiteout() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (up, lowers) = native_fixture(t.path());
    let got: Vec<String> = diff::changes(&up, &lowers, X)
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        got,
        [
            "C /d",
            "A /d/new",
            "D /d/old",
            "C /etc",
            "A /etc/.new",
            "C /etc/a",
            "D /etc/b",
            "D /etc/c",
            "A /fresh",
            "A /fresh/f",
            "C /was-dir",
        ]
    );
    let c = diff::changes(&up, &lowers, X).unwrap();
    assert_eq!(c[0], Change::Modified(PathBuf::from("/d")));
    assert_eq!(c[0].path(), Path::new("/d"));
}

#[test]
fn native_is_deterministic_and_clamps_mtimes() {
    if !can_whiteout() {
        return;
    }
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (up1, lowers1) = native_fixture(t1.path());
    let (up2, lowers2) = native_fixture(t2.path());
    set_all_mtimes(&up1, 2_000_000_000);
    set_all_mtimes(&up2, 1_900_000_000);
    let clamp = DiffOptions {
        mtime_clamp: Some(1_000_000),
        xattr: X,
        owners: None,
    };
    let (a, ra) = run_native(&up1, &lowers1, &clamp);
    let (a_again, _) = run_native(&up1, &lowers1, &clamp);
    let (b, rb) = run_native(&up2, &lowers2, &clamp);
    assert_eq!(a, a_again);
    assert_eq!(a, b, "different mtimes under one clamp give the same bytes");
    assert_eq!(ra.diff_id, rb.diff_id);
    for e in read_layer(&a) {
        let whiteout = e.path.contains(".wh.");
        assert_eq!(e.mtime, if whiteout { 0 } else { 1_000_000 }, "{}", e.path);
        assert!(e.uname.is_empty() && e.gname.is_empty());
    }
    // Without the clamp, mtimes are kept, and the layers differ.
    let (c, _) = run_native(&up1, &lowers1, &opts());
    assert_eq!(find(&read_layer(&c), "etc/a").mtime, 2_000_000_000);
    assert_ne!(a, c);
}

#[test]
fn native_keeps_hardlinks_within_the_upper_only() {
    let t = tempfile::tempdir().unwrap();
    let (l1, up) = (t.path().join("l1"), t.path().join("upper"));
    file(&l1, "lower/x", "lower");
    fs::hard_link(l1.join("lower/x"), l1.join("lower/y")).unwrap();
    file(&up, "a", "shared");
    fs::hard_link(up.join("a"), up.join("b")).unwrap();
    dir(&up, "sub");
    fs::hard_link(up.join("a"), up.join("sub/c")).unwrap();
    // A copied-up member of a lower hardlink group: its lower sibling is outside the layer.
    file(&up, "lower/x", "changed");
    let lowers = UnionView::new(vec![l1], None, X);
    let (out, report) = run_native(&up, &lowers, &opts());
    assert_eq!(
        summary(&read_layer(&out)),
        [
            "F a=shared",
            "H b=>a",
            "D lower/",
            "F lower/x=changed",
            "D sub/",
            "H sub/c=>a"
        ]
    );
    assert_eq!(report.counts.hardlinks, 2);
}

#[test]
fn native_keeps_setuid_owner_long_names_xattrs_devices() {
    let t = tempfile::tempdir().unwrap();
    let (l1, up) = (t.path().join("l1"), t.path().join("upper"));
    dir(&l1, "");
    file(&up, "bin/su", "su");
    chmod(&up, "bin/su", 0o4755);
    file(&up, "bin/sg", "sg");
    chmod(&up, "bin/sg", 0o2711);
    dir(&up, "tmp");
    chmod(&up, "tmp", 0o1777);
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "f".repeat(200));
    file(&up, &long_name, "long");
    let long_target = format!("/{}", "t".repeat(150));
    link(&up, "longlink", &long_target);
    file(&up, "caps", "c");
    xattr::set(up.join("caps"), "user.molde.b", b"second").unwrap();
    xattr::set(up.join("caps"), "user.molde.a", b"first\0binary").unwrap();
    let privileged = molde_layerfs::privilege::is_privileged();
    if privileged {
        std::os::unix::fs::lchown(up.join("bin/su"), Some(0), Some(0)).unwrap();
        chmod(&up, "bin/su", 0o4755);
        std::os::unix::fs::lchown(up.join("caps"), Some(3_000_000), Some(4_000_000)).unwrap();
        mknod(
            &up.join("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        // security.capability: a v2 capability blob granting cap_net_bind_service.
        let cap: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        xattr::set(up.join("bin/su"), "security.capability", &cap).unwrap();
    }
    nix::unistd::mkfifo(&up.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    let lowers = UnionView::new(vec![l1], None, X);
    let (out, report) = run_native(&up, &lowers, &opts());
    let entries = read_layer(&out);
    assert_eq!(find(&entries, "bin/su").mode, 0o4755);
    assert_eq!(find(&entries, "bin/sg").mode, 0o2711);
    assert_eq!(find(&entries, "tmp/").mode, 0o1777);
    let long = find(&entries, &long_name);
    assert_eq!(long.data, b"long");
    assert!(entries.iter().any(|e| e.path == format!("{long_dir}/")));
    assert_eq!(
        find(&entries, "longlink").link.as_deref(),
        Some(long_target.as_str())
    );
    assert_eq!(
        find(&entries, "caps").xattrs,
        [
            ("user.molde.a".to_owned(), b"first\0binary".to_vec()),
            ("user.molde.b".to_owned(), b"second".to_vec()),
        ]
    );
    assert_eq!(find(&entries, "fifo").kind, tar::EntryType::Fifo);
    assert_eq!(report.counts.fifos, 1);
    if privileged {
        let caps = find(&entries, "caps");
        assert_eq!((caps.uid, caps.gid), (3_000_000, 4_000_000));
        assert_eq!(find(&entries, "null").device, Some((1, 3)));
        assert_eq!(report.counts.devices, 1);
        let su = find(&entries, "bin/su");
        assert_eq!(su.mode, 0o4755);
        assert_eq!(su.xattrs[0].0, "security.capability");
    }
}

#[test]
fn native_as_root_with_trusted_xattrs() {
    if !common::require(common::privileged(), "needs root for trusted.* xattrs") {
        return;
    }
    let x = OverlayXattr::Trusted;
    let t = tempfile::tempdir().unwrap();
    let (l1, up) = (t.path().join("l1"), t.path().join("upper"));
    file(&l1, "d/old", "o");
    opaque(&up, "d", x);
    file(&up, "d/new", "n");
    // An overlay-internal xattr on a copied-up file must not reach the layer.
    file(&up, "f", "f");
    xattr::set(up.join("f"), "trusted.overlay.origin", b"\0\xfb").unwrap();
    let lowers = UnionView::new(vec![l1], None, x);
    let mut out = Vec::new();
    let o = DiffOptions {
        mtime_clamp: None,
        xattr: x,
        owners: None,
    };
    diff::native(&up, &lowers, &mut out, &o).unwrap();
    let entries = read_layer(&out);
    assert_eq!(
        summary(&entries),
        ["D d/", "F d/.wh..wh..opq=", "F d/new=n", "F f=f"]
    );
    assert!(entries.iter().all(|e| e.xattrs.is_empty()));
    // The same upper read with the user namespace has no opaque dir.
    let mut out = Vec::new();
    diff::native(
        &up,
        &UnionView::new(vec![t.path().join("l1")], None, X),
        &mut out,
        &opts(),
    )
    .unwrap();
    assert_eq!(summary(&read_layer(&out)), ["D d/", "F d/new=n", "F f=f"]);
}

#[test]
fn native_refuses_redirect_dirs() {
    let t = tempfile::tempdir().unwrap();
    let (l1, up) = (t.path().join("l1"), t.path().join("upper"));
    dir(&l1, "");
    dir(&up, "moved");
    xattr::set(up.join("moved"), "user.overlay.redirect", b"/orig").unwrap();
    let lowers = UnionView::new(vec![l1], None, X);
    let err = diff::native(&up, &lowers, std::io::sink(), &opts()).unwrap_err();
    assert!(
        matches!(err, diff::DiffError::Unsupported { ref path, .. } if path.ends_with("moved")),
        "{err}"
    );
}

// ----- naive -----

/// A base tree and a new tree made from it by every kind of change.
fn naive_fixture(t: &Path) -> (PathBuf, PathBuf) {
    let (base, new) = (t.join("base"), t.join("new"));
    for root in [&base, &new] {
        file(root, "etc/same", "same");
        file(root, "etc/edit", "hello");
        file(root, "etc/del", "x");
        file(root, "gone/a/b", "deep");
        file(root, "gone/c", "c");
        file(root, "was-dir/x", "x");
        file(root, "was-file", "f");
        link(root, "lnk", "etc/same");
        file(root, "mode", "m");
        file(root, "attrs", "a");
        file(root, "quiet/deep/unchanged", "u");
        file(root, "quiet/deep/touched", "t");
    }
    // The edit keeps size and mtime.
    file(&new, "etc/edit", "jello");
    set_mtime(&base.join("etc/edit"), 1_234_567);
    set_mtime(&new.join("etc/edit"), 1_234_567);
    fs::remove_file(new.join("etc/del")).unwrap();
    fs::remove_dir_all(new.join("gone")).unwrap();
    fs::remove_dir_all(new.join("was-dir")).unwrap();
    file(&new, "was-dir", "file now");
    fs::remove_file(new.join("was-file")).unwrap();
    file(&new, "was-file/inside", "i");
    fs::remove_file(new.join("lnk")).unwrap();
    link(&new, "lnk", "etc/edit");
    chmod(&new, "mode", 0o4755);
    xattr::set(new.join("attrs"), "user.molde", b"1").unwrap();
    file(&new, "added/dir/f", "new");
    file(&new, "quiet/deep/touched", "T");
    (base, new)
}

#[test]
fn naive_finds_every_kind_of_change() {
    let t = tempfile::tempdir().unwrap();
    let (base, new) = naive_fixture(t.path());
    let (out, report) = run_naive(&plain_view(&base), &new, &opts());
    let entries = read_layer(&out);
    assert_eq!(
        summary(&entries),
        [
            "F .wh.gone=",
            "D added/",
            "D added/dir/",
            "F added/dir/f=new",
            "F attrs=a",
            "D etc/",
            "F etc/.wh.del=",
            "F etc/edit=jello",
            "L lnk->etc/edit",
            "F mode=m",
            "D quiet/",
            "D quiet/deep/",
            "F quiet/deep/touched=T",
            "F was-dir=file now",
            "D was-file/",
            "F was-file/inside=i",
        ]
    );
    assert_eq!(find(&entries, "mode").mode, 0o4755);
    assert_eq!(
        find(&entries, "attrs").xattrs,
        [("user.molde".to_owned(), b"1".to_vec())]
    );
    assert_eq!(report.counts.whiteouts, 2);
    assert_eq!(report.counts.opaques, 0);

    // Nothing changed: an empty layer (two zero blocks).
    let (out, report) = run_naive(&plain_view(&new), &new, &opts());
    assert_eq!(out, vec![0u8; 1024]);
    assert_eq!(report.counts, Default::default());
}

#[test]
fn naive_over_a_layer_stack_base() {
    if !can_whiteout() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l1, l2, new) = (
        t.path().join("l1"),
        t.path().join("l2"),
        t.path().join("new"),
    );
    file(&l1, "a", "1");
    file(&l1, "hidden", "h");
    file(&l1, "o/lower", "l");
    assert!(whiteout(&l2, "hidden"));
    opaque(&l2, "o", X);
    file(&l2, "o/upper", "u");
    file(&l2, "b", "2");
    // The new tree is the flattened stack, then changed.
    let base = UnionView::new(vec![l2, l1], None, X);
    base.copy_to(&new).unwrap();
    assert!(!new.join("hidden").exists());
    let (out, _) = run_naive(&base, &new, &opts());
    assert_eq!(out, vec![0u8; 1024], "a fresh copy has no changes");
    file(&new, "hidden", "back");
    fs::remove_file(new.join("o/upper")).unwrap();
    file(&new, "o/lower", "again");
    let (out, _) = run_naive(&base, &new, &opts());
    assert_eq!(
        summary(&read_layer(&out)),
        ["F hidden=back", "D o/", "F o/.wh.upper=", "F o/lower=again"]
    );
}

#[test]
fn naive_reemits_unchanged_hardlink_siblings() {
    let t = tempfile::tempdir().unwrap();
    let (base, new) = (t.path().join("base"), t.path().join("new"));
    for root in [&base, &new] {
        file(root, "g1/x", "one");
        fs::hard_link(root.join("g1/x"), root.join("g1/y")).unwrap();
        file(root, "g2/x", "two");
        fs::hard_link(root.join("g2/x"), root.join("g2/y")).unwrap();
        file(root, "g3/x", "three");
        fs::hard_link(root.join("g3/x"), root.join("g3/y")).unwrap();
    }
    // g1: a new name for an unchanged file, sorted before the others.
    fs::hard_link(new.join("g1/x"), new.join("g1/a")).unwrap();
    // g2: edited in place: every name sees the change.
    fs::write(new.join("g2/y"), "TWO").unwrap();
    // g3: untouched: nothing written.
    let (out, report) = run_naive(&plain_view(&base), &new, &opts());
    assert_eq!(
        summary(&read_layer(&out)),
        [
            "D g1/",
            "F g1/a=one",
            "H g1/x=>g1/a",
            "H g1/y=>g1/a",
            "D g2/",
            "F g2/x=TWO",
            "H g2/y=>g2/x",
        ]
    );
    assert_eq!(report.counts.hardlinks, 3);
}

#[test]
fn naive_is_deterministic_and_clamps_mtimes() {
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (b1, n1) = naive_fixture(t1.path());
    let (b2, n2) = naive_fixture(t2.path());
    set_all_mtimes(&n1, 1_700_000_000);
    set_all_mtimes(&n2, 1_800_000_000);
    let clamp = DiffOptions {
        mtime_clamp: Some(1_600_000_000),
        xattr: X,
        owners: None,
    };
    let (a, _) = run_naive(&plain_view(&b1), &n1, &clamp);
    let (a_again, _) = run_naive(&plain_view(&b1), &n1, &clamp);
    let (b, _) = run_naive(&plain_view(&b2), &n2, &clamp);
    assert_eq!(a, a_again);
    assert_eq!(a, b);
    // An mtime before the clamp is kept.
    set_mtime(&n2.join("etc/edit"), 5);
    let (c, _) = run_naive(&plain_view(&b2), &n2, &clamp);
    assert_eq!(find(&read_layer(&c), "etc/edit").mtime, 5);
    assert_eq!(find(&read_layer(&c), "etc/").mtime, 1_600_000_000);
}

#[test]
fn naive_catches_a_large_same_size_edit() {
    // Larger than one comparison block, differing only near the end.
    let t = tempfile::tempdir().unwrap();
    let (base, new) = (t.path().join("base"), t.path().join("new"));
    let mut data = vec![7u8; 300 * 1024 + 5];
    dir(&base, "");
    dir(&new, "");
    fs::write(base.join("big"), &data).unwrap();
    fs::write(new.join("same"), &data).unwrap();
    fs::write(base.join("same"), &data).unwrap();
    *data.last_mut().unwrap() = 8;
    fs::write(new.join("big"), &data).unwrap();
    for p in [base.join("big"), new.join("big")] {
        set_mtime(&p, 42);
    }
    let (out, _) = run_naive(&plain_view(&base), &new, &opts());
    let entries = read_layer(&out);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].path, "big");
    assert_eq!(entries[0].data, data);
}

#[test]
fn writer_matches_between_native_and_naive() {
    // The same change seen through an upper dir and through two plain trees gives one layer.
    if !can_whiteout() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l1, up, new) = (
        t.path().join("l1"),
        t.path().join("upper"),
        t.path().join("new"),
    );
    file(&l1, "etc/a", "a");
    file(&l1, "etc/b", "b");
    file(&l1, "usr/x", "x");
    file(&up, "etc/a", "A");
    assert!(whiteout(&up, "etc/b"));
    file(&up, "etc/c", "c");
    let lowers = UnionView::new(vec![l1.clone()], None, X);
    let merged = UnionView::new(vec![l1], Some(up.clone()), X);
    merged.copy_to(&new).unwrap();
    // Make the naive side's directory attributes those of the upper.
    set_all_mtimes(&up, 1000);
    set_all_mtimes(&new, 1000);
    let (a, _) = run_native(&up, &lowers, &opts());
    let (b, _) = run_naive(&lowers, &new, &opts());
    assert_eq!(summary(&read_layer(&a)), summary(&read_layer(&b)));
    assert_eq!(a, b);
}

#[test]
fn a_name_reserved_for_whiteouts_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (base, new) = (t.path().join("base"), t.path().join("new"));
    dir(&base, "");
    file(&new, "etc/.wh.passwd", "would delete /etc/passwd");
    let err = diff::naive(&plain_view(&base), &new, std::io::sink(), &opts()).unwrap_err();
    match err {
        diff::DiffError::ReservedName { path } => assert!(path.ends_with("etc/.wh.passwd")),
        other => panic!("unexpected error {other}"),
    }
}

/// Unmounts on drop.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn native_diff_of_a_real_overlay_upper() {
    if !common::require(common::privileged(), "needs root to mount overlayfs") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    let (l1, l2, up, work, merged) = (p("l1"), p("l2"), p("upper"), p("work"), p("merged"));
    for d in [&up, &work, &merged] {
        dir(d, "");
    }
    file(&l1, "etc/a", "aaaa");
    file(&l1, "etc/b", "b");
    file(&l1, "d/x", "x");
    file(&l1, "d/sub/y", "y");
    file(&l1, "hl/x", "linked");
    fs::hard_link(l1.join("hl/x"), l1.join("hl/y")).unwrap();
    file(&l2, "etc/c", "c");
    let data = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        l2.display(),
        l1.display(),
        up.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .unwrap();
    let guard = MountGuard(merged.clone());
    fs::write(merged.join("etc/a"), "AAAA").unwrap();
    fs::remove_file(merged.join("etc/b")).unwrap();
    fs::remove_dir_all(merged.join("d")).unwrap();
    file(&merged, "d/new", "new");
    fs::OpenOptions::new()
        .append(true)
        .open(merged.join("hl/x"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    file(&merged, "newdir/f", "");
    chmod(&merged, "etc/c", 0o4755);
    let mut kernel_view = Vec::new();
    walk_tree(&merged, Path::new(""), &mut kernel_view);
    drop(guard);

    // The union view of the same stack agrees with what the kernel showed.
    let x = OverlayXattr::Trusted;
    let view = UnionView::new(vec![l2.clone(), l1.clone()], Some(up.clone()), x);
    let mut ours = Vec::new();
    view.walk(|rel, e| {
        let data = if e.file_type().is_file() {
            view.read(rel).unwrap()
        } else {
            Vec::new()
        };
        ours.push((rel.to_path_buf(), data));
        Ok(())
    })
    .unwrap();
    assert_eq!(ours, kernel_view);

    let lowers = UnionView::new(vec![l2, l1], None, x);
    let o = DiffOptions {
        mtime_clamp: Some(0),
        xattr: x,
        owners: None,
    };
    let (out, _) = run_native(&up, &lowers, &o);
    let entries = read_layer(&out);
    assert_eq!(
        summary(&entries),
        [
            "D d/",
            "F d/.wh..wh..opq=",
            "F d/new=new",
            "D etc/",
            "F etc/.wh.b=",
            "F etc/a=AAAA",
            "F etc/c=c",
            "D hl/",
            "F hl/x=linked+",
            "D newdir/",
            "F newdir/f=",
        ]
    );
    assert_eq!(find(&entries, "etc/c").mode, 0o4755);
    // overlayfs' own xattrs (origin, impure...) stay out of the layer.
    assert!(entries.iter().all(|e| e.xattrs.is_empty()), "{entries:?}");
    let changes: Vec<String> = diff::changes(&up, &lowers, x)
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        changes,
        [
            "C /d",
            "A /d/new",
            "D /d/sub",
            "D /d/x",
            "C /etc",
            "C /etc/a",
            "D /etc/b",
            "C /etc/c",
            "C /hl",
            "C /hl/x",
            "A /newdir",
            "A /newdir/f",
        ]
    );
}

/// Sorted depth-first listing of a plain tree with each regular file's contents.
fn walk_tree(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let p = rel.join(&n);
        let meta = fs::symlink_metadata(root.join(&p)).unwrap();
        let data = if meta.is_file() {
            fs::read(root.join(&p)).unwrap()
        } else {
            Vec::new()
        };
        out.push((p.clone(), data));
        if meta.is_dir() {
            walk_tree(root, &p, out);
        }
    }
}

#[test]
fn deep_trees_do_not_overflow() {
    // 1,000 nested directories (a 2,000-byte path): both diffs and the view recurse per level.
    let t = tempfile::tempdir().unwrap();
    let (base, new) = (t.path().join("base"), t.path().join("new"));
    let deep = "d/".repeat(1000);
    dir(&base, "");
    file(&new, &format!("{deep}f"), "bottom");
    let (out, report) = run_naive(&plain_view(&base), &new, &opts());
    assert_eq!(report.counts.dirs, 1000);
    assert_eq!(find(&read_layer(&out), &format!("{deep}f")).data, b"bottom");
    let (native_out, _) = run_native(&new, &plain_view(&base), &opts());
    assert_eq!(out, native_out);
    let flat = t.path().join("flat");
    UnionView::new(vec![new.clone()], None, X)
        .copy_to(&flat)
        .unwrap();
    assert_eq!(fs::read(flat.join(format!("{deep}f"))).unwrap(), b"bottom");
}
