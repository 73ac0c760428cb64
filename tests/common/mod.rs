//! Helpers shared by the facade's interoperability tests (include with `mod common;`).
#![allow(dead_code)]

use std::process::Command;

/// Whether a test that needs `ok` (a privilege, a tool) can run: when not, the test is skipped
/// with a line saying why, unless `MOLDE_REQUIRE_ALL=1` (set by `cargo xtask test`), in which
/// case the missing requirement fails the test.
pub fn require(ok: bool, why: &str) -> bool {
    if !ok && std::env::var_os("MOLDE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("MOLDE_REQUIRE_ALL=1 and this test cannot run: {why}");
    }
    if !ok {
        eprintln!("skipping: {why}");
    }
    ok
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Run a tool; its stdout, or a panic with its stdout and stderr.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
