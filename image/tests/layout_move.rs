//! A store of an older molde, whose OCI layout was the store root itself, is moved forward when
//! it opens: the layout into `oci/`, beside `molde/`; a move cut short at any step opens, and
//! the layout directory holds the layout only.

use std::fs;
use std::path::Path;

use molde_image::{ImageBuilder, Store, StoreError, unpack};

/// A layer tar holding `files` (path, content).
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *content).unwrap();
    }
    b.into_inner().unwrap()
}

/// A store at `root` with a tagged two-layer image, unpacked, held; the store is closed.
fn make_store(root: &Path) {
    let store = Store::open(root).unwrap();
    let base = store
        .add_layer(&layer_tar(&[("etc/motd", b"old store")])[..])
        .unwrap()
        .layer;
    let top = store
        .add_layer(&layer_tar(&[("app/run", b"#!/bin/sh")])[..])
        .unwrap()
        .layer;
    let image = store
        .commit(
            ImageBuilder::new()
                .created("2024-01-01T00:00:00Z")
                .layer(base, "base")
                .layer(top, "top"),
        )
        .unwrap();
    store.tag(&image, "old:1").unwrap();
    store.hold(&image, "container-1").unwrap();
    unpack::unpack(&store, &image).unwrap();
}

/// The three layout entries, as an older molde had them: in the root, not in `oci/`.
const ENTRIES: [&str; 3] = ["blobs", "index.json", "oci-layout"];

/// Turn a store at `root` into the older molde's shape: the layout in the root itself.
fn make_legacy(root: &Path) {
    for name in ENTRIES {
        fs::rename(root.join("oci").join(name), root.join(name)).unwrap();
    }
    fs::remove_dir(root.join("oci")).unwrap();
}

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The store at `root` has its image, tag, hold and unpacked layers, the layout in `oci/`
/// and nothing of it left in the root.
fn assert_moved_forward(root: &Path) {
    let store = Store::open(root).unwrap();
    assert_eq!(names(&store.oci_dir()), ENTRIES);
    assert_eq!(names(root), ["molde", "oci"]);
    let image = store.resolve("old:1").unwrap();
    assert_eq!(store.holds().unwrap().len(), 1);
    assert_eq!(store.holds().unwrap()[0].image, image.manifest_digest());
    let unpacked = unpack::unpack(&store, &image).unwrap();
    assert!(unpacked.iter().all(|l| l.existed), "{unpacked:?}");
    assert_eq!(
        fs::read(unpacked[0].path.join("etc/motd")).unwrap(),
        b"old store"
    );
    // Its blobs are whole: GC keeps them all and frees nothing.
    let gc = store.gc().unwrap();
    assert!(gc.blobs.is_empty() && gc.layers.is_empty(), "{gc:?}");
    assert_eq!(store.counts().unwrap(), (4, 2));
}

#[test]
fn an_older_store_moves_forward_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_store(&root);
    make_legacy(&root);
    assert_eq!(names(&root), ["blobs", "index.json", "molde", "oci-layout"]);
    assert_moved_forward(&root);
    // And it opens again as it is.
    assert_moved_forward(&root);
}

/// Each entry moves by one rename: a kill between two leaves some entries moved and the rest
/// not. Every such state (the directory `oci/` made, then 0 to 2 entries moved) opens whole.
#[test]
fn a_move_cut_short_at_any_step_opens() {
    for moved in 0..ENTRIES.len() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        make_store(&root);
        make_legacy(&root);
        fs::create_dir(root.join("oci")).unwrap();
        for name in &ENTRIES[..moved] {
            fs::rename(root.join(name), root.join("oci").join(name)).unwrap();
        }
        assert_moved_forward(&root);
    }
}

/// A directory that is only an OCI layout (as skopeo writes one) is adopted as a store, as
/// before: its layout moves into `oci/` and its images are there.
#[test]
fn a_bare_oci_layout_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_store(&root);
    make_legacy(&root);
    fs::remove_dir_all(root.join("molde")).unwrap();
    let store = Store::open(&root).unwrap();
    assert_eq!(names(&store.oci_dir()), ENTRIES);
    assert!(store.resolve("old:1").is_ok());
}

/// An older molde that opened the store after the move made an empty layout in the root
/// again: it is removed, and the store opens as it was.
#[test]
fn an_empty_layout_an_older_molde_made_again_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_store(&root);
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    fs::write(
        root.join("index.json"),
        br#"{"schemaVersion":2,"manifests":[]}"#,
    )
    .unwrap();
    fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    assert_moved_forward(&root);
}

/// An entry in both places with content in each (an older molde wrote images to the store
/// after the move) is refused, naming both paths, and neither is touched.
#[test]
fn a_layout_entry_in_both_places_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_store(&root);
    let before = fs::read(root.join("oci/index.json")).unwrap();
    // The older molde's index names an image.
    fs::copy(root.join("oci/index.json"), root.join("index.json")).unwrap();
    let err = Store::open(&root).unwrap_err();
    match &err {
        StoreError::LayoutConflict { old, new } => {
            assert_eq!(old, &root.join("index.json"));
            assert_eq!(new, &root.join("oci/index.json"));
        }
        other => panic!("expected LayoutConflict, got {other:?}"),
    }
    assert!(err.to_string().contains("keep one"), "{err}");
    assert_eq!(fs::read(root.join("oci/index.json")).unwrap(), before);
    assert!(root.join("index.json").exists());
    // Once one is removed, the store opens.
    fs::remove_file(root.join("index.json")).unwrap();
    assert_moved_forward(&root);
}
