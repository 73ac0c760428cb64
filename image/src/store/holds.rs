//! Holds (leases) on images: what keeps an image from removal and collection.

use super::{Hold, Store, StoreError, io_err};
use crate::image::Image;
use molde_layerfs::Digest;

impl Store {
    /// Take a persistent hold named `name` on `image` (taking it again is a no-op).
    pub fn hold(&self, image: &Image, name: &str) -> Result<Hold, StoreError> {
        let _g = self.index_lock()?;
        let md = image.manifest_digest();
        if !self.entries()?.contains_key(&md) {
            return Err(StoreError::NotFound(md.to_string()));
        }
        let dir = self.layout().holds_dir();
        let taken =
            crate::holds::take(&dir, name, &md).map_err(io_err("writing a hold in", &dir))?;
        Ok(Hold {
            name: name.to_owned(),
            image: md,
            created: crate::builder::rfc3339(taken),
        })
    }

    /// Release the hold named `name`; `false` if there was none.
    pub fn release(&self, name: &str) -> Result<bool, StoreError> {
        let _g = self.index_lock()?;
        let dir = self.layout().holds_dir();
        crate::holds::release(&dir, name).map_err(io_err("releasing a hold in", &dir))
    }

    /// Every hold in the store, oldest first.
    pub fn holds(&self) -> Result<Vec<Hold>, StoreError> {
        let dir = self.layout().holds_dir();
        Ok(crate::holds::list(&dir)
            .map_err(io_err("reading", &dir))?
            .into_iter()
            .map(|h| Hold {
                name: h.name,
                image: h.image,
                created: crate::builder::rfc3339(h.taken),
            })
            .collect())
    }

    pub(super) fn holds_on(&self, md: Digest) -> Result<Vec<Hold>, StoreError> {
        Ok(self
            .holds()?
            .into_iter()
            .filter(|h| h.image == md)
            .collect())
    }
}
