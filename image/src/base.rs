//! Base images from nothing downloaded: host binaries with the shared libraries they need
//! (ELF interpreter and `DT_NEEDED`, searched as `ld.so` does: `DT_RPATH`, `DT_RUNPATH`,
//! `/etc/ld.so.conf`, then the default directories), or a static busybox.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use goblin::elf::Elf;

use crate::builder::ImageBuilder;
use crate::image::Image;
use crate::store::{Store, StoreError};

/// The largest binary or library read to find its dependencies.
const MAX_ELF: u64 = 256 << 20;

/// Why a base image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A binary is not a valid ELF file.
    #[error("{path}: not an ELF file: {source}")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: goblin::error::Error,
    },
    /// A needed library was not found on the search path.
    #[error("{binary} needs {library}, which is not found in {searched:?}")]
    MissingLibrary {
        /// Who needs it.
        binary: PathBuf,
        /// The `DT_NEEDED` name.
        library: String,
        /// The directories searched.
        searched: Vec<PathBuf>,
    },
    /// Storing the layer or image failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BaseError + '_ {
    move |source| BaseError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What goes into the layer: path (absolute, on the host and in the image) to its kind.
#[derive(Debug, Default)]
struct Tree {
    entries: BTreeMap<PathBuf, Kind>,
}

#[derive(Debug)]
enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
}

impl Tree {
    /// Add `path` as the host has it, with every symlink on the way (`/bin -> usr/bin`,
    /// `libc.so.6 -> libc-2.x.so`) and the parent directories.
    fn add(&mut self, path: &Path, depth: usize) -> Result<PathBuf, BaseError> {
        if depth > 40 {
            return Err(BaseError::Io {
                path: path.to_owned(),
                source: io::Error::other("too many levels of symbolic links"),
            });
        }
        let mut cur = PathBuf::from("/");
        let comps: Vec<Component> = path.components().collect();
        for (i, c) in comps.iter().enumerate() {
            match c {
                Component::RootDir | Component::CurDir => continue,
                Component::ParentDir => {
                    cur.pop();
                    continue;
                }
                Component::Normal(n) => cur.push(n),
                Component::Prefix(_) => continue,
            }
            let meta = fs::symlink_metadata(&cur).map_err(io_at(&cur))?;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&cur).map_err(io_at(&cur))?;
                self.entries
                    .insert(cur.clone(), Kind::Symlink(target.clone()));
                let parent = cur.parent().unwrap_or(Path::new("/")).to_owned();
                let mut next = parent.join(target);
                for rest in &comps[i + 1..] {
                    next.push(rest);
                }
                return self.add(&next, depth + 1);
            }
            let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
            if !matches!(kind, Kind::Dir) && i + 1 < comps.len() {
                return Err(BaseError::Io {
                    path: cur,
                    source: io::Error::from(io::ErrorKind::NotADirectory),
                });
            }
            self.entries.entry(cur.clone()).or_insert(kind);
        }
        Ok(cur)
    }
}

