//! Fuzzing the importers of outside data with proptest (issue 11): oci-archives,
//! docker-archives and OCI layout directories, mutated at the byte level and document by
//! document (the index, manifests and image configs as JSON values). Whatever the input, an
//! import must not panic, and one that fails must leave no image behind (the store lists what
//! it listed before).
//!
//! Cases per property: `PROPTEST_CASES` (default 64; `cargo xtask fuzz` runs many more in
//! release mode). A failing case proptest finds is kept in `archive_fuzz.proptest-regressions`
//! and replayed first from then on.

mod mutate;

use std::io::Read;
use std::sync::OnceLock;

use molde_image::archive::{self, ImportOptions, docker, oci};
use molde_image::{ImageBuilder, Store};
use mutate::{JsonOp, apply, byte_op, json_op, mutate_json};
use proptest::prelude::*;
use serde_json::Value;

/// An archive's files by path, in order.
type Files = Vec<(String, Vec<u8>)>;

/// A small image (two layers, a config with every usual field) exported both ways.
struct Seeds {
    oci: Vec<u8>,
    docker: Vec<u8>,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let store = Store::temporary().unwrap();
        let layer = |name: &str, body: &[u8]| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, body).unwrap();
            store.add_layer(&b.into_inner().unwrap()[..]).unwrap().layer
        };
        let (a, b) = (layer("etc/motd", b"hi\n"), layer("bin/app", b"#!/bin/sh\n"));
        let image = store
            .commit(
                ImageBuilder::new()
                    .layer(a, "ADD motd")
                    .layer(b, "ADD app")
                    .env("PATH", "/bin")
                    .cmd(["/bin/app"])
                    .user("1000")
                    .expose("80/tcp")
                    .label("k", "v"),
            )
            .unwrap();
        store.tag(&image, "seed:1").unwrap();
        let (mut o, mut d) = (Vec::new(), Vec::new());
        oci::export_archive(&store, &["seed:1"], &mut o).unwrap();
        docker::export(&store, &["seed:1"], &mut d).unwrap();
        Seeds { oci: o, docker: d }
    })
}

fn untar(bytes: &[u8]) -> Files {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        out.push((path, body));
    }
    out
}

fn retar(files: &Files) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        // A path the ustar header cannot hold is left out: the case is still a mutation.
        let _ = b.append_data(&mut h, path, &body[..]);
    }
    b.into_inner().unwrap()
}

/// Import `bytes` into a fresh store: no panic; on failure, no image listed.
fn import_checked(bytes: &[u8]) {
    let store = Store::temporary().unwrap();
    let result = archive::import(&store, bytes, &ImportOptions::default());
    let listed = store.list().unwrap();
    match result {
        Ok(report) => assert_eq!(listed.len(), report.images.len().min(listed.len())),
        Err(e) => {
            assert!(listed.is_empty(), "a failed import ({e}) left {listed:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Mutate the JSON documents of `files` (index, manifests, configs: every `.json` file and
/// every blob that parses as JSON), one op each, chosen by index.
fn mutate_documents(files: &mut Files, ops: &[(usize, JsonOp)]) {
    let docs: Vec<usize> = files
        .iter()
        .enumerate()
        .filter(|(_, (_, body))| serde_json::from_slice::<Value>(body).is_ok())
        .map(|(i, _)| i)
        .collect();
    for (which, op) in ops {
        let i = docs[which % docs.len()];
        let mut doc: Value = serde_json::from_slice(&files[i].1).unwrap();
        mutate_json(&mut doc, op);
        files[i].1 = serde_json::to_vec(&doc).unwrap();
    }
}

proptest! {
    // Findings are kept beside this file and replayed first (`PROPTEST_CASES` sets how many
    // new cases run).
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn oci_archive_bytes(ops in prop::collection::vec(byte_op(), 1..6)) {
        import_checked(&apply(&seeds().oci, &ops));
    }

    #[test]
    fn docker_archive_bytes(ops in prop::collection::vec(byte_op(), 1..6)) {
        import_checked(&apply(&seeds().docker, &ops));
    }

    #[test]
    fn oci_archive_documents(ops in prop::collection::vec((any::<usize>(), json_op()), 1..4)) {
        let mut files = untar(&seeds().oci);
        mutate_documents(&mut files, &ops);
        import_checked(&retar(&files));
    }

    #[test]
    fn docker_archive_documents(ops in prop::collection::vec((any::<usize>(), json_op()), 1..4)) {
        let mut files = untar(&seeds().docker);
        mutate_documents(&mut files, &ops);
        import_checked(&retar(&files));
    }

    #[test]
    fn oci_layout_directory(ops in prop::collection::vec((any::<usize>(), json_op()), 1..4)) {
        let mut files = untar(&seeds().oci);
        mutate_documents(&mut files, &ops);
        let dir = tempfile::tempdir().unwrap();
        for (path, body) in &files {
            let rel = std::path::Path::new(path);
            let rel = rel.strip_prefix("./").unwrap_or(rel);
            if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                continue;
            }
            let target = dir.path().join(rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, body).unwrap();
        }
        let store = Store::temporary().unwrap();
        let result = oci::import_dir(&store, dir.path(), &ImportOptions::default());
        let listed = store.list().unwrap();
        if let Err(e) = result {
            prop_assert!(listed.is_empty(), "a failed import ({}) left {:?}", e, listed);
        }
    }
}

#[test]
fn the_seeds_import_unchanged() {
    for bytes in [&seeds().oci, &seeds().docker] {
        let store = Store::temporary().unwrap();
        let report = archive::import(&store, &bytes[..], &ImportOptions::default()).unwrap();
        assert_eq!(report.images.len(), 1);
        let files = untar(bytes);
        let again = Store::temporary().unwrap();
        archive::import(&again, &retar(&files)[..], &ImportOptions::default()).unwrap();
    }
}
