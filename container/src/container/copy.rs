//! copy in and out: files and directories between the host and a container's filesystem,
//! through the union view (out) and straight into the writable layer (in, while stopped),
//! with overlay's whiteout and opaque rules kept.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use molde_layerfs::view::UnionView;
use molde_layerfs::whiteout::is_overlay_whiteout;

use super::{Container, Status};
use crate::error::{ContainerError, io_err};

/// `path` as a relative path under the container root; `..` and an empty path are refused.
fn relative(path: &Path) -> Result<PathBuf, ContainerError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ContainerError::BadPath {
                    path: path.to_owned(),
                    reason: "'..' is not allowed",
                });
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(ContainerError::BadPath {
            path: path.to_owned(),
            reason: "the container root itself cannot be a copy target",
        });
    }
    Ok(out)
}

fn set_mode(path: &Path, meta: &Metadata) -> Result<(), ContainerError> {
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_err("setting the mode of", path))
}

impl Container {
    /// Copy the file, symlink or directory (recursively) at `src` in the container to the new
    /// host path `dest`, read through the union view (no mount needed; safe while stopped, a
    /// snapshot of sorts while running). Device nodes, fifos and sockets are left out.
    pub fn copy_out(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
    ) -> Result<(), ContainerError> {
        self.check_layer_in_reach("copy files out")?;
        let src = Path::new("/").join(relative(src.as_ref()).or_else(|e| {
            if src.as_ref().components().all(|c| c == Component::RootDir) {
                Ok(PathBuf::new())
            } else {
                Err(e)
            }
        })?);
        let view = self.view();
        copy_out_tree(&view, &src, dest.as_ref())
    }

