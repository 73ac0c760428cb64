//! Reading a tar stream: headers, extended headers (PAX, GNU long names) and entry bodies.
//!
//! A small streaming parser rather than the `tar` crate's, for three reasons: extended headers
//! are bounded ([`MAX_EXTENDED`]) so a hostile layer cannot make memory grow with its size;
//! names keep every byte (a NUL is reported, not silently cut); and file bodies are handed to
//! the writer straight from the stream's buffers, without a copy.
//!
//! The parts: `fields` (decoding a header's fields and PAX records, and why by hand), and the
//! tests of both in `tests`.

use std::io::{self, BufRead};
use std::ops::Range;

mod fields;
#[cfg(test)]
mod tests;

use fields::{apply_pax, cstr, numeric, signed_numeric, verify_checksum};

/// The largest PAX extended header or GNU long name/link accepted (bytes).
pub const MAX_EXTENDED: u64 = 1 << 20;

const BLOCK: usize = 512;

/// Why a tar stream could not be parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedTar {
    /// The stream ended in the middle of a header or an entry's data.
    #[error("the stream ends in the middle of an entry")]
    Truncated,
    /// A header's checksum does not match its bytes.
    #[error("header checksum mismatch")]
    Checksum,
    /// A numeric header field is not a valid octal or base-256 number.
    #[error("invalid {field} field in header")]
    BadField {
        /// The field's name.
        field: &'static str,
    },
    /// A PAX extended header is not a list of `LEN KEY=VALUE\n` records.
    #[error("invalid PAX extended header record")]
    BadPax,
    /// A PAX value that must be a number is not one.
    #[error("invalid PAX value for {key}")]
    BadPaxValue {
        /// The PAX key.
        key: String,
    },
    /// A PAX extended header or GNU long name is larger than [`MAX_EXTENDED`].
    #[error("extended header of {size} bytes exceeds the limit of {max}")]
    ExtendedTooLarge {
        /// Its declared size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Two extended headers of the same kind describe one entry.
    #[error("two extended headers of the same kind for one entry")]
    RepeatedExtended,
    /// Extended headers are followed by the end of the archive instead of an entry.
    #[error("extended header without an entry after it")]
    DanglingExtended,
}

/// An error while reading the stream: the stream itself failed, or its content is not a tar.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The underlying reader failed.
    Read(io::Error),
    /// The bytes are not a valid tar stream; at this offset of the uncompressed stream.
    Malformed(u64, MalformedTar),
}

/// The kind of an entry, from its type flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// A GNU or PAX sparse file: not supported.
    Sparse,
    /// A type flag molde does not apply.
    Unsupported(u8),
}

/// A point in time, as a tar header or PAX record gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Time {
    pub secs: i64,
    pub nanos: u32,
}

/// An entry's header, with extended headers already folded in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub dev_major: u64,
    pub dev_minor: u64,
}

/// The variable-length parts of the current entry, kept in buffers reused from entry to entry.
#[derive(Debug, Default)]
pub(crate) struct Names {
    path: Vec<u8>,
    link: Vec<u8>,
    pax: Vec<u8>,
    xattrs: Vec<(Range<usize>, Range<usize>)>,
    long_name: Vec<u8>,
    long_link: Vec<u8>,
}

impl Names {
    /// The entry's path, exactly as the archive gives it.
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The entry's link target (symlinks, hardlinks), exactly as the archive gives it.
    pub fn link(&self) -> &[u8] {
        &self.link
    }

    /// The entry's extended attributes (PAX `SCHILY.xattr.NAME`): name, value.
    pub fn xattrs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.xattrs
            .iter()
            .map(|(k, v)| (&self.pax[k.clone()], &self.pax[v.clone()]))
    }
}

/// The stream under the parser: counts what it consumed and how much of the entry is left.
#[derive(Debug)]
pub(crate) struct Body<R> {
    input: R,
    /// Bytes consumed from `input`.
    pos: u64,
    /// Bytes of the current entry's data not read yet.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
}

