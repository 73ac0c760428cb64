//! Which snapshot backend a new container's writable layer uses.
//!
//! As root: layerfs' [`default_backend`] (kernel overlayfs where the host can mount it). Not
//! root: the host cannot mount overlay, but the container's own user namespace can, with
//! `userxattr` (the store's layers, unpacked by this user, carry `user.overlay.opaque` and
//! char 0/0 whiteouts): the overlay backend, mounted by the launcher inside the container's
//! mount namespace. Whether that works (kernel, filesystem of the store) is probed once per
//! process by launching a real container over a throwaway overlay; where it does not, the copy
//! backend (a copy of the image per container) is the fallback.

use std::path::Path;
use std::sync::OnceLock;

use molde_image::Store;
use molde_layerfs::OverlayXattr;
use molde_layerfs::mount::{Mount, OverlayMount};
use molde_layerfs::snapshot::{Backend, CopyBackend, OverlayBackend, default_backend};

use crate::launch::{self, IdMaps, Spec, Stage, Stdio};
use crate::record::containers_dir;

/// The backend for a new container of `store` in this process.
pub(crate) fn for_container(store: &Store) -> Box<dyn Backend> {
    if molde_layerfs::privilege::is_privileged() {
        return default_backend();
    }
    if rootless_overlay_usable(store) {
        Box::new(OverlayBackend::with_xattr(OverlayXattr::User))
    } else {
        Box::new(CopyBackend::new())
    }
}

/// Whether an unprivileged container can have an overlay (`userxattr`) rootfs: probed once per
/// process, in the first store asked about.
fn rootless_overlay_usable(store: &Store) -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let usable = probe(&containers_dir(store));
        tracing::debug!("rootless overlay writable layers usable: {usable}");
        usable
    })
}

/// Launch a container whose rootfs is an overlay over a throwaway lower, with a program that
/// does not exist. Every setup step up to the exec passing (the exec failing with `ENOENT`) and
/// the launcher's writes (`/proc`, `/dev` mount points) landing in the upper means the
/// overlay mounts and works in the container's user namespace.
fn probe(parent: &Path) -> bool {
    if std::fs::create_dir_all(parent).is_err() {
        return false;
    }
    // Not 64 hex digits: container listings ignore it.
    let Ok(dir) = tempfile::Builder::new()
        .prefix(".overlay-probe-")
        .tempdir_in(parent)
    else {
        return false;
    };
    let d = dir.path();
    for sub in ["lower", "upper", "work", "rootfs"] {
        if std::fs::create_dir(d.join(sub)).is_err() {
            return false;
        }
    }
    let mut spec = Spec::new(d.join("rootfs"), "/molde-overlay-probe");
    spec.rootfs_mounts = vec![Mount::Overlay(OverlayMount {
        lowerdirs: vec![d.join("lower")],
        upperdir: Some(d.join("upper")),
        workdir: Some(d.join("work")),
        userxattr: true,
        volatile: false,
    })];
    spec.user_namespace = Some(IdMaps::rootless());
    spec.stdin = Stdio::Null;
    spec.stdout = Stdio::Null;
    spec.stderr = Stdio::Null;
    let usable = match launch::spawn(&spec) {
        Err(e) => e.stage == Stage::Exec && d.join("upper/proc").is_dir(),
        Ok(mut p) => {
            let _ = p.kill();
            let _ = p.wait();
            false
        }
    };
    // overlayfs leaves work/work with mode 0.
    let inner = d.join("work/work");
    if inner.is_dir() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700));
    }
    usable
}
