//! Faults a real registry cannot be made to show, from a tiny stand-in HTTP server: wrong
//! bytes, truncation (resumed with a range request), 429 and 5xx (retried), 401/403/404
//! with the registry's message, a refused connection, an oversized, schema 1 or unknown
//! manifest. Each is a typed error naming the reference, and a failed pull tags nothing and
//! leaves no partial blob. The stand-in itself is `common::standin`.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::standin::{Gate, Reply, Request, Server, serve};
use common::*;
use molde_image::{Image, Store};
use molde_registry::{MAX_MANIFEST, Pull, PullReport, RegistryError, RegistryOptions};

struct Fixture {
    source: Store,
    image: Image,
}

fn fixture() -> Fixture {
    let source = tmp_store();
    let image = image_of(&source, &[noise(42, 300_000)], "app:v1");
    Fixture { source, image }
}

fn fast() -> RegistryOptions {
    RegistryOptions::default().retries(3, Duration::from_millis(10))
}

fn pull(server: &Server, store: &Store) -> Result<PullReport, RegistryError> {
    Pull::new(store, &format!("{}/test/app:v1", server.addr))
        .options(fast())
        .run()
}

/// A failed pull: nothing tagged, no temp file left.
fn assert_nothing_tagged(store: &Store) {
    assert!(store.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(store.layout().tmp()).unwrap().count(), 0);
}

fn layer_path(f: &Fixture) -> String {
    format!("/v2/test/app/blobs/{}", f.image.layers()[0].digest)
}

#[test]
fn a_blob_with_wrong_bytes_is_refused_naming_both_digests() {
    let f = fixture();
    let layer = f.image.layers()[0];
    let path = layer_path(&f);
    let server = serve(
        &f.source,
        &f.image,
        Arc::new(move |req: &Request, _| {
            (req.path == path).then(|| {
                let mut bytes = noise(1, layer.size as usize);
                bytes[0] = 0x1f; // looks gzip to nobody: same length, other content
                Reply::Send(200, "application/octet-stream", bytes)
            })
        }),
    );
    let store = tmp_store();
    let e = pull(&server, &store).unwrap_err();
    match &e {
        RegistryError::DigestMismatch { expected, .. } => assert_eq!(*expected, layer.digest),
        other => panic!("expected DigestMismatch, got {other}"),
    }
    assert!(e.to_string().contains("test/app:v1"), "{e}");
    assert!(!store.has_blob(&layer.digest));
    assert_nothing_tagged(&store);
}

#[test]
fn a_truncated_download_resumes_with_a_range_request() {
    let f = fixture();
    let path = layer_path(&f);
    let p = path.clone();
    let body = std::fs::read(f.source.layout().blob(&f.image.layers()[0].digest)).unwrap();
    let server = serve(
        &f.source,
        &f.image,
        Arc::new(move |req: &Request, n| {
            (req.path == p && req.method == "GET" && n == 0)
                .then(|| Reply::Cut(body.clone(), 100_000))
        }),
    );
    let store = tmp_store();
    let report = pull(&server, &store).unwrap();
    assert_eq!(report.image.manifest_digest(), f.image.manifest_digest());
    let gets: Vec<Option<u64>> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| m == "GET" && *p == path)
        .map(|(_, _, r)| *r)
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[1], Some(100_000), "resumed where it broke: {gets:?}");
}

#[test]
fn a_download_that_keeps_breaking_is_a_typed_error_and_leaves_nothing() {
    let f = fixture();
    let path = layer_path(&f);
    let body = std::fs::read(f.source.layout().blob(&f.image.layers()[0].digest)).unwrap();
    let server = serve(
        &f.source,
        &f.image,
        Arc::new(move |req: &Request, _| {
            (req.path == path).then(|| Reply::Cut(body.clone(), 1000))
        }),
    );
    let store = tmp_store();
    let e = pull(&server, &store).unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Truncated { .. } | RegistryError::Connection { .. }
        ),
        "{e}"
    );
    assert_nothing_tagged(&store);
}

