//! Export as an OCI image layout: the named images' blobs and an `index.json` naming them (tags
//! as `org.opencontainers.image.ref.name`), as a directory or as an oci-archive's tar.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use molde_layerfs::Digest;
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use crate::archive::{ArchiveError, io_err, parse_json};
use crate::blob;
use crate::image::Image;
use crate::lock::LockKind;
use crate::reference::Reference;
use crate::store::{REF_NAME, Store, canonical_json, oci_digest};

use super::{OCI_LAYOUT, check_layout};

/// An image an export wrote, with the tag it carries there (if it was named by one).
#[derive(Debug, Clone)]
pub struct ExportedImage {
    /// The image.
    pub image: Image,
    /// Its tag in the output.
    pub tag: Option<Reference>,
}

/// Resolve the names to export. An image named by a tag it has carries that tag; one named by
/// id or digest goes untagged.
pub(in crate::archive) fn resolve_all(
    store: &Store,
    names: &[&str],
) -> Result<Vec<ExportedImage>, ArchiveError> {
    let mut out = Vec::new();
    for name in names {
        let image = store.resolve(name)?;
        let tag = Reference::parse(name)
            .ok()
            .filter(|r| r.tag().is_some() && r.digest().is_none())
            .filter(|r| {
                store
                    .tags_of(&image)
                    .is_ok_and(|tags| tags.contains(&r.to_string()))
            });
        out.push(ExportedImage { image, tag });
    }
    Ok(out)
}

/// The blobs of these images, each once: layers, config, manifest.
fn blobs_of(images: &[ExportedImage]) -> Vec<(Digest, u64)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in images {
        let i = &e.image;
        let all = i.layers().iter().map(|l| (l.digest, l.size)).chain([
            (i.id(), i.manifest().config().size()),
            (i.manifest_digest(), i.manifest_size()),
        ]);
        for (d, size) in all {
            if seen.insert(d) {
                out.push((d, size));
            }
        }
    }
    out
}

fn descriptor(e: &ExportedImage) -> Descriptor {
    let mt = e
        .image
        .manifest()
        .media_type()
        .clone()
        .unwrap_or(MediaType::ImageManifest);
    let mut d = Descriptor::new(
        mt,
        e.image.manifest_size(),
        oci_digest(&e.image.manifest_digest()),
    );
    if let Some(t) = &e.tag {
        d.set_annotations(Some(HashMap::from([(REF_NAME.to_owned(), t.to_string())])));
    }
    d
}

/// `index` with these images added; a tag already there moves to the new image.
fn index_with(index: Option<ImageIndex>, images: &[ExportedImage]) -> ImageIndex {
    let mut manifests = index.map(|i| i.manifests().clone()).unwrap_or_default();
    for e in images {
        let d = descriptor(e);
        let name = e.tag.as_ref().map(|t| t.to_string());
        manifests.retain(|m| {
            let same_tag = name.is_some()
                && m.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|n| Some(n) == name.as_ref());
            let same_untagged =
                name.is_none() && m.digest() == d.digest() && m.annotations().is_none();
            !(same_tag || same_untagged)
        });
        manifests.push(d);
    }
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .unwrap_or_default()
}

/// Write the images named (tags, ids or digests; see [`Store::resolve`]) as an OCI image
/// layout at `dir`, created if needed. An existing layout there is added to (a tag it has
/// moves to the exported image). Blobs are copied unchanged, so importing the layout gives the
/// same digests.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use molde_image::archive::{ImportOptions, oci};
/// use molde_image::{ImageBuilder, Store};
///
/// let store = Store::temporary()?;
/// let image = store.commit(ImageBuilder::new().env("PATH", "/bin").cmd(["sh"]))?;
/// store.tag(&image, "empty:1")?;
/// let out = tempfile::tempdir()?;
/// oci::export_dir(&store, &["empty:1"], out.path())?;
/// assert!(out.path().join("index.json").is_file());
///
/// let other = Store::temporary()?;
/// let report = oci::import_dir(&other, out.path(), &ImportOptions::default())?;
/// assert_eq!(report.images[0].image.id(), image.id());
/// assert_eq!(other.resolve("empty:1")?.cmd(), ["sh"]);
/// # Ok(())
/// # }
/// ```
pub fn export_dir(
    store: &Store,
    names: &[&str],
    dir: &Path,
) -> Result<Vec<ExportedImage>, ArchiveError> {
    let _content = store.content_lock(LockKind::Shared)?;
    let images = resolve_all(store, names)?;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err("creating", &blobs))?;
    let layout = dir.join("oci-layout");
    let existing = if layout.exists() {
        check_layout(
            &dir.display().to_string(),
            fs::read(&layout).ok().as_deref(),
        )?;
        let p = dir.join("index.json");
        match fs::read(&p) {
            Ok(b) => Some(parse_json::<ImageIndex>(&p.display().to_string(), &b)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading", &p)(e)),
        }
    } else {
        blob::write_atomic(&layout, OCI_LAYOUT).map_err(io_err("writing", &layout))?;
        None
    };
    for (digest, _) in blobs_of(&images) {
        let to = blobs.join(digest.hex());
        if to.exists() {
            continue;
        }
        let from = store.layout().blob(&digest);
        let tmp = blobs.join(format!(".tmp-{}", digest.hex()));
        fs::copy(&from, &tmp).map_err(io_err("copying", &from))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, &to).map_err(io_err("renaming into place", &to))?;
    }
    let index = index_with(existing, &images);
    let bytes = canonical_json("index.json", &index)?;
    let p = dir.join("index.json");
    blob::write_atomic(&p, &bytes).map_err(io_err("writing", &p))?;
    Ok(images)
}

/// A tar header for a regular file, deterministic (owner 0, mtime 0).
pub(in crate::archive) fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// A tar header for a directory, deterministic.
pub(in crate::archive) fn dir_header() -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    h
}

fn write_err(source: io::Error) -> ArchiveError {
    ArchiveError::Stream {
        op: "writing",
        source,
    }
}

/// Append a stored blob to a tar, streaming it from the store.
pub(in crate::archive) fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    store: &Store,
    path: &str,
    digest: &Digest,
) -> Result<(), ArchiveError> {
    let f = store.open_blob(digest)?;
    let p = store.layout().blob(digest);
    let size = f.metadata().map_err(io_err("reading", &p))?.len();
    tar.append_data(&mut file_header(size), path, f)
        .map_err(write_err)
}

/// Append an in-memory file to a tar.
pub(in crate::archive) fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> Result<(), ArchiveError> {
    tar.append_data(&mut file_header(bytes.len() as u64), path, bytes)
        .map_err(write_err)
}

/// Write the images named as an oci-archive (a tar of an OCI image layout) to `writer`,
/// streaming each blob from the store. The output is deterministic: the same images give the
/// same bytes.
pub fn export_archive(
    store: &Store,
    names: &[&str],
    writer: impl Write,
) -> Result<Vec<ExportedImage>, ArchiveError> {
    let _content = store.content_lock(LockKind::Shared)?;
    let images = resolve_all(store, names)?;
    let mut tar = tar::Builder::new(writer);
    append_bytes(&mut tar, "oci-layout", OCI_LAYOUT)?;
    let index = canonical_json("index.json", &index_with(None, &images))?;
    append_bytes(&mut tar, "index.json", &index)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut dir_header(), dir, io::empty())
            .map_err(write_err)?;
    }
    for (digest, _) in blobs_of(&images) {
        append_blob(
            &mut tar,
            store,
            &format!("blobs/sha256/{}", digest.hex()),
            &digest,
        )?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(write_err)?;
    Ok(images)
}
