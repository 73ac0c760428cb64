//! Native diff and the change list: a walk of an overlay upper directory only.

use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::writer::LayerWriter;
use super::{Change, DiffError, DiffOptions, DiffReport};
use crate::view::{DirNode, Node, UnionView};
use crate::whiteout::{OverlayXattr, is_opaque_dir, is_overlay_whiteout};

/// What the walk of an upper directory meets, in the canonical layer order.
enum Event<'a> {
    /// `dir/name` is a whiteout in the upper, over a name the lowers have, outside any opaque
    /// directory.
    Whiteout { dir: &'a Path, name: &'a OsStr },
    /// An entry of the upper (not a whiteout).
    Entry {
        /// Its path relative to the root.
        rel: &'a Path,
        /// Its host path in the upper.
        path: &'a Path,
        /// Its `lstat` metadata.
        meta: &'a Metadata,
        /// What the lowers have at this path, ignoring the upper's opaque directories
        /// (only looked up for directories, unless the walk tracks every lower).
        lower: Option<&'a Node>,
        /// A directory marked opaque in the upper.
        opaque: bool,
        /// Under an opaque directory of the upper: the lowers are hidden here anyway.
        hidden: bool,
    },
}

struct Walk<'a> {
    upper: &'a Path,
    lowers: &'a UnionView,
    xattr: OverlayXattr,
    /// Look every entry up in the lowers (for `changes`), not only directories and whiteouts.
    track_all: bool,
}

fn overlay_xattr(x: OverlayXattr, what: &str) -> String {
    let ns = match x {
        OverlayXattr::Trusted => "trusted",
        OverlayXattr::User => "user",
    };
    format!("{ns}.overlay.{what}")
}

