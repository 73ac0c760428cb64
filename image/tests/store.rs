//! The store: OCI layout on disk, blob ingest (verification, crash leftovers, concurrency),
//! images and their invariant, tags, holds, remove, prune and GC.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use molde_image::blob::BlobError;
use molde_image::blob::Expected;
use molde_image::layerfs::Digest;
use molde_image::store::REF_NAME;
use molde_image::{
    Image, ImageBuilder, ImageError, Layer, LayerMediaType, Removed, Store, StoreError,
};

/// A layer tar holding `files` (path, content), deterministic.
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *content).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn add(store: &Store, files: &[(&str, &[u8])]) -> Layer {
    store.add_layer(&layer_tar(files)[..]).unwrap().layer
}

fn image_with(store: &Store, layers: &[Layer], label: &str) -> Image {
    let mut b = ImageBuilder::new().created("2024-01-01T00:00:00Z");
    for (i, l) in layers.iter().enumerate() {
        b = b.layer(*l, format!("step {i}"));
    }
    store.commit(b.label("which", label)).unwrap()
}

fn index_json(store: &Store) -> serde_json::Value {
    serde_json::from_slice(&fs::read(store.oci_dir().join("index.json")).unwrap()).unwrap()
}

#[test]
fn a_new_store_is_an_oci_layout() {
    let store = Store::temporary().unwrap();
    let root = store.oci_dir();
    assert_eq!(root, store.root().join("oci"));
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index = index_json(&store);
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 0);
    assert!(root.join("blobs/sha256").is_dir());
    assert!(store.root().join("molde").is_dir());
    // The layout directory holds the layout only.
    let mut names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["blobs", "index.json", "oci-layout"]);

    let l = add(&store, &[("etc/motd", b"hi")]);
    let img = image_with(&store, &[l], "x");
    store.tag(&img, "demo:1").unwrap();
    let index = index_json(&store);
    let m = &index["manifests"][0];
    assert_eq!(m["annotations"][REF_NAME], "demo:1");
    assert_eq!(m["digest"], img.manifest_digest().to_string());
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    // Every blob file is named by its digest and read-only.
    for e in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let bytes = fs::read(e.path()).unwrap();
        assert_eq!(Digest::of(&bytes).hex(), e.file_name().to_str().unwrap());
        assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o444);
    }
    // A temporary store disappears with its last clone.
    let path = store.root().to_owned();
    let clone = store.clone();
    drop(store);
    assert!(path.exists());
    drop(clone);
    assert!(!path.exists());
}

#[test]
fn default_root_follows_molde_root() {
    // Only this test in this binary touches MOLDE_ROOT.
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: no other thread of this test binary reads or writes MOLDE_ROOT.
    unsafe { std::env::set_var("MOLDE_ROOT", dir.path()) };
    assert_eq!(molde_image::layout::default_root(), dir.path());
    let store = Store::open_default().unwrap();
    assert_eq!(store.root(), dir.path());
    assert!(dir.path().join("oci/index.json").exists());
    // SAFETY: as above.
    unsafe { std::env::remove_var("MOLDE_ROOT") };
}

