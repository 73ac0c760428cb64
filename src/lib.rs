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

/// The README's example, compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
