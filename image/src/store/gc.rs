//! Garbage collection: free every blob and unpacked layer no image in the index reaches.

use std::collections::BTreeSet;
use std::fs;

use molde_layerfs::Digest;

use super::{GcReport, Store, StoreError, io_err};
use crate::blob;
use crate::layer::Layer;
use crate::lock::LockKind;

/// What the index reaches: blobs, unpacked stacks (ChainIDs), and the layers of loaded images.
type Reachable = (BTreeSet<Digest>, BTreeSet<Digest>, Vec<Layer>);

impl Store {
    /// Blobs and unpacked layers reachable from the index.
    fn reachable(&self) -> Result<Reachable, StoreError> {
        let mut blobs = BTreeSet::new();
        let mut chains = BTreeSet::new();
        let mut layers = Vec::new();
        for md in self.entries()?.into_keys() {
            blobs.insert(md);
            match self.load(md) {
                Ok(image) => {
                    blobs.insert(image.id());
                    blobs.extend(image.layers().iter().map(|l| l.digest));
                    chains.extend(image.chain_ids());
                    layers.extend_from_slice(image.layers());
                }
                // A failure to read (I/O, too many open files...) says nothing about what
                // the image reaches: collecting now could free what it uses. Stop.
                Err(e @ (StoreError::Io { .. } | StoreError::Blob(_))) => return Err(e),
                // A definite defect of the documents (not JSON, not an image, a missing
                // blob): keep every blob the manifest names, whatever it is.
                Err(_) => blobs.extend(self.named_by_manifest(md)?),
            }
        }
        Ok((blobs, chains, layers))
    }

    /// Every digest a stored manifest names in its `config` and `layers` descriptors, read
    /// as plain JSON so that a manifest molde cannot load still pins what it names. A
    /// missing manifest names nothing; one that is not JSON names nothing either.
    fn named_by_manifest(&self, md: Digest) -> Result<Vec<Digest>, StoreError> {
        let bytes = match self.read_document("the index", &md) {
            Ok(b) => b,
            Err(StoreError::MissingBlob { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(Vec::new());
        };
        let descriptors = std::iter::once(&doc["config"]).chain(
            doc["layers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        );
        Ok(descriptors
            .filter_map(|d| d["digest"].as_str()?.parse().ok())
            .collect())
    }

    /// Free every blob and unpacked layer that no image in the index reaches, and leftovers
    /// of interrupted work. Waits for concurrent imports to finish first.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _content = self.content_lock(LockKind::Exclusive)?;
        let _g = self.index_lock()?;
        let (blobs, chains, kept) = self.reachable()?;
        let mut report = GcReport::default();
        let dir = self.layout().blobs();
        for entry in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
            let entry = entry.map_err(io_err("reading", &dir))?;
            let name = entry.file_name();
            let digest = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok());
            if digest.is_some_and(|d| blobs.contains(&d)) {
                continue;
            }
            let len = entry.metadata().map_or(0, |m| m.len());
            fs::remove_file(entry.path()).map_err(io_err("removing", &entry.path()))?;
            report.bytes += len;
            if let Some(d) = digest {
                report.blobs.push(d);
            }
        }
        let (layers, bytes) = super::trees::collect(self.layout(), &chains)?;
        report.layers = layers;
        report.bytes += bytes;
        super::trees::collect_flats(self.layout(), &chains)?;
        let dir = self.layout().diffids();
        crate::diffids::rebuild(self.layout(), &kept).map_err(io_err("rewriting", &dir))?;
        blob::clear_leftovers(&self.layout().tmp())
            .map_err(io_err("clearing", &self.layout().tmp()))?;
        Ok(report)
    }
}
