//! The store's OCI layout directory (`<root>/oci`) holds the layout only, so the real tools read
//! it in place: `oci-image-tool validate` (which opens every file under the directory it is
//! given) passes with images whose unpacked layers have device nodes and with containers in the
//! store; skopeo and umoci read its tagged images. A store of an older molde (the layout in the
//! root itself) moves forward on open and runs its images and containers.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;

use molde::container::{Container, Status};
use molde::image::archive::{ImportOptions, oci};
use molde::image::{ImageBuilder, Store, base, unpack};

fn require(ok: bool, why: &str) -> bool {
    if !ok && std::env::var_os("MOLDE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("MOLDE_REQUIRE_ALL=1 and this test cannot run: {why}");
    }
    if !ok {
        eprintln!("skipping: {why}");
    }
    ok
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Run a tool; its stdout, or a panic with its stderr.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A layer with device nodes as a distribution image has them (`dev/null`, `dev/ptmx`), a
/// fifo, and a whiteout of `etc/gone` (an overlay char 0/0 device once unpacked).
fn device_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir, "dev", &[][..]).unwrap();
    b.append_data(&mut dir, "etc", &[][..]).unwrap();
    for (name, kind, major, minor) in [
        ("dev/null", tar::EntryType::Char, 1, 3),
        ("dev/ptmx", tar::EntryType::Char, 5, 2),
        ("dev/loop0", tar::EntryType::Block, 7, 0),
        ("dev/initctl", tar::EntryType::Fifo, 0, 0),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o666);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        b.append_data(&mut h, name, &[][..]).unwrap();
    }
    let mut wh = tar::Header::new_gnu();
    wh.set_entry_type(tar::EntryType::Regular);
    wh.set_mode(0o644);
    wh.set_size(0);
    b.append_data(&mut wh, "etc/.wh.gone", &[][..]).unwrap();
    b.into_inner().unwrap()
}

/// Whether some entry under `dir` is a device node or a fifo.
fn has_special_files(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().any(|e| {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        t.is_char_device()
            || t.is_block_device()
            || t.is_fifo()
            || (t.is_dir() && has_special_files(&e.path()))
    })
}

/// A store with a busybox image and, on it, the device layer; tagged `dev:1`, unpacked, held,
/// with a container of it (kept) in the store.
fn store_with_devices(root: &Path) -> molde::image::Image {
    let store = molde::open_store(root).unwrap();
    let bb = base::static_busybox().unwrap();
    let busybox = base::from_host(&store, &[bb.as_path()]).unwrap();
    let devices = store.add_layer(&device_layer()[..]).unwrap().layer;
    let image = store
        .commit(ImageBuilder::from_image(&busybox).layer(devices, "devices"))
        .unwrap();
    store.tag(&image, "dev:1").unwrap();
    store.hold(&image, "fixture").unwrap();
    unpack::unpack(&store, &image).unwrap();
    image
}