#[test]
fn too_many_requests_and_server_errors_are_retried_then_reported() {
    let f = fixture();
    let path = layer_path(&f);
    let busy = |code: u16| {
        Reply::Send(
            code,
            "application/json",
            format!(
                r#"{{"errors":[{{"code":"TOOMANYREQUESTS","message":"slow down ({code})"}}]}}"#
            )
            .into_bytes(),
        )
    };
    // Twice 429, then served: the pull succeeds.
    let p = path.clone();
    let server = serve(
        &f.source,
        &f.image,
        Arc::new(move |req: &Request, n| (req.path == p && n < 2).then(|| busy(429))),
    );
    pull(&server, &tmp_store()).unwrap();
    // Always 503: reported after the attempts, with the registry's message.
    let p = path.clone();
    let server = serve(
        &f.source,
        &f.image,
        Arc::new(move |req: &Request, _| {
            (req.path == p).then(|| Reply::Send(503, "text/plain", b"maintenance window".to_vec()))
        }),
    );
    let store = tmp_store();
    let e = pull(&server, &store).unwrap_err();
    match &e {
        RegistryError::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 503);
            assert!(message.contains("maintenance window"), "{e}");
        }
        other => panic!("expected Status 503, got {other}"),
    }
    let tries = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p, _)| *p == path)
        .count();
    assert_eq!(tries, 3, "three attempts");
    assert_nothing_tagged(&store);
    // Always 429.
    let server = serve(
        &f.source,
        &f.image,
        Arc::new(move |req: &Request, _| req.path.contains("/manifests/").then(|| busy(429))),
    );
    let e = pull(&server, &tmp_store()).unwrap_err();
    assert!(
        matches!(e, RegistryError::Status { status: 429, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("slow down"), "{e}");
}

#[test]
fn client_errors_name_the_reference_and_carry_the_registry_message() {
    let f = fixture();
    for (code, json_code, status) in [
        (404, "MANIFEST_UNKNOWN", 404),
        (403, "DENIED", 403),
        (401, "UNAUTHORIZED", 401),
    ] {
        let server = serve(
            &f.source,
            &f.image,
            Arc::new(move |req: &Request, _| {
                req.path.contains("/manifests/").then(|| {
                    Reply::Send(
                        code,
                        "application/json",
                        format!(r#"{{"errors":[{{"code":"{json_code}","message":"said the registry"}}]}}"#)
                            .into_bytes(),
                    )
                })
            }),
        );
        let e = pull(&server, &tmp_store()).unwrap_err();
        match &e {
            RegistryError::Status {
                status: s,
                reference,
                ..
            } => {
                assert_eq!(*s, status, "{e}");
                assert!(reference.contains("test/app:v1"), "{e}");
            }
            other => panic!("{code}: expected Status, got {other}"),
        }
        // oci-client keeps no body of a 401 (it says which URL refused).
        if status != 401 {
            assert!(e.to_string().contains("said the registry"), "{e}");
        }
    }
}

#[test]
fn a_refused_connection_is_a_connection_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = tmp_store();
    let e = Pull::new(&store, &format!("127.0.0.1:{port}/x:1"))
        .options(fast())
        .run()
        .unwrap_err();
    assert!(matches!(e, RegistryError::Connection { .. }), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn bad_manifests_are_refused_saying_what_they_are() {
    let f = fixture();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            br#"{"schemaVersion":1,"name":"test/app","tag":"v1","fsLayers":[]}"#.to_vec(),
            "schema 1",
        ),
        (
            br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json"}"#.to_vec(),
            "application/vnd.example.thing+json",
        ),
        (
            {
                let mut big = br#"{"schemaVersion":2,"annotations":{"x":""#.to_vec();
                big.extend(std::iter::repeat_n(b'a', MAX_MANIFEST as usize + 10));
                big.extend(br#""}}"#);
                big
            },
            "more than the 4194304 bytes accepted",
        ),
    ];
    for (body, says) in cases {
        let server = serve(
            &f.source,
            &f.image,
            Arc::new(move |req: &Request, _| {
                req.path
                    .contains("/manifests/")
                    .then(|| Reply::Send(200, "application/json", body.clone()))
            }),
        );
        let e = pull(&server, &tmp_store()).unwrap_err();
        assert!(e.to_string().contains(says), "{says}: {e}");
        assert!(
            matches!(
                e,
                RegistryError::SchemaV1 { .. }
                    | RegistryError::UnsupportedMediaType { .. }
                    | RegistryError::TooLarge { .. }
            ),
            "{e}"
        );
    }
}

#[test]
fn a_pull_that_failed_half_way_reuses_the_layers_it_completed() {
    let source = tmp_store();
    let image = image_of(&source, &[noise(1, 50_000), noise(2, 60_000)], "app:v1");
    let second = format!("/v2/test/app/blobs/{}", image.layers()[1].digest);
    let fail = Arc::new(AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let (fl, h) = (Arc::clone(&fail), Arc::clone(&hits));
    let first = format!("/v2/test/app/blobs/{}", image.layers()[0].digest);
    let server = serve(
        &source,
        &image,
        Arc::new(move |req: &Request, _| {
            if req.path == first && req.method == "GET" {
                h.fetch_add(1, Ordering::Relaxed);
            }
            (req.path == second && fl.load(Ordering::Relaxed))
                .then(|| Reply::Send(500, "text/plain", b"broken".to_vec()))
        }),
    );
    let store = tmp_store();
    pull(&server, &store).unwrap_err();
    assert_nothing_tagged(&store);
    assert!(
        store.has_blob(&image.layers()[0].digest),
        "the completed layer is kept"
    );
    fail.store(false, Ordering::Relaxed);
    let report = pull(&server, &store).unwrap();
    assert!(report.layers[0].existed);
    assert!(!report.layers[1].existed);
    assert_eq!(
        hits.load(Ordering::Relaxed),
        1,
        "the first layer was fetched once"
    );
}

#[test]
fn a_layer_is_unpacked_while_it_downloads_and_appears_once_verified() {
    let source = tmp_store();
    let image = image_of(&source, &[noise(3, 5 << 20)], "app:v1");
    let layer = image.layers()[0];
    let path = format!("/v2/test/app/blobs/{}", layer.digest);
    let body = std::fs::read(source.layout().blob(&layer.digest)).unwrap();
    let gate = Gate::default();
    let g = gate.clone();
    let server = serve(
        &source,
        &image,
        Arc::new(move |req: &Request, _| {
            (req.path == path && req.method == "GET")
                .then(|| Reply::Hold(body.clone(), 3 << 20, g.clone()))
        }),
    );
    let store = tmp_store();
    let reference = format!("{}/test/app:v1", server.addr);
    let s = store.clone();
    let pulling = std::thread::spawn(move || Pull::new(&s, &reference).options(fast()).run());
    // Three of the five MiB sent: the file is being written into the layer's staging
    // directory, while neither the blob nor the unpacked layer is in the store.
    let chain = layer.diff_id;
    let layers_dir = store.layout().layers();
    let mut seen = 0;
    for _ in 0..2000 {
        seen = std::fs::read_dir(&layers_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .filter_map(|e| std::fs::metadata(e.path().join("l0")).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        if seen >= 1 << 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let visible_early = store.has_blob(&layer.digest) || store.layout().layer(&chain).exists();
    gate.open();
    let report = pulling.join().unwrap().unwrap();
    assert!(
        seen >= 1 << 20,
        "unpacked while downloading: {seen} bytes of l0 staged"
    );
    assert!(
        !visible_early,
        "blob or layer visible before the download ended"
    );
    assert_eq!(report.bytes_fetched, layer.size);
    let unpacked = store.layout().layer(&chain).join("l0");
    assert_eq!(std::fs::read(unpacked).unwrap(), noise(3, 5 << 20));
}
