//! Where things live under a store root.
//!
//! ```text
//! <root>/oci/                       the OCI image layout, and nothing else:
//! <root>/oci/oci-layout               {"imageLayoutVersion": "1.0.0"}
//! <root>/oci/index.json               every image; tags as org.opencontainers.image.ref.name
//! <root>/oci/blobs/sha256/<hex>       content-addressed, read-only blobs
//! <root>/molde/lock                 index lock: serialises index.json and hold updates
//! <root>/molde/gc.lock              shared by writers of content, exclusive for GC
//! <root>/molde/holds/<name>         persistent holds (leases) on images: one symlink each,
//!                                   its target the image (see `holds`)
//! <root>/molde/tmp/                 blobs being ingested (each temp file flock'ed by its writer)
//! <root>/molde/layers/<chainid>/    layers unpacked in overlay format, one per ChainID
//! <root>/molde/layers/<chainid>.tmp a layer being unpacked (guarded by <chainid>.lock)
//! <root>/molde/diffids/<diffid hex>  symlink to a stored blob with that DiffID
//!                                   (`gzip@sha256:<hex>`): layers found by content
//! ```
//!
//! The layout directory holds the layout only, so tools that walk it whole (`oci-image-tool
//! validate`, which opens every file) never meet an unpacked layer's device nodes, a hold's
//! symlink or a container's tree. An older molde kept the layout in the root itself; the
//! store moves it into `oci/` when it opens, under its index lock.

use std::env;
use std::path::{Path, PathBuf};

use molde_layerfs::Digest;

/// The environment variable naming the default store root.
pub const ROOT_ENV: &str = "MOLDE_ROOT";

/// The paths of one store.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The store root: the OCI layout directory ([`Layout::oci_dir`]) and molde's state
    /// ([`Layout::state`]) side by side.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The OCI image layout directory, `oci/`: what skopeo, umoci and oci-image-tool read
    /// (`skopeo inspect oci:<root>/oci:busybox:latest`). It holds the layout only.
    pub fn oci_dir(&self) -> PathBuf {
        self.root.join("oci")
    }
    /// `oci/oci-layout`.
    pub fn oci_layout(&self) -> PathBuf {
        self.oci_dir().join("oci-layout")
    }
    /// `oci/index.json`.
    pub fn index(&self) -> PathBuf {
        self.oci_dir().join("index.json")
    }
    /// `oci/blobs/sha256`.
    pub fn blobs(&self) -> PathBuf {
        self.oci_dir().join("blobs").join("sha256")
    }
    /// Where an older molde kept the layout, in the root itself: `blobs`, `index.json` and
    /// `oci-layout`, in the order the store moves them into [`Layout::oci_dir`] (the marker
    /// file last).
    pub(crate) fn legacy_layout_entries(&self) -> [PathBuf; 3] {
        ["blobs", "index.json", "oci-layout"].map(|name| self.root.join(name))
    }
    /// The path of one blob.
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.hex())
    }
    /// molde's own state: `molde/`.
    pub fn state(&self) -> PathBuf {
        self.root.join("molde")
    }
    /// The index lock file.
    pub fn index_lock(&self) -> PathBuf {
        self.state().join("lock")
    }
    /// The GC lock file.
    pub fn gc_lock(&self) -> PathBuf {
        self.state().join("gc.lock")
    }
    /// The holds file of an older molde (`molde/holds.json`), moved into
    /// [`Layout::holds_dir`] when the store opens.
    pub fn holds(&self) -> PathBuf {
        self.state().join("holds.json")
    }
    /// The directory of holds: one symlink per hold.
    pub fn holds_dir(&self) -> PathBuf {
        crate::holds::dir(&self.state())
    }
    /// The temp directory for ingests.
    pub fn tmp(&self) -> PathBuf {
        self.state().join("tmp")
    }
    /// The directory of unpacked layers.
    pub fn layers(&self) -> PathBuf {
        self.state().join("layers")
    }
    /// The unpacked (overlay-format) directory of the layer stack with this ChainID.
    pub fn layer(&self, chain_id: &Digest) -> PathBuf {
        self.layers().join(chain_id.hex())
    }
    /// The directory of layers by DiffID (see [`crate::Store::layer_by_diff_id`]).
    pub fn diffids(&self) -> PathBuf {
        self.state().join("diffids")
    }
    /// The directory of flattened layer stacks (see `unpack::flattened`).
    pub fn flats(&self) -> PathBuf {
        self.state().join("flat")
    }
    /// The flattened tree of the layer stack with this ChainID.
    pub fn flat(&self, chain_id: &Digest) -> PathBuf {
        self.flats().join(chain_id.hex())
    }
}

/// The default store root: `$MOLDE_ROOT`, else `/var/lib/molde` for root, else
/// `$XDG_DATA_HOME/molde` (or `~/.local/share/molde`).
pub fn default_root() -> PathBuf {
    if let Some(root) = env::var_os(ROOT_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(root);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/molde");
    }
    if let Some(xdg) = env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("molde");
    }
    let home = env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/".into());
    home.join(".local").join("share").join("molde")
}
