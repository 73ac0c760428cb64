//! Fuzzing the container crate's parsers of outside data with proptest (issue 11): the
//! Dockerfile frontend (text made of instruction fragments, quoting, escapes, heredocs,
//! substitutions, and raw bytes) and container records read back from disk (a real record
//! mutated as JSON and as bytes). Whatever the input: no panic, and a bad one is a typed error.
//!
//! Cases per property: `PROPTEST_CASES` (default 64; `cargo xtask fuzz` runs many more in
//! release mode). Findings are kept in `parsers_fuzz.proptest-regressions`.

mod common;
#[path = "../../image/tests/mutate/mod.rs"]
mod mutate;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use molde_container::Container;
use molde_container::build::dockerfile::Dockerfile;
use molde_image::Store;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

/// Pieces of Dockerfiles: keywords, flags, quoting, escapes, substitutions, heredocs.
const PIECES: &[&str] = &[
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "EXPOSE",
    "CMD",
    "ENTRYPOINT",
    "LABEL",
    "VOLUME",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "ONBUILD",
    "SHELL",
    "MAINTAINER",
    "AS",
    "scratch",
    "base:1",
    "--from=0",
    "--chown=1:1",
    "--chmod=755",
    "--mount=type=cache,target=/c",
    "--mount=type=secret,id=s",
    "--network=none",
    "--platform=$BUILDPLATFORM",
    "--link",
    "--exclude=*.md",
    "--parents",
    "--interval=1s",
    "NONE",
    "[",
    "]",
    "[\"/bin/sh\", \"-c\"]",
    "[\"a\",",
    "\"",
    "'",
    "\\",
    "\\\n",
    "`",
    "$",
    "${A}",
    "${A:-x}",
    "${A:+y}",
    "${A?err}",
    "${A#*/}",
    "${A%%.*}",
    "${",
    "}",
    "$$",
    "=",
    "A=b",
    "A=\"b c\"",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "EOF",
    "# syntax=docker/dockerfile:1",
    "# escape=`",
    "#",
    "0",
    "-1",
    "65536",
    "80/tcp",
    "1-65535/udp",
    "SIGKILL",
    "/",
    "..",
    "../..",
    "/etc/passwd",
    "*",
    "**",
    "?",
    "\t",
    " ",
    "\n",
    "\r\n",
    "\u{0}",
    "é",
    "\u{feff}",
];

fn dockerfile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(
            prop_oneof![
                8 => prop::sample::select(PIECES).prop_map(str::to_owned),
                1 => "[ -~]{0,12}",
            ],
            0..60,
        )
        .prop_map(|v| v.join(" ")),
        1 => prop::collection::vec(any::<char>(), 0..200).prop_map(String::from_iter),
    ]
}

fn context() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("file"), "x").unwrap();
        std::fs::write(d.path().join(".dockerignore"), "*.md\n!keep.md\n**/tmp\n").unwrap();
        d
    })
    .path()
}

/// A store and an image to make containers from, one per test (tests run in parallel, and
/// listing a store clears what another thread is half-way through making).
struct Base {
    _dir: tempfile::TempDir,
    store: Store,
    image: molde_image::Image,
}

fn base(cell: &'static OnceLock<Option<Base>>) -> Option<&'static Base> {
    cell.get_or_init(|| {
        if !common::require(common::privileged(), "needs root to create containers") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let image =
            molde_container::image::base::from_host(&store, &[Path::new("/bin/true")]).unwrap();
        Some(Base {
            _dir: dir,
            store,
            image,
        })
    })
    .as_ref()
}

/// A new container (created: its record on disk), its id and record path and bytes.
fn new_record(base: &Base) -> (String, PathBuf, Vec<u8>) {
    let c = Container::builder(&base.store, &base.image)
        .env("A", "b")
        .mount_tmpfs("/scratch", Some(1 << 20))
        .create()
        .unwrap();
    let id = c.keep();
    let record = base
        ._dir
        .path()
        .join("store/molde/containers")
        .join(&id)
        .join("record.json");
    let bytes = std::fs::read(&record).unwrap();
    (id, record, bytes)
}

fn nasty_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!("")),
        Just(serde_json::json!("../../..")),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!({"Volume": {"name": "../x", "target": "/", "read_only": 1}})),
        "[ -~]{0,24}".prop_map(Value::String),
    ]
}

/// Write `bytes` as the record of a new container and read it back every way a user can: no
/// panic, errors typed; a record that is complete JSON (understood or not) never costs the
/// container its directory (its writable layer). Then the container goes.
fn read_back(base: &Base, bytes: impl FnOnce(&[u8]) -> Vec<u8>) {
    let (id, record, original) = new_record(base);
    let bytes = bytes(&original);
    std::fs::write(&record, &bytes).unwrap();
    let _ = Container::list(&base.store).map(|l| l.len());
    let opened = Container::open(&base.store, &id);
    if let Err(e) = &opened {
        assert!(!e.to_string().is_empty());
    }
    let complete = serde_json::from_slice::<Value>(&bytes).is_ok();
    let dir = record.parent().unwrap();
    assert!(
        !complete || dir.exists(),
        "a complete record that does not parse cost the container its directory"
    );
    drop(opened);
    if dir.exists() {
        std::fs::write(&record, &original).unwrap();
        if let Ok(c) = Container::open(&base.store, &id) {
            c.remove().unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn dockerfile_frontend(text in dockerfile_text()) {
        if let Ok(df) = Dockerfile::parse(&text, context(), &[("A", "1")]) {
            let store = Store::temporary().unwrap();
            let _ = df.into_build(&store);
        }
    }

    #[test]
    fn container_record_as_json(
        ops in prop::collection::vec((prop::collection::vec(any::<usize>(), 0..5), nasty_value()), 1..4),
    ) {
        static BASE: OnceLock<Option<Base>> = OnceLock::new();
        let Some(base) = base(&BASE) else { return Ok(()) };
        read_back(base, |original| {
            let mut doc: Value = serde_json::from_slice(original).unwrap();
            for (path, value) in &ops {
                mutate::replace_at(&mut doc, path, false, value);
            }
            serde_json::to_vec(&doc).unwrap()
        });
    }

    #[test]
    fn container_record_as_bytes(
        flips in prop::collection::vec((any::<usize>(), 1..=255u8), 0..8),
        cut in any::<usize>(),
    ) {
        static BASE: OnceLock<Option<Base>> = OnceLock::new();
        let Some(base) = base(&BASE) else { return Ok(()) };
        read_back(base, |original| {
            let mut bytes = original.to_vec();
            for &(i, m) in &flips {
                let i = i % bytes.len();
                bytes[i] ^= m;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            bytes
        });
    }
}
