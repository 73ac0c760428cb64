//! Reading a tar stream: headers, extended headers (PAX, GNU long names) and entry bodies.
//!
//! A small streaming parser rather than the `tar` crate's, for three reasons: extended headers
//! are bounded ([`MAX_EXTENDED`]) so a hostile layer cannot make memory grow with its size;
//! names keep every byte (a NUL is reported, not silently cut); and file bodies are handed to
//! the writer straight from the stream's buffers, without a copy.
//!
//! The field decoders stay hand-written too: those of `tar` 0.4.46 give different answers in
//! ways that matter here (the tests below hold each case).
//! - Numeric fields (`Header::uid`, `size`, ...): a blank field is an error, yet the crate's own
//!   `Header::new_gnu` leaves uid and gid blank, and ustar writers (molde's diff too) leave the
//!   device fields of non-devices blank; Go's archive/tar reads them as 0, and so does this.
//!   Base-256 values are not range-checked: a 12-byte field keeps only its last 8 bytes
//!   (2^64 + 10 reads as a size of 10) and negative values come back as huge ones. Framing a
//!   stream differently from other readers is how content is smuggled past them, so such
//!   fields are refused here.
//! - PAX records (`PaxExtensions`): the crate splits on `\n` instead of following each record's
//!   length, so it refuses values holding a newline byte (binary `security.capability`
//!   xattrs, names with a newline) and silently ignores every record after an empty line.
//! - The checksum: the crate's sum is private and unsigned only (historic tars use the signed
//!   sum), and `Header::cksum` would only replace this module's reading of one field.

use std::io::{self, BufRead};
use std::ops::Range;

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

/// Fold a PAX extended header into `header` and `names`.
fn apply_pax(
    names: &mut Names,
    header: &mut Header,
    sparse: &mut bool,
) -> Result<(), MalformedTar> {
    let pax = &names.pax;
    let mut at = 0;
    while at < pax.len() {
        let rest = &pax[at..];
        let space = rest
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or(MalformedTar::BadPax)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(MalformedTar::BadPax)?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(MalformedTar::BadPax);
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(MalformedTar::BadPax)?;
        let key = &record[..eq];
        let value = &record[eq + 1..];
        let value_range = at + space + 1 + eq + 1..at + len - 1;
        let bad = || MalformedTar::BadPaxValue {
            key: String::from_utf8_lossy(key).into_owned(),
        };
        match key {
            // An empty value removes the override (POSIX), leaving the header's own field.
            b"path" if !value.is_empty() => {
                names.path.clear();
                names.path.extend_from_slice(value);
            }
            b"linkpath" if !value.is_empty() => {
                names.link.clear();
                names.link.extend_from_slice(value);
            }
            b"size" => header.size = decimal(value).ok_or_else(bad)?,
            b"uid" => header.uid = decimal(value).ok_or_else(bad)?,
            b"gid" => header.gid = decimal(value).ok_or_else(bad)?,
            b"mtime" => header.mtime = pax_time(value).ok_or_else(bad)?,
            b"atime" => header.atime = Some(pax_time(value).ok_or_else(bad)?),
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if !name.is_empty() {
                        let name_start = at + space + 1 + b"SCHILY.xattr.".len();
                        names
                            .xattrs
                            .push((name_start..name_start + name.len(), value_range));
                    }
                } else if key.starts_with(b"GNU.sparse.") {
                    *sparse = true;
                }
            }
        }
        at += len;
    }
    Ok(())
}

/// The bytes of a NUL-terminated header field.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Check a header block's checksum (unsigned, or the historic signed sum).
fn verify_checksum(block: &[u8; BLOCK]) -> Result<(), MalformedTar> {
    let want = numeric(&block[148..156], "checksum").map_err(|_| MalformedTar::Checksum)?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if want == unsigned || i64::try_from(want).is_ok_and(|w| w == signed) {
        Ok(())
    } else {
        Err(MalformedTar::Checksum)
    }
}

