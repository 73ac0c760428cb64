//! Performing mounts described as data: kernel overlayfs through the new mount API and through
//! `mount(2)`, read-only unions, 500 layers, over-long and odd paths, bind mounts, typed errors,
//! and `userxattr` inside a user namespace.

mod common;
mod mount_support;

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use molde_layerfs::OverlayXattr;
use molde_layerfs::mount::{
    MAX_OVERLAY_LAYERS, Mount, MountApi, MountError, MountStage, OverlayMount, overlay_supported,
    unmount,
};
use mount_support::{LayerDir, MountGuard, is_mounted, mounts_under, names};
use nix::errno::Errno;

const APIS: [MountApi; 2] = [MountApi::New, MountApi::Legacy];

fn can_mount() -> bool {
    common::require(common::privileged(), "needs root to mount")
        && common::require(overlay_supported(), "needs kernel overlayfs")
}

/// A two-layer stack in overlay format (trusted xattrs): whiteouts, an opaque dir, overrides.
fn two_layers(base: &Path, xattr: OverlayXattr) -> Vec<PathBuf> {
    let bottom = LayerDir::new(base.join("bottom"), xattr);
    bottom
        .file("etc/hostname", b"bottom\n", 0o644)
        .file("etc/gone", b"deleted above\n", 0o644)
        .file("opaque/old", b"hidden by opaque\n", 0o644)
        .file("bin/tool", b"#!/bin/sh\n", 0o4755)
        .symlink("bin/link", "tool")
        .file("only-bottom", b"bottom only", 0o600);
    let top = LayerDir::new(base.join("top"), xattr);
    top.file("etc/hostname", b"top\n", 0o644)
        .whiteout("etc/gone")
        .opaque("opaque")
        .file("opaque/new", b"new\n", 0o644)
        .file("only-top", b"top only", 0o640);
    vec![top.root.clone(), bottom.root.clone()]
}

