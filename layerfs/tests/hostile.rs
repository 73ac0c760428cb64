//! A corpus of hostile layers. Each test builds one, applies it into a target surrounded by
//! canaries (see `canary/mod.rs`), asserts the typed error or the safe in-target result, and
//! that nothing outside the target changed.

mod canary;
mod common;
mod rawtar;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use canary::Fixture;
use molde_layerfs::apply::{ApplyError, EntryError, SkipReason};
use rawtar::{Entry, RawTar};

/// Assert `result` is an entry error for `path` whose reason matches `want`.
fn assert_refused(
    result: Result<molde_layerfs::apply::ApplyReport, ApplyError>,
    path: &[u8],
    want: impl Fn(&EntryError) -> bool,
) {
    use std::os::unix::ffi::OsStrExt;
    match result {
        Err(ApplyError::Entry { path: p, reason }) => {
            assert_eq!(p.as_os_str().as_bytes(), path, "error names the entry");
            assert!(want(&reason), "unexpected reason: {reason:?}");
            // The message names the entry and the reason.
            let msg = format!("{}", ApplyError::Entry { path: p, reason });
            assert!(msg.contains("entry"), "{msg}");
        }
        other => panic!("expected a refused entry {path:?}, got {other:?}"),
    }
}

fn is_io(e: &EntryError, errno: i32) -> bool {
    matches!(e, EntryError::Io { source, .. } if source.raw_os_error() == Some(errno))
}

#[test]
fn h01_dotdot_name_is_refused() {
    let fx = Fixture::new();
    let name = format!("../{}", fx.token);
    let tar = RawTar::new().file(&name, "evil").finish();
    assert_refused(fx.apply(&tar), name.as_bytes(), |e| {
        matches!(e, EntryError::ParentDir)
    });
    fx.check();
}

#[test]
fn h02_deep_dotdot_name_is_refused() {
    let fx = Fixture::new();
    let name = format!("a/b/../../../../../../tmp/{}", fx.token);
    let tar = RawTar::new()
        .dir("a")
        .dir("a/b")
        .file(&name, "evil")
        .finish();
    assert_refused(fx.apply(&tar), name.as_bytes(), |e| {
        matches!(e, EntryError::ParentDir)
    });
    fx.check();
}

#[test]
fn h03_dotdot_that_stays_inside_is_still_refused() {
    let fx = Fixture::new();
    let tar = RawTar::new().file("a/../b", "x").finish();
    assert_refused(fx.apply(&tar), b"a/../b", |e| {
        matches!(e, EntryError::ParentDir)
    });
    assert!(!fx.t("b").exists());
    fx.check();
}

#[test]
fn h04_absolute_name_lands_inside() {
    let fx = Fixture::new();
    let name = format!("/{}", fx.token);
    let tar = RawTar::new().file(&name, "in root").finish();
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.t(&fx.token)).unwrap(), b"in root");
    fx.check();
}

#[test]
fn h05_absolute_name_of_the_canary_lands_inside() {
    let fx = Fixture::new();
    let mut name = fx.outside_bytes();
    name.extend_from_slice(b"/canary");
    let tar = RawTar::new().file(&name, "overwritten?").finish();
    fx.apply(&tar).unwrap();
    let inside = fx
        .target
        .join(fx.outside.strip_prefix("/").unwrap())
        .join("canary");
    assert_eq!(fs::read(inside).unwrap(), b"overwritten?");
    fx.check();
}

#[test]
fn h06_symlinked_parent_to_absolute_outside_is_clamped() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .symlink("s", fx.outside_bytes())
        .file("s/canary", "pwned")
        .file(format!("s/{}", fx.token), "pwned")
        .finish();
    fx.apply(&tar).unwrap();
    let inside = fx.target.join(fx.outside.strip_prefix("/").unwrap());
    assert_eq!(fs::read(inside.join("canary")).unwrap(), b"pwned");
    fx.check();
}

#[test]
fn h07_symlinked_parent_with_relative_escape_is_clamped() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .symlink("s", "../outside")
        .file("s/canary", "pwned")
        .finish();
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.t("outside/canary")).unwrap(), b"pwned");
    fx.check();
}

