//! Import and export of images: the OCI image layout (a directory, [`oci::import_dir`] and
//! [`oci::export_dir`]), the oci-archive (a tar of that layout, [`oci::import_archive`] and
//! [`oci::export_archive`]), the docker-archive of `docker save` / `docker load`
//! ([`docker::import`], [`docker::export`]), and a rootfs tarball as a one-layer image
//! ([`rootfs::import`], like `docker import`). [`import`] reads either kind of archive.
//!
//! Imports stream: a layer goes straight from its file or archive entry into the store's
//! blob ingest, which verifies its digest and size; no layer is held in memory. An import adds
//! its images to `index.json` in one update, and only after every blob they need is in the
//! store and verified, so bad input leaves no image behind: at most verified blobs that nothing
//! references, which the next [`Store::gc`](crate::Store::gc) frees.
//!
//! Exports write the stored blobs unchanged (a docker-archive holds uncompressed layers, as
//! `docker save` does), so exporting then importing gives the same digests.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

use molde_layerfs::Digest;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType};

use crate::blob::BlobError;
use crate::image::{Image, ImageError};
use crate::layer::{Layer, LayerMediaType};
use crate::reference::{Reference, ReferenceError};
use crate::store::{MAX_DOCUMENT, REF_NAME, Store, StoreError};

pub mod docker;
mod layers;
pub mod oci;
pub mod rootfs;
mod scan;

/// The annotation containerd and docker (25+) put on `index.json` descriptors with the full
/// image name; preferred over [`REF_NAME`] when present.
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Why an import or export failed. Whatever the cause, an import that fails adds no image.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing an archive stream failed.
    #[error("{op} archive: {source}")]
    Stream {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The archive ends before its end-of-archive marker: cut off in an entry or between two.
    #[error("archive is truncated{}", entry.as_ref().map(|e| format!(" in entry {e}")).unwrap_or_default())]
    Truncated {
        /// The entry being read when the data ran out, if any.
        entry: Option<String>,
    },
    /// A blob could not be stored: its digest or size is not the one its name or descriptor
    /// gives ([`BlobError::DigestMismatch`] names the expected and the actual digest).
    #[error("{what}: {source}")]
    Blob {
        /// The entry or file the blob came from.
        what: String,
        /// Why it was refused.
        #[source]
        source: BlobError,
    },
    /// A document names a blob that neither the input nor the store has.
    #[error("{what} names blob {digest}, which is missing")]
    MissingBlob {
        /// Who names it.
        what: String,
        /// The missing blob.
        digest: Digest,
    },
    /// A docker-archive `manifest.json` names a file the archive does not have (or that is
    /// not a regular file).
    #[error("{what} names {path:?}, which is not in the archive")]
    MissingFile {
        /// Who names it.
        what: String,
        /// The path named.
        path: String,
    },
    /// A document or layer is of a media type molde does not handle.
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// Which document or layer.
        what: String,
        /// The media type found.
        media_type: String,
    },
    /// A non-distributable (foreign) layer that the input does not include: its publisher
    /// points to URLs, from which molde fetches nothing.
    #[error(
        "{what}: layer {digest} is non-distributable and not in the input (its publisher lists \
         {urls:?}); molde fetches nothing from there: import an archive that includes it"
    )]
    ForeignLayer {
        /// Which manifest.
        what: String,
        /// The layer's digest.
        digest: Digest,
        /// Where its publisher says it can be had.
        urls: Vec<String>,
    },
    /// A tag in the input (or given for the import) is not a valid reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A JSON document is malformed.
    #[error("{what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest and config do not make a valid image (layer, DiffID and history counts).
    #[error("{what}: {source}")]
    Image {
        /// Which image.
        what: String,
        /// What is wrong.
        #[source]
        source: ImageError,
    },
    /// A layer's content does not match the DiffID its config declares.
    #[error("layer {layer}: DiffID mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The layer (archive path or digest).
        layer: String,
        /// The DiffID declared.
        expected: Digest,
        /// The DiffID of the content.
        actual: Digest,
    },
    /// The input is not of the expected format.
    #[error("not {format}: {reason}")]
    Format {
        /// The format expected (`an OCI image layout`, `a docker-archive`, `a tar`).
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A document in the input is larger than molde reads (manifests and configs are small).
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// Which document.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// No image of an index matches this platform.
    #[error("{what}: no manifest for platform {os}/{arch}")]
    NoPlatform {
        /// Which index.
        what: String,
        /// The operating system looked for.
        os: &'static str,
        /// The architecture looked for.
        arch: &'static str,
    },
    /// A store operation failed (resolving an image to export, writing the index...).
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// How to name what an import brings in.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The repository for tags given without one: an OCI layout's
    /// `org.opencontainers.image.ref.name` is often a bare tag (`v1`, as `skopeo copy ...
    /// oci:DIR:v1` writes), which becomes `<repository>:v1`. Without it a bare tag is read as
    /// a reference of its own (`v1` is `v1:latest`).
    pub repository: Option<String>,
}