/// A non-negative numeric header field: octal text or GNU base-256.
fn numeric(field: &[u8], name: &'static str) -> Result<u64, MalformedTar> {
    let v = signed_numeric(field, name)?;
    u64::try_from(v).map_err(|_| MalformedTar::BadField { field: name })
}

/// A numeric header field that may be negative in base-256 (mtime).
fn signed_numeric(field: &[u8], name: &'static str) -> Result<i64, MalformedTar> {
    let bad = MalformedTar::BadField { field: name };
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        // Base-256, two's complement, big-endian; the first byte's top bit is the marker.
        let negative = first & 0x40 != 0;
        let mut v: i128 = if negative { -1 } else { 0 };
        for (i, &b) in field.iter().enumerate() {
            let b = if i == 0 {
                if negative { b | 0x80 } else { b & 0x7f }
            } else {
                b
            };
            v = (v << 8) | i128::from(b);
            if v > i128::from(i64::MAX) || v < i128::from(i64::MIN) {
                return Err(bad);
            }
        }
        return i64::try_from(v).map_err(|_| bad);
    }
    let text = field;
    let start = text
        .iter()
        .position(|&b| b != b' ' && b != 0)
        .unwrap_or(text.len());
    let text = &text[start..];
    let end = text
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(text.len());
    let (digits, tail) = text.split_at(end);
    if tail.iter().any(|&b| b != b' ' && b != 0) {
        return Err(bad);
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return Err(bad);
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or(MalformedTar::BadField { field: name })?;
    }
    Ok(v)
}

