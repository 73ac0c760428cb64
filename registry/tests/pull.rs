//! Pull and push against a real `docker-registry` on 127.0.0.1 (plain HTTP, anonymous).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use molde_image::ImageBuilder;
use molde_registry::{
    LayerStatus, Progress, Pull, Push, PushedBlob, RegistriesConf, RegistryOptions,
};

fn events() -> (Arc<Mutex<Vec<Progress>>>, molde_registry::ProgressFn) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    (
        seen,
        Arc::new(move |p: &Progress| s.lock().unwrap().push(p.clone())),
    )
}

#[test]
fn push_then_pull_into_a_fresh_store_gives_the_same_image() {
    if !registry_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = tmp_store();
    let layers: Vec<Vec<u8>> = (0..3).map(|i| noise(i, 100_000 + i as usize)).collect();
    let image = image_of(&a, &layers, "demo:v1");
    let target = reg.reference("team/demo:v1");

    let pushed = Push::new(&a, "demo:v1", &target).run().unwrap();
    assert_eq!(pushed.digest, image.manifest_digest());
    assert!(pushed.blobs.iter().all(|(_, b)| *b == PushedBlob::Uploaded));
    assert_eq!(pushed.blobs.len(), 4, "3 layers and the config");
    // Again: the registry has every blob (HEAD), nothing is uploaded.
    let again = Push::new(&a, "demo:v1", &target).run().unwrap();
    assert!(
        again.blobs.iter().all(|(_, b)| *b == PushedBlob::Existed),
        "{again}"
    );
    assert_eq!(again.bytes_sent, 0);

    let b = tmp_store();
    let (seen, progress) = events();
    let report = Pull::new(&b, &target).progress(progress).run().unwrap();
    assert_eq!(report.manifest_digest, image.manifest_digest());
    assert_eq!(report.digest, image.manifest_digest());
    assert_eq!(report.image.manifest_digest(), image.manifest_digest());
    assert_eq!(report.image.id(), image.id());
    assert!(report.layers.iter().all(|l| !l.existed));
    let total: u64 = image.layers().iter().map(|l| l.size).sum();
    assert_eq!(report.bytes_fetched, total);
    assert!(report.newer);
    assert_eq!(b.resolve(&target).unwrap().id(), image.id());
    // Unpacked: every ChainID has its directory.
    for chain in image.chain_ids() {
        assert!(b.layout().layer(&chain).is_dir(), "{chain} not unpacked");
    }
    let seen = seen.lock().unwrap().clone();
    assert!(matches!(seen.first(), Some(Progress::Resolving { .. })));
    assert!(matches!(seen.last(), Some(Progress::Done { .. })));
    for (i, l) in image.layers().iter().enumerate() {
        let statuses: Vec<&LayerStatus> = seen
            .iter()
            .filter_map(|p| match p {
                Progress::Layer {
                    index,
                    digest,
                    status,
                } if *index == i => {
                    assert_eq!(*digest, l.digest);
                    Some(status)
                }
                _ => None,
            })
            .collect();
        assert!(
            matches!(statuses.first(), Some(LayerStatus::Waiting)),
            "{statuses:?}"
        );
        assert!(
            statuses
                .iter()
                .any(|s| matches!(s, LayerStatus::Downloading { done, total } if done == total)),
            "{statuses:?}"
        );
        assert!(statuses.contains(&&LayerStatus::Verifying), "{statuses:?}");
        assert_eq!(
            statuses.last(),
            Some(&&LayerStatus::PullComplete),
            "{statuses:?}"
        );
    }

    // A second pull: every layer already exists, nothing is fetched.
    let (seen, progress) = events();
    let second = Pull::new(&b, &target).progress(progress).run().unwrap();
    assert!(second.layers.iter().all(|l| l.existed));
    assert_eq!(second.bytes_fetched, 0);
    assert!(!second.newer);
    assert!(
        second.to_string().contains("Image is up to date for"),
        "{second}"
    );
    let exists = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|p| {
            matches!(
                p,
                Progress::Layer {
                    status: LayerStatus::AlreadyExists,
                    ..
                }
            )
        })
        .count();
    assert_eq!(exists, 3);
}

