//! Helpers shared by the harness integration tests (include with `mod common;`).

/// Whether a test that needs `ok` (a privilege, a tool) can run: when not, the test is skipped
/// with a line saying why, unless `MOLDE_REQUIRE_ALL=1` (set by `cargo xtask test`), in which
/// case the missing requirement fails the test.
pub fn require(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("MOLDE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("MOLDE_REQUIRE_ALL=1 and this test cannot run: {why}");
    }
    eprintln!("skipping: {why}");
    false
}