fn check_two_layer_view(merged: &Path) {
    assert_eq!(fs::read(merged.join("etc/hostname")).unwrap(), b"top\n");
    assert_eq!(
        fs::symlink_metadata(merged.join("etc/gone"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound,
        "whiteout must hide etc/gone"
    );
    assert_eq!(names(&merged.join("etc")), ["hostname"]);
    assert_eq!(
        names(&merged.join("opaque")),
        ["new"],
        "opaque dir hides lower entries"
    );
    assert_eq!(
        fs::read(merged.join("only-bottom")).unwrap(),
        b"bottom only"
    );
    assert_eq!(fs::read(merged.join("only-top")).unwrap(), b"top only");
    let tool = fs::metadata(merged.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid bit shows through");
    assert_eq!(
        fs::read_link(merged.join("bin/link")).unwrap(),
        Path::new("tool")
    );
}

fn writable(base: &Path, lowers: Vec<PathBuf>, xattr: OverlayXattr) -> OverlayMount {
    fs::create_dir_all(base.join("upper")).unwrap();
    fs::create_dir_all(base.join("work")).unwrap();
    OverlayMount {
        lowerdirs: lowers,
        upperdir: Some(base.join("upper")),
        workdir: Some(base.join("work")),
        userxattr: xattr == OverlayXattr::User,
        volatile: false,
    }
}

#[test]
fn overlay_shows_merged_view_and_writes_to_upper() {
    if !can_mount() {
        return;
    }
    for api in APIS {
        let tmp = tempfile::tempdir().unwrap();
        let lowers = two_layers(tmp.path(), OverlayXattr::Trusted);
        let mount = Mount::Overlay(writable(tmp.path(), lowers, OverlayXattr::Trusted));
        let merged = tmp.path().join("merged");
        fs::create_dir(&merged).unwrap();
        mount.mount_at_using(&merged, api).unwrap();
        let guard = MountGuard::new(&merged);
        assert!(is_mounted(&merged), "{api:?}: mounted");
        check_two_layer_view(&merged);

        fs::write(merged.join("new-file"), b"written").unwrap();
        fs::remove_file(merged.join("only-bottom")).unwrap();
        fs::write(merged.join("etc/hostname"), b"changed\n").unwrap();
        let upper = tmp.path().join("upper");
        assert_eq!(fs::read(upper.join("new-file")).unwrap(), b"written");
        assert_eq!(fs::read(upper.join("etc/hostname")).unwrap(), b"changed\n");
        let wh = fs::symlink_metadata(upper.join("only-bottom")).unwrap();
        assert!(
            wh.file_type().is_char_device() && wh.rdev() == 0,
            "{api:?}: whiteout in upper"
        );
        assert_eq!(
            fs::read(tmp.path().join("bottom/etc/hostname")).unwrap(),
            b"bottom\n"
        );
        guard.unmount();
        assert!(!is_mounted(&merged));
    }
}

#[test]
fn read_only_union_without_upper() {
    if !can_mount() {
        return;
    }
    for api in APIS {
        let tmp = tempfile::tempdir().unwrap();
        let lowers = two_layers(tmp.path(), OverlayXattr::Trusted);
        let mount = Mount::Overlay(OverlayMount {
            lowerdirs: lowers,
            upperdir: None,
            workdir: None,
            userxattr: false,
            volatile: false,
        });
        let merged = tmp.path().join("merged");
        fs::create_dir(&merged).unwrap();
        mount.mount_at_using(&merged, api).unwrap();
        let _guard = MountGuard::new(&merged);
        check_two_layer_view(&merged);
        let err = fs::write(merged.join("x"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{api:?}: {err}");
        let err = fs::remove_file(merged.join("only-top")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{api:?}: {err}");
    }
}

#[test]
fn single_lower_read_only_hides_its_whiteouts() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let only = LayerDir::new(tmp.path().join("only"), OverlayXattr::Trusted);
    only.file("a", b"a", 0o644).whiteout("gone");
    for api in APIS {
        let merged = tmp.path().join(format!("merged-{api:?}"));
        fs::create_dir(&merged).unwrap();
        Mount::Overlay(OverlayMount {
            lowerdirs: vec![only.root.clone()],
            upperdir: None,
            workdir: None,
            userxattr: false,
            volatile: false,
        })
        .mount_at_using(&merged, api)
        .unwrap();
        let _guard = MountGuard::new(&merged);
        assert_eq!(names(&merged), ["a"], "{api:?}");
        assert_eq!(fs::read(merged.join("a")).unwrap(), b"a");
        let err = fs::write(merged.join("b"), b"b").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{api:?}: {err}");
    }
}

#[test]
fn single_lower_read_only_needs_an_empty_target() {
    let tmp = tempfile::tempdir().unwrap();
    let only = LayerDir::new(tmp.path().join("only"), OverlayXattr::Trusted);
    only.file("a", b"a", 0o644);
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("stray"), b"x").unwrap();
    let err = Mount::Overlay(OverlayMount {
        lowerdirs: vec![only.root.clone()],
        upperdir: None,
        workdir: None,
        userxattr: false,
        volatile: false,
    })
    .mount_at(&target)
    .unwrap_err();
    assert!(matches!(err, MountError::InvalidOverlay { .. }), "{err}");
    assert!(!is_mounted(&target));
}

/// 500 tiny layers under a long directory name, so the absolute paths alone (over 40 KB) could
/// never fit in a page: the legacy path must use fd-relative names.
fn five_hundred_layers(base: &Path) -> Vec<PathBuf> {
    let parent = base.join("a-rather-long-directory-name-for-the-layers-of-this-image");
    let mut lowers = Vec::with_capacity(MAX_OVERLAY_LAYERS);
    for i in 0..MAX_OVERLAY_LAYERS {
        let layer = LayerDir::new(parent.join(format!("layer-{i:04}")), OverlayXattr::Trusted);
        layer.file(&format!("files/f{i:04}"), format!("{i}").as_bytes(), 0o644);
        layer.file("shadowed", format!("layer {i}").as_bytes(), 0o644);
        lowers.push(layer.root);
    }
    lowers.reverse(); // topmost first: layer-0499 is on top
    lowers
}

#[test]
fn five_hundred_layers_mount_through_both_apis() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = five_hundred_layers(tmp.path());
    let joined: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(joined > 4096 * 4, "the paths alone exceed a page: {joined}");
    for api in APIS {
        for writable_mount in [false, true] {
            let name = format!("{api:?}-{writable_mount}");
            let mut overlay = OverlayMount {
                lowerdirs: lowers.clone(),
                upperdir: None,
                workdir: None,
                userxattr: false,
                volatile: false,
            };
            if writable_mount {
                overlay = writable(
                    &tmp.path().join(&name),
                    lowers.clone(),
                    OverlayXattr::Trusted,
                );
            }
            let merged = tmp.path().join(format!("merged-{name}"));
            fs::create_dir(&merged).unwrap();
            let start = Instant::now();
            Mount::Overlay(overlay)
                .mount_at_using(&merged, api)
                .unwrap();
            let took = start.elapsed();
            let guard = MountGuard::new(&merged);
            eprintln!("500-layer overlay mount via {api:?} (writable: {writable_mount}): {took:?}");
            assert_eq!(
                fs::read(merged.join("files/f0000")).unwrap(),
                b"0",
                "bottom layer"
            );
            assert_eq!(
                fs::read(merged.join("files/f0499")).unwrap(),
                b"499",
                "top layer"
            );
            assert_eq!(fs::read(merged.join("shadowed")).unwrap(), b"layer 499");
            assert_eq!(names(&merged.join("files")).len(), MAX_OVERLAY_LAYERS);
            if writable_mount {
                fs::write(merged.join("shadowed"), b"upper").unwrap();
                let upper = tmp.path().join(&name).join("upper/shadowed");
                assert_eq!(fs::read(upper).unwrap(), b"upper");
            }
            guard.unmount();
        }
    }
}

/// Perform `prepared` in a forked child, as a container launcher does after `clone`: same
/// descriptor numbers, same mount namespace. The child exits 0 on success, 2 if the mount
/// failed, 3 if its working directory changed.
fn perform_in_child(prepared: &molde_layerfs::mount::PreparedMount) -> i32 {
    // SAFETY: the child only makes syscalls on memory prepared before the fork (perform
    // allocates nothing; getcwd writes stack buffers) and leaves with _exit.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => unsafe {
            let mut before = [0u8; 4096];
            let mut after = [0u8; 4096];
            libc::getcwd(before.as_mut_ptr().cast(), before.len());
            if prepared.perform().is_err() {
                libc::_exit(2);
            }
            libc::getcwd(after.as_mut_ptr().cast(), after.len());
            libc::_exit(if before == after { 0 } else { 3 })
        },
        nix::unistd::ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).unwrap() {
                nix::sys::wait::WaitStatus::Exited(_, code) => code,
                other => panic!("child: {other:?}"),
            }
        }
    }
}

