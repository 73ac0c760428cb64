//! [`LayerWriter`]: the deterministic tar writer both diffs use.
//!
//! The same entries in the same order always give the same bytes:
//! - POSIX ustar headers, with a PAX extended header (`x`) before an entry when it needs one:
//!   a path or link target over 100 bytes (`path`, `linkpath`), a uid, gid, size or mtime too big
//!   for its ustar field, and every xattr as `SCHILY.xattr.NAME` (records sorted by key);
//! - numeric uid and gid, empty uname and gname, no atime or ctime;
//! - the mode's permission bits with setuid, setgid and sticky kept (the tar crate's
//!   `HeaderMode::Deterministic` would drop them);
//! - mtimes in whole seconds, clamped to [`DiffOptions::mtime_clamp`] when given (an mtime later
//!   than the epoch becomes the epoch; negative ones become 0);
//! - a file with more than one link is written once, then its other names as hardlink entries
//!   to the first (tracked by (dev, ino)); directories end with `/`.
//!
//! The writer does not sort: its callers give entries in their canonical order (see
//! [`crate::diff`]). It hashes everything it writes: [`LayerWriter::finish`] returns the DiffID.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use tar::{EntryType, Header};

use super::{DiffCounts, DiffError, DiffOptions, DiffReport};
use crate::digest::HashingWriter;
use crate::idmap::{IdMaps, ROOTLESS_XATTR, decode_owner};
use crate::view::is_overlay_xattr;
use crate::whiteout::{OPAQUE_MARKER, WHITEOUT_PREFIX, whiteout_name};

const BLOCK: usize = 512;
/// The largest value of an 8-byte octal header field (uid, gid, mode).
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// The id an unmapped host id shows as inside a user namespace (the kernel's overflow id).
const OVERFLOW_ID: u32 = 65534;
/// The largest value of a 12-byte octal header field (size, mtime).
const MAX_OCTAL_12: u64 = 0o77_777_777_777;
/// The name given to every PAX extended header entry.
const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";

/// A deterministic OCI layer tar writer. See the [module docs](self).
#[derive(Debug)]
pub struct LayerWriter<W: Write> {
    out: HashingWriter<W>,
    mtime_clamp: Option<u64>,
    owners: Option<&'static IdMaps>,
    /// The tar path of the first entry written for each (dev, ino) with more than one link.
    links: HashMap<(u64, u64), Vec<u8>>,
    counts: DiffCounts,
    buf: Vec<u8>,
}

/// Overrides for one entry's owner and permission bits, for entries that do not keep their
/// source's (a build's `COPY --chown`/`--chmod`). `None` keeps the source's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryAttrs {
    /// The owner's uid.
    pub uid: Option<u32>,
    /// The owner's gid.
    pub gid: Option<u32>,
    /// The permission bits (with setuid, setgid, sticky: `0o7777` at most).
    pub mode: Option<u32>,
}

/// xattrs as (name, value) pairs, sorted by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The header fields of one entry, before encoding.
struct Fields<'a> {
    path: &'a [u8],
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: Option<&'a [u8]>,
    device: Option<(u32, u32)>,
    xattrs: Xattrs,
}

impl<W: Write> LayerWriter<W> {
    /// A writer of a layer into `out`, with `opts`' mtime clamp.
    pub fn new(out: W, opts: &DiffOptions) -> LayerWriter<W> {
        LayerWriter {
            out: HashingWriter::new(out),
            mtime_clamp: opts.mtime_clamp,
            owners: opts.owners,
            links: HashMap::new(),
            counts: DiffCounts::default(),
            buf: vec![0; 256 * 1024],
        }
    }

    /// The owner of `source` to record: as stored, or as the container saw it (see
    /// [`DiffOptions::owners`]).
    fn owner(&self, source: &Path, meta: &Metadata) -> Result<(u32, u32), DiffError> {
        let Some(maps) = self.owners else {
            return Ok((meta.uid(), meta.gid()));
        };
        let mut uid = maps.uid_inside(meta.uid()).unwrap_or(OVERFLOW_ID);
        let mut gid = maps.gid_inside(meta.gid()).unwrap_or(OVERFLOW_ID);
        if meta.is_dir() || meta.is_file() {
            match xattr::get(source, ROOTLESS_XATTR) {
                Ok(Some(value)) => {
                    if let Some((u, g)) = decode_owner(&value) {
                        uid = u.unwrap_or(uid);
                        gid = g.unwrap_or(gid);
                    }
                }
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
                Err(e) => return Err(DiffError::io("read xattr of", source, e)),
            }
        }
        Ok((uid, gid))
    }

    /// What was written so far, by kind.
    pub fn counts(&self) -> DiffCounts {
        self.counts
    }

