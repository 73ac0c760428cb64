//! The store's layers by content: `molde/diffids/<diffid hex>`, a symlink whose target names
//! one stored blob with that DiffID (`gzip@sha256:<hex>`). It is how a layer that comes again
//! under another compression (a plain tar imported, then the same tar gzip-compressed from a
//! registry) is found already present, so it is neither fetched, stored nor unpacked twice.
//!
//! Written when an image enters the index (every layer of it), checked against the blob on
//! every lookup (a stale link finds nothing), and rewritten from the images GC keeps.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

use molde_layerfs::Digest;

use crate::layer::{Layer, LayerMediaType};
use crate::layout::Layout;

fn kind(mt: LayerMediaType) -> &'static str {
    match mt {
        LayerMediaType::Tar => "tar",
        LayerMediaType::Gzip => "gzip",
        LayerMediaType::Zstd => "zstd",
    }
}

fn parse_kind(s: &str) -> Option<LayerMediaType> {
    match s {
        "tar" => Some(LayerMediaType::Tar),
        "gzip" => Some(LayerMediaType::Gzip),
        "zstd" => Some(LayerMediaType::Zstd),
        _ => None,
    }
}

/// Note that `layer`'s blob holds its DiffID's content (a no-op when one is noted already).
pub(crate) fn record(layout: &Layout, layer: &Layer) -> io::Result<()> {
    let dir = layout.diffids();
    let link = dir.join(layer.diff_id.hex());
    let target = format!("{}@{}", kind(layer.media_type), layer.digest);
    match symlink(&target, &link) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Keep a link that still names a stored blob; replace a stale one.
            if lookup(layout, &layer.diff_id).is_some() {
                return Ok(());
            }
            let tmp = dir.join(format!(".{}.tmp", layer.diff_id.hex()));
            let _ = fs::remove_file(&tmp);
            symlink(&target, &tmp)?;
            fs::rename(&tmp, &link)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir)?;
            record(layout, layer)
        }
        Err(e) => Err(e),
    }
}

/// A stored layer blob whose uncompressed content has this DiffID, if any.
pub(crate) fn lookup(layout: &Layout, diff_id: &Digest) -> Option<Layer> {
    let target = fs::read_link(layout.diffids().join(diff_id.hex())).ok()?;
    let (k, d) = target.to_str()?.split_once('@')?;
    let media_type = parse_kind(k)?;
    let digest: Digest = d.parse().ok()?;
    let size = fs::metadata(layout.blob(&digest)).ok()?.len();
    Some(Layer {
        digest,
        diff_id: *diff_id,
        size,
        media_type,
    })
}

/// Rewrite the links from the layers GC keeps: links to freed blobs go, kept layers that
/// had none (stored by an older molde) get one.
pub(crate) fn rebuild<'a>(
    layout: &Layout,
    kept: impl IntoIterator<Item = &'a Layer>,
) -> io::Result<()> {
    let dir = layout.diffids();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if stale(layout, &entry.path()) {
                    fs::remove_file(entry.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for layer in kept {
        record(layout, layer)?;
    }
    Ok(())
}

fn stale(layout: &Layout, link: &Path) -> bool {
    let Some(hex) = link.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    match format!("sha256:{hex}").parse::<Digest>() {
        Ok(diff_id) => lookup(layout, &diff_id).is_none(),
        Err(_) => true,
    }
}
