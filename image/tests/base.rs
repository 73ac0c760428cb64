//! Base images from host binaries: the layer holds the binaries, their ELF interpreter and
//! every DT_NEEDED library, so the programs run chrooted into it.

mod common;

use common::require;
use std::path::Path;
use std::process::Command;

use molde_image::Store;
use molde_image::base::{BaseError, from_host};
use molde_image::layerfs::apply::{ApplyOptions, apply};
use molde_image::layerfs::{Format, privilege};

#[test]
fn host_binaries_run_inside_their_own_layer() {
    let store = Store::temporary().unwrap();
    let bins = [
        Path::new("/bin/sh"),
        Path::new("/bin/ls"),
        Path::new("/bin/cat"),
    ];
    let image = from_host(&store, &bins).unwrap();
    assert_eq!(image.layers().len(), 1);
    assert_eq!(image.history().len(), 1);
    assert!(
        image.history()[0]
            .created_by
            .as_deref()
            .unwrap()
            .contains("/bin/sh")
    );
    assert_eq!(image.cmd(), ["/bin/sh"]);
    assert!(image.env_var("PATH").is_some());

    let root = tempfile::tempdir().unwrap();
    let blob = store.open_blob(&image.layers()[0].digest).unwrap();
    let report = apply(
        blob,
        root.path(),
        &ApplyOptions::for_current_process(Format::Flat),
    )
    .unwrap();
    assert_eq!(report.diff_id, image.layers()[0].diff_id);
    // The interpreter of /bin/sh is in the layer.
    let sh = std::fs::read("/bin/sh").unwrap();
    let interp = goblin_interp(&sh);
    if let Some(interp) = interp {
        assert!(
            root.path().join(interp.trim_start_matches('/')).exists(),
            "{interp}"
        );
    }
    if !require(privilege::is_privileged(), "needs root to chroot") {
        return;
    }
    let out = Command::new("chroot")
        .arg(root.path())
        .args([
            "/bin/sh",
            "-c",
            "echo hello from molde; ls /bin; cat /proc/nothing 2>/dev/null; exit 3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stdout.contains("hello from molde"), "{stdout}");
    assert!(stdout.contains("cat") && stdout.contains("ls"), "{stdout}");
}

fn goblin_interp(bytes: &[u8]) -> Option<String> {
    // The interpreter path is in PT_INTERP; find it as text.
    let s = String::from_utf8_lossy(bytes);
    s.split('\0')
        .find(|p| p.starts_with('/') && p.contains("ld-"))
        .map(str::to_owned)
}

#[test]
fn a_missing_binary_or_non_elf_is_a_typed_error() {
    let store = Store::temporary().unwrap();
    let err = from_host(&store, &[Path::new("/no/such/binary")]).unwrap_err();
    assert!(
        matches!(err, BaseError::Io { ref path, .. } if path.starts_with("/no")),
        "{err:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("fake");
    std::fs::write(&bad, b"\x7fELF garbage").unwrap();
    let err = from_host(&store, &[&bad]).unwrap_err();
    assert!(matches!(err, BaseError::NotElf { .. }), "{err:?}");
    let cause = std::error::Error::source(&err).expect("the parser's error is the source");
    assert!(cause.is::<goblin::error::Error>(), "{cause:?}");
    assert_eq!(
        store.list().unwrap().len(),
        0,
        "nothing is stored on failure"
    );
}

#[test]
fn static_busybox_image_where_installed() {
    let Some(bb) = molde_image::base::static_busybox() else {
        require(false, "busybox-static is not installed");
        return;
    };
    let store = Store::temporary().unwrap();
    let image = from_host(&store, &[&bb]).unwrap();
    assert_eq!(image.layers().len(), 1);
    if !require(privilege::is_privileged(), "needs root to chroot") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let blob = store.open_blob(&image.layers()[0].digest).unwrap();
    apply(
        blob,
        root.path(),
        &ApplyOptions::for_current_process(Format::Flat),
    )
    .unwrap();
    let inside = Path::new("/").join(bb.strip_prefix("/").unwrap());
    let out = Command::new("chroot")
        .arg(root.path())
        .arg(&inside)
        .args(["sh", "-c", "echo busybox says hi"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "busybox says hi\n");
}
