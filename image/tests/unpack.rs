//! Layers are unpacked once per ChainID, in overlay format, and shared between images.

use std::fs;
use std::io::Write;

use molde_image::layerfs::Digest;
use molde_image::unpack::unpack;
use molde_image::{ImageBuilder, Layer, Store, StoreError};

fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        match content {
            Some(c) => {
                h.set_size(c.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, *c).unwrap();
            }
            None => {
                h.set_size(0);
                h.set_mode(0o755);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn shared_layers_are_unpacked_once_and_reported_as_existing() {
    let store = Store::temporary().unwrap();
    let base = store
        .add_layer(
            &gz(&tar_of(&[
                ("etc/", None),
                ("etc/os-release", Some(b"molde")),
            ]))[..],
        )
        .unwrap()
        .layer;
    let app = store
        .add_layer(&tar_of(&[("app", Some(b"v1")), ("etc/.wh.os-release", Some(b""))])[..])
        .unwrap()
        .layer;
    let other = store
        .add_layer(&tar_of(&[("other", Some(b"x"))])[..])
        .unwrap()
        .layer;
    let a = store
        .commit(ImageBuilder::new().layer(base, "base").layer(app, "app"))
        .unwrap();
    let b = store
        .commit(
            ImageBuilder::new()
                .layer(base, "base")
                .layer(other, "other"),
        )
        .unwrap();

    let ua = unpack(&store, &a).unwrap();
    assert_eq!(ua.len(), 2);
    assert!(ua.iter().all(|u| !u.existed));
    assert_eq!(ua[0].chain_id, base.diff_id);
    assert_eq!(
        fs::read(ua[0].path.join("etc/os-release")).unwrap(),
        b"molde"
    );
    assert_eq!(fs::read(ua[1].path.join("app")).unwrap(), b"v1");
    // Overlay format: the whiteout is kept as a char 0/0 device.
    let wh = fs::symlink_metadata(ua[1].path.join("etc/os-release")).unwrap();
    assert!(molde_image::layerfs::whiteout::is_overlay_whiteout(&wh));

    let ub = unpack(&store, &b).unwrap();
    assert!(ub[0].existed, "the shared base is already unpacked");
    assert_eq!(ub[0].path, ua[0].path);
    assert!(!ub[1].existed);
    // Unpacking again does nothing new.
    assert!(unpack(&store, &a).unwrap().iter().all(|u| u.existed));
    assert_eq!(store.counts().unwrap().1, 3);

    // GC keeps what a remaining image reaches, frees the rest with its bytes.
    store.remove(&a.manifest_digest().to_string()).unwrap();
    let gc = store.gc().unwrap();
    assert_eq!(gc.layers, vec![ua[1].chain_id]);
    assert!(ub[0].path.join("etc/os-release").exists());
    assert!(!ua[1].path.exists());
    store.remove(&b.manifest_digest().to_string()).unwrap();
    let gc = store.gc().unwrap();
    assert_eq!(gc.layers.len(), 2);
    assert!(gc.bytes > 5);
    assert_eq!(store.counts().unwrap(), (0, 0));
}

#[test]
fn a_layer_whose_content_does_not_match_its_diff_id_is_refused() {
    let store = Store::temporary().unwrap();
    let real = store
        .add_layer(&tar_of(&[("f", Some(b"1"))])[..])
        .unwrap()
        .layer;
    let lying = Layer {
        diff_id: Digest::of(b"not this"),
        ..real
    };
    let img = store
        .commit(ImageBuilder::new().layer(lying, "lie"))
        .unwrap();
    let err = unpack(&store, &img).unwrap_err();
    match &err {
        StoreError::DiffIdMismatch {
            expected, actual, ..
        } => {
            assert_eq!(*expected, lying.diff_id);
            assert_eq!(*actual, real.diff_id);
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        store.counts().unwrap().1,
        0,
        "nothing half-unpacked is left"
    );
    let leftovers = fs::read_dir(store.root().join("molde/layers"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(leftovers, 0);
}

/// A `.wh..wh..opq` entry making `dir` opaque in its layer.
fn opaque(dir: &str) -> String {
    format!("{dir}/.wh..wh..opq")
}

#[test]
fn a_deep_image_is_flattened_once_into_links_of_its_layers_and_collected_with_it() {
    use molde_image::unpack::{FLATTEN_MIN_LAYERS, flattened};
    use std::os::unix::fs::MetadataExt;
    let store = Store::temporary().unwrap();
    let add =
        |entries: &[(&str, Option<&[u8]>)]| store.add_layer(&tar_of(entries)[..]).unwrap().layer;
    let opq = opaque("etc/old");
    let mut builder = ImageBuilder::new()
        .layer(
            add(&[
                ("etc/", None),
                ("etc/keep", Some(b"base")),
                ("etc/gone", Some(b"deleted later")),
                ("etc/old/", None),
                ("etc/old/hidden", Some(b"hidden by an opaque dir")),
            ]),
            "base",
        )
        .layer(add(&[("etc/.wh.gone", Some(b""))]), "delete")
        .layer(
            add(&[
                ("etc/old/", None),
                (&opq, Some(b"")),
                ("etc/old/new", Some(b"new")),
            ]),
            "opaque",
        );
    for i in 3..FLATTEN_MIN_LAYERS {
        let name = format!("layer-{i}");
        builder = builder.layer(add(&[(&name, Some(name.as_bytes()))]), &name);
    }
    builder = builder.layer(add(&[("etc/keep", Some(b"top"))]), "top");
    let deep = store.commit(builder).unwrap();
    let shallow = store
        .commit(ImageBuilder::new().layer(add(&[("x", Some(b"x"))]), "one"))
        .unwrap();
    assert_eq!(
        flattened(&store, &shallow).unwrap(),
        None,
        "one layer: no flat tree"
    );

    let flat = flattened(&store, &deep)
        .unwrap()
        .expect("a deep image is flattened");
    assert_eq!(
        flattened(&store, &deep).unwrap().as_deref(),
        Some(flat.as_path())
    );
    let read = |p: &str| fs::read_to_string(flat.join(p)).unwrap();
    assert_eq!(read("etc/keep"), "top", "the topmost layer's file");
    assert!(!flat.join("etc/gone").exists(), "whiteouts applied");
    assert!(
        !flat.join("etc/old/hidden").exists(),
        "opaque directories applied"
    );
    assert_eq!(read("etc/old/new"), "new");
    assert_eq!(
        read(&format!("layer-{}", FLATTEN_MIN_LAYERS - 1)),
        format!("layer-{}", FLATTEN_MIN_LAYERS - 1)
    );
    // No whiteout, no overlay xattr left: a plain tree.
    let mut names = Vec::new();
    for e in walk(&flat) {
        let meta = fs::symlink_metadata(&e).unwrap();
        assert!(meta.is_dir() || meta.is_file(), "{}", e.display());
        names.push(e.strip_prefix(&flat).unwrap().to_owned());
    }
    assert_eq!(names.len(), 4 + FLATTEN_MIN_LAYERS - 3, "{names:?}");
    // Files are the layers' own inodes: no data was copied.
    let top_layer = unpack(&store, &deep).unwrap().last().unwrap().path.clone();
    assert_eq!(
        fs::metadata(flat.join("etc/keep")).unwrap().ino(),
        fs::metadata(top_layer.join("etc/keep")).unwrap().ino()
    );

    // Kept while its image is; collected with it.
    assert!(store.gc().is_ok());
    assert!(flat.is_dir());
    store.remove(&deep.manifest_digest().to_string()).unwrap();
    store.gc().unwrap();
    assert!(!flat.exists(), "the flat tree goes with its image");
    assert!(
        fs::read_dir(flat.parent().unwrap())
            .unwrap()
            .all(|e| { !e.unwrap().file_name().to_string_lossy().ends_with(".tmp") })
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
