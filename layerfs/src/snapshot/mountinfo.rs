//! Which mounts of this host use a snapshot: `/proc/self/mountinfo` parsed (octal escapes
//! decoded), cached until the table changes, and searched for an overlay whose upper, work or
//! lower directories are the snapshot's.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Decode mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// One line of `/proc/self/mountinfo`.
struct MountInfo {
    /// `major:minor` of the filesystem.
    device: String,
    /// The directory of the filesystem that is the root of this mount.
    root: PathBuf,
    /// Where it is mounted.
    point: PathBuf,
    /// The filesystem type.
    fstype: String,
    /// The superblock options.
    options: String,
}

/// Parse the text of a `mountinfo` file.
fn parse_mountinfo(info: &str) -> Vec<MountInfo> {
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountInfo {
                device: fields.get(2)?.to_string(),
                root: unescape_mountinfo(fields.get(3)?),
                point: unescape_mountinfo(fields.get(4)?),
                fstype: fields.get(sep + 1)?.to_string(),
                options: fields.get(sep + 3).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// The calling thread's mount table, parsed, with what tells whether it is still current.
struct MountTable {
    /// The mount namespace it describes (device and inode of `/proc/thread-self/ns/mnt`).
    ns: (u64, u64),
    /// `mountinfo`, opened in that namespace: `poll` reports `POLLPRI` once the namespace's
    /// mounts changed since the last `poll` (or since the open).
    file: fs::File,
    mounts: Vec<MountInfo>,
}

impl MountTable {
    /// Whether a mount was made or removed in the namespace since the last call (or the open).
    fn changed(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, an open descriptor, no waiting.
        let n = unsafe { libc::poll(&mut fd, 1, 0) };
        n != 0 && (n < 0 || fd.revents & (libc::POLLPRI | libc::POLLERR) != 0)
    }

    /// Read the table again from the start of the file.
    fn reload(&mut self) -> io::Result<()> {
        use std::io::{Read, Seek};
        self.file.rewind()?;
        let mut text = String::new();
        self.file.read_to_string(&mut text)?;
        self.mounts = parse_mountinfo(&text);
        Ok(())
    }

    fn open() -> io::Result<MountTable> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata("/proc/thread-self/ns/mnt")?;
        let mut file = fs::File::open("/proc/thread-self/mountinfo")?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(MountTable {
            ns: (meta.dev(), meta.ino()),
            file,
            mounts: parse_mountinfo(&text),
        })
    }
}

/// The calling thread's mount table, read again only when its mount namespace changed (a
/// mount or unmount in it, or the thread is in another namespace than at the last read):
/// removing a snapshot costs a `stat` and a `poll` rather than reading and parsing the whole
/// table. An empty table if `/proc` cannot tell.
fn with_mounts<R>(f: impl FnOnce(&[MountInfo]) -> R) -> R {
    use std::os::unix::fs::MetadataExt;
    static TABLE: std::sync::Mutex<Option<MountTable>> = std::sync::Mutex::new(None);
    let mut table = TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ns = fs::metadata("/proc/thread-self/ns/mnt")
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let current = match table.as_mut() {
        Some(t) if Some(t.ns) == ns => !t.changed() || t.reload().is_ok(),
        _ => false,
    };
    if !current {
        *table = MountTable::open().ok();
    }
    match table.as_ref() {
        Some(t) => f(&t.mounts),
        None => f(&[]),
    }
}

/// A mount of this mount namespace that uses the snapshot directory `dir` (resolved): one
/// mounted at or under it, a bind mount of it or of something in it (found by the mount's
/// root within the same filesystem), or an overlay whose `upperdir` is `upper` (as the
/// mount was given it, so best effort). Returns its mount point.
pub(super) fn mount_using(dir: &Path, upper: Option<&Path>) -> Option<PathBuf> {
    with_mounts(|mounts| mount_in(mounts, dir, upper))
}

/// [`mount_using`] in the table `mounts`.
fn mount_in(mounts: &[MountInfo], dir: &Path, upper: Option<&Path>) -> Option<PathBuf> {
    // `a` is `b` or under it. The byte prefix is the cheap necessary condition (a host may
    // have thousands of mounts, and this runs at every removal); the component-wise check
    // decides.
    use std::os::unix::ffi::OsStrExt;
    let under = |a: &Path, b: &Path| {
        a.as_os_str()
            .as_bytes()
            .starts_with(b.as_os_str().as_bytes())
            && a.starts_with(b)
    };
    // The mount holding `dir` (the last, i.e. topmost, with the longest mount point), and
    // `dir`'s path inside that filesystem.
    let holder = mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| under(dir, &m.point))
        .max_by_key(|(i, m)| (m.point.as_os_str().len(), *i))
        .map(|(i, _)| i);
    let inside = holder.and_then(|i| {
        let m = &mounts[i];
        let rest = dir.strip_prefix(&m.point).ok()?;
        Some((i, m.device.clone(), m.root.join(rest)))
    });
    for (i, m) in mounts.iter().enumerate() {
        if under(&m.point, dir) {
            return Some(m.point.clone());
        }
        if let Some((holder, device, dir_in_fs)) = &inside {
            if i != *holder && m.device == *device && under(&m.root, dir_in_fs) {
                return Some(m.point.clone());
            }
        }
        if let Some(upper) = upper {
            let names_upper = m.fstype == "overlay"
                && m.options.split(',').any(|option| {
                    option
                        .strip_prefix("upperdir=")
                        .is_some_and(|u| unescape_mountinfo(u) == upper)
                });
            if names_upper {
                return Some(m.point.clone());
            }
        }
    }
    None
}