#[test]
fn ingest_verifies_digest_and_size_and_leaves_nothing_on_mismatch() {
    let store = Store::temporary().unwrap();
    let data = b"some blob content".repeat(1000);
    let actual = Digest::of(&data);
    let wrong = Digest::of(b"something else");
    let err = store
        .ingest_blob(
            &data[..],
            Some(Expected {
                digest: wrong,
                size: None,
            }),
        )
        .unwrap_err();
    match &err {
        StoreError::Blob(BlobError::DigestMismatch {
            expected,
            actual: a,
        }) => {
            assert_eq!(*expected, wrong);
            assert_eq!(*a, actual);
        }
        e => panic!("wrong error {e:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&wrong.to_string()) && msg.contains(&actual.to_string()),
        "{msg}"
    );
    let err = store
        .ingest_blob(
            &data[..],
            Some(Expected {
                digest: actual,
                size: Some(5),
            }),
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Blob(BlobError::SizeMismatch { expected: 5, actual: n, .. }) if n == data.len() as u64),
        "{err:?}"
    );
    assert_eq!(store.counts().unwrap(), (0, 0));
    assert_eq!(
        fs::read_dir(store.root().join("molde/tmp"))
            .unwrap()
            .count(),
        0
    );

    let info = store
        .ingest_blob(
            &data[..],
            Some(Expected {
                digest: actual,
                size: Some(data.len() as u64),
            }),
        )
        .unwrap();
    assert!(!info.existed);
    assert_eq!(fs::read(store.layout().blob(&actual)).unwrap(), data);
    let again = store.ingest_blob(&data[..], None).unwrap();
    assert!(again.existed);
    assert_eq!(store.counts().unwrap(), (1, 0));
}

/// A reader that fails half way, as a truncated download or archive does.
struct Broken(usize);
impl std::io::Read for Broken {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0 == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "cut off",
            ));
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(7);
        self.0 -= n;
        Ok(n)
    }
}

/// A cause a source's read error carries, which must reach the caller intact.
#[derive(Debug, thiserror::Error)]
#[error("the network went away")]
struct NetworkGone;

struct FailsWithCause;
impl std::io::Read for FailsWithCause {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            NetworkGone,
        ))
    }
}

#[test]
fn a_source_error_keeps_its_cause() {
    let store = Store::temporary().unwrap();
    let err = store.ingest_blob(FailsWithCause, None).unwrap_err();
    let StoreError::Blob(BlobError::Read { source }) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(
        source.get_ref().is_some_and(|e| e.is::<NetworkGone>()),
        "{source:?}"
    );
}

#[test]
fn a_failing_source_leaves_no_blob() {
    let store = Store::temporary().unwrap();
    let err = store.ingest_blob(Broken(100_000), None).unwrap_err();
    assert!(
        matches!(err, StoreError::Blob(BlobError::Read { .. })),
        "{err:?}"
    );
    assert_eq!(store.counts().unwrap(), (0, 0));
    assert_eq!(
        fs::read_dir(store.root().join("molde/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn open_clears_leftovers_but_not_live_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tmp = store.root().join("molde/tmp");
    fs::write(tmp.join("ingest-dead"), b"half a blob").unwrap();
    let live = tmp.join("ingest-live");
    fs::write(&live, b"being written").unwrap();
    let held = molde_image::lock::FileLock::acquire(&live, molde_image::lock::LockKind::Exclusive)
        .unwrap();
    let half_layer = store
        .root()
        .join(format!("molde/layers/{}.tmp", Digest::of(b"c").hex()));
    fs::create_dir_all(half_layer.join("usr/bin")).unwrap();
    drop(store);
    let _store = Store::open(dir.path()).unwrap();
    assert!(!tmp.join("ingest-dead").exists());
    assert!(live.exists(), "a temp file locked by a live writer stays");
    assert!(!half_layer.exists());
    drop(held);
}

/// Run by `two_processes_ingest_the_same_blob` in child processes.
#[test]
#[ignore = "helper: run in child processes by two_processes_ingest_the_same_blob"]
fn child_ingest() {
    let root = std::env::var("MOLDE_TEST_CHILD_STORE").expect("started by its parent test");
    let store = Store::open(&root).unwrap();
    let data = big_blob();
    let info = store.ingest_blob(&data[..], None).unwrap();
    assert_eq!(info.digest, Digest::of(&data));
    let l = store
        .add_layer(&layer_tar(&[("shared", &data[..1000])])[..])
        .unwrap();
    let img = image_with(&store, &[l.layer], "shared");
    store.tag(&img, "shared:latest").unwrap();
}

fn big_blob() -> Vec<u8> {
    (0..8_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn two_processes_ingest_the_same_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_ingest",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("MOLDE_TEST_CHILD_STORE", dir.path())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a child failed");
    }
    let data = big_blob();
    assert_eq!(
        fs::read(store.layout().blob(&Digest::of(&data))).unwrap(),
        data
    );
    // One copy of each blob: the big blob, the layer, one config and one manifest.
    assert_eq!(store.counts().unwrap().0, 4);
    assert_eq!(
        fs::read_dir(dir.path().join("molde/tmp")).unwrap().count(),
        0
    );
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].tags, vec!["shared:latest".to_owned()]);
}

