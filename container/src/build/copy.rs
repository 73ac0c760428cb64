//! Layers made without running anything: `COPY` of host files, `ADD` of a local tar, and the
//! directory a `WORKDIR` creates. Written directly with layerfs' [`LayerWriter`]: entries in
//! canonical order (depth first, siblings sorted), parents first; a parent the image already
//! has is written with its attributes as they are in the image (so `COPY x /tmp/` keeps
//! `/tmp` at 1777), a missing one is made `0755 root`. Mtimes are clamped to the build's
//! source-date epoch when it has one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use molde_image::{Layer, Store};
use molde_layerfs::Digest;
use molde_layerfs::diff::{DiffError, DiffOptions, EntryAttrs, LayerWriter};
use molde_layerfs::view::UnionView;

/// Why a layer could not be made from host files.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A host file could not be read.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the layer failed.
    #[error("writing the layer: {0}")]
    Diff(#[from] DiffError),
    /// Storing the layer failed.
    #[error("storing the layer: {0}")]
    Store(#[from] molde_image::StoreError),
    /// Unpacking the tar of an `ADD` failed.
    #[error("unpacking {}: {source}", path.display())]
    Unpack {
        /// The tar.
        path: PathBuf,
        /// The cause.
        #[source]
        source: molde_layerfs::ApplyError,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CopyError + 'a {
    move |source| CopyError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What one layer path is made from.
#[derive(Debug)]
pub(crate) enum Planned {
    /// A host file, with owner and mode overrides.
    Source {
        source: PathBuf,
        meta: Box<Metadata>,
        attrs: EntryAttrs,
    },
    /// A directory that must exist: kept as the image has it, else made with these attributes.
    EnsureDir { mode: u32, uid: u32, gid: u32 },
}

/// The layer's entries, keyed by their components (which sorts them depth first, siblings
/// by name: the canonical order).
pub(crate) type Plan = BTreeMap<Vec<OsString>, Planned>;

/// The components of an absolute or relative path in the image (`..` resolved lexically,
/// never above the root).
pub(crate) fn key_of(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn path_of(key: &[OsString]) -> PathBuf {
    key.iter().collect()
}

/// `path` (absolute in the image) with symlinks among its components resolved inside the
/// image, as Docker resolves a `COPY` destination: `/bin/x` with `/bin -> usr/bin` is
/// `/usr/bin/x`. A missing component ends the resolution (the rest is taken as it is).
pub(crate) fn resolve_in_view(view: Option<&UnionView>, path: &Path) -> PathBuf {
    let Some(view) = view else {
        return path_of(&key_of(path));
    };
    let mut todo: std::collections::VecDeque<OsString> = key_of(path).into();
    let mut done: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        done.push(c);
        let here = Path::new("/").join(path_of(&done));
        match view.metadata(&here) {
            Err(_) => {
                // Missing: the rest is made as it is.
                done.extend(todo.drain(..));
                break;
            }
            Ok(m) if m.file_type().is_symlink() && hops < 40 => {
                hops += 1;
                let Ok(target) = view.read_link(&here) else {
                    break;
                };
                done.pop();
                let base = if target.is_absolute() {
                    PathBuf::from("/")
                } else {
                    Path::new("/").join(path_of(&done))
                };
                done.clear();
                for c in key_of(&base.join(target)).into_iter().rev() {
                    todo.push_front(c);
                }
            }
            Ok(_) => {}
        }
    }
    path_of(&done)
}

/// Add every ancestor of the planned paths as a directory that must exist.
fn add_ancestors(plan: &mut Plan) {
    let keys: Vec<Vec<OsString>> = plan.keys().cloned().collect();
    for k in keys {
        for n in 1..k.len() {
            plan.entry(k[..n].to_vec()).or_insert(Planned::EnsureDir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
    }
}

/// Plan the entries of a tree on the host: `source` itself (a file, or a directory whose
/// contents are walked) as `dest`. The top directory is a directory that must exist (made from
/// the source's mode and the overrides when the image lacks it).
pub(crate) fn plan_tree(
    plan: &mut Plan,
    source: &Path,
    meta: Metadata,
    dest: &Path,
    attrs: EntryAttrs,
    top_dir_from_source: bool,
) -> Result<(), CopyError> {
    let key = key_of(dest);
    if !meta.is_dir() {
        plan.insert(
            key,
            Planned::Source {
                source: source.to_owned(),
                meta: Box::new(meta),
                attrs,
            },
        );
        return Ok(());
    }
    if top_dir_from_source && !key.is_empty() {
        plan.insert(
            key.clone(),
            Planned::EnsureDir {
                mode: attrs.mode.unwrap_or(meta.mode() & 0o7777),
                uid: attrs.uid.unwrap_or(meta.uid()),
                gid: attrs.gid.unwrap_or(meta.gid()),
            },
        );
    }
    let mut stack = vec![(source.to_owned(), key)];
    while let Some((dir, key)) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(io_err("reading directory", &dir))?;
        for e in rd {
            let e = e.map_err(io_err("reading directory", &dir))?;
            let path = e.path();
            let m = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
            let mut k = key.clone();
            k.push(e.file_name());
            if m.is_dir() {
                stack.push((path.clone(), k.clone()));
            }
            plan.insert(
                k,
                Planned::Source {
                    source: path,
                    meta: Box::new(m),
                    attrs,
                },
            );
        }
    }
    Ok(())
}

/// The digest of a plan's content manifest: per entry its path, type, mode, owner (only when
/// `with_owner`), content digest (files), link target (symlinks) or device number; never
/// mtimes. Files are read (streamed) to hash their contents.
pub(crate) fn manifest(plan: &Plan, with_owner: bool) -> Result<Digest, CopyError> {
    let mut text: Vec<u8> = Vec::new();
    for (key, p) in plan {
        text.extend_from_slice(path_of(key).as_os_str().as_bytes());
        match p {
            Planned::EnsureDir { mode, uid, gid } => {
                text.extend_from_slice(format!("\tdir?\t{mode:o}\t{uid}:{gid}").as_bytes());
            }
            Planned::Source { source, meta, .. } => {
                let ft = meta.file_type();
                text.extend_from_slice(format!("\t{:o}", meta.mode()).as_bytes());
                if with_owner {
                    text.extend_from_slice(format!("\t{}:{}", meta.uid(), meta.gid()).as_bytes());
                }
                if ft.is_file() {
                    let f = File::open(source).map_err(io_err("opening", source))?;
                    let (d, _) =
                        Digest::of_reader(BufReader::new(f)).map_err(io_err("reading", source))?;
                    text.extend_from_slice(format!("\t{d}").as_bytes());
                } else if ft.is_symlink() {
                    let t = fs::read_link(source).map_err(io_err("reading link", source))?;
                    text.extend_from_slice(b"\t-> ");
                    text.extend_from_slice(t.as_os_str().as_bytes());
                } else if !ft.is_dir() {
                    text.extend_from_slice(format!("\trdev {}", meta.rdev()).as_bytes());
                }
            }
        }
        text.push(b'\n');
    }
    Ok(Digest::of(&text))
}

/// Write the plan as a layer (ancestors added) and store it. Directories the image has (in
/// `view`) keep their attributes; `now` is the mtime of directories made up.
///
/// Owners are recorded as a container sees them: rootless, host ids go through the maps
/// containers run with, and an owner a rootless unpack could not set (an `ADD`ed tar's
/// `33:44`, kept in umoci's `user.rootlesscontainers` xattr) is the one recorded.
pub(crate) fn write_layer(
    store: &Store,
    view: Option<&UnionView>,
    mut plan: Plan,
    mtime_clamp: Option<u64>,
    now: u64,
) -> Result<Layer, CopyError> {
    add_ancestors(&mut plan);
    let tmp_dir = store.layout().tmp();
    let mut tmp =
        tempfile::tempfile_in(&tmp_dir).map_err(io_err("creating a file in", &tmp_dir))?;
    let opts = DiffOptions {
        mtime_clamp,
        owners: molde_layerfs::idmap::IdMaps::for_current_process(),
        ..DiffOptions::default()
    };
    {
        let mut w = LayerWriter::new(BufWriter::with_capacity(1 << 20, &mut tmp), &opts);
        for (key, p) in &plan {
            let name = path_of(key);
            match p {
                Planned::Source {
                    source,
                    meta,
                    attrs,
                } => w.add_as(&name, source, meta, attrs)?,
                Planned::EnsureDir { mode, uid, gid } => {
                    let abs = Path::new("/").join(&name);
                    let existing = view.and_then(|v| {
                        let m = v.metadata(&abs).ok().filter(Metadata::is_dir)?;
                        Some((v.real_path(&abs).ok()?, m))
                    });
                    match existing {
                        Some((real, m)) => w.add(&name, &real, &m)?,
                        None => w.add_dir(&name, *mode, *uid, *gid, now)?,
                    }
                }
            }
        }
        let (mut out, _) = w.finish()?;
        io::Write::flush(&mut out).map_err(io_err("writing", &tmp_dir))?;
    }
    tmp.seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding", &tmp_dir))?;
    Ok(store
        .add_layer(BufReader::with_capacity(1 << 20, tmp))?
        .layer)
}

/// Whether the host file at `path` is a tar (plain, gzip or zstd): the `ustar` magic of its
/// first header, after decompression.
pub(crate) fn is_tar(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let Ok((_, mut plain)) = molde_layerfs::compression::decompress(BufReader::new(f)) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match plain.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == 512 && &head[257..262] == b"ustar"
}

/// Unpack the tar at `tar` into a new temporary directory of the store (flat: as a rootfs
/// would get it), for `ADD`.
pub(crate) fn unpack_tar(store: &Store, tar: &Path) -> Result<tempfile::TempDir, CopyError> {
    let tmp_dir = store.layout().tmp();
    let dir = tempfile::Builder::new()
        .prefix("add-")
        .tempdir_in(&tmp_dir)
        .map_err(io_err("creating a directory in", &tmp_dir))?;
    let f = File::open(tar).map_err(io_err("opening", tar))?;
    let opts = molde_layerfs::ApplyOptions::for_current_process(molde_layerfs::Format::Flat);
    molde_layerfs::apply(BufReader::with_capacity(1 << 20, f), dir.path(), &opts).map_err(
        |source| CopyError::Unpack {
            path: tar.to_owned(),
            source,
        },
    )?;
    // The directory is the tar's root: readable by whoever walks it.
    let _ = fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755));
    Ok(dir)
}