#[test]
fn shared_layers_are_not_fetched_again() {
    if !registry_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = tmp_store();
    let base: Vec<Vec<u8>> = (0..4).map(|i| noise(10 + i, 50_000)).collect();
    let mut more = base.clone();
    more.push(noise(99, 70_000));
    let one = image_of(&a, &base, "one:v1");
    let two = image_of(&a, &more, "two:v1");
    Push::new(&a, "one:v1", &reg.reference("one:v1"))
        .run()
        .unwrap();
    Push::new(&a, "two:v1", &reg.reference("two:v1"))
        .run()
        .unwrap();

    let b = tmp_store();
    Pull::new(&b, &reg.reference("one:v1")).run().unwrap();
    let report = Pull::new(&b, &reg.reference("two:v1")).run().unwrap();
    let existed: Vec<bool> = report.layers.iter().map(|l| l.existed).collect();
    assert_eq!(existed, [true, true, true, true, false]);
    assert_eq!(report.bytes_fetched, two.layers()[4].size);
    assert_eq!(report.image.manifest_digest(), two.manifest_digest());
    assert_eq!(one.layers()[..], two.layers()[..4]);
}

#[test]
fn a_layer_stored_plain_is_found_by_content_when_the_registry_has_it_gzipped() {
    if !registry_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = tmp_store();
    let bytes = vec![noise(7, 80_000)];
    let gz = image_of(&a, &bytes, "gz:v1");
    Push::new(&a, "gz:v1", &reg.reference("gz:v1"))
        .run()
        .unwrap();

    // The same tar, stored plain, with the same config.
    let c = tmp_store();
    let plain = c
        .add_layer(&layer_tar(&[("l0", bytes[0].as_slice())])[..])
        .unwrap()
        .layer;
    assert_eq!(plain.diff_id, gz.layers()[0].diff_id);
    c.commit(ImageBuilder::new().layer(plain, "ADD l0"))
        .unwrap();
    let blobs_before = c.counts().unwrap().0;

    let report = Pull::new(&c, &reg.reference("gz:v1")).run().unwrap();
    assert!(report.layers[0].existed);
    assert_eq!(report.bytes_fetched, 0);
    assert_eq!(report.layers[0].layer, plain);
    assert_eq!(report.image.id(), gz.id(), "same config");
    assert_eq!(
        report.digest,
        gz.manifest_digest(),
        "the registry's digest is reported"
    );
    assert!(!c.has_blob(&gz.layers()[0].digest));
    // The config and a manifest naming the plain blob.
    assert_eq!(c.counts().unwrap().0, blobs_before + 2);
}

