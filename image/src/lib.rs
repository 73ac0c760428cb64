//! # molde-image
//!
//! The content store, immutable `Image` and `Layer` types, tags, holds, remove and prune, and OCI
//! and docker archives. Depends on `molde-layerfs`. Its contents arrive with the issue
//! "molde-image: content store, immutable Image and Layer, ...": this crate is empty until then.

pub use molde_layerfs as layerfs;