/// Run by `a_killed_ingest_leaves_nothing_visible`: ingests stdin until killed.
#[test]
#[ignore = "helper: run in a child process by a_killed_ingest_leaves_nothing_visible"]
fn child_ingest_stdin() {
    let root = std::env::var("MOLDE_TEST_CHILD_STORE").expect("started by its parent test");
    let store = Store::open(&root).unwrap();
    store.ingest_blob(std::io::stdin().lock(), None).unwrap();
}

/// A process SIGKILLed in the middle of an ingest leaves no blob, no image, and a temp file
/// that the next open clears.
#[test]
fn a_killed_ingest_leaves_nothing_visible() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blobs_before = store.counts().unwrap().0;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_ingest_stdin",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MOLDE_TEST_CHILD_STORE", dir.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&big_blob()[..4_000_000]).unwrap();
    stdin.flush().unwrap();
    // Wait until the child has written part of the blob into its temp file.
    let tmp = dir.path().join("molde/tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let written: u64 = fs::read_dir(&tmp)
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        if written >= 1_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert_eq!(
        store.counts().unwrap().0,
        blobs_before,
        "no blob became visible"
    );
    assert!(store.list().unwrap().is_empty());
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "open clears the half blob"
    );
    assert_eq!(store.counts().unwrap().0, blobs_before);
}

#[test]
fn threads_share_one_store() {
    let store = Store::temporary().unwrap();
    let data = big_blob();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let store = store.clone();
            let data = &data;
            s.spawn(move || store.ingest_blob(&data[..], None).unwrap());
        }
    });
    assert_eq!(store.counts().unwrap().0, 1);
}

#[test]
fn add_layer_computes_diff_id_for_each_compression() {
    let store = Store::temporary().unwrap();
    let tar = layer_tar(&[("a", b"aaa"), ("b/c", b"ccc")]);
    let plain = store.add_layer(&tar[..]).unwrap().layer;
    assert_eq!(plain.media_type, LayerMediaType::Tar);
    assert_eq!(plain.diff_id, Digest::of(&tar));
    assert_eq!(plain.digest, Digest::of(&tar));
    let gz = gzip(&tar);
    let g = store.add_layer(&gz[..]).unwrap().layer;
    assert_eq!(g.media_type, LayerMediaType::Gzip);
    assert_eq!(g.diff_id, Digest::of(&tar));
    assert_eq!(g.digest, Digest::of(&gz));
    assert_eq!(g.size, gz.len() as u64);
    let z = zstd_bytes(&tar);
    let zl = store.add_layer(&z[..]).unwrap().layer;
    assert_eq!(zl.media_type, LayerMediaType::Zstd);
    assert_eq!(zl.diff_id, Digest::of(&tar));
}

fn zstd_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = zstd::Encoder::new(&mut out, 3).unwrap();
    enc.write_all(b).unwrap();
    enc.finish().unwrap();
    out
}

