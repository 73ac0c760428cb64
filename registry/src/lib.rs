//! # molde-registry
//!
//! Pull images from OCI registries into a molde [`Store`](molde_image::Store) and push them
//! back, as `docker pull` and `docker push` do. Built on the `oci-client` crate (HTTP over
//! reqwest and rustls); the sync API ([`Pull::run`], [`Push::run`]) runs it on a runtime
//! of its own, the async one ([`Pull::run_async`], [`Push::run_async`]) on the caller's
//! tokio runtime. Depends on `molde-image`, never the reverse.
//!
//! ## Vocabulary
//!
//! - **reference**: `alpine` = `docker.io/library/alpine:latest`; `host:port/repo:tag`;
//!   `repo@sha256:...` pins content.
//! - **index** (manifest list): one manifest per platform; a pull takes this machine's
//!   ([`Platform::host`]) unless told otherwise.
//! - **Already exists**: a layer the store has, by blob digest or by content (the same
//!   DiffID under another compression, [`molde_image::Store::layer_by_diff_id`]): neither
//!   downloaded nor unpacked again. Docker keeps no compressed blobs; molde keeps one blob
//!   per DiffID: the registry's when it was downloaded, the stored one otherwise (then the
//!   stored image's manifest names the stored blobs; its config, id and DiffIDs are the
//!   registry's, and [`PullReport::digest`] is the registry's digest).
//! - **progress**: [`Progress`] events for a callback; [`ProgressDisplay`] draws them.
//! - **mirrors**: [`mirrors`] reads `registries.conf` as podman does: mirrors tried before
//!   a registry, search registries for short names, blocked registries.
//! - **credentials**: [`auth`] finds them in docker's and podman's auth files and
//!   credential helpers; plain HTTP only for loopback registries and those
//!   [`RegistryOptions::insecure`] names.

#![deny(missing_docs)]

pub mod auth;
mod client;
mod error;
pub mod mirrors;
mod platform;
mod progress;
mod pull;
mod push;
mod runtime;

pub use auth::{Credentials, CredentialsError};
pub use client::{RegistryOptions, is_loopback};
pub use error::RegistryError;
pub use mirrors::RegistriesConf;
pub use platform::{Platform, PlatformError};
pub use progress::{LayerStatus, Progress, ProgressDisplay, ProgressFn, human};
pub use pull::{
    DEFAULT_CONCURRENCY, MAX_CONFIG, MAX_MANIFEST, Pull, PullReport, PulledLayer, pull,
};
pub use push::{Push, PushReport, PushedBlob, push};
