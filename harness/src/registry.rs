//! [`LocalRegistry`]: a real registry (`docker-registry`, Debian's build of the CNCF
//! distribution) on 127.0.0.1, serving a directory: tests pull their images from it as users
//! pull theirs. `cargo xtask fixtures` pushes the fixture images into
//! `target/fixtures/registry`; [`fixture_reference`] serves that directory (read-only, one
//! registry per test process) and names an image of it by digest.

use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The repository the fixture images are pushed under: `<addr>/molde-fixtures/<name>`.
pub const FIXTURE_REPOSITORY: &str = "molde-fixtures";

/// How long a registry may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a local registry could not serve.
#[derive(Debug, thiserror::Error)]
pub enum LocalRegistryError {
    /// `docker-registry` could not be run.
    #[error("starting docker-registry: {0} (install the Debian package docker-registry)")]
    Spawn(#[source] std::io::Error),
    /// It ended, or did not listen in time.
    #[error("docker-registry for {storage} did not serve on {addr}: {what}; its log: {log}")]
    NotReady {
        /// The directory it was to serve.
        storage: PathBuf,
        /// The address it was given.
        addr: String,
        /// What happened.
        what: String,
        /// The end of its log.
        log: String,
    },
    /// Its configuration or a fixture's digest file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A `docker-registry` process on 127.0.0.1 serving a storage directory. It is killed when
/// this value drops, and also when the process that made it ends, even by SIGKILL (its
/// parent-death signal, bound to a thread that lives as long as it does).
#[derive(Debug)]
pub struct LocalRegistry {
    addr: String,
    pid: Pid,
    keeper: Option<JoinHandle<()>>,
    _config: tempfile::TempDir,
}

impl LocalRegistry {
    /// Serve `storage` (made if missing) on a free port of 127.0.0.1; read-only if asked (a
    /// push is refused, and nothing in `storage` is written). Returns once it accepts
    /// connections.
    pub fn start(storage: &Path, read_only: bool) -> Result<LocalRegistry, LocalRegistryError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LocalRegistryError::Io { path, source }
        };
        let config = tempfile::Builder::new()
            .prefix("molde-registry-")
            .tempdir()
            .map_err(io(&std::env::temp_dir()))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io(Path::new("127.0.0.1:0")))?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    \
             uploadpurging:\n      enabled: false\n    readonly:\n      enabled: {read_only}\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        let file = config.path().join("config.yml");
        std::fs::write(&file, yaml).map_err(io(&file))?;
        let log_path = config.path().join("log");
        let log = File::create(&log_path).map_err(io(&log_path))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only sets the child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let (tx, rx) = mpsc::channel();
        // The parent-death signal fires when the thread that forked ends: this one waits for
        // the registry, so it ends with it or with the process.
        let keeper = std::thread::Builder::new()
            .name("molde-registry".into())
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(LocalRegistryError::Spawn)?;
        let pid = rx
            .recv()
            .map_err(|_| LocalRegistryError::Spawn(std::io::Error::other("its thread ended")))?
            .map_err(LocalRegistryError::Spawn)?;
        let registry = LocalRegistry {
            addr,
            pid: Pid::from_raw(pid as i32),
            keeper: Some(keeper),
            _config: config,
        };
        registry.wait_ready(storage, &log_path)?;
        Ok(registry)
    }

    fn wait_ready(&self, storage: &Path, log: &Path) -> Result<(), LocalRegistryError> {
        let began = Instant::now();
        let not_ready = |what: &str| {
            let mut text = String::new();
            let _ = File::open(log).and_then(|mut f| f.read_to_string(&mut text));
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            LocalRegistryError::NotReady {
                storage: storage.to_owned(),
                addr: self.addr.clone(),
                what: what.to_owned(),
                log: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            }
        };
        let mut pause = Duration::from_millis(1);
        while TcpStream::connect(&self.addr).is_err() {
            if self.keeper.as_ref().is_none_or(|k| k.is_finished()) {
                return Err(not_ready("it exited"));
            }
            if began.elapsed() > READY_TIMEOUT {
                return Err(not_ready("it did not listen within 20 s"));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Its address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A reference to `repository` (with a tag or digest) in it: `127.0.0.1:PORT/<repository>`.
    pub fn reference(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            // While its keeper runs, the registry is unreaped: the pid is still its own.
            if !keeper.is_finished() {
                let _ = kill(self.pid, Signal::SIGKILL);
            }
            let _ = keeper.join();
        }
    }
}

/// The directory of the fixture archives (`$MOLDE_FIXTURES`, else this workspace's
/// `target/fixtures`).
pub(crate) fn fixtures_dir() -> PathBuf {
    std::env::var_os("MOLDE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"))
}

/// The manifest digest `cargo xtask fixtures` recorded (in `dir/<name>.digest`) for fixture
/// image `name` when it pushed it to the fixture registry (`dir/registry`), if it did and
/// the registry still has it.
pub fn fixture_digest(dir: &Path, name: &str) -> Option<String> {
    let digest = std::fs::read_to_string(dir.join(format!("{name}.digest"))).ok()?;
    let digest = digest.trim().to_owned();
    let hex = digest.strip_prefix("sha256:")?;
    let link = dir
        .join("registry/docker/registry/v2/repositories")
        .join(FIXTURE_REPOSITORY)
        .join(name)
        .join("_manifests/revisions/sha256")
        .join(hex)
        .join("link");
    link.is_file().then_some(digest)
}

/// A reference to fixture image `name` (`debian`, `services`) in the fixture registry, by
/// digest: `127.0.0.1:PORT/molde-fixtures/<name>@sha256:...`. The registry (serving
/// `target/fixtures/registry` read-only) starts on first use, once per process, and ends with
/// the process. `Ok(None)` when `cargo xtask fixtures` has not pushed that image.
pub fn fixture_reference(name: &str) -> Result<Option<String>, LocalRegistryError> {
    static REGISTRY: OnceLock<LocalRegistry> = OnceLock::new();
    let Some(digest) = fixture_digest(&fixtures_dir(), name) else {
        return Ok(None);
    };
    if REGISTRY.get().is_none() {
        let started = LocalRegistry::start(&fixtures_dir().join("registry"), true)?;
        // Two threads may both start one: the loser's is dropped, and so stopped.
        let _ = REGISTRY.set(started);
    }
    let registry = REGISTRY.get().expect("set above");
    Ok(Some(registry.reference(&format!(
        "{FIXTURE_REPOSITORY}/{name}@{digest}"
    ))))
}