#[test]
fn h08_symlink_chain_made_earlier_in_the_tar_is_clamped() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .symlink("a", "b")
        .symlink("b", "../../../../..")
        .file(format!("a/tmp/{}", fx.token), "pwned")
        .finish();
    fx.apply(&tar).unwrap();
    assert!(fx.t(&format!("tmp/{}", fx.token)).is_file());
    fx.check();
}

#[test]
fn h09_symlink_to_root_then_write_through_it() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .symlink("slash", "/")
        .file(format!("slash/tmp/{}", fx.token), "pwned")
        .file("slash/lower/keep", "rewritten inside")
        .finish();
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.t("lower/keep")).unwrap(), b"rewritten inside");
    fx.check();
}

#[test]
fn h10_preexisting_absolute_symlink_parent_is_clamped() {
    let fx = Fixture::new();
    // `escape` is already in the target, pointing at the canary directory.
    let tar = RawTar::new()
        .file("escape/canary", "pwned")
        .file("escape/dir/inner", "pwned")
        .finish();
    fx.apply(&tar).unwrap();
    fx.check();
}

#[test]
fn h11_file_over_a_final_symlink_replaces_the_link() {
    let fx = Fixture::new();
    let tar = RawTar::new().file("escape_file", "pwned").finish();
    fx.apply(&tar).unwrap();
    let m = fs::symlink_metadata(fx.t("escape_file")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs::read(fx.t("escape_file")).unwrap(), b"pwned");
    fx.check();
}

#[test]
fn h12_directory_over_a_symlink_replaces_the_link() {
    let fx = Fixture::new();
    // A mode change through the link would chmod the canary directory.
    let mut e = Entry::new(rawtar::DIR, "escape");
    e.mode = 0o777;
    let tar = RawTar::new().entry(&e).file("escape/new", "x").finish();
    fx.apply(&tar).unwrap();
    assert!(fs::symlink_metadata(fx.t("escape")).unwrap().is_dir());
    assert_eq!(fs::read(fx.t("escape/new")).unwrap(), b"x");
    fx.check();
}

#[test]
fn h13_hardlink_with_dotdot_is_refused() {
    let fx = Fixture::new();
    let tar = RawTar::new().hardlink("h", "../outside/canary").finish();
    assert_refused(fx.apply(&tar), b"h", |e| {
        matches!(e, EntryError::LinkEscapes { .. })
    });
    fx.check();
}

#[test]
fn h14_hardlink_to_absolute_outside_path_resolves_inside() {
    let fx = Fixture::new();
    let mut target = fx.outside_bytes();
    target.extend_from_slice(b"/canary");
    let tar = RawTar::new().hardlink("h", &target).finish();
    // There is no such file under the target.
    assert_refused(fx.apply(&tar), b"h", |e| is_io(e, libc::ENOENT));
    assert!(fs::symlink_metadata(fx.t("h")).is_err());
    fx.check();
}

#[test]
fn h15_hardlink_through_a_symlinked_directory_stays_inside() {
    let fx = Fixture::new();
    let tar = RawTar::new().hardlink("h", "escape/canary").finish();
    assert_refused(fx.apply(&tar), b"h", |e| is_io(e, libc::ENOENT));
    fx.check();
}

#[test]
fn h16_hardlink_to_a_symlink_links_the_symlink_itself() {
    let fx = Fixture::new();
    // Then a file written over the link must not write through it.
    let tar = RawTar::new()
        .hardlink("h", "escape_file")
        .file("h", "pwned")
        .finish();
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.t("h")).unwrap(), b"pwned");
    assert!(
        fs::symlink_metadata(fx.t("escape_file"))
            .unwrap()
            .is_symlink()
    );
    fx.check();
}

#[test]
fn h17_hardlink_to_a_directory_is_refused_by_the_kernel() {
    let fx = Fixture::new();
    let tar = RawTar::new().hardlink("h", "lower").finish();
    assert_refused(fx.apply(&tar), b"h", |e| is_io(e, libc::EPERM));
    fx.check();
}

#[test]
fn h18_whiteout_of_dotdot_is_refused() {
    let fx = Fixture::new();
    let tar = RawTar::new().file("lower/.wh..", "").finish();
    assert_refused(fx.apply(&tar), b"lower/.wh..", |e| {
        matches!(e, EntryError::InvalidWhiteout)
    });
    assert!(fx.t("lower/keep").exists());
    fx.check();
}

