//! `molde::probe()` against what this host really does: as root, and as `nobody` (no
//! subordinate ranges), whose missing features must name the setting or package to fix.

use std::os::unix::fs::PermissionsExt;

use molde::Support;

/// Set for the run as nobody.
const INNER_ENV: &str = "MOLDE_TEST_PROBE_INNER";

fn require(ok: bool, why: &str) -> bool {
    if !ok && std::env::var_os("MOLDE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("MOLDE_REQUIRE_ALL=1 and this test cannot run: {why}");
    }
    if !ok {
        eprintln!("skipping: {why}");
    }
    ok
}

#[test]
fn the_probe_agrees_with_this_process() {
    let p = molde::probe();
    println!("{p}");
    assert_eq!(p.privileged, molde::layerfs::privilege::is_privileged());
    assert_eq!(
        p.landlock.is_available(),
        molde::container::landlock::abi().is_ok(),
        "{p}"
    );
    // Whether containers can run follows the user namespaces' answer.
    assert_eq!(
        p.user_namespaces.is_available(),
        molde::containers_supported().is_ok(),
        "{p}"
    );
    if p.privileged {
        for s in [&p.user_namespaces, &p.subordinate_ids, &p.cgroups] {
            assert!(s.is_available(), "{p}");
        }
    }
    if let Support::Missing { why, fix } = &p.subordinate_ids {
        assert!(!why.is_empty() && fix.contains("usermod"), "{p}");
    }
    // The maps containers get agree with the subordinate answer.
    if !p.privileged {
        assert_eq!(
            p.subordinate_ids.is_available(),
            molde::layerfs::idmap::IdMaps::subordinate_for_current_process().is_some()
        );
    }
}

/// As nobody (no range in /etc/subuid), on this host: user namespaces and overlay in one
/// work, subordinate ids do not and the answer says how to add them.
#[test]
fn as_nobody_the_missing_ranges_are_named() {
    if std::env::var_os(INNER_ENV).is_some() {
        let p = molde::probe();
        println!("{p}");
        assert!(!p.privileged);
        assert!(p.user_namespaces.is_available(), "{p}");
        assert!(p.overlay.is_available(), "{p}");
        match &p.subordinate_ids {
            Support::Missing { why, fix } => {
                assert!(why.contains("/etc/subuid"), "{why}");
                assert!(fix.contains("usermod --add-subuids"), "{fix}");
            }
            other => panic!("nobody has no range here: {other}"),
        }
        return;
    }
    let ok = molde::layerfs::privilege::is_privileged()
        && std::path::Path::new("/usr/bin/setpriv").exists()
        && std::path::Path::new("/usr/bin/newuidmap").exists();
    if !require(
        ok,
        "needs root, setpriv and newuidmap (uidmap) to probe as nobody",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("probe");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A process another test thread forked while the copy's descriptor was open holds it
    // until that process execs; meanwhile an exec of the file fails with ETXTBSY.
    for _ in 0..500 {
        match std::process::Command::new(&exe)
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .status()
        {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => break,
        }
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "as_nobody_the_missing_ranges_are_named",
            "--exact",
            "--nocapture",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", "/tmp")
        .env(INNER_ENV, "1")
        .current_dir("/")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}
