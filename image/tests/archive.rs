//! Import and export: OCI layout directories, oci-archives, docker-archives and rootfs
//! tarballs; round trips keep digests; bad input is a typed error and stores no image.

mod common;

use common::require;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use molde_image::archive::rootfs::{self, RootfsOptions};
use molde_image::archive::{self, ArchiveError, ImportOptions, docker, oci};
use molde_image::blob::BlobError;
use molde_image::layerfs::Digest;
use molde_image::{Image, ImageBuilder, Layer, LayerMediaType, Store};

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

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A store with two tagged images sharing a gzip base layer: `demo:v1` (base + app, tar)
/// and `demo:v2` (base + other, zstd).
struct Fixture {
    store: Store,
    v1: Image,
    v2: Image,
}

fn fixture() -> Fixture {
    let store = Store::temporary().unwrap();
    let base = store
        .add_layer(&gzip(&layer_tar(&[("etc/os-release", b"ID=molde\n")]))[..])
        .unwrap()
        .layer;
    let app = store
        .add_layer(&layer_tar(&[("app/run", b"#!/bin/sh\necho hi\n")])[..])
        .unwrap()
        .layer;
    let other = store
        .add_layer(&zstd::encode_all(&layer_tar(&[("other", b"x")])[..], 3).unwrap()[..])
        .unwrap()
        .layer;
    assert_eq!(base.media_type, LayerMediaType::Gzip);
    assert_eq!(other.media_type, LayerMediaType::Zstd);
    let common = ImageBuilder::new()
        .created("2024-01-01T00:00:00Z")
        .layer(base, "ADD rootfs /")
        .env("PATH", "/usr/bin:/bin")
        .step("ENV PATH=/usr/bin:/bin");
    let v1 = store
        .commit(
            common
                .clone()
                .layer(app, "COPY run /app/run")
                .cmd(["/app/run"])
                .label("which", "v1")
                .expose("8080"),
        )
        .unwrap();
    let v2 = store
        .commit(common.layer(other, "RUN other").label("which", "v2"))
        .unwrap();
    store.tag(&v1, "demo:v1").unwrap();
    store.tag(&v2, "demo:v2").unwrap();
    Fixture { store, v1, v2 }
}

fn index_len(store: &Store) -> usize {
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(store.oci_dir().join("index.json")).unwrap()).unwrap();
    v["manifests"].as_array().unwrap().len()
}

/// The store has no image, and collecting leaves it empty: nothing was partially stored.
fn assert_nothing_stored(store: &Store) {
    assert_eq!(index_len(store), 0, "an image reached index.json");
    assert!(store.list().unwrap().is_empty());
    store.gc().unwrap();
    assert_eq!(store.counts().unwrap(), (0, 0));
    assert_eq!(
        fs::read_dir(store.root().join("molde/tmp"))
            .unwrap()
            .count(),
        0,
        "temp files left"
    );
}

fn same_image(a: &Image, b: &Image) {
    assert_eq!(a.manifest_digest(), b.manifest_digest());
    assert_eq!(a.id(), b.id());
    assert_eq!(a.layers(), b.layers());
    assert_eq!(a.history(), b.history());
}