#[test]
fn a_deduplicated_pull_records_the_registrys_digest_and_the_tag_as_a_fresh_one_does() {
    if !registry_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = tmp_store();
    let bytes = vec![noise(8, 60_000), noise(9, 40_000)];
    let gz = image_of(&a, &bytes, "dd:v1");
    let target = reg.reference("team/dd:v1");
    Push::new(&a, "dd:v1", &target).run().unwrap();
    let by_digest = format!("{}@{}", reg.reference("team/dd"), gz.manifest_digest());

    // A fresh pull: the stored manifest is the registry's, and the digest is recorded.
    let fresh = tmp_store();
    let report = Pull::new(&fresh, &target).run().unwrap();
    assert_eq!(
        fresh.repo_digests(&report.image).unwrap(),
        [by_digest.as_str()]
    );
    assert_eq!(fresh.resolve(&by_digest).unwrap().id(), gz.id());

    // Every layer already stored plain: the stored manifest names the plain blobs, so its
    // digest is not the registry's; the image still carries the registry's digest and tag.
    let c = tmp_store();
    let mut builder = ImageBuilder::new();
    for (i, b) in bytes.iter().enumerate() {
        let name = format!("l{i}");
        let plain = c
            .add_layer(&layer_tar(&[(name.as_str(), b.as_slice())])[..])
            .unwrap()
            .layer;
        builder = builder.layer(plain, format!("ADD {name}"));
    }
    let local = c.commit(builder).unwrap();
    assert!(c.resolve(&by_digest).is_err(), "not pulled yet");
    let report = Pull::new(&c, &target).run().unwrap();
    assert!(report.layers.iter().all(|l| l.existed));
    assert_eq!(report.bytes_fetched, 0);
    assert_ne!(report.image.manifest_digest(), gz.manifest_digest());
    assert_eq!(report.image.id(), gz.id());
    let tag = format!("{}/team/dd:v1", reg.addr);
    assert_eq!(c.tags_of(&report.image).unwrap(), [tag.as_str()]);
    assert_eq!(c.repo_digests(&report.image).unwrap(), [by_digest.as_str()]);
    for name in [&by_digest, &tag] {
        let found = c.resolve(name).unwrap();
        assert_eq!(
            found.manifest_digest(),
            report.image.manifest_digest(),
            "{name}"
        );
    }
    assert!(c.repo_digests(&local).unwrap().is_empty());

    // Pulled again (the image present): nothing changes, the names stay.
    let again = Pull::new(&c, &target).run().unwrap();
    assert!(!again.newer);
    assert_eq!(
        again.image.manifest_digest(),
        report.image.manifest_digest()
    );
    assert_eq!(c.repo_digests(&again.image).unwrap(), [by_digest.as_str()]);
    // By digest only: found by it, no tag added, the tag kept.
    let pinned = Pull::new(&c, &by_digest).run().unwrap();
    assert!(pinned.tag.is_none());
    assert_eq!(
        pinned.image.manifest_digest(),
        report.image.manifest_digest()
    );
    assert_eq!(c.tags_of(&pinned.image).unwrap(), [tag.as_str()]);
    // Untagged, the image stays, found by its repository digest; removed by it, it goes.
    c.untag(&tag).unwrap();
    assert_eq!(c.resolve(&by_digest).unwrap().id(), gz.id());
    c.remove(&by_digest).unwrap();
    assert!(c.resolve(&by_digest).is_err());
    assert!(
        c.resolve(&report.image.manifest_digest().to_string())
            .is_err()
    );
}

#[test]
fn a_digest_reference_pins_content_and_tags_nothing() {
    if !registry_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = tmp_store();
    let image = image_of(&a, &[noise(3, 1000)], "pin:v1");
    Push::new(&a, "pin:v1", &reg.reference("pin:v1"))
        .run()
        .unwrap();
    let b = tmp_store();
    let by_digest = format!("{}@{}", reg.reference("pin"), image.manifest_digest());
    // Declared plain HTTP (no HTTPS attempt first).
    let report = Pull::new(&b, &by_digest)
        .options(RegistryOptions::default().plain_http(reg.addr.clone()))
        .run()
        .unwrap();
    assert_eq!(report.image.manifest_digest(), image.manifest_digest());
    assert!(report.tag.is_none());
    assert!(b.tags_of(&report.image).unwrap().is_empty());
}

#[test]
fn two_pulls_of_one_image_at_once_store_one_copy_of_each_blob() {
    if !registry_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = tmp_store();
    let layers: Vec<Vec<u8>> = (0..4).map(|i| noise(20 + i, 300_000)).collect();
    let image = image_of(&a, &layers, "twice:v1");
    let target = reg.reference("twice:v1");
    Push::new(&a, "twice:v1", &target).run().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            // Each with a store of its own opened on the same root, as two processes would.
            let store = molde_image::Store::open(dir.path()).unwrap();
            let target = target.clone();
            std::thread::spawn(move || Pull::new(&store, &target).run().unwrap())
        })
        .collect();
    for p in pulls {
        assert_eq!(
            p.join().unwrap().image.manifest_digest(),
            image.manifest_digest()
        );
    }
    let store = molde_image::Store::open(dir.path()).unwrap();
    let (blobs, unpacked) = store.counts().unwrap();
    assert_eq!(
        blobs,
        4 + 2,
        "4 layers, the config and the manifest, once each"
    );
    assert_eq!(unpacked, 4);
    assert_eq!(std::fs::read_dir(store.layout().tmp()).unwrap().count(), 0);
}