#[test]
fn h19_whiteout_with_empty_name_is_refused() {
    let fx = Fixture::new();
    let tar = RawTar::new().file("lower/.wh.", "").finish();
    assert_refused(fx.apply(&tar), b"lower/.wh.", |e| {
        matches!(e, EntryError::InvalidWhiteout)
    });
    fx.check();
}

#[test]
fn h20_whiteout_of_dot_is_refused() {
    let fx = Fixture::new();
    let tar = RawTar::new().file("lower/.wh..", "").finish();
    assert!(fx.apply(&tar).is_err());
    let tar = RawTar::new().file(".wh..", "").finish();
    assert_refused(fx.apply(&tar), b".wh..", |e| {
        matches!(e, EntryError::InvalidWhiteout)
    });
    let tar = RawTar::new().file("lower/.wh./x", "").finish();
    assert_refused(fx.apply(&tar), b"lower/.wh./x", |e| {
        matches!(e, EntryError::InvalidWhiteout)
    });
    assert!(fx.t("lower/keep").exists());
    fx.check();
}

#[test]
fn h21_whiteout_traversing_with_dotdot_is_refused() {
    let fx = Fixture::new();
    // `.wh.` + `../outside`: a naive prefix strip of the path would hide `../outside`.
    let tar = RawTar::new().file(".wh.../outside", "").finish();
    assert_refused(fx.apply(&tar), b".wh.../outside", |e| {
        matches!(e, EntryError::InvalidWhiteout)
    });
    let tar = RawTar::new().file("lower/.wh../../outside", "").finish();
    assert_refused(fx.apply(&tar), b"lower/.wh../../outside", |e| {
        matches!(e, EntryError::ParentDir)
    });
    fx.check();
}

#[test]
fn h22_whiteout_under_a_symlinked_parent_is_clamped() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .file("escape/.wh.canary", "")
        .file("escape/.wh.dir", "")
        .finish();
    fx.apply(&tar).unwrap();
    fx.check();
    let tar = RawTar::new().file("up/.wh.outside", "").finish();
    fx.apply(&tar).unwrap();
    fx.check();
}

#[test]
fn h23_whiteout_of_a_symlink_removes_the_link_not_its_target() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .file(".wh.escape", "")
        .file(".wh.escape_file", "")
        .finish();
    let report = fx.apply(&tar).unwrap();
    assert_eq!(report.counts.whiteouts, 2);
    assert!(fs::symlink_metadata(fx.t("escape")).is_err());
    assert!(fs::symlink_metadata(fx.t("escape_file")).is_err());
    fx.check();
}

#[test]
fn h24_opaque_under_a_symlink_to_outside_is_clamped() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .file("escape/.wh..wh..opq", "")
        .file("up/.wh..wh..opq", "")
        .finish();
    fx.apply(&tar).unwrap();
    fx.check();
}

#[test]
fn h25_opaque_root_removes_links_without_following_them() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .file(".wh..wh..opq", "")
        .file("new", "n")
        .finish();
    fx.apply(&tar).unwrap();
    let left: Vec<_> = fs::read_dir(&fx.target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["new"]);
    fx.check();
}

#[test]
fn h26_nul_in_pax_path_is_refused() {
    let fx = Fixture::new();
    let mut name = b"ok\0/../../".to_vec();
    name.extend_from_slice(fx.token.as_bytes());
    let tar = RawTar::new().file(&name, "evil").finish();
    assert_refused(fx.apply(&tar), &name, |e| {
        matches!(e, EntryError::NulInName)
    });
    fx.check();
}

#[test]
fn h27_nul_in_gnu_long_name_is_refused() {
    let fx = Fixture::new();
    let mut name = b"ok\0".to_vec();
    name.extend_from_slice(&[b'x'; 120]);
    let mut tar = RawTar::new();
    tar.gnu_long_name(&name);
    let tar = tar.raw(&Entry::new(rawtar::FILE, "short")).finish();
    assert_refused(fx.apply(&tar), &name, |e| {
        matches!(e, EntryError::NulInName)
    });
    fx.check();
}

#[test]
fn h28_nul_in_symlink_target_is_refused() {
    let fx = Fixture::new();
    let tar = RawTar::new().symlink("s", b"a\0b").finish();
    assert_refused(fx.apply(&tar), b"s", |e| matches!(e, EntryError::NulInName));
    fx.check();
}