#[test]
fn oci_dir_round_trip_keeps_digests_and_reports_existing_layers() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("layout");
    let exported = oci::export_dir(&f.store, &["demo:v1", "demo:v2"], &dir).unwrap();
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0].tag.as_ref().unwrap().to_string(), "demo:v1");
    // The layout holds exactly the blobs of both images, each named by its digest.
    let blobs: Vec<_> = fs::read_dir(dir.join("blobs/sha256")).unwrap().collect();
    assert_eq!(blobs.len(), 3 + 2 * 2, "3 layers, 2 configs, 2 manifests");
    for e in blobs {
        let e = e.unwrap();
        assert_eq!(
            Digest::of(&fs::read(e.path()).unwrap()).hex(),
            e.file_name().to_str().unwrap()
        );
    }

    let store = Store::temporary().unwrap();
    let report = oci::import_dir(&store, &dir, &ImportOptions::default()).unwrap();
    assert_eq!(report.images.len(), 2);
    same_image(&report.images[0].image, &f.v1);
    same_image(&report.images[1].image, &f.v2);
    assert_eq!(report.images[0].tags[0].to_string(), "demo:v1");
    // The shared base is new for this import, in both images.
    assert!(
        report
            .images
            .iter()
            .all(|i| i.layers.iter().all(|l| !l.existed))
    );
    same_image(&store.resolve("demo:v1").unwrap(), &f.v1);
    same_image(&store.resolve("demo:v2").unwrap(), &f.v2);
    assert_eq!(store.resolve("demo:v1").unwrap().cmd(), ["/app/run"]);

    // Again: every layer already exists, and the report says so as docker pull does.
    let again = oci::import_dir(&store, &dir, &ImportOptions::default()).unwrap();
    assert!(again.all_existed());
    let text = again.to_string();
    assert!(text.contains(": Already exists"), "{text}");
    assert!(text.contains("Loaded image: demo:v2"), "{text}");
    assert_eq!(store.list().unwrap().len(), 2);

    // A store holding only the base: its layer exists, the others are new.
    let partial = Store::temporary().unwrap();
    partial
        .add_layer(&gzip(&layer_tar(&[("etc/os-release", b"ID=molde\n")]))[..])
        .unwrap();
    let r = oci::import_dir(&partial, &dir, &ImportOptions::default()).unwrap();
    let existed: Vec<bool> = r.images[0].layers.iter().map(|l| l.existed).collect();
    assert_eq!(existed, [true, false]);

    // Exporting into the existing layout moves a tag and keeps the rest.
    oci::export_dir(&f.store, &[&f.v2.id().to_string()], &dir).unwrap();
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 3, "{idx}");
}

#[test]
fn oci_archive_round_trip_is_deterministic_and_streams_from_a_file() {
    let f = fixture();
    let mut a = Vec::new();
    oci::export_archive(&f.store, &["demo:v1", "demo:v2"], &mut a).unwrap();
    let mut b = Vec::new();
    oci::export_archive(&f.store, &["demo:v1", "demo:v2"], &mut b).unwrap();
    assert_eq!(a, b, "the same images give the same archive");

    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("images.tar");
    fs::write(&path, &a).unwrap();
    let store = Store::temporary().unwrap();
    let report = oci::import_archive(
        &store,
        fs::File::open(&path).unwrap(),
        &ImportOptions::default(),
    )
    .unwrap();
    same_image(&report.images[0].image, &f.v1);
    same_image(&report.images[1].image, &f.v2);
    assert!(!report.all_existed());
    // Re-importing reports everything as existing; import() finds the format itself.
    let again = archive::import(&store, &a[..], &ImportOptions::default()).unwrap();
    assert!(again.all_existed());
    assert_eq!(store.list().unwrap().len(), 2);
    // Exported from the importing store, the archive is byte for byte the same.
    let mut c = Vec::new();
    oci::export_archive(&store, &["demo:v1", "demo:v2"], &mut c).unwrap();
    assert_eq!(a, c);
}

fn tar_entries(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(tar_bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if !e.header().entry_type().is_file() {
            continue;
        }
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        out.insert(p, v);
    }
    out
}

