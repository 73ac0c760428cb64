//! The docker-archive: what `docker save` writes and `docker load` reads. A tar holding
//! `manifest.json` (`[{"Config": "<id>.json", "RepoTags": ["name:tag"], "Layers":
//! ["<dir>/layer.tar", ...]}]`), `repositories` (`{"name": {"tag": "<top layer dir>"}}`), each
//! image's config and its layers as tars. docker's config JSON is an OCI image config for every
//! field molde reads, so it is stored unchanged and the image id survives the trip.
//!
//! Imported images get an OCI manifest (made as [`Store::commit`] makes one), so an image with
//! uncompressed layers exported and imported again keeps its manifest digest too. Archives of
//! docker 25+ (whose files are `blobs/sha256/...`) are read the same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};

use molde_layerfs::{Digest, compression};
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::oci::{ExportedImage, append_blob, append_bytes, dir_header, file_header, resolve_all};
use super::scan::{self, Item, Scanned};
use super::{
    ArchiveError, ImportOptions, ImportReport, ImportedImage, ImportedLayer, Seen, io_err,
    parse_json, tag_reference,
};
use crate::blob::{self, BlobError};
use crate::image::{Image, ImageError};
use crate::layer::{Layer, LayerMediaType};
use crate::lock::LockKind;
use crate::reference::Reference;
use crate::store::{Store, canonical_json, manifest_for};

/// One image of `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Import every image of a docker-archive streamed from `reader` (`docker save` output),
/// with its `RepoTags`. Layers stream into the store; each layer's DiffID is checked against
/// the config before the image is added.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use molde_image::archive::docker;
/// use molde_image::{ImageBuilder, Store};
///
/// let store = Store::temporary()?;
/// let image = store.commit(ImageBuilder::new().cmd(["true"]))?;
/// store.tag(&image, "app:1")?;
/// let mut saved = Vec::new();
/// docker::export(&store, &["app:1"], &mut saved)?;
///
/// let other = Store::temporary()?;
/// let report = docker::import(&other, &saved[..])?;
/// assert_eq!(report.images[0].image.id(), image.id());
/// assert_eq!(report.to_string(), "Loaded image: app:1\n");
/// # Ok(())
/// # }
/// ```
pub fn import(store: &Store, reader: impl Read) -> Result<ImportReport, ArchiveError> {
    let _content = store.content_lock(LockKind::Shared)?;
    let scanned = scan::scan(store, reader)?;
    import_scanned(store, &scanned)
}

/// A checked image, its config and manifest not yet stored.
struct Planned {
    image: Image,
    config: Vec<u8>,
    manifest: Vec<u8>,
    tags: Vec<Reference>,
    layers: Vec<ImportedLayer>,
}

/// The digest a file name gives (`<hex>.json`, `<hex>.tar`, `blobs/sha256/<hex>`), if any.
fn named_digest(path: &str) -> Option<Digest> {
    let name = path.rsplit('/').next()?;
    let stem = name
        .strip_suffix(".json")
        .or_else(|| name.strip_suffix(".tar"))
        .unwrap_or(name);
    if stem.len() != 64 {
        return None;
    }
    format!("sha256:{stem}").parse().ok()
}

pub(super) fn import_scanned(
    store: &Store,
    scanned: &Scanned,
) -> Result<ImportReport, ArchiveError> {
    let manifest_json = match scanned.get("manifest.json") {
        Some(Item::Doc(b)) => b,
        _ => {
            return Err(ArchiveError::Format {
                format: "a docker-archive",
                reason: "the archive has no manifest.json".into(),
            });
        }
    };
    let entries: Vec<Entry> = parse_json("manifest.json", manifest_json)?;
    // Every tag is checked before anything else.
    let mut tags = Vec::new();
    for e in &entries {
        let t = e
            .repo_tags
            .iter()
            .flatten()
            .map(|t| tag_reference(t, &ImportOptions::default()))
            .collect::<Result<Vec<_>, _>>()?;
        tags.push(t);
    }

    let mut seen = Seen::default();
    let mut plan = Vec::new();
    for (i, (e, tags)) in entries.iter().zip(tags).enumerate() {
        let what = format!("manifest.json entry {i}");
        let (config, config_digest, parsed) = entry_config(store, scanned, e, &what)?;
        let layers = entry_layers(store, scanned, e, &parsed, &mut seen, &what)?;
        let plain: Vec<Layer> = layers.iter().map(|l| l.layer).collect();
        let (manifest, manifest_bytes) = manifest_for(config_digest, config.len() as u64, &plain)?;
        let md = Digest::of(&manifest_bytes);
        let image = Image::from_documents(
            md,
            manifest_bytes.len() as u64,
            manifest,
            config_digest,
            parsed,
        )
        .map(|i| i.with_docker_fields(&config))
        .map_err(|source| ArchiveError::Image { what, source })?;
        plan.push(Planned {
            image,
            config,
            manifest: manifest_bytes,
            tags,
            layers,
        });
    }
    store_planned(store, plan)
}

