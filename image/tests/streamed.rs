//! A layer streamed in (as a pull receives it), stored and unpacked in one pass
//! (`unpack::store_and_unpack`): the blob and the tree appear only once the digest, the size
//! and the DiffID are checked, the tree only when committed; on every failure the temp blob
//! and the staging directory go away, and the error says what was wrong with the bytes.

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use molde_image::blob::BlobError;
use molde_image::layerfs::Digest;
use molde_image::layerfs::digest::chain_id;
use molde_image::unpack::store_and_unpack;
use molde_image::{Layer, LayerMediaType, Store, StoreError};

mod common;
use common::layer_tar;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Pseudo-random bytes (a few MiB of them make the apply's 1 MiB chunks flow).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The descriptor of a blob holding `tar` (compressed as `blob` is).
fn layer_of(blob: &[u8], tar: &[u8], media_type: LayerMediaType) -> Layer {
    Layer {
        digest: Digest::of(blob),
        diff_id: Digest::of(tar),
        size: blob.len() as u64,
        media_type,
    }
}

fn entries(dir: PathBuf) -> Vec<String> {
    match fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Nothing of a failed stream is left: no blob, no temp file, no staged or unpacked tree.
fn assert_nothing_left(store: &Store, layer: &Layer, chain: &Digest) {
    assert!(!store.has_blob(&layer.digest), "blob stored");
    assert_eq!(entries(store.layout().tmp()), Vec::<String>::new());
    let layers: Vec<_> = entries(store.layout().layers())
        .into_iter()
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(layers, Vec::<String>::new(), "{chain}");
}

fn big_layer() -> Vec<u8> {
    layer_tar(&[
        ("etc/motd", b"streamed\n"),
        ("usr/bin/big", &noise(7, 3 << 19)),
        ("usr/share/doc", &noise(8, 1 << 19)),
    ])
}

#[test]
fn a_gzip_layer_is_stored_and_staged_then_visible_only_once_committed() {
    let store = Store::temporary().unwrap();
    let tar = big_layer();
    let blob = gzip(&tar);
    let layer = layer_of(&blob, &tar, LayerMediaType::Gzip);
    let chain = chain_id(&[layer.diff_id]).unwrap();
    let streamed = store_and_unpack(&store, &blob[..], &layer, chain).unwrap();
    assert!(!streamed.blob.existed);
    assert!(store.has_blob(&layer.digest));
    assert_eq!(
        fs::read(store.layout().blob(&layer.digest)).unwrap(),
        blob,
        "the blob is the bytes as received"
    );
    let staged = streamed.staged.expect("a fresh stack is staged");
    assert_eq!(staged.chain_id(), chain);
    let path = store.layout().layer(&chain);
    assert!(!path.exists(), "not visible before commit");
    let unpacked = staged.commit().unwrap();
    assert_eq!(unpacked.path, path);
    assert_eq!(fs::read(path.join("etc/motd")).unwrap(), b"streamed\n");
    assert_eq!(
        fs::metadata(path.join("usr/bin/big")).unwrap().len(),
        3 << 19
    );
    assert_eq!(entries(store.layout().tmp()), Vec::<String>::new());

    // The same stack again: only the blob is stored (here: found).
    let again = store_and_unpack(&store, &blob[..], &layer, chain).unwrap();
    assert!(again.staged.is_none());
    assert!(again.blob.existed);
}

#[test]
fn an_uncompressed_layer_has_its_digest_for_diff_id() {
    let store = Store::temporary().unwrap();
    let tar = big_layer();
    let layer = layer_of(&tar, &tar, LayerMediaType::Tar);
    assert_eq!(layer.digest, layer.diff_id);
    let chain = chain_id(&[layer.diff_id]).unwrap();
    let staged = store_and_unpack(&store, &tar[..], &layer, chain)
        .unwrap()
        .staged
        .unwrap();
    staged.commit().unwrap();
    assert_eq!(
        fs::read(store.layout().layer(&chain).join("usr/share/doc")).unwrap(),
        noise(8, 1 << 19)
    );
}

#[test]
fn an_uncommitted_staged_layer_goes_away_when_dropped() {
    let store = Store::temporary().unwrap();
    let tar = layer_tar(&[("a", b"1")]);
    let layer = layer_of(&tar, &tar, LayerMediaType::Tar);
    let chain = chain_id(&[layer.diff_id]).unwrap();
    let staged = store_and_unpack(&store, &tar[..], &layer, chain)
        .unwrap()
        .staged
        .unwrap();
    assert!(
        entries(store.layout().layers())
            .iter()
            .any(|n| n.ends_with(".tmp"))
    );
    drop(staged);
    let left: Vec<_> = entries(store.layout().layers())
        .into_iter()
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert!(store.has_blob(&layer.digest), "the verified blob stays");
}

#[test]
fn wrong_bytes_are_a_digest_mismatch_even_where_unpacking_fails_first() {
    let store = Store::temporary().unwrap();
    let tar = big_layer();
    let blob = gzip(&tar);
    let layer = layer_of(&blob, &tar, LayerMediaType::Gzip);
    let chain = chain_id(&[layer.diff_id]).unwrap();
    // Not a tar at all (the apply fails at once), but as long as the blob.
    let wrong = noise(1, blob.len());
    match store_and_unpack(&store, &wrong[..], &layer, chain) {
        Err(StoreError::Blob(BlobError::DigestMismatch { expected, actual })) => {
            assert_eq!(expected, layer.digest);
            assert_eq!(actual, Digest::of(&wrong));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_nothing_left(&store, &layer, &chain);
    // A valid layer, but not this one: unpacks fine, still refused.
    let other = gzip(&layer_tar(&[("x", b"y")]));
    match store_and_unpack(&store, &other[..], &layer, chain) {
        Err(StoreError::Blob(BlobError::DigestMismatch { .. })) => {}
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_nothing_left(&store, &layer, &chain);
}

#[test]
fn a_stream_longer_than_the_blob_is_refused_without_reading_it_all() {
    let store = Store::temporary().unwrap();
    let tar = big_layer();
    let mut layer = layer_of(&tar, &tar, LayerMediaType::Tar);
    layer.size = 4096;
    let chain = chain_id(&[layer.diff_id]).unwrap();
    let mut endless = io::repeat(0).take(1 << 40);
    let e = store_and_unpack(&store, &mut endless, &layer, chain).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Blob(BlobError::DigestMismatch { .. } | BlobError::SizeMismatch { .. })
        ),
        "{e}"
    );
    assert!(endless.limit() > (1 << 40) - (64 << 20), "stopped early");
    assert_nothing_left(&store, &layer, &chain);
}

#[test]
fn a_broken_stream_is_a_read_error_and_leaves_nothing() {
    struct Breaks(Vec<u8>, usize);
    impl Read for Breaks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 >= self.0.len() / 2 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer gone"));
            }
            let n = buf.len().min(self.0.len() / 2 - self.1).min(64 << 10);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let store = Store::temporary().unwrap();
    let tar = big_layer();
    let blob = gzip(&tar);
    let layer = layer_of(&blob, &tar, LayerMediaType::Gzip);
    let chain = chain_id(&[layer.diff_id]).unwrap();
    match store_and_unpack(&store, Breaks(blob, 0), &layer, chain) {
        Err(StoreError::Blob(BlobError::Read { source })) => {
            assert_eq!(source.kind(), io::ErrorKind::ConnectionReset);
            assert!(source.to_string().contains("peer gone"), "{source}");
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    assert_nothing_left(&store, &layer, &chain);
}

#[test]
fn a_layer_whose_content_is_not_its_diff_id_is_refused() {
    let store = Store::temporary().unwrap();
    let tar = layer_tar(&[("a", b"1")]);
    let blob = gzip(&tar);
    let mut layer = layer_of(&blob, &tar, LayerMediaType::Gzip);
    layer.diff_id = Digest::of(b"another tar");
    let chain = chain_id(&[layer.diff_id]).unwrap();
    match store_and_unpack(&store, &blob[..], &layer, chain) {
        Err(StoreError::DiffIdMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, layer.diff_id);
            assert_eq!(actual, Digest::of(&tar));
        }
        other => panic!("expected a DiffID mismatch, got {other:?}"),
    }
    assert_nothing_left(&store, &layer, &chain);
}

#[test]
fn a_hostile_layer_with_the_right_digest_is_an_unpack_error() {
    let store = Store::temporary().unwrap();
    // A name with `..`, written raw (the tar crate refuses to build one).
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escape.txt");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[b'x'; 512]);
    tar.extend_from_slice(&[0; 1024]);
    let layer = layer_of(&tar, &tar, LayerMediaType::Tar);
    let chain = chain_id(&[layer.diff_id]).unwrap();
    let e = store_and_unpack(&store, &tar[..], &layer, chain).unwrap_err();
    assert!(matches!(e, StoreError::Unpack { .. }), "{e}");
    assert_nothing_left(&store, &layer, &chain);
}
