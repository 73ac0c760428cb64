//! `index.json`: the images of the store and their tags, read, written and edited.

use std::collections::{BTreeMap, HashMap};
use std::fs;

use molde_layerfs::Digest;
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use super::documents::canonical_json;
use super::{REF_NAME, Store, StoreError, io_err, oci_digest};
use crate::blob;
use crate::image::Image;
use crate::reference::Reference;

impl Store {
    pub(crate) fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let p = self.layout().index();
        let bytes = fs::read(&p).map_err(io_err("reading", &p))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: p.display().to_string(),
            source,
        })
    }

    pub(super) fn write_index(&self, index: &ImageIndex) -> Result<(), StoreError> {
        let p = self.layout().index();
        let bytes = canonical_json("index.json", index)?;
        blob::write_atomic(&p, &bytes).map_err(io_err("writing", &p))
    }

    /// Every image in the index with its tags (manifest digest -> tags).
    pub(super) fn entries(&self) -> Result<BTreeMap<Digest, Vec<String>>, StoreError> {
        let index = self.read_index()?;
        let mut out: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for d in index.manifests() {
            if let Some(md) = desc_digest(d) {
                let tags = out.entry(md).or_default();
                if let Some(t) = ref_name(d) {
                    tags.push(t.to_owned());
                }
            }
        }
        for tags in out.values_mut() {
            tags.sort();
        }
        Ok(out)
    }
}

/// Add `image` (with an optional tag) to `index`. Moving a tag away never drops the image it
/// was on: it stays, untagged.
pub(super) fn index_add(index: &mut ImageIndex, image: &Image, tag: Option<&Reference>) {
    let md = image.manifest_digest();
    if let Some(tag) = tag {
        let name = tag.to_string();
        let previous = index
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name.as_str()))
            .cloned();
        remove_tag(index, &name);
        // Moving a tag away never drops the image it was on: it stays, untagged.
        if let Some(mut prev) = previous
            && !index
                .manifests()
                .iter()
                .any(|d| desc_digest(d) == desc_digest(&prev))
        {
            prev.set_annotations(None);
            push_manifest(index, prev);
        }
    }
    let present = index
        .manifests()
        .iter()
        .any(|d| desc_digest(d) == Some(md) && (tag.is_none() || ref_name(d).is_none()));
    // Replace an untagged entry by the tagged one; never duplicate an untagged entry.
    if let Some(tag) = tag {
        retain_manifests(index, |d| {
            !(desc_digest(d) == Some(md) && ref_name(d).is_none() && repo_digest(d).is_none())
        });
        push_manifest(index, index_entry(image, Some(&tag.to_string())));
    } else if !present {
        push_manifest(index, index_entry(image, None));
    }
}

/// The annotation of an `index.json` entry that records a repository digest of its image
/// (`name@sha256:...`, docker's `RepoDigests`): the digest a registry serves the image
/// under, which differs from the stored manifest's when the layers are stored under another
/// compression. Such an entry has no `org.opencontainers.image.ref.name`: it is no tag.
pub(crate) const REPO_DIGEST: &str = "io.molde.image.repo-digest";

/// Record `name` (`repo@sha256:...`) as a repository digest of `image`, moving it from
/// another image if it was on one. Returns whether the index changed.
pub(super) fn index_add_repo_digest(index: &mut ImageIndex, image: &Image, name: &str) -> bool {
    let md = image.manifest_digest();
    if index
        .manifests()
        .iter()
        .any(|d| repo_digest(d) == Some(name) && desc_digest(d) == Some(md))
    {
        return false;
    }
    retain_manifests(index, |d| repo_digest(d) != Some(name));
    let mut entry = index_entry(image, None);
    entry.set_annotations(Some(HashMap::from([(
        REPO_DIGEST.to_owned(),
        name.to_owned(),
    )])));
    push_manifest(index, entry);
    true
}

/// The repository digest an entry records, if it is such an entry.
pub(crate) fn repo_digest(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REPO_DIGEST))
        .map(String::as_str)
}

pub(crate) fn desc_digest(d: &Descriptor) -> Option<Digest> {
    d.digest().as_ref().parse().ok()
}

pub(crate) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

pub(super) fn remove_tag(index: &mut ImageIndex, tag: &str) {
    retain_manifests(index, |d| ref_name(d) != Some(tag));
}

pub(super) fn index_entry(image: &Image, tag: Option<&str>) -> Descriptor {
    let mut d = Descriptor::new(
        MediaType::ImageManifest,
        image.manifest_size(),
        oci_digest(&image.manifest_digest()),
    );
    if let Some(t) = tag {
        d.set_annotations(Some(HashMap::from([(REF_NAME.to_owned(), t.to_owned())])));
    }
    d
}

pub(super) fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .unwrap_or_default()
}

pub(super) fn retain_manifests(index: &mut ImageIndex, keep: impl Fn(&Descriptor) -> bool) {
    let mut m = index.manifests().clone();
    m.retain(|d| keep(d));
    index.set_manifests(m);
}

pub(super) fn push_manifest(index: &mut ImageIndex, d: Descriptor) {
    let mut m = index.manifests().clone();
    m.push(d);
    index.set_manifests(m);
}
