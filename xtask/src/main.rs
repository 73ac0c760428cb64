//! molde's task runner.
//!
//! - `cargo xtask test`: installs the peer tools the tests use (apt-get, as root), then runs
//!   `cargo fmt --check`, `cargo clippy --all-targets -- -D warnings`, every test of the
//!   workspace with `MOLDE_REQUIRE_ALL=1` (a test that would skip for lack of a privilege or a
//!   tool fails instead), a bounded fuzz pass over layer apply, and the tour example.
//! - `cargo xtask bench`: installs the peers, then runs the benchmark suite (`benches/peers.rs`),
//!   which measures molde against them and writes docs/benchmarks.md.
//! - `cargo xtask fixtures`: the Debian images tests and benchmarks run (see [`fixtures`]);
//!   `test` and `bench` make them first (cached under `target/fixtures`).

mod fixtures;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Debian packages the tests use: peers whose output or input molde must match.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("tar", "tar"),
    ("zstd", "zstd"),
    ("unshare", "util-linux"),
    ("mkfs.ext4", "e2fsprogs"),
    ("setpriv", "util-linux"),
    ("perl", "perl"),
    ("awk", "mawk"),
    ("umoci", "umoci"),
    ("busybox", "busybox-static"),
    ("skopeo", "skopeo"),
    ("socat", "socat"),
    ("pasta", "passt"),
    ("buildah", "buildah"),
    ("docker-registry", "docker-registry"),
    ("htpasswd", "apache2-utils"),
    ("openssl", "openssl"),
    // The seccomp escape helper (container/tests/seccomp.rs), linked static.
    ("gcc", "gcc"),
    ("gcc", "libc6-dev"),
    ("newuidmap", "uidmap"),
    ("mmdebstrap", "mmdebstrap"),
    // Interoperability: the store's layout validated in place; exported bundles run.
    ("oci-image-tool", "oci-image-tool"),
    ("runc", "runc"),
    ("crun", "crun"),
    // The network tests compare `ip -o link` before and after, and add bridge ports by hand.
    ("ip", "iproute2"),
];

/// Debian packages the benchmarks compare against.
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("tar", "tar"),
    ("zstd", "zstd"),
    ("gzip", "gzip"),
    ("umoci", "umoci"),
    ("openssl", "openssl"),
    ("sha256sum", "coreutils"),
    ("unshare", "util-linux"),
    ("bwrap", "bubblewrap"),
    ("crun", "crun"),
    ("runc", "runc"),
    ("podman", "podman"),
    ("busybox", "busybox-static"),
    ("buildah", "buildah"),
    // The host's PostgreSQL 15: postgres-floor's peer.
    ("pg_ctlcluster", "postgresql-15"),
    ("setpriv", "util-linux"),
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("test-unprivileged") => unprivileged::run_tests(),
        Some("fixtures") => fixtures::make(&workspace_root()),
        Some("fuzz") => fuzz(&args[1..]),
        Some("soak") => soak(&args[1..]),
        Some("install") => install(TEST_PACKAGES).and_then(|()| install(BENCH_PACKAGES)),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 test   install the peer tools, then fmt, clippy, every test (MOLDE_REQUIRE_ALL=1), fuzz, tour\n  \
                 test-unprivileged  only the second pass of test: every test binary as molde-rootless\n  \
                 bench  install the peers, run the benchmark suite, write docs/benchmarks.md\n  \
                 fixtures  make the Debian test images (target/fixtures, cached)\n  \
                 fuzz   the fuzz targets, long (--cases N per property, default 2000; release)\n  \
                 soak   2000 container cycles on 4 threads with random SIGKILLs, then a leak check (--cycles N)\n  \
                 install  only install the Debian packages tests and benchmarks use"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

