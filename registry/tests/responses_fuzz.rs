//! Fuzzing what a registry answers (issue 11), through molde-registry's own code paths: a
//! pull from the stand-in of `common::standin`, whose answers proptest generates at random
//! and by mutating valid ones:
//!
//! - manifests: OCI manifest and index, Docker schema 2 manifest and manifest list, schema 1,
//!   unknown media types, oversized ones (past [`MAX_MANIFEST`]), random bytes, each under
//!   any of the content types registries send;
//! - token answers: the `WWW-Authenticate` challenge of `/v2/` and the token server's JSON;
//! - error bodies: the registry's JSON `errors` array, HTML pages, empty and huge bodies, for
//!   every status a registry sends.
//!
//! Whatever the answer, a pull must not panic, must end Ok or in a typed error that names the
//! reference (and stays readable: a few KiB, not a copy of a huge body), and a failed pull
//! must tag nothing. Cases per property: `PROPTEST_CASES` (default 32: about 50 s in all at
//! load 12 on 2 cores); `cargo xtask fuzz` runs many more in release mode. A failing case
//! proptest finds is kept in `responses_fuzz.proptest-regressions` and replayed first from
//! then on.

mod common;
#[path = "../../image/tests/mutate/mod.rs"]
mod mutate;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::standin::{Reply, Request, Server, serve};
use common::*;
use molde_image::{Image, Store};
use molde_registry::{MAX_MANIFEST, Pull, PullReport, RegistryError, RegistryOptions};
use mutate::{ByteOp, JsonOp, apply, byte_op, json_op, mutate_json};
use proptest::prelude::*;
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The content types a manifest may come under.
const CONTENT_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    SCHEMA1,
    "application/json",
    "text/html",
    "application/octet-stream",
    "",
];

/// The largest error message accepted: a registry's words, not a copy of its page.
const MAX_MESSAGE: usize = 8 << 10;

/// The image the stand-in serves, and its manifest in every spelling.
struct Seed {
    source: Store,
    image: Image,
    /// The valid documents: (what, JSON).
    documents: Vec<(&'static str, Value)>,
}

fn seed() -> &'static Seed {
    static SEED: OnceLock<Seed> = OnceLock::new();
    SEED.get_or_init(|| {
        let source = tmp_store();
        let image = image_of(&source, &[noise(7, 2000)], "app:v1");
        let md = image.manifest_digest();
        let bytes = std::fs::read(source.layout().blob(&md)).unwrap();
        let oci: Value = serde_json::from_slice(&bytes).unwrap();
        let mut docker = oci.clone();
        docker["mediaType"] = json!(DOCKER_MANIFEST);
        docker["config"]["mediaType"] = json!("application/vnd.docker.container.image.v1+json");
        for l in docker["layers"].as_array_mut().unwrap() {
            l["mediaType"] = json!("application/vnd.docker.image.rootfs.diff.tar.gzip");
        }
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let index = |index_type: &str, manifest_type: &str| {
            json!({
                "schemaVersion": 2,
                "mediaType": index_type,
                "manifests": [
                    {"mediaType": manifest_type, "digest": md.to_string(), "size": bytes.len(),
                     "platform": {"architecture": "s390x", "os": "linux"}},
                    {"mediaType": manifest_type, "digest": md.to_string(), "size": bytes.len(),
                     "platform": {"architecture": arch, "os": "linux"}}
                ]
            })
        };
        let schema1 = json!({
            "schemaVersion": 1, "name": "test/app", "tag": "v1", "architecture": arch,
            "fsLayers": [{"blobSum": image.layers()[0].digest.to_string()}],
            "history": [{"v1Compatibility": "{\"id\":\"x\"}"}],
            "signatures": [{"header": {"alg": "ES256"}, "signature": "x", "protected": "y"}]
        });
        let mut unknown = oci.clone();
        unknown["mediaType"] = json!("application/vnd.example.thing.v1+json");
        let documents = vec![
            ("oci manifest", oci),
            ("docker manifest", docker),
            ("oci index", index(OCI_INDEX, OCI_MANIFEST)),
            ("docker list", index(DOCKER_LIST, DOCKER_MANIFEST)),
            ("schema 1", schema1),
            ("unknown media type", unknown),
        ];
        Seed {
            source,
            image,
            documents,
        }
    })
}

fn fast() -> RegistryOptions {
    RegistryOptions::default().retries(2, Duration::from_millis(5))
}

fn reference(server: &Server) -> String {
    format!("{}/test/app:v1", server.addr)
}

