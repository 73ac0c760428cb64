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
//!
//! Open a store with [`open_store`]: it also clears the stale state a killed process left
//! (containers recorded running whose owner died), which `molde_image::Store::open` cannot do
//! (molde-image knows nothing of containers).

pub use molde_container as container;
pub use molde_image as image;
pub use molde_layerfs as layerfs;

use std::path::PathBuf;

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

/// The README's example, compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
