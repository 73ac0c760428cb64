//! Finding the host's cgroup layout from `/proc/self/mountinfo`.
//!
//! Three layouts exist in the wild: pure v2 (one `cgroup2` mount, usually `/sys/fs/cgroup`), pure
//! v1 (one `cgroup` mount per hierarchy, each with its controllers), and the systemd *hybrid*
//! layout: v1 hierarchies for the controllers plus a `cgroup2` mount (usually
//! `/sys/fs/cgroup/unified`) that often has no controllers at all. Nothing here assumes a path:
//! every mount point comes from mountinfo.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// A resource controller molde uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    /// `memory`: the memory limit and the OOM counter.
    Memory,
    /// `pids`: the number of processes and threads.
    Pids,
    /// `cpu`: the CFS bandwidth quota.
    Cpu,
    /// `freezer` (v1 only; v2 has `cgroup.freeze` built in): used to stop a cgroup's processes
    /// from forking while they are killed.
    Freezer,
}

impl Controller {
    /// The controller's kernel name (`memory`, `pids`, `cpu`, `freezer`).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Freezer => "freezer",
        }
    }

    /// The controllers that carry limits (those a v2 parent enables in `cgroup.subtree_control`).
    pub const LIMITS: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The cgroup v2 (unified) hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unified {
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The controllers available at the mount's root (its `cgroup.controllers`); empty on a
    /// typical hybrid host, where every controller is bound to a v1 hierarchy.
    pub controllers: Vec<String>,
}

/// One cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The controllers bound to it (`cpu`, `cpuacct`, ...) and its name if it has one
    /// (`name=systemd`), from the mount's super options.
    pub controllers: Vec<String>,
}

impl V1Hierarchy {
    /// Whether `controller` is bound to this hierarchy.
    pub fn has(&self, controller: Controller) -> bool {
        self.controllers.iter().any(|c| c == controller.name())
    }
}

/// The cgroup layout of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Only cgroup v2.
    V2 {
        /// The unified hierarchy.
        unified: Unified,
    },
    /// v1 hierarchies plus a v2 unified hierarchy (systemd's "hybrid" mode).
    Hybrid {
        /// The v1 hierarchies, in mountinfo order.
        v1: Vec<V1Hierarchy>,
        /// The v2 hierarchy.
        unified: Unified,
    },
    /// Only cgroup v1.
    V1 {
        /// The v1 hierarchies, in mountinfo order.
        v1: Vec<V1Hierarchy>,
    },
}

/// Where a controller lives on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement<'a> {
    /// In a v1 hierarchy.
    V1(&'a V1Hierarchy),
    /// In the v2 hierarchy.
    V2(&'a Unified),
}

impl Layout {
    /// The v2 hierarchy, if there is one.
    pub fn unified(&self) -> Option<&Unified> {
        match self {
            Layout::V2 { unified } | Layout::Hybrid { unified, .. } => Some(unified),
            Layout::V1 { .. } => None,
        }
    }

    /// The v1 hierarchies (empty on pure v2).
    pub fn v1(&self) -> &[V1Hierarchy] {
        match self {
            Layout::V2 { .. } => &[],
            Layout::Hybrid { v1, .. } | Layout::V1 { v1 } => v1,
        }
    }

    /// Where `controller` is: a v1 hierarchy it is bound to, else the v2 hierarchy if its root
    /// lists it, else `None`. (A controller is in at most one of them at a time.)
    pub fn placement(&self, controller: Controller) -> Option<Placement<'_>> {
        if let Some(h) = self.v1().iter().find(|h| h.has(controller)) {
            return Some(Placement::V1(h));
        }
        let unified = self.unified()?;
        unified
            .controllers
            .iter()
            .any(|c| c == controller.name())
            .then_some(Placement::V2(unified))
    }
}

/// The cgroup layout of this host, from `/proc/self/mountinfo` (and the v2 root's
/// `cgroup.controllers`).
pub fn available() -> Result<Layout, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let mounts = parse_mountinfo(&text);
    let unified = match mounts.unified {
        Some(mount) => {
            let file = mount.join("cgroup.controllers");
            let controllers = std::fs::read_to_string(&file)
                .map_err(|source| CgroupError::Io {
                    op: "read",
                    path: file,
                    source,
                })?
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            Some(Unified { mount, controllers })
        }
        None => None,
    };
    layout(mounts.v1, unified)
}

/// Combines the parsed mounts into a [`Layout`].
fn layout(v1: Vec<V1Hierarchy>, unified: Option<Unified>) -> Result<Layout, CgroupError> {
    match (v1.is_empty(), unified) {
        (true, Some(unified)) => Ok(Layout::V2 { unified }),
        (false, Some(unified)) => Ok(Layout::Hybrid { v1, unified }),
        (false, None) => Ok(Layout::V1 { v1 }),
        (true, None) => Err(CgroupError::NotMounted),
    }
}