/// One layer of an imported image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedLayer {
    /// The layer.
    pub layer: Layer,
    /// Whether the store had its blob before this import (`docker pull`'s "Already exists").
    pub existed: bool,
}

/// One image an import brought in.
#[derive(Debug, Clone)]
pub struct ImportedImage {
    /// The image, now in the store's index.
    pub image: Image,
    /// The tags it was given.
    pub tags: Vec<Reference>,
    /// Its layers, bottom first, each saying whether it already existed.
    pub layers: Vec<ImportedLayer>,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// The images imported, in the order of the input.
    pub images: Vec<ImportedImage>,
}

impl ImportReport {
    /// Whether every layer of every image was already in the store.
    pub fn all_existed(&self) -> bool {
        self.images
            .iter()
            .all(|i| i.layers.iter().all(|l| l.existed))
    }
}

impl fmt::Display for ImportReport {
    /// As `docker pull` and `docker load` print it: one line per layer (`Already exists` or
    /// `Imported`), then `Loaded image: name:tag` (or the id of an untagged image).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for image in &self.images {
            for l in &image.layers {
                let status = if l.existed {
                    "Already exists"
                } else {
                    "Imported"
                };
                writeln!(f, "{}: {status}", &l.layer.digest.hex()[..12])?;
            }
            if image.tags.is_empty() {
                writeln!(f, "Loaded image ID: {}", image.image.id())?;
            }
            for t in &image.tags {
                writeln!(f, "Loaded image: {t}")?;
            }
        }
        Ok(())
    }
}

/// Import an oci-archive or a docker-archive, whichever `reader` holds (an archive with an
/// `index.json` is read as an OCI layout, one with only a `manifest.json` as a docker-archive).
/// See [`oci::import_archive`] and [`docker::import`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use molde_image::archive::{self, ImportOptions};
/// use molde_image::{ImageBuilder, Store};
///
/// // An image in one store, exported as an oci-archive...
/// let a = Store::temporary()?;
/// let layer = a.add_layer(&tar_with_one_file()[..])?.layer;
/// let image = a.commit(ImageBuilder::new().layer(layer, "ADD motd /etc/motd"))?;
/// a.tag(&image, "demo:v1")?;
/// let mut tar = Vec::new();
/// archive::oci::export_archive(&a, &["demo:v1"], &mut tar)?;
///
/// // ...imported into another: the same digests, the tag, and what already existed.
/// let b = Store::temporary()?;
/// let report = archive::import(&b, &tar[..], &ImportOptions::default())?;
/// assert_eq!(report.images[0].image.manifest_digest(), image.manifest_digest());
/// assert!(!report.all_existed());
/// assert_eq!(b.resolve("demo:v1")?.id(), image.id());
/// let again = archive::import(&b, &tar[..], &ImportOptions::default())?;
/// assert!(again.all_existed());
/// # Ok(())
/// # }
/// # fn tar_with_one_file() -> Vec<u8> {
/// #     let mut b = tar::Builder::new(Vec::new());
/// #     let mut h = tar::Header::new_ustar();
/// #     h.set_size(2);
/// #     h.set_mode(0o644);
/// #     b.append_data(&mut h, "etc/motd", &b"hi"[..]).unwrap();
/// #     b.into_inner().unwrap()
/// # }
/// ```
pub fn import(
    store: &Store,
    reader: impl Read,
    options: &ImportOptions,
) -> Result<ImportReport, ArchiveError> {
    let _content = store.content_lock(crate::lock::LockKind::Shared)?;
    let scanned = scan::scan(store, reader)?;
    if scanned.has("index.json") {
        oci::import_scanned(store, &scanned, options)
    } else if scanned.has("manifest.json") {
        docker::import_scanned(store, &scanned)
    } else {
        Err(ArchiveError::Format {
            format: "an oci-archive or docker-archive",
            reason: "the archive has neither index.json nor manifest.json".into(),
        })
    }
}

// ---- shared by the formats ----

/// Turn a tag found in the input into a reference: a full reference is kept, a bare tag gets
/// the repository of the options (see [`ImportOptions::repository`]).
fn tag_reference(tag: &str, options: &ImportOptions) -> Result<Reference, ArchiveError> {
    let bare = !tag.contains([':', '/', '@']);
    let r = match (&options.repository, bare) {
        (Some(repo), true) => Reference::parse(&format!("{repo}:{tag}"))?,
        _ => Reference::parse(tag)?,
    };
    if r.tag().is_none() {
        // `name@sha256:...` names content, not a tag: nothing to tag.
        return Err(ArchiveError::Format {
            format: "a tag",
            reason: format!("{tag:?} is a digest reference"),
        });
    }
    Ok(r)
}