#[test]
fn docker_archive_round_trip_keeps_ids_diff_ids_and_tags() {
    let f = fixture();
    let mut saved = Vec::new();
    docker::export(&f.store, &["demo:v1", "demo:v2"], &mut saved).unwrap();
    let entries = tar_entries(&saved);
    let manifest: serde_json::Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "demo:v1");
    assert_eq!(manifest[0]["Config"], format!("{}.json", f.v1.id().hex()));
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 2);
    let repos: serde_json::Value = serde_json::from_slice(&entries["repositories"]).unwrap();
    assert!(repos["demo"]["v1"].is_string() && repos["demo"]["v2"].is_string());
    // Layers are uncompressed tars whose digest is their DiffID.
    for (i, l) in f.v1.layers().iter().enumerate() {
        let path = manifest[0]["Layers"][i].as_str().unwrap();
        assert_eq!(Digest::of(&entries[path]), l.diff_id, "{path}");
    }
    // The shared base is written once.
    assert_eq!(manifest[0]["Layers"][0], manifest[1]["Layers"][0]);
    assert_eq!(
        entries.keys().filter(|k| k.ends_with("layer.tar")).count(),
        3
    );

    let store = Store::temporary().unwrap();
    let report = docker::import(&store, &saved[..]).unwrap();
    assert_eq!(report.images.len(), 2);
    for (got, want) in report.images.iter().zip([&f.v1, &f.v2]) {
        assert_eq!(
            got.image.id(),
            want.id(),
            "the config is kept byte for byte"
        );
        assert_eq!(got.image.diff_ids(), want.diff_ids());
        assert_eq!(got.image.history(), {
            // Layers come back uncompressed: same DiffIDs, digest = DiffID.
            let mut h = want.history();
            for e in &mut h {
                if let Some(l) = &mut e.layer {
                    let size = entries
                        .iter()
                        .find(|(_, v)| Digest::of(v) == l.diff_id)
                        .map(|(_, v)| v.len() as u64)
                        .unwrap();
                    *l = Layer {
                        digest: l.diff_id,
                        diff_id: l.diff_id,
                        size,
                        media_type: LayerMediaType::Tar,
                    };
                }
            }
            h
        });
    }
    assert_eq!(store.resolve("demo:v1").unwrap().id(), f.v1.id());
    assert_eq!(report.images[1].image.labels()["which"], "v2");
    let again = archive::import(&store, &saved[..], &ImportOptions::default()).unwrap();
    assert!(again.all_existed());

    // An image whose layers are all plain tars keeps its manifest digest as well.
    let plain = f
        .store
        .commit(
            ImageBuilder::new()
                .created("2024-01-01T00:00:00Z")
                .layer(f.v1.layers()[1], "COPY run /app/run"),
        )
        .unwrap();
    let mut saved = Vec::new();
    docker::export(&f.store, &[&plain.id().to_string()], &mut saved).unwrap();
    let other = Store::temporary().unwrap();
    let r = docker::import(&other, &saved[..]).unwrap();
    same_image(&r.images[0].image, &plain);
    assert!(r.images[0].tags.is_empty());
    assert!(r.to_string().starts_with(&format!(
        "{}: Imported\nLoaded image ID: {}",
        &plain.layers()[0].digest.hex()[..12],
        plain.id()
    )));
}

#[test]
fn rootfs_tarball_becomes_a_one_layer_image() {
    let store = Store::temporary().unwrap();
    let tar = layer_tar(&[
        ("bin/hello", b"#!/bin/sh\necho hello\n"),
        ("etc/hostname", b"box"),
    ]);
    for (bytes, mt) in [
        (tar.clone(), LayerMediaType::Tar),
        (gzip(&tar), LayerMediaType::Gzip),
    ] {
        let imported = rootfs::import(
            &store,
            &bytes[..],
            RootfsOptions {
                builder: ImageBuilder::new().cmd(["/bin/hello"]),
                comment: "Imported from hello.tar".into(),
                tag: Some(format!(
                    "hello:{}",
                    if mt == LayerMediaType::Tar {
                        "tar"
                    } else {
                        "gz"
                    }
                )),
                ..RootfsOptions::default()
            },
        )
        .unwrap();
        let image = &imported.image;
        assert_eq!(image.layers().len(), 1);
        assert_eq!(image.layers()[0].media_type, mt);
        assert_eq!(image.layers()[0].diff_id, Digest::of(&tar));
        assert_eq!(image.layers()[0].digest, Digest::of(&bytes));
        assert!(!imported.layers[0].existed);
        let h = image.history();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].comment.as_deref(), Some("Imported from hello.tar"));
        assert_eq!(h[0].layer, Some(image.layers()[0]));
        assert_eq!(image.cmd(), ["/bin/hello"]);
        assert!(image.history_table().contains("Imported from hello.tar"));
    }
    assert_eq!(
        store.resolve("hello:gz").unwrap().diff_ids(),
        [Digest::of(&tar)]
    );
    let again = rootfs::import(&store, &tar[..], RootfsOptions::default()).unwrap();
    assert!(again.layers[0].existed);
}