/// Pull from `server` into a fresh store: Ok, or a typed error naming the reference, of a
/// readable size, with nothing tagged.
fn pull_checked(server: &Server) -> Result<PullReport, RegistryError> {
    let store = tmp_store();
    let reference = reference(server);
    let result = Pull::new(&store, &reference).options(fast()).run();
    match &result {
        Ok(report) => assert_eq!(store.list().unwrap().len(), 1, "{report:?}"),
        Err(e) => {
            // A panic inside the transfer comes back as a Task error: a defect, not an answer.
            assert!(!matches!(e, RegistryError::Task { .. }), "{e}");
            let text = e.to_string();
            assert!(
                text.contains("test/app:v1"),
                "the reference is named: {text}"
            );
            assert!(text.len() < MAX_MESSAGE, "{} bytes of error", text.len());
            assert!(
                store.list().unwrap().is_empty(),
                "a failed pull ({e}) tagged"
            );
        }
    }
    result
}

/// A manifest body: a valid document mutated as JSON or as bytes, random bytes, or a valid
/// one padded past the limit.
#[derive(Debug, Clone)]
enum Body {
    Json(usize, Vec<JsonOp>),
    Bytes(usize, Vec<ByteOp>),
    Random(Vec<u8>),
    Oversized(usize, usize),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => (any::<usize>(), prop::collection::vec(json_op(), 0..3))
            .prop_map(|(d, ops)| Body::Json(d, ops)),
        3 => (any::<usize>(), prop::collection::vec(byte_op(), 1..4))
            .prop_map(|(d, ops)| Body::Bytes(d, ops)),
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Body::Random),
        1 => (any::<usize>(), 1..65536usize).prop_map(|(d, n)| Body::Oversized(d, n)),
    ]
}

fn render(body: &Body) -> Vec<u8> {
    let docs = &seed().documents;
    match body {
        Body::Json(d, ops) => {
            let mut doc = docs[d % docs.len()].1.clone();
            for op in ops {
                mutate_json(&mut doc, op);
            }
            serde_json::to_vec(&doc).unwrap()
        }
        Body::Bytes(d, ops) => apply(&serde_json::to_vec(&docs[d % docs.len()].1).unwrap(), ops),
        Body::Random(bytes) => bytes.clone(),
        Body::Oversized(d, extra) => {
            let mut doc = docs[d % docs.len()].1.clone();
            let pad = "a".repeat(MAX_MANIFEST as usize + extra);
            doc["annotations"] = json!({ "pad": pad });
            serde_json::to_vec(&doc).unwrap()
        }
    }
}

/// Serve `body` under `content_type` for the tag (manifests by digest stay the real one).
fn serve_manifest(body: Vec<u8>, content_type: &str) -> Server {
    let s = seed();
    let ctype = content_type.to_owned();
    serve(
        &s.source,
        &s.image,
        Arc::new(move |req: &Request, _| {
            (req.path == "/v2/test/app/manifests/v1").then(|| {
                Reply::With(
                    200,
                    vec![("Content-Type".into(), ctype.clone())],
                    body.clone(),
                )
            })
        }),
    )
}

/// A token exchange: the challenge `/v2/` and every unauthorised request get, and the
/// token server's answer.
#[derive(Debug, Clone)]
struct Exchange {
    challenge: Challenge,
    token_status: u16,
    token: Body,
}

#[derive(Debug, Clone)]
enum Challenge {
    /// The valid challenge with a few of its bytes changed (to other visible ASCII).
    Mutated(Vec<(usize, u8)>),
    /// Any header-safe text.
    Text(String),
}

/// The valid challenge; `{realm}` is the stand-in's address.
const CHALLENGE: &str =
    r#"Bearer realm="http://{realm}/token",service="stand-in",scope="repository:test/app:pull""#;