/// An entry's config: its bytes, their digest (checked against the digest its file name
/// carries, if any) and the parsed document.
fn entry_config(
    store: &Store,
    scanned: &Scanned,
    e: &Entry,
    what: &str,
) -> Result<(Vec<u8>, Digest, ImageConfiguration), ArchiveError> {
    let config = match scanned.get(&e.config) {
        Some(Item::Doc(b)) => b.clone(),
        Some(Item::Blob(info)) => {
            let f = store.open_blob(&info.digest)?;
            super::read_document(&e.config, f)?
        }
        _ => {
            return Err(ArchiveError::MissingFile {
                what: what.to_owned(),
                path: e.config.clone(),
            });
        }
    };
    let config_digest = Digest::of(&config);
    if let Some(named) = named_digest(&e.config)
        && named != config_digest
    {
        return Err(ArchiveError::Blob {
            what: format!("archive entry {}", e.config),
            source: BlobError::DigestMismatch {
                expected: named,
                actual: config_digest,
            },
        });
    }
    let parsed: ImageConfiguration = parse_json(&format!("config {}", e.config), &config)?;
    Ok((config, config_digest, parsed))
}

/// An entry's layers, each checked against the DiffID its config declares; a tar already
/// stored under another compression is taken from the store.
fn entry_layers(
    store: &Store,
    scanned: &Scanned,
    e: &Entry,
    parsed: &ImageConfiguration,
    seen: &mut Seen,
    what: &str,
) -> Result<Vec<ImportedLayer>, ArchiveError> {
    let declared = parsed.rootfs().diff_ids();
    if declared.len() != e.layers.len() {
        return Err(ArchiveError::Image {
            what: what.to_owned(),
            source: ImageError::LayerCount {
                layers: e.layers.len(),
                diff_ids: declared.len(),
                history: e.layers.len(),
            },
        });
    }
    let mut layers = Vec::new();
    for (path, declared) in e.layers.iter().zip(declared) {
        let info = scanned
            .blob(path)
            .ok_or_else(|| ArchiveError::MissingFile {
                what: what.to_owned(),
                path: path.clone(),
            })?;
        let (c, diff_id) = super::layers::diff_id_of(store, &info.digest)?;
        let expected = super::parse_digest(&format!("config {}", e.config), declared)?;
        if expected != diff_id {
            return Err(ArchiveError::DiffIdMismatch {
                layer: path.clone(),
                expected,
                actual: diff_id,
            });
        }
        let layer = Layer {
            digest: info.digest,
            diff_id,
            size: info.size,
            media_type: LayerMediaType::from_compression(c),
        };
        // The same tar already stored under another compression: use that blob (the one just
        // scanned in is left unreferenced, for GC).
        if !info.existed
            && let Some(stored) = store.layer_by_diff_id(&diff_id)
        {
            layers.push(ImportedLayer {
                layer: stored,
                existed: true,
            });
            continue;
        }
        layers.push(ImportedLayer {
            layer,
            existed: seen.note(info.digest, info.existed),
        });
    }
    Ok(layers)
}

/// Stores the planned images' configs and manifests, then adds them (and their tags) to the
/// index in one step.
fn store_planned(store: &Store, plan: Vec<Planned>) -> Result<ImportReport, ArchiveError> {
    let mut index_entries = Vec::new();
    let mut report = ImportReport::default();
    for p in plan {
        for (bytes, what) in [(&p.config, "config"), (&p.manifest, "manifest")] {
            blob::ingest_bytes(store.layout(), bytes).map_err(|source| ArchiveError::Blob {
                what: format!("{what} of image {}", p.image.id()),
                source,
            })?;
        }
        if p.tags.is_empty() {
            index_entries.push((p.image.clone(), None));
        }
        for t in &p.tags {
            index_entries.push((p.image.clone(), Some(t.clone())));
        }
        report.images.push(ImportedImage {
            image: p.image,
            tags: p.tags,
            layers: p.layers,
        });
    }
    store.add_images(&index_entries)?;
    Ok(report)
}

