//! Registry figures against a real `docker-registry` on 127.0.0.1 and skopeo:
//! - `pull-skopeo`: molde's pull of a 5-layer image (~200 MB of tar, gzip'd) into an empty
//!   store, unpacked and ready to run, against `skopeo copy docker://... oci:DIR` (which only
//!   downloads);
//! - `pull-shared`: the pull of an image sharing 4 of its 5 layers with one in the store,
//!   against its cold pull (the bytes fetched are checked to be the new layer's size);
//! - `push-skopeo`: molde's push of the image against `skopeo copy oci:DIR docker://...`, each
//!   into a registry of its own started for the run (so neither finds blobs it could mount).
//!
//! Every run writes to a fresh tmpfs.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use molde::image::archive::oci;
use molde::image::{Image, ImageBuilder, Store};
use molde::registry::{Pull, Push};

use super::regcommon::Registry;
use super::{Figure, Tmpfs, XorShift, interleave, run_child, run_peer};

const LAYERS: usize = 5;
const FILES_PER_LAYER: usize = 200;
const FILE_SIZE: usize = 200 * 1024;

/// Child mode: `pull REF ROOT` or `push ROOT IMAGE TARGET`.
pub fn child(args: &[String]) {
    match args[0].as_str() {
        "pull" => {
            let store = Store::open(&args[2]).expect("store");
            Pull::new(&store, &args[1]).run().expect("pull");
        }
        "push" => {
            let store = Store::open(&args[1]).expect("store");
            Push::new(&store, &args[2], &args[3]).run().expect("push");
        }
        other => panic!("unknown registry child {other}"),
    }
}

/// A gzip layer of `FILES_PER_LAYER` files, half random and half repeated bytes.
fn layer(store: &Store, seed: u64) -> molde::image::Layer {
    let mut rng = XorShift(seed | 1);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut data = vec![0u8; FILE_SIZE];
    for i in 0..FILES_PER_LAYER {
        rng.fill(&mut data[..FILE_SIZE / 2]);
        for (j, byte) in data.iter_mut().enumerate().skip(FILE_SIZE / 2) {
            *byte = b"molde registry bench "[j % 21];
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(FILE_SIZE as u64);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("layer{seed}/f{i:04}"), &data[..])
            .unwrap();
    }
    let mut gz = b.into_inner().unwrap();
    gz.flush().unwrap();
    let bytes = gz.finish().unwrap();
    store.add_layer(&bytes[..]).unwrap().layer
}

fn image(store: &Store, layers: &[molde::image::Layer], tag: &str) -> Image {
    let mut b = ImageBuilder::new().cmd(["/bin/sh"]);
    for (i, l) in layers.iter().enumerate() {
        b = b.layer(*l, format!("ADD layer {i}"));
    }
    let image = store.commit(b).unwrap();
    store.tag(&image, tag).unwrap();
    image
}

fn skopeo(args: &[&str]) -> Command {
    let mut c = Command::new("skopeo");
    c.args(["--insecure-policy", "copy", "--quiet"]).args(args);
    c
}

