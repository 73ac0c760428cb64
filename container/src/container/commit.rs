//! diff and commit: the writable layer's changes, listed (`docker diff`) or made into one new
//! layer on a new image (a native diff of the overlay upper: cost proportional to the change).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use molde_image::{Image, ImageBuilder};
use molde_layerfs::OverlayXattr;
use molde_layerfs::diff::{self, Change, DiffOptions};
use molde_layerfs::idmap::IdMaps;
use molde_layerfs::snapshot::{Backend, Snapshot};
use molde_layerfs::userns;
use molde_layerfs::view::UnionView;

use super::Container;
use crate::error::{ContainerError, io_err};

impl Container {
    /// The paths added, changed and deleted in the writable layer, sorted by path, like
    /// `docker diff` (directories holding changes are listed as changed).
    pub fn diff(&self) -> Result<Vec<Change>, ContainerError> {
        self.check_layer_in_reach("list the changes of its writable layer")?;
        changes_of(
            self.backend.as_ref(),
            &self.snapshot,
            self.xattr,
            self.paths.dir(),
        )
    }

    /// The writable layer's changes as a deterministic layer tar in a temp file (rewound).
    fn diff_to_temp(&self) -> Result<File, ContainerError> {
        self.check_layer_in_reach("write its writable layer as a layer")?;
        diff_to_temp(self.backend.as_ref(), &self.snapshot, self.paths.dir())
    }

