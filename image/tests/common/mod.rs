//! Helpers shared by the image integration tests (include with `mod common;`).
#![allow(dead_code)]

/// Whether a test that needs `ok` (a privilege, a tool) can run: when not, the test is skipped
/// with a line saying why, unless `MOLDE_REQUIRE_ALL=1` (set by `cargo xtask test`), in which
/// case the missing requirement fails the test.
pub fn require(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("MOLDE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("MOLDE_REQUIRE_ALL=1 and this test cannot run: {why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// A layer tar holding `files` (path, content): regular files, mode 0644, a fixed mtime.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
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

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The layer of `blob` (a layer tar, plain or compressed) added to `store`.
pub fn add_layer(store: &molde_image::Store, blob: &[u8]) -> molde_image::Layer {
    store.add_layer(blob).unwrap().layer
}

/// Commit an image of `layers` (each with its history line, bottom first), created
/// 2024-01-01T00:00:00Z, and tag it `tag`.
pub fn commit_tagged(
    store: &molde_image::Store,
    layers: Vec<(molde_image::Layer, &str)>,
    tag: &str,
) -> molde_image::Image {
    let builder = layers.into_iter().fold(
        molde_image::ImageBuilder::new().created("2024-01-01T00:00:00Z"),
        |b, (layer, created_by)| b.layer(layer, created_by),
    );
    let image = store.commit(builder).unwrap();
    store.tag(&image, tag).unwrap();
    image
}
