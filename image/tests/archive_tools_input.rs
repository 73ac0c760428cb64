//! What other tools write into OCI layouts and archives, good and bad: a config whose DiffIDs
//! disagree with its layers (refused, nothing imported, and the lie never reaches the store's
//! index of layers by content), annotations everywhere (kept: same digests), non-distributable
//! layers (imported as ordinary layers when included; refused naming their URLs when not), and
//! empty layers (imported, unpacked).

mod common;

use common::{add_layer, commit_tagged, gzip, layer_tar};

use std::fs;
use std::path::Path;

use molde_image::archive::{ArchiveError, ImportOptions, oci};
use molde_image::layerfs::Digest;
use molde_image::{Image, ImageBuilder, LayerMediaType, Store, unpack};
use serde_json::Value;

/// A store with `demo:1`: a gzip layer and a plain one, exported as a layout.
fn exported() -> (Store, Image, tempfile::TempDir) {
    let store = Store::temporary().unwrap();
    let a = add_layer(&store, &gzip(&layer_tar(&[("etc/motd", b"from a tool\n")])));
    let b = add_layer(&store, &layer_tar(&[("app/run", b"#!/bin/sh\n")]));
    let image = commit_tagged(&store, vec![(a, "ADD motd"), (b, "ADD run")], "demo:1");
    let dir = tempfile::tempdir().unwrap();
    oci::export_dir(&store, &["demo:1"], dir.path()).unwrap();
    (store, image, dir)
}