    /// Make the writable layer's changes one new layer on top of the container's image, as a
    /// new image in the store (untagged; its config is the image's). `message` goes into the
    /// history. The container should not be writing meanwhile (stop it for a consistent
    /// layer).
    pub fn commit(&self, message: &str) -> Result<Image, ContainerError> {
        self.check_not_removed("commit")?;
        self.check_layer_in_reach("commit")?;
        // The writable layer is mounted `volatile` (nothing syncs it when the container
        // ends): make what is committed durable in the container too.
        let changes = self.snapshot.changes_dir();
        let dir = File::open(changes).map_err(io_err("opening", changes))?;
        nix::unistd::syncfs(&dir).map_err(|e| io_err("syncing", changes)(e.into()))?;
        let tmp = self.diff_to_temp()?;
        // Keep GC away until the new image is in the index and holds its layer.
        let _pin = self.store.pin()?;
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

/// `snapshot`'s changes as a deterministic layer tar in a temp file in `tmp_dir` (rewound).
fn diff_to_temp(
    backend: &dyn Backend,
    snapshot: &Snapshot,
    tmp_dir: &Path,
) -> Result<File, ContainerError> {
    let mut tmp =
        tempfile::tempfile_in(tmp_dir).map_err(io_err("creating a temp file in", tmp_dir))?;
    write_diff(backend, snapshot, &mut tmp, DiffOptions::default())?;
    tmp.seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding the diff of", &snapshot.dir))?;
    Ok(tmp)
}

/// Write `snapshot`'s changes as a layer into `out`, every owner as the container saw it.
///
/// Rootless with subordinate ids, parts of a writable layer belong to ids the caller may not
/// read (a user's 0700 home): the diff runs as root of a user namespace with the container's
/// maps, where `stat` shows the ids the container saw. With the caller's own ids alone,
/// owners are translated through that map (and umoci's `user.rootlesscontainers` record).
pub(crate) fn write_diff(
    backend: &dyn Backend,
    snapshot: &Snapshot,
    out: &mut File,
    mut opts: DiffOptions,
) -> Result<(), ContainerError> {
    let maps = IdMaps::for_current_process();
    if let Some(maps) = maps.filter(|m| m.needs_helpers()) {
        opts.owners = None;
        return userns::run_as_root(maps, || {
            let mut w = BufWriter::with_capacity(1 << 20, &mut *out);
            backend
                .diff(snapshot, &mut w, &opts)
                .map_err(|e| io::Error::from_raw_os_error(errno_of(&e)))?;
            io::Write::flush(&mut w)
        })
        .map_err(io_err(
            "writing (as root of a user namespace with the container's id maps) the diff of",
            &snapshot.dir,
        ));
    }
    opts.owners = maps;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    backend.diff(snapshot, &mut w, &opts)?;
    io::Write::flush(&mut w).map_err(io_err("writing the diff of", &snapshot.dir))
}

/// The errno at the root of `e`'s sources (EIO when none is an OS error).
fn errno_of(e: &(dyn std::error::Error + 'static)) -> i32 {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(code) = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return code;
        }
        cur = err.source();
    }
    libc::EIO
}

/// The paths added, changed and deleted in a writable `snapshot`, sorted, the same for every
/// backend: overlay lists its upper over the lowers; copy reads the names back from its naive
/// diff layer (a directory entry's tar name ends with `/`: the path is rebuilt from its
/// components, so `/app` is `/app` whichever backend made it).
pub(crate) fn changes_of(
    backend: &dyn Backend,
    snapshot: &Snapshot,
    xattr: OverlayXattr,
    tmp_dir: &Path,
) -> Result<Vec<Change>, ContainerError> {
    let lowers = UnionView::new(snapshot.lowers.clone(), None, xattr);
    // With subordinate ids the upper may hold directories the caller cannot read: the names
    // come from the layer, diffed where they can be read (see `write_diff`).
    if snapshot.backend() != "copy" && IdMaps::subordinate_for_current_process().is_none() {
        return diff::changes(snapshot.changes_dir(), &lowers, xattr).map_err(|source| {
            ContainerError::Snapshot(molde_layerfs::snapshot::SnapshotError::Diff {
                dir: snapshot.dir.clone(),
                source,
            })
        });
    }
    let mut tmp = diff_to_temp(backend, snapshot, tmp_dir)?;
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(BufReader::new(&mut tmp));
    let entries = archive
        .entries()
        .map_err(io_err("reading the diff of", &snapshot.dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("reading the diff of", &snapshot.dir))?;
        let name = entry
            .path()
            .map_err(io_err("reading the diff of", &snapshot.dir))?
            .into_owned();
        let abs: PathBuf = Path::new("/")
            .components()
            .chain(name.components())
            .collect();
        let file = abs.file_name().and_then(|n| n.to_str()).unwrap_or("");
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use molde_layerfs::OverlayXattr;
    use molde_layerfs::snapshot::{Backend, CopyBackend, OverlayBackend};

    use super::changes_of;

    /// The same writes: a file added in an existing directory, one changed, one deleted, a
    /// new directory with a file, a directory replaced by a file.
    fn write(root: &Path) {
        fs::write(root.join("app/new"), b"n").unwrap();
        fs::write(root.join("etc/x"), b"changed").unwrap();
        fs::remove_file(root.join("etc/y")).unwrap();
        fs::create_dir(root.join("newdir")).unwrap();
        fs::write(root.join("newdir/f"), b"f").unwrap();
        fs::remove_dir_all(root.join("old")).unwrap();
        fs::write(root.join("old"), b"now a file").unwrap();
    }

    #[test]
    fn overlay_and_copy_list_the_same_changes() {
        if !molde_layerfs::privilege::is_privileged() {
            assert!(
                std::env::var_os("MOLDE_REQUIRE_ALL").is_none(),
                "needs root to mount overlay"
            );
            eprintln!("skipping: needs root to mount overlay");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        for d in ["app", "etc", "old/inner"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        for f in ["etc/x", "etc/y", "app/keep", "old/inner/f"] {
            fs::write(lower.join(f), b"orig").unwrap();
        }
        let lowers = vec![lower];
        let xattr = OverlayXattr::Trusted;

        let overlay = OverlayBackend::with_xattr(xattr);
        let snap = overlay.prepare(&lowers, &tmp.path().join("o")).unwrap();
        let target = tmp.path().join("merged");
        fs::create_dir(&target).unwrap();
        snap.mounts[0].mount_at(&target).unwrap();
        write(&target);
        molde_layerfs::mount::unmount(&target).unwrap();
        let from_overlay = changes_of(&overlay, &snap, xattr, tmp.path()).unwrap();

        let copy = CopyBackend::with_xattr(xattr);
        let csnap = copy.prepare(&lowers, &tmp.path().join("c")).unwrap();
        write(csnap.changes_dir());
        let from_copy = changes_of(&copy, &csnap, xattr, tmp.path()).unwrap();

        let show =
            |v: &[molde_layerfs::diff::Change]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert!(
            show(&from_overlay).contains(&"C /app".to_owned()),
            "{:?}",
            show(&from_overlay)
        );
        assert_eq!(show(&from_copy), show(&from_overlay));
        assert!(show(&from_copy).iter().all(|c| !c.ends_with('/')));
        overlay.remove(snap).unwrap();
        copy.remove(csnap).unwrap();
    }
}
