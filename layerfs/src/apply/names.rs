//! Entry names: checked and normalized before anything touches the disk.
//!
//! A name is split on `/`; empty and `.` components are dropped, so an absolute name is taken
//! relative to the target; a `..` component, a NUL byte or an over-long name is refused.

use super::EntryError;

/// The longest name component accepted (bytes), as Linux's `NAME_MAX`.
pub const MAX_NAME: usize = 255;
/// The longest path accepted (bytes, after normalization), as Linux's `PATH_MAX` less the NUL.
pub const MAX_PATH: usize = 4095;

/// Normalize `raw` into `out`: components joined by single slashes, no leading or trailing
/// slash; empty for the target directory itself.
pub(crate) fn normalize(raw: &[u8], out: &mut Vec<u8>) -> Result<(), EntryError> {
    out.clear();
    if raw.contains(&0) {
        return Err(EntryError::NulInName);
    }
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(EntryError::ParentDir),
            _ => {}
        }
        if comp.len() > MAX_NAME {
            return Err(EntryError::NameTooLong {
                len: comp.len(),
                max: MAX_NAME,
            });
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
        if out.len() > MAX_PATH {
            return Err(EntryError::NameTooLong {
                len: raw.len(),
                max: MAX_PATH,
            });
        }
    }
    Ok(())
}

/// Split a normalized path into its parent and its last component.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `dir/name` (or `name` when `dir` is empty) into `out`.
pub(crate) fn join(dir: &[u8], name: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(dir);
    if !dir.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &[u8]) -> Result<Vec<u8>, EntryError> {
        let mut out = Vec::new();
        normalize(raw, &mut out).map(|()| out)
    }

    #[test]
    fn normalizes_and_refuses() {
        assert_eq!(norm(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(norm(b"/etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(norm(b"./").unwrap(), b"");
        assert_eq!(norm(b"a/...").unwrap(), b"a/...");
        assert!(matches!(norm(b"a/../b"), Err(EntryError::ParentDir)));
        assert!(matches!(norm(b".."), Err(EntryError::ParentDir)));
        assert!(matches!(norm(b"a\0b"), Err(EntryError::NulInName)));
        let long = vec![b'x'; MAX_NAME + 1];
        assert!(matches!(
            norm(&long),
            Err(EntryError::NameTooLong { max: MAX_NAME, .. })
        ));
        let deep = b"abcdefg/".repeat(600);
        assert!(matches!(
            norm(&deep),
            Err(EntryError::NameTooLong { max: MAX_PATH, .. })
        ));
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }
}
