//! A target directory with canaries around it, to prove that applying a layer changed nothing
//! outside the target.
//!
//! Layout, in a fresh temp dir `T`:
//! - `T/outside/`: `canary` (a file), `dir/inner`, `link -> canary`;
//! - `T/target/`: the apply target, holding `escape -> T/outside` (an absolute symlink to the
//!   canary directory), `escape_file -> T/outside/canary`, `up -> ../..`, and `lower/keep`.
//!
//! [`Fixture::check`] compares everything in `T` but `target/` byte for byte (type, mode,
//! owner, size, link count, mtime, content, link target, xattrs) with how it was, and checks
//! that nothing with the test's token appeared in `/` or `/tmp`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use molde_layerfs::apply::{ApplyError, ApplyOptions, ApplyReport, apply};
use molde_layerfs::{Format, OverlayXattr};

/// What a path looked like.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    mtime: (i64, i64),
    rdev: u64,
    content: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Everything under `dir` but `skip`, by relative path.
pub fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p == skip {
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let content = if ft.is_file() {
            fs::read(&p).unwrap()
        } else if ft.is_symlink() {
            use std::os::unix::ffi::OsStrExt;
            fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()
        } else {
            Vec::new()
        };
        if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        let mut xattrs = Vec::new();
        if !ft.is_symlink()
            && let Ok(names) = xattr::list(&p)
        {
            for n in names {
                use std::os::unix::ffi::OsStrExt;
                let v = xattr::get(&p, &n).ok().flatten().unwrap_or_default();
                xattrs.push((n.as_bytes().to_vec(), v));
            }
        }
        xattrs.sort();
        out.insert(
            p.strip_prefix(dir).unwrap().to_path_buf(),
            Seen {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: m.size(),
                nlink: m.nlink(),
                mtime: (m.mtime(), m.mtime_nsec()),
                rdev: m.rdev(),
                content,
                xattrs,
            },
        );
    }
    out
}

/// A target with canaries around it.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub target: PathBuf,
    pub outside: PathBuf,
    /// A token for names a hostile tar tries to write outside; see [`Fixture::check`].
    pub token: String,
    before: BTreeMap<PathBuf, Seen>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("molde-hostile")
            .tempdir()
            .unwrap();
        let outside = tmp.path().join("outside");
        let target = tmp.path().join("target");
        fs::create_dir_all(outside.join("dir")).unwrap();
        fs::write(outside.join("canary"), b"canary: must not change").unwrap();
        fs::write(outside.join("dir/inner"), b"inner canary").unwrap();
        symlink("canary", outside.join("link")).unwrap();
        fs::create_dir_all(target.join("lower")).unwrap();
        fs::write(target.join("lower/keep"), b"lower").unwrap();
        symlink(&outside, target.join("escape")).unwrap();
        symlink(outside.join("canary"), target.join("escape_file")).unwrap();
        symlink("../..", target.join("up")).unwrap();
        let token = format!(
            "pwned-{}-{}",
            std::process::id(),
            tmp.path().file_name().unwrap().to_string_lossy()
        );
        let before = snapshot(tmp.path(), &target);
        Fixture {
            tmp,
            target,
            outside,
            token,
            before,
        }
    }

    /// The absolute path of the canary directory, as bytes.
    pub fn outside_bytes(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        self.outside.as_os_str().as_bytes().to_vec()
    }

    /// Apply `layer` flat, with the options for this process.
    pub fn apply(&self, layer: &[u8]) -> Result<ApplyReport, ApplyError> {
        self.apply_as(layer, Format::Flat)
    }

    /// Apply `layer` in `format`, with the options for this process.
    pub fn apply_as(&self, layer: &[u8], format: Format) -> Result<ApplyReport, ApplyError> {
        apply(
            layer,
            &self.target,
            &ApplyOptions::for_current_process(format),
        )
    }

    /// Apply in overlay format with the `trusted.*` namespace.
    pub fn apply_overlay(&self, layer: &[u8]) -> Result<ApplyReport, ApplyError> {
        self.apply_as(layer, Format::Overlay(OverlayXattr::Trusted))
    }

    /// Assert that nothing outside the target changed.
    pub fn check(&self) {
        let after = snapshot(self.tmp.path(), &self.target);
        if after != self.before {
            let changed: Vec<_> = after
                .keys()
                .chain(self.before.keys())
                .filter(|k| after.get(*k) != self.before.get(*k))
                .collect();
            panic!("something outside the target changed: {changed:?}");
        }
        for dir in ["/", "/tmp"] {
            for e in fs::read_dir(dir).unwrap() {
                let name = e.unwrap().file_name();
                assert!(
                    !name.to_string_lossy().contains(&self.token),
                    "{dir}/{name:?} was written outside the target"
                );
            }
        }
    }

    /// A path inside the target.
    pub fn t(&self, rel: &str) -> PathBuf {
        self.target.join(rel)
    }
}