/// A reader that must give exactly `remaining` more bytes (a layer decompressed the second
/// time must match the size its tar header announced).
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 && max > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "layer shorter on the second read",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Append a layer as an uncompressed tar. A compressed blob is decompressed twice, streaming:
/// once to learn its size (a tar header comes first) and check its DiffID, once to write it.
fn append_layer<W: Write>(
    tar: &mut tar::Builder<W>,
    store: &Store,
    path: &str,
    layer: &Layer,
) -> Result<(), ArchiveError> {
    if layer.media_type == LayerMediaType::Tar {
        return append_blob(tar, store, path, &layer.digest);
    }
    let blob_path = store.layout().blob(&layer.digest);
    let open = || -> Result<Box<dyn Read + Send>, ArchiveError> {
        let f = store.open_blob(&layer.digest)?;
        let (_, plain) = compression::decompress(io::BufReader::with_capacity(1 << 20, f))
            .map_err(io_err("decompressing", &blob_path))?;
        Ok(plain)
    };
    let (diff_id, size) =
        Digest::of_reader(open()?).map_err(io_err("decompressing", &blob_path))?;
    if diff_id != layer.diff_id {
        return Err(ArchiveError::DiffIdMismatch {
            layer: layer.digest.to_string(),
            expected: layer.diff_id,
            actual: diff_id,
        });
    }
    let data = Exact {
        inner: open()?,
        remaining: size,
    };
    tar.append_data(&mut file_header(size), path, data)
        .map_err(|source| ArchiveError::Stream {
            op: "writing",
            source,
        })
}

/// Write the images named (tags, ids or digests; see [`Store::resolve`]) as a docker-archive
/// that `docker load` and skopeo read: layers uncompressed, one directory per layer
/// (`<chainid>/layer.tar`, `VERSION`, `json`), configs as `<id>.json`, then `manifest.json`
/// and `repositories`. An image named by a tag carries it in `RepoTags`.
pub fn export(
    store: &Store,
    names: &[&str],
    writer: impl Write,
) -> Result<Vec<ExportedImage>, ArchiveError> {
    let _content = store.content_lock(LockKind::Shared)?;
    let images = resolve_all(store, names)?;
    let mut tar = tar::Builder::new(writer);
    let werr = |source| ArchiveError::Stream {
        op: "writing",
        source,
    };
    let mut written_layers = HashSet::new();
    let mut written_configs = HashSet::new();
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for e in &images {
        let image = &e.image;
        let mut paths = Vec::new();
        let mut parent: Option<String> = None;
        for (layer, chain) in image.layers().iter().zip(image.chain_ids()) {
            let id = chain.hex();
            let path = format!("{id}/layer.tar");
            if written_layers.insert(id.clone()) {
                tar.append_data(&mut dir_header(), format!("{id}/"), io::empty())
                    .map_err(werr)?;
                append_bytes(&mut tar, &format!("{id}/VERSION"), b"1.0")?;
                let mut v1 = HashMap::from([("id", id.clone())]);
                if let Some(p) = &parent {
                    v1.insert("parent", p.clone());
                }
                append_bytes(
                    &mut tar,
                    &format!("{id}/json"),
                    &canonical_json("layer json", &v1)?,
                )?;
                append_layer(&mut tar, store, &path, layer)?;
            }
            parent = Some(id);
            paths.push(path);
        }
        let config = format!("{}.json", image.id().hex());
        if written_configs.insert(config.clone()) {
            append_blob(&mut tar, store, &config, &image.id())?;
        }
        if let (Some(t), Some(top)) = (&e.tag, &parent) {
            repositories
                .entry(t.familiar_name())
                .or_default()
                .insert(t.tag().unwrap_or("latest").to_owned(), top.clone());
        }
        manifest.push(Entry {
            config,
            repo_tags: e.tag.as_ref().map(|t| vec![t.to_string()]),
            layers: paths,
        });
    }
    let manifest = serde_json::to_vec(&manifest).map_err(|source| ArchiveError::Json {
        what: "manifest.json".into(),
        source,
    })?;
    append_bytes(&mut tar, "manifest.json", &manifest)?;
    append_bytes(
        &mut tar,
        "repositories",
        &canonical_json("repositories", &repositories)?,
    )?;
    tar.into_inner().and_then(|mut w| w.flush()).map_err(werr)?;
    Ok(images)
}
