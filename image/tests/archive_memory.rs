//! Imports and exports stream: memory does not grow with a layer's size. Alone in its test
//! binary, so the process's peak RSS is this test's.

use std::fs::File;
use std::io::{self, BufWriter, Read};

use molde_image::archive::{ImportOptions, docker, oci};
use molde_image::{ImageBuilder, Store};

/// A layer tar holding one file of `size` pseudo-random bytes, generated on the fly.
struct LayerStream {
    header: Vec<u8>,
    pos: u64,
    size: u64,
    state: u64,
}

impl LayerStream {
    fn new(size: u64) -> LayerStream {
        let mut h = tar::Header::new_ustar();
        h.set_path("big.bin").unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        LayerStream {
            header: h.as_bytes().to_vec(),
            pos: 0,
            size,
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let total = 512 + self.size.div_ceil(512) * 512 + 1024;
        let mut n = 0;
        while n < buf.len() && self.pos < total {
            buf[n] = if self.pos < 512 {
                self.header[self.pos as usize]
            } else if self.pos < 512 + self.size {
                // xorshift: incompressible, so nothing gets small by accident.
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.state as u8
            } else {
                0
            };
            self.pos += 1;
            n += 1;
        }
        Ok(n)
    }
}

fn peak_rss_kib() -> i64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    usage.max_rss()
}

#[test]
fn importing_a_big_layer_does_not_grow_memory() {
    const SIZE: u64 = 96 << 20;
    let source = Store::temporary().unwrap();
    let layer = source
        .add_layer(io::BufReader::new(LayerStream::new(SIZE)))
        .unwrap()
        .layer;
    assert!(layer.size > SIZE);
    let image = source
        .commit(ImageBuilder::new().layer(layer, "ADD big.bin /"))
        .unwrap();
    source.tag(&image, "big:1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let oci_path = dir.path().join("oci.tar");
    let docker_path = dir.path().join("docker.tar");

    let before = peak_rss_kib();
    oci::export_archive(
        &source,
        &["big:1"],
        BufWriter::new(File::create(&oci_path).unwrap()),
    )
    .unwrap();
    docker::export(
        &source,
        &["big:1"],
        BufWriter::new(File::create(&docker_path).unwrap()),
    )
    .unwrap();
    let a = Store::temporary().unwrap();
    let r = oci::import_archive(
        &a,
        File::open(&oci_path).unwrap(),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(r.images[0].image.manifest_digest(), image.manifest_digest());
    let b = Store::temporary().unwrap();
    let r = docker::import(&b, File::open(&docker_path).unwrap()).unwrap();
    assert_eq!(r.images[0].image.id(), image.id());
    let grown_mib = (peak_rss_kib() - before) / 1024;
    eprintln!(
        "peak RSS grew by {grown_mib} MiB for a {} MiB layer",
        SIZE >> 20
    );
    assert!(
        grown_mib < 48,
        "peak RSS grew by {grown_mib} MiB exporting and importing a {} MiB layer",
        SIZE >> 20
    );
}