#[test]
fn images_keep_the_history_invariant_and_read_like_docker_history() {
    let store = Store::temporary().unwrap();
    let l1 = add(&store, &[("bin/sh", b"#!")]);
    let l2 = add(&store, &[("app", b"app")]);
    let base = store
        .commit(
            ImageBuilder::new()
                .created("2024-01-01T00:00:00Z")
                .layer(l1, "COPY sh /bin/sh")
                .env("PATH", "/bin")
                .step("ENV PATH=/bin"),
        )
        .unwrap();
    let img = store
        .commit(
            ImageBuilder::from_image(&base)
                .created("2024-01-02T00:00:00Z")
                .layer(l2, "COPY app /app")
                .working_dir("/srv")
                .user("1000:1000")
                .expose("8080")
                .volume("/data")
                .label("org.example", "yes")
                .stop_signal("SIGINT")
                .cmd(["/app", "--serve"])
                .entrypoint(["/bin/sh", "-c"])
                .step("CMD /app --serve"),
        )
        .unwrap();
    assert_eq!(img.layers(), &[l1, l2]);
    assert_eq!(img.diff_ids(), vec![l1.diff_id, l2.diff_id]);
    assert_eq!(img.chain_ids()[0], l1.diff_id);
    assert_eq!(img.env_var("PATH"), Some("/bin"));
    assert_eq!(img.working_dir(), Some("/srv"));
    assert_eq!(img.user(), Some("1000:1000"));
    assert_eq!(img.exposed_ports(), vec!["8080/tcp"]);
    assert_eq!(img.volumes(), vec!["/data"]);
    assert_eq!(img.labels()["org.example"], "yes");
    assert_eq!(img.stop_signal(), Some("SIGINT"));
    assert_eq!(img.cmd(), ["/app", "--serve"]);
    assert_eq!(img.entrypoint(), ["/bin/sh", "-c"]);
    let h = img.history();
    assert_eq!(h.len(), 4);
    assert_eq!(h.iter().filter(|e| e.layer.is_some()).count(), 2);
    assert_eq!(h[2].layer, Some(l2));
    assert_eq!(h[1].layer, None);
    let table = img.history_table();
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("IMAGE"), "{table}");
    assert!(rows[1].starts_with(&img.id().hex()[..12]), "{table}");
    assert!(rows[1].contains("CMD /app --serve"), "{table}");
    assert!(
        rows[4].contains("COPY sh /bin/sh") && rows[4].starts_with("<missing>"),
        "{table}"
    );
    // The base is unchanged: images are immutable.
    assert_eq!(base.layers(), &[l1]);
    assert!(base.working_dir().is_none());
    // Reloading from the store gives the same image.
    let again = store.load(img.manifest_digest()).unwrap();
    assert_eq!(again.id(), img.id());
    assert_eq!(again.history(), img.history());
    // Same inputs, same digests.
    let twin = store
        .commit(
            ImageBuilder::new()
                .created("2024-01-01T00:00:00Z")
                .layer(l1, "COPY sh /bin/sh")
                .env("PATH", "/bin")
                .step("ENV PATH=/bin"),
        )
        .unwrap();
    assert_eq!(twin.manifest_digest(), base.manifest_digest());
    fn is_send_sync<T: Send + Sync + Clone>() {}
    is_send_sync::<Image>();
    is_send_sync::<Store>();
}

#[test]
fn the_invariant_is_enforced_at_construction() {
    let store = Store::temporary().unwrap();
    let l = add(&store, &[("f", b"f")]);
    let img = image_with(&store, &[l], "x");
    // A config whose history has an extra non-empty entry.
    let mut config = img.config().clone();
    let mut h = config.history().clone().unwrap();
    h.push(oci_spec::image::History::default());
    config.set_history(Some(h));
    let err = Image::from_documents(
        img.manifest_digest(),
        1,
        img.manifest().clone(),
        img.id(),
        config.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::LayerCount {
                layers: 1,
                diff_ids: 1,
                history: 2
            }
        ),
        "{err}"
    );
    // A config with a DiffID too many.
    let mut config = img.config().clone();
    config
        .rootfs_mut()
        .diff_ids_mut()
        .push(Digest::of(b"x").to_string());
    let err = Image::from_documents(
        img.manifest_digest(),
        1,
        img.manifest().clone(),
        img.id(),
        config,
    )
    .unwrap_err();
    assert!(
        matches!(err, ImageError::LayerCount { diff_ids: 2, .. }),
        "{err}"
    );
    // An unknown layer media type.
    let mut manifest = img.manifest().clone();
    let mut layers = manifest.layers().clone();
    layers[0].set_media_type(oci_spec::image::MediaType::Other(
        "application/x-weird".into(),
    ));
    manifest.set_layers(layers);
    let err = Image::from_documents(
        img.manifest_digest(),
        1,
        manifest,
        img.id(),
        img.config().clone(),
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::UnknownMediaType { .. }), "{err}");
    assert!(err.to_string().contains("application/x-weird"));
}