#[test]
fn a_rootfs_that_is_not_a_whole_tar_is_refused() {
    let tar = layer_tar(&[("big", &[7u8; 5000][..]), ("small", b"x")]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"this is not a tar archive, not at all".repeat(20)),
        ("cut in data", tar[..1500].to_vec()),
        ("cut at an entry", tar[..512 + 5120].to_vec()),
        ("gzip cut", gzip(&tar)[..40].to_vec()),
    ];
    for (why, bytes) in cases {
        let store = Store::temporary().unwrap();
        let err = rootfs::import(
            &store,
            &bytes[..],
            RootfsOptions {
                tag: Some("x:1".into()),
                ..RootfsOptions::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Truncated { .. }
                    | ArchiveError::Format { .. }
                    | ArchiveError::Io { .. }
            ),
            "{why}: {err:?}"
        );
        assert_nothing_stored(&store);
    }
    let store = Store::temporary().unwrap();
    let err = rootfs::import(
        &store,
        &tar[..],
        RootfsOptions {
            tag: Some("Not A Tag".into()),
            ..RootfsOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Reference(_)), "{err:?}");
    assert_nothing_stored(&store);
}

// ---- bad input ----

fn exported_dir(f: &Fixture) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    oci::export_dir(&f.store, &["demo:v1"], out.path()).unwrap();
    out
}

fn blob_path(dir: &Path, d: &Digest) -> std::path::PathBuf {
    dir.join("blobs/sha256").join(d.hex())
}

fn replace_file(path: &Path, bytes: &[u8]) {
    let _ = fs::remove_file(path);
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_blob_whose_digest_does_not_match_is_refused_naming_both() {
    let f = fixture();
    let out = exported_dir(&f);
    // Same length, different content: only the digest can tell.
    let app = f.v1.layers()[1];
    let p = blob_path(out.path(), &app.digest);
    let mut bytes = fs::read(&p).unwrap();
    bytes[600] ^= 0xff;
    let actual = Digest::of(&bytes);
    replace_file(&p, &bytes);
    let store = Store::temporary().unwrap();
    let err = oci::import_dir(&store, out.path(), &ImportOptions::default()).unwrap_err();
    match &err {
        ArchiveError::Blob {
            source:
                BlobError::DigestMismatch {
                    expected,
                    actual: a,
                },
            ..
        } => {
            assert_eq!(*expected, app.digest);
            assert_eq!(*a, actual);
        }
        e => panic!("wrong error {e:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&app.digest.to_string()) && msg.contains(&actual.to_string()),
        "{msg}"
    );
    assert_nothing_stored(&store);

    // The same in an archive: an entry whose content is not what its name says.
    let mut tar = Vec::new();
    oci::export_archive(&f.store, &["demo:v1"], &mut tar).unwrap();
    let name = format!("blobs/sha256/{}", app.digest.hex());
    let bad = rewrite(&tar, |p, data| {
        Some((p.to_owned(), if p == name { bytes.clone() } else { data }))
    });
    let store = Store::temporary().unwrap();
    let err = archive::import(&store, &bad[..], &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Blob { source: BlobError::DigestMismatch { expected, actual: a }, .. }
            if *expected == app.digest && *a == actual),
        "{err:?}"
    );
    assert_nothing_stored(&store);
    // Even when the store already has the real blob, a wrong entry is refused.
    let err = archive::import(&f.store, &bad[..], &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Blob { .. }), "{err:?}");
}