#[test]
fn five_hundred_layers_prepared_for_a_child_through_both_apis() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = five_hundred_layers(tmp.path());
    for api in [MountApi::Auto, MountApi::Legacy] {
        for writable_mount in [false, true] {
            let name = format!("prepared-{api:?}-{writable_mount}");
            let overlay = if writable_mount {
                writable(
                    &tmp.path().join(&name),
                    lowers.clone(),
                    OverlayXattr::Trusted,
                )
            } else {
                OverlayMount {
                    lowerdirs: lowers.clone(),
                    upperdir: None,
                    workdir: None,
                    userxattr: false,
                    volatile: false,
                }
            };
            let merged = tmp.path().join(format!("merged-{name}"));
            fs::create_dir(&merged).unwrap();
            let prepared = Mount::Overlay(overlay).prepare_using(&merged, api).unwrap();
            assert_eq!(perform_in_child(&prepared), 0, "{name}");
            drop(prepared);
            let guard = MountGuard::new(&merged);
            assert_eq!(fs::read(merged.join("files/f0000")).unwrap(), b"0");
            assert_eq!(fs::read(merged.join("files/f0499")).unwrap(), b"499");
            assert_eq!(fs::read(merged.join("shadowed")).unwrap(), b"layer 499");
            assert_eq!(names(&merged.join("files")).len(), MAX_OVERLAY_LAYERS);
            if writable_mount {
                fs::write(merged.join("shadowed"), b"upper").unwrap();
                let upper = tmp.path().join(&name).join("upper/shadowed");
                assert_eq!(fs::read(upper).unwrap(), b"upper");
            }
            guard.unmount();
        }
    }
}

