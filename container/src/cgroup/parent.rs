//! [`Parent`]: where containers' cgroups are made, in every hierarchy.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::{CgroupError, available, files, hierarchies};

/// Where containers' cgroups are made: a path relative to the root of every hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    relative: PathBuf,
}

impl Default for Parent {
    /// `molde`, at the root of every hierarchy.
    fn default() -> Self {
        Parent {
            relative: PathBuf::from("molde"),
        }
    }
}

impl Parent {
    /// A parent at `relative` below every hierarchy's root, such as a delegated subtree
    /// (`user.slice/user-1000.slice/user@1000.service/app.slice/molde`). In v2 each of its
    /// ancestors must hold no processes of its own once controllers are enabled.
    pub fn at(relative: impl Into<PathBuf>) -> Result<Parent, CgroupError> {
        let relative = relative.into();
        let shown = relative.to_string_lossy().into_owned();
        let normal = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if relative.as_os_str().is_empty() || !normal {
            return Err(CgroupError::InvalidName {
                name: shown,
                reason: "a parent must be a relative path of plain components (no '..', no '/')",
            });
        }
        Ok(Parent { relative })
    }

    /// The parent's path relative to each hierarchy's root.
    pub fn relative(&self) -> &Path {
        &self.relative
    }

    /// The parent's directory in every hierarchy molde uses on this host.
    pub fn dirs(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let layout = available()?;
        Ok(hierarchies(&layout)
            .into_iter()
            .map(|(mount, _)| mount.join(&self.relative))
            .collect())
    }

    /// The names of the cgroups below this parent (in any hierarchy), sorted: after a crash,
    /// whatever is here and not in the store's records is stale.
    pub fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for dir in self.dirs()? {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(files::error("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| files::error("list", &dir, e))?;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Removes the parent's directories where they are empty (its last component only; those
    /// holding cgroups are left). Other molde users may share a parent: call this only for a
    /// parent of your own.
    pub fn remove_if_empty(&self) -> Result<(), CgroupError> {
        for dir in self.dirs()? {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::EBUSY | libc::ENOTEMPTY)
                    ) => {}
                Err(e) => return Err(files::error("remove", &dir, e)),
            }
        }
        Ok(())
    }
}