fn exchange() -> impl Strategy<Value = Exchange> {
    let challenge = prop_oneof![
        3 => prop::collection::vec((any::<usize>(), 0x20..0x7fu8), 0..3).prop_map(Challenge::Mutated),
        1 => prop_oneof![
            Just("Basic realm=\"stand-in\"".to_owned()),
            Just("Bearer".to_owned()),
            Just("Bearer realm=\"\"".to_owned()),
            Just("Bearer realm=\"http://127.0.0.1:1/token\"".to_owned()),
            Just("Bearer realm=\"file:///etc/passwd\"".to_owned()),
            Just("Bearer realm=http://{realm}/token,,,service=".to_owned()),
            "[ -~]{0,80}",
        ].prop_map(Challenge::Text),
    ];
    let token = prop_oneof![
        3 => prop::collection::vec(json_op(), 0..3).prop_map(|ops| Body::Json(usize::MAX, ops)),
        1 => prop::collection::vec(byte_op(), 1..4).prop_map(|ops| Body::Bytes(usize::MAX, ops)),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Body::Random),
        // Tokens no HTTP header can carry.
        1 => prop::sample::select(vec!["t\nk", "t\u{0}k", "t\rk\u{7f}", "\u{e9}t\u{2028}"])
            .prop_map(|t| Body::Random(serde_json::to_vec(&json!({ "token": t })).unwrap())),
    ];
    (
        challenge,
        prop::sample::select(vec![200u16, 200, 200, 401, 403, 500]),
        token,
    )
        .prop_map(|(challenge, token_status, token)| Exchange {
            challenge,
            token_status,
            token,
        })
}

fn valid_token() -> Value {
    json!({"token": "t0k3n", "access_token": "t0k3n", "expires_in": 300,
           "issued_at": "2026-01-01T00:00:00Z"})
}

fn render_token(body: &Body) -> Vec<u8> {
    match body {
        Body::Json(_, ops) => {
            let mut doc = valid_token();
            for op in ops {
                mutate_json(&mut doc, op);
            }
            serde_json::to_vec(&doc).unwrap()
        }
        Body::Bytes(_, ops) => apply(&serde_json::to_vec(&valid_token()).unwrap(), ops),
        Body::Random(b) => b.clone(),
        // Not generated for tokens: the valid answer.
        Body::Oversized(..) => serde_json::to_vec(&valid_token()).unwrap(),
    }
}

fn render_challenge(c: &Challenge) -> String {
    match c {
        Challenge::Mutated(edits) => {
            let mut b = CHALLENGE.as_bytes().to_vec();
            for (i, v) in edits {
                let i = i % b.len();
                b[i] = *v;
            }
            String::from_utf8(b).unwrap()
        }
        Challenge::Text(t) => t.clone(),
    }
}

/// Serve the image behind a token server: `/v2/` and every request without the token get
/// a 401 with the challenge; `/token` answers as `exchange` says.
fn serve_with_tokens(exchange: &Exchange) -> Server {
    let s = seed();
    let addr: Arc<OnceLock<String>> = Arc::default();
    let a = Arc::clone(&addr);
    let challenge = render_challenge(&exchange.challenge);
    let token = render_token(&exchange.token);
    let status = exchange.token_status;
    let server = serve(
        &s.source,
        &s.image,
        Arc::new(move |req: &Request, _| {
            let addr = a.get().map(String::as_str).unwrap_or("127.0.0.1:1");
            if req.path.starts_with("/token") {
                let json = vec![("Content-Type".into(), "application/json".into())];
                return Some(Reply::With(status, json, token.clone()));
            }
            let authorised = req.authorization.as_deref() == Some("Bearer t0k3n");
            (req.path == "/v2/" || !authorised).then(|| {
                let header = challenge.replace("{realm}", addr);
                Reply::With(
                    401,
                    vec![
                        ("WWW-Authenticate".into(), header),
                        ("Content-Type".into(), "application/json".into()),
                    ],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                        .to_vec(),
                )
            })
        }),
    );
    addr.set(server.addr.clone()).unwrap();
    server
}

/// An error answer: a status and a body of some kind.
#[derive(Debug, Clone)]
struct ErrorAnswer {
    status: u16,
    content_type: &'static str,
    body: ErrorBody,
}

#[derive(Debug, Clone)]
enum ErrorBody {
    /// The registry's `errors` array, mutated.
    Errors(Vec<JsonOp>),
    Html,
    Empty,
    /// Junk of this many bytes.
    Huge(usize),
    Random(Vec<u8>),
}

fn error_answer() -> impl Strategy<Value = ErrorAnswer> {
    let body = prop_oneof![
        4 => prop::collection::vec(json_op(), 0..3).prop_map(ErrorBody::Errors),
        1 => Just(ErrorBody::Html),
        1 => Just(ErrorBody::Empty),
        1 => prop::sample::select(vec![64 << 10, 1 << 20, 6 << 20]).prop_map(ErrorBody::Huge),
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(ErrorBody::Random),
    ];
    (
        prop::sample::select(vec![400u16, 401, 403, 404, 405, 409, 429, 500, 502, 503]),
        prop::sample::select(vec!["application/json", "text/html", "text/plain", ""]),
        body,
    )
        .prop_map(|(status, content_type, body)| ErrorAnswer {
            status,
            content_type,
            body,
        })
}

