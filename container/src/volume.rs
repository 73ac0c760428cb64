//! Named volumes: directories in the store that outlive the containers mounting them. This
//! module knows nothing of containers: removing a volume, refused while a container mounts it,
//! is in `container/remove_volume.rs`.
//!
//! ```text
//! <store>/molde/volumes/<name>/data/   what containers see at the volume's mount point
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use molde_image::Store;

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The name is not a valid volume name.
    #[error(
        "invalid volume name {0:?}: use 1 to 64 of [A-Za-z0-9_.-], not starting with '.' or '-'"
    )]
    BadName(String),
    /// No such volume.
    #[error("no volume {0:?} in the store")]
    NotFound(String),
    /// The volume is mounted by containers.
    #[error("volume {name:?} is in use by containers {containers:?}")]
    InUse {
        /// The volume.
        name: String,
        /// The containers whose records mount it.
        containers: Vec<String>,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A named volume of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    name: String,
    data: PathBuf,
}

fn volumes_dir(store: &Store) -> PathBuf {
    store.layout().state().join("volumes")
}

fn check_name(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::BadName(name.to_owned()))
    }
}

impl Volume {
    /// The volume `name`, created (empty, mode 0755) if it does not exist yet.
    pub fn create(store: &Store, name: &str) -> Result<Volume, VolumeError> {
        check_name(name)?;
        let data = volumes_dir(store).join(name).join("data");
        fs::create_dir_all(&data).map_err(|source| VolumeError::Io {
            op: "creating",
            path: data.clone(),
            source,
        })?;
        Ok(Volume {
            name: name.to_owned(),
            data,
        })
    }

    /// The existing volume `name`.
    pub fn open(store: &Store, name: &str) -> Result<Volume, VolumeError> {
        check_name(name)?;
        let data = volumes_dir(store).join(name).join("data");
        if !data.is_dir() {
            return Err(VolumeError::NotFound(name.to_owned()));
        }
        Ok(Volume {
            name: name.to_owned(),
            data,
        })
    }

    /// Every volume of the store, sorted by name.
    pub fn list(store: &Store) -> Result<Vec<Volume>, VolumeError> {
        let dir = volumes_dir(store);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(VolumeError::Io {
                    op: "reading",
                    path: dir,
                    source,
                });
            }
        };
        let mut out: Vec<Volume> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter_map(|n| Volume::open(store, &n).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Delete the volume's directory and contents, unconditionally. [`Volume::remove`] (in
    /// `container/remove_volume.rs`, which knows the containers) checks first that no
    /// container mounts it.
    pub(crate) fn delete(self, store: &Store) -> Result<(), VolumeError> {
        let dir = volumes_dir(store).join(&self.name);
        fs::remove_dir_all(&dir).map_err(|source| VolumeError::Io {
            op: "removing",
            path: dir,
            source,
        })
    }

    /// The volume's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host directory holding its data.
    pub fn path(&self) -> &Path {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_remove() {
        let store = Store::temporary().unwrap();
        assert!(Volume::list(&store).unwrap().is_empty());
        let v = Volume::create(&store, "data_1").unwrap();
        fs::write(v.path().join("f"), b"x").unwrap();
        // Creating again keeps the contents.
        let again = Volume::create(&store, "data_1").unwrap();
        assert_eq!(fs::read(again.path().join("f")).unwrap(), b"x");
        Volume::create(&store, "a").unwrap();
        let names: Vec<_> = Volume::list(&store)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["a", "data_1"]);
        v.remove(&store).unwrap();
        assert!(matches!(
            Volume::open(&store, "data_1"),
            Err(VolumeError::NotFound(_))
        ));
    }

    #[test]
    fn bad_names_refused() {
        let store = Store::temporary().unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "-x", &"x".repeat(65)] {
            assert!(
                matches!(Volume::create(&store, bad), Err(VolumeError::BadName(_))),
                "{bad}"
            );
        }
    }
}
