//! Registries with the real tools: skopeo puts an image into a real `docker-registry`, molde
//! pulls it and runs it; molde pushes, skopeo pulls and the DiffIDs match; a multi-platform
//! index resolves to the platform asked for.

#[path = "../registry/tests/common/mod.rs"]
mod common;

use std::path::Path;

use common::*;
use molde::container::Container;
use molde::image::archive::{ImportOptions, oci};
use molde::image::{Store, base};
use molde::registry::{Platform, Pull, Push, RegistryError};

fn skopeo_copy(from: &str, to: &str) {
    skopeo(&[
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--src-tls-verify=false",
        from,
        to,
    ]);
}

fn busybox_image(store: &Store) -> molde::image::Image {
    let bb = base::static_busybox().expect("busybox-static");
    let image = base::from_host(store, &[bb.as_path()]).unwrap();
    store.tag(&image, "bb:1").unwrap();
    image
}

fn tools_or_skip() -> bool {
    registry_or_skip()
        && require(have("skopeo"), "skopeo is not installed")
        && require(
            base::static_busybox().is_some(),
            "busybox-static is not installed",
        )
}

#[test]
fn an_image_skopeo_pushed_is_pulled_and_runs() {
    if !tools_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = Store::temporary().unwrap();
    let image = busybox_image(&a);
    let dir = tempfile::tempdir().unwrap();
    oci::export_dir(&a, &["bb:1"], dir.path()).unwrap();
    let target = reg.reference("tools/busybox:1");
    skopeo_copy(
        &format!("oci:{}:bb:1", dir.path().display()),
        &format!("docker://{target}"),
    );

    let b = Store::temporary().unwrap();
    let report = Pull::new(&b, &target).run().unwrap();
    assert_eq!(report.image.diff_ids(), image.diff_ids());
    assert_eq!(report.image.id(), image.id());
    if molde::containers_supported_or_skip() {
        let bb = base::static_busybox().unwrap();
        let out = Container::builder(&b, &report.image)
            .command(bb.as_os_str())
            .args(["echo", "pulled and running"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "pulled and running"
        );
    }
    // Into the store that has the layer as a plain tar: skopeo gzip'd it, so the registry's
    // blob differs, but the content is the store's: nothing is fetched.
    let again = Pull::new(&a, &target).run().unwrap();
    assert!(again.layers.iter().all(|l| l.existed), "{again}");
    assert_eq!(again.bytes_fetched, 0);
    assert_eq!(again.image.layers(), image.layers());
}

fn diff_ids_of_layout(dir: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        let hex = d.strip_prefix("sha256:").unwrap();
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap(),
        )
        .unwrap()
    };
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_image_molde_pushed_is_pulled_by_skopeo() {
    if !tools_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = Store::temporary().unwrap();
    let image = busybox_image(&a);
    let target = reg.reference("mine/busybox:v1");
    let report = Push::new(&a, "bb:1", &target).run().unwrap();
    assert_eq!(report.digest, image.manifest_digest());
    let out = tempfile::tempdir().unwrap();
    skopeo_copy(
        &format!("docker://{target}"),
        &format!("oci:{}:v1", out.path().display()),
    );
    let ids: Vec<String> = image.diff_ids().iter().map(|d| d.to_string()).collect();
    assert_eq!(diff_ids_of_layout(out.path()), ids);
    // And skopeo's copy is importable again, same image id.
    let b = Store::temporary().unwrap();
    let imported = oci::import_dir(&b, out.path(), &ImportOptions::default()).unwrap();
    assert_eq!(imported.images[0].image.id(), image.id());
}

/// An OCI layout whose index.json names a multi-platform index of two images (amd64 and
/// arm64), copied into the registry with `skopeo copy --all`.
#[test]
fn a_multi_platform_index_resolves_to_the_platform_asked_for() {
    if !tools_or_skip() {
        return;
    }
    let reg = Registry::start();
    let a = Store::temporary().unwrap();
    let amd = image_of(&a, &[noise(1, 2000)], "p:amd64");
    let arm = image_of(&a, &[noise(2, 3000)], "p:arm64");
    let dir = tempfile::tempdir().unwrap();
    oci::export_dir(&a, &["p:amd64", "p:arm64"], dir.path()).unwrap();
    let entry = |i: &molde::image::Image, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": i.manifest_digest().to_string(),
            "size": i.manifest_size(),
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&amd, "amd64"), entry(&arm, "arm64")],
    }))
    .unwrap();
    let nd = molde::layerfs::Digest::of(&nested);
    std::fs::write(dir.path().join("blobs/sha256").join(nd.hex()), &nested).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": nd.to_string(),
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    std::fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&top).unwrap(),
    )
    .unwrap();
    let target = reg.reference("multi:v1");
    skopeo(&[
        "--insecure-policy",
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", dir.path().display()),
        &format!("docker://{target}"),
    ]);

    for (platform, want) in [("linux/amd64", &amd), ("linux/arm64", &arm)] {
        let b = Store::temporary().unwrap();
        let report = Pull::new(&b, &target)
            .platform(platform.parse().unwrap())
            .run()
            .unwrap();
        assert_eq!(report.manifest_digest, want.manifest_digest(), "{platform}");
        assert_eq!(report.digest, nd, "the index's digest is reported");
    }
    let b = Store::temporary().unwrap();
    let e = Pull::new(&b, &target)
        .platform(Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        })
        .run()
        .unwrap_err();
    match &e {
        RegistryError::NoPlatform { available, .. } => {
            assert_eq!(available, &["linux/amd64", "linux/arm64"], "{e}")
        }
        other => panic!("expected NoPlatform, got {other}"),
    }
    assert!(b.list().unwrap().is_empty(), "a failed pull tags nothing");
}