mod unprivileged;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Run `cmd`, echoing it and its duration; fail with its description if it fails.
fn run(what: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("\n==> {what}: {cmd:?}");
    let start = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start {cmd:?}: {e}"))?;
    eprintln!("<== {what}: {status} in {:.1?}", start.elapsed());
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn on_path(tool: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Install the packages whose tool is missing, with apt-get (needs root).
fn install(packages: &[(&str, &str)]) -> Result<(), String> {
    let mut missing: Vec<&str> = packages
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix_is_root() {
        return Err(format!(
            "these Debian packages are missing and installing them needs root: {}\n\
             run `sudo apt-get install -y {}` (or run this command as root)",
            missing.join(" "),
            missing.join(" ")
        ));
    }
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    if run("apt-get install", &mut install).is_err() {
        run("apt-get update", &mut apt(&["update", "-q"]))?;
        let mut again = apt(&["install", "-y", "--no-install-recommends"]);
        again.args(&missing);
        run("apt-get install", &mut again)?;
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // The effective uid, read without a libc dependency: /proc/self/status "Uid: r e s f".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn test(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    install(TEST_PACKAGES)?;
    fixtures::make(&workspace_root())?;
    if nix_is_root() {
        // The root pass's tests of rootless use (rootless_ids, network_rootless) run as it.
        unprivileged::ensure_user()?;
    }
    run("rustfmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "tests",
        cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .env("MOLDE_REQUIRE_ALL", "1")
            .env("MOLDE_FIXTURES", fixtures::dir(&workspace_root()))
            .env("RUST_BACKTRACE", "1"),
    )?;
    run(
        "harness async API (feature tokio)",
        cargo()
            .args([
                "test",
                "-p",
                "molde-harness",
                "--features",
                "tokio",
                "--test",
                "async_api",
            ])
            .env("MOLDE_REQUIRE_ALL", "1"),
    )?;
    if nix_is_root() {
        unprivileged::run_tests()?;
    }
    if !quick {
        // The launcher's and the lifecycle's tests again with every core busy: races that an
        // idle machine hides (a timeout reported as a plain kill) show here, not in users'
        // pipelines.
        let hogs = Hogs::start();
        let loaded = run(
            "container tests under load (a CPU hog per core)",
            cargo()
                .args(["test", "-p", "molde-container", "--no-fail-fast"])
                .args(LOADED_TESTS.iter().flat_map(|t| ["--test", t]))
                .env("MOLDE_REQUIRE_ALL", "1")
                .env("RUST_BACKTRACE", "1"),
        );
        drop(hogs);
        loaded?;
        // A longer, bounded fuzz pass over layer apply: random and mutated tars.
        run(
            "fuzz (apply, bounded)",
            cargo()
                .args([
                    "test",
                    "--release",
                    "-p",
                    "molde-layerfs",
                    "--test",
                    "apply_fuzz",
                ])
                .env("MOLDE_REQUIRE_ALL", "1")
                .env("PROPTEST_CASES", "2000"),
        )?;
    }
    run(
        "docs build",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // The private items' docs too: their links must resolve as well.
    run(
        "docs build (private items)",
        cargo()
            .args([
                "doc",
                "--workspace",
                "--no-deps",
                "--document-private-items",
            ])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    run("tour", cargo().args(["run", "--example", "tour"]))?;
    if nix_is_root() {
        tour_unprivileged()?;
    }
    eprintln!("\nall checks passed");
    Ok(())
}

/// The proptest fuzz targets of parsers of outside data: (package, test file).
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("molde-layerfs", "apply_fuzz"),
    ("molde-image", "archive_fuzz"),
    ("molde-container", "parsers_fuzz"),
    ("molde-registry", "responses_fuzz"),
];

/// `cargo xtask fuzz [--cases N]`: every fuzz target with N cases per property (default
/// 2000), in release mode. `cargo xtask test` runs them short, in its test pass. A failing
/// case is written to the target's `.proptest-regressions` file: commit it, and it is replayed
/// first by every later run.
fn fuzz(args: &[String]) -> Result<(), String> {
    let cases = match args {
        [] => "2000".to_owned(),
        [flag, n] if flag == "--cases" && n.parse::<u32>().is_ok() => n.clone(),
        _ => return Err("usage: cargo xtask fuzz [--cases N]".into()),
    };
    install(TEST_PACKAGES)?;
    for (package, target) in FUZZ_TARGETS {
        run(
            &format!("fuzz {target} ({cases} cases per property)"),
            cargo()
                .args(["test", "--release", "-p", package, "--test", target])
                .env("MOLDE_REQUIRE_ALL", "1")
                .env("PROPTEST_CASES", &cases),
        )?;
    }
    Ok(())
}

/// `cargo xtask soak [--cycles N]`: container/tests/soak.rs in release mode (as root): N
/// create/start/exec/stop/remove cycles (default 2000) across 4 threads, with random SIGKILLs
/// of containers and of a second process sharing the store; then mounts, cgroups, descriptors,
/// children and the store's containers must be as before, and the image must still run.
fn soak(args: &[String]) -> Result<(), String> {
    let cycles = match args {
        [] => "2000".to_owned(),
        [flag, n] if flag == "--cycles" && n.parse::<u32>().is_ok() => n.clone(),
        _ => return Err("usage: cargo xtask soak [--cycles N]".into()),
    };
    run(
        &format!("soak ({cycles} cycles)"),
        cargo()
            .args([
                "test",
                "--release",
                "-p",
                "molde-container",
                "--test",
                "soak",
            ])
            .args(["--", "--ignored", "--exact", "soak", "--nocapture"])
            .env("MOLDE_REQUIRE_ALL", "1")
            .env("MOLDE_SOAK_CYCLES", &cycles),
    )
}

/// The container test files run a second time under load by `cargo xtask test`.
const LOADED_TESTS: &[&str] = &[
    "launch",
    "lifecycle",
    "security",
    "capabilities",
    "seccomp",
    "namespaces_ahead",
    "forked",
    "cgroup",
];

/// Busy loops, one per core, each a shell that ends by itself after 30 minutes (should this
/// process die first) and is killed by its pid when dropped.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    fn start() -> Hogs {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let script = "end=$(( $(date +%s) + 1800 )); while [ $(date +%s) -lt $end ]; do \
                      i=0; while [ $i -lt 100000 ]; do i=$((i + 1)); done; done";
        let hogs = (0..cores)
            .filter_map(|_| {
                Command::new("sh")
                    .args(["-c", script])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| eprintln!("xtask: a CPU hog did not start: {e}"))
                    .ok()
            })
            .collect::<Vec<_>>();
        eprintln!(
            "\n==> {} CPU hogs: {:?}",
            hogs.len(),
            hogs.iter().map(|h| h.id()).collect::<Vec<_>>()
        );
        Hogs(hogs)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let _ = hog.kill();
            let _ = hog.wait();
        }
    }
}

