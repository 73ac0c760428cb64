//! Layer compression: found from the stream's magic bytes, never from a name or media type.

use std::io::{self, BufRead, BufReader, Read};

/// How a layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// The compression that a stream starting with `magic` uses. Anything that is neither gzip
    /// nor zstd is taken as a plain tar (the tar parser rejects what is not a tar).
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI media type suffix: `""`, `"+gzip"` or `"+zstd"`.
    pub fn media_type_suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "+gzip",
            Compression::Zstd => "+zstd",
        }
    }
}

/// Peek at the start of `reader` to find its compression and return a reader of the
/// decompressed stream. The bytes peeked at are not lost.
pub fn decompress<'a, R: Read + Send + 'a>(
    reader: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let compression = Compression::detect(buffered.fill_buf()?);
    let out: Box<dyn Read + Send + 'a> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    };
    Ok((compression, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_by_magic_and_round_trips() {
        let data = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 1).unwrap();
        for (bytes, want) in [
            (&data[..], Compression::None),
            (&gz[..], Compression::Gzip),
            (&zs[..], Compression::Zstd),
        ] {
            let (c, mut r) = decompress(bytes).unwrap();
            assert_eq!(c, want);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }
}