fn blob(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Write `doc` as a blob of the layout (unless it is there: blobs are read-only); its
/// descriptor's digest and size.
fn put(dir: &Path, doc: &Value) -> (String, usize) {
    let bytes = serde_json::to_vec(doc).unwrap();
    let d = Digest::of(&bytes).to_string();
    let path = blob(dir, &d);
    if !path.exists() {
        fs::write(path, &bytes).unwrap();
    }
    (d, bytes.len())
}

/// Edit the index, the manifest and the config of the layout's one image, writing the
/// changed documents as new blobs and pointing their descriptors at them.
fn edit(
    dir: &Path,
    config_edit: impl FnOnce(&mut Value),
    manifest_edit: impl FnOnce(&mut Value),
    index_edit: impl FnOnce(&mut Value),
) {
    let index_path = dir.join("index.json");
    let mut index = read_json(&index_path);
    let mut manifest = read_json(&blob(
        dir,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    let mut config = read_json(&blob(dir, manifest["config"]["digest"].as_str().unwrap()));
    config_edit(&mut config);
    let (cd, cs) = put(dir, &config);
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    manifest_edit(&mut manifest);
    let (md, ms) = put(dir, &manifest);
    index["manifests"][0]["digest"] = md.into();
    index["manifests"][0]["size"] = ms.into();
    index_edit(&mut index);
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

fn index_len(store: &Store) -> usize {
    read_json(&store.oci_dir().join("index.json"))["manifests"]
        .as_array()
        .unwrap()
        .len()
}

/// The layout packed as an oci-archive.
fn archive_of(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for name in ["oci-layout", "index.json"] {
        b.append_path_with_name(dir.join(name), name).unwrap();
    }
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = format!("blobs/sha256/{}", e.file_name().to_str().unwrap());
        b.append_path_with_name(e.path(), name).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn diff_ids_that_disagree_with_the_layers_are_refused() {
    let (_, image, dir) = exported();
    let lie = Digest::of(b"not the layer's content");
    edit(
        dir.path(),
        |c| c["rootfs"]["diff_ids"][1] = lie.to_string().into(),
        |_| {},
        |_| {},
    );
    for from_archive in [false, true] {
        let store = Store::temporary().unwrap();
        let err = if from_archive {
            oci::import_archive(
                &store,
                &archive_of(dir.path())[..],
                &ImportOptions::default(),
            )
        } else {
            oci::import_dir(&store, dir.path(), &ImportOptions::default())
        }
        .unwrap_err();
        match &err {
            ArchiveError::DiffIdMismatch {
                expected, actual, ..
            } => {
                assert_eq!(*expected, lie);
                assert_eq!(*actual, image.diff_ids()[1]);
            }
            other => panic!("expected DiffIdMismatch, got {other:?}"),
        }
        assert_eq!(index_len(&store), 0, "an image reached index.json");
        assert!(store.layer_by_diff_id(&lie).is_none());
        // What was stored is unreferenced: GC frees it all.
        store.gc().unwrap();
        assert_eq!(store.counts().unwrap(), (0, 0));
    }
}

#[test]
fn annotations_everywhere_are_kept() {
    let (_, image, dir) = exported();
    let ann = serde_json::json!({"org.opencontainers.image.created": "2024-01-01T00:00:00Z",
                                 "com.example.tool": "yes"});
    edit(
        dir.path(),
        |_| {},
        |m| {
            m["annotations"] = ann.clone();
            m["config"]["annotations"] = ann.clone();
            m["layers"][0]["annotations"] = ann.clone();
            m["layers"][1]["annotations"] = ann.clone();
        },
        |i| {
            i["annotations"] = ann.clone();
            i["manifests"][0]["annotations"]["com.example.tool"] = "yes".into();
        },
    );
    let index = read_json(&dir.path().join("index.json"));
    let md: Digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::temporary().unwrap();
    let report = oci::import_dir(&store, dir.path(), &ImportOptions::default()).unwrap();
    let got = &report.images[0].image;
    assert_eq!(got.manifest_digest(), md, "the manifest is stored as given");
    assert_eq!(got.id(), image.id());
    assert_eq!(got.diff_ids(), image.diff_ids());
    assert_eq!(store.resolve("demo:1").unwrap().manifest_digest(), md);
}

#[test]
fn a_non_distributable_layer_in_the_input_imports_as_an_ordinary_one() {
    let (_, image, dir) = exported();
    edit(
        dir.path(),
        |_| {},
        |m| {
            m["layers"][0]["mediaType"] =
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into();
            m["layers"][0]["urls"] = serde_json::json!(["https://example.invalid/layer"]);
            m["layers"][1]["mediaType"] =
                "application/vnd.docker.image.rootfs.foreign.diff.tar".into();
        },
        |_| {},
    );
    let store = Store::temporary().unwrap();
    let report = oci::import_dir(&store, dir.path(), &ImportOptions::default()).unwrap();
    let got = &report.images[0].image;
    assert_eq!(got.id(), image.id(), "the config is kept");
    assert_eq!(got.layers(), image.layers());
    assert_eq!(got.layers()[0].media_type, LayerMediaType::Gzip);
    assert_eq!(
        got.manifest_digest(),
        image.manifest_digest(),
        "the manifest molde writes"
    );
    let stored = fs::read_to_string(store.layout().blob(&got.manifest_digest())).unwrap();
    assert!(
        !stored.contains("nondistributable") && !stored.contains("urls"),
        "{stored}"
    );
    assert_eq!(unpack::unpack(&store, got).unwrap().len(), 2);
}

#[test]
fn a_non_distributable_layer_not_in_the_input_is_refused_naming_its_urls() {
    let (_, image, dir) = exported();
    edit(
        dir.path(),
        |_| {},
        |m| {
            m["layers"][0]["mediaType"] =
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into();
            m["layers"][0]["urls"] = serde_json::json!(["https://example.invalid/layer"]);
        },
        |_| {},
    );
    fs::remove_file(blob(dir.path(), &image.layers()[0].digest.to_string())).unwrap();
    let store = Store::temporary().unwrap();
    let err = oci::import_dir(&store, dir.path(), &ImportOptions::default()).unwrap_err();
    match &err {
        ArchiveError::ForeignLayer { digest, urls, .. } => {
            assert_eq!(*digest, image.layers()[0].digest);
            assert_eq!(urls, &["https://example.invalid/layer"]);
        }
        other => panic!("expected ForeignLayer, got {other:?}"),
    }
    assert!(err.to_string().contains("example.invalid"), "{err}");
    assert_eq!(index_len(&store), 0);
    store.gc().unwrap();
    assert_eq!(store.counts().unwrap(), (0, 0));
}

/// Empty layers as tools write them: an empty tar, a gzip'd empty tar, and history entries
/// marked `empty_layer` (a config-only step) between them.
#[test]
fn empty_layers_import_and_unpack() {
    let store = Store::temporary().unwrap();
    let empty = store.add_layer(&[0u8; 1024][..]).unwrap().layer;
    let empty_gz = store.add_layer(&gzip(&[0u8; 1024])[..]).unwrap().layer;
    assert_eq!(empty.diff_id, empty_gz.diff_id);
    assert_ne!(empty.digest, empty_gz.digest);
    let image = store
        .commit(
            ImageBuilder::new()
                .created("2024-01-01T00:00:00Z")
                .layer(empty, "RUN true")
                .step("ENV A=1")
                .layer(empty_gz, "RUN true")
                .step("CMD [\"sh\"]"),
        )
        .unwrap();
    store.tag(&image, "empty:1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    oci::export_dir(&store, &["empty:1"], dir.path()).unwrap();

    let other = Store::temporary().unwrap();
    let report = oci::import_dir(&other, dir.path(), &ImportOptions::default()).unwrap();
    let got = &report.images[0].image;
    assert_eq!(got.manifest_digest(), image.manifest_digest());
    assert_eq!(got.history().len(), 4);
    let unpacked = unpack::unpack(&other, got).unwrap();
    assert_eq!(unpacked.len(), 2);
    assert_eq!(fs::read_dir(&unpacked[1].path).unwrap().count(), 0);
}
