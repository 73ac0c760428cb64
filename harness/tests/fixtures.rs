//! Fixtures in the cache store: built once per key, and pruned when no key names them for a
//! while (a fixture whose recipe changed leaves its old image); a fixture's setup steps leave
//! no intermediate images; a fixture pulled from a real `docker-registry` by digest is keyed
//! by that digest, whatever the registry's address.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use molde_harness::{FIXTURE_IDLE, Fixture, Harness, LocalRegistry};
use molde_image::ImageBuilder;
use molde_image::lock::{FileLock, LockKind};

mod common;
use common::require;

fn fixtures_dir(harness: &Harness) -> PathBuf {
    harness.store().layout().state().join("harness/fixtures")
}

/// Make the key of `tag` (`molde-harness/<name>:<16 hex>`) look last used `age` ago.
fn age(harness: &Harness, tag: &str, age: Duration) {
    let short = tag.rsplit_once(':').unwrap().1;
    let mut found = 0;
    for e in fs::read_dir(fixtures_dir(harness)).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(short) {
            fs::File::options()
                .write(true)
                .open(e.path())
                .unwrap()
                .set_modified(SystemTime::now() - age)
                .unwrap();
            found += 1;
        }
    }
    assert_eq!(found, 1, "the lock file of {tag}");
}

fn fixture_tags(harness: &Harness) -> Vec<String> {
    let mut tags: Vec<String> = harness
        .store()
        .list()
        .unwrap()
        .into_iter()
        .flat_map(|s| s.tags)
        .filter(|t| t.starts_with("molde-harness/"))
        .collect();
    tags.sort();
    tags
}

#[test]
fn a_fixture_no_key_names_is_pruned_and_a_used_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::open(dir.path()).unwrap();
    let store = harness.store();
    for v in ["1", "2"] {
        let image = store
            .commit(ImageBuilder::new().label("version", v).cmd(["/bin/true"]))
            .unwrap();
        store.tag(&image, &format!("app:{v}")).unwrap();
    }
    // The fixture's recipe changes from app:1 to app:2: a new key, a new image.
    let old = Fixture::image("app", "app:1").build(&harness).unwrap();
    let new = Fixture::image("app", "app:2").build(&harness).unwrap();
    assert_ne!(old.manifest_digest(), new.manifest_digest());
    let tags = fixture_tags(&harness);
    assert_eq!(tags.len(), 2, "{tags:?}");
    let old_tag = store
        .tags_of(&old)
        .unwrap()
        .into_iter()
        .find(|t| t.starts_with("molde-harness/"))
        .unwrap();

    // Recently used, both stay.
    let report = harness.prune_fixtures(FIXTURE_IDLE).unwrap();
    assert!(report.removed.is_empty(), "{report:?}");

    // The old key unused for 8 days: its image goes, the new one stays, and so does a
    // build in progress's wait (the prune is skipped while a build holds its lock).
    age(&harness, &old_tag, Duration::from_secs(8 * 24 * 3600));
    let building = FileLock::acquire(
        &fixtures_dir(&harness).join("builds.lock"),
        LockKind::Shared,
    )
    .unwrap();
    let report = harness.prune_fixtures(FIXTURE_IDLE).unwrap();
    assert!(report.busy && report.removed.is_empty(), "{report:?}");
    drop(building);
    let report = harness.prune_fixtures(FIXTURE_IDLE).unwrap();
    assert_eq!(report.removed, vec![old_tag.clone()], "{report:?}");
    assert!(store.resolve(&old_tag).is_err());
    assert_eq!(fixture_tags(&harness).len(), 1);
    // The new fixture is found in the cache, not built again.
    let again = Fixture::image("app", "app:2").build(&harness).unwrap();
    assert_eq!(again.manifest_digest(), new.manifest_digest());

    // Reopening prunes on its own (a week unused).
    let new_tag = fixture_tags(&harness).remove(0);
    age(&harness, &new_tag, Duration::from_secs(8 * 24 * 3600));
    drop(harness);
    let reopened = Harness::open(dir.path()).unwrap();
    assert!(fixture_tags(&reopened).is_empty());
}

#[test]
fn steps_leave_one_image_and_a_pinned_pull_is_keyed_by_its_digest() {
    if !require(
        nix::unistd::geteuid().is_root(),
        "needs root to run the fixture's step containers",
    ) || !require(
        Path::new("/usr/bin/docker-registry").exists(),
        "needs docker-registry (Debian package docker-registry)",
    ) {
        return;
    }
    // An image in a registry of its own storage, pushed by molde.
    let storage = tempfile::tempdir().unwrap();
    let upstream = molde_image::Store::temporary().unwrap();
    let bins: Vec<&Path> = ["/bin/sh", "/bin/echo"].iter().map(Path::new).collect();
    let base = molde_image::base::from_host(&upstream, &bins).unwrap();
    upstream.tag(&base, "base:1").unwrap();
    let registry = LocalRegistry::start(storage.path(), false).unwrap();
    let pushed = molde_registry::Push::new(&upstream, "base:1", &registry.reference("t/base:1"))
        .run()
        .unwrap();
    drop(registry);

    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::open(dir.path()).unwrap();
    let build = |registry: &LocalRegistry| {
        let reference = registry.reference(&format!("t/base@{}", pushed.digest));
        Fixture::pull("pulled", reference)
            .run(["/bin/sh", "-c", "echo one > /one"])
            .run(["/bin/sh", "-c", "echo two > /two"])
            .build(&harness)
            .unwrap()
    };
    // Read-only: nothing is pushed to it; it only serves.
    let first = LocalRegistry::start(storage.path(), true).unwrap();
    let image = build(&first);
    assert_eq!(image.layers().len(), base.layers().len() + 2);
    // Source (untagged, by digest) and fixture; the first step's image is gone.
    let images = harness.store().list().unwrap();
    assert_eq!(
        images.len(),
        2,
        "{:?}",
        images.iter().map(|s| &s.tags).collect::<Vec<_>>()
    );
    drop(first);
    // Another registry (another port) serving the same content: the same key, found in the
    // cache (no step runs again: the image is the very same).
    let second = LocalRegistry::start(storage.path(), true).unwrap();
    assert_eq!(build(&second).manifest_digest(), image.manifest_digest());
}