/// The tag a descriptor of `index.json` carries, if any.
fn descriptor_tag(
    d: &Descriptor,
    options: &ImportOptions,
) -> Result<Option<Reference>, ArchiveError> {
    let ann = d.annotations().as_ref();
    if let Some(name) = ann.and_then(|a| a.get(CONTAINERD_IMAGE_NAME)) {
        return tag_reference(name, &ImportOptions::default()).map(Some);
    }
    match ann.and_then(|a| a.get(REF_NAME)) {
        Some(t) => tag_reference(t, options).map(Some),
        None => Ok(None),
    }
}

/// Read at most [`MAX_DOCUMENT`] bytes of a document.
fn read_document(what: &str, reader: impl Read) -> Result<Vec<u8>, ArchiveError> {
    let mut buf = Vec::new();
    reader
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ArchiveError::Stream {
            op: "reading",
            source,
        })?;
    if buf.len() as u64 > MAX_DOCUMENT {
        return Err(ArchiveError::TooLarge {
            what: what.to_owned(),
            limit: MAX_DOCUMENT,
        });
    }
    Ok(buf)
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::Json {
        what: what.to_owned(),
        source,
    })
}

fn parse_digest(what: &str, s: &str) -> Result<Digest, ArchiveError> {
    s.parse().map_err(|source| ArchiveError::Image {
        what: what.to_owned(),
        source: ImageError::BadDigest {
            what: s.to_owned(),
            source,
        },
    })
}

/// Whether a descriptor's media type is an image index (OCI or docker manifest list).
fn is_index(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageIndex) || media_type.to_string() == DOCKER_MANIFEST_LIST
}

/// Parse a manifest and check every media type in it is one molde handles. Foreign and
/// non-distributable layers are accepted (see [`layers`]): the manifest comes back with
/// ordinary media types, with the original descriptors of those layers (the import then writes
/// the manifest anew).
fn parse_manifest(
    what: &str,
    bytes: &[u8],
) -> Result<(ImageManifest, Vec<Descriptor>), ArchiveError> {
    let mut manifest: ImageManifest = parse_json(what, bytes)?;
    if let Some(mt) = manifest.media_type()
        && !matches!(mt, MediaType::ImageManifest)
        && mt.to_string() != DOCKER_MANIFEST
    {
        return Err(ArchiveError::UnsupportedMediaType {
            what: what.to_owned(),
            media_type: mt.to_string(),
        });
    }
    let cmt = manifest.config().media_type().to_string();
    if cmt != MediaType::ImageConfig.to_string() && cmt != DOCKER_CONFIG {
        return Err(ArchiveError::UnsupportedMediaType {
            what: format!("config of {what}"),
            media_type: cmt,
        });
    }
    for (i, l) in manifest.layers().iter().enumerate() {
        if LayerMediaType::parse(l.media_type().as_ref()).is_none() && !layers::is_foreign(l) {
            return Err(ArchiveError::UnsupportedMediaType {
                what: format!("layer {i} ({}) of {what}", l.digest()),
                media_type: l.media_type().to_string(),
            });
        }
    }
    let foreign = layers::make_ordinary(&mut manifest);
    Ok((manifest, foreign))
}

/// Make an [`Image`] of a checked manifest and its config bytes.
fn image_of(
    what: &str,
    manifest_digest: Digest,
    manifest_size: u64,
    manifest: ImageManifest,
    config_digest: Digest,
    config_bytes: &[u8],
) -> Result<Image, ArchiveError> {
    let config: ImageConfiguration =
        parse_json(&format!("config {config_digest} of {what}"), config_bytes)?;
    Image::from_documents(
        manifest_digest,
        manifest_size,
        manifest,
        config_digest,
        config,
    )
    .map(|i| i.with_docker_fields(config_bytes))
    .map_err(|source| ArchiveError::Image {
        what: what.to_owned(),
        source,
    })
}

/// Remembers, for each blob of one import, whether the store had it before the import began
/// (the first answer wins: a layer shared by two images of one archive is new for both).
#[derive(Debug, Default)]
struct Seen(HashMap<Digest, bool>);

impl Seen {
    fn note(&mut self, digest: Digest, existed: bool) -> bool {
        *self.0.entry(digest).or_insert(existed)
    }
}

/// The platform names of this machine, as OCI spells them.
fn this_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    ("linux", arch)
}