/// The library search directories of this host, in `ld.so`'s order after the ELF's own paths.
fn system_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut confs = vec![PathBuf::from("/etc/ld.so.conf")];
    let mut seen = BTreeSet::new();
    while let Some(conf) = confs.pop() {
        if !seen.insert(conf.clone()) {
            continue;
        }
        let Ok(text) = fs::read_to_string(&conf) else {
            continue;
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(pattern) = line.strip_prefix("include") {
                let pattern = pattern.trim();
                // Only the common `dir/*.conf` glob form.
                if let Some(dir) = pattern.strip_suffix("/*.conf")
                    && let Ok(rd) = fs::read_dir(dir)
                {
                    let mut files: Vec<PathBuf> = rd
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                        .collect();
                    files.sort();
                    files.reverse();
                    confs.extend(files);
                }
            } else if line.starts_with('/') {
                dirs.push(PathBuf::from(line));
            }
        }
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

fn expand_origin(p: &str, origin: &Path) -> PathBuf {
    let o = origin.to_string_lossy();
    PathBuf::from(p.replace("$ORIGIN", &o).replace("${ORIGIN}", &o))
}

/// Resolve `binaries` and everything they need into a tree.
fn resolve(binaries: &[&Path]) -> Result<Tree, BaseError> {
    let mut tree = Tree::default();
    let system = system_dirs();
    let mut todo: Vec<PathBuf> = binaries.iter().map(|p| p.to_path_buf()).collect();
    let mut done = BTreeSet::new();
    while let Some(path) = todo.pop() {
        let real = tree.add(&path, 0)?;
        if !done.insert(real.clone()) {
            continue;
        }
        let mut f = fs::File::open(&real).map_err(io_at(&real))?;
        let len = f.seek(SeekFrom::End(0)).map_err(io_at(&real))?;
        if len > MAX_ELF {
            continue;
        }
        let bytes = fs::read(&real).map_err(io_at(&real))?;
        if !bytes.starts_with(b"\x7fELF") {
            continue; // a script or data file: included as is.
        }
        let elf = Elf::parse(&bytes).map_err(|source| BaseError::NotElf {
            path: real.clone(),
            source,
        })?;
        if let Some(interp) = elf.interpreter {
            todo.push(PathBuf::from(interp));
        }
        let origin = real.parent().unwrap_or(Path::new("/")).to_owned();
        let mut dirs: Vec<PathBuf> = Vec::new();
        if elf.runpaths.is_empty() {
            dirs.extend(
                elf.rpaths
                    .iter()
                    .flat_map(|r| r.split(':'))
                    .map(|r| expand_origin(r, &origin)),
            );
        }
        dirs.extend(
            elf.runpaths
                .iter()
                .flat_map(|r| r.split(':'))
                .map(|r| expand_origin(r, &origin)),
        );
        dirs.extend(system.iter().cloned());
        for lib in &elf.libraries {
            if lib.contains('/') {
                todo.push(origin.join(lib));
                continue;
            }
            let found = dirs
                .iter()
                .map(|d| d.join(lib))
                .find(|p| matches_class(p, elf.is_64, elf.header.e_machine));
            match found {
                Some(p) => todo.push(p),
                None => {
                    return Err(BaseError::MissingLibrary {
                        binary: real.clone(),
                        library: (*lib).to_owned(),
                        searched: dirs,
                    });
                }
            }
        }
    }
    Ok(tree)
}

/// Whether `path` is an ELF object of the same class and machine (as `ld.so` skips a 32-bit
/// library when loading a 64-bit binary).
fn matches_class(path: &Path, is_64: bool, machine: u16) -> bool {
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 64];
    if io::Read::read_exact(&mut f, &mut head).is_err() {
        return false;
    }
    match goblin::elf::Elf::parse_header(&head) {
        Ok(h) => (h.e_ident[4] == 2) == is_64 && h.e_machine == machine,
        Err(_) => false,
    }
}

/// Write the tree as a deterministic tar into a temp file and add it as a layer.
fn store_tree(store: &Store, tree: &Tree) -> Result<crate::layer::Layer, BaseError> {
    let tmp = tempfile::tempfile_in(store.layout().tmp()).map_err(io_at(&store.layout().tmp()))?;
    let mut b = tar::Builder::new(io::BufWriter::new(tmp));
    b.follow_symlinks(false);
    for (path, kind) in &tree.entries {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let err = io_at(path);
        match kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                // /tmp as every distribution's image has it: anyone may write there (a
                // non-root user holds no capability to override its mode).
                h.set_mode(if rel == Path::new("tmp") {
                    0o1777
                } else {
                    0o755
                });
                h.set_size(0);
                b.append_data(&mut h, rel, io::empty()).map_err(err)?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, rel, target).map_err(err)?;
            }
            Kind::File => {
                let f = fs::File::open(path).map_err(io_at(path))?;
                let meta = f.metadata().map_err(io_at(path))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(meta.permissions().mode() & 0o7777);
                h.set_size(meta.len());
                b.append_data(&mut h, rel, f).map_err(err)?;
            }
        }
    }
    let tmp_dir = store.layout().tmp();
    let mut file = b
        .into_inner()
        .map_err(io_at(&tmp_dir))?
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(io_at(&tmp_dir))?;
    file.seek(SeekFrom::Start(0)).map_err(io_at(&tmp_dir))?;
    Ok(store.add_layer(io::BufReader::new(file))?.layer)
}

/// An image holding `binaries` (absolute host paths, e.g. `/bin/sh`) and every shared
/// library they need, with `PATH` set and `cmd` the first binary. The image is stored, untagged.
pub fn from_host(store: &Store, binaries: &[&Path]) -> Result<Image, BaseError> {
    let mut tree = resolve(binaries)?;
    for d in ["/tmp", "/etc", "/proc", "/dev", "/sys"] {
        tree.entries.entry(PathBuf::from(d)).or_insert(Kind::Dir);
    }
    // GC must not free the new layer before the image naming it is in the index.
    let _pin = store.pin()?;
    let layer = store_tree(store, &tree)?;
    let names: Vec<String> = binaries.iter().map(|p| p.display().to_string()).collect();
    let mut builder = ImageBuilder::new()
        .layer(layer, format!("molde: host binaries {}", names.join(" ")))
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    if let Some(first) = names.first() {
        builder = builder.cmd([first.clone()]);
    }
    Ok(store.commit(builder)?)
}

/// Where a static busybox is installed, if it is (the `busybox-static` package).
pub fn static_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            fs::read(p)
                .ok()
                .and_then(|b| Elf::parse(&b).ok().map(|e| e.interpreter.is_none()))
                .unwrap_or(false)
        })
}
