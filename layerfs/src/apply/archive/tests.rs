//! The parser's and the field decoders' cases, each against what `tar` 0.4.46 would answer.

use super::fields::{numeric, pax_time, signed_numeric};
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