/// The cgroup mounts found in a mountinfo text.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Mounts {
    /// v1 hierarchies, one entry per hierarchy (the first mount of each).
    pub v1: Vec<V1Hierarchy>,
    /// The first `cgroup2` mount.
    pub unified: Option<PathBuf>,
}

/// Parses `/proc/self/mountinfo` text: `id parent maj:min root mountpoint options [optional...] -
/// fstype source superoptions`. Lines that do not parse are ignored (the kernel writes them; a
/// line we do not understand is not a cgroup mount we can use).
pub(crate) fn parse_mountinfo(text: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(mount_point), Some(fstype)) = (left.get(4), right.first()) else {
            continue;
        };
        let mount = PathBuf::from(unescape(mount_point));
        match *fstype {
            "cgroup2" if mounts.unified.is_none() => mounts.unified = Some(mount),
            "cgroup" => {
                let options = right.get(2).copied().unwrap_or("");
                let controllers: Vec<String> = options
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && is_controller_option(o))
                    .map(str::to_owned)
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                // The same hierarchy mounted twice (a bind mount) has the same controller set.
                if !mounts.v1.iter().any(|h| h.controllers == controllers) {
                    mounts.v1.push(V1Hierarchy { mount, controllers });
                }
            }
            _ => {}
        }
    }
    mounts
}

/// Whether a v1 super option names a controller or the hierarchy (rather than being a mount
/// flag such as `noprefix`, `clone_children`, `xattr`, `release_agent=...`).
fn is_controller_option(option: &str) -> bool {
    if option.starts_with("name=") {
        return true;
    }
    !option.contains('=')
        && !matches!(
            option,
            "noprefix" | "clone_children" | "xattr" | "cpuset_v2_mode" | "favordynmods" | "none"
        )
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V2: &str = "\
22 26 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
29 21 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const V1: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
90 31 0:28 / /mnt/again\\040memory rw shared:14 - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_has_v1_controllers_and_a_unified_mount() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(
            m.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let names: Vec<_> = m.v1.iter().map(|h| h.controllers.join(",")).collect();
        assert_eq!(
            names,
            [
                "cpu",
                "cpuacct",
                "memory",
                "freezer",
                "pids",
                "name=systemd"
            ]
        );
        let layout = layout(
            m.v1,
            Some(Unified {
                mount: m.unified.unwrap(),
                controllers: vec!["hugetlb".into()],
            }),
        )
        .unwrap();
        assert!(matches!(layout, Layout::Hybrid { .. }));
        match layout.placement(Controller::Memory) {
            Some(Placement::V1(h)) => assert_eq!(h.mount, Path::new("/sys/fs/cgroup/memory")),
            other => panic!("memory should be v1, got {other:?}"),
        }
    }

    #[test]
    fn pure_v2_places_controllers_in_the_unified_hierarchy() {
        let m = parse_mountinfo(V2);
        assert!(m.v1.is_empty());
        let layout = layout(
            m.v1,
            Some(Unified {
                mount: m.unified.unwrap(),
                controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
            }),
        )
        .unwrap();
        assert!(matches!(layout, Layout::V2 { .. }));
        assert!(matches!(
            layout.placement(Controller::Pids),
            Some(Placement::V2(u)) if u.mount == Path::new("/sys/fs/cgroup")
        ));
        assert_eq!(layout.placement(Controller::Freezer), None);
    }

    #[test]
    fn pure_v1_with_comounted_cpu_and_a_bind_mount() {
        let m = parse_mountinfo(V1);
        assert_eq!(m.unified, None);
        // The second memory mount (escaped space in its path) is the same hierarchy.
        assert_eq!(m.v1.len(), 4);
        let layout = layout(m.v1, None).unwrap();
        match layout.placement(Controller::Cpu) {
            Some(Placement::V1(h)) => {
                assert_eq!(h.mount, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
                assert_eq!(h.controllers, ["cpu", "cpuacct"]);
            }
            other => panic!("cpu should be v1, got {other:?}"),
        }
        assert_eq!(layout.placement(Controller::Freezer), None);
        assert_eq!(
            layout.v1()[0].controllers,
            ["name=systemd"],
            "flags such as xattr and release_agent are not controllers"
        );
    }

    #[test]
    fn no_cgroup_mount_is_an_error() {
        let m = parse_mountinfo("22 26 0:20 / /proc rw - proc proc rw\n");
        assert!(matches!(layout(m.v1, None), Err(CgroupError::NotMounted)));
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
    }
}
