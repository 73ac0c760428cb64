//! Pruning fixture images no key names any more. A fixture whose recipe changed (its source,
//! or a step) gets a new key and a new image; the old one stays in the cache store. Each use of
//! a key (built, or found in the cache) sets the modification time of its lock file
//! (`molde/harness/fixtures/<key>.lock`); [`Harness::prune_fixtures`] removes the fixture
//! images whose key was not used for a given time, then what only they held.
//!
//! Every fixture build holds `fixtures/builds.lock` shared from its first step to its tag; a
//! prune takes it exclusively without waiting, and is skipped while any build runs (a build's
//! images are untagged until its end).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use molde_image::StoreError;
use molde_image::lock::FileLock;

use crate::{Harness, HarnessError};

/// How long a fixture key may go unused before [`Harness::open`] prunes its image: a week.
pub const FIXTURE_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The lock fixture builds hold shared, and a prune exclusively.
pub(crate) fn builds_lock(fixtures: &Path) -> PathBuf {
    fixtures.join("builds.lock")
}

/// Record a use of the key whose lock file is `lock`: its modification time is now.
pub(crate) fn touch(lock: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock)?
        .set_modified(SystemTime::now())
}

/// What [`Harness::prune_fixtures`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The fixture images removed (their tags, `molde-harness/<name>:<key>`).
    pub removed: Vec<String>,
    /// Fixture images unused for that long but kept: a container uses them.
    pub in_use: Vec<String>,
    /// Other images removed with them: untagged and unheld (their sources and steps).
    pub dangling: usize,
    /// Bytes freed (blobs and unpacked layers).
    pub freed_bytes: u64,
    /// Nothing was done: a fixture was being built.
    pub busy: bool,
}

/// When the key whose tag ends in `short` (its first 16 hex digits) was last used.
fn last_used(fixtures: &Path, short: &str) -> Option<SystemTime> {
    fs::read_dir(fixtures)
        .ok()?
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(short) && name.ends_with(".lock")
        })
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max()
}

impl Harness {
    /// Remove the fixture images whose key was not used (built or found by
    /// [`Fixture::build`](crate::Fixture::build)) for `unused_for`, unless a container uses
    /// them; then the store's dangling images (untagged and unheld: the removed fixtures'
    /// sources and steps) and the blobs and unpacked layers nothing needs any more. Skipped,
    /// saying so, while a fixture is being built. [`Harness::open`] runs it with
    /// [`FIXTURE_IDLE`].
    pub fn prune_fixtures(&self, unused_for: Duration) -> Result<PruneReport, HarnessError> {
        let store = self.store();
        let fixtures = crate::owner::dir(store).join("fixtures");
        let state = |path: &Path| {
            let path = path.to_owned();
            move |source| HarnessError::State { path, source }
        };
        fs::create_dir_all(&fixtures).map_err(state(&fixtures))?;
        let lock = builds_lock(&fixtures);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(state(&lock))?;
        let mut report = PruneReport::default();
        let Some(_exclusive) = FileLock::try_exclusive(file).map_err(state(&lock))? else {
            report.busy = true;
            return Ok(report);
        };
        let now = SystemTime::now();
        for summary in store.list()? {
            for tag in summary
                .tags
                .iter()
                .filter(|t| t.starts_with("molde-harness/"))
            {
                let Some((_, short)) = tag.rsplit_once(':') else {
                    continue;
                };
                let recent = last_used(&fixtures, short)
                    .is_some_and(|t| now.duration_since(t).unwrap_or_default() < unused_for);
                if recent {
                    continue;
                }
                match store.remove(tag) {
                    Ok(_) => report.removed.push(tag.clone()),
                    Err(StoreError::Held { .. }) => report.in_use.push(tag.clone()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if !report.removed.is_empty() {
            report.dangling = store.prune()?.len();
            report.freed_bytes = store.gc()?.bytes;
            for tag in &report.removed {
                if let Some((_, short)) = tag.rsplit_once(':')
                    && let Ok(rd) = fs::read_dir(&fixtures)
                {
                    for e in rd.flatten() {
                        if e.file_name().to_string_lossy().starts_with(short) {
                            let _ = fs::remove_file(e.path());
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}