impl<R: BufRead> Body<R> {
    /// The next bytes of the current entry's data (empty at its end); call
    /// [`Body::consume`] for what was used.
    pub fn chunk(&mut self) -> Result<&[u8], StreamError> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let pos = self.pos;
        let buf = self.input.fill_buf().map_err(StreamError::Read)?;
        if buf.is_empty() {
            return Err(StreamError::Malformed(pos, MalformedTar::Truncated));
        }
        let n = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        Ok(&buf[..n])
    }

    /// Mark `n` bytes of the last [`Body::chunk`] as used.
    pub fn consume(&mut self, n: usize) {
        self.input.consume(n);
        self.pos += n as u64;
        self.remaining -= n as u64;
    }

    /// Skip `n` bytes of the stream.
    fn skip(&mut self, mut n: u64) -> Result<(), StreamError> {
        while n > 0 {
            let pos = self.pos;
            let buf = self.input.fill_buf().map_err(StreamError::Read)?;
            if buf.is_empty() {
                return Err(StreamError::Malformed(pos, MalformedTar::Truncated));
            }
            let k = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.input.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Read exactly `buf.len()` bytes; `Ok(false)` if the stream ends before the first byte.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<bool, StreamError> {
        let mut filled = 0;
        while filled < buf.len() {
            let pos = self.pos;
            let avail = self.input.fill_buf().map_err(StreamError::Read)?;
            if avail.is_empty() {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(StreamError::Malformed(pos, MalformedTar::Truncated));
            }
            let k = avail.len().min(buf.len() - filled);
            buf[filled..filled + k].copy_from_slice(&avail[..k]);
            self.input.consume(k);
            self.pos += k as u64;
            filled += k;
        }
        Ok(true)
    }

    /// Read the whole of the current entry's data into `out` (for extended headers).
    fn read_all(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        out.clear();
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Ok(());
            }
            let n = chunk.len();
            out.extend_from_slice(chunk);
            self.consume(n);
        }
    }

    /// Skip whatever is left of the current entry and its padding.
    fn finish_entry(&mut self) -> Result<(), StreamError> {
        let n = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(n)
    }

    /// Read the stream to its end.
    pub fn drain(&mut self) -> Result<(), StreamError> {
        loop {
            let buf = self.input.fill_buf().map_err(StreamError::Read)?;
            if buf.is_empty() {
                return Ok(());
            }
            let n = buf.len();
            self.input.consume(n);
            self.pos += n as u64;
        }
    }
}

/// A tar stream being read entry by entry.
#[derive(Debug)]
pub(crate) struct Archive<R> {
    /// The current entry's names and xattrs.
    pub names: Names,
    /// The current entry's data.
    pub body: Body<R>,
    ended: bool,
}

impl<R: BufRead> Archive<R> {
    /// Read a tar stream from `input`.
    pub fn new(input: R) -> Self {
        Archive {
            names: Names::default(),
            body: Body {
                input,
                pos: 0,
                remaining: 0,
                padding: 0,
            },
            ended: false,
        }
    }

    /// The stream this archive reads.
    pub fn into_input(self) -> R {
        self.body.input
    }

