//! The second pass of `cargo xtask test`: every test binary again, as an unprivileged user
//! with subordinate id ranges, as a rootless user of molde would run them.
//!
//! The user ([`USER`]) is made if missing (`useradd -m`, which on Debian gives it a range in
//! `/etc/subuid` and `/etc/subgid`; one is added with `usermod` where it did not). The test
//! binaries built by the root pass are copied where the user can run them and run with the
//! package's directory as their working directory, as `cargo test` does.
//!
//! What needs root skips there, saying why: `MOLDE_REQUIRE_ALL` is left unset in this pass
//! (the root pass, which has it, proved every tool present). Tests that are about rootless
//! use (`launch_rootless`, `rootless_ids`, the tour) already run as an unprivileged user from
//! the root pass, with `MOLDE_REQUIRE_ALL=1`.

use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The unprivileged user the tests run as.
pub const USER: &str = "molde-rootless";

/// Make [`USER`] with subordinate ranges, if missing.
pub fn ensure_user() -> Result<(), String> {
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        super::run(
            "useradd",
            Command::new("useradd").args(["-m", "-s", "/bin/sh", USER]),
        )?;
    }
    let has = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{USER}:")))
    };
    if !has("/etc/subuid") || !has("/etc/subgid") {
        super::run(
            "usermod (subordinate ids)",
            Command::new("usermod").args([
                "--add-subuids",
                "300000-365535",
                "--add-subgids",
                "300000-365535",
                USER,
            ]),
        )?;
    }
    Ok(())
}

/// One test binary: its path and the directory of its package.
struct TestBinary {
    exe: PathBuf,
    package_dir: PathBuf,
}

/// The test binaries of the workspace (built, not run), from cargo's JSON messages.
fn test_binaries() -> Result<Vec<TestBinary>, String> {
    let out = super::cargo()
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .output()
        .map_err(|e| format!("cargo test --no-run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo test --no-run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(manifest)) =
            (msg["executable"].as_str(), msg["manifest_path"].as_str())
        else {
            continue;
        };
        if msg["profile"]["test"].as_bool() != Some(true) {
            continue;
        }
        found.push(TestBinary {
            exe: exe.into(),
            package_dir: Path::new(manifest)
                .parent()
                .unwrap_or(Path::new("/"))
                .to_owned(),
        });
    }
    found.sort_by(|a, b| a.exe.cmp(&b.exe));
    Ok(found)
}

/// Give others the right to traverse (not list) every directory above `path`, so the user
/// reaches the checkout (a test reads its data from there). Says what it changed.
fn make_reachable(path: &Path) -> Result<(), String> {
    for dir in path.ancestors() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            eprintln!(
                "    (chmod o+x {}: the test user must reach the checkout)",
                dir.display()
            );
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
                .map_err(|e| format!("chmod o+x {}: {e}", dir.display()))?;
        }
    }
    Ok(())
}

/// Run every test binary as [`USER`]; fails if any test fails.
pub fn run_tests() -> Result<(), String> {
    ensure_user()?;
    let binaries = test_binaries()?;
    make_reachable(&super::workspace_root())?;
    let dir = env::temp_dir().join(format!("molde-unprivileged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_all(&binaries, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_all(binaries: &[TestBinary], dir: &Path) -> Result<(), String> {
    let chmod = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", p.display()))
    };
    chmod(dir, 0o755)?;
    let home = format!("/home/{USER}");
    let start = Instant::now();
    let mut failed = Vec::new();
    for (i, b) in binaries.iter().enumerate() {
        let name = b.exe.file_name().unwrap_or_default();
        let copy = dir.join(format!("{i}-{}", name.to_string_lossy()));
        std::fs::copy(&b.exe, &copy).map_err(|e| format!("copy {}: {e}", b.exe.display()))?;
        chmod(&copy, 0o755)?;
        let what = format!("{} as {USER}", name.to_string_lossy());
        let status = super::run(
            &what,
            Command::new("setpriv")
                .arg(format!("--reuid={USER}"))
                .arg(format!("--regid={USER}"))
                .arg("--init-groups")
                .arg(&copy)
                .env_clear()
                .env("HOME", &home)
                .env("TMPDIR", "/tmp")
                .env("RUST_BACKTRACE", "1")
                .env("PATH", env::var_os("PATH").unwrap_or_default())
                .current_dir(&b.package_dir),
        );
        if status.is_err() {
            failed.push(what);
        }
        let _ = std::fs::remove_file(&copy);
    }
    eprintln!(
        "<== unprivileged pass: {} binaries in {:.1?}",
        binaries.len(),
        start.elapsed()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed as {USER}: {}", failed.join(", ")))
    }
}
