//! Container names (`docker run --name`): unique in a store, also between processes racing
//! for one; `Container::open` by name, full id or id prefix; freed on removal.

mod common;

use std::path::{Path, PathBuf};

use molde_container::{Container, ContainerError, Status};
use molde_image::{Image, Store};

fn setup() -> Option<(tempfile::TempDir, Store, Image)> {
    // Root, or rootless with subordinate ids (the unprivileged pass).
    if !common::containers_or_skip() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let bins: Vec<&Path> = ["/bin/sh", "/bin/true", "/bin/sleep"]
        .iter()
        .map(Path::new)
        .collect();
    let image = molde_image::base::from_host(&store, &bins).unwrap();
    Some((dir, store, image))
}

#[test]
fn a_taken_name_is_a_conflict_naming_its_holder_and_free_again_after_removal() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let first = Container::builder(&store, &image)
        .name("web")
        .command("/bin/true")
        .create()
        .unwrap();
    assert_eq!(first.name(), Some("web"));
    let err = Container::builder(&store, &image)
        .name("web")
        .command("/bin/true")
        .create()
        .unwrap_err();
    match &err {
        ContainerError::NameInUse { name, holder } => {
            assert_eq!(name, "web");
            assert_eq!(holder, first.id());
        }
        e => panic!("expected NameInUse, got {e:?}"),
    }
    assert!(err.to_string().contains("already in use"), "{err}");
    // The failed create left nothing: one container, one hold.
    assert_eq!(Container::list(&store).unwrap().len(), 1);
    assert_eq!(store.holds().unwrap().len(), 1);
    let listed = Container::list(&store).unwrap();
    assert_eq!(listed[0].name.as_deref(), Some("web"));
    // Another name is fine; a removed container's name is free again.
    let other = Container::builder(&store, &image)
        .name("web.2")
        .command("/bin/true")
        .create()
        .unwrap();
    first.remove().unwrap();
    let again = Container::builder(&store, &image)
        .name("web")
        .command("/bin/true")
        .create()
        .unwrap();
    assert_eq!(
        Container::open(&store, "web").unwrap().id(),
        again.id(),
        "the name opens its new holder"
    );
    let mut names: Vec<_> = Container::list(&store)
        .unwrap()
        .into_iter()
        .map(|c| c.name.unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["web", "web.2"]);
    drop(other);
    drop(again);
    assert!(Container::list(&store).unwrap().is_empty());
    assert!(
        Container::builder(&store, &image)
            .name("web")
            .command("/bin/true")
            .create()
            .is_ok()
    );
}

#[test]
fn names_outside_dockers_rule_are_refused_before_anything_is_made() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    for bad in ["", "-x", ".x", "a b", "a/b", "../x", "ü"] {
        let err = Container::builder(&store, &image)
            .name(bad)
            .command("/bin/true")
            .create()
            .unwrap_err();
        assert!(
            matches!(&err, ContainerError::Name(e) if e.name == bad),
            "{bad:?}: {err:?}"
        );
    }
    assert!(Container::list(&store).unwrap().is_empty());
    assert!(store.holds().unwrap().is_empty());
}

