//! The store's unpacked trees on disk (`molde/layers/<chainid>/`, `molde/flat/<chainid>/`):
//! listed, collected, their leftovers cleared, removed. Making them is the `unpack`
//! module's work; this is what the store itself needs of them (GC, open, counts).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use molde_layerfs::Digest;
use molde_layerfs::idmap::IdMaps;
use molde_layerfs::userns;

use super::{StoreError, io_err};
use crate::layout::Layout;
use crate::lock::FileLock;

/// Remove flattened trees whose stack is not in `keep`, and leftovers of interrupted ones.
/// The caller holds the content lock exclusively.
pub(crate) fn collect_flats(layout: &Layout, keep: &BTreeSet<Digest>) -> Result<(), StoreError> {
    let dir = layout.flats();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Io {
                op: "reading",
                path: dir,
                source: e,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(io_err("reading", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let hex = name.strip_suffix(".tmp").unwrap_or(&name);
        if name.ends_with(".lock") {
            continue;
        }
        let kept = format!("sha256:{hex}")
            .parse::<Digest>()
            .is_ok_and(|d| keep.contains(&d) && !name.ends_with(".tmp"));
        if !kept {
            remove_tree(&entry.path()).map_err(io_err("removing", &entry.path()))?;
            let _ = fs::remove_file(dir.join(format!("{hex}.lock")));
        }
    }
    Ok(())
}

/// The lock file of the unpacked layer `chain_id`.
pub(crate) fn lock_path(layout: &Layout, chain_id: &Digest) -> PathBuf {
    layout.layers().join(format!("{}.lock", chain_id.hex()))
}

/// Where a tree is made before it is renamed to `final_path`.
pub(crate) fn tmp_path(final_path: &Path) -> PathBuf {
    let mut s = final_path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Remove half-unpacked layers whose writer is gone.
pub(crate) fn clear_leftovers(layout: &Layout) -> Result<(), StoreError> {
    let dir = layout.layers();
    for entry in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
        let entry = entry.map_err(io_err("reading", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_suffix(".tmp") else {
            continue;
        };
        let lock = dir.join(format!("{hex}.lock"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io_err("opening", &lock))?;
        if FileLock::try_exclusive(file)
            .map_err(io_err("locking", &lock))?
            .is_some()
        {
            remove_tree(&entry.path()).map_err(io_err("removing", &entry.path()))?;
        }
    }
    Ok(())
}

/// The ChainIDs of all unpacked layers.
pub(crate) fn unpacked(layout: &Layout) -> Result<Vec<Digest>, StoreError> {
    let dir = layout.layers();
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
        let entry = entry.map_err(io_err("reading", &dir))?;
        if let Some(d) = entry
            .file_name()
            .to_str()
            .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
        {
            out.push(d);
        }
    }
    Ok(out)
}

/// Remove unpacked layers not in `keep`; returns their ChainIDs and the bytes freed.
/// The caller holds the GC lock exclusively.
pub(crate) fn collect(
    layout: &Layout,
    keep: &BTreeSet<Digest>,
) -> Result<(Vec<Digest>, u64), StoreError> {
    let mut freed = Vec::new();
    let mut bytes = 0;
    for chain in unpacked(layout)? {
        if keep.contains(&chain) {
            continue;
        }
        let path = layout.layer(&chain);
        bytes += tree_size(&path);
        remove_tree(&path).map_err(io_err("removing", &path))?;
        let _ = fs::remove_file(lock_path(layout, &chain));
        freed.push(chain);
    }
    Ok((freed, bytes))
}

fn tree_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() && meta.nlink() >= 1 {
            total += meta.len();
        }
    }
    total
}

/// Remove a tree, making directories writable first where needed (a layer may hold
/// read-only directories).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            use std::os::unix::fs::PermissionsExt;
            let mut stack = vec![path.to_owned()];
            while let Some(p) = stack.pop() {
                if let Ok(meta) = fs::symlink_metadata(&p)
                    && meta.is_dir()
                {
                    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o700));
                    if let Ok(rd) = fs::read_dir(&p) {
                        stack.extend(rd.flatten().map(|e| e.path()));
                    }
                }
            }
            match fs::remove_dir_all(path) {
                Ok(()) => Ok(()),
                // Owned by subordinate ids (given their owners by `restore_owners`).
                Err(_) => match IdMaps::subordinate_for_current_process() {
                    Some(maps) => userns::remove_tree(maps, path).map_err(|_| first),
                    None => Err(first),
                },
            }
        }
    }
}
