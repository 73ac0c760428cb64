//! # molde
//!
//! An embeddable Rust SDK for OCI images and containers on Linux: no daemon, no CLI.
//!
//! This facade re-exports the workspace's crates:
//! - [`layerfs`]: layers as filesystems (apply, diff, union views, union mounts);
//! - [`image`]: the content store, images and layers;
//! - [`container`]: containers and their lifecycle.
//!
//! `use molde::prelude::*;` brings the everyday types into scope.

pub use molde_container as container;
pub use molde_image as image;
pub use molde_layerfs as layerfs;

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
