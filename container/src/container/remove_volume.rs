//! Removing a named volume ([`Volume::remove`]): refused while a container record mounts it.
//! It lives here, above [`crate::volume`], because only `container/` knows the containers.

use std::fs;

use molde_image::Store;

use super::list;
use crate::error::ContainerError;
use crate::record::ContainerPaths;
use crate::volume::{Volume, VolumeError};

impl Volume {
    /// Delete the volume and its contents. Refused while a container record mounts it
    /// ([`VolumeError::InUse`], in [`ContainerError::Volume`]), and kept when the containers
    /// cannot be listed ([`ContainerError::VolumeUsers`]).
    pub fn remove(self, store: &Store) -> Result<(), ContainerError> {
        let users = users(store, self.name()).map_err(|e| ContainerError::VolumeUsers {
            name: self.name().to_owned(),
            source: Box::new(e),
        })?;
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: self.name().to_owned(),
                containers: users,
            }
            .into());
        }
        Ok(self.delete(store)?)
    }
}

/// The containers whose records mount the volume `name`.
fn users(store: &Store, name: &str) -> Result<Vec<String>, ContainerError> {
    let (listed, skipped) = list::list_all(store)?;
    Ok(listed
        .into_iter()
        .filter(|s| s.volumes.iter().any(|v| v == name))
        .map(|s| s.id)
        // A record not understood (a newer molde's) that names the volume may mount it.
        .chain(skipped.into_iter().filter(|id| {
            let record = ContainerPaths::new(store, id).record();
            fs::read_to_string(record).map_or(true, |text| text.contains(&format!("\"{name}\"")))
        }))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_keep_the_volume() {
        let store = Store::temporary().unwrap();
        let v = Volume::create(&store, "kept").unwrap();
        fs::write(v.path().join("f"), b"x").unwrap();
        // The containers directory cannot be read: listing them fails.
        let containers = crate::record::containers_dir(&store);
        fs::create_dir_all(containers.parent().unwrap()).unwrap();
        fs::write(&containers, b"not a directory").unwrap();
        match v.remove(&store) {
            Err(e @ ContainerError::VolumeUsers { .. }) => {
                assert!(std::error::Error::source(&e).is_some());
            }
            r => panic!("removing with unknown users: {r:?}"),
        }
        let v = Volume::open(&store, "kept").unwrap();
        assert_eq!(fs::read(v.path().join("f")).unwrap(), b"x");
    }

    #[test]
    fn a_record_not_understood_that_names_the_volume_keeps_it() {
        let store = Store::temporary().unwrap();
        let v = Volume::create(&store, "shared").unwrap();
        Volume::create(&store, "other").unwrap();
        let paths = crate::record::ContainerPaths::new(&store, &"ab".repeat(32));
        fs::create_dir_all(paths.dir()).unwrap();
        fs::write(
            paths.record(),
            br#"{"format":2,"mounts":[{"volume":"shared"}]}"#,
        )
        .unwrap();
        match v.remove(&store) {
            Err(ContainerError::Volume(VolumeError::InUse { containers, .. })) => {
                assert_eq!(containers, ["ab".repeat(32)])
            }
            r => panic!("removing a volume a newer record names: {r:?}"),
        }
        Volume::open(&store, "other")
            .unwrap()
            .remove(&store)
            .unwrap();
        assert!(paths.record().exists());
    }
}
