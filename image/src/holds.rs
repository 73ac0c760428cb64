//! Persistent holds on disk: one symlink per hold in `molde/holds/`, named after the hold,
//! whose target is the held image's manifest digest (base64url, 43 bytes).
//!
//! A symlink is the cheapest atomic record a filesystem has: it is created whole or not at
//! all, a rename replaces it atomically, and a target under 60 bytes lives in the inode (ext4),
//! so taking and releasing a hold allocates, writes back and frees no data block. Holds are
//! not fsynced: `molde_container::recover` takes a container's hold again after a host crash
//! lost it, and releases one whose container is gone (see the container records). The time a
//! hold was taken is its link's modification time.
//!
//! A name whose file name would be too long is stored as `#<sha256 of the name>` with the
//! (encoded) name after the digest in the target: `<digest>/<name>`.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use molde_layerfs::Digest;

/// The longest encoded name used as a file name as is.
const MAX_NAME: usize = 200;
/// The temporary link a hold is written to before it is renamed into place (writers hold
/// the index lock).
const TMP: &str = ".hold.tmp";

/// One hold as stored: its name, image and when it was taken (seconds since the epoch).
pub(crate) struct StoredHold {
    pub name: String,
    pub image: Digest,
    pub taken: u64,
}

/// Percent-encode a hold name into a file name: `[A-Za-z0-9_.:@+=-]` kept (a leading `.`
/// encoded), every other byte as `%XX`.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b':' | b'@' | b'+' | b'=' | b'-')
            || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64(bytes: &[u8; 32]) -> String {
    let mut out = String::with_capacity(43);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for k in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * k)) & 63) as usize] as char);
        }
    }
    out
}

fn unb64(s: &str) -> Option<Digest> {
    if s.len() != 43 {
        return None;
    }
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(32);
    for c in s.bytes() {
        let v = B64.iter().position(|x| *x == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Some(Digest::from_bytes(out.try_into().ok()?))
}

/// The file name and link target of a hold.
fn link(name: &str, image: &Digest) -> (String, String) {
    let encoded = encode(name);
    if encoded.len() <= MAX_NAME {
        (encoded, b64(image.as_bytes()))
    } else {
        (
            format!("#{}", Digest::of(name.as_bytes()).hex()),
            format!("{}/{encoded}", b64(image.as_bytes())),
        )
    }
}

/// Take (or take again) the hold `name` on `image`. The caller holds the index lock.
pub(crate) fn take(dir: &Path, name: &str, image: &Digest) -> io::Result<u64> {
    let (file, target) = link(name, image);
    let tmp = dir.join(TMP);
    match std::os::unix::fs::symlink(&target, &tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&tmp)?;
            std::os::unix::fs::symlink(&target, &tmp)?;
        }
        Err(e) => return Err(e),
    }
    let taken = fs::symlink_metadata(&tmp)?.mtime().max(0) as u64;
    fs::rename(&tmp, dir.join(file))?;
    Ok(taken)
}

/// Release the hold `name`; `false` if there was none.
pub(crate) fn release(dir: &Path, name: &str) -> io::Result<bool> {
    let (file, _) = link(name, &Digest::from_bytes([0; 32]));
    match fs::remove_file(dir.join(file)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every hold in `dir` (a missing directory has none). Entries that are not holds are
/// skipped.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<StoredHold>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let target = match fs::read_link(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(libc_einval()) => continue,
            Err(e) => return Err(e),
        };
        let Some(target) = target.to_str() else {
            continue;
        };
        let (image, name) = match target.split_once('/') {
            Some((d, n)) => (unb64(d), decode(n)),
            None => (unb64(target), decode(&file)),
        };
        let (Some(image), Some(name)) = (image, name) else {
            continue;
        };
        let taken = fs::symlink_metadata(&path).map_or(0, |m| m.mtime().max(0) as u64);
        out.push(StoredHold { name, image, taken });
    }
    out.sort_by(|a, b| a.taken.cmp(&b.taken).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

fn libc_einval() -> i32 {
    nix::errno::Errno::EINVAL as i32
}

/// Move the holds of an older molde's `holds.json` (if any) into `dir`, then delete it. The
/// caller holds the index lock.
pub(crate) fn migrate(legacy: &Path, dir: &Path) -> io::Result<()> {
    #[derive(serde::Deserialize)]
    struct File {
        holds: Vec<Record>,
    }
    #[derive(serde::Deserialize)]
    struct Record {
        name: String,
        image: String,
    }
    let bytes = match fs::read(legacy) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let file: File = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    for h in file.holds {
        if let Ok(image) = h.image.parse::<Digest>() {
            take(dir, &h.name, &image)?;
        }
    }
    crate::blob::sync_dir(dir)?;
    fs::remove_file(legacy)?;
    crate::blob::sync_dir(legacy.parent().unwrap_or(Path::new(".")))
}

/// `molde/holds` under a store's state directory.
pub(crate) fn dir(state: &Path) -> PathBuf {
    state.join("holds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_digests_round_trip() {
        for name in ["c1", ".hidden", "a/b", "ünï cödé", "%41", &"x".repeat(300)] {
            let d = Digest::of(name.as_bytes());
            let (file, target) = link(name, &d);
            assert!(!file.contains('/') && !file.starts_with('.'), "{file}");
            let (img, n) = match target.split_once('/') {
                Some((t, n)) => (unb64(t), decode(n)),
                None => (unb64(&target), decode(&file)),
            };
            assert_eq!(img, Some(d));
            assert_eq!(n.as_deref(), Some(name));
        }
        assert_eq!(b64(Digest::of(b"").as_bytes()).len(), 43);
        assert_eq!(unb64("too short"), None);
    }

    #[test]
    fn take_list_release() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of(b"image");
        take(dir.path(), "c1", &d).unwrap();
        take(dir.path(), "c1", &d).unwrap();
        take(dir.path(), &"y".repeat(250), &d).unwrap();
        let names: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"c1".to_owned()));
        assert!(release(dir.path(), "c1").unwrap());
        assert!(!release(dir.path(), "c1").unwrap());
        assert!(release(dir.path(), &"y".repeat(250)).unwrap());
        assert!(list(dir.path()).unwrap().is_empty());
    }
}
