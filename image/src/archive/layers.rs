//! Layers as other tools write them: their media types (non-distributable and foreign layers
//! among them) and the check of their content against the DiffIDs their config declares.
//!
//! A non-distributable (OCI) or foreign (docker) layer is an ordinary tar whose publisher
//! restricts where it may be copied; its descriptor may carry `urls` to fetch it from. When
//! the input includes the blob, it is imported as the ordinary layer it is: the manifest is
//! rewritten with the ordinary media type (the config, hence the image id and DiffIDs, stays).
//! When it does not, the import fails with [`ArchiveError::ForeignLayer`]: molde fetches nothing
//! from those URLs.

use molde_layerfs::Digest;
use molde_layerfs::compression::{self, Compression};
use oci_spec::image::{Descriptor, ImageManifest, MediaType};

use super::{ArchiveError, io_err};
use crate::layer::{Layer, LayerMediaType};
use crate::store::Store;

/// The non-distributable and foreign layer media types, with the compression of their blobs.
const FOREIGN: &[(&str, LayerMediaType)] = &[
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        LayerMediaType::Tar,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        LayerMediaType::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        LayerMediaType::Zstd,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        LayerMediaType::Tar,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        LayerMediaType::Gzip,
    ),
];

/// The ordinary layer media type of a non-distributable or foreign one.
pub(super) fn foreign(media_type: &str) -> Option<LayerMediaType> {
    FOREIGN
        .iter()
        .find(|(name, _)| *name == media_type)
        .map(|&(_, t)| t)
}

/// Whether a layer descriptor is of a foreign or non-distributable media type.
pub(super) fn is_foreign(d: &Descriptor) -> bool {
    foreign(d.media_type().as_ref()).is_some()
}

/// Give every foreign layer of `manifest` its ordinary media type; the descriptors changed, as
/// they were.
pub(super) fn make_ordinary(manifest: &mut ImageManifest) -> Vec<Descriptor> {
    let mut changed = Vec::new();
    let mut layers = manifest.layers().clone();
    for d in &mut layers {
        if let Some(t) = foreign(d.media_type().as_ref()) {
            changed.push(d.clone());
            d.set_media_type(MediaType::from(t.as_str()));
            d.set_urls(None);
        }
    }
    manifest.set_layers(layers);
    changed
}

/// The error for a layer the input lacks: [`ArchiveError::ForeignLayer`] if it is one of
/// `foreign`, else [`ArchiveError::MissingBlob`].
pub(super) fn missing(what: &str, digest: Digest, foreign: &[Descriptor]) -> ArchiveError {
    match foreign
        .iter()
        .find(|d| d.digest().as_ref() == digest.to_string())
    {
        Some(d) => ArchiveError::ForeignLayer {
            what: what.to_owned(),
            digest,
            urls: d.urls().clone().unwrap_or_default(),
        },
        None => ArchiveError::MissingBlob {
            what: what.to_owned(),
            digest,
        },
    }
}

/// The compression and DiffID of a stored layer blob (no second read for a plain tar).
pub(super) fn diff_id_of(
    store: &Store,
    digest: &Digest,
) -> Result<(Compression, Digest), ArchiveError> {
    let path = store.layout().blob(digest);
    let f = store.open_blob(digest)?;
    let (c, plain) = compression::decompress(f).map_err(io_err("decompressing", &path))?;
    if c == Compression::None {
        return Ok((c, *digest));
    }
    let (diff_id, _) = Digest::of_reader(plain).map_err(io_err("decompressing", &path))?;
    Ok((c, diff_id))
}

/// Check a stored layer blob's content against the DiffID its image declares. A blob the
/// store already knows by that DiffID (an image of the store has it, checked then) is not read
/// again; any other is decompressed and hashed. A layer whose content is not what its config
/// says never enters the index: its DiffID would name the wrong content to every later import
/// and pull that looks layers up by content.
pub(super) fn verify_diff_id(store: &Store, what: &str, layer: &Layer) -> Result<(), ArchiveError> {
    if store
        .layer_by_diff_id(&layer.diff_id)
        .is_some_and(|known| known.digest == layer.digest)
    {
        return Ok(());
    }
    let (_, actual) = diff_id_of(store, &layer.digest)?;
    if actual != layer.diff_id {
        return Err(ArchiveError::DiffIdMismatch {
            layer: format!("{} of {what}", layer.digest),
            expected: layer.diff_id,
            actual,
        });
    }
    Ok(())
}
