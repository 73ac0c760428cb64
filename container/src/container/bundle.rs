//! Export: a container (or what a builder would create) as an OCI runtime bundle, a `rootfs/`
//! and a `config.json` built with oci-spec's runtime types, that runc runs as molde would.
//!
//! The reverse of [`crate::launch::spec_from_bundle`]. What goes into `config.json`: the
//! command line (entrypoint + cmd as resolved at create), environment, user, groups, working
//! directory, hostname, read-only root, bind, tmpfs and volume mounts (a volume as a bind of its
//! directory), memory, pids and CPU limits, rlimits, capabilities (Docker's rule: root holds the
//! set, another user only its ambient ones), `no_new_privileges`, the network namespace (none
//! for the host's network), and, when the caller is unprivileged, a user namespace with this
//! process's id maps. What has no equivalent there is refused ([`ContainerError::Export`]):
//! bridge networks and published ports (a CNI plugin's work). molde's own seccomp filter and
//! its init are not written: runc runs the program without a filter and as PID 1.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability as OciCapability, LinuxBuilder, LinuxCapabilitiesBuilder,
    LinuxCpuBuilder, LinuxIdMapping, LinuxIdMappingBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder,
    Spec as OciSpec, UserBuilder, get_default_mounts,
};

use super::{Container, ContainerBuilder};
use crate::error::ContainerError;
use crate::launch::{Capability, IdMap, IdMaps, default_capabilities};
use crate::record::{MountRecord, RunConfig};
use crate::volume::Volume;

impl Container {
    /// Write this container as an OCI runtime bundle into the new or empty directory `dir`:
    /// `dir/rootfs`, a copy of its files (image layers and writable layer, through its union
    /// view: no mount), and `dir/config.json`, its run configuration in the runtime spec's
    /// terms (see the module's documentation for what is written and what is refused).
    /// `runc run --bundle DIR ID` then runs what `start` would run.
    pub fn export_bundle(&self, dir: impl AsRef<Path>) -> Result<(), ContainerError> {
        self.check_layer_in_reach("export it as a bundle")?;
        let dir = dir.as_ref();
        let spec = runtime_spec(&self.id, &self.record.run, &self.store)?;
        let rootfs = dir.join("rootfs");
        self.view()
            .copy_to(&rootfs)
            .map_err(|source| ContainerError::Io {
                op: "copying the container's files to",
                path: rootfs.clone(),
                source: std::io::Error::other(source),
            })?;
        let config = dir.join("config.json");
        spec.save(&config).map_err(|e| ContainerError::Io {
            op: "writing",
            path: config.clone(),
            source: std::io::Error::other(e),
        })
    }
}

impl ContainerBuilder {
    /// Write what [`ContainerBuilder::create`] would make (the image's files, this
    /// configuration) as an OCI runtime bundle into `dir`, as [`Container::export_bundle`]
    /// does, without keeping a container: it is created, exported and removed.
    pub fn export_bundle(self, dir: impl AsRef<Path>) -> Result<(), ContainerError> {
        let container = self.create()?;
        let exported = container.export_bundle(dir);
        container.close()?;
        exported
    }
}

fn refuse(id: &str, what: &'static str, detail: impl Into<String>) -> ContainerError {
    ContainerError::Export {
        id: id.to_owned(),
        what,
        detail: detail.into(),
    }
}

fn utf8(id: &str, what: &'static str, s: &std::ffi::OsStr) -> Result<String, ContainerError> {
    s.to_str().map(str::to_owned).ok_or_else(|| {
        refuse(
            id,
            what,
            format!("{s:?} is not UTF-8 (config.json is JSON)"),
        )
    })
}

