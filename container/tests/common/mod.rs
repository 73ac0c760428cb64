//! Helpers shared by the integration tests (include with `mod common;`).
#![allow(dead_code)]

/// Whether a test that needs `ok` (a privilege, a kernel feature, a tool) can run.
///
/// When `ok` is false the test is skipped with a line saying why, unless `MOLDE_REQUIRE_ALL=1`
/// (set by `cargo xtask test`), in which case the missing requirement fails the test.
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

/// Whether this process is root in the initial user namespace (can mount, mknod, chown).
pub fn privileged() -> bool {
    molde_layerfs::privilege::is_privileged()
}

/// Whether containers of images can run here: as root, or as a user with subordinate id
/// ranges (xtask's unprivileged pass), whose containers get those ranges through
/// newuidmap/newgidmap. Skips (or fails under `MOLDE_REQUIRE_ALL=1`) saying why otherwise.
pub fn containers_or_skip() -> bool {
    require(
        privileged() || molde_layerfs::idmap::IdMaps::subordinate_for_current_process().is_some(),
        "needs root, or a user with subordinate id ranges, to run containers",
    )
}

/// Whether `tool` is on PATH.
pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}
pub mod busybox;
pub mod rootless;
pub mod web;
