//! # molde-layerfs: layers as filesystems
//!
//! This crate knows files, directories and tar streams. It knows nothing of images, manifests or
//! containers: those live in `molde-image` and `molde-container`, which depend on it.
//!
//! ## Vocabulary
//!
//! - **layer**: an OCI changeset, a tar stream (plain, gzip or zstd) of added or changed entries
//!   and whiteouts for deleted ones.
//! - **apply** ([`apply()`]): write a layer onto a directory, in one of two [`Format`]s: *flat*
//!   (a rootfs, whiteouts applied by deleting) or *overlay* (a directory usable as an overlay
//!   lowerdir, whiteouts kept as char 0/0 devices and opaque xattrs).
//! - **diff** ([`diff`]): turn changes back into a deterministic layer, natively from an overlay
//!   upper dir (cost proportional to what changed) or naively between two trees.
//! - **union view** ([`view::UnionView`]): an in-process, read-only look at a stack of layer
//!   directories with whiteout and opaque semantics, without privileges or mounts.
//! - **mount** ([`mount::Mount`]): a mount described as data. It is built here and performed by
//!   whoever needs it: on the host, or inside a container's own mount namespace.
//! - **snapshot backend** ([`snapshot::Backend`]): containerd's vocabulary (prepare, view, diff,
//!   remove, mounts) over a stack of lower layer directories: kernel overlayfs, or a copy-based
//!   fallback where overlay is missing.
//! - **DiffID** / **digest** / **ChainID** ([`digest`]): the sha256 of the uncompressed stream, of
//!   the stored blob, and of a stack of DiffIDs.

#![deny(missing_docs)]

pub mod apply;
pub mod compression;
pub mod diff;
pub mod digest;
pub mod idmap;
pub mod mount;
pub mod privilege;
pub mod secure;
pub mod snapshot;
pub mod userns;
pub mod view;
pub mod whiteout;

pub use apply::{ApplyError, ApplyOptions, ApplyReport, apply};
pub use compression::Compression;
pub use digest::{Digest, chain_id};
pub use whiteout::{Format, OverlayXattr};
