//! Names of images: tags, repository digests, and finding an image by tag, digest, id or
//! prefix.

use std::collections::BTreeMap;

use molde_layerfs::Digest;

use super::index::{
    desc_digest, index_add_repo_digest, index_entry, push_manifest, ref_name, remove_tag,
    repo_digest,
};
use super::{Store, StoreError};
use crate::image::Image;
use crate::reference::Reference;

impl Store {
    /// Tag `image` as `reference` (moving the tag if another image had it).
    pub fn tag(&self, image: &Image, reference: &str) -> Result<Reference, StoreError> {
        let r = Reference::parse(reference)?;
        if r.tag().is_none() {
            return Err(StoreError::NotFound(format!(
                "{reference} (a tag needs name:tag, not a digest)"
            )));
        }
        let tag_ref = Reference::parse(&format!(
            "{}:{}",
            r.familiar_name(),
            r.tag().unwrap_or("latest")
        ))?;
        self.add_to_index(image, Some(&tag_ref))?;
        Ok(tag_ref)
    }

    /// Record that `image` is what the registry serves as `reference` (`name@sha256:...`,
    /// docker's `RepoDigests`: the digest of the manifest or index as served), so that
    /// [`Store::resolve`] finds the image by it even when its stored manifest differs (its
    /// layers stored under another compression). A pull records it; the image must be in
    /// the index (see [`Store::register`]). Returns the digest reference as recorded
    /// (familiar form, without the tag).
    pub fn add_repo_digest(
        &self,
        image: &Image,
        reference: &Reference,
    ) -> Result<Reference, StoreError> {
        let Some(digest) = reference.digest() else {
            return Err(StoreError::NotFound(format!(
                "{reference} (a repository digest needs name@sha256:...)"
            )));
        };
        let name = Reference::parse(&format!("{}@{digest}", reference.familiar_name()))?;
        let _g = self.index_lock()?;
        let mut index = self.read_index()?;
        let md = image.manifest_digest();
        if !index.manifests().iter().any(|d| desc_digest(d) == Some(md)) {
            return Err(StoreError::NotFound(format!(
                "{md} (not in the index: register the image first)"
            )));
        }
        if index_add_repo_digest(&mut index, image, &name.to_string()) {
            self.write_index(&index)?;
        }
        Ok(name)
    }

    /// The repository digests recorded for an image (`name@sha256:...`, sorted).
    pub fn repo_digests(&self, image: &Image) -> Result<Vec<String>, StoreError> {
        let md = image.manifest_digest();
        let mut out: Vec<String> = self
            .read_index()?
            .manifests()
            .iter()
            .filter(|d| desc_digest(d) == Some(md))
            .filter_map(|d| repo_digest(d).map(str::to_owned))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Remove a tag; the image stays (untagged if it was its last tag).
    pub fn untag(&self, reference: &str) -> Result<Image, StoreError> {
        let r = Reference::parse(reference)?;
        let _g = self.index_lock()?;
        let mut index = self.read_index()?;
        let name = r.to_string();
        let md = index
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name.as_str()))
            .and_then(desc_digest)
            .ok_or_else(|| StoreError::NotFound(reference.to_owned()))?;
        remove_tag(&mut index, &name);
        if !index.manifests().iter().any(|d| desc_digest(d) == Some(md)) {
            let image = self.load(md)?;
            push_manifest(&mut index, index_entry(&image, None));
        }
        self.write_index(&index)?;
        self.load(md)
    }

    /// Find an image by tag (`name:tag`), digest reference (`name@sha256:...`), id or
    /// manifest digest (`sha256:...`), or a unique prefix of an id or manifest digest (at
    /// least 4 hex digits, or any length after `sha256:`).
    pub fn resolve(&self, what: &str) -> Result<Image, StoreError> {
        let entries = self.entries()?;
        if let Ok(d) = what.parse::<Digest>() {
            if entries.contains_key(&d) {
                return self.load(d);
            }
            return self.by_id_prefix(&entries, &d.hex(), what);
        }
        // A bare prefix needs 4 hex digits (shorter ones read as names); with `sha256:` any
        // length will do.
        let (hex, min) = match what.strip_prefix("sha256:") {
            Some(h) => (h, 1),
            None => (what, 4),
        };
        let is_hex = hex.len() >= min && hex.bytes().all(|b| b.is_ascii_hexdigit());
        let as_ref = Reference::parse(what);
        if let Ok(r) = &as_ref {
            if let Some(d) = r.digest() {
                return if entries.contains_key(&d) {
                    self.load(d)
                } else {
                    self.by_repo_digest(&format!("{}@{d}", r.familiar_name()), what)
                };
            }
            let name = r.to_string();
            if let Some((md, _)) = entries.iter().find(|(_, tags)| tags.contains(&name)) {
                return self.load(*md);
            }
        }
        if is_hex {
            return self.by_id_prefix(&entries, hex, what);
        }
        match as_ref {
            Ok(_) => Err(StoreError::NotFound(what.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    fn by_repo_digest(&self, name: &str, what: &str) -> Result<Image, StoreError> {
        let index = self.read_index()?;
        match index
            .manifests()
            .iter()
            .find(|d| repo_digest(d) == Some(name))
            .and_then(desc_digest)
        {
            Some(md) => self.load(md),
            None => Err(StoreError::NotFound(what.to_owned())),
        }
    }

    fn by_id_prefix(
        &self,
        entries: &BTreeMap<Digest, Vec<String>>,
        hex: &str,
        what: &str,
    ) -> Result<Image, StoreError> {
        let mut found: BTreeMap<Digest, Image> = BTreeMap::new();
        for md in entries.keys() {
            let image = self.load(*md)?;
            if image.id().hex().starts_with(hex) || md.hex().starts_with(hex) {
                found.insert(image.id(), image);
            }
        }
        match found.len() {
            0 => Err(StoreError::NotFound(what.to_owned())),
            1 => Ok(found.into_values().next().unwrap_or_else(|| unreachable!())),
            _ => Err(StoreError::Ambiguous {
                prefix: what.to_owned(),
                candidates: found.into_keys().collect(),
            }),
        }
    }
}
