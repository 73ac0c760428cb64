//! [`Store`]: a content store that is itself an OCI image layout, shared by threads and
//! processes under file locks. See [`crate::layout`] for the files on disk.
//!
//! The store's work is split by what it does: `blobs` (storing and opening blobs), `images`
//! (writing, registering and loading images), `index` (edits of `index.json`), `listing`,
//! `names` (resolving references), `holds`, `remove`, `gc`, and `open` (opening a store,
//! moving an older one forward). The store also owns the on-disk bookkeeping of its unpacked
//! trees (`trees`); making them is the `unpack` module's work.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use molde_layerfs::Digest;

use crate::image::Image;
use crate::layer::Layer;
use crate::layout::{self, Layout};
use crate::lock::{FileLock, LockKind};

mod blobs;
mod documents;
mod error;
mod gc;
mod holds;
mod images;
mod index;
mod listing;
mod names;
mod open;
mod remove;
pub(crate) mod trees;

pub(crate) use documents::{canonical_json, manifest_for, oci_digest};
pub use error::StoreError;
pub(crate) use error::io_err;
pub(crate) use index::{desc_digest, ref_name};

/// The annotation that carries a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The largest manifest or config molde reads (they are small JSON documents).
pub(crate) const MAX_DOCUMENT: u64 = 8 << 20;

/// A persistent hold (a lease) on an image: while it exists the image cannot be removed or
/// pruned, and nothing it reaches is collected. Holds outlive the process that took them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The hold's name, unique in the store (e.g. a container id).
    pub name: String,
    /// The manifest digest of the held image.
    pub image: Digest,
    /// When it was taken (RFC 3339).
    pub created: String,
}

/// One image in a listing, like a row of `docker images`.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The image.
    pub image: Image,
    /// Its tags, familiar form, sorted.
    pub tags: Vec<String>,
    /// The total size of its layer blobs.
    pub size: u64,
    /// When it was created.
    pub created: Option<String>,
}

/// What [`Store::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// Only the tag was removed: the image has other tags.
    Untagged(String),
    /// The image (manifest digest) left the index; its blobs go at the next GC.
    Deleted(Digest),
}

/// What [`Store::gc`] freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs: Vec<Digest>,
    /// Unpacked layers deleted (their ChainIDs).
    pub layers: Vec<Digest>,
    /// Bytes reclaimed (blob sizes plus unpacked file sizes).
    pub bytes: u64,
}

/// A layer blob added to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedLayer {
    /// The layer.
    pub layer: Layer,
    /// Whether its blob was already there.
    pub existed: bool,
}

/// A shared hold on the store's content lock, from [`Store::pin`]: while any exists,
/// [`Store::gc`] (in any thread or process) waits, so nothing is collected. Released when
/// dropped.
#[derive(Debug)]
#[must_use = "the content is pinned only while the guard is alive"]
pub struct ContentGuard {
    _lock: FileLock,
}

/// The content store. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Store(Arc<StoreInner>);

#[derive(Debug)]
struct StoreInner {
    layout: Layout,
    _temp: Option<tempfile::TempDir>,
}

impl Store {
    /// Open (creating if needed) the store at `root`, clearing leftovers of interrupted work.
    /// Its OCI image layout is `<root>/oci` ([`Store::oci_dir`]): skopeo and umoci read its
    /// tagged images in place. A store of an older molde, whose layout was the root itself, is
    /// moved forward (its `blobs/`, `index.json` and `oci-layout` into `oci/`; crash-safe).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use molde_image::{ImageBuilder, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// assert!(dir.path().join("oci/oci-layout").is_file());
    /// let image = store.commit(ImageBuilder::new().cmd(["sh"]))?;
    /// store.tag(&image, "shell:1")?;
    /// drop(store);
    ///
    /// // Another open (or another process) sees the same images.
    /// let again = Store::open(dir.path())?;
    /// assert_eq!(again.resolve("shell:1")?.id(), image.id());
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Self::open_with(Layout::new(root), None)
    }

    /// Open the store at the default root ([`layout::default_root`]).
    pub fn open_default() -> Result<Store, StoreError> {
        Self::open(layout::default_root())
    }

    /// A new store in a temporary directory, deleted when the last clone is dropped.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use molde_image::Store;
    ///
    /// let store = Store::temporary()?;
    /// let root = store.root().to_owned();
    /// let added = store.add_layer(&[0u8; 1024][..])?; // an empty tar: two zero blocks
    /// assert!(!added.existed);
    /// assert!(store.add_layer(&[0u8; 1024][..])?.existed);
    /// drop(store);
    /// assert!(!root.exists());
    /// # Ok(())
    /// # }
    /// ```
    pub fn temporary() -> Result<Store, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("molde-store-")
            .tempdir()
            .map_err(io_err("creating temporary store in", &std::env::temp_dir()))?;
        Self::open_with(Layout::new(dir.path()), Some(dir))
    }

    /// The store root: the OCI image layout directory ([`Store::oci_dir`]) and molde's own
    /// state beside it.
    pub fn root(&self) -> &Path {
        self.0.layout.root()
    }

    /// The store's OCI image layout directory (`<root>/oci`): skopeo, umoci and
    /// `oci-image-tool validate` read its tagged images in place. It holds the layout only.
    pub fn oci_dir(&self) -> PathBuf {
        self.0.layout.oci_dir()
    }

    /// The paths of this store.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    pub(crate) fn index_lock(&self) -> Result<FileLock, StoreError> {
        let p = self.layout().index_lock();
        FileLock::acquire(&p, LockKind::Exclusive).map_err(io_err("locking", &p))
    }

    /// Held shared by anything adding content, exclusively by GC.
    pub(crate) fn content_lock(&self, kind: LockKind) -> Result<FileLock, StoreError> {
        let p = self.layout().gc_lock();
        FileLock::acquire(&p, kind).map_err(io_err("locking", &p))
    }

    /// Keep [`Store::gc`] away until the guard is dropped.
    ///
    /// Each store call that adds content holds the content lock only while it runs, and GC
    /// frees every blob no image in the index reaches. Work done in several calls (add layer
    /// blobs with [`Store::add_layer`] or [`Store::ingest_blob`], then [`Store::commit`] or
    /// [`Store::register`] the image naming them) must therefore hold a guard from before the
    /// first call until the image is in the index; otherwise a GC in between frees the fresh
    /// blobs and the commit fails with [`StoreError::MissingBlob`]. Guards are shared: many
    /// writers hold one at once. Do not call [`Store::gc`] while holding one (it would wait
    /// for itself).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use molde_image::{ImageBuilder, Store};
    ///
    /// let store = Store::temporary()?;
    /// let image = {
    ///     let _pin = store.pin()?;
    ///     let layer = store.add_layer(&[0u8; 1024][..])?.layer; // an empty tar
    ///     store.commit(ImageBuilder::new().layer(layer, "empty"))?
    /// }; // GC may run again from here; the image is in the index and keeps its layer.
    /// store.gc()?;
    /// assert!(store.has_blob(&image.layers()[0].digest));
    /// # Ok(())
    /// # }
    /// ```
    pub fn pin(&self) -> Result<ContentGuard, StoreError> {
        Ok(ContentGuard {
            _lock: self.content_lock(LockKind::Shared)?,
        })
    }
}
