//! # molde
//!
//! An embeddable Rust SDK for OCI images and containers on Linux: no daemon, no CLI.
//!
//! This facade re-exports the workspace's crates:
//! - [`layerfs`]: layers as filesystems (apply, diff, union views, union mounts);
//! - [`image`]: the content store, images and layers;
//! - [`container`]: containers and their lifecycle;
//! - [`registry`] (cargo feature `registry`, on by default): pull from and push to OCI
//!   registries, as `docker pull` / `docker push` do; [`RegistryResolver`] pulls the images a
//!   Dockerfile's `FROM` and `COPY --from` name when the store lacks them. Without the
//!   feature no HTTP stack is compiled.
//! - `harness` (cargo feature `harness`, off by default; `molde::harness`): test fixtures
//!   built once and shared across test processes, a fresh copy-on-write container per test,
//!   readiness waits, logs on failure.
//!
//! `use molde::prelude::*;` brings the everyday types into scope.
//!
//! Open a store with [`open_store`]: it also clears the stale state a killed process left
//! (containers recorded running whose owner died), which `molde_image::Store::open` cannot do
//! (molde-image knows nothing of containers).

pub use molde_container as container;
#[cfg(feature = "harness")]
pub use molde_harness as harness;
pub use molde_image as image;
pub use molde_layerfs as layerfs;
#[cfg(feature = "registry")]
pub use molde_registry as registry;

use std::path::PathBuf;

mod probe;
pub use probe::{Probe, Support, probe};
#[cfg(feature = "registry")]
mod resolver;
#[cfg(feature = "registry")]
pub use resolver::RegistryResolver;

/// Open (or create) the store at `root` and clear the stale container state a killed process
/// left in it: a container recorded `running` whose process and owner are gone is marked
/// exited (code unknown) and its cgroup removed; interrupted creations and removals are
/// finished ([`molde_container::recover`]). Use it rather than `Store::open` whenever
/// containers are involved.
///
/// ```no_run
/// let store = molde::open_store("/var/lib/molde")?;
/// for c in molde::container::Container::list(&store)? {
///     println!("{} {}", &c.id[..12], c.status);
/// }
/// # Ok::<(), molde::container::ContainerError>(())
/// ```
pub fn open_store(
    root: impl Into<PathBuf>,
) -> Result<molde_image::Store, molde_container::ContainerError> {
    let store = molde_image::Store::open(root.into())?;
    molde_container::recover(&store)?;
    Ok(store)
}

/// The everyday types, for `use molde::prelude::*;`.
pub mod prelude {
    pub use molde_layerfs::{Compression, Digest, Format, OverlayXattr, chain_id};
}

/// Whether this process can run containers: as root, or through unprivileged user namespaces.
/// The error says which setting forbids them.
pub fn containers_supported() -> Result<(), String> {
    if molde_layerfs::privilege::is_privileged() {
        return Ok(());
    }
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    if read("/proc/sys/kernel/unprivileged_userns_clone").is_some_and(|v| v == "0") {
        return Err("unprivileged user namespaces are disabled: \
                    sysctl kernel.unprivileged_userns_clone=1 allows them"
            .into());
    }
    if read("/proc/sys/user/max_user_namespaces").is_some_and(|v| v == "0") {
        return Err("user namespaces are disabled: sysctl user.max_user_namespaces=0".into());
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").is_some_and(|v| v == "1") {
        return Err("AppArmor restricts unprivileged user namespaces: \
                    sysctl kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile \
                    allowing `userns` for this program"
            .into());
    }
    Ok(())
}

/// For test suites and examples: whether containers can run here. When they cannot, prints
/// `skipping: <why>` and returns `false`, unless `MOLDE_REQUIRE_ALL=1`, which makes the missing
/// support a failure (a panic) instead.
pub fn containers_supported_or_skip() -> bool {
    match containers_supported() {
        Ok(()) => true,
        Err(why) if std::env::var_os("MOLDE_REQUIRE_ALL").is_some_and(|v| v == "1") => {
            panic!("MOLDE_REQUIRE_ALL=1 and containers cannot run here: {why}")
        }
        Err(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

/// The user guide's snippets (docs/guide.md), compiled and run as doc tests.
#[doc = include_str!("../docs/guide.md")]
#[cfg(doctest)]
pub struct GuideDoctests;

/// The README's example, compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
