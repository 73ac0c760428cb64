//! User namespace id maps: the single-id map an unprivileged process may write for itself,
//! and the map through its subordinate ranges (`/etc/subuid`, `/etc/subgid`), written by the
//! setuid helpers `newuidmap` and `newgidmap` (Debian's `uidmap`).
//!
//! Also the ownership record of a rootless unpack: where a file's owner cannot be set, its
//! owner is kept in the `user.rootlesscontainers` xattr, in umoci's encoding, so that a diff
//! (or umoci) gives it back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One line of a `uid_map` or `gid_map`: `count` ids from `inside` map to `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The first id inside the namespace.
    pub inside: u32,
    /// The first id outside (in the parent namespace).
    pub outside: u32,
    /// How many consecutive ids.
    pub count: u32,
}

/// The id maps of a user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    /// The `uid_map` lines.
    pub uid_map: Vec<IdMap>,
    /// The `gid_map` lines.
    pub gid_map: Vec<IdMap>,
}

/// Why the subordinate id maps could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    /// `/etc/subuid` or `/etc/subgid` could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `newuidmap` or `newgidmap` could not be run.
    #[error("running {tool}: {source} (install Debian's uidmap package: apt-get install uidmap)")]
    Spawn {
        /// The helper.
        tool: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `newuidmap` or `newgidmap` refused the map.
    #[error(
        "{tool} refused the map for pid {pid} ({status}): {stderr}; check this user's entries \
         in /etc/subuid and /etc/subgid (usermod --add-subuids FIRST-LAST --add-subgids \
         FIRST-LAST USER) and that {tool} is setuid root or has cap_setuid/cap_setgid"
    )]
    Refused {
        /// The helper.
        tool: &'static str,
        /// The child whose map it was to write.
        pid: u32,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// Writing the map directly failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The `/proc/<pid>/...` file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Where the setuid helpers live.
const NEWUIDMAP: &str = "/usr/bin/newuidmap";
const NEWGIDMAP: &str = "/usr/bin/newgidmap";

impl IdMaps {
    /// Maps container root (0) to the caller's effective uid and gid: the one mapping an
    /// unprivileged process may write for itself.
    pub fn rootless() -> IdMaps {
        IdMaps {
            uid_map: vec![IdMap {
                inside: 0,
                outside: nix::unistd::geteuid().as_raw(),
                count: 1,
            }],
            gid_map: vec![IdMap {
                inside: 0,
                outside: nix::unistd::getegid().as_raw(),
                count: 1,
            }],
        }
    }

    /// Container root maps to the caller's effective uid and gid, and ids from 1 on to the
    /// caller's subordinate ranges in `/etc/subuid` and `/etc/subgid`, in file order (as
    /// podman maps them). `None` when the caller has no range in either file, or when
    /// `newuidmap`/`newgidmap` are missing.
    pub fn subordinate() -> Result<Option<IdMaps>, IdMapError> {
        Self::subordinate_from(Path::new("/etc/subuid"), Path::new("/etc/subgid"))
    }

    /// [`IdMaps::subordinate`] from the given files.
    pub fn subordinate_from(subuid: &Path, subgid: &Path) -> Result<Option<IdMaps>, IdMapError> {
        if !Path::new(NEWUIDMAP).exists() || !Path::new(NEWGIDMAP).exists() {
            return Ok(None);
        }
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        let name = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name);
        let read = |path: &Path| match std::fs::read_to_string(path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(IdMapError::Read {
                path: path.to_owned(),
                source,
            }),
        };
        let users = ranges(&read(subuid)?, name.as_deref(), uid.as_raw());
        let groups = ranges(&read(subgid)?, name.as_deref(), uid.as_raw());
        if users.is_empty() || groups.is_empty() {
            return Ok(None);
        }
        Ok(Some(IdMaps {
            uid_map: with_ranges(uid.as_raw(), &users),
            gid_map: with_ranges(gid.as_raw(), &groups),
        }))
    }

    /// The maps a container of this process gets: `None` for a privileged process (no user
    /// namespace), else [`IdMaps::subordinate`] where the user has ranges, else
    /// [`IdMaps::rootless`]. Read once per process.
    pub fn for_current_process() -> Option<&'static IdMaps> {
        static MAPS: OnceLock<Option<IdMaps>> = OnceLock::new();
        if crate::privilege::is_privileged() {
            return None;
        }
        MAPS.get_or_init(|| match IdMaps::subordinate() {
            Ok(Some(maps)) => Some(maps),
            Ok(None) => Some(IdMaps::rootless()),
            Err(e) => {
                tracing::warn!(error = %e, "subordinate ids unusable: a single-id user namespace");
                Some(IdMaps::rootless())
            }
        })
        .as_ref()
    }

    /// The subordinate maps of this process, if it is unprivileged and has them (the
    /// [`IdMaps::for_current_process`] answer, when it maps more than one id).
    pub fn subordinate_for_current_process() -> Option<&'static IdMaps> {
        IdMaps::for_current_process().filter(|m| m.needs_helpers())
    }

    /// Whether writing these maps needs `newuidmap`/`newgidmap`: an unprivileged process may
    /// write only a single line mapping its own effective ids.
    pub fn needs_helpers(&self) -> bool {
        !(self.uid_map.len() == 1
            && self.gid_map.len() == 1
            && self.uid_map[0].count == 1
            && self.gid_map[0].count == 1
            && self.uid_map[0].outside == nix::unistd::geteuid().as_raw()
            && self.gid_map[0].outside == nix::unistd::getegid().as_raw())
    }

    /// Whether `setgroups` stays allowed in a namespace with these maps once written by
    /// [`IdMaps::write_for`]: for a privileged writer and through `newgidmap`, yes; a single
    /// line written by an unprivileged process needs `setgroups` denied first.
    pub fn setgroups_allowed(&self) -> bool {
        crate::privilege::is_privileged() || self.needs_helpers()
    }

    /// Write the maps of the user namespace of process `pid` (a child waiting for them):
    /// directly where allowed, else through `newuidmap` and `newgidmap`.
    pub fn write_for(&self, pid: u32) -> Result<(), IdMapError> {
        if crate::privilege::is_privileged() || !self.needs_helpers() {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            let write = |name: &str, content: &str| {
                std::fs::write(proc_dir.join(name), content).map_err(|source| IdMapError::Write {
                    path: proc_dir.join(name),
                    source,
                })
            };
            write("uid_map", &lines(&self.uid_map))?;
            if !crate::privilege::is_privileged() {
                write("setgroups", "deny")?;
            }
            return write("gid_map", &lines(&self.gid_map));
        }
        helper(NEWUIDMAP, "newuidmap", pid, &self.uid_map)?;
        helper(NEWGIDMAP, "newgidmap", pid, &self.gid_map)
    }

    /// The id inside the namespace of host uid `outside`, if mapped.
    pub fn uid_inside(&self, outside: u32) -> Option<u32> {
        inside(&self.uid_map, outside)
    }

    /// The id inside the namespace of host gid `outside`, if mapped.
    pub fn gid_inside(&self, outside: u32) -> Option<u32> {
        inside(&self.gid_map, outside)
    }
}