    /// The next entry, or `None` at the end of the archive (a zero block, or the end of the
    /// stream at a block boundary). What the previous entry left unread is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Header>, StreamError> {
        if self.ended {
            return Ok(None);
        }
        self.body.finish_entry()?;
        let mut have_pax = false;
        let mut have_long_name = false;
        let mut have_long_link = false;
        self.names.xattrs.clear();
        let mut block = [0u8; BLOCK];
        loop {
            let offset = self.body.pos;
            let malformed = |reason| StreamError::Malformed(offset, reason);
            if !self.body.read_block(&mut block)? || block.iter().all(|&b| b == 0) {
                self.ended = true;
                if have_pax || have_long_name || have_long_link {
                    return Err(malformed(MalformedTar::DanglingExtended));
                }
                return Ok(None);
            }
            verify_checksum(&block).map_err(malformed)?;
            let typeflag = block[156];
            let size = numeric(&block[124..136], "size").map_err(malformed)?;
            self.body.remaining = size;
            self.body.padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
            match typeflag {
                b'x' | b'L' | b'K' => {
                    if size > MAX_EXTENDED {
                        return Err(malformed(MalformedTar::ExtendedTooLarge {
                            size,
                            max: MAX_EXTENDED,
                        }));
                    }
                    let (seen, buf) = match typeflag {
                        b'x' => (&mut have_pax, &mut self.names.pax),
                        b'L' => (&mut have_long_name, &mut self.names.long_name),
                        _ => (&mut have_long_link, &mut self.names.long_link),
                    };
                    if *seen {
                        return Err(malformed(MalformedTar::RepeatedExtended));
                    }
                    *seen = true;
                    self.body.read_all(buf)?;
                    self.body.finish_entry()?;
                    if typeflag != b'x' {
                        // GNU long names end with NUL padding; a NUL inside stays and is refused.
                        while buf.last() == Some(&0) {
                            buf.pop();
                        }
                    }
                    continue;
                }
                b'g' => {
                    // A PAX global header: its defaults (comments, charset) change nothing here.
                    self.body.finish_entry()?;
                    continue;
                }
                _ => {}
            }
            let mut header = Header {
                kind: Kind::Unsupported(typeflag),
                size,
                mode: (numeric(&block[100..108], "mode").map_err(malformed)? & 0o7777) as u32,
                uid: numeric(&block[108..116], "uid").map_err(malformed)?,
                gid: numeric(&block[116..124], "gid").map_err(malformed)?,
                mtime: Time {
                    secs: signed_numeric(&block[136..148], "mtime").map_err(malformed)?,
                    nanos: 0,
                },
                atime: None,
                dev_major: 0,
                dev_minor: 0,
            };
            let ustar = &block[257..263] == b"ustar\0";
            let gnu = &block[257..265] == b"ustar  \0";
            if ustar || gnu {
                header.dev_major = numeric(&block[329..337], "devmajor").map_err(malformed)?;
                header.dev_minor = numeric(&block[337..345], "devminor").map_err(malformed)?;
            }
            // The path: PAX `path`, else a GNU long name, else the header (with the ustar prefix).
            let names = &mut self.names;
            names.path.clear();
            if have_long_name {
                names.path.extend_from_slice(&names.long_name);
            } else {
                if ustar {
                    let prefix = cstr(&block[345..500]);
                    if !prefix.is_empty() {
                        names.path.extend_from_slice(prefix);
                        names.path.push(b'/');
                    }
                }
                names.path.extend_from_slice(cstr(&block[0..100]));
            }
            names.link.clear();
            if have_long_link {
                names.link.extend_from_slice(&names.long_link);
            } else {
                names.link.extend_from_slice(cstr(&block[157..257]));
            }
            let mut sparse = typeflag == b'S';
            if have_pax {
                apply_pax(names, &mut header, &mut sparse).map_err(malformed)?;
                self.body.remaining = header.size;
                self.body.padding = (BLOCK as u64 - header.size % BLOCK as u64) % BLOCK as u64;
            }
            header.kind = match typeflag {
                _ if sparse => Kind::Sparse,
                // Old tars mark directories only with a trailing slash on a regular entry.
                b'0' | 0 | b'7' if self.names.path.last() == Some(&b'/') => Kind::Dir,
                b'0' | 0 | b'7' => Kind::File,
                b'1' => Kind::Hardlink,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' => Kind::Dir,
                b'6' => Kind::Fifo,
                other => Kind::Unsupported(other),
            };
            return Ok(Some(header));
        }
    }
}