/// A decimal PAX number.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A PAX time: `[-]SECS[.FRACTION]`.
fn pax_time(value: &[u8]) -> Option<Time> {
    let (negative, value) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (secs, frac) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    let secs = i64::try_from(decimal(secs)?).ok()?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if negative {
        // -1.25 is 1.25 seconds before the epoch: -2 s + 0.75 s.
        if nanos == 0 {
            Some(Time { secs: -secs, nanos })
        } else {
            Some(Time {
                secs: -secs - 1,
                nanos: 1_000_000_000 - nanos,
            })
        }
    } else {
        Some(Time { secs, nanos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers() {
        assert_eq!(numeric(b"0000644\0", "mode").unwrap(), 0o644);
        assert_eq!(numeric(b"   644 \0", "mode").unwrap(), 0o644);
        assert_eq!(numeric(b"\0\0\0\0\0\0\0\0", "mode").unwrap(), 0);
        assert!(numeric(b"0000694\0", "mode").is_err());
        assert!(numeric(b"06 4\0", "mode").is_err());
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 0x10;
        big[10] = 0x01;
        assert_eq!(numeric(&big, "size").unwrap(), 0x110);
        let neg = [0xffu8; 12];
        assert_eq!(signed_numeric(&neg, "mtime").unwrap(), -1);
        assert!(numeric(&neg, "size").is_err());
        let mut huge = [0xffu8; 12];
        huge[0] = 0x80;
        assert!(numeric(&huge, "size").is_err());
    }

    /// A ustar header block: `edit` fills in fields before the checksum is computed.
    fn block(name: &[u8], typeflag: u8, size: usize, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        for field in [108..116, 116..124, 329..337, 337..345] {
            h[field].copy_from_slice(b"0000000\0");
        }
        h[136..148].copy_from_slice(b"00000000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = typeflag;
        h[257..265].copy_from_slice(b"ustar\x0000");
        edit(&mut h);
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    /// A block and its data, padded.
    fn entry(header: Vec<u8>, data: &[u8]) -> Vec<u8> {
        let mut out = header;
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
        out
    }

    /// A PAX record `LEN KEY=VALUE\n`.
    fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
        let body = key.len() + value.len() + 3;
        let mut len = body + 1;
        while body + len.to_string().len() != len {
            len += 1;
        }
        [format!("{len} ").as_bytes(), key, b"=", value, b"\n"].concat()
    }

    /// A PAX header with `records`, then a regular file `f`.
    fn with_pax(records: &[u8]) -> Vec<u8> {
        let mut tar = entry(block(b"pax", b'x', records.len(), |_| {}), records);
        tar.extend(block(b"f", b'0', 0, |_| {}));
        tar
    }

    fn malformed(tar: &[u8]) -> MalformedTar {
        match Archive::new(tar).next_entry() {
            Err(StreamError::Malformed(_, reason)) => reason,
            other => panic!("expected a malformed tar, got {other:?}"),
        }
    }

    #[test]
    fn blank_numeric_fields_read_as_zero() {
        // The tar crate's own builder leaves uid and gid blank with `Header::new_gnu`.
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o600);
        builder.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        assert!(
            tar[108..124].iter().all(|&b| b == 0),
            "uid and gid are blank"
        );
        let header = Archive::new(&tar[..]).next_entry().unwrap().unwrap();
        assert_eq!((header.uid, header.gid, header.mode), (0, 0, 0o600));
        // Blank device fields in a ustar header (as molde's diff writes for non-devices).
        let tar = block(b"f", b'0', 0, |h| h[329..345].fill(0));
        let header = Archive::new(&tar[..]).next_entry().unwrap().unwrap();
        assert_eq!((header.dev_major, header.dev_minor), (0, 0));
    }

    #[test]
    fn base256_fields_are_range_checked() {
        // 2^64 + 10: refused, not read as 10.
        let tar = block(b"f", b'0', 0, |h| {
            h[124..136].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 10]);
        });
        assert!(matches!(
            malformed(&tar),
            MalformedTar::BadField { field: "size", .. }
        ));
        // A negative uid is refused; a negative mtime is a time before the epoch.
        let tar = block(b"f", b'0', 0, |h| h[108..116].fill(0xff));
        assert!(matches!(
            malformed(&tar),
            MalformedTar::BadField { field: "uid", .. }
        ));
        let tar = block(b"f", b'0', 0, |h| h[136..148].fill(0xff));
        let header = Archive::new(&tar[..]).next_entry().unwrap().unwrap();
        assert_eq!(header.mtime.secs, -1);
    }

    #[test]
    fn pax_values_may_hold_newlines() {
        // A v2 capability with CAP_DAC_OVERRIDE and CAP_FOWNER: its mask byte is b'\n'.
        let cap = [
            1, 0, 0, 2, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let records = [
            record(b"SCHILY.xattr.security.capability", &cap),
            record(b"path", b"a\nb"),
        ]
        .concat();
        let tar = with_pax(&records);
        let mut archive = Archive::new(&tar[..]);
        archive.next_entry().unwrap().unwrap();
        assert_eq!(archive.names.path(), b"a\nb");
        let xattrs: Vec<_> = archive.names.xattrs().collect();
        assert_eq!(xattrs, [(&b"security.capability"[..], &cap[..])]);
    }

    #[test]
    fn pax_records_follow_their_lengths() {
        // An empty line is refused, not taken as the end (which would drop the `path` after it).
        let records = [
            record(b"mtime", b"1"),
            b"\n".to_vec(),
            record(b"path", b"p"),
        ]
        .concat();
        assert!(matches!(
            malformed(&with_pax(&records)),
            MalformedTar::BadPax
        ));
        // A length that does not end on a newline.
        let mut records = record(b"path", b"p");
        records.pop();
        records.push(b'x');
        assert!(matches!(
            malformed(&with_pax(&records)),
            MalformedTar::BadPax
        ));
    }

    #[test]
    fn parses_pax_times() {
        assert_eq!(pax_time(b"12").unwrap(), Time { secs: 12, nanos: 0 });
        assert_eq!(
            pax_time(b"12.5").unwrap(),
            Time {
                secs: 12,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            pax_time(b"-1.25").unwrap(),
            Time {
                secs: -2,
                nanos: 750_000_000
            }
        );
        assert!(pax_time(b"1x").is_none());
        assert!(pax_time(b"").is_none());
    }
}
