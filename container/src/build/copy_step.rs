//! What a `COPY` copies: its sources found (wildcards expanded, symlinks followed inside
//! their root, `.dockerignore` and `--exclude` applied) on the host, in an earlier stage or in
//! an image, and planned as the entries of one layer; `ADD` of a local tar.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use molde_image::Layer;
use molde_layerfs::Digest;
use molde_layerfs::diff::EntryAttrs;
use molde_layerfs::view::UnionView;

use super::exec::Executor;
use super::ignore::{Ignore, has_wildcards};
use super::state::{resolve_owner, view_of};
use super::step::{Copy, CopyFrom};
use super::{StepError, copy};

/// Where sources are read: the host, or an image's union view.
pub(super) enum Src {
    Host,
    View(UnionView),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StepError + 'a {
    move |source| StepError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl Src {
    fn lstat(&self, p: &Path) -> io::Result<Metadata> {
        match self {
            Src::Host => fs::symlink_metadata(p),
            Src::View(v) => v.metadata(p),
        }
    }
    /// `p` with symlinks resolved (inside the view; on the host, inside `root`).
    fn follow(&self, p: &Path, root: Option<&Path>) -> Result<PathBuf, StepError> {
        match self {
            Src::Host => {
                let real = fs::canonicalize(p).map_err(io_err("resolving", p))?;
                if let Some(root) = root {
                    let root = fs::canonicalize(root).map_err(io_err("resolving", root))?;
                    if !real.starts_with(&root) {
                        return Err(StepError::Refused(format!(
                            "{} leads outside the build context (to {})",
                            p.display(),
                            real.display()
                        )));
                    }
                }
                Ok(real)
            }
            Src::View(v) => {
                let mut p = p.to_owned();
                for _ in 0..40 {
                    let m = v.metadata(&p).map_err(io_err("reading", &p))?;
                    if !m.file_type().is_symlink() {
                        return Ok(p);
                    }
                    let t = v.read_link(&p).map_err(io_err("reading link", &p))?;
                    let base = p.parent().unwrap_or(Path::new("/")).to_owned();
                    p = Path::new("/")
                        .join(copy::key_of(&base.join(t)).iter().collect::<PathBuf>());
                }
                Err(StepError::Refused(format!(
                    "{}: too many symlinks",
                    p.display()
                )))
            }
        }
    }
    fn list(&self, p: &Path) -> io::Result<Vec<OsString>> {
        let mut names: Vec<OsString> = match self {
            Src::Host => fs::read_dir(p)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?,
            Src::View(v) => v.read_dir(p)?.into_iter().map(|e| e.name).collect(),
        };
        names.sort();
        Ok(names)
    }
    /// The host file that holds `p`'s content (the final component not followed).
    fn real(&self, p: &Path) -> io::Result<PathBuf> {
        match self {
            Src::Host => Ok(p.to_owned()),
            Src::View(v) => v.real_path(p),
        }
    }

    /// The paths matching `pattern` (wildcards in any component), sorted.
    fn expand(&self, pattern: &Path) -> Vec<PathBuf> {
        let mut paths = vec![PathBuf::from("/")];
        for comp in copy::key_of(pattern) {
            let c = comp.to_string_lossy();
            let mut next = Vec::new();
            for p in &paths {
                if has_wildcards(&c) {
                    for name in self.list(p).unwrap_or_default() {
                        if super::ignore::glob(&c, &name.to_string_lossy()) {
                            next.push(p.join(name));
                        }
                    }
                } else {
                    next.push(p.join(&comp));
                }
            }
            paths = next;
        }
        paths.retain(|p| self.lstat(p).is_ok());
        paths
    }
}

/// Filters of one `COPY`: the context's `.dockerignore` (paths relative to the context) and
/// `--exclude` (relative to each source).
struct Filters<'a> {
    context: Option<PathBuf>,
    ignore: Option<&'a Ignore>,
    exclude: Ignore,
}

impl Filters<'_> {
    fn ignored(&self, path: &Path) -> bool {
        match (self.ignore, self.context.as_deref()) {
            (Some(ig), Some(ctx)) => path.strip_prefix(ctx).is_ok_and(|r| ig.excluded(r)),
            _ => false,
        }
    }
    fn walk_excluded_dirs(&self) -> bool {
        self.ignore.is_some_and(Ignore::has_exceptions) || self.exclude.has_exceptions()
    }
}

