//! A rootfs tarball as a one-layer image, like `docker import`: the tar (plain, gzip or zstd)
//! becomes the layer as it is, with a history entry saying where it came from.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use molde_layerfs::{Digest, compression};

use super::{ArchiveError, ImportedImage, ImportedLayer, io_err, tag_reference};
use crate::blob;
use crate::builder::ImageBuilder;
use crate::layer::{Layer, LayerMediaType};
use crate::lock::LockKind;
use crate::store::Store;

/// How to make the image of a rootfs tarball.
#[derive(Debug, Clone)]
pub struct RootfsOptions {
    /// The config to start from (env, cmd, labels...; like `docker import --change`). Its
    /// existing layers, if any, go below the imported one.
    pub builder: ImageBuilder,
    /// The history entry's `created_by`.
    pub created_by: String,
    /// The history entry's comment (docker writes `Imported from <source>`).
    pub comment: String,
    /// A tag for the image (`name:tag`).
    pub tag: Option<String>,
}

impl Default for RootfsOptions {
    fn default() -> Self {
        RootfsOptions {
            builder: ImageBuilder::new(),
            created_by: String::new(),
            comment: "Imported from -".into(),
            tag: None,
        }
    }
}

/// Reads a stream through, noting when it ran out (to tell a truncated tar from a whole one).
struct Tracked<R> {
    inner: R,
    eof: Rc<Cell<bool>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        Ok(n)
    }
}

/// Check that a stored blob is a whole tar (maybe compressed) and compute its DiffID, in one
/// streaming pass.
fn check_tar(store: &Store, digest: &Digest) -> Result<(LayerMediaType, Digest), ArchiveError> {
    let path = store.layout().blob(digest);
    let f = store.open_blob(digest)?;
    let (c, plain) = compression::decompress(io::BufReader::with_capacity(1 << 20, f))
        .map_err(io_err("decompressing", &path))?;
    let eof = Rc::new(Cell::new(false));
    let hashing = molde_layerfs::digest::HashingReader::new(Tracked {
        inner: plain,
        eof: eof.clone(),
    });
    let not_tar = |reason: String| ArchiveError::Format {
        format: "a tar",
        reason,
    };
    let mut archive = tar::Archive::new(hashing);
    let mut count = 0usize;
    for entry in archive.entries().map_err(|e| not_tar(e.to_string()))? {
        let mut entry = entry.map_err(|e| {
            if eof.get() {
                ArchiveError::Truncated { entry: None }
            } else {
                not_tar(e.to_string())
            }
        })?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        // Read the data through (it is hashed): a short entry is a truncated tar.
        let want = entry.size();
        let got = io::copy(&mut entry, &mut io::sink()).map_err(io_err("decompressing", &path))?;
        if got != want {
            return Err(ArchiveError::Truncated { entry: Some(name) });
        }
        count += 1;
    }
    if eof.get() {
        return Err(if count == 0 {
            not_tar("empty input".into())
        } else {
            ArchiveError::Truncated { entry: None }
        });
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(io_err("decompressing", &path))?;
    let (_, diff_id, _) = rest.finish();
    Ok((LayerMediaType::from_compression(c), diff_id))
}

/// Import a rootfs tarball (plain, gzip or zstd) from `reader` as a one-layer image, tagged
/// if `options.tag` says so. The tar is stored as it comes (streamed, never held in memory),
/// checked to be a whole tar, and the image gets one history entry with the options' comment.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use molde_image::Store;
/// use molde_image::archive::rootfs::{self, RootfsOptions};
///
/// let mut tar = tar::Builder::new(Vec::new());
/// let mut h = tar::Header::new_ustar();
/// h.set_size(5);
/// h.set_mode(0o644);
/// tar.append_data(&mut h, "etc/hostname", &b"molde"[..])?;
/// let tar = tar.into_inner()?;
///
/// let store = Store::temporary()?;
/// let options = RootfsOptions {
///     tag: Some("rootfs:1".into()),
///     ..RootfsOptions::default()
/// };
/// let imported = rootfs::import(&store, &tar[..], options)?;
/// assert_eq!(imported.layers.len(), 1);
/// let image = store.resolve("rootfs:1")?;
/// assert_eq!(image.history()[0].comment.as_deref(), Some("Imported from -"));
/// # Ok(())
/// # }
/// ```
pub fn import(
    store: &Store,
    reader: impl Read,
    options: RootfsOptions,
) -> Result<ImportedImage, ArchiveError> {
    let tag = options
        .tag
        .as_deref()
        .map(|t| tag_reference(t, &Default::default()))
        .transpose()?;
    let _content = store.content_lock(LockKind::Shared)?;
    let info = blob::ingest(store.layout(), reader, None).map_err(|source| ArchiveError::Blob {
        what: "the rootfs tarball".into(),
        source,
    })?;
    let (media_type, diff_id) = check_tar(store, &info.digest)?;
    let layer = Layer {
        digest: info.digest,
        diff_id,
        size: info.size,
        media_type,
    };
    let builder = options
        .builder
        .layer(layer, options.created_by)
        .comment(options.comment);
    let image = store.write_image(builder)?;
    store.add_images(&[(image.clone(), tag.clone())])?;
    Ok(ImportedImage {
        image,
        tags: tag.into_iter().collect(),
        layers: vec![ImportedLayer {
            layer,
            existed: info.existed,
        }],
    })
}
