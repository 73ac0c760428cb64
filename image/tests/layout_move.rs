//! A store of an older molde, whose OCI layout was the store root itself, is moved forward when
//! it opens: the layout into `oci/`, beside `molde/`; a move cut short at any step opens, and
//! the layout directory holds the layout only.

mod common;

use common::{add_layer, commit_tagged, layer_tar};

use std::fs;
use std::path::Path;

use molde_image::{ImageBuilder, Store, StoreError, unpack};

/// A store at `root` with a tagged two-layer image, unpacked, held; the store is closed.
fn make_store(root: &Path) {
    let store = Store::open(root).unwrap();
    let base = add_layer(&store, &layer_tar(&[("etc/motd", b"old store")]));
    let top = add_layer(&store, &layer_tar(&[("app/run", b"#!/bin/sh")]));
    let image = commit_tagged(&store, vec![(base, "base"), (top, "top")], "old:1");
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

/// Images an older molde wrote to the root after the move (one under a tag the store has)
/// are merged into `oci/`: blobs moved over, images added, the store's tag kept, the other
/// image untagged.
#[test]
fn images_an_older_molde_wrote_after_the_move_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_store(&root);
    let ours = Store::open(&root).unwrap().resolve("old:1").unwrap();
    // The older molde's images: `other:1`, and another image under `old:1`.
    let elsewhere = dir.path().join("elsewhere");
    let (other, clash) = {
        let s = Store::open(&elsewhere).unwrap();
        let l = s
            .add_layer(&layer_tar(&[("written", b"by an older molde")])[..])
            .unwrap()
            .layer;
        let other = s.commit(ImageBuilder::new().layer(l, "other")).unwrap();
        let clash = s
            .commit(
                ImageBuilder::new()
                    .layer(l, "clash")
                    .label("which", "clash"),
            )
            .unwrap();
        s.tag(&other, "other:1").unwrap();
        s.tag(&clash, "old:1").unwrap();
        (other, clash)
    };
    make_legacy(&elsewhere);
    for name in ENTRIES {
        fs::rename(elsewhere.join(name), root.join(name)).unwrap();
    }

    let store = Store::open(&root).unwrap();
    assert_eq!(names(&root), ["molde", "oci"]);
    assert_eq!(store.resolve("old:1").unwrap().id(), ours.id());
    assert_eq!(store.resolve("other:1").unwrap().id(), other.id());
    let clash_again = store.load(clash.manifest_digest()).unwrap();
    assert!(store.tags_of(&clash_again).unwrap().is_empty());
    assert_eq!(store.list().unwrap().len(), 3);
    // Every blob is there: GC keeps them all.
    let gc = store.gc().unwrap();
    assert!(gc.blobs.is_empty(), "{gc:?}");
    unpack::unpack(&store, &other).unwrap();
}

/// An index in the root that cannot be read is refused, naming both files; neither is
/// touched.
#[test]
fn an_unreadable_index_in_both_places_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_store(&root);
    let before = fs::read(root.join("oci/index.json")).unwrap();
    fs::write(root.join("index.json"), b"{ not json").unwrap();
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
    // Once it is removed, the store opens.
    fs::remove_file(root.join("index.json")).unwrap();
    assert_moved_forward(&root);
}