#[test]
fn open_by_name_full_id_and_prefix_and_an_ambiguous_prefix_lists_candidates() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let mut c = Container::builder(&store, &image)
        .name("my-container")
        .command("/bin/sleep")
        .arg("60")
        .start()
        .unwrap();
    let id = c.id().to_owned();
    for x in ["my-container", id.as_str(), &id[..12]] {
        let opened = Container::open(&store, x).unwrap();
        assert_eq!(opened.id(), id, "{x}");
        assert_eq!(opened.name(), Some("my-container"));
    }
    // `docker stop my-container` from another handle.
    let mut other = Container::open(&store, "my-container").unwrap();
    other.stop(std::time::Duration::from_millis(200)).unwrap();
    assert!(matches!(c.status().unwrap(), Status::Exited { .. }));
    assert!(matches!(
        Container::open(&store, "no-such-name"),
        Err(ContainerError::NotFound(_))
    ));
    // Enough containers that some two share their first hex digits: a prefix of both is
    // ambiguous and the error names both.
    let mut made: Vec<Container> = Vec::new();
    let (a, b) = loop {
        made.push(
            Container::builder(&store, &image)
                .command("/bin/true")
                .create()
                .unwrap(),
        );
        let ids: Vec<String> = made
            .iter()
            .map(|c| c.id().to_owned())
            .chain([id.clone()])
            .collect();
        let pair = ids.iter().enumerate().find_map(|(i, x)| {
            ids[i + 1..]
                .iter()
                .find(|y| x[..4] == y[..4])
                .map(|y| (x.clone(), y.clone()))
        });
        if let Some(pair) = pair {
            break pair;
        }
    };
    let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let prefix = &a[..common];
    match Container::open(&store, prefix) {
        Err(ContainerError::Ambiguous {
            prefix: p,
            candidates,
        }) => {
            assert_eq!(p, prefix);
            assert!(candidates.contains(&a) && candidates.contains(&b));
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    assert_eq!(Container::open(&store, &a[..common + 1]).unwrap().id(), a);
    drop(made);
    c.remove().unwrap();
    assert!(matches!(
        Container::open(&store, "my-container"),
        Err(ContainerError::NotFound(_))
    ));
}

const RACE_ENV: &str = "MOLDE_TEST_NAME_RACE";

/// Run in a child process of the test: create the container `race` as soon as the file the
/// parent names appears, keep it, and print the result.
fn race_child(root: PathBuf) {
    let store = Store::open(&root).unwrap();
    let image = store
        .resolve(&std::env::var("MOLDE_TEST_RACE_IMAGE").unwrap())
        .unwrap();
    let go = root.join("go");
    while !go.exists() {
        std::hint::spin_loop();
    }
    match Container::builder(&store, &image)
        .name("race")
        .command("/bin/true")
        .create()
    {
        Ok(c) => println!("RESULT won {}", c.keep()),
        Err(ContainerError::NameInUse { holder, .. }) => println!("RESULT lost {holder}"),
        Err(e) => println!("RESULT error {e}"),
    }
}

#[test]
fn two_processes_creating_one_name_at_once_end_with_exactly_one_container() {
    if let Some(root) = std::env::var_os(RACE_ENV) {
        race_child(PathBuf::from(root));
        return;
    }
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    for round in 0..5 {
        let go = store.root().join("go");
        let _ = std::fs::remove_file(&go);
        let children: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "two_processes_creating_one_name_at_once_end_with_exactly_one_container",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(RACE_ENV, store.root())
                    .env("MOLDE_TEST_RACE_IMAGE", image.id().to_string())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        std::fs::write(&go, b"").unwrap();
        let results: Vec<String> = children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let at = text.find("RESULT ").expect(&text);
                text[at + 7..].lines().next().unwrap().to_owned()
            })
            .collect();
        let won: Vec<_> = results.iter().filter(|r| r.starts_with("won ")).collect();
        let lost: Vec<_> = results.iter().filter(|r| r.starts_with("lost ")).collect();
        assert_eq!(
            (won.len(), lost.len()),
            (1, 1),
            "round {round}: {results:?}"
        );
        let winner = &won[0][4..];
        assert_eq!(&lost[0][5..], winner, "the loser names the winner");
        let listed = Container::list(&store).unwrap();
        assert_eq!(listed.len(), 1, "round {round}");
        assert_eq!(listed[0].id, winner);
        assert_eq!(listed[0].name.as_deref(), Some("race"));
        Container::open(&store, "race").unwrap().remove().unwrap();
    }
    assert!(store.holds().unwrap().is_empty());
}

#[test]
fn a_name_left_by_a_removal_cut_short_is_taken_over_and_survives_a_new_store_handle() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let c = Container::builder(&store, &image)
        .name("kept")
        .command("/bin/true")
        .create()
        .unwrap();
    let id = c.keep();
    // Another store handle (as another process would open it) finds it by name.
    let again = Store::open(store.root()).unwrap();
    molde_container::recover(&again).unwrap();
    assert_eq!(Container::open(&again, "kept").unwrap().id(), id);
    // The container's directory vanishes without a removal (a crash mid-way): its name link
    // is left pointing nowhere, and the name is free.
    let dir = store.root().join("molde/containers").join(&id);
    molde_image::layerfs::snapshot::remove_tree(&dir).unwrap();
    let links = store.root().join("molde/names");
    assert!(links.join("kept").symlink_metadata().is_ok());
    let c2 = Container::builder(&again, &image)
        .name("kept")
        .command("/bin/true")
        .create()
        .unwrap();
    assert_eq!(Container::open(&again, "kept").unwrap().id(), c2.id());
    // A lost link (records and links are not fsynced) comes back from the record at recover.
    std::fs::remove_file(links.join("kept")).unwrap();
    molde_container::recover(&again).unwrap();
    assert_eq!(Container::open(&again, "kept").unwrap().id(), c2.id());
}