/// The runtime spec of a container's run configuration.
fn runtime_spec(
    id: &str,
    run: &RunConfig,
    store: &molde_image::Store,
) -> Result<OciSpec, ContainerError> {
    if !run.network.networks.is_empty() || !run.network.publish.is_empty() {
        return Err(refuse(
            id,
            "networks",
            "bridge networks and published ports have no runtime-bundle equivalent (a CNI \
             plugin's work): export a container without them",
        ));
    }
    let err = |e: oci_spec::OciSpecError| refuse(id, "config", e.to_string());
    let args = run
        .argv
        .iter()
        .map(|a| utf8(id, "argv", a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = run
        .env
        .iter()
        .map(|(k, v)| {
            let mut kv = OsString::from(k);
            kv.push("=");
            kv.push(v);
            utf8(id, "env", &kv)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let user = UserBuilder::default()
        .uid(run.uid)
        .gid(run.gid)
        .additional_gids(run.groups.clone())
        .build()
        .map_err(err)?;
    let process =
        ProcessBuilder::default()
            .terminal(run.tty)
            .user(user)
            .args(args)
            .env(env)
            .cwd(run.cwd.clone())
            .no_new_privileges(run.no_new_privileges)
            .capabilities(capability_sets(run).map_err(|name| {
                refuse(id, "capabilities", format!("{name} is unknown to oci-spec"))
            })?)
            .rlimits(
                run.rlimits
                    .iter()
                    .map(|&(resource, soft, hard)| {
                        let typ = rlimit_type(resource)
                            .ok_or_else(|| refuse(id, "rlimits", format!("resource {resource}")))?;
                        PosixRlimitBuilder::default()
                            .typ(typ)
                            .soft(soft)
                            .hard(hard)
                            .build()
                            .map_err(err)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .build()
            .map_err(err)?;
    let root = RootBuilder::default()
        .path("rootfs")
        .readonly(run.read_only_rootfs)
        .build()
        .map_err(err)?;
    let mut mounts = get_default_mounts();
    for m in &run.mounts {
        mounts.push(mount(store, m).map_err(|e| match e {
            MountError::Spec(e) => err(e),
            MountError::Volume(e) => ContainerError::Volume(e),
        })?);
    }
    let mut spec = OciSpec::default();
    spec.set_hostname(run.hostname.clone());
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts));
    spec.set_annotations(None);
    spec.set_linux(Some(linux(run).map_err(err)?));
    Ok(spec)
}

enum MountError {
    Spec(oci_spec::OciSpecError),
    Volume(crate::volume::VolumeError),
}

/// A bind, tmpfs or volume mount as the runtime spec writes it.
fn mount(store: &molde_image::Store, m: &MountRecord) -> Result<Mount, MountError> {
    let bind = |source: PathBuf, target: &Path, read_only: bool| {
        let mut options = vec!["rbind".to_owned()];
        if read_only {
            options.push("ro".into());
        }
        MountBuilder::default()
            .destination(target)
            .typ("bind")
            .source(source)
            .options(options)
            .build()
            .map_err(MountError::Spec)
    };
    match m {
        MountRecord::Bind {
            source,
            target,
            read_only,
        } => bind(source.clone(), target, *read_only),
        MountRecord::Volume {
            name,
            target,
            read_only,
        } => {
            let volume = Volume::create(store, name).map_err(MountError::Volume)?;
            bind(volume.path().to_owned(), target, *read_only)
        }
        MountRecord::Tmpfs {
            target,
            size_bytes,
            mode,
        } => {
            let mut options = vec![
                "nosuid".to_owned(),
                "nodev".into(),
                format!("mode={mode:o}"),
            ];
            if let Some(size) = size_bytes {
                options.push(format!("size={size}"));
            }
            MountBuilder::default()
                .destination(target)
                .typ("tmpfs")
                .source("tmpfs")
                .options(options)
                .build()
                .map_err(MountError::Spec)
        }
    }
}

/// Namespaces, id maps and resources.
fn linux(run: &RunConfig) -> Result<oci_spec::runtime::Linux, oci_spec::OciSpecError> {
    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if !run.host_network {
        kinds.push(LinuxNamespaceType::Network);
    }
    let maps = IdMaps::for_current_process();
    if maps.is_some() {
        kinds.push(LinuxNamespaceType::User);
    }
    let namespaces = kinds
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(bytes) = run.memory_bytes {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        // As molde's limit: memory and swap together.
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()?,
        );
    }
    if let Some(max) = run.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(max).unwrap_or(i64::MAX))
                .build()?,
        );
    }
    if let Some((quota, period)) = run.cpu_quota {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(i64::try_from(quota).unwrap_or(i64::MAX))
                .period(period)
                .build()?,
        );
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths());
    if let Some(maps) = maps {
        linux = linux
            .uid_mappings(id_mappings(&maps.uid_map)?)
            .gid_mappings(id_mappings(&maps.gid_map)?);
    }
    linux.build()
}