    /// Copy the host file, symlink or directory (recursively) at `src` to `dest` in the
    /// container (the new entry's path; missing parents are created). The container must not
    /// be running: the copy is written into its writable layer. Modes are kept; owners become
    /// the container's root.
    pub fn copy_in(
        &mut self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
    ) -> Result<(), ContainerError> {
        self.check_not_removed("copy into")?;
        self.check_layer_in_reach("copy files in")?;
        if self.status()? == Status::Running {
            return Err(ContainerError::State {
                id: self.id.clone(),
                state: "running".into(),
                op: "copy files in (stop it first)",
            });
        }
        let rel = relative(dest.as_ref())?;
        let view = self.view();
        let top = self.snapshot.changes_dir().to_owned();
        let overlay = self.snapshot.backend() != "copy";
        let mut cur = PathBuf::new();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                cur.push(c);
                self.ensure_dir(&view, &top, &cur, overlay)?;
            }
        }
        let src = src.as_ref();
        let meta = fs::symlink_metadata(src).map_err(io_err("reading", src))?;
        self.copy_in_entry(&view, &top, &rel, src, &meta, overlay)
    }

    /// Make `rel` a directory in the writable layer `top` that the union shows as the same
    /// directory the container sees (or a new one).
    fn ensure_dir(
        &self,
        view: &UnionView,
        top: &Path,
        rel: &Path,
        overlay: bool,
    ) -> Result<(), ContainerError> {
        let abs = Path::new("/").join(rel);
        let upper = top.join(rel);
        match view.metadata(&abs) {
            Ok(m) if m.is_dir() => {
                if !upper.is_dir() {
                    // Only in the lowers: a plain (merged, not opaque) directory in the upper.
                    fs::create_dir(&upper).map_err(io_err("creating", &upper))?;
                    set_mode(&upper, &m)?;
                    let _ = std::os::unix::fs::lchown(&upper, Some(m.uid()), Some(m.gid()));
                }
                Ok(())
            }
            Ok(m) if m.file_type().is_symlink() => Err(ContainerError::BadPath {
                path: abs,
                reason: "a parent directory is a symlink in the container; give the real path",
            }),
            Ok(_) => Err(ContainerError::BadPath {
                path: abs,
                reason: "a parent is not a directory in the container",
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let was_whiteout = overlay && self.clear_upper(&upper)?;
                fs::create_dir(&upper).map_err(io_err("creating", &upper))?;
                if was_whiteout {
                    self.make_opaque(&upper)?;
                }
                Ok(())
            }
            Err(e) => Err(io_err("looking up in the container", &abs)(e)),
        }
    }

    /// Remove what the upper has at `path`; `true` if it was a whiteout.
    fn clear_upper(&self, path: &Path) -> Result<bool, ContainerError> {
        match fs::symlink_metadata(path) {
            Ok(m) if is_overlay_whiteout(&m) => {
                fs::remove_file(path).map_err(io_err("removing the whiteout", path))?;
                Ok(true)
            }
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(path).map_err(io_err("removing", path))?;
                Ok(false)
            }
            Ok(_) => {
                fs::remove_file(path).map_err(io_err("removing", path))?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("looking at", path)(e)),
        }
    }

    fn make_opaque(&self, dir: &Path) -> Result<(), ContainerError> {
        xattr::set(dir, self.xattr.opaque(), b"y").map_err(io_err("marking opaque", dir))
    }

    fn copy_in_entry(
        &self,
        view: &UnionView,
        top: &Path,
        rel: &Path,
        src: &Path,
        meta: &Metadata,
        overlay: bool,
    ) -> Result<(), ContainerError> {
        let dest = top.join(rel);
        let abs = Path::new("/").join(rel);
        let existing = fs::symlink_metadata(&dest).ok();
        if meta.is_dir() {
            let merge = existing.as_ref().is_some_and(Metadata::is_dir);
            if !merge {
                let was_whiteout = overlay && self.clear_upper(&dest)?;
                let lower_dir = overlay && view.metadata(&abs).is_ok_and(|m| m.is_dir());
                fs::create_dir(&dest).map_err(io_err("creating", &dest))?;
                // Something the container saw here and is replaced: hide the lowers' contents.
                if overlay && (was_whiteout || (existing.is_some() && lower_dir)) {
                    self.make_opaque(&dest)?;
                }
            }
            set_mode(&dest, meta)?;
            let mut names: Vec<_> = fs::read_dir(src)
                .map_err(io_err("reading", src))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_err("reading", src))?;
            names.sort();
            for name in names {
                let child = src.join(&name);
                let m = fs::symlink_metadata(&child).map_err(io_err("reading", &child))?;
                self.copy_in_entry(view, top, &rel.join(&name), &child, &m, overlay)?;
            }
            return Ok(());
        }
        if existing.is_some() {
            self.clear_upper(&dest)?;
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(src).map_err(io_err("reading", src))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(io_err("creating", &dest))?;
        } else if meta.is_file() {
            let mut from = fs::File::open(src).map_err(io_err("opening", src))?;
            let mut to = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dest)
                .map_err(io_err("creating", &dest))?;
            io::copy(&mut from, &mut to).map_err(io_err("copying into", &dest))?;
            set_mode(&dest, meta)?;
        } else {
            return Err(ContainerError::BadPath {
                path: src.to_owned(),
                reason: "only files, symlinks and directories can be copied in",
            });
        }
        Ok(())
    }
}

fn copy_out_tree(view: &UnionView, src: &Path, dest: &Path) -> Result<(), ContainerError> {
    let in_view = |e| io_err("reading in the container", src)(e);
    let meta = view.metadata(src).map_err(in_view)?;
    if meta.is_dir() {
        fs::create_dir(dest).map_err(io_err("creating", dest))?;
        for entry in view.read_dir(src).map_err(in_view)? {
            copy_out_tree(view, &src.join(&entry.name), &dest.join(&entry.name))?;
        }
        set_mode(dest, &meta)?;
    } else if meta.file_type().is_symlink() {
        let target = view.read_link(src).map_err(in_view)?;
        std::os::unix::fs::symlink(&target, dest).map_err(io_err("creating", dest))?;
    } else if meta.is_file() {
        let mut from = view.open(src).map_err(in_view)?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(io_err("creating", dest))?;
        io::copy(&mut from, &mut to).map_err(io_err("copying to", dest))?;
        set_mode(dest, &meta)?;
    }
    Ok(())
}