#[test]
fn more_than_five_hundred_layers_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let lowers = vec![tmp.path().to_path_buf(); MAX_OVERLAY_LAYERS + 1];
    let err = Mount::Overlay(OverlayMount {
        lowerdirs: lowers,
        upperdir: None,
        workdir: None,
        userxattr: false,
        volatile: false,
    })
    .mount_at(tmp.path())
    .unwrap_err();
    assert!(matches!(err, MountError::InvalidOverlay { .. }), "{err}");
    assert!(err.to_string().contains("501"), "{err}");
}

/// Paths longer than fsconfig's 255-byte string limit, and paths with the characters overlayfs
/// treats specially in options (`:`, `,`, `\`).
#[test]
fn long_and_odd_paths_mount() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let deep: PathBuf = (0..6).map(|i| format!("{i}-{}", "d".repeat(60))).collect();
    let long_base = tmp.path().join(deep);
    let odd_base = tmp.path().join(r"odd:dir,with\backslash");
    for (label, base) in [("long", long_base), ("odd", odd_base)] {
        for api in APIS {
            let dir = base.join(format!("{api:?}"));
            let lowers = two_layers(&dir, OverlayXattr::Trusted);
            assert!(label != "long" || lowers[0].as_os_str().len() > 255);
            let mount = Mount::Overlay(writable(&dir, lowers, OverlayXattr::Trusted));
            let merged = dir.join("merged");
            fs::create_dir(&merged).unwrap();
            mount
                .mount_at_using(&merged, api)
                .unwrap_or_else(|e| panic!("{label} paths via {api:?}: {e}"));
            let guard = MountGuard::new(&merged);
            check_two_layer_view(&merged);
            fs::write(merged.join("w"), b"w").unwrap();
            assert_eq!(
                fs::read(dir.join("upper/w")).unwrap(),
                b"w",
                "{label} {api:?}"
            );
            guard.unmount();
        }
    }
}