#[test]
fn registries_conf_mirrors_and_search_registries_are_followed() {
    if !registry_or_skip() {
        return;
    }
    // The local registry plays docker.io's mirror (no network needed: docker.io itself is
    // never reached), after a mirror that refuses connections.
    let reg = Registry::start();
    let source = tmp_store();
    let image = image_of(&source, &[noise(5, 20_000)], "app:v1");
    for repo in ["library/molde-mirrored:1", "team/app:1"] {
        Push::new(&source, "app:v1", &reg.reference(repo))
            .run()
            .unwrap();
    }
    let addr = &reg.addr;
    let options = |conf: &str| {
        let conf = RegistriesConf::parse("test registries.conf", conf).unwrap();
        RegistryOptions::default()
            .registries_conf(conf)
            .retries(1, std::time::Duration::from_millis(10))
    };
    let mirrored = options(&format!(
        "[[registry]]\nlocation = \"docker.io\"\n\
         [[registry.mirror]]\nlocation = \"127.0.0.1:1/nothing\"\n\
         [[registry.mirror]]\nlocation = \"{addr}\"\n"
    ));
    let store = tmp_store();
    let report = Pull::new(&store, "molde-mirrored:1")
        .options(mirrored)
        .run()
        .unwrap();
    assert_eq!(report.source, format!("{addr}/library/molde-mirrored:1"));
    assert_eq!(report.tag.unwrap().to_string(), "molde-mirrored:1");
    assert_eq!(report.image.id(), image.id());
    assert_eq!(store.resolve("molde-mirrored:1").unwrap().id(), image.id());

    // A short name, looked for in each search registry in turn.
    let searched = options(&format!(
        "unqualified-search-registries = [\"127.0.0.1:1\", \"{addr}\"]\n"
    ));
    let report = Pull::new(&store, "team/app:1")
        .options(searched)
        .run()
        .unwrap();
    assert_eq!(report.source, format!("{addr}/team/app:1"));
    assert_eq!(
        report.tag.unwrap().to_string(),
        format!("{addr}/team/app:1")
    );
    assert_eq!(report.bytes_fetched, 0, "the layer is in the store already");

    // A blocked registry is refused before anything is asked of it.
    let blocked = options(&format!(
        "[[registry]]\nlocation = \"{addr}\"\nblocked = true\n"
    ));
    let e = Pull::new(&store, &reg.reference("team/app:1"))
        .options(blocked)
        .run()
        .unwrap_err();
    assert!(e.to_string().contains("blocked"), "{e}");
}

#[test]
fn pulls_run_from_inside_a_tokio_runtime_both_ways() {
    if !registry_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = tmp_store();
    let image = image_of(&a, &[noise(21, 30_000), noise(22, 30_000)], "rt:v1");
    Push::new(&a, "rt:v1", &reg.reference("rt:v1"))
        .run()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (b, c) = (tmp_store(), tmp_store());
    let r = reg.reference("rt:v1");
    let (sync, on_callers) = rt.block_on(async {
        // The sync API from async code (its own runtime, in a thread of its own), then the
        // async one on this runtime.
        let sync = Pull::new(&b, &r).run();
        let on_callers = Pull::new(&c, &r).run_async().await;
        (sync, on_callers)
    });
    assert_eq!(sync.unwrap().image.id(), image.id());
    assert_eq!(on_callers.unwrap().image.id(), image.id());
    for store in [&b, &c] {
        let pulled = store.resolve(&r).unwrap();
        assert!(molde_image::unpack::unpack(store, &pulled).unwrap()[1].existed);
    }
}