pub fn figures(fixtures: &Path, pairs: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    let names = ["pull-skopeo", "pull-shared", "push-skopeo"];
    if !names.iter().any(|n| wanted(n)) {
        return Vec::new();
    }
    let pairs = pairs.min(8);
    eprintln!("registry: making a {LAYERS}-layer image and pushing it to a local registry");
    let dir = tempfile::tempdir_in(fixtures).expect("tempdir");
    let src = Store::open(dir.path().join("store")).expect("store");
    let layers: Vec<_> = (0..LAYERS as u64).map(|i| layer(&src, 100 + i)).collect();
    let mut shared = layers[..LAYERS - 1].to_vec();
    shared.push(layer(&src, 999));
    let a = image(&src, &layers, "bench/a:1");
    let b = image(&src, &shared, "bench/b:1");
    let export = dir.path().join("oci");
    oci::export_dir(&src, &["bench/a:1"], &export).unwrap();
    let reg = Registry::start();
    let ref_a = reg.reference("bench/a:1");
    let ref_b = reg.reference("bench/b:1");
    Push::new(&src, "bench/a:1", &ref_a).run().unwrap();
    Push::new(&src, "bench/b:1", &ref_b).run().unwrap();
    let blob_mb = a.layers().iter().map(|l| l.size).sum::<u64>() / 1_000_000;
    let tar_mb = (LAYERS * FILES_PER_LAYER * FILE_SIZE) / 1_000_000;
    let note = format!("{LAYERS} gzip layers, {tar_mb} MB of tar, {blob_mb} MB of blobs");
    let mut out = Vec::new();
    if wanted("pull-skopeo") {
        eprintln!("pull-skopeo: molde pull (unpacked) vs skopeo copy to oci: ({pairs} pairs)");
        let (ratios, molde, peers, rss) = interleave(
            pairs,
            || {
                let fs = Tmpfs::new();
                let root = fs.path().join("store");
                run_child(&["pull", &ref_a, root.to_str().unwrap()])
            },
            || {
                let fs = Tmpfs::new();
                let dest = format!("oci:{}:a", fs.path().join("oci").display());
                run_peer(&mut skopeo(&[
                    "--src-tls-verify=false",
                    &format!("docker://{ref_a}"),
                    &dest,
                ]))
            },
        );
        out.push(Figure {
            name: "pull-skopeo",
            peer: "skopeo copy docker:// oci:",
            goal: 0.6,
            ratios,
            molde,
            peers,
            rss_kib: rss,
            molde_cmd: "Pull::new(&store, \"127.0.0.1:PORT/bench/a:1\").run() into an empty store \
                        (layers unpacked)"
                .into(),
            peer_cmd: "skopeo copy docker://127.0.0.1:PORT/bench/a:1 oci:<fresh tmpfs>/oci:a"
                .into(),
            note: note.clone(),
        });
    }
    if wanted("pull-shared") {
        out.push(pull_shared(&ref_a, &ref_b, &b, pairs, &note));
    }
    if wanted("push-skopeo") {
        out.push(push_skopeo(dir.path(), &export, pairs, &note));
    }
    out
}

fn pull_shared(ref_a: &str, ref_b: &str, b: &Image, pairs: usize, note: &str) -> Figure {
    eprintln!("pull-shared: pull sharing 4 of 5 layers vs its cold pull ({pairs} pairs)");
    // Checked once: only the new layer is fetched.
    let fs = Tmpfs::new();
    let store = Store::open(fs.path().join("store")).unwrap();
    Pull::new(&store, ref_a).run().unwrap();
    let report = Pull::new(&store, ref_b).run().unwrap();
    assert_eq!(
        report.bytes_fetched,
        b.layers()[LAYERS - 1].size,
        "fetched more than the new layer"
    );
    let fetched = report.bytes_fetched;
    drop((store, fs));
    let (ratios, molde, peers, rss) = interleave(
        pairs,
        || {
            let fs = Tmpfs::new();
            let root = fs.path().join("store");
            let store = Store::open(&root).unwrap();
            Pull::new(&store, ref_a).run().unwrap();
            drop(store);
            run_child(&["pull", ref_b, root.to_str().unwrap()])
        },
        || {
            let fs = Tmpfs::new();
            let root = fs.path().join("store");
            run_child(&["pull", ref_b, root.to_str().unwrap()]).0
        },
    );
    Figure {
        name: "pull-shared",
        peer: "cold pull",
        goal: 0.1,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "Pull of bench/b:1 into a store holding bench/a:1 (4 of its 5 layers)".into(),
        peer_cmd: "the same pull into an empty store".into(),
        note: format!("{note}; bytes fetched: {fetched} (the new layer's blob)"),
    }
}

fn push_skopeo(dir: &Path, export: &Path, pairs: usize, note: &str) -> Figure {
    eprintln!("push-skopeo: molde push vs skopeo copy oci: docker:// ({pairs} pairs)");
    let root = dir.join("store");
    let src = format!("oci:{}:bench/a:1", export.display());
    let (ratios, molde, peers, rss) = interleave(
        pairs,
        || {
            let reg = Registry::start();
            let target = reg.reference("pushed/a:1");
            run_child(&["push", root.to_str().unwrap(), "bench/a:1", &target])
        },
        || {
            let reg = Registry::start();
            let target = format!("docker://{}", reg.reference("pushed/a:1"));
            std::thread::sleep(Duration::from_millis(1));
            run_peer(&mut skopeo(&["--dest-tls-verify=false", &src, &target]))
        },
    );
    Figure {
        name: "push-skopeo",
        peer: "skopeo copy oci: docker://",
        goal: 0.6,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd:
            "Push::new(&store, \"bench/a:1\", \"127.0.0.1:PORT/pushed/a:1\").run() to a fresh \
                    registry"
                .into(),
        peer_cmd: "skopeo copy oci:DIR:bench/a:1 docker://127.0.0.1:PORT/pushed/a:1 to a fresh \
                   registry"
            .into(),
        note: note.to_owned(),
    }
}