#[test]
fn tags_resolve_by_tag_id_prefix_and_digest() {
    let store = Store::temporary().unwrap();
    let l = add(&store, &[("f", b"1")]);
    let a = image_with(&store, &[l], "a");
    let b = image_with(&store, &[l], "b");
    assert_ne!(a.id(), b.id());
    store.tag(&a, "app:1").unwrap();
    store.tag(&a, "docker.io/library/app:stable").unwrap();
    store.tag(&b, "example.com/team/app").unwrap();
    assert_eq!(store.resolve("app:1").unwrap().id(), a.id());
    assert_eq!(store.resolve("app:stable").unwrap().id(), a.id());
    assert_eq!(
        store.resolve("example.com/team/app:latest").unwrap().id(),
        b.id()
    );
    assert_eq!(store.resolve(&a.id().to_string()).unwrap().id(), a.id());
    assert_eq!(store.resolve(&a.id().hex()[..12]).unwrap().id(), a.id());
    assert_eq!(
        store
            .resolve(&a.manifest_digest().to_string())
            .unwrap()
            .id(),
        a.id()
    );
    assert_eq!(
        store
            .resolve(&format!("app@{}", b.manifest_digest()))
            .unwrap()
            .id(),
        b.id()
    );
    assert!(matches!(
        store.resolve("app:2"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.resolve("Bad Name"),
        Err(StoreError::Reference(_))
    ));
    assert_eq!(store.tags_of(&a).unwrap(), vec!["app:1", "app:stable"]);
    // Moving a tag.
    store.tag(&b, "app:1").unwrap();
    assert_eq!(store.resolve("app:1").unwrap().id(), b.id());
    assert_eq!(store.tags_of(&a).unwrap(), vec!["app:stable"]);
    // Untagging the last tag leaves the image, dangling.
    store.untag("app:stable").unwrap();
    assert_eq!(store.tags_of(&a).unwrap(), Vec::<String>::new());
    assert_eq!(store.resolve(&a.id().hex()[..12]).unwrap().id(), a.id());
    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    let row_b = list.iter().find(|r| r.image.id() == b.id()).unwrap();
    assert_eq!(row_b.tags, vec!["app:1", "example.com/team/app:latest"]);
    assert_eq!(row_b.size, l.size);
    assert_eq!(row_b.created.as_deref(), Some("2024-01-01T00:00:00Z"));
    // Each manifest appears once untagged, never duplicated.
    let idx = index_json(&store);
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 3);
}

#[test]
fn ambiguous_prefix_is_an_error_naming_the_candidates() {
    let store = Store::temporary().unwrap();
    let l = add(&store, &[("f", b"1")]);
    let imgs: Vec<Image> = (0..17)
        .map(|i| image_with(&store, &[l], &i.to_string()))
        .collect();
    // 17 ids, 16 hex digits: two ids share their first digit.
    let first = |i: &Image| i.id().hex()[..1].to_owned();
    let shared = imgs
        .iter()
        .find(|a| imgs.iter().filter(|b| first(b) == first(a)).count() > 1)
        .map(first)
        .unwrap();
    let err = store.resolve(&format!("sha256:{shared}")).unwrap_err();
    match &err {
        StoreError::Ambiguous { candidates, .. } => {
            assert!(candidates.len() >= 2);
            // Ids or manifest digests with that prefix; every id with it is among them.
            for i in &imgs {
                let hit = i.id().hex().starts_with(&shared)
                    || i.manifest_digest().hex().starts_with(&shared);
                assert_eq!(candidates.contains(&i.id()), hit);
            }
        }
        e => panic!("{e:?}"),
    }
    assert!(err.to_string().contains("ambiguous"));
    let none = store
        .resolve(&format!("sha256:{}", "0".repeat(64)))
        .unwrap_err();
    assert!(matches!(none, StoreError::NotFound(_)), "{none:?}");
}

