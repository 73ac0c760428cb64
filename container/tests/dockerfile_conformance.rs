//! The Dockerfile parser against BuildKit's own parser test data
//! (`frontend/dockerfile/parser/testfiles*` of github.com/moby/buildkit, copied as data under
//! `tests/data/buildkit-parser`): every case's parse, dumped in BuildKit's format, must equal
//! its `result` file, and every negative case must fail.

use std::fs;
use std::path::Path;

use molde_container::build::dockerfile::syntax;

fn cases(dir: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/buildkit-parser")
        .join(dir);
    let mut v: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn every_buildkit_case_parses_as_buildkit_does() {
    let dirs = cases("testfiles");
    assert!(dirs.len() >= 30, "the test data are missing: {dirs:?}");
    let mut failures = Vec::new();
    for dir in &dirs {
        let text = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let want = fs::read_to_string(dir.join("result")).unwrap();
        match syntax::parse(&text) {
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
            Ok(p) => {
                let got: String = p
                    .nodes
                    .iter()
                    .map(|n| format!("({})\n", n.dump()))
                    .collect();
                if got != want {
                    failures.push(format!(
                        "{}:\n--- want\n{want}--- got\n{got}",
                        dir.display()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn every_buildkit_negative_case_fails() {
    let dirs = cases("testfiles-negative");
    assert!(dirs.len() >= 4);
    for dir in dirs {
        let text = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        assert!(syntax::parse(&text).is_err(), "{} parsed", dir.display());
    }
}