impl Executor<'_> {
    /// Where a `COPY` reads: the host, or the view of its `--from`.
    fn copy_source(&self, c: &Copy) -> Result<Src, StepError> {
        let image = match &c.from {
            None => return Ok(Src::Host),
            Some(CopyFrom::Image(i)) => i.clone(),
            Some(CopyFrom::Stage(n)) => (self.stages)(n)
                .ok_or_else(|| StepError::Refused(format!("the stage {n:?} has not been built")))?,
        };
        Ok(Src::View(view_of(self.store, &image)?))
    }

    /// The content manifest of a `COPY` (its cache key's content part).
    pub(super) fn copy_manifest(&mut self, c: &Copy) -> Result<Digest, StepError> {
        let inline = self.inline_files(c)?;
        let plan = self.copy_plan(c, None, inline.as_ref().map(tempfile::TempDir::path))?;
        Ok(copy::manifest(&plan, c.from.is_some())?)
    }

    /// The layer of a `COPY`.
    pub(super) fn copy(&mut self, c: &Copy) -> Result<Layer, StepError> {
        let (_, view) = self.current()?;
        let inline = self.inline_files(c)?;
        let plan = self.copy_plan(c, Some(&view), inline.as_ref().map(tempfile::TempDir::path))?;
        let layer = copy::write_layer(
            self.store,
            Some(&view),
            plan,
            self.settings.epoch,
            self.now_secs(),
        )?;
        Ok(layer)
    }

    /// The heredoc files of a `COPY`, written to a temporary directory of the store.
    fn inline_files(&self, c: &Copy) -> Result<Option<tempfile::TempDir>, StepError> {
        if c.inline.is_empty() {
            return Ok(None);
        }
        let tmp = self.store.layout().tmp();
        let dir = tempfile::Builder::new()
            .prefix("heredoc-")
            .tempdir_in(&tmp)
            .map_err(io_err("creating a directory in", &tmp))?;
        for (i, (_, content)) in c.inline.iter().enumerate() {
            let p = dir.path().join(i.to_string());
            fs::write(&p, content).map_err(io_err("writing", &p))?;
        }
        Ok(Some(dir))
    }

    /// The entries of a `COPY`. Without a view (for the cache key), the destination is taken
    /// as written and the owner as `0:0`; with one, symlinks of the destination are resolved
    /// in the image and `--chown` names looked up.
    fn copy_plan(
        &self,
        c: &Copy,
        view: Option<&UnionView>,
        inline: Option<&Path>,
    ) -> Result<copy::Plan, StepError> {
        let src = self.copy_source(c)?;
        let dest_abs = self.config.absolute(&c.dest);
        let dest = copy::resolve_in_view(view, &dest_abs);
        let owner = match (&c.chown, view) {
            (Some(spec), Some(view)) => Some(resolve_owner(view, spec)?),
            (Some(_), None) => Some((0, 0)),
            // From the context: root's; from a stage or image: kept as they are there.
            (None, _) if c.from.is_none() => Some((0, 0)),
            (None, _) => None,
        };
        let attrs = EntryAttrs {
            uid: owner.map(|o| o.0),
            gid: owner.map(|o| o.1),
            mode: c.chmod,
        };
        let filters = Filters {
            context: c
                .context
                .as_deref()
                .filter(|_| c.from.is_none())
                .map(|p| fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())),
            ignore: c.ignore.as_deref().filter(|_| c.from.is_none()),
            exclude: Ignore::of_patterns(&c.exclude),
        };
        let mut matches: Vec<(PathBuf, Metadata)> = Vec::new();
        for s in &c.sources {
            let found = if has_wildcards(&s.to_string_lossy()) {
                src.expand(s)
            } else {
                vec![s.clone()]
            };
            let found: Vec<PathBuf> = found.into_iter().filter(|p| !filters.ignored(p)).collect();
            if found.is_empty() {
                return Err(StepError::NoMatch(
                    c.shown_sources().first().cloned().unwrap_or_default(),
                ));
            }
            for p in found {
                let real = src.follow(&p, filters.context.as_deref())?;
                let meta = src.lstat(&real).map_err(io_err("reading", &p))?;
                matches.push((real, meta));
            }
        }
        // Into a directory: `dest/`, `.`, several sources, a directory source, or a
        // destination the image has as a directory.
        let into_dir = c.dest.ends_with('/')
            || c.dest == "."
            || c.dest.ends_with("/.")
            || matches.len() + c.inline.len() > 1
            || matches.first().is_some_and(|(_, m)| m.is_dir())
            || view.is_some_and(|v| {
                v.open(&Path::new("/").join(&dest))
                    .and_then(|f| f.metadata())
                    .is_ok_and(|m| m.is_dir())
            });
        let mut plan = copy::Plan::new();
        for (p, meta) in matches {
            let target = if c.parents {
                let root = filters.context.as_deref().unwrap_or(Path::new("/"));
                let rel = p.strip_prefix(root).unwrap_or(&p);
                dest.join(copy::key_of(rel).iter().collect::<PathBuf>())
            } else if meta.is_dir() || !into_dir {
                dest.clone()
            } else {
                dest.join(p.file_name().unwrap_or_default())
            };
            self.plan_source(&mut plan, &src, &p, meta, &target, attrs, &filters)?;
        }
        if let Some(dir) = inline {
            for (i, (name, _)) in c.inline.iter().enumerate() {
                let host = dir.join(i.to_string());
                let meta = fs::metadata(&host).map_err(io_err("reading", &host))?;
                let target = if into_dir {
                    dest.join(name)
                } else {
                    dest.clone()
                };
                let a = EntryAttrs {
                    mode: Some(c.chmod.unwrap_or(0o644)),
                    ..attrs
                };
                plan.insert(
                    copy::key_of(&target),
                    copy::Planned::Source {
                        source: host,
                        meta: Box::new(meta),
                        attrs: a,
                    },
                );
            }
        }
        if into_dir && !copy::key_of(&dest).is_empty() {
            plan.entry(copy::key_of(&dest))
                .or_insert(copy::Planned::EnsureDir {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                });
        }
        Ok(plan)
    }

    /// Plan one source (a file, or a directory's contents) at `target`.
    #[allow(clippy::too_many_arguments)]
    fn plan_source(
        &self,
        plan: &mut copy::Plan,
        src: &Src,
        path: &Path,
        meta: Metadata,
        target: &Path,
        attrs: EntryAttrs,
        filters: &Filters<'_>,
    ) -> Result<(), StepError> {
        let real = src.real(path).map_err(io_err("reading", path))?;
        if !meta.is_dir() {
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            if !filters.exclude.is_empty() && filters.exclude.excluded(&name) {
                return Ok(());
            }
            plan.insert(
                copy::key_of(target),
                copy::Planned::Source {
                    source: real,
                    meta: Box::new(meta),
                    attrs,
                },
            );
            return Ok(());
        }
        let key = copy::key_of(target);
        if !key.is_empty() {
            plan.insert(
                key.clone(),
                copy::Planned::EnsureDir {
                    mode: attrs.mode.unwrap_or(meta.mode() & 0o7777),
                    uid: attrs.uid.unwrap_or(meta.uid()),
                    gid: attrs.gid.unwrap_or(meta.gid()),
                },
            );
        }
        let walk_all = filters.walk_excluded_dirs();
        let mut stack = vec![(path.to_owned(), key)];
        while let Some((dir, key)) = stack.pop() {
            for name in src.list(&dir).map_err(io_err("reading directory", &dir))? {
                let p = dir.join(&name);
                let rel = p.strip_prefix(path).unwrap_or(&p);
                let excluded = filters.ignored(&p) || filters.exclude.excluded(rel);
                let m = src.lstat(&p).map_err(io_err("reading", &p))?;
                let mut k = key.clone();
                k.push(name);
                if m.is_dir() && (!excluded || walk_all) {
                    stack.push((p.clone(), k.clone()));
                }
                if excluded {
                    continue;
                }
                let real = src.real(&p).map_err(io_err("reading", &p))?;
                plan.insert(
                    k,
                    copy::Planned::Source {
                        source: real,
                        meta: Box::new(m),
                        attrs,
                    },
                );
            }
        }
        Ok(())
    }

    /// The layer of an `ADD` of a local tar: its contents under `dest`.
    pub(super) fn add_tar(&mut self, tar: &Path, dest: &str) -> Result<Layer, StepError> {
        let (_, view) = self.current()?;
        let dir = copy::unpack_tar(self.store, tar)?;
        let dest_abs = copy::resolve_in_view(Some(&view), &self.config.absolute(dest));
        let mut plan = copy::Plan::new();
        let meta = fs::metadata(dir.path()).map_err(io_err("reading", dir.path()))?;
        copy::plan_tree(
            &mut plan,
            dir.path(),
            meta,
            &dest_abs,
            EntryAttrs::default(),
            false,
        )?;
        let key = copy::key_of(&dest_abs);
        if !key.is_empty() {
            plan.entry(key).or_insert(copy::Planned::EnsureDir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
        let layer = copy::write_layer(
            self.store,
            Some(&view),
            plan,
            self.settings.epoch,
            self.now_secs(),
        )?;
        drop(dir);
        Ok(layer)
    }
}