#[test]
fn holds_block_removal_and_remove_prune_gc_free_space() {
    let store = Store::temporary().unwrap();
    let base = add(&store, &[("base", &[1u8; 5000])]);
    let top = add(&store, &[("top", &[2u8; 3000])]);
    let a = image_with(&store, &[base], "a");
    let b = image_with(&store, &[base, top], "b");
    let dangling = image_with(&store, &[top], "dangling");
    store.tag(&a, "a:1").unwrap();
    store.tag(&a, "a:2").unwrap();
    store.tag(&b, "b:1").unwrap();
    store.hold(&b, "container-1").unwrap();
    store.hold(&b, "fixture").unwrap();

    let err = store.remove("b:1").unwrap_err();
    match &err {
        StoreError::Held { image, holds } => {
            assert_eq!(*image, b.manifest_digest());
            let names: Vec<_> = holds.iter().map(|h| h.name.as_str()).collect();
            assert_eq!(names, ["container-1", "fixture"]);
        }
        e => panic!("{e:?}"),
    }
    assert!(err.to_string().contains("container-1, fixture"), "{err}");
    // Holds persist across opens.
    let reopened = Store::open(store.root()).unwrap();
    assert_eq!(reopened.holds().unwrap().len(), 2);

    assert_eq!(
        store.remove("a:1").unwrap(),
        Removed::Untagged("a:1".into())
    );
    assert_eq!(store.prune().unwrap(), vec![dangling.manifest_digest()]);
    // prune-all spares the held image.
    assert_eq!(store.prune_all().unwrap(), vec![a.manifest_digest()]);
    let gc = store.gc().unwrap();
    // a's and dangling's config and manifest go; the layers stay (b uses both).
    assert_eq!(gc.blobs.len(), 4, "{gc:?}");
    assert!(gc.bytes > 0);
    assert!(store.has_blob(&base.digest) && store.has_blob(&top.digest));
    assert!(store.load(b.manifest_digest()).is_ok());

    assert!(store.release("container-1").unwrap());
    assert!(!store.release("container-1").unwrap());
    assert!(store.remove("b:1").is_err());
    store.release("fixture").unwrap();
    assert_eq!(
        store.remove("b:1").unwrap(),
        Removed::Deleted(b.manifest_digest())
    );
    let gc = store.gc().unwrap();
    let expected = base.size + top.size + b.manifest_size() + b.manifest().config().size();
    assert_eq!(gc.bytes, expected);
    assert_eq!(store.counts().unwrap(), (0, 0));
    assert_eq!(index_json(&store)["manifests"].as_array().unwrap().len(), 0);
}