/// Rebuild a tar, mapping each regular file entry (path, data) to a new one or dropping it.
fn rewrite(tar: &[u8], f: impl Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for (p, data) in tar_entries(tar) {
        if let Some((p, data)) = f(&p, data) {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            out.append_data(&mut h, p, &data[..]).unwrap();
        }
    }
    out.into_inner().unwrap()
}

#[test]
fn a_truncated_archive_is_refused_wherever_it_is_cut() {
    let f = fixture();
    let mut oci_tar = Vec::new();
    oci::export_archive(&f.store, &["demo:v1", "demo:v2"], &mut oci_tar).unwrap();
    let mut docker_tar = Vec::new();
    docker::export(&f.store, &["demo:v1"], &mut docker_tar).unwrap();
    for (kind, tar) in [("oci", &oci_tar), ("docker", &docker_tar)] {
        // Every 512-byte boundary (between entries or in data) and some odd places.
        let data_end = tar.len() - 1024;
        let mut cuts: Vec<usize> = (0..data_end).step_by(512).collect();
        cuts.extend([1, 100, 700, data_end / 2 + 3, data_end - 1]);
        for cut in cuts {
            let store = Store::temporary().unwrap();
            let err = archive::import(&store, &tar[..cut], &ImportOptions::default())
                .expect_err(&format!("{kind} cut at {cut} of {}", tar.len()));
            assert!(
                matches!(err, ArchiveError::Truncated { .. }),
                "{kind} cut at {cut}: {err:?}"
            );
            assert_nothing_stored(&store);
        }
    }
    // A stream that ends with the first end-of-archive block is whole.
    let store = Store::temporary().unwrap();
    archive::import(
        &store,
        &oci_tar[..oci_tar.len() - 512],
        &ImportOptions::default(),
    )
    .unwrap();
}

#[test]
fn a_manifest_naming_a_missing_blob_is_refused() {
    let f = fixture();
    let app = f.v1.layers()[1];
    let out = exported_dir(&f);
    fs::remove_file(blob_path(out.path(), &app.digest)).unwrap();
    let store = Store::temporary().unwrap();
    let err = oci::import_dir(&store, out.path(), &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::MissingBlob { digest, what } if *digest == app.digest && what.contains(&f.v1.manifest_digest().to_string())),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
    assert_nothing_stored(&store);

    // The config missing, in an archive.
    let mut tar = Vec::new();
    oci::export_archive(&f.store, &["demo:v1"], &mut tar).unwrap();
    let config = format!("blobs/sha256/{}", f.v1.id().hex());
    let bad = rewrite(&tar, |p, d| (p != config).then(|| (p.to_owned(), d)));
    let store = Store::temporary().unwrap();
    let err = oci::import_archive(&store, &bad[..], &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::MissingBlob { digest, .. } if *digest == f.v1.id()),
        "{err:?}"
    );
    assert_nothing_stored(&store);

    // A docker-archive whose manifest.json names a layer file it lacks.
    let mut saved = Vec::new();
    docker::export(&f.store, &["demo:v1"], &mut saved).unwrap();
    let bad = rewrite(&saved, |p, d| {
        let keep = !(p.ends_with("layer.tar") && d.len() as u64 == app.size);
        keep.then(|| (p.to_owned(), d))
    });
    let store = Store::temporary().unwrap();
    let err = docker::import(&store, &bad[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::MissingFile { .. }), "{err:?}");
    assert_nothing_stored(&store);
}