/// As root (device nodes are made as root only): the unpacked layers have device nodes, a
/// fifo and whiteouts, a container's writable layer is in the store, and `oci-image-tool
/// validate` passes on the store's layout directory.
#[test]
fn oci_image_tool_validates_the_store_layout_in_place() {
    if !require(have("oci-image-tool"), "oci-image-tool is not installed")
        || !require(
            base::static_busybox().is_some(),
            "busybox-static is not installed",
        )
        || !require(
            molde::layerfs::privilege::is_privileged(),
            "needs root to unpack device nodes",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let image = store_with_devices(&root);
    let store = molde::open_store(&root).unwrap();
    if molde::containers_supported_or_skip() {
        let bb = base::static_busybox().unwrap();
        let mut c = Container::builder(&store, &image)
            .command(bb.as_os_str())
            .args(["sh", "-c", "echo written > /in-the-writable-layer"])
            .create()
            .unwrap();
        c.start().unwrap();
        assert!(matches!(
            c.wait().unwrap(),
            Status::Exited { code: Some(0), .. }
        ));
        c.keep();
    }
    // The premise: special files are in the store, beside the layout.
    assert!(has_special_files(&root.join("molde")), "no device nodes");
    assert!(!has_special_files(&store.oci_dir()));
    let oci_dir = store.oci_dir();
    let out = run(
        "oci-image-tool",
        &["validate", "--type", "image", oci_dir.to_str().unwrap()],
    );
    assert!(out.contains("Validation succeeded"), "{out}");
    // A named ref is found and validated too.
    let out = run(
        "oci-image-tool",
        &[
            "validate",
            "--type",
            "image",
            "--ref",
            "name=dev:1",
            oci_dir.to_str().unwrap(),
        ],
    );
    assert!(out.contains("Validation succeeded"), "{out}");
}

/// skopeo and umoci read a tagged image of the store in place; skopeo copies it out to an
/// oci-archive that imports back as the same image.
#[test]
fn skopeo_and_umoci_read_the_store_in_place() {
    if !require(have("skopeo"), "skopeo is not installed")
        || !require(have("umoci"), "umoci is not installed")
        || !require(
            base::static_busybox().is_some(),
            "busybox-static is not installed",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let bb = base::static_busybox().unwrap();
    let image = base::from_host(&store, &[bb.as_path()]).unwrap();
    store.tag(&image, "bb:1").unwrap();
    let src = format!("oci:{}:bb:1", store.oci_dir().display());

    let raw = run("skopeo", &["inspect", "--raw", &src]);
    let stored = fs::read(store.layout().blob(&image.manifest_digest())).unwrap();
    assert_eq!(
        raw.as_bytes(),
        stored,
        "skopeo reads the manifest as stored"
    );
    let config: serde_json::Value =
        serde_json::from_str(&run("skopeo", &["inspect", "--config", &src])).unwrap();
    let diff_ids: Vec<String> = image.diff_ids().iter().map(|d| d.to_string()).collect();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));

    let archive = dir.path().join("copy.tar");
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--quiet",
            &src,
            &format!("oci-archive:{}:bb:1", archive.display()),
        ],
    );
    let other = Store::temporary().unwrap();
    let report = oci::import_archive(
        &other,
        fs::File::open(&archive).unwrap(),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(report.images[0].image.id(), image.id());

    let bundle = dir.path().join("bundle");
    run(
        "umoci",
        &[
            "raw",
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:bb:1", store.oci_dir().display()),
            bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(
        fs::read(bundle.join(bb.strip_prefix("/").unwrap())).unwrap(),
        fs::read(&bb).unwrap()
    );
}

/// Put the layout of the store at `root` back where an older molde kept it: the root itself.
fn make_legacy(root: &Path) {
    for name in ["blobs", "index.json", "oci-layout"] {
        fs::rename(root.join("oci").join(name), root.join(name)).unwrap();
    }
    fs::remove_dir(root.join("oci")).unwrap();
}

/// A store as an older molde left it (layout in the root; an image, unpacked; a stopped
/// container) opens, moves forward, runs a new container of its image and starts the old
/// container again, its writable layer intact.
#[test]
fn an_older_store_runs_its_images_and_containers_after_the_move() {
    if !require(
        base::static_busybox().is_some(),
        "busybox-static is not installed",
    ) || !molde::containers_supported_or_skip()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let id = {
        let store = molde::open_store(&root).unwrap();
        let bb = base::static_busybox().unwrap();
        let image = base::from_host(&store, &[bb.as_path()]).unwrap();
        store.tag(&image, "bb:1").unwrap();
        let mut c = Container::builder(&store, &image)
            .command(bb.as_os_str())
            .args([
                "sh",
                "-c",
                "if [ -f /runs ]; then echo again >> /runs; else echo first > /runs; fi",
            ])
            .stdout(molde::container::Stdio::null())
            .create()
            .unwrap();
        c.start().unwrap();
        assert!(matches!(
            c.wait().unwrap(),
            Status::Exited { code: Some(0), .. }
        ));
        c.keep()
    };
    make_legacy(&root);

    let store = molde::open_store(&root).unwrap();
    assert!(store.oci_dir().join("index.json").is_file());
    assert!(!root.join("index.json").exists());
    let image = store.resolve("bb:1").unwrap();
    let bb = base::static_busybox().unwrap();
    let out = Container::builder(&store, &image)
        .command(bb.as_os_str())
        .args(["echo", "runs after the move"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "runs after the move"
    );
    let mut old = Container::open(&store, &id).unwrap();
    assert_eq!(old.read_file("/runs").unwrap(), b"first\n");
    old.start().unwrap();
    assert!(matches!(
        old.wait().unwrap(),
        Status::Exited { code: Some(0), .. }
    ));
    assert_eq!(old.read_file("/runs").unwrap(), b"first\nagain\n");
    old.close().unwrap();
}
