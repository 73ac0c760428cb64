//! Layer compression: found from the stream's magic bytes, never from a name or media type.

use std::io::{self, BufReader, Read};

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

/// The bytes [`sniff`] gave back in front of the rest of the stream.
pub type Sniffed<R> = io::Chain<io::Take<io::Cursor<[u8; 4]>>, R>;

/// Read the first bytes of `reader` to find its compression, retrying short reads (a pipe may
/// deliver one byte at a time: a gzip stream must not be taken for a tar because of it).
/// Returns the compression and a reader that yields the whole stream, peeked bytes included.
pub fn sniff<R: Read>(mut reader: R) -> io::Result<(Compression, Sniffed<R>)> {
    let mut magic = [0u8; 4];
    let mut have = 0;
    while have < magic.len() {
        match reader.read(&mut magic[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let compression = Compression::detect(&magic[..have]);
    Ok((
        compression,
        io::Cursor::new(magic).take(have as u64).chain(reader),
    ))
}

/// Find the compression of `reader` (see [`sniff`]) and return a reader of the decompressed
/// stream. The bytes peeked at are not lost.
pub fn decompress<'a, R: Read + Send + 'a>(
    reader: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let (compression, stream) = sniff(reader)?;
    let buffered = BufReader::with_capacity(256 * 1024, stream);
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

    /// A reader that yields one byte per read, like a slow pipe.
    struct OneByte<'a>(&'a [u8]);
    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(out)) => {
                    *out = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn short_reads_do_not_hide_the_magic() {
        let zs = zstd::encode_all(&b"layer"[..], 1).unwrap();
        let (c, mut r) = decompress(OneByte(&zs)).unwrap();
        assert_eq!(c, Compression::Zstd);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"layer");
        let (c, mut rest) = sniff(OneByte(b"ab")).unwrap();
        assert_eq!(c, Compression::None);
        let mut out = Vec::new();
        rest.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
    }
}