/// Run the tour again as an unprivileged user (nobody), as a rootless user would: it must enter
/// a user namespace of its own and tell the same story.
fn tour_unprivileged() -> Result<(), String> {
    let exe = workspace_root().join("target/debug/examples/tour");
    // A copy nobody can reach: the checkout may sit under a directory only root can enter.
    let dir = env::temp_dir().join(format!("molde-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = dir.join("tour");
    std::fs::copy(&exe, &copy).map_err(|e| format!("copy {}: {e}", exe.display()))?;
    let result = (|| {
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [(&dir, 0o755), (&copy, 0o755)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        }
        run(
            "tour as an unprivileged user",
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&copy)
                .env("TMPDIR", env::temp_dir()),
        )
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(args: &[String]) -> Result<(), String> {
    install(BENCH_PACKAGES)?;
    install(&[("mmdebstrap", "mmdebstrap")])?;
    fixtures::make(&workspace_root())?;
    let mut cmd = cargo();
    cmd.env("MOLDE_FIXTURES", fixtures::dir(&workspace_root()));
    // `cargo xtask bench -- --only X` and `cargo xtask bench --only X` both work.
    let args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);
    cmd.args(["bench", "--package", "molde", "--bench", "peers", "--"])
        .args(args);
    run("benchmarks", &mut cmd)
}