/// Replace the manifest of `demo:v1` in an exported layout by `edit(manifest)`.
fn edit_manifest(dir: &Path, image: &Image, edit: impl Fn(&mut serde_json::Value)) {
    let old = blob_path(dir, &image.manifest_digest());
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&old).unwrap()).unwrap();
    edit(&mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = Digest::of(&bytes);
    fs::write(blob_path(dir, &d), &bytes).unwrap();
    let idx_path = dir.join("index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&fs::read(&idx_path).unwrap()).unwrap();
    idx["manifests"][0]["digest"] = d.to_string().into();
    idx["manifests"][0]["size"] = bytes.len().into();
    fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
}

#[test]
fn an_unknown_media_type_is_refused() {
    let f = fixture();
    let out = exported_dir(&f);
    edit_manifest(out.path(), &f.v1, |m| {
        m["layers"][1]["mediaType"] = "application/vnd.example.mystery.layer".into();
    });
    let store = Store::temporary().unwrap();
    let err = oci::import_dir(&store, out.path(), &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::UnsupportedMediaType { media_type, .. } if media_type == "application/vnd.example.mystery.layer"),
        "{err:?}"
    );
    assert_nothing_stored(&store);

    // An index entry that is not an image manifest (an artifact).
    let out = exported_dir(&f);
    let idx_path = out.path().join("index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&fs::read(&idx_path).unwrap()).unwrap();
    idx["manifests"][0]["mediaType"] = "application/vnd.example.artifact+json".into();
    fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    let err = oci::import_dir(&store, out.path(), &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::UnsupportedMediaType { .. }),
        "{err:?}"
    );
    // A config of another kind.
    let out = exported_dir(&f);
    edit_manifest(out.path(), &f.v1, |m| {
        m["config"]["mediaType"] = "application/vnd.example.config+json".into();
    });
    let err = oci::import_dir(&store, out.path(), &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::UnsupportedMediaType { .. }),
        "{err:?}"
    );
    assert_nothing_stored(&store);
}

#[test]
fn an_invalid_reference_is_refused() {
    let f = fixture();
    let out = exported_dir(&f);
    let idx_path = out.path().join("index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&fs::read(&idx_path).unwrap()).unwrap();
    idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "Bad Name:v1".into();
    fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    let store = Store::temporary().unwrap();
    let err = oci::import_dir(&store, out.path(), &ImportOptions::default()).unwrap_err();
    match &err {
        ArchiveError::Reference(e) => assert_eq!(e.input, "Bad Name:v1"),
        e => panic!("wrong error {e:?}"),
    }
    assert_nothing_stored(&store);

    let mut saved = Vec::new();
    docker::export(&f.store, &["demo:v1"], &mut saved).unwrap();
    let bad = rewrite(&saved, |p, d| {
        if p == "manifest.json" {
            let mut m: serde_json::Value = serde_json::from_slice(&d).unwrap();
            m[0]["RepoTags"][0] = "UPPER/Case:x".into();
            Some((p.to_owned(), serde_json::to_vec(&m).unwrap()))
        } else {
            Some((p.to_owned(), d))
        }
    });
    let store = Store::temporary().unwrap();
    let err = docker::import(&store, &bad[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::Reference(_)), "{err:?}");
    assert_nothing_stored(&store);
}

#[test]
fn a_docker_layer_that_does_not_match_its_diff_id_is_refused() {
    let f = fixture();
    let mut saved = Vec::new();
    docker::export(&f.store, &["demo:v1"], &mut saved).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&tar_entries(&saved)["manifest.json"]).unwrap();
    let top = manifest[0]["Layers"][1].as_str().unwrap().to_owned();
    let evil = layer_tar(&[("app/run", b"#!/bin/sh\nrm -rf /\n")]);
    let bad = rewrite(&saved, |p, d| {
        Some((p.to_owned(), if p == top { evil.clone() } else { d }))
    });
    let store = Store::temporary().unwrap();
    let err = docker::import(&store, &bad[..]).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::DiffIdMismatch { expected, actual, .. }
            if *expected == f.v1.layers()[1].diff_id && *actual == Digest::of(&evil)),
        "{err:?}"
    );
    assert_nothing_stored(&store);
}