/// The options that keep the upper diffable are in force: a lower directory cannot be renamed
/// into a redirect (EXDEV: userspace copies instead), and a metadata-only change copies the data
/// up too (no metacopy).
#[test]
fn upper_stays_diffable() {
    if !can_mount() {
        return;
    }
    for api in APIS {
        let tmp = tempfile::tempdir().unwrap();
        let lowers = two_layers(tmp.path(), OverlayXattr::Trusted);
        let merged = tmp.path().join("merged");
        fs::create_dir(&merged).unwrap();
        Mount::Overlay(writable(tmp.path(), lowers, OverlayXattr::Trusted))
            .mount_at_using(&merged, api)
            .unwrap();
        let guard = MountGuard::new(&merged);
        let err = fs::rename(merged.join("etc"), merged.join("etc2")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{api:?}: {err}");
        fs::set_permissions(
            merged.join("only-bottom"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let upper = tmp.path().join("upper");
        assert_eq!(fs::read(upper.join("only-bottom")).unwrap(), b"bottom only");
        for name in ["trusted.overlay.metacopy", "trusted.overlay.redirect"] {
            assert_eq!(
                xattr::get(upper.join("only-bottom"), name).unwrap(),
                None,
                "{name}"
            );
        }
        guard.unmount();
    }
}

#[test]
fn volatile_writable_mount() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = two_layers(tmp.path(), OverlayXattr::Trusted);
    let mut overlay = writable(tmp.path(), lowers, OverlayXattr::Trusted);
    overlay.volatile = true;
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    Mount::Overlay(overlay).mount_at(&merged).unwrap();
    let guard = MountGuard::new(&merged);
    fs::write(merged.join("v"), b"v").unwrap();
    assert_eq!(fs::read(tmp.path().join("upper/v")).unwrap(), b"v");
    assert!(
        tmp.path().join("work/work/incompat/volatile").exists()
            || tmp.path().join("work/incompat/volatile").exists()
    );
    guard.unmount();
}

#[test]
fn errors_name_the_target_and_stage_and_leave_no_mount() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = two_layers(tmp.path(), OverlayXattr::Trusted);

    // A lower that does not exist: refused before any syscall, naming the path.
    let mut missing = lowers.clone();
    missing.push(tmp.path().join("no-such-layer"));
    let target = tmp.path().join("merged");
    fs::create_dir(&target).unwrap();
    let err = Mount::Overlay(OverlayMount {
        lowerdirs: missing,
        upperdir: None,
        workdir: None,
        userxattr: false,
        volatile: false,
    })
    .mount_at(&target)
    .unwrap_err();
    match &err {
        MountError::Path { path, source, .. } => {
            assert!(path.ends_with("no-such-layer"));
            assert_eq!(source.kind(), ErrorKind::NotFound);
        }
        other => panic!("expected a path error, got {other}"),
    }

    // A target that does not exist: the kernel's error, with the stage and the target.
    let nowhere = tmp.path().join("no-such-target");
    for (api, stage) in [
        (MountApi::New, MountStage::MoveMount),
        (MountApi::Legacy, MountStage::Mount),
    ] {
        let err = Mount::Overlay(writable(tmp.path(), lowers.clone(), OverlayXattr::Trusted))
            .mount_at_using(&nowhere, api)
            .unwrap_err();
        match &err {
            MountError::Syscall {
                target,
                stage: got,
                errno,
                ..
            } => {
                assert_eq!(target, &nowhere);
                assert_eq!(got, &stage, "{api:?}");
                assert_eq!(*errno, Errno::ENOENT);
            }
            other => panic!("expected a syscall error, got {other}"),
        }
        assert!(err.to_string().contains("no-such-target"), "{err}");
    }

    // The kernel refuses the configuration (workdir on another filesystem than upperdir is
    // hard to arrange; a workdir inside the upperdir is refused too): fsconfig/create error
    // with the kernel's own message.
    let upper = tmp.path().join("upper2");
    fs::create_dir_all(upper.join("work")).unwrap();
    let err = Mount::Overlay(OverlayMount {
        lowerdirs: lowers.clone(),
        upperdir: Some(upper.clone()),
        workdir: Some(upper.join("work")),
        userxattr: false,
        volatile: false,
    })
    .mount_at_using(&target, MountApi::New)
    .unwrap_err();
    match &err {
        MountError::Syscall {
            stage,
            errno,
            kernel_message,
            ..
        } => {
            assert!(
                matches!(stage, MountStage::Create | MountStage::Fsconfig { .. }),
                "{err}"
            );
            assert_eq!(*errno, Errno::EINVAL, "{err}");
            // overlayfs reports this one to the kernel log (dmesg), not to the fs context.
            let _ = kernel_message;
        }
        other => panic!("expected a syscall error, got {other}"),
    }

    // Upper without work: refused up front.
    let err = Mount::Overlay(OverlayMount {
        lowerdirs: lowers,
        upperdir: Some(upper),
        workdir: None,
        userxattr: false,
        volatile: false,
    })
    .mount_at(&target)
    .unwrap_err();
    assert!(matches!(err, MountError::InvalidOverlay { .. }), "{err}");

    // (Compared under this test's own directory: other tests mount in parallel.)
    assert_eq!(
        mounts_under(tmp.path()),
        Vec::<PathBuf>::new(),
        "no mount left by a failure"
    );
}

#[test]
fn unmount_of_a_non_mount_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = unmount(tmp.path()).unwrap_err();
    match &err {
        MountError::Unmount { target, errno } => {
            assert_eq!(target, tmp.path());
            assert!(matches!(*errno, Errno::EINVAL | Errno::EPERM), "{errno}");
        }
        other => panic!("expected an unmount error, got {other}"),
    }
    assert!(err.to_string().contains(&tmp.path().display().to_string()));
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    if !common::require(common::privileged(), "needs root to mount") {
        return;
    }
    for api in APIS {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("source");
        fs::create_dir(&source).unwrap();
        fs::write(source.join("f"), b"f").unwrap();
        let rw = tmp.path().join("rw");
        let ro = tmp.path().join("ro");
        fs::create_dir(&rw).unwrap();
        fs::create_dir(&ro).unwrap();

        Mount::Bind {
            source: source.clone(),
            read_only: false,
        }
        .mount_at_using(&rw, api)
        .unwrap();
        let rw_guard = MountGuard::new(&rw);
        fs::write(rw.join("g"), b"g").unwrap();
        assert_eq!(fs::read(source.join("g")).unwrap(), b"g", "{api:?}");

        Mount::Bind {
            source: source.clone(),
            read_only: true,
        }
        .mount_at_using(&ro, api)
        .unwrap();
        let ro_guard = MountGuard::new(&ro);
        assert_eq!(fs::read(ro.join("f")).unwrap(), b"f");
        let err = fs::write(ro.join("h"), b"h").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{api:?}: {err}");
        // The source itself stays writable.
        fs::write(source.join("h"), b"h").unwrap();
        ro_guard.unmount();
        rw_guard.unmount();
    }
}

