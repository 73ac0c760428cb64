//! Removing images from the index: remove (one name), prune (dangling or all unheld).

use std::collections::BTreeSet;

use molde_layerfs::Digest;

use super::index::{desc_digest, ref_name, remove_tag, retain_manifests};
use super::{Removed, Store, StoreError};
use crate::reference::Reference;

impl Store {
    /// Remove an image named by tag, id or prefix (see [`Store::resolve`]). A tag of an image
    /// with other tags is only untagged. Fails with [`StoreError::Held`] if the image is held.
    /// Blobs are freed by the next [`Store::gc`].
    pub fn remove(&self, what: &str) -> Result<Removed, StoreError> {
        // Resolve under the lock: a tag moved between resolving and removing would
        // otherwise remove the image it was on before.
        let _g = self.index_lock()?;
        let image = self.resolve(what)?;
        let md = image.manifest_digest();
        let holds = self.holds_on(md)?;
        if !holds.is_empty() {
            return Err(StoreError::Held { image: md, holds });
        }
        let mut index = self.read_index()?;
        let tags: Vec<String> = index
            .manifests()
            .iter()
            .filter(|d| desc_digest(d) == Some(md))
            .filter_map(|d| ref_name(d).map(str::to_owned))
            .collect();
        if let Ok(r) = Reference::parse(what)
            && r.digest().is_none()
            && tags.contains(&r.to_string())
            && tags.len() > 1
        {
            remove_tag(&mut index, &r.to_string());
            self.write_index(&index)?;
            return Ok(Removed::Untagged(r.to_string()));
        }
        retain_manifests(&mut index, |d| desc_digest(d) != Some(md));
        self.write_index(&index)?;
        Ok(Removed::Deleted(md))
    }

    /// Remove dangling images (untagged and unheld). Returns their manifest digests.
    pub fn prune(&self) -> Result<Vec<Digest>, StoreError> {
        self.prune_where(|tags| tags.is_empty())
    }

    /// Remove every unheld image, tagged or not. Returns their manifest digests.
    pub fn prune_all(&self) -> Result<Vec<Digest>, StoreError> {
        self.prune_where(|_| true)
    }

    fn prune_where(&self, pick: impl Fn(&[String]) -> bool) -> Result<Vec<Digest>, StoreError> {
        let _g = self.index_lock()?;
        let held: BTreeSet<Digest> = self.holds()?.into_iter().map(|h| h.image).collect();
        let gone: BTreeSet<Digest> = self
            .entries()?
            .into_iter()
            .filter(|(md, tags)| !held.contains(md) && pick(tags))
            .map(|(md, _)| md)
            .collect();
        if !gone.is_empty() {
            let mut index = self.read_index()?;
            retain_manifests(&mut index, |d| {
                desc_digest(d).is_none_or(|md| !gone.contains(&md))
            });
            self.write_index(&index)?;
        }
        Ok(gone.into_iter().collect())
    }
}