#[test]
fn bare_tags_take_the_repository_given() {
    let f = fixture();
    let out = exported_dir(&f);
    let idx_path = out.path().join("index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&fs::read(&idx_path).unwrap()).unwrap();
    idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "stable".into();
    fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    let store = Store::temporary().unwrap();
    let options = ImportOptions {
        repository: Some("example.com/team/app".into()),
    };
    let r = oci::import_dir(&store, out.path(), &options).unwrap();
    assert_eq!(
        r.images[0].tags[0].to_string(),
        "example.com/team/app:stable"
    );
    assert_eq!(
        store.resolve("example.com/team/app:stable").unwrap().id(),
        f.v1.id()
    );
}

#[test]
fn a_nested_index_imports_the_manifest_of_this_platform() {
    let f = fixture();
    let out = exported_dir(&f);
    let dir = out.path();
    let idx_path = dir.join("index.json");
    let idx: serde_json::Value = serde_json::from_slice(&fs::read(&idx_path).unwrap()).unwrap();
    let mut desc = idx["manifests"][0].clone();
    desc.as_object_mut().unwrap().remove("annotations");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let mut mine = desc.clone();
    mine["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
    let mut foreign = desc;
    foreign["digest"] = Digest::of(b"not here").to_string().into();
    foreign["platform"] = serde_json::json!({"os": "linux", "architecture": "s390x"});
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [foreign, mine],
    });
    let bytes = serde_json::to_vec(&nested).unwrap();
    let d = Digest::of(&bytes);
    fs::write(blob_path(dir, &d), &bytes).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d.to_string(),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi:1"},
        }],
    });
    fs::write(&idx_path, serde_json::to_vec(&top).unwrap()).unwrap();
    let store = Store::temporary().unwrap();
    let r = oci::import_dir(&store, dir, &ImportOptions::default()).unwrap();
    same_image(&r.images[0].image, &f.v1);
    assert_eq!(store.resolve("multi:1").unwrap().id(), f.v1.id());
}