fn inside(map: &[IdMap], outside: u32) -> Option<u32> {
    map.iter()
        .find(|m| outside >= m.outside && outside - m.outside < m.count)
        .map(|m| m.inside + (outside - m.outside))
}

/// The map's lines as `uid_map` takes them.
pub fn lines(map: &[IdMap]) -> String {
    map.iter()
        .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
        .collect()
}

fn helper(path: &str, tool: &'static str, pid: u32, map: &[IdMap]) -> Result<(), IdMapError> {
    let mut cmd = Command::new(path);
    cmd.arg(pid.to_string());
    for m in map {
        cmd.args([
            m.inside.to_string(),
            m.outside.to_string(),
            m.count.to_string(),
        ]);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| IdMapError::Spawn { tool, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(IdMapError::Refused {
            tool,
            pid,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The ranges (start, count) of `/etc/subuid`-style `text` for the user `name` or `uid`.
fn ranges(text: &str, name: Option<&str>, uid: u32) -> Vec<(u32, u32)> {
    let uid = uid.to_string();
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != uid && Some(who) != name {
                return None;
            }
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .filter(|&(_, count)| count > 0)
        .collect()
}

/// 0 -> `own`, then the ranges from 1 on.
fn with_ranges(own: u32, ranges: &[(u32, u32)]) -> Vec<IdMap> {
    let mut map = vec![IdMap {
        inside: 0,
        outside: own,
        count: 1,
    }];
    let mut next = 1u32;
    for &(start, count) in ranges {
        map.push(IdMap {
            inside: next,
            outside: start,
            count,
        });
        next = next.saturating_add(count);
    }
    map
}

/// The xattr where a rootless unpack keeps an owner it could not set (umoci's name).
pub const ROOTLESS_XATTR: &str = "user.rootlesscontainers";

/// umoci's "no change" id in [`ROOTLESS_XATTR`].
const NOOP_ID: u32 = u32::MAX;

/// The [`ROOTLESS_XATTR`] value for an owner: umoci's protobuf message
/// `Resource { uint32 uid = 1; uint32 gid = 2; }` (fields equal to 0 are left out, as proto3
/// does). Two varints do not warrant a protobuf dependency.
pub fn encode_owner(uid: u32, gid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    for (tag, v) in [(0x08u8, uid), (0x10u8, gid)] {
        if v == 0 {
            continue;
        }
        out.push(tag);
        let mut v = v;
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    out
}

/// The owner a [`ROOTLESS_XATTR`] value records: `(uid, gid)`, each `None` where umoci's
/// "no change" id stands; `None` when the value is not such a message.
pub fn decode_owner(value: &[u8]) -> Option<(Option<u32>, Option<u32>)> {
    let (mut uid, mut gid) = (0u32, 0u32);
    let mut i = 0;
    while i < value.len() {
        let tag = value[i];
        i += 1;
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *value.get(i)?;
            i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        let v = u32::try_from(v).ok()?;
        match tag {
            0x08 => uid = v,
            0x10 => gid = v,
            _ => return None,
        }
    }
    let keep = |id: u32| (id != NOOP_ID).then_some(id);
    Some((keep(uid), keep(gid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_or_uid_in_file_order() {
        let text = "alice:100000:65536\n1001:300000:10\nbob:200000:65536\nalice:400000:0\n";
        assert_eq!(
            ranges(text, Some("alice"), 1001),
            vec![(100000, 65536), (300000, 10)]
        );
        let map = with_ranges(1001, &ranges(text, Some("alice"), 1001));
        let maps = IdMaps {
            uid_map: map.clone(),
            gid_map: map,
        };
        assert_eq!(maps.uid_inside(1001), Some(0));
        assert_eq!(maps.uid_inside(100000), Some(1));
        assert_eq!(maps.uid_inside(165535), Some(65536));
        assert_eq!(maps.uid_inside(300000), Some(65537));
        assert_eq!(maps.uid_inside(300010), None);
        assert_eq!(lines(&maps.uid_map[..2]), "0 1001 1\n1 100000 65536\n");
    }

    #[test]
    fn owners_round_trip_in_umoci_encoding() {
        // umoci writes {uid: 1000, gid: 42} as 08 e8 07 10 2a.
        assert_eq!(encode_owner(1000, 42), [0x08, 0xe8, 0x07, 0x10, 0x2a]);
        assert_eq!(encode_owner(0, 0), Vec::<u8>::new());
        for (u, g) in [(0, 42), (1000, 0), (65534, 65534), (u32::MAX - 1, 7)] {
            assert_eq!(decode_owner(&encode_owner(u, g)), Some((Some(u), Some(g))));
        }
        assert_eq!(
            decode_owner(&encode_owner(NOOP_ID, 5)),
            Some((None, Some(5)))
        );
        assert_eq!(decode_owner(&[0x18, 1]), None);
        assert_eq!(decode_owner(&[0x08, 0x80]), None);
    }
}
