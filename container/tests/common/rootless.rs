//! Tests that run as an unprivileged user, started from a root run: as root, the test runs
//! itself again (this binary, copied where the user can run it, through setpriv) as [`USER`]
//! (made by `cargo xtask test` with subordinate ranges; `useradd -m molde-rootless` on Debian
//! gives one) or as nobody (no range), with `MOLDE_REQUIRE_ALL=1`, and must pass there. Run
//! directly as that user (the xtask's unprivileged pass), it runs directly.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use molde_layerfs::idmap::IdMaps;

/// The unprivileged user with subordinate ranges the tests run as.
pub const USER: &str = "molde-rootless";
/// The unprivileged user without subordinate ranges.
pub const NOBODY: u32 = 65534;
/// Set for the run as [`USER`] or nobody (so that it does not try to switch again).
const INNER_ENV: &str = "MOLDE_TEST_AS_USER";

/// Whether this run is the one that does the work (as an unprivileged user); as root, runs
/// this test again as [`USER`] and returns false.
pub fn as_unprivileged_user(test: &str) -> bool {
    if !super::privileged() {
        return super::require(
            IdMaps::subordinate_for_current_process().is_some(),
            "needs subordinate ids for this user in /etc/subuid and /etc/subgid, and newuidmap \
             (apt-get install uidmap; usermod --add-subuids 100000-165535 --add-subgids \
             100000-165535 $USER)",
        );
    }
    if std::env::var_os(INNER_ENV).is_some() {
        panic!("still root after switching to {USER}");
    }
    let user = nix::unistd::User::from_name(USER).ok().flatten();
    if !super::require(
        user.is_some() && super::have_tool("setpriv"),
        "needs the user molde-rootless with subordinate ranges and setpriv (cargo xtask test \
         makes it: useradd -m molde-rootless)",
    ) {
        return false;
    }
    let user = user.unwrap();
    let groups = "--init-groups".to_owned();
    run_as(
        test,
        user.uid.as_raw(),
        user.gid.as_raw(),
        &groups,
        &user.dir,
    );
    false
}

/// Run `test` of this binary again as `uid`:`gid` (through setpriv), with
/// `MOLDE_REQUIRE_ALL=1`; it must pass.
fn run_as(test: &str, uid: u32, gid: u32, groups: &str, home: &Path) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir
        .path()
        .join(std::env::current_exe().unwrap().file_name().unwrap());
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(groups)
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(INNER_ENV, "1")
        .env("HOME", home)
        .env("TMPDIR", "/tmp")
        .env("MOLDE_REQUIRE_ALL", "1")
        .current_dir("/")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "as {uid}: {text}");
    assert!(text.contains("1 passed"), "the inner test ran: {text}");
}

/// Whether this run is the one that does the work, as `nobody` (no subordinate range); as
/// root, runs this test again as nobody and returns false. Run directly as another
/// unprivileged user (the xtask's second pass), it skips: that user may have ranges.
pub fn as_nobody(test: &str) -> bool {
    if std::env::var_os(INNER_ENV).is_some() {
        assert!(!super::privileged(), "still root after switching to nobody");
        return true;
    }
    if !super::require(
        super::privileged(),
        "runs as nobody, started from a root run",
    ) {
        return false;
    }
    if !super::require(super::have_tool("setpriv"), "needs setpriv(1)") {
        return false;
    }
    run_as(test, NOBODY, NOBODY, "--clear-groups", Path::new("/"));
    false
}