fn id_mappings(maps: &[IdMap]) -> Result<Vec<LinuxIdMapping>, oci_spec::OciSpecError> {
    maps.iter()
        .map(|m| {
            LinuxIdMappingBuilder::default()
                .container_id(m.inside)
                .host_id(m.outside)
                .size(m.count)
                .build()
        })
        .collect()
}

/// The process's capability sets, as Docker writes them: every set holds the container's
/// capabilities for root; another user holds only its ambient ones (inheritable, permitted,
/// effective and ambient), within the same bounding set. Err: a name oci-spec lacks.
fn capability_sets(run: &RunConfig) -> Result<oci_spec::runtime::LinuxCapabilities, String> {
    let convert = |caps: &[Capability]| -> Result<Capabilities, String> {
        caps.iter()
            .map(|c| {
                let name = c.to_string();
                name.trim_start_matches("CAP_")
                    .parse::<OciCapability>()
                    .map_err(|_| name)
            })
            .collect::<Result<HashSet<_>, _>>()
    };
    let mut bounding = default_capabilities();
    bounding.extend(run.ambient_capabilities.iter().copied());
    let bounding = convert(&bounding)?;
    let ambient = convert(&run.ambient_capabilities)?;
    let held = if run.uid == 0 {
        bounding.clone()
    } else {
        ambient.clone()
    };
    LinuxCapabilitiesBuilder::default()
        .bounding(bounding)
        .effective(held.clone())
        .permitted(held)
        .inheritable(ambient.clone())
        .ambient(ambient)
        .build()
        .map_err(|e| e.to_string())
}

/// The runtime spec's name of a `libc::RLIMIT_*` resource.
fn rlimit_type(resource: libc::__rlimit_resource_t) -> Option<PosixRlimitType> {
    use PosixRlimitType::*;
    let table = [
        (libc::RLIMIT_AS, RlimitAs),
        (libc::RLIMIT_CORE, RlimitCore),
        (libc::RLIMIT_CPU, RlimitCpu),
        (libc::RLIMIT_DATA, RlimitData),
        (libc::RLIMIT_FSIZE, RlimitFsize),
        (libc::RLIMIT_LOCKS, RlimitLocks),
        (libc::RLIMIT_MEMLOCK, RlimitMemlock),
        (libc::RLIMIT_MSGQUEUE, RlimitMsgqueue),
        (libc::RLIMIT_NICE, RlimitNice),
        (libc::RLIMIT_NOFILE, RlimitNofile),
        (libc::RLIMIT_NPROC, RlimitNproc),
        (libc::RLIMIT_RSS, RlimitRss),
        (libc::RLIMIT_RTPRIO, RlimitRtprio),
        (libc::RLIMIT_RTTIME, RlimitRttime),
        (libc::RLIMIT_SIGPENDING, RlimitSigpending),
        (libc::RLIMIT_STACK, RlimitStack),
    ];
    table
        .into_iter()
        .find(|(r, _)| *r == resource)
        .map(|(_, t)| t)
}