fn has_xattr(path: &Path, name: &str) -> Result<bool, DiffError> {
    match xattr::get(path, name) {
        Ok(v) => Ok(v.is_some()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(false),
        Err(e) => Err(DiffError::io("read xattr of", path, e)),
    }
}

/// A directory of the upper being walked.
struct Frame {
    rel: PathBuf,
    dir_path: PathBuf,
    /// The lowers' directory at `rel` (when they have one and it matters).
    lower: Option<DirNode>,
    hidden: bool,
    /// Its entries other than whiteouts, sorted by name, not yet visited.
    entries: std::vec::IntoIter<(OsString, Metadata)>,
}

impl Walk<'_> {
    /// Walk the whole upper, depth first, with an explicit stack (trees may be deep).
    fn run<F>(&self, f: &mut F) -> Result<(), DiffError>
    where
        F: FnMut(Event<'_>) -> Result<(), DiffError>,
    {
        let root = self.open_dir(
            PathBuf::new(),
            self.upper.to_path_buf(),
            Some(self.lowers.root()),
            false,
            f,
        )?;
        let mut stack = vec![root];
        while let Some(frame) = stack.last_mut() {
            let Some((name, meta)) = frame.entries.next() else {
                stack.pop();
                continue;
            };
            let crel = frame.rel.join(&name);
            let cpath = frame.dir_path.join(&name);
            let hidden = frame.hidden;
            let is_dir = meta.is_dir();
            let lower_child = if is_dir || self.track_all {
                self.lookup(frame.lower.as_ref(), &crel, &name)?
            } else {
                None
            };
            if is_dir {
                if has_xattr(&cpath, &overlay_xattr(self.xattr, "redirect"))? {
                    return Err(DiffError::Unsupported {
                        path: cpath,
                        reason: "renamed overlay directory (overlay.redirect xattr): mount \
                                 without redirect_dir to diff natively, or use the naive diff",
                    });
                }
                let opaque = is_opaque_dir(&cpath, self.xattr);
                f(Event::Entry {
                    rel: &crel,
                    path: &cpath,
                    meta: &meta,
                    lower: lower_child.as_ref(),
                    opaque,
                    hidden,
                })?;
                let sub = match lower_child {
                    Some(Node::Dir(d, _)) if self.track_all || !(hidden || opaque) => Some(d),
                    _ => None,
                };
                let next = self.open_dir(crel, cpath, sub, hidden || opaque, f)?;
                stack.push(next);
            } else {
                if meta.file_type().is_file()
                    && has_xattr(&cpath, &overlay_xattr(self.xattr, "metacopy"))?
                {
                    return Err(DiffError::Unsupported {
                        path: cpath,
                        reason: "metadata-only copy-up (overlay.metacopy xattr): mount without \
                                 metacopy to diff natively, or use the naive diff",
                    });
                }
                f(Event::Entry {
                    rel: &crel,
                    path: &cpath,
                    meta: &meta,
                    lower: lower_child.as_ref(),
                    opaque: false,
                    hidden,
                })?;
            }
        }
        Ok(())
    }

    /// `name` in the lowers' directory `lower`, if any.
    fn lookup(
        &self,
        lower: Option<&DirNode>,
        rel: &Path,
        name: &OsStr,
    ) -> Result<Option<Node>, DiffError> {
        match lower {
            Some(ld) => self
                .lowers
                .lookup(ld, name)
                .map_err(|e| DiffError::io("look up in the lower layers", rel, e)),
            None => Ok(None),
        }
    }

    /// Read a directory of the upper, report its whiteouts (they come first), and return the
    /// frame of its other entries.
    fn open_dir<F>(
        &self,
        rel: PathBuf,
        dir_path: PathBuf,
        lower: Option<DirNode>,
        hidden: bool,
        f: &mut F,
    ) -> Result<Frame, DiffError>
    where
        F: FnMut(Event<'_>) -> Result<(), DiffError>,
    {
        let mut entries: Vec<(OsString, Metadata)> = Vec::new();
        let rd =
            fs::read_dir(&dir_path).map_err(|e| DiffError::io("read directory", &dir_path, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| DiffError::io("read directory", &dir_path, e))?;
            let meta = ent
                .metadata()
                .map_err(|e| DiffError::io("stat", &ent.path(), e))?;
            entries.push((ent.file_name(), meta));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let (whiteouts, others): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(_, m)| is_overlay_whiteout(m));
        if !hidden {
            for (name, _) in &whiteouts {
                if self
                    .lookup(lower.as_ref(), &rel.join(name), name)?
                    .is_some()
                {
                    f(Event::Whiteout { dir: &rel, name })?;
                }
            }
        }
        Ok(Frame {
            rel,
            dir_path,
            lower,
            hidden,
            entries: others.into_iter(),
        })
    }
}

pub(super) fn native(
    upper: &Path,
    lowers: &UnionView,
    out: impl Write,
    opts: &DiffOptions,
) -> Result<DiffReport, DiffError> {
    let mut w = LayerWriter::new(out, opts);
    let walk = Walk {
        upper,
        lowers,
        xattr: opts.xattr,
        track_all: false,
    };
    walk.run(&mut |ev| match ev {
        Event::Whiteout { dir, name } => w.add_whiteout(dir, name),
        Event::Entry {
            rel,
            path,
            meta,
            lower,
            opaque,
            hidden,
        } => {
            w.add(rel, path, meta)?;
            if opaque && !hidden && matches!(lower, Some(Node::Dir(..))) {
                w.add_opaque(rel)?;
            }
            Ok(())
        }
    })?;
    Ok(w.finish()?.1)
}

pub(super) fn changes(
    upper: &Path,
    lowers: &UnionView,
    xattr: OverlayXattr,
) -> Result<Vec<Change>, DiffError> {
    let abs = |rel: &Path| PathBuf::from("/").join(rel);
    let mut out = Vec::new();
    let walk = Walk {
        upper,
        lowers,
        xattr,
        track_all: true,
    };
    walk.run(&mut |ev| {
        match ev {
            Event::Whiteout { dir, name } => out.push(Change::Deleted(abs(&dir.join(name)))),
            Event::Entry {
                rel,
                path,
                lower,
                opaque,
                hidden,
                ..
            } => {
                out.push(match lower {
                    Some(_) => Change::Modified(abs(rel)),
                    None => Change::Added(abs(rel)),
                });
                // Under an opaque directory, what the lowers had and the upper lacks is gone.
                if let (true, Some(Node::Dir(ld, _))) = (opaque || hidden, lower) {
                    let children = lowers
                        .list(ld)
                        .map_err(|e| DiffError::io("list in the lower layers", &abs(rel), e))?;
                    for child in children {
                        let gone = match fs::symlink_metadata(path.join(&child.name)) {
                            Ok(m) => is_overlay_whiteout(&m),
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                            Err(e) => {
                                return Err(DiffError::io("stat", &path.join(&child.name), e));
                            }
                        };
                        if gone {
                            out.push(Change::Deleted(abs(&rel.join(&child.name))));
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}