    /// Add the file `source` (described by its `lstat` metadata `meta`) as the entry `name`
    /// (a relative path, no leading `/`). A directory is written alone (its contents are
    /// separate entries); a regular file with its contents, streamed; a symlink with its
    /// target; devices and fifos with their numbers. xattrs are read from `source`, except
    /// overlayfs' own (`trusted.overlay.*`, `user.overlay.*`). Sockets cannot be put in a tar:
    /// they are skipped (and counted). A name starting with `.wh.` is refused
    /// ([`DiffError::ReservedName`]).
    pub fn add(&mut self, name: &Path, source: &Path, meta: &Metadata) -> Result<(), DiffError> {
        self.add_as(name, source, meta, &EntryAttrs::default())
    }

    /// [`LayerWriter::add`], with the owner and permission bits of `attrs` instead of the
    /// source's where given.
    pub fn add_as(
        &mut self,
        name: &Path,
        source: &Path,
        meta: &Metadata,
        attrs: &EntryAttrs,
    ) -> Result<(), DiffError> {
        let mode = attrs.mode.map_or(meta.mode(), |m| m & 0o7777) & 0o7777;
        let (uid, gid) = self.owner(source, meta)?;
        let uid: u64 = attrs.uid.unwrap_or(uid).into();
        let gid: u64 = attrs.gid.unwrap_or(gid).into();
        if name
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
        {
            return Err(DiffError::ReservedName {
                path: source.to_path_buf(),
            });
        }
        let ft = meta.file_type();
        let mut path = name.as_os_str().as_bytes().to_vec();
        if ft.is_socket() {
            tracing::warn!(path = %source.display(), "skipping a socket: tar cannot hold one");
            self.counts.skipped_sockets += 1;
            return Ok(());
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                self.write_header(&Fields {
                    path: &path,
                    kind: EntryType::Link,
                    mode,
                    uid,
                    gid,
                    mtime: self.mtime(meta),
                    size: 0,
                    link: Some(&first),
                    device: None,
                    xattrs: Vec::new(),
                })?;
                self.counts.hardlinks += 1;
                return Ok(());
            }
            self.links.insert(key, path.clone());
        }
        let xattrs = read_xattrs(source)?;
        let mut fields = Fields {
            path: &[],
            kind: EntryType::Regular,
            mode,
            uid,
            gid,
            mtime: self.mtime(meta),
            size: 0,
            link: None,
            device: None,
            xattrs,
        };
        let target;
        if ft.is_dir() {
            if path.last() != Some(&b'/') {
                path.push(b'/');
            }
            fields.kind = EntryType::Directory;
            fields.path = &path;
            self.write_header(&fields)?;
            self.counts.dirs += 1;
        } else if ft.is_file() {
            fields.size = meta.len();
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
                .open(source)
                .map_err(|e| DiffError::io("open", source, e))?;
            fields.path = &path;
            self.write_header(&fields)?;
            self.copy_contents(file, meta.len(), source)?;
            self.counts.files += 1;
        } else if ft.is_symlink() {
            target =
                std::fs::read_link(source).map_err(|e| DiffError::io("read link", source, e))?;
            fields.kind = EntryType::Symlink;
            fields.link = Some(target.as_os_str().as_bytes());
            fields.path = &path;
            self.write_header(&fields)?;
            self.counts.symlinks += 1;
        } else {
            let rdev = meta.rdev();
            fields.kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            if fields.kind != EntryType::Fifo {
                fields.device = Some((libc::major(rdev), libc::minor(rdev)));
                self.counts.devices += 1;
            } else {
                self.counts.fifos += 1;
            }
            fields.path = &path;
            self.write_header(&fields)?;
        }
        Ok(())
    }

    /// Add a directory entry `name` made up from its attributes alone (no source on disk,
    /// no xattrs): a parent directory a build step creates. `mtime` is clamped as any other.
    pub fn add_dir(
        &mut self,
        name: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
    ) -> Result<(), DiffError> {
        let mut path = name.as_os_str().as_bytes().to_vec();
        if path.last() != Some(&b'/') {
            path.push(b'/');
        }
        let mtime = self.mtime_clamp.map_or(mtime, |e| mtime.min(e));
        self.write_header(&Fields {
            path: &path,
            kind: EntryType::Directory,
            mode: mode & 0o7777,
            uid: uid.into(),
            gid: gid.into(),
            mtime,
            size: 0,
            link: None,
            device: None,
            xattrs: Vec::new(),
        })?;
        self.counts.dirs += 1;
        Ok(())
    }

    /// Add the whiteout `dir/.wh.NAME`: `name` of the lower layers is deleted.
    pub fn add_whiteout(&mut self, dir: &Path, name: &OsStr) -> Result<(), DiffError> {
        let path = dir.join(whiteout_name(name));
        self.write_marker(path.as_os_str().as_bytes())?;
        self.counts.whiteouts += 1;
        Ok(())
    }

    /// Add the opaque marker `dir/.wh..wh..opq`: the lower layers' entries of `dir` are hidden.
    pub fn add_opaque(&mut self, dir: &Path) -> Result<(), DiffError> {
        let path = dir.join(OPAQUE_MARKER);
        self.write_marker(path.as_os_str().as_bytes())?;
        self.counts.opaques += 1;
        Ok(())
    }

    /// End the archive (two zero blocks) and return the inner writer and the report.
    pub fn finish(mut self) -> Result<(W, DiffReport), DiffError> {
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .and_then(|()| self.out.flush())
            .map_err(DiffError::Output)?;
        let (inner, (diff_id, size)) = self.out.finish();
        Ok((
            inner,
            DiffReport {
                diff_id,
                size,
                counts: self.counts,
            },
        ))
    }

    /// An empty regular file entry, owned by root, mode 0644, mtime 0: a whiteout marker.
    fn write_marker(&mut self, path: &[u8]) -> Result<(), DiffError> {
        self.write_header(&Fields {
            path,
            kind: EntryType::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link: None,
            device: None,
            xattrs: Vec::new(),
        })
    }

    fn mtime(&self, meta: &Metadata) -> u64 {
        let m = u64::try_from(meta.mtime()).unwrap_or(0);
        match self.mtime_clamp {
            Some(epoch) => m.min(epoch),
            None => m,
        }
    }

    /// Write the PAX header (when needed) and the ustar header of one entry.
    fn write_header(&mut self, f: &Fields<'_>) -> Result<(), DiffError> {
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if f.path.len() > 100 {
            records.push((b"path".to_vec(), f.path.to_vec()));
        }
        if let Some(link) = f.link.filter(|l| l.len() > 100) {
            records.push((b"linkpath".to_vec(), link.to_vec()));
        }
        for (key, value, max) in [
            ("uid", f.uid, MAX_OCTAL_8),
            ("gid", f.gid, MAX_OCTAL_8),
            ("size", f.size, MAX_OCTAL_12),
            ("mtime", f.mtime, MAX_OCTAL_12),
        ] {
            if value > max {
                records.push((key.as_bytes().to_vec(), value.to_string().into_bytes()));
            }
        }
        for (name, value) in &f.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            records.push((key, value.clone()));
        }
        if !records.is_empty() {
            records.sort();
            let mut data = Vec::new();
            for (k, v) in &records {
                pax_record(&mut data, k, v);
            }
            let mut h = Header::new_ustar();
            set_bytes(&mut h.as_old_mut().name, PAX_HEADER_NAME);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_entry_type(EntryType::XHeader);
            h.set_cksum();
            self.put(h.as_bytes())?;
            self.put(&data)?;
            self.pad(data.len() as u64)?;
        }
        let mut h = Header::new_ustar();
        set_bytes(&mut h.as_old_mut().name, f.path);
        h.set_mode(f.mode);
        h.set_uid(f.uid);
        h.set_gid(f.gid);
        h.set_mtime(f.mtime);
        h.set_size(f.size);
        h.set_entry_type(f.kind);
        if let Some(link) = f.link {
            set_bytes(&mut h.as_old_mut().linkname, link);
        }
        if let Some((major, minor)) = f.device {
            let ustar = h.as_ustar_mut().expect("a ustar header");
            ustar.set_device_major(major);
            ustar.set_device_minor(minor);
        }
        h.set_cksum();
        self.put(h.as_bytes())
    }

    /// Stream exactly `len` bytes of `file` into the archive, then the padding.
    fn copy_contents(&mut self, mut file: File, len: u64, source: &Path) -> Result<(), DiffError> {
        let mut left = len;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DiffError::io("read", source, e)),
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(DiffError::Output)?;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        let grew = loop {
            match file.read(&mut probe) {
                Ok(n) => break n > 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DiffError::io("read", source, e)),
            }
        };
        if left > 0 || grew {
            return Err(DiffError::FileChanged {
                path: source.to_path_buf(),
                expected: len,
            });
        }
        self.pad(len)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), DiffError> {
        self.out.write_all(bytes).map_err(DiffError::Output)
    }

    fn pad(&mut self, len: u64) -> Result<(), DiffError> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }
}

/// Copy `value` into a fixed-size NUL-padded header field, truncated to fit (the full value
/// then travels in a PAX record).
fn set_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// Append one PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The xattrs of `path` (not following a symlink), overlayfs' own left out, sorted by name.
pub(crate) fn read_xattrs(path: &Path) -> Result<Xattrs, DiffError> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(DiffError::io("list xattrs of", path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        if is_overlay_xattr(&name) || name == ROOTLESS_XATTR {
            continue;
        }
        match xattr::get(path, &name) {
            Ok(Some(value)) => out.push((name.as_bytes().to_vec(), value)),
            Ok(None) => {}
            Err(e) => return Err(DiffError::io("read xattr of", path, e)),
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for (k, v) in [
            (&b"path"[..], vec![b'a'; 1]),
            (b"path", vec![b'a'; 89]),
            (b"path", vec![b'a'; 90]),
            (b"path", vec![b'a'; 991]),
            (b"path", vec![b'a'; 992]),
        ] {
            let mut out = Vec::new();
            pax_record(&mut out, k, &v);
            let sp = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "record {:?}", String::from_utf8_lossy(&out));
        }
    }
}
