//! Layers found by content: a layer whose DiffID the store has (under any compression) is
//! neither stored nor unpacked again when an import brings it under another compression.

mod common;

use common::{gzip, layer_tar};

use molde_image::archive::{self, ImportOptions, docker, oci};
use molde_image::{Image, ImageBuilder, LayerMediaType, Store};

/// The same two-layer image stored once with plain layers (`a`) and once gzip'd (`b`).
fn two_stores() -> (Store, Image, Store, Image) {
    let base = layer_tar(&[("etc/os-release", b"ID=molde\n")]);
    let app = layer_tar(&[("app/run", b"#!/bin/sh\necho hi\n")]);
    let a = Store::temporary().unwrap();
    let b = Store::temporary().unwrap();
    let mut images = Vec::new();
    for (store, compress) in [(&a, false), (&b, true)] {
        // Configs that differ (a label), whatever the clock: the import into `a` then brings
        // a config and a manifest of its own.
        let which = if compress { "gzip" } else { "plain" };
        let mut builder = ImageBuilder::new().cmd(["/app/run"]).label("made", which);
        for (tar, step) in [(&base, "ADD base /"), (&app, "ADD app /app")] {
            let bytes = if compress { gzip(tar) } else { tar.clone() };
            let layer = store.add_layer(&bytes[..]).unwrap().layer;
            builder = builder.layer(layer, step);
        }
        let image = store.commit(builder).unwrap();
        store.tag(&image, "demo:v1").unwrap();
        images.push(image);
    }
    let ib = images.pop().unwrap();
    let ia = images.pop().unwrap();
    assert_eq!(ib.layers()[0].media_type, LayerMediaType::Gzip);
    assert_eq!(ia.layers()[0].diff_id, ib.layers()[0].diff_id);
    (a, ia, b, ib)
}

fn blob_count(store: &Store) -> usize {
    store.counts().unwrap().0
}

#[test]
fn a_layer_already_stored_plain_is_not_stored_again_gzip_compressed() {
    let (a, ia, b, ib) = two_stores();
    molde_image::unpack::unpack(&a, &ia).unwrap();
    let before = blob_count(&a);
    let dir = tempfile::tempdir().unwrap();
    oci::export_dir(&b, &["demo:v1"], dir.path()).unwrap();

    let report = oci::import_dir(&a, dir.path(), &ImportOptions::default()).unwrap();
    let imported = &report.images[0];
    assert!(imported.layers.iter().all(|l| l.existed), "{report}");
    // Same config (id, DiffIDs, history), but the manifest names the blobs `a` has.
    assert_eq!(imported.image.id(), ib.id());
    assert_eq!(imported.image.diff_ids(), ib.diff_ids());
    let digests: Vec<_> = imported.image.layers().iter().map(|l| l.digest).collect();
    let plain: Vec<_> = ia.layers().iter().map(|l| l.digest).collect();
    assert_eq!(digests, plain);
    for l in ib.layers() {
        assert!(!a.has_blob(&l.digest), "gzip blob {} stored", l.digest);
    }
    // New: one config and one manifest; no layer blob.
    assert_eq!(blob_count(&a), before + 2);
    // Unpacked once: the ChainIDs are the same.
    let unpacked = molde_image::unpack::unpack(&a, &a.resolve("demo:v1").unwrap()).unwrap();
    assert!(unpacked.iter().all(|l| l.existed));
}

#[test]
fn streamed_archives_share_layers_by_content_after_gc() {
    let (a, ia, b, ib) = two_stores();
    // oci-archive (gzip layers) into the store that has them plain.
    let mut tar = Vec::new();
    oci::export_archive(&b, &["demo:v1"], &mut tar).unwrap();
    let report = archive::import(&a, &tar[..], &ImportOptions::default()).unwrap();
    assert!(report.all_existed(), "{report}");
    a.gc().unwrap();
    for l in ib.layers() {
        assert!(!a.has_blob(&l.digest), "gzip blob {} kept", l.digest);
    }
    // docker-archive (plain layers) into the store that has them gzip'd.
    let mut tar = Vec::new();
    docker::export(&a, &[&ia.id().to_string()], &mut tar).unwrap();
    let before = blob_count(&b);
    let report = archive::import(&b, &tar[..], &ImportOptions::default()).unwrap();
    assert!(report.all_existed(), "{report}");
    b.gc().unwrap();
    for l in ia.layers() {
        assert!(!b.has_blob(&l.digest), "plain blob {} kept", l.digest);
    }
    // At most `a`'s config and a manifest naming b's gzip blobs are new.
    assert!(blob_count(&b) <= before + 2);
    let digests: Vec<_> = report.images[0]
        .image
        .layers()
        .iter()
        .map(|l| l.digest)
        .collect();
    let gz: Vec<_> = ib.layers().iter().map(|l| l.digest).collect();
    assert_eq!(digests, gz);
    assert_eq!(b.layer_by_diff_id(&ia.diff_ids()[0]), Some(ib.layers()[0]));
}

#[test]
fn gc_drops_links_to_freed_layers() {
    let (a, ia, _b, _ib) = two_stores();
    assert!(a.layer_by_diff_id(&ia.diff_ids()[1]).is_some());
    a.remove("demo:v1").unwrap();
    a.gc().unwrap();
    assert!(a.layer_by_diff_id(&ia.diff_ids()[1]).is_none());
    assert_eq!(
        std::fs::read_dir(a.root().join("molde/diffids"))
            .unwrap()
            .count(),
        0
    );
}
