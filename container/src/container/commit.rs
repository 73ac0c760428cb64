//! diff and commit: the writable layer's changes, listed (`docker diff`) or made into one new
//! layer on a new image (a native diff of the overlay upper: cost proportional to the change).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom};
use std::path::Path;

use molde_image::{Image, ImageBuilder};
use molde_layerfs::diff::{self, Change, DiffOptions};
use molde_layerfs::view::UnionView;

use super::Container;
use crate::error::{ContainerError, io_err};

impl Container {
    /// The paths added, changed and deleted in the writable layer, sorted by path, like
    /// `docker diff` (directories holding changes are listed as changed).
    pub fn diff(&self) -> Result<Vec<Change>, ContainerError> {
        let lowers = UnionView::new(self.snapshot.lowers.clone(), None, self.xattr);
        if self.snapshot.backend() != "copy" {
            return diff::changes(self.snapshot.changes_dir(), &lowers, self.xattr).map_err(
                |source| {
                    ContainerError::Snapshot(molde_layerfs::snapshot::SnapshotError::Diff {
                        dir: self.snapshot.dir.clone(),
                        source,
                    })
                },
            );
        }
        // The copy backend: read the names back from its (naive) diff layer.
        let mut tmp = self.diff_to_temp()?;
        let mut out = Vec::new();
        let mut archive = tar::Archive::new(BufReader::new(&mut tmp));
        let entries = archive
            .entries()
            .map_err(io_err("reading the diff of", &self.snapshot.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("reading the diff of", &self.snapshot.dir))?;
            let name = entry
                .path()
                .map_err(io_err("reading the diff of", &self.snapshot.dir))?
                .into_owned();
            let abs = Path::new("/").join(&name);
            let file = name.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if file == ".wh..wh..opq" {
                continue;
            }
            if let Some(gone) = file.strip_prefix(".wh.") {
                out.push(Change::Deleted(abs.with_file_name(gone)));
            } else if lowers.metadata(&abs).is_ok() {
                out.push(Change::Modified(abs));
            } else {
                out.push(Change::Added(abs));
            }
        }
        out.sort_by(|a, b| a.path().cmp(b.path()));
        out.dedup();
        Ok(out)
    }

    /// The writable layer's changes as a deterministic layer tar in a temp file (rewound).
    fn diff_to_temp(&self) -> Result<File, ContainerError> {
        let mut tmp = tempfile::tempfile_in(self.paths.dir())
            .map_err(io_err("creating a temp file in", self.paths.dir()))?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut tmp);
            self.backend
                .diff(&self.snapshot, &mut w, &DiffOptions::default())?;
            io::Write::flush(&mut w).map_err(io_err("writing the diff of", &self.snapshot.dir))?;
        }
        tmp.seek(SeekFrom::Start(0))
            .map_err(io_err("rewinding the diff of", &self.snapshot.dir))?;
        Ok(tmp)
    }

    /// Make the writable layer's changes one new layer on top of the container's image, as a
    /// new image in the store (untagged; its config is the image's). `message` goes into the
    /// history. The container should not be writing meanwhile (stop it for a consistent
    /// layer).
    pub fn commit(&self, message: &str) -> Result<Image, ContainerError> {
        self.check_not_removed("commit")?;
        // The writable layer is mounted `volatile` (nothing syncs it when the container
        // ends): make what is committed durable in the container too.
        let changes = self.snapshot.changes_dir();
        let dir = File::open(changes).map_err(io_err("opening", changes))?;
        nix::unistd::syncfs(&dir).map_err(|e| io_err("syncing", changes)(e.into()))?;
        let tmp = self.diff_to_temp()?;
        let added = self
            .store
            .add_layer(BufReader::with_capacity(1 << 20, tmp))?;
        let created_by = if message.is_empty() {
            format!("molde commit {}", &self.id[..12])
        } else {
            format!("molde commit {}: {message}", &self.id[..12])
        };
        let builder = ImageBuilder::from_image(&self.image).layer(added.layer, created_by);
        Ok(self.store.commit(builder)?)
    }
}
