//! The field decoders of a tar header and of PAX records.
//!
//! Hand-written, like the parser: the decoders of `tar` 0.4.46 answer differently in ways that
//! matter here (archive/tests.rs holds each case).
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

use super::{BLOCK, Header, MalformedTar, Names, Time};

/// Fold a PAX extended header into `header` and `names`.
pub(super) fn apply_pax(
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
pub(super) fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Check a header block's checksum (unsigned, or the historic signed sum).
pub(super) fn verify_checksum(block: &[u8; BLOCK]) -> Result<(), MalformedTar> {
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
pub(super) fn numeric(field: &[u8], name: &'static str) -> Result<u64, MalformedTar> {
    let v = signed_numeric(field, name)?;
    u64::try_from(v).map_err(|_| MalformedTar::BadField { field: name })
}

/// A numeric header field that may be negative in base-256 (mtime).
pub(super) fn signed_numeric(field: &[u8], name: &'static str) -> Result<i64, MalformedTar> {
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
pub(super) fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A PAX time: `[-]SECS[.FRACTION]`.
pub(super) fn pax_time(value: &[u8]) -> Option<Time> {
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