/// umoci reads a tagged image of the store in place: the root is a real OCI image layout.
#[test]
fn umoci_unpacks_a_tagged_image_in_place() {
    let have = Command::new("umoci").arg("--version").output().is_ok();
    if !common::require(have, "umoci is not installed (apt-get install umoci)") {
        return;
    }
    let store = Store::temporary().unwrap();
    let l1 = store
        .add_layer(&gzip(&layer_tar(&[("etc/motd", b"welcome")]))[..])
        .unwrap()
        .layer;
    let l2 = add(&store, &[("app/run", b"#!/bin/sh")]);
    let img = image_with(&store, &[l1, l2], "umoci");
    store.tag(&img, "demo:v1").unwrap();
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("bundle");
    let res = Command::new("umoci")
        .args(["raw", "unpack", "--rootless", "--image"])
        .arg(format!("{}:demo:v1", store.oci_dir().display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(fs::read(bundle.join("etc/motd")).unwrap(), b"welcome");
    assert_eq!(fs::read(bundle.join("app/run")).unwrap(), b"#!/bin/sh");
}

/// Every file name under `blobs/sha256/`, sorted.
fn blob_names(store: &Store) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.oci_dir().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn gc_stops_when_a_manifest_cannot_be_read() {
    let store = Store::temporary().unwrap();
    let layer = add(&store, &[("kept", &[3u8; 4000])]);
    let image = image_with(&store, &[layer], "unreadable");
    molde_image::unpack::unpack(&store, &image).unwrap();
    // Something unreferenced, which a successful GC would free.
    store.ingest_blob(&b"loose"[..], None).unwrap();
    // Reading the manifest now fails with an I/O error (EISDIR), not a parse error.
    let manifest = store.layout().blob(&image.manifest_digest());
    fs::remove_file(&manifest).unwrap();
    fs::create_dir(&manifest).unwrap();
    let before = (blob_names(&store), store.counts().unwrap());

    let err = store.gc().unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&image.manifest_digest().hex()),
        "{err}"
    );
    assert_eq!((blob_names(&store), store.counts().unwrap()), before);
    assert!(store.has_blob(&layer.digest) && store.has_blob(&image.id()));
}

#[test]
fn gc_keeps_what_a_broken_image_names() {
    let store = Store::temporary().unwrap();
    let layer = add(&store, &[("kept", &[4u8; 4000])]);
    let image = image_with(&store, &[layer], "broken config");
    let loose = store.ingest_blob(&b"loose"[..], None).unwrap().digest;
    // The config is no longer JSON: the image cannot load, but its manifest names the
    // config and the layer, and GC keeps both.
    let config = store.layout().blob(&image.id());
    fs::remove_file(&config).unwrap();
    fs::write(&config, b"not json").unwrap();
    assert!(matches!(
        store.load(image.manifest_digest()),
        Err(StoreError::Json { .. })
    ));

    let gc = store.gc().unwrap();
    assert_eq!(gc.blobs, vec![loose]);
    assert!(store.has_blob(&image.manifest_digest()));
    assert!(store.has_blob(&image.id()));
    assert!(store.has_blob(&layer.digest));
}

#[test]
fn a_pinned_add_layer_and_commit_survives_a_concurrent_gc() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let store = Store::temporary().unwrap();
    let stop = AtomicBool::new(false);
    let (outcome, gc_runs) = std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let mut runs = 0u32;
            while !stop.load(Ordering::Relaxed) {
                store.gc().unwrap();
                runs += 1;
            }
            runs
        });
        let outcome = (0..60u32).try_for_each(|i| {
            let image = {
                let _pin = store.pin()?;
                let content = i.to_le_bytes().repeat(2000);
                let layer = store
                    .add_layer(&layer_tar(&[("fresh", &content)])[..])?
                    .layer;
                // Give the collector every chance to run between the two steps.
                std::thread::sleep(std::time::Duration::from_millis(1));
                store.commit(ImageBuilder::new().layer(layer, format!("step {i}")))?
            };
            // In the index now: GC keeps it without a pin, until it is removed.
            store.load(image.manifest_digest())?;
            store.remove(&image.manifest_digest().to_string())?;
            Ok::<_, StoreError>(())
        });
        stop.store(true, Ordering::Relaxed);
        (outcome, collector.join().unwrap())
    });
    outcome.unwrap();
    assert!(gc_runs > 0);
    store.gc().unwrap();
    assert_eq!(store.counts().unwrap(), (0, 0));
}
