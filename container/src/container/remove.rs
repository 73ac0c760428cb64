//! remove: kill what runs, delete the writable layer, release the image's hold, delete the
//! record. An interrupted removal (state `removing`) is finished by the next list or open.

use std::time::Duration;

use super::{Container, list};
use crate::error::ContainerError;
use crate::record::{self, Record, State};

impl Container {
    /// Remove the container, killing its processes first if it runs.
    pub fn remove(mut self) -> Result<(), ContainerError> {
        self.remove_on_drop = false;
        self.remove_inner()
    }

    pub(crate) fn remove_inner(&mut self) -> Result<(), ContainerError> {
        if self.removed {
            return Ok(());
        }
        let mut errors = Vec::new();
        let mut marked = false;
        if self.process.is_some() {
            if let Err(e) = self.kill() {
                errors.push(e);
            }
            if let Err(e) = self.wait_inner(false) {
                errors.push(e);
            }
        } else {
            // Usually created or exited: marked `removing` at once, under the same lock that
            // found it so (a start by another handle then refuses).
            let updated = Record::update_known(&self.record, &self.paths, |r| {
                marked = matches!(r.state, State::Created | State::Exited);
                if marked {
                    r.state = State::Removing;
                }
                marked
            });
            match updated {
                Ok(r) if marked => self.record = r,
                _ => marked = false,
            }
            if !marked && matches!(self.status(), Ok(super::Status::Running)) {
                // Started by another process: kill it and wait for its end.
                if let Err(e) = self.kill() {
                    errors.push(e);
                }
                let _ = self.wait_timeout(Duration::from_secs(10));
            }
        }
        if self.removed {
            return Ok(());
        }
        if let Some(pump) = self.log_pump.as_mut() {
            // Its last writes land before the directory goes.
            pump.wait(Duration::from_secs(1));
        }
        if !marked {
            match Record::update_known(&self.record, &self.paths, |r| {
                r.state = State::Removing;
                true
            }) {
                Ok(r) => self.record = r,
                Err(e) => errors.push(e.into()),
            }
        }
        let _owner = record::try_own(&self.paths);
        if matches!(_owner, Ok(Some(_))) {
            // A cgroup named after it that no live owner holds: left by an owner killed between
            // making the cgroup and recording the start (the soak test's finding).
            list::clear_cgroup(&self.id);
        }
        if self.record.storage == record::LayerStorage::Tmpfs {
            // The snapshot lives on a tmpfs mounted on its directory: unmounting frees it.
            if let Err(e) =
                nix::mount::umount2(&self.paths.snapshot(), nix::mount::MntFlags::MNT_DETACH)
            {
                errors.push(ContainerError::Io {
                    op: "unmounting the writable layer's tmpfs",
                    path: self.paths.snapshot(),
                    source: e.into(),
                });
            }
        } else if let Err(e) = self.backend.remove(self.snapshot.clone()) {
            errors.push(e.into());
        }
        if let Err(e) = molde_layerfs::snapshot::remove_tree(self.paths.dir()) {
            errors.push(ContainerError::Io {
                op: "removing",
                path: self.paths.dir().to_owned(),
                source: e,
            });
            list::discard(&self.store, &self.paths, &self.id);
        }
        // Its name, free once the container is gone.
        if let Some(name) = &self.record.name
            && let Err(e) = record::names::release(&self.store, name, &self.id)
        {
            errors.push(e.into());
        }
        self.net = None;
        if let Err(e) = super::networking::release(&self.store, &self.id) {
            errors.push(e);
        }
        // Its hold, and the bare-id hold an older molde took.
        for name in [record::hold_name(&self.id), self.id.clone()] {
            if let Err(e) = self.store.release(&name) {
                errors.push(e.into());
            }
        }
        self.removed = true;
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ContainerError::Cleanup {
                id: self.id.clone(),
                errors,
            }),
        }
    }
}
