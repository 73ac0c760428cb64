//! Listings: the images of the index with their tags, sizes and users.

use std::fs;

use molde_layerfs::Digest;

use super::{ImageSummary, Store, StoreError, io_err};
use crate::image::Image;

impl Store {
    /// Every image with its tags, size and creation time, newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let mut out = Vec::new();
        for (md, tags) in self.entries()? {
            let image = self.load(md)?;
            out.push(ImageSummary {
                size: image.size(),
                created: image.created().map(str::to_owned),
                tags,
                image,
            });
        }
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    /// The tags of an image.
    pub fn tags_of(&self, image: &Image) -> Result<Vec<String>, StoreError> {
        Ok(self
            .entries()?
            .remove(&image.manifest_digest())
            .unwrap_or_default())
    }

    /// Sizes of everything in the store, for tests and reports: (blob count, unpacked count).
    pub fn counts(&self) -> Result<(usize, usize), StoreError> {
        let b = fs::read_dir(self.layout().blobs())
            .map_err(io_err("reading", &self.layout().blobs()))?
            .count();
        let l = super::trees::unpacked(self.layout())?.len();
        Ok((b, l))
    }

    /// The images that use a given layer blob (for reports).
    pub fn images_using(&self, layer: &Digest) -> Result<Vec<Image>, StoreError> {
        let mut out = Vec::new();
        for md in self.entries()?.into_keys() {
            let image = self.load(md)?;
            if image.layers().iter().any(|l| l.digest == *layer) {
                out.push(image);
            }
        }
        Ok(out)
    }
}