#[test]
fn h29_over_long_component_is_refused() {
    let fx = Fixture::new();
    let name = "n".repeat(300);
    let tar = RawTar::new().file(&name, "x").finish();
    assert_refused(fx.apply(&tar), name.as_bytes(), |e| {
        matches!(e, EntryError::NameTooLong { len: 300, max: 255 })
    });
    fx.check();
}

#[test]
fn h30_over_long_path_is_refused() {
    let fx = Fixture::new();
    let name = "abcdefgh/".repeat(600);
    let tar = RawTar::new().file(&name, "x").finish();
    assert_refused(fx.apply(&tar), name.as_bytes(), |e| {
        matches!(e, EntryError::NameTooLong { max: 4095, .. })
    });
    fx.check();
}

#[test]
fn h31_huge_extended_header_is_refused_without_buffering_it() {
    let fx = Fixture::new();
    // A GNU long name claiming 64 GiB: refused at once, never read into memory.
    let mut e = Entry::new(b'L', "././@LongLink");
    e.data = vec![b'a'; 10];
    let mut tar = RawTar::new();
    tar.raw(&e);
    let mut bytes = tar.finish();
    // Patch the size field to 64 GiB (octal 1000000000000) and fix the checksum.
    bytes[124..136].copy_from_slice(b"1000000000000"[..12].as_ref());
    bytes[148..156].copy_from_slice(b"        ");
    let sum: u64 = bytes[..512].iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    bytes[148..156].copy_from_slice(s.as_bytes());
    match fx.apply(&bytes) {
        Err(ApplyError::Malformed {
            reason: molde_layerfs::apply::MalformedTar::ExtendedTooLarge { .. },
            ..
        }) => {}
        other => panic!("expected ExtendedTooLarge, got {other:?}"),
    }
    fx.check();
}

#[test]
fn h32_duplicate_entries_later_wins() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .file("dup", "first")
        .symlink("dup", fx.outside_bytes())
        .file("dup", "third")
        .finish();
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.t("dup")).unwrap(), b"third");
    fx.check();
}

#[test]
fn h33_directory_replaced_by_a_file_and_back() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .dir("d")
        .file("d/x", "x")
        .file("d", "now a file")
        .dir("d")
        .file("d/y", "y")
        .finish();
    fx.apply(&tar).unwrap();
    assert!(fx.t("d").is_dir());
    assert!(!fx.t("d/x").exists());
    assert_eq!(fs::read(fx.t("d/y")).unwrap(), b"y");
    fx.check();
}

#[test]
fn h34_directory_replaced_by_a_symlink_then_written_through() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .dir("d")
        .file("d/x", "x")
        .symlink("d", fx.outside_bytes())
        .file("d/canary", "pwned")
        .finish();
    fx.apply(&tar).unwrap();
    // The parent cache must not keep writing into the removed directory, nor outside.
    let inside = fx.target.join(fx.outside.strip_prefix("/").unwrap());
    assert_eq!(fs::read(inside.join("canary")).unwrap(), b"pwned");
    fx.check();
}

#[test]
fn h35_root_entry_that_is_not_a_directory_is_refused() {
    let fx = Fixture::new();
    for name in ["./", "/", "."] {
        let tar = RawTar::new().symlink(name, fx.outside_bytes()).finish();
        assert_refused(fx.apply(&tar), name.as_bytes(), |e| {
            matches!(e, EntryError::ReplacesRoot)
        });
    }
    // A regular entry named "." (no trailing slash, so not an old-style directory).
    let tar = RawTar::new().file(".", "x").finish();
    assert_refused(fx.apply(&tar), b".", |e| {
        matches!(e, EntryError::ReplacesRoot)
    });
    assert!(fx.target.is_dir());
    fx.check();
}

#[test]
fn h36_symlink_loop_as_parent_fails_typed() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .symlink("l1", "l2")
        .symlink("l2", "l1")
        .file("l1/x", "x")
        .finish();
    assert_refused(fx.apply(&tar), b"l1/x", |e| is_io(e, libc::ELOOP));
    fx.check();
}

