//! # molde-image
//!
//! The content store, immutable [`Image`] and [`Layer`] types, tags, holds, remove, prune and
//! GC. Depends on `molde-layerfs` only.
//!
//! ## Vocabulary
//!
//! - **store** ([`Store`]): a directory holding an OCI image layout in `oci/` (`oci-layout`,
//!   `index.json`, `blobs/sha256/`, and nothing else), with molde's own state beside it in
//!   `molde/`. Several threads and processes share one store under file locks.
//! - **blob**: content addressed by its sha256 digest, written once, read-only.
//! - **layer** ([`Layer`]): a layer blob with its DiffID; unpacked once per ChainID.
//! - **image** ([`Image`]): manifest + config; immutable, cheap to clone. New images come from
//!   an [`ImageBuilder`] and [`Store::commit`].
//! - **tag**: a [`Reference`] (`name:tag`) naming an image in `index.json`.
//! - **hold** ([`Hold`]): a persistent lease that keeps an image from removal and collection.
//! - **archive** ([`archive`]): import and export of OCI layouts, oci-archives,
//!   docker-archives and rootfs tarballs.

#![deny(missing_docs)]

pub mod archive;
pub mod base;
pub mod blob;
pub mod builder;
mod diffids;
mod holds;
pub mod image;
pub mod layer;
pub mod layout;
pub mod lock;
pub mod reference;
pub mod store;
pub mod unpack;

pub use archive::{ArchiveError, ImportOptions, ImportReport, ImportedImage, ImportedLayer};
pub use builder::ImageBuilder;
pub use image::{HistoryEntry, Image, ImageError};
pub use layer::{Layer, LayerMediaType};
pub use molde_layerfs as layerfs;
pub use reference::{Reference, ReferenceError};
pub use store::{
    AddedLayer, ContentGuard, GcReport, Hold, ImageSummary, Removed, Store, StoreError,
};
pub use unpack::UnpackedLayer;