#[test]
fn bind_of_a_missing_source_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Mount::Bind {
        source: tmp.path().join("nope"),
        read_only: true,
    }
    .mount_at(tmp.path())
    .unwrap_err();
    assert!(
        matches!(&err, MountError::Path { path, .. } if path.ends_with("nope")),
        "{err}"
    );
}

#[test]
fn overlay_is_supported_here_as_root() {
    if !common::require(common::privileged(), "needs root") {
        return;
    }
    assert!(overlay_supported(), "this machine has overlayfs");
    // The probe (fsopen) loads the module if needed; the kernel then lists it.
    let listed = fs::read_to_string("/proc/filesystems").unwrap();
    assert!(listed.lines().any(|l| l.ends_with("\toverlay")), "{listed}");
}

const USERNS_ENV: &str = "MOLDE_TEST_USERNS_DIR";

/// A userxattr overlay mounts inside a user namespace (entered with `unshare -Urm` by running
/// this test binary's `userns_child` there), and honours a whiteout and a `user.overlay.opaque`
/// directory; its own changes come out as a char 0/0 whiteout and a `user.overlay.opaque` xattr.
#[test]
fn userxattr_overlay_in_user_namespace() {
    if !common::require(common::have_tool("unshare"), "needs unshare(1)")
        || !common::require(common::privileged(), "needs root to make whiteout devices")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lowers = two_layers(tmp.path(), OverlayXattr::User);
    assert_eq!(
        xattr::get(lowers[0].join("opaque"), "trusted.overlay.opaque").unwrap(),
        None
    );
    fs::create_dir(tmp.path().join("merged")).unwrap();
    for api in ["New", "Legacy"] {
        let base = tmp.path().join(api);
        fs::create_dir_all(base.join("upper")).unwrap();
        fs::create_dir_all(base.join("work")).unwrap();
    }
    let output = std::process::Command::new("unshare")
        .arg("-Urm")
        .arg(std::env::current_exe().unwrap())
        .args([
            "userns_child",
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
        stdout.contains("1 passed"),
        "the child test ran:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("userns child: checked New and Legacy"),
        "{stderr}"
    );
    assert!(
        !is_mounted(&tmp.path().join("merged")),
        "the namespace's mounts died with it"
    );

    for api in ["New", "Legacy"] {
        let upper = tmp.path().join(api).join("upper");
        let wh = fs::symlink_metadata(upper.join("only-bottom")).unwrap();
        assert!(
            wh.file_type().is_char_device() && wh.rdev() == 0,
            "{api}: whiteout 0/0"
        );
        assert_eq!(
            xattr::get(upper.join("opaque"), "user.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..]),
            "{api}: recreated dir is opaque in the user namespace's xattr"
        );
        assert_eq!(
            xattr::get(upper.join("opaque"), "trusted.overlay.opaque").unwrap(),
            None
        );
    }
}

/// Runs inside the user namespace for [`userxattr_overlay_in_user_namespace`]; does nothing
/// (and says so) when run any other way.
#[test]
#[ignore = "helper: run inside a user namespace by userxattr_overlay_in_user_namespace"]
fn userns_child() {
    let base = std::env::var_os(USERNS_ENV).map(PathBuf::from).expect(
        "a helper: started by userxattr_overlay_in_user_namespace, which sets its environment",
    );
    assert!(
        !molde_layerfs::privilege::in_initial_user_namespace(),
        "must run in a user namespace"
    );
    assert_eq!(OverlayXattr::for_current_process(), OverlayXattr::User);
    let lowers = vec![base.join("top"), base.join("bottom")];
    let merged = base.join("merged");
    for (name, api) in [("New", MountApi::New), ("Legacy", MountApi::Legacy)] {
        let overlay = OverlayMount {
            lowerdirs: lowers.clone(),
            upperdir: Some(base.join(name).join("upper")),
            workdir: Some(base.join(name).join("work")),
            userxattr: true,
            volatile: false,
        };
        Mount::Overlay(overlay)
            .mount_at_using(&merged, api)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let guard = MountGuard::new(&merged);
        check_two_layer_view(&merged);
        // Changes: delete a lower file (whiteout), replace the opaque dir with a new one.
        fs::remove_file(merged.join("only-bottom")).unwrap();
        fs::remove_file(merged.join("opaque/new")).unwrap();
        fs::remove_dir(merged.join("opaque")).unwrap();
        fs::create_dir(merged.join("opaque")).unwrap();
        assert!(names(&merged.join("opaque")).is_empty());
        guard.unmount();
    }
    eprintln!("userns child: checked New and Legacy");
}

const EPERM_ENV: &str = "MOLDE_TEST_EPERM_CHILD";

/// Without the privilege to mount, the error says so and what to do; the new API's refusal
/// falls back to mount(2), which refuses too (run as `nobody` through setpriv(1)).
#[test]
fn unprivileged_mount_error_says_what_to_do() {
    if !common::require(common::have_tool("setpriv"), "needs setpriv(1)")
        || !common::require(common::privileged(), "needs root to drop to nobody")
    {
        return;
    }
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            "eperm_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(EPERM_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("eperm child: checked"),
        "{stdout}\n{stderr}"
    );
}

/// Runs as `nobody` for [`unprivileged_mount_error_says_what_to_do`]; does nothing (and says
/// so) when run any other way.
#[test]
#[ignore = "helper: run unprivileged by unprivileged_mount_error_says_what_to_do"]
fn eperm_child() {
    assert!(
        std::env::var_os(EPERM_ENV).is_some(),
        "a helper: started by unprivileged_mount_error_says_what_to_do, which sets its environment"
    );
    assert!(!overlay_supported(), "nobody cannot mount overlay");
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, target) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("t"),
    );
    for dir in [&a, &b, &target] {
        fs::create_dir(dir).unwrap();
    }
    let overlay = Mount::Overlay(OverlayMount {
        lowerdirs: vec![a.clone(), b],
        upperdir: None,
        workdir: None,
        userxattr: false,
        volatile: false,
    });
    let bind = Mount::Bind {
        source: a,
        read_only: true,
    };
    for mount in [overlay, bind] {
        let err = mount.mount_at(&target).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EPERM), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("CAP_SYS_ADMIN") && message.contains("unshare"),
            "{message}"
        );
        assert!(message.contains(&target.display().to_string()), "{message}");
    }
    eprintln!("eperm child: checked");
}