#[test]
fn h37_unsupported_and_sparse_types_are_refused() {
    let fx = Fixture::new();
    let tar = RawTar::new().raw(&Entry::new(b'V', "volume")).finish();
    assert_refused(fx.apply(&tar), b"volume", |e| {
        matches!(e, EntryError::UnsupportedType { kind: b'V' })
    });
    let tar = RawTar::new().raw(&Entry::new(b'S', "sparse")).finish();
    assert_refused(fx.apply(&tar), b"sparse", |e| {
        matches!(e, EntryError::Sparse)
    });
    let mut e = Entry::new(rawtar::FILE, "paxsparse");
    e.pax = vec![(b"GNU.sparse.major".to_vec(), b"1".to_vec())];
    let tar = RawTar::new().entry(&e).finish();
    assert_refused(fx.apply(&tar), b"paxsparse", |e| {
        matches!(e, EntryError::Sparse)
    });
    fx.check();
}

#[test]
fn h38_overlay_xattrs_from_the_layer_are_never_set() {
    let fx = Fixture::new();
    let mut e = Entry::new(rawtar::DIR, "forged");
    e.pax = vec![
        (
            b"SCHILY.xattr.trusted.overlay.opaque".to_vec(),
            b"y".to_vec(),
        ),
        (
            b"SCHILY.xattr.trusted.overlay.redirect".to_vec(),
            b"/etc".to_vec(),
        ),
        (b"SCHILY.xattr.user.overlay.opaque".to_vec(), b"y".to_vec()),
    ];
    let tar = RawTar::new().entry(&e).finish();
    let report = fx.apply_overlay(&tar).unwrap();
    // Unprivileged, root's ownership is skipped too (and reported): that aside.
    let xattrs = report
        .skipped
        .iter()
        .filter(|s| matches!(s.reason, SkipReason::Xattr { .. }))
        .count();
    assert_eq!(xattrs, 3);
    for name in [
        "trusted.overlay.opaque",
        "trusted.overlay.redirect",
        "user.overlay.opaque",
    ] {
        assert_eq!(xattr::get(fx.t("forged"), name).unwrap(), None, "{name}");
    }
    fx.check();
}

#[test]
fn h39_overlay_whiteout_through_symlinked_parent_stays_inside() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .file("escape/.wh.canary", "")
        .file("escape/.wh..wh..opq", "")
        .finish();
    fx.apply_overlay(&tar).unwrap();
    let inside = fx.target.join(fx.outside.strip_prefix("/").unwrap());
    let m = fs::symlink_metadata(inside.join("canary")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    fx.check();
}

#[test]
fn h40_truncated_and_garbage_streams_fail_typed() {
    let fx = Fixture::new();
    let full = RawTar::new().file("big", vec![7u8; 5000]).finish();
    match fx.apply(&full[..2048]) {
        Err(ApplyError::Malformed {
            reason: molde_layerfs::apply::MalformedTar::Truncated,
            ..
        }) => {}
        other => panic!("expected Truncated, got {other:?}"),
    }
    let garbage = vec![0x41u8; 4096];
    assert!(matches!(
        fx.apply(&garbage),
        Err(ApplyError::Malformed {
            reason: molde_layerfs::apply::MalformedTar::Checksum,
            ..
        })
    ));
    // gzip magic, then nonsense: the decompressor fails.
    let mut bad_gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    bad_gzip.extend_from_slice(&[0xff; 100]);
    assert!(matches!(fx.apply(&bad_gzip), Err(ApplyError::Read(_))));
    fx.check();
}

#[test]
fn h41_hardlink_via_pax_linkpath_with_dotdot_is_refused() {
    let fx = Fixture::new();
    let mut link = b"x/".repeat(60);
    link.extend_from_slice(b"../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../outside/canary");
    let tar = RawTar::new().hardlink("h", &link).finish();
    assert_refused(fx.apply(&tar), b"h", |e| {
        matches!(e, EntryError::LinkEscapes { .. })
    });
    fx.check();
}

#[test]
fn h42_dangling_absolute_symlink_parent_creates_inside() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .symlink("dl", format!("/tmp/{}/deep", fx.token))
        .file("dl/f", "x")
        .finish();
    fx.apply(&tar).unwrap();
    assert!(fx.t(&format!("tmp/{}/deep/f", fx.token)).is_file());
    fx.check();
}