// ---- real peers ----

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skopeo(args: &[String]) {
    let out = std::process::Command::new("skopeo")
        .arg("--insecure-policy")
        .arg("copy")
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn skopeo_copies_our_exports_and_we_import_what_it_writes() {
    if !require(have("skopeo"), "skopeo is not installed") {
        return;
    }
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let p = |name: &str| out.path().join(name).display().to_string();
    oci::export_dir(&f.store, &["demo:v1"], &out.path().join("ours")).unwrap();
    let mut tar = Vec::new();
    oci::export_archive(&f.store, &["demo:v2"], &mut tar).unwrap();
    fs::write(out.path().join("ours.tar"), &tar).unwrap();
    let mut saved = Vec::new();
    docker::export(&f.store, &["demo:v1"], &mut saved).unwrap();
    fs::write(out.path().join("ours-docker.tar"), &saved).unwrap();

    // Our layout -> docker-archive and oci-archive; our oci-archive -> a layout; our
    // docker-archive -> a layout.
    skopeo(&[
        format!("oci:{}:demo:v1", p("ours")),
        format!("docker-archive:{}:demo:v1", p("sk-docker.tar")),
    ]);
    skopeo(&[
        format!("oci:{}:demo:v1", p("ours")),
        format!("oci-archive:{}:demo:v1", p("sk-oci.tar")),
    ]);
    skopeo(&[
        format!("oci-archive:{}:demo:v2", p("ours.tar")),
        format!("oci:{}:v2", p("sk-layout")),
    ]);
    skopeo(&[
        format!("docker-archive:{}", p("ours-docker.tar")),
        format!("oci:{}:demo:v1", p("sk-from-docker")),
    ]);
    // And back from skopeo's docker-archive to an oci-archive.
    skopeo(&[
        format!("docker-archive:{}", p("sk-docker.tar")),
        format!("oci-archive:{}:demo:v1", p("sk-back.tar")),
    ]);

    let store = Store::temporary().unwrap();
    let open = |n: &str| fs::File::open(out.path().join(n)).unwrap();
    let r = docker::import(&store, open("sk-docker.tar")).unwrap();
    assert_eq!(r.images[0].image.diff_ids(), f.v1.diff_ids());
    assert_eq!(r.images[0].image.id(), f.v1.id());
    assert_eq!(r.images[0].tags[0].to_string(), "demo:v1");
    assert!(!r.images[0].layers.iter().all(|l| l.existed));
    // skopeo compresses the plain tar layer for an OCI destination: the manifest changes,
    // the config (the image id) and the DiffIDs do not.
    let r = oci::import_archive(&store, open("sk-oci.tar"), &ImportOptions::default()).unwrap();
    assert_eq!(r.images[0].image.id(), f.v1.id());
    assert_eq!(r.images[0].image.diff_ids(), f.v1.diff_ids());
    let r = oci::import_dir(
        &store,
        &out.path().join("sk-layout"),
        &ImportOptions {
            repository: Some("demo".into()),
        },
    )
    .unwrap();
    assert_eq!(r.images[0].image.diff_ids(), f.v2.diff_ids());
    assert_eq!(r.images[0].tags[0].to_string(), "demo:v2");
    let r = oci::import_dir(
        &store,
        &out.path().join("sk-from-docker"),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(r.images[0].image.diff_ids(), f.v1.diff_ids());
    assert_eq!(r.images[0].image.env(), f.v1.env());
    let r = archive::import(&store, open("sk-back.tar"), &ImportOptions::default()).unwrap();
    assert_eq!(r.images[0].image.diff_ids(), f.v1.diff_ids());
    assert_eq!(r.images[0].image.cmd(), ["/app/run"]);
    assert_eq!(
        store.resolve("demo:v1").unwrap().diff_ids(),
        f.v1.diff_ids()
    );
}

#[test]
fn umoci_unpacks_an_exported_layout() {
    if !require(have("umoci"), "umoci is not installed") {
        return;
    }
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    // umoci 0.4 reads gzip and plain layers (demo:v1), not zstd (demo:v2).
    oci::export_dir(&f.store, &["demo:v1", "demo:v2"], &layout).unwrap();
    let bundle = out.path().join("bundle");
    let res = std::process::Command::new("umoci")
        .args(["raw", "unpack", "--rootless", "--image"])
        .arg(format!("{}:demo:v1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        fs::read(bundle.join("app/run")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        fs::read(bundle.join("etc/os-release")).unwrap(),
        b"ID=molde\n"
    );
}

/// docker 25+ writes both: an OCI layout and a `manifest.json` naming `blobs/sha256/...`
/// files (compressed layers included). Either reading of it gives the same image.
#[test]
fn a_docker_25_archive_reads_as_either_format() {
    let f = fixture();
    let mut tar = Vec::new();
    oci::export_archive(&f.store, &["demo:v1"], &mut tar).unwrap();
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", f.v1.id().hex()),
        "RepoTags": ["docker.io/library/demo:v1"],
        "Layers": f.v1.layers().iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
    }]);
    let mut entries = tar_entries(&tar);
    entries.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, &d[..]).unwrap();
    }
    let both = b.into_inner().unwrap();

    let store = Store::temporary().unwrap();
    let r = docker::import(&store, &both[..]).unwrap();
    // The layers are kept as stored (gzip stays gzip), so even the manifest is the same.
    same_image(&r.images[0].image, &f.v1);
    assert_eq!(r.images[0].tags[0].to_string(), "demo:v1");
    let store = Store::temporary().unwrap();
    let r = archive::import(&store, &both[..], &ImportOptions::default()).unwrap();
    same_image(&r.images[0].image, &f.v1);
}
