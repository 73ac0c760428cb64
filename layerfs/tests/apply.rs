//! Applying real layers: every entry kind, compression and digests, whiteouts in both formats,
//! the options, and agreement with GNU tar and with a kernel overlay mount.

mod common;
mod rawtar;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use molde_layerfs::apply::{
    ApplyError, ApplyOptions, DeviceNodes, EntryCounts, MAX_SKIPPED_LISTED, Ownership, SkipReason,
    Xattrs, apply,
};
use molde_layerfs::{Compression, Digest, Format, OverlayXattr};
use rawtar::{Entry, RawTar};
use tar::{EntryType, Header};

fn root_opts(format: Format) -> ApplyOptions {
    ApplyOptions::for_current_process(format)
}

/// A tar crate header.
fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, mtime: u64, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// Append a PAX extended header (for the next entry) with the tar crate.
fn append_pax(b: &mut tar::Builder<Vec<u8>>, records: &[(&str, &[u8])]) {
    let data: Vec<u8> = records
        .iter()
        .flat_map(|(k, v)| rawtar::pax_record(k.as_bytes(), v))
        .collect();
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    h.set_path("././@PaxHeader").unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
}

/// A `security.capability` value (v2) granting CAP_NET_BIND_SERVICE, effective.
fn cap_net_bind() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// A layer with every entry kind (built with the tar crate).
fn every_kind_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let t = 1_500_000_000;
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, mtime: u64| {
        let mut h = header(EntryType::Directory, mode, 0, 0, mtime, 0);
        b.append_data(&mut h, path, io::empty()).unwrap();
    };
    dir(&mut b, "./", 0o755, t);
    dir(&mut b, "bin", 0o755, t + 1);
    dir(&mut b, "shared", 0o2775, t + 2);
    dir(&mut b, "tmp", 0o1777, t + 3);
    dir(&mut b, "ro", 0o555, t + 4);
    dir(&mut b, "locked", 0o000, t + 5);
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid, gid, data: &[u8]| {
        let mut h = header(
            EntryType::Regular,
            mode,
            uid,
            gid,
            t + 10,
            data.len() as u64,
        );
        b.append_data(&mut h, path, data).unwrap();
    };
    file(&mut b, "bin/tool", 0o755, 0, 0, b"#!/bin/sh\necho tool\n");
    file(&mut b, "bin/su", 0o4755, 0, 0, b"setuid");
    file(&mut b, "shared/sgid", 0o2755, 1000, 50, b"setgid");
    file(
        &mut b,
        "etc/owned",
        0o640,
        1234,
        2345,
        b"owned by 1234:2345",
    );
    file(&mut b, "ro/inside", 0o444, 0, 0, b"in a read-only dir");
    file(&mut b, "locked/inside", 0o600, 0, 0, b"in a mode-000 dir");
    file(&mut b, "empty", 0o600, 0, 0, b"");
    append_pax(
        &mut b,
        &[
            ("SCHILY.xattr.user.comment", b"hello xattr"),
            ("SCHILY.xattr.security.capability", &cap_net_bind()),
            ("SCHILY.xattr.trusted.molde", b"trusted value"),
            ("mtime", b"1500000042.25"),
        ],
    );
    file(&mut b, "bin/ping", 0o755, 0, 0, b"ping");
    append_pax(
        &mut b,
        &[("SCHILY.xattr.trusted.link", b"on the link itself")],
    );
    let mut h = header(EntryType::Symlink, 0o777, 1234, 2345, t + 20, 0);
    b.append_link(&mut h, "bin/sh", "tool").unwrap();
    let mut h = header(EntryType::Symlink, 0o777, 0, 0, t + 20, 0);
    b.append_link(&mut h, "abs", "/bin/tool").unwrap();
    let mut h = header(EntryType::Link, 0o755, 0, 0, t + 20, 0);
    b.append_link(&mut h, "bin/tool-again", "bin/tool").unwrap();
    let mut h = header(EntryType::Fifo, 0o620, 0, 0, t + 30, 0);
    b.append_data(&mut h, "run/fifo", io::empty()).unwrap();
    let mut h = header(EntryType::Char, 0o666, 0, 0, t + 30, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "dev/null", io::empty()).unwrap();
    let mut h = header(EntryType::Block, 0o660, 0, 6, t + 30, 0);
    h.set_device_major(7).unwrap();
    h.set_device_minor(0).unwrap();
    b.append_data(&mut h, "dev/loop0", io::empty()).unwrap();
    // A long name (GNU 'L' header from the tar crate).
    let long = format!("deep/{}/{}", "d".repeat(120), "f".repeat(200));
    let mut h = header(EntryType::Regular, 0o644, 0, 0, t, 4);
    b.append_data(&mut h, &long, &b"long"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn every_entry_kind_round_trips() {
    if !common::require(
        common::privileged(),
        "needs root for devices, owners and trusted xattrs",
    ) {
        return;
    }
    let layer = every_kind_layer();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("rootfs");
    let report = apply(&layer[..], &t, &root_opts(Format::Flat)).unwrap();
    let md = |p: &str| fs::symlink_metadata(t.join(p)).unwrap();
    let tt = 1_500_000_000i64;

    assert_eq!(
        report.counts,
        EntryCounts {
            dirs: 6,
            files: 9,
            symlinks: 2,
            hardlinks: 1,
            fifos: 1,
            char_devices: 1,
            block_devices: 1,
            whiteouts: 0,
            opaques: 0,
        }
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.compression, Compression::None);
    assert_eq!(report.diff_id, Digest::of(&layer));
    assert_eq!(report.digest, report.diff_id);
    assert_eq!(report.uncompressed_size, layer.len() as u64);

    // Modes, with setuid, setgid and sticky bits; directories' modes and times set last.
    assert_eq!(md("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(md("shared/sgid").mode() & 0o7777, 0o2755);
    assert_eq!(md("shared").mode() & 0o7777, 0o2775);
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(md("ro").mode() & 0o7777, 0o555);
    assert_eq!(md("locked").mode() & 0o7777, 0o000);
    assert_eq!(
        fs::read(t.join("ro/inside")).unwrap(),
        b"in a read-only dir"
    );
    assert_eq!(
        fs::read(t.join("locked/inside")).unwrap(),
        b"in a mode-000 dir"
    );
    assert_eq!(md("").mtime(), tt);
    assert_eq!(md("bin").mtime(), tt + 1);
    assert_eq!(md("ro").mtime(), tt + 4);
    assert_eq!(md("bin/tool").mtime(), tt + 10);
    assert_eq!(
        (md("bin/ping").mtime(), md("bin/ping").mtime_nsec()),
        (tt + 42, 250_000_000)
    );
    // Owners, on files and on the symlink itself.
    assert_eq!((md("etc/owned").uid(), md("etc/owned").gid()), (1234, 2345));
    assert_eq!(
        (md("shared/sgid").uid(), md("shared/sgid").gid()),
        (1000, 50)
    );
    assert_eq!((md("bin/sh").uid(), md("bin/sh").gid()), (1234, 2345));
    assert_eq!(md("bin/sh").mtime(), tt + 20);
    assert_eq!(fs::read_link(t.join("bin/sh")).unwrap(), Path::new("tool"));
    assert_eq!(
        fs::read_link(t.join("abs")).unwrap(),
        Path::new("/bin/tool")
    );
    // The hardlink shares the inode.
    assert_eq!(md("bin/tool-again").ino(), md("bin/tool").ino());
    assert_eq!(md("bin/tool").nlink(), 2);
    // Special files.
    assert!(md("run/fifo").file_type().is_fifo());
    assert_eq!(md("run/fifo").mode() & 0o7777, 0o620);
    assert!(md("dev/null").file_type().is_char_device());
    assert_eq!(md("dev/null").rdev(), libc::makedev(1, 3));
    assert!(md("dev/loop0").file_type().is_block_device());
    assert_eq!(md("dev/loop0").rdev(), libc::makedev(7, 0));
    assert_eq!(md("dev/loop0").gid(), 6);
    // Xattrs.
    let x = |name: &str| xattr::get(t.join("bin/ping"), name).unwrap();
    assert_eq!(x("user.comment").as_deref(), Some(&b"hello xattr"[..]));
    assert_eq!(x("trusted.molde").as_deref(), Some(&b"trusted value"[..]));
    let cap = x("security.capability").expect("file capability set");
    assert_eq!(
        xattr::get(t.join("bin/sh"), "trusted.link")
            .unwrap()
            .as_deref(),
        Some(&b"on the link itself"[..])
    );
    assert_eq!(
        xattr::get(t.join("bin/tool"), "trusted.link").unwrap(),
        None
    );
    assert_eq!(&cap[4..8], &(1u32 << 10).to_le_bytes());
    // Empty and long-named files.
    assert_eq!(md("empty").len(), 0);
    let long = format!("deep/{}/{}", "d".repeat(120), "f".repeat(200));
    assert_eq!(fs::read(t.join(long)).unwrap(), b"long");
}

#[test]
fn compressed_layers_have_the_plain_diff_id() {
    let mut plain = RawTar::new()
        .dir("d")
        .file("d/f", vec![42u8; 300_000])
        .file("g", "g")
        .finish();
    // GNU tar pads to a 10 KiB record; the padding is part of the DiffID.
    plain.resize(plain.len().div_ceil(10240) * 10240, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zs = zstd::encode_all(&plain[..], 3).unwrap();
    for (blob, compression) in [
        (&plain, Compression::None),
        (&gz, Compression::Gzip),
        (&zs, Compression::Zstd),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let r = apply(&blob[..], tmp.path(), &root_opts(Format::Flat)).unwrap();
        assert_eq!(r.compression, compression);
        assert_eq!(r.diff_id, Digest::of(&plain), "{compression:?}");
        assert_eq!(r.uncompressed_size, plain.len() as u64);
        assert_eq!(r.digest, Digest::of(blob));
        assert_eq!(r.compressed_size, blob.len() as u64);
        assert_eq!(
            fs::read(tmp.path().join("d/f")).unwrap(),
            vec![42u8; 300_000]
        );
        assert_eq!(r.counts.files, 2);
    }
}

#[test]
fn diff_id_covers_everything_after_the_end_of_archive() {
    let mut blob = RawTar::new().file("a", "a").finish();
    blob.extend_from_slice(&[0u8; 3000]);
    blob.extend_from_slice(b"trailing bytes after the end blocks");
    let tmp = tempfile::tempdir().unwrap();
    let r = apply(&blob[..], tmp.path(), &root_opts(Format::Flat)).unwrap();
    assert_eq!(r.diff_id, Digest::of(&blob));
    assert_eq!(r.uncompressed_size, blob.len() as u64);
    assert!(tmp.path().join("a").is_file());
}

/// A reader handing out one byte per call, to catch short reads.
struct Trickle<R>(R);
impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

/// A reader that fails after `left` bytes.
struct Failing<R> {
    inner: R,
    left: usize,
}
impl<R: Read> Read for Failing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "registry went away",
            ));
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn short_reads_and_read_errors() {
    let plain = RawTar::new().file("f", vec![1u8; 70_000]).finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let r = apply(
        Trickle(&gz[..]),
        &tmp.path().join("a"),
        &root_opts(Format::Flat),
    )
    .unwrap();
    assert_eq!(r.compression, Compression::Gzip);
    assert_eq!(r.diff_id, Digest::of(&plain));

    let failing = Failing {
        inner: &plain[..],
        left: 20_000,
    };
    match apply(failing, &tmp.path().join("b"), &root_opts(Format::Flat)) {
        Err(ApplyError::Read(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
}

/// The lower layer of the whiteout tests.
fn lower_layer() -> Vec<u8> {
    RawTar::new()
        .file("a", "lower a")
        .dir("d")
        .file("d/old", "old")
        .dir("d/sub")
        .file("d/sub/old2", "old2")
        .dir("e")
        .file("e/old", "old")
        .dir("w")
        .file("w/lower", "lower")
        .file("x", "lower x")
        .dir("keep")
        .file("keep/k", "k")
        .finish()
}

/// The upper layer: whiteouts and opaque markers in every position; with `missing`, a whiteout
/// in a directory no layer has (which only the flat format can make sense of).
fn upper_layer(missing: bool) -> Vec<u8> {
    let mut tar = RawTar::new();
    if missing {
        tar.file("nodir/.wh.nothing", "");
    }
    tar.file(".wh.a", "")
        // The opaque marker after this layer's own entries of `d`...
        .dir("d")
        .file("d/new", "new")
        .dir("d/sub")
        .file("d/sub/new2", "new2")
        .file("d/.wh..wh..opq", "")
        // ...and before them in `e`.
        .file("e/.wh..wh..opq", "")
        .file("e/new", "new")
        // A whiteout never hides what its own layer wrote.
        .file("x", "upper x")
        .file(".wh.x", "")
        .file("w/keep", "keep")
        .file(".wh.w", "")
        // A whiteout of something that is not there, and in a missing directory.
        .file(".wh.nothing", "")
        .finish()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn flat_whiteouts_delete_what_they_hide() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    apply(&lower_layer()[..], t, &root_opts(Format::Flat)).unwrap();
    let r = apply(&upper_layer(true)[..], t, &root_opts(Format::Flat)).unwrap();
    assert_eq!(r.counts.whiteouts, 5);
    assert_eq!(r.counts.opaques, 2);
    assert!(!t.join("a").exists());
    assert_eq!(names(&t.join("d")), ["new", "sub"]);
    assert_eq!(names(&t.join("d/sub")), ["new2"]);
    assert_eq!(names(&t.join("e")), ["new"]);
    assert_eq!(fs::read(t.join("x")).unwrap(), b"upper x");
    assert_eq!(names(&t.join("w")), ["keep"]);
    assert_eq!(names(&t.join("keep")), ["k"]);
    assert!(!t.join("nodir").exists());
}

#[test]
fn an_opaque_marker_makes_its_directory_a_directory_of_this_layer() {
    let lower = RawTar::new()
        .file("x", "lower file")
        .dir("d")
        .file("d/f", "f")
        .symlink("lnk", "d")
        .finish();
    // The markers come before the entries of their directories.
    let upper = RawTar::new()
        .file("x/.wh..wh..opq", "")
        .dir("x")
        .file("x/new", "new")
        .file("lnk/.wh..wh..opq", "")
        .finish();
    for format in [Format::Flat, Format::Overlay(OverlayXattr::User)] {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        apply(&lower[..], t, &root_opts(Format::Flat)).unwrap();
        apply(&upper[..], t, &root_opts(format)).unwrap();
        assert_eq!(names(&t.join("x")), ["new"], "{format:?}");
        // The lower symlink is replaced by an (empty, opaque) directory; its target is intact.
        assert!(
            fs::symlink_metadata(t.join("lnk")).unwrap().is_dir(),
            "{format:?}"
        );
        assert!(names(&t.join("lnk")).is_empty());
        assert_eq!(names(&t.join("d")), ["f"]);
    }
}

#[test]
fn overlay_whiteouts_are_char_devices_and_opaque_xattrs() {
    for xattr in [OverlayXattr::Trusted, OverlayXattr::User] {
        if xattr == OverlayXattr::Trusted
            && !common::require(common::privileged(), "trusted.* needs root")
        {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let r = apply(
            &upper_layer(true)[..],
            t,
            &root_opts(Format::Overlay(xattr)),
        )
        .unwrap();
        assert_eq!(r.counts.whiteouts, 5);
        let wh = fs::symlink_metadata(t.join("a")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        for d in ["d", "e"] {
            assert_eq!(
                xattr::get(t.join(d), xattr.opaque()).unwrap().as_deref(),
                Some(&b"y"[..]),
                "{d} is opaque"
            );
        }
        assert!(molde_layerfs::whiteout::is_opaque_dir(&t.join("d"), xattr));
        assert!(!molde_layerfs::whiteout::is_opaque_dir(
            &t.join("d/sub"),
            xattr
        ));
        // Never hide what this layer wrote: x and w stay what the layer made them.
        assert_eq!(fs::read(t.join("x")).unwrap(), b"upper x");
        assert!(t.join("w/keep").is_file());
        // ...but the lower `w` is hidden all the same: the layer's own `w` is opaque.
        assert!(molde_layerfs::whiteout::is_opaque_dir(&t.join("w"), xattr));
        let n = fs::symlink_metadata(t.join("nodir/nothing")).unwrap();
        assert!(n.file_type().is_char_device());
    }
}

/// Mount an overlay of `lowers` (top first) read-only at `at`.
struct OverlayMount(PathBuf);
impl OverlayMount {
    fn new(lowers: &[&Path], at: &Path) -> OverlayMount {
        let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let data = format!("lowerdir={}", lowerdir.join(":"));
        nix::mount::mount(
            Some("overlay"),
            at,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(data.as_str()),
        )
        .unwrap();
        OverlayMount(at.to_path_buf())
    }
}
impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every path under `dir` with its type and content (or link target).
fn tree(dir: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let (kind, content) = if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
            ("dir".to_string(), Vec::new())
        } else if m.is_symlink() {
            (
                "symlink".into(),
                fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
            )
        } else if m.is_file() {
            ("file".into(), fs::read(&p).unwrap())
        } else {
            (
                format!("special {:o} {}", m.mode() & libc::S_IFMT, m.rdev()),
                Vec::new(),
            )
        };
        out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), (kind, content));
    }
    out
}

#[test]
fn overlay_format_mounts_to_the_same_tree_as_flat() {
    if !common::require(common::privileged(), "needs root to mount overlay") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    let upper = tmp.path().join("upper");
    let flat = tmp.path().join("flat");
    let merged = tmp.path().join("merged");
    fs::create_dir_all(&merged).unwrap();
    let overlay = Format::Overlay(OverlayXattr::Trusted);
    apply(&lower_layer()[..], &lower, &root_opts(overlay)).unwrap();
    apply(&upper_layer(false)[..], &upper, &root_opts(overlay)).unwrap();
    apply(&lower_layer()[..], &flat, &root_opts(Format::Flat)).unwrap();
    apply(&upper_layer(false)[..], &flat, &root_opts(Format::Flat)).unwrap();
    let mount = OverlayMount::new(&[&upper, &lower], &merged);
    let seen = tree(&merged);
    drop(mount);
    assert_eq!(seen, tree(&flat));
}

#[test]
fn hardlink_to_a_file_already_in_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    apply(
        &RawTar::new().file("bin/busybox", "bb").finish()[..],
        t,
        &root_opts(Format::Flat),
    )
    .unwrap();
    let r = apply(
        &RawTar::new()
            .hardlink("bin/ls", "bin/busybox")
            .hardlink("/sbin/init", "/bin/busybox")
            .finish()[..],
        t,
        &root_opts(Format::Flat),
    )
    .unwrap();
    assert_eq!(r.counts.hardlinks, 2);
    let ino = fs::metadata(t.join("bin/busybox")).unwrap().ino();
    assert_eq!(fs::metadata(t.join("bin/ls")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(t.join("sbin/init")).unwrap().ino(), ino);
}

#[test]
fn skipped_devices_are_reported() {
    let mut tar = RawTar::new();
    tar.char_dev("dev/null", 1, 3).fifo("dev/fifo");
    let mut e = Entry::new(rawtar::BLOCK, "dev/sda");
    e.dev = (8, 0);
    tar.entry(&e);
    let layer = tar.finish();
    let tmp = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        format: Format::Flat,
        ownership: Ownership::BestEffort,
        devices: DeviceNodes::Skip,
        xattrs: Xattrs::Unprivileged,
    };
    let r = apply(&layer[..], tmp.path(), &opts).unwrap();
    assert_eq!(r.counts.char_devices, 1);
    assert_eq!(r.counts.block_devices, 1);
    // Unprivileged, root's ownership is skipped too (and reported): those aside.
    let skipped: Vec<_> = r
        .skipped
        .iter()
        .filter(|s| !matches!(s.reason, SkipReason::Owner { .. }))
        .collect();
    assert_eq!(skipped.len(), 2);
    assert_eq!(skipped[0].path, Path::new("dev/null"));
    assert_eq!(
        skipped[0].reason,
        SkipReason::DeviceNode {
            block: false,
            major: 1,
            minor: 3
        }
    );
    assert_eq!(
        skipped[1].reason,
        SkipReason::DeviceNode {
            block: true,
            major: 8,
            minor: 0
        }
    );
    assert!(skipped[0].to_string().contains("dev/null"));
    assert!(!tmp.path().join("dev/null").exists());
    assert!(
        tmp.path().join("dev/fifo").exists(),
        "fifos need no privilege"
    );
}

#[test]
fn the_skipped_list_is_capped_but_counted() {
    let mut tar = RawTar::new();
    for i in 0..(MAX_SKIPPED_LISTED + 500) {
        tar.char_dev(format!("dev/d{i}"), 1, 3);
    }
    let layer = tar.finish();
    let tmp = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        devices: DeviceNodes::Skip,
        ..root_opts(Format::Flat)
    };
    let r = apply(&layer[..], tmp.path(), &opts).unwrap();
    assert_eq!(r.skipped.len(), MAX_SKIPPED_LISTED);
    assert_eq!(r.skipped_total, (MAX_SKIPPED_LISTED + 500) as u64);
}

#[test]
fn options_for_this_process() {
    let opts = ApplyOptions::for_current_process(Format::Flat);
    if common::privileged() {
        assert_eq!(opts.ownership, Ownership::Preserve);
        assert_eq!(opts.devices, DeviceNodes::Create);
        assert_eq!(opts.xattrs, Xattrs::All);
    } else {
        assert_eq!(opts.ownership, Ownership::BestEffort);
        assert_eq!(opts.devices, DeviceNodes::Skip);
    }
}

#[test]
fn ownership_and_xattr_policies() {
    let mut e = Entry::new(rawtar::FILE, "f");
    e.uid = 4321;
    e.gid = 8765;
    e.pax = vec![
        (b"SCHILY.xattr.user.a".to_vec(), b"1".to_vec()),
        (b"SCHILY.xattr.trusted.b".to_vec(), b"2".to_vec()),
        (b"SCHILY.xattr.system.weird".to_vec(), b"3".to_vec()),
    ];
    let layer = RawTar::new().entry(&e).finish();
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );

    let tmp = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        format: Format::Flat,
        ownership: Ownership::Ignore,
        devices: DeviceNodes::Skip,
        xattrs: Xattrs::Unprivileged,
    };
    let r = apply(&layer[..], tmp.path(), &opts).unwrap();
    let m = fs::metadata(tmp.path().join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), me);
    assert_eq!(
        xattr::get(tmp.path().join("f"), "user.a")
            .unwrap()
            .as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(xattr::get(tmp.path().join("f"), "trusted.b").unwrap(), None);
    let skipped: Vec<_> = r
        .skipped
        .iter()
        .map(|s| match &s.reason {
            SkipReason::Xattr { name, errno: None } => name.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(skipped, ["trusted.b", "system.weird"]);

    let tmp = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        ownership: Ownership::BestEffort,
        xattrs: Xattrs::Ignore,
        ..opts
    };
    let r = apply(&layer[..], tmp.path(), &opts).unwrap();
    let m = fs::metadata(tmp.path().join("f")).unwrap();
    if common::privileged() {
        assert_eq!((m.uid(), m.gid()), (4321, 8765));
        assert_eq!(r.skipped_total, 3, "only the xattrs");
    } else {
        assert!(
            r.skipped
                .iter()
                .any(|s| matches!(s.reason, SkipReason::Owner { .. }))
        );
    }
    assert_eq!(xattr::get(tmp.path().join("f"), "user.a").unwrap(), None);
}

#[test]
fn walk_fallback_applies_the_same_tree() {
    // Reads back every file and directory whatever its mode, and applies root's owners.
    if !common::require(
        molde_layerfs::privilege::is_privileged(),
        "needs root: applies owners and reads every file whatever its mode",
    ) {
        return;
    }
    let layer = every_kind_layer();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let opts = ApplyOptions {
        devices: DeviceNodes::Skip,
        ..root_opts(Format::Flat)
    };
    apply(&layer[..], &a, &opts).unwrap();
    fs::create_dir(&b).unwrap();
    let root = molde_layerfs::secure::Root::open_walk_only(&b).unwrap();
    molde_layerfs::apply::apply_in(&layer[..], &root, &opts).unwrap();
    assert_eq!(tree(&a), tree(&b));
}

/// Build a source tree with every kind GNU tar stores.
fn make_source_tree(src: &Path) {
    let d = |p: &str, mode: u32| {
        fs::create_dir_all(src.join(p)).unwrap();
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(mode)).unwrap();
    };
    let f = |p: &str, data: &[u8], mode: u32| {
        fs::write(src.join(p), data).unwrap();
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(mode)).unwrap();
    };
    d("usr/bin", 0o755);
    d("usr/share/doc", 0o755);
    d("var/tmp", 0o1777);
    d("srv/group", 0o2770);
    f("usr/bin/app", &vec![0xABu8; 100_000], 0o755);
    f("usr/bin/suid", b"suid", 0o4711);
    f("srv/group/file", b"g", 0o660);
    f("usr/share/doc/readme", b"read me", 0o644);
    let long_dir = format!("usr/share/{}", "l".repeat(150));
    d(&long_dir, 0o755);
    f(&format!("{long_dir}/{}", "n".repeat(200)), b"long", 0o644);
    std::os::unix::fs::symlink("app", src.join("usr/bin/alias")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/app", src.join("usr/bin/abs")).unwrap();
    fs::hard_link(src.join("usr/bin/app"), src.join("usr/bin/app2")).unwrap();
    nix::unistd::mkfifo(
        &src.join("var/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    xattr::set(src.join("usr/share/doc/readme"), "user.note", b"noted").unwrap();
    xattr::set(
        src.join("usr/bin/app"),
        "security.capability",
        &cap_net_bind(),
    )
    .unwrap();
    nix::unistd::chown(
        &src.join("srv/group/file"),
        Some(1001.into()),
        Some(1002.into()),
    )
    .unwrap();
    nix::unistd::chown(&src.join("usr/bin/alias"), Some(7.into()), Some(8.into())).ok();
    nix::sys::stat::mknod(
        &src.join("var/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    // Fixed times for every path, directories included.
    let mut todo = vec![src.to_path_buf()];
    let mut all = Vec::new();
    while let Some(p) = todo.pop() {
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        all.push(p);
    }
    for (i, p) in all.iter().enumerate() {
        let t = nix::sys::time::TimeSpec::new(1_400_000_000 + i as i64, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

/// Everything about a tree that an extraction must reproduce.
fn full_tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    let mut paths = Vec::new();
    while let Some(p) = todo.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        paths.push(p);
    }
    paths.sort();
    for p in paths {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(dir).unwrap().to_path_buf();
        let content = if m.is_file() {
            format!("{}", Digest::of(&fs::read(&p).unwrap()))
        } else if m.is_symlink() {
            fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        let mut xattrs: Vec<String> = if m.is_symlink() {
            Vec::new()
        } else {
            xattr::list(&p)
                .unwrap()
                .map(|n| format!("{}={:?}", n.to_string_lossy(), xattr::get(&p, &n).unwrap()))
                .collect()
        };
        xattrs.sort();
        let link = if m.is_file() && m.nlink() > 1 {
            let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
            format!("link group {}", first.display())
        } else {
            String::new()
        };
        // The root's own metadata depends on how each tool treats "./"; compare its content only.
        let meta = if rel.as_os_str().is_empty() {
            String::new()
        } else {
            format!(
                "mode {:o} owner {}:{} mtime {} rdev {}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.rdev()
            )
        };
        out.insert(rel, format!("{meta} {content} {xattrs:?} {link}"));
    }
    out
}

#[test]
fn agrees_with_gnu_tar_extraction() {
    if !common::require(common::privileged(), "needs root for devices and owners")
        || !common::require(common::have_tool("tar"), "needs GNU tar")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_source_tree(&src);
    for format in ["gnu", "posix"] {
        let layer = tmp.path().join(format!("layer-{format}.tar"));
        // GNU tar stores xattrs only in the POSIX (PAX) format.
        let xattrs: &[&str] = if format == "posix" {
            &["--xattrs", "--xattrs-include=*"]
        } else {
            &[]
        };
        let status = Command::new("tar")
            .args(xattrs)
            .arg("--numeric-owner")
            .arg(format!("--format={format}"))
            .arg("-cf")
            .arg(&layer)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let by_tar = tmp.path().join(format!("tar-{format}"));
        fs::create_dir(&by_tar).unwrap();
        let status = Command::new("tar")
            .args(xattrs)
            .args(["--numeric-owner", "--same-owner", "-xpf"])
            .arg(&layer)
            .arg("-C")
            .arg(&by_tar)
            .status()
            .unwrap();
        assert!(status.success());
        let by_molde = tmp.path().join(format!("molde-{format}"));
        let blob = fs::read(&layer).unwrap();
        let r = apply(&blob[..], &by_molde, &root_opts(Format::Flat)).unwrap();
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!(r.diff_id, Digest::of(&blob));
        let (want, got) = (full_tree(&by_tar), full_tree(&by_molde));
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "{format}: {}", k.display());
        }
        assert_eq!(want.len(), got.len(), "{format}");
        if format == "posix" {
            assert_eq!(full_tree(&src), want, "GNU tar round-trips the source");
        }
    }
}

/// The layer of the rootless test: what a user namespace can and cannot apply.
fn rootless_layer() -> Vec<u8> {
    let mut tar = RawTar::new();
    let mut mine = Entry::new(rawtar::FILE, "mine");
    mine.data = b"root-owned".to_vec();
    mine.mode = 0o4755;
    let mut theirs = Entry::new(rawtar::FILE, "theirs");
    theirs.uid = 1234;
    theirs.gid = 1234;
    theirs.data = b"unmapped owner".to_vec();
    let mut x = Entry::new(rawtar::FILE, "xattrs");
    x.pax = vec![
        (b"SCHILY.xattr.user.ok".to_vec(), b"1".to_vec()),
        (b"SCHILY.xattr.trusted.no".to_vec(), b"2".to_vec()),
    ];
    tar.entry(&mine)
        .entry(&theirs)
        .entry(&x)
        .char_dev("dev/null", 1, 3)
        .fifo("fifo")
        .file(".wh.gone", "")
        .dir("opaque")
        .file("opaque/.wh..wh..opq", "");
    tar.finish()
}

/// The part of [`applies_rootless_in_a_user_namespace`] that runs inside the namespace.
fn rootless_inside(target: &Path) {
    assert!(
        !molde_layerfs::privilege::is_privileged(),
        "in a user namespace"
    );
    let opts = ApplyOptions::for_current_process(Format::Overlay(OverlayXattr::User));
    assert_eq!(opts.devices, DeviceNodes::Skip);
    assert_eq!(opts.ownership, Ownership::BestEffort);
    let r = apply(&rootless_layer()[..], target, &opts).unwrap();
    let reasons: Vec<String> = r.skipped.iter().map(|s| s.to_string()).collect();
    assert_eq!(r.skipped_total, 3, "{reasons:?}");
    assert!(r.skipped.iter().any(|s| s.path == Path::new("theirs")
        && matches!(s.reason, SkipReason::Owner { uid: 1234, .. })));
    assert!(
        r.skipped.iter().any(|s| s.path == Path::new("dev/null")
            && matches!(s.reason, SkipReason::DeviceNode { .. }))
    );
    assert!(r.skipped.iter().any(
        |s| matches!(&s.reason, SkipReason::Xattr { name, errno: None } if name == "trusted.no")
    ));
    let m = fs::symlink_metadata(target.join("mine")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!(fs::read(target.join("theirs")).unwrap(), b"unmapped owner");
    assert!(!target.join("dev/null").exists());
    assert!(
        fs::symlink_metadata(target.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // Overlay whiteouts need no privilege (Linux 5.8+), nor user.* xattrs.
    let wh = fs::symlink_metadata(target.join("gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(molde_layerfs::whiteout::is_opaque_dir(
        &target.join("opaque"),
        OverlayXattr::User
    ));
}

#[test]
fn applies_rootless_in_a_user_namespace() {
    const INSIDE: &str = "MOLDE_TEST_ROOTLESS_TARGET";
    if let Some(target) = std::env::var_os(INSIDE) {
        rootless_inside(Path::new(&target));
        return;
    }
    if !common::require(
        common::have_tool("unshare"),
        "needs unshare(1) for a user namespace",
    ) {
        return;
    }
    // Run this same test again inside a new user namespace where only our uid is mapped.
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("t");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "applies_rootless_in_a_user_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INSIDE, &target)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inside the user namespace:\n{text}");
    assert!(text.contains("1 passed"), "the inner test ran:\n{text}");
    assert!(target.join("theirs").is_file());
}

#[test]
fn large_file_streams_through() {
    // Bigger than the channel holds, to exercise back-pressure.
    let data: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
    let plain = RawTar::new().file("big", &data).file("after", "a").finish();
    let zs = zstd::encode_all(&plain[..], 1).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let r = apply(&zs[..], tmp.path(), &root_opts(Format::Flat)).unwrap();
    assert_eq!(r.diff_id, Digest::of(&plain));
    assert_eq!(
        Digest::of(&fs::read(tmp.path().join("big")).unwrap()),
        Digest::of(&data)
    );
    assert!(tmp.path().join("after").is_file());
}

#[test]
fn an_early_refusal_stops_the_reader_and_names_the_entry() {
    // The refused entry comes first; megabytes follow that nobody needs to decompress.
    let big: Vec<u8> = (0..20_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let plain = RawTar::new()
        .file("../evil", "e")
        .file("big", &big)
        .finish();
    let zs = zstd::encode_all(&plain[..], 1).unwrap();
    for blob in [&plain, &zs] {
        let tmp = tempfile::tempdir().unwrap();
        match apply(&blob[..], tmp.path(), &root_opts(Format::Flat)) {
            Err(ApplyError::Entry { path, reason }) => {
                assert_eq!(path, Path::new("../evil"));
                assert!(matches!(
                    reason,
                    molde_layerfs::apply::EntryError::ParentDir
                ));
            }
            other => panic!("expected the refused entry, got {other:?}"),
        }
        assert!(!tmp.path().join("big").exists());
    }
}