fn render_error(body: &ErrorBody) -> Vec<u8> {
    match body {
        ErrorBody::Errors(ops) => {
            let mut doc = json!({"errors": [
                {"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                 "detail": {"Tag": "v1"}},
                {"code": "DENIED", "message": "requested access to the resource is denied"}
            ]});
            for op in ops {
                mutate_json(&mut doc, op);
            }
            serde_json::to_vec(&doc).unwrap()
        }
        ErrorBody::Html => {
            b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center>\
              <h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>"
                .to_vec()
        }
        ErrorBody::Empty => Vec::new(),
        ErrorBody::Huge(n) => b"<p>gateway error</p>\n".repeat(n / 20),
        ErrorBody::Random(b) => b.clone(),
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32)
}

proptest! {
    // Findings are kept beside this file and replayed first.
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn manifests(body in body(), content_type in prop::sample::select(CONTENT_TYPES)) {
        let bytes = render(&body);
        let oversized = bytes.len() as u64 > MAX_MANIFEST;
        let server = serve_manifest(bytes, content_type);
        let result = pull_checked(&server);
        if oversized {
            prop_assert!(
                matches!(result, Err(RegistryError::TooLarge { .. })),
                "{:?}", result.map(|r| r.digest)
            );
        }
    }

    #[test]
    fn token_answers(exchange in exchange()) {
        let server = serve_with_tokens(&exchange);
        let _ = pull_checked(&server);
    }

    #[test]
    fn error_bodies(answer in error_answer()) {
        let body = render_error(&answer.body);
        let (status, ctype) = (answer.status, answer.content_type);
        let s = seed();
        let server = serve(
            &s.source,
            &s.image,
            Arc::new(move |req: &Request, _| {
                req.path.contains("/manifests/").then(|| {
                    Reply::With(status, vec![("Content-Type".into(), ctype.into())], body.clone())
                })
            }),
        );
        match pull_checked(&server) {
            // oci-client keeps no status for a 4xx whose body is an `errors` array: molde
            // takes it from the first error's code (`MANIFEST_UNKNOWN` is a 404...).
            Err(RegistryError::Status { status: s, .. }) if status < 500 => {
                prop_assert!((400..500).contains(&s), "{} answered, {} reported", status, s)
            }
            Err(RegistryError::Status { status: s, .. }) => prop_assert_eq!(s, status),
            other => prop_assert!(false, "expected Status {}, got {:?}", status, other.err()),
        }
    }
}

/// The generators' starting points are valid: each document as served pulls (or is refused
/// as it should be), and the token exchange as a registry does it pulls.
#[test]
fn the_seeds_pull_or_are_refused_as_they_should_be() {
    for (what, doc) in &seed().documents {
        let server = serve_manifest(serde_json::to_vec(doc).unwrap(), OCI_MANIFEST);
        let result = pull_checked(&server);
        match *what {
            "schema 1" => assert!(
                matches!(result, Err(RegistryError::SchemaV1 { .. })),
                "{what}: {:?}",
                result.err()
            ),
            "unknown media type" => assert!(
                matches!(result, Err(RegistryError::UnsupportedMediaType { .. })),
                "{what}: {:?}",
                result.err()
            ),
            _ => assert!(result.is_ok(), "{what}: {:?}", result.err()),
        }
    }
    let valid = Exchange {
        challenge: Challenge::Mutated(Vec::new()),
        token_status: 200,
        token: Body::Json(0, Vec::new()),
    };
    let server = serve_with_tokens(&valid);
    pull_checked(&server).unwrap();
    let tokens = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p, _)| p.starts_with("/token"))
        .count();
    assert!(tokens >= 1, "the token server was asked");
}

/// A token server's answer with a token no HTTP header can carry (oci-client's request builder
/// panics on it): a typed error naming the reference, not a panic.
#[test]
fn a_token_no_header_can_carry_is_a_typed_error() {
    let exchange = Exchange {
        challenge: Challenge::Mutated(Vec::new()),
        token_status: 200,
        token: Body::Random(br#"{"token":"t\nk"}"#.to_vec()),
    };
    let server = serve_with_tokens(&exchange);
    match pull_checked(&server) {
        Err(RegistryError::Invalid { reason, .. }) => {
            assert!(reason.contains("cannot use"), "{reason}")
        }
        other => panic!("expected Invalid, got {:?}", other.map(|r| r.digest)),
    }
}