#[test]
fn h43_device_nodes_are_only_made_inside_and_only_when_allowed() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .char_dev("escape/null", 1, 3)
        .char_dev("nul", 1, 3)
        .finish();
    let opts = molde_layerfs::apply::ApplyOptions {
        devices: molde_layerfs::apply::DeviceNodes::Skip,
        ..molde_layerfs::apply::ApplyOptions::for_current_process(molde_layerfs::Format::Flat)
    };
    let report = molde_layerfs::apply::apply(&tar[..], &fx.target, &opts).unwrap();
    assert_eq!(report.skipped_total, 2);
    assert!(fs::symlink_metadata(fx.t("nul")).is_err());
    fx.check();
}

#[test]
fn h44_setuid_file_over_a_symlink_to_the_canary() {
    let fx = Fixture::new();
    let mut e = Entry::new(rawtar::FILE, "escape_file");
    e.mode = 0o4755;
    e.data = b"#!/bin/sh\n".to_vec();
    let tar = RawTar::new().entry(&e).finish();
    fx.apply(&tar).unwrap();
    let m = fs::symlink_metadata(fx.t("escape_file")).unwrap();
    assert!(m.is_file());
    assert_eq!(m.mode() & 0o7777, 0o4755);
    fx.check();
}

#[test]
fn h45_walk_fallback_is_just_as_safe() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .symlink("s", "../../..")
        .file(format!("s/tmp/{}", fx.token), "pwned")
        .file("escape/canary", "pwned")
        .hardlink("h", "escape/canary")
        .finish();
    let root = molde_layerfs::secure::Root::open_walk_only(&fx.target).unwrap();
    let opts = molde_layerfs::apply::ApplyOptions::for_current_process(molde_layerfs::Format::Flat);
    molde_layerfs::apply::apply_in(&tar[..], &root, &opts).unwrap();
    // The hardlink resolved inside too: it is the clamped file.
    let inside = fx.target.join(fx.outside.strip_prefix("/").unwrap());
    let a = fs::metadata(inside.join("canary")).unwrap();
    let b = fs::metadata(fx.t("h")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    fx.check();
}

#[test]
fn h46_compressed_hostile_layer_is_just_as_safe() {
    let fx = Fixture::new();
    let tar = RawTar::new()
        .symlink("s", fx.outside_bytes())
        .file("s/canary", "pwned")
        .file(format!("../{}", fx.token), "evil")
        .finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert_refused(fx.apply(&gz), format!("../{}", fx.token).as_bytes(), |e| {
        matches!(e, EntryError::ParentDir)
    });
    let zs = zstd::encode_all(&tar[..], 3).unwrap();
    assert!(fx.apply(&zs).is_err());
    fx.check();
}

#[test]
fn h47_refused_entry_message_names_entry_and_reason() {
    let fx = Fixture::new();
    let tar = RawTar::new().file("../x", "e").finish();
    let err = fx.apply(&tar).unwrap_err();
    let mut chain = format!("{err}");
    let mut src = std::error::Error::source(&err);
    while let Some(s) = src {
        chain.push_str(&format!(": {s}"));
        src = s.source();
    }
    assert!(chain.contains("\"../x\""), "{chain}");
    assert!(chain.contains(".."), "{chain}");
    fx.check();
}

#[test]
fn h48_target_itself_a_symlink_name_in_absolute_form() {
    // Absolute names that go through `escape` (a link out) must be clamped like relative ones.
    let fx = Fixture::new();
    let tar = RawTar::new()
        .file("/escape/canary", "pwned")
        .dir("/escape/dir")
        .finish();
    fx.apply(&tar).unwrap();
    let inside = fx.target.join(fx.outside.strip_prefix("/").unwrap());
    assert_eq!(fs::read(inside.join("canary")).unwrap(), b"pwned");
    fx.check();
}

#[test]
fn h49_file_over_a_hardlink_to_the_canary_is_replaced_not_written_through() {
    let fx = Fixture::new();
    // A target file that shares its inode with the canary (same filesystem).
    fs::hard_link(fx.outside.join("canary"), fx.t("hl")).unwrap();
    fs::hard_link(fx.outside.join("canary"), fx.t("hl2")).unwrap();
    let mut e = Entry::new(rawtar::FILE, "hl");
    e.mode = 0o4777;
    e.uid = 4242;
    e.data = b"pwned".to_vec();
    let tar = RawTar::new().entry(&e).file(".wh.hl2", "").finish();
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.t("hl")).unwrap(), b"pwned");
    assert!(fs::symlink_metadata(fx.t("hl2")).is_err());
    // The canary kept its content, mode and owner; its link count is back to one.
    fx.check();
}
