//! Content digests: sha256 [`Digest`]s, streaming hashers, and ChainIDs.
//!
//! Vocabulary (OCI image-spec):
//! - the **DiffID** of a layer is the digest of its *uncompressed* tar stream;
//! - the **digest** of a layer blob is the digest of the bytes as stored (maybe compressed);
//! - the **ChainID** of a stack of layers is `ChainID(L0) = DiffID(L0)` and
//!   `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest, printed and parsed as `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

/// Why a string is not a valid [`Digest`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {input:?}: {reason}")]
pub struct ParseDigestError {
    /// The string that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// A digest from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
    }

    /// The digest of everything `reader` yields, read to its end.
    pub fn of_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
        let mut w = HashingWriter::new(io::sink());
        io::copy(&mut reader, &mut w)?;
        Ok(w.finish().1)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseDigestError {
            input: s.to_owned(),
            reason,
        };
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| err("only sha256 digests are supported (\"sha256:<hex>\")"))?;
        if hex.len() != 64 {
            return Err(err("a sha256 digest has 64 hex characters"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let nib = |c: u8| match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                _ => Err(err("digest hex must be lowercase 0-9a-f")),
            };
            out[i] = (nib(pair[0])? << 4) | nib(pair[1])?;
        }
        Ok(Digest(out))
    }
}

/// The ChainID of a stack of layers given by their DiffIDs, bottom first.
/// `None` for an empty stack.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let (first, rest) = diff_ids.split_first()?;
    Some(rest.iter().fold(*first, |chain, diff_id| {
        Digest::of(format!("{chain} {diff_id}").as_bytes())
    }))
}

/// A reader that hashes and counts every byte read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The inner reader, the digest and the size of what was read.
    pub fn finish(self) -> (R, Digest, u64) {
        (
            self.inner,
            Digest(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts every byte written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The inner writer, the digest and the size of what was written.
    pub fn finish(self) -> (W, (Digest, u64)) {
        (
            self.inner,
            (Digest(self.hasher.finalize().into()), self.count),
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("sha256:E3B0".parse::<Digest>().is_err());
        assert!("sha512:00".parse::<Digest>().is_err());
        assert!(
            "sha256:zz0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse::<Digest>()
                .is_err()
        );
    }

    /// The OCI image-spec's config example lists the DiffID of an empty layer (a tar of only
    /// its two 512-byte end-of-archive blocks).
    #[test]
    fn diff_id_of_the_spec_empty_layer() {
        assert_eq!(
            Digest::of(&[0u8; 1024]).to_string(),
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        );
    }

    /// ChainID of the spec's example `rootfs.diff_ids`, checked against `sha256sum` of
    /// `"<diffid0> <diffid1>"` computed outside molde.
    #[test]
    fn chain_id_of_the_spec_example() {
        let ids: Vec<Digest> = [
            "sha256:c6f988f4874bb0add23a778f753c65efe992244e148a1d2ec2a8b664fb66bbd1",
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(chain_id(&ids[..1]), Some(ids[0]));
        assert_eq!(
            chain_id(&ids).unwrap().to_string(),
            "sha256:c3191d32a37d7159b2e30830937d2e30268ad6c375a773a8994911a3aba9b93f"
        );
        let third = Digest::of(b"third");
        let manual = Digest::of(format!("{} {}", chain_id(&ids).unwrap(), third).as_bytes());
        assert_eq!(chain_id(&[ids[0], ids[1], third]), Some(manual));
    }

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        let d = Digest::of(b"x");
        assert_eq!(chain_id(&[d]), Some(d));
        assert_eq!(chain_id(&[]), None);
    }
}
