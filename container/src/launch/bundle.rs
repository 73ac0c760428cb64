//! An OCI runtime bundle (a `config.json`, as `runc spec` writes it, and its rootfs) as a
//! launch [`Spec`]: molde's launcher stands in where a bundle is what a user has.
//!
//! Read with oci-spec's runtime types. What the launcher always sets up itself (`/proc`,
//! `/sys`, `/dev` and its `pts`, `shm`, `mqueue`, the cgroup filesystem; Docker's masked and
//! read-only paths) is taken as given; what it cannot honour is refused with a typed error,
//! never silently dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec as OciSpec};

use super::spec::{Capability, ContainerMount, IdMaps, MountKind, Network, Rlimit, Spec};

/// Why a bundle cannot run under molde's launcher.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// `config.json` could not be read or parsed.
    #[error("reading the bundle's config {path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A part of the config the launcher does not support.
    #[error("the bundle's {what} is not supported by molde's launcher: {detail}")]
    Unsupported {
        /// Which part (`process.terminal`, a mount, a capability ...).
        what: &'static str,
        /// What it held, and what to do.
        detail: String,
    },
}

/// Mount points the launcher makes itself in every container.
const STANDARD: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
];

/// The launch spec of the bundle in `dir`: its root (relative to `dir`, read-only if asked),
/// process (args, env, cwd, user and groups, bounding and ambient capabilities, no_new_privileges,
/// rlimits), hostname, bind and tmpfs mounts, and network namespace (none in the config: the
/// host's). A user namespace is made when the caller is unprivileged, with its own maps.
pub fn spec_from_bundle(dir: &Path) -> Result<Spec, BundleError> {
    let path = dir.join("config.json");
    let oci = OciSpec::load(&path).map_err(|source| BundleError::Config { path, source })?;
    let unsupported = |what, detail: String| BundleError::Unsupported { what, detail };
    let root = oci
        .root()
        .as_ref()
        .ok_or_else(|| unsupported("root", "none given".into()))?;
    let process = oci
        .process()
        .as_ref()
        .ok_or_else(|| unsupported("process", "none given".into()))?;
    if process.terminal() == Some(true) {
        return Err(unsupported(
            "process.terminal",
            "true: set it to false (molde's launcher gives the process the caller's streams)"
                .into(),
        ));
    }
    let args = process.args().clone().unwrap_or_default();
    let Some((program, rest)) = args.split_first() else {
        return Err(unsupported("process.args", "empty".into()));
    };
    let root_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    let mut spec = Spec::new(root_path, program);
    spec.args = rest.iter().map(OsString::from).collect();
    spec.readonly_rootfs = root.readonly().unwrap_or(false);
    spec.env = process
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.into(), v.into()),
            None => (kv.into(), OsString::new()),
        })
        .collect();
    if let Some((_, path)) = spec.env.iter().find(|(k, _)| k == "PATH") {
        spec.path_dirs = std::env::split_paths(path).collect();
    }
    spec.cwd = process.cwd().clone();
    let user = process.user();
    // As runc: HOME, when the config leaves it out, is the user's home in the rootfs's
    // /etc/passwd (read inside the rootfs), else `/`.
    if !spec.env.iter().any(|(k, _)| k == "HOME") {
        spec.env
            .push(("HOME".into(), home_of(&spec.root, user.uid()).into()));
    }
    spec.uid = user.uid();
    spec.gid = user.gid();
    spec.groups = user.additional_gids().clone().unwrap_or_default();
    spec.no_new_privs = process.no_new_privileges().unwrap_or(false);
    spec.hostname = oci.hostname().clone();
    let caps = process.capabilities().as_ref();
    if let Some(bounding) = caps.and_then(|c| c.bounding().clone()) {
        spec.capabilities = capabilities(&bounding)?;
    }
    if let Some(ambient) = caps.and_then(|c| c.ambient().clone()) {
        spec.ambient_capabilities = capabilities(&ambient)?;
    }
    for r in process.rlimits().clone().unwrap_or_default() {
        let resource = rlimit_resource(&format!("{:?}", r.typ()))
            .ok_or_else(|| unsupported("rlimit", format!("{:?}", r.typ())))?;
        spec.rlimits.push(Rlimit {
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    for m in oci.mounts().clone().unwrap_or_default() {
        let dest = m.destination().clone();
        if STANDARD.iter().any(|s| dest == Path::new(s)) {
            continue;
        }
        let options = m.options().clone().unwrap_or_default();
        let bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        let kind = if bind {
            let source = m
                .source()
                .clone()
                .ok_or_else(|| unsupported("mount", format!("{} has no source", dest.display())))?;
            MountKind::Bind {
                source,
                read_only: options.iter().any(|o| o == "ro"),
            }
        } else if m.typ().as_deref() == Some("tmpfs") {
            MountKind::Tmpfs {
                size_bytes: None,
                mode: 0o1777,
            }
        } else {
            return Err(unsupported(
                "mount",
                format!("{} of type {:?}", dest.display(), m.typ()),
            ));
        };
        spec.mounts.push(ContainerMount { target: dest, kind });
    }
    let namespaces = oci
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Network)
    {
        spec.network = Network::Host;
    }
    spec.user_namespace = IdMaps::for_current_process().cloned();
    Ok(spec)
}

/// The home directory of `uid` in `root`'s `/etc/passwd`, else `/`.
fn home_of(root: &Path, uid: u32) -> String {
    let view = molde_layerfs::view::UnionView::new(
        vec![root.to_owned()],
        None,
        molde_layerfs::OverlayXattr::for_current_process(),
    );
    let passwd = view.read(Path::new("/etc/passwd")).unwrap_or_default();
    String::from_utf8_lossy(&passwd)
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2].parse() == Ok(uid))
        .map_or_else(|| "/".to_owned(), |f| f[5].to_owned())
}

/// The launcher's capabilities of an OCI capability set.
fn capabilities(set: &oci_spec::runtime::Capabilities) -> Result<Vec<Capability>, BundleError> {
    set.iter()
        .map(|c| {
            let name = c.to_string();
            let name = if name.starts_with("CAP_") {
                name
            } else {
                format!("CAP_{name}")
            };
            name.parse::<Capability>()
                .map_err(|_| BundleError::Unsupported {
                    what: "capability",
                    detail: name.clone(),
                })
        })
        .collect()
}

/// `libc::RLIMIT_*` of an OCI rlimit type (`RlimitNofile`, as oci-spec debug-prints it).
fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    let r = match name.to_ascii_uppercase().trim_start_matches("RLIMIT") {
        "AS" => libc::RLIMIT_AS,
        "CORE" => libc::RLIMIT_CORE,
        "CPU" => libc::RLIMIT_CPU,
        "DATA" => libc::RLIMIT_DATA,
        "FSIZE" => libc::RLIMIT_FSIZE,
        "LOCKS" => libc::RLIMIT_LOCKS,
        "MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "NICE" => libc::RLIMIT_NICE,
        "NOFILE" => libc::RLIMIT_NOFILE,
        "NPROC" => libc::RLIMIT_NPROC,
        "RSS" => libc::RLIMIT_RSS,
        "RTPRIO" => libc::RLIMIT_RTPRIO,
        "RTTIME" => libc::RLIMIT_RTTIME,
        "SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "STACK" => libc::RLIMIT_STACK,
        _ => return None,
    };
    Some(r)
}
