//! Building images: a typed recipe ([`Build`]), run step by step with a cache, reproducible
//! with a fixed source-date epoch, and a Dockerfile frontend ([`dockerfile`]) that parses into
//! the same recipe.
//!
//! - A filesystem step (`RUN`, `COPY`, `ADD`, a `WORKDIR` that must create its directory)
//!   adds exactly one layer and one history entry; a config step (`ENV`, `USER`, `EXPOSE`,
//!   `VOLUME`, `LABEL`, `CMD`, `ENTRYPOINT`, `STOPSIGNAL`, a `WORKDIR` that exists) one
//!   `empty_layer` history entry.
//! - `RUN` runs a container of the current state (its env, working directory and user come
//!   from the config so far) and commits its writable layer (a native diff of the overlay
//!   upper). `COPY` and `ADD` write their layer directly, without a container.
//! - Before any work, the recipe is checked: a `RUN` with no shell to run (on scratch, or on a
//!   base without `/bin/sh`), a missing source, a bad tag fail naming the step.
//! - Cache: see [`cache`](self#cache); a hit reuses the layer without running anything.
//!
//! ```no_run
//! use molde_container::build::{Build, Copy};
//! # fn f(store: &molde_image::Store, base: &molde_image::Image) -> Result<(), Box<dyn std::error::Error>> {
//! let report = Build::from_image(base)
//!     .env("APP_HOME", "/app")
//!     .workdir("/app")
//!     .copy(Copy::new("site/", "/app/").chown("1000:1000"))
//!     .run("echo built > /app/stamp")
//!     .cmd(["/bin/sh", "-c", "cat /app/stamp"])
//!     .source_date_epoch(1_700_000_000)
//!     .build(store, "site:1")?;
//! println!("{} in {:?}", report.image.id(), report.duration);
//! # Ok(()) }
//! ```
//!
//! # Cache
//!
//! A filesystem step's key is the sha256 of the parent state (the ChainID of the layers so far
//! and the whole config so far, environment included, plus the epoch), the normalized
//! instruction and, for `COPY`/`ADD`, a content manifest (path, type, mode, content digest,
//! link target of every entry; not mtimes). Keys are kept in the store,
//! `molde/build-cache/<key>`. Touching a source keeps the cache; changing a file's content,
//! mode or name invalidates the step and, since the layers change, every step after it.

mod cache;
pub mod copy;
pub mod dockerfile;
pub mod step;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use molde_image::builder::{now_rfc3339, rfc3339};
use molde_image::{Image, ImageBuilder, Layer, Reference, Store, StoreError};
use molde_layerfs::diff::{DiffOptions, EntryAttrs};
use molde_layerfs::view::UnionView;
use molde_layerfs::{Digest, OverlayXattr, chain_id};
use nix::sys::signal::Signal;
use serde::Serialize;

pub use copy::CopyError;
pub use step::{Copy, Port, RunCommand, Step};

use crate::config::ConfigError;
use crate::container::{Container, Status};
use crate::error::ContainerError;
use crate::launch::Network;
use crate::{ContainerBuilder, Stdio};

/// A recipe: a base (an image or scratch) and steps, each method adding one. Nothing runs
/// until [`Build::build`].
#[derive(Debug, Clone)]
pub struct Build {
    base: Option<Image>,
    steps: Vec<Step>,
    epoch: Option<u64>,
    network: Network,
    no_cache: bool,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The image made (tagged).
    pub image: Image,
    /// The tag it got.
    pub reference: String,
    /// Each step, in order.
    pub steps: Vec<StepReport>,
    /// The whole build's time.
    pub duration: Duration,
}

impl BuildReport {
    /// How many `RUN` steps ran a container (were not cache hits).
    pub fn runs_executed(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.instruction.starts_with("RUN ") && !s.cached)
            .count()
    }
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's number, from 1.
    pub index: usize,
    /// The instruction, normalized.
    pub instruction: String,
    /// Whether a filesystem step came from the cache (nothing ran, nothing was copied). Always
    /// `false` for config steps, which never run anything.
    pub cached: bool,
    /// The layer it added, if any.
    pub layer: Option<Layer>,
    /// The history entry's `created_by`.
    pub created_by: String,
    /// What a `RUN` printed: stdout, then stderr (empty for a cache hit).
    pub output: Vec<u8>,
    /// How long it took.
    pub duration: Duration,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A `RUN` in shell form, and the image has no `/bin/sh`.
    #[error("no /bin/sh in the image to run a shell-form RUN (use the exec form, or add a shell)")]
    NoShell,
    /// The command exited unsuccessfully.
    #[error("the command ended with {status}; stderr: {stderr}")]
    RunFailed {
        /// How it ended.
        status: Status,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// The container of a `RUN` failed.
    #[error("container: {0}")]
    Container(#[from] ContainerError),
    /// Making a `COPY`/`ADD`/`WORKDIR` layer failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// A user or group is unknown to the image.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Why a build failed. Steps are numbered from 1.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The recipe cannot work; found before any work was done.
    #[error("step {step} ({instruction}): {reason}")]
    Invalid {
        /// The step's number (0 for the base or the tag).
        step: usize,
        /// The instruction.
        instruction: String,
        /// What is wrong.
        reason: String,
    },
    /// A step failed while running.
    #[error("step {step} ({instruction}): {source}")]
    Step {
        /// The step's number.
        step: usize,
        /// The instruction.
        instruction: String,
        /// The cause.
        #[source]
        source: Box<StepError>,
    },
    /// Committing or tagging the result failed.
    #[error("committing the image {reference}: {source}")]
    Commit {
        /// The tag asked for.
        reference: String,
        /// The cause.
        #[source]
        source: Box<StoreError>,
    },
}

impl Build {
    /// Remove the build cache entries of `store` that can never be used again: those whose
    /// layer the store has collected (run [`Store::gc`] first) and unreadable ones. Returns
    /// how many were removed. Entries are small files; nothing else holds on to them.
    pub fn prune_cache(store: &Store) -> std::io::Result<usize> {
        cache::prune(store)
    }

    /// A recipe on top of `image` (`FROM image`), which must be in the store given to
    /// [`Build::build`].
    pub fn from_image(image: &Image) -> Build {
        Build {
            base: Some(image.clone()),
            steps: Vec::new(),
            epoch: None,
            network: Network::Isolated,
            no_cache: false,
        }
    }
    /// A recipe from nothing (`FROM scratch`).
    pub fn scratch() -> Build {
        Build {
            base: None,
            steps: Vec::new(),
            epoch: None,
            network: Network::Isolated,
            no_cache: false,
        }
    }
    /// Add a step given as data.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }
    /// `RUN` in shell form: `/bin/sh -c command`.
    pub fn run(self, command: impl Into<String>) -> Self {
        self.step(Step::Run(RunCommand::Shell(command.into())))
    }
    /// `RUN` in exec form: `argv` as it is.
    pub fn run_exec<S: Into<String>>(self, argv: impl IntoIterator<Item = S>) -> Self {
        self.step(Step::Run(RunCommand::Exec(
            argv.into_iter().map(Into::into).collect(),
        )))
    }
    /// `COPY` host files (see [`struct@Copy`] for owner and mode).
    pub fn copy(self, copy: Copy) -> Self {
        self.step(Step::Copy(copy))
    }
    /// `ADD` a local tar (plain, gzip or zstd): its contents go into the directory `dest`.
    pub fn add_tar(self, tar: impl Into<PathBuf>, dest: impl Into<String>) -> Self {
        self.step(Step::AddTar {
            tar: tar.into(),
            dest: dest.into(),
        })
    }
    /// `ENV key=value`.
    pub fn env(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.step(Step::Env(key.into(), value.into()))
    }
    /// `ARG key=value`: a build-time variable, in the environment of the `RUN` steps after it
    /// (an `ENV` of the same name wins) and part of their cache key; not in the image.
    pub fn arg(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.step(Step::Arg(key.into(), value.into()))
    }
    /// `WORKDIR dir` (relative to the previous one; made when missing).
    pub fn workdir(self, dir: impl Into<String>) -> Self {
        self.step(Step::Workdir(dir.into()))
    }
    /// `USER user` (`name`, `uid`, `name:group`, `uid:gid`; names must be in the image's
    /// `/etc/passwd` and `/etc/group` at this step).
    pub fn user(self, user: impl Into<String>) -> Self {
        self.step(Step::User(user.into()))
    }
    /// `EXPOSE port` (a `u16` is tcp; see [`Port::udp`]).
    pub fn expose(self, port: impl Into<Port>) -> Self {
        self.step(Step::Expose(port.into()))
    }
    /// `VOLUME path`.
    pub fn volume(self, path: impl Into<String>) -> Self {
        self.step(Step::Volume(path.into()))
    }
    /// `LABEL key=value`.
    pub fn label(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.step(Step::Label(key.into(), value.into()))
    }
    /// `CMD [argv]`.
    pub fn cmd<S: Into<String>>(self, argv: impl IntoIterator<Item = S>) -> Self {
        self.step(Step::Cmd(argv.into_iter().map(Into::into).collect()))
    }
    /// `ENTRYPOINT [argv]` (clears a `CMD` inherited from the base, as Docker does).
    pub fn entrypoint<S: Into<String>>(self, argv: impl IntoIterator<Item = S>) -> Self {
        self.step(Step::Entrypoint(argv.into_iter().map(Into::into).collect()))
    }
    /// `STOPSIGNAL signal`.
    pub fn stop_signal(self, signal: Signal) -> Self {
        self.step(Step::StopSignal(signal))
    }
    /// Fix the source-date epoch: history and image `created` times are this instant, and
    /// every layer mtime later than it is clamped to it. The same recipe then gives the same
    /// image digest, in any store.
    pub fn source_date_epoch(mut self, secs: u64) -> Self {
        self.epoch = Some(secs);
        self
    }
    /// The network of `RUN` containers (default: isolated, loopback only).
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }
    /// Ignore the cache (every step runs; the cache is still filled).
    pub fn no_cache(mut self, yes: bool) -> Self {
        self.no_cache = yes;
        self
    }
    /// The steps so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Run the recipe in `store` and tag the result `reference` (`name:tag`).
    pub fn build(&self, store: &Store, reference: &str) -> Result<BuildReport, BuildError> {
        let start = Instant::now();
        let tag = Reference::parse(reference).map_err(|e| BuildError::Invalid {
            step: 0,
            instruction: format!("tag {reference}"),
            reason: e.to_string(),
        })?;
        self.check(store)?;
        // Layers made by the steps are in no image until the final commit: keep GC away from
        // them for the whole build.
        let _pin = store.pin().map_err(|source| BuildError::Commit {
            reference: reference.to_owned(),
            source: Box::new(source),
        })?;
        let mut exec = Executor::new(self, store);
        let mut steps = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let t = Instant::now();
            let mut r = exec.step(step).map_err(|source| BuildError::Step {
                step: i + 1,
                instruction: step.instruction(),
                source: Box::new(source),
            })?;
            r.index = i + 1;
            r.duration = t.elapsed();
            steps.push(r);
        }
        let commit_err = |source| BuildError::Commit {
            reference: reference.to_owned(),
            source: Box::new(source),
        };
        let created = exec.timestamp();
        let image = store
            .commit(exec.builder().created(created))
            .map_err(commit_err)?;
        store.tag(&image, &tag.to_string()).map_err(commit_err)?;
        for md in exec.intermediates {
            if md != image.manifest_digest()
                && let Err(e) = store.remove(&md.to_string())
            {
                tracing::debug!("removing intermediate image {md}: {e}");
            }
        }
        Ok(BuildReport {
            image,
            reference: tag.to_string(),
            steps,
            duration: start.elapsed(),
        })
    }

    /// Check the recipe before any work.
    fn check(&self, store: &Store) -> Result<(), BuildError> {
        let invalid = |i: usize, s: &Step, reason: String| BuildError::Invalid {
            step: i + 1,
            instruction: s.instruction(),
            reason,
        };
        let base_view = match &self.base {
            Some(b) => {
                if !store.has_blob(&b.manifest_digest()) {
                    return Err(BuildError::Invalid {
                        step: 0,
                        instruction: format!("FROM {}", b.id()),
                        reason: "the base image is not in this store".into(),
                    });
                }
                Some(view_of(store, b).map_err(|e| BuildError::Invalid {
                    step: 0,
                    instruction: format!("FROM {}", b.id()),
                    reason: format!("unpacking the base image: {e}"),
                })?)
            }
            None => None,
        };
        let mut files_changed = false;
        for (i, s) in self.steps.iter().enumerate() {
            match s {
                Step::Run(cmd) => {
                    if let RunCommand::Exec(v) = cmd
                        && v.first().is_none_or(String::is_empty)
                    {
                        return Err(invalid(i, s, "an exec-form RUN needs a program".into()));
                    }
                    if !files_changed {
                        let program = match cmd {
                            RunCommand::Shell(_) => "/bin/sh",
                            RunCommand::Exec(v) => v[0].as_str(),
                        };
                        match &base_view {
                            None => {
                                return Err(invalid(
                                    i,
                                    s,
                                    format!(
                                        "RUN on scratch: the image is empty, there is no {program} to run (COPY one in first)"
                                    ),
                                ));
                            }
                            Some(v)
                                if program.starts_with('/')
                                    && v.open(Path::new(program)).is_err() =>
                            {
                                return Err(invalid(
                                    i,
                                    s,
                                    format!("the base image has no {program} to run"),
                                ));
                            }
                            Some(_) => {}
                        }
                    }
                }
                Step::Copy(c) => {
                    if c.sources.is_empty() {
                        return Err(invalid(i, s, "COPY needs a source".into()));
                    }
                    if c.dest.is_empty() {
                        return Err(invalid(i, s, "COPY needs a destination".into()));
                    }
                    for src in &c.sources {
                        if let Err(e) = std::fs::metadata(src) {
                            return Err(invalid(i, s, format!("source {}: {e}", src.display())));
                        }
                    }
                    if let Some(o) = &c.chown {
                        check_user_spec(o).map_err(|r| invalid(i, s, r))?;
                    }
                }
                Step::AddTar { tar, dest } => {
                    if dest.is_empty() {
                        return Err(invalid(i, s, "ADD needs a destination".into()));
                    }
                    if let Err(e) = std::fs::metadata(tar) {
                        return Err(invalid(i, s, format!("source {}: {e}", tar.display())));
                    }
                    if !copy::is_tar(tar) {
                        return Err(invalid(
                            i,
                            s,
                            format!("{} is not a tar (plain, gzip or zstd)", tar.display()),
                        ));
                    }
                }
                Step::Env(k, _) | Step::Arg(k, _) => {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(invalid(i, s, format!("invalid variable name {k:?}")));
                    }
                }
                Step::Workdir(d) | Step::Volume(d) => {
                    if d.is_empty() {
                        return Err(invalid(i, s, "needs a path".into()));
                    }
                }
                Step::User(u) => {
                    check_user_spec(u).map_err(|r| invalid(i, s, r))?;
                    if !files_changed && let Some(v) = &base_view {
                        crate::config::resolve_identity(v, Some(u), None)
                            .map_err(|e| invalid(i, s, e.to_string()))?;
                    }
                }
                Step::Label(k, _) => {
                    if k.is_empty() {
                        return Err(invalid(i, s, "a label needs a key".into()));
                    }
                }
                Step::Expose(_) | Step::Cmd(_) | Step::Entrypoint(_) | Step::StopSignal(_) => {}
            }
            if s.touches_files() {
                files_changed = true;
            }
        }
        Ok(())
    }
}

fn check_user_spec(spec: &str) -> Result<(), String> {
    let bad = || format!("invalid user {spec:?}: expected user, uid, user:group or uid:gid");
    match spec.split_once(':') {
        _ if spec.is_empty() => Err(bad()),
        Some((u, g)) if u.is_empty() || g.is_empty() || g.contains(':') => Err(bad()),
        _ => Ok(()),
    }
}

/// The union view of an image's layers (unpacked first if needed).
fn view_of(store: &Store, image: &Image) -> Result<UnionView, StoreError> {
    let unpacked = molde_image::unpack::unpack(store, image)?;
    let lowers: Vec<PathBuf> = unpacked.into_iter().rev().map(|u| u.path).collect();
    Ok(UnionView::new(
        lowers,
        None,
        OverlayXattr::for_current_process(),
    ))
}

/// The config so far, as the key's parent state sees it.
#[derive(Debug, Clone, Default, Serialize)]
struct ConfigState {
    env: Vec<String>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    workdir: Option<String>,
    user: Option<String>,
    exposed: std::collections::BTreeSet<String>,
    volumes: std::collections::BTreeSet<String>,
    labels: std::collections::BTreeMap<String, String>,
    stop_signal: Option<String>,
}

impl ConfigState {
    fn of(image: &Image) -> ConfigState {
        ConfigState {
            env: image.env().to_vec(),
            cmd: Some(image.cmd().to_vec()).filter(|c| !c.is_empty()),
            entrypoint: Some(image.entrypoint().to_vec()).filter(|c| !c.is_empty()),
            workdir: image.working_dir().map(str::to_owned),
            user: image.user().map(str::to_owned),
            exposed: image.exposed_ports().into_iter().collect(),
            volumes: image.volumes().into_iter().collect(),
            labels: image.labels().into_iter().collect(),
            stop_signal: image.stop_signal().map(str::to_owned),
        }
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let prefix = format!("{k}=");
        self.env.retain(|kv| !kv.starts_with(&prefix));
        self.env.push(format!("{k}={v}"));
    }

    /// `path` made absolute against the working directory.
    fn absolute(&self, path: &str) -> PathBuf {
        if path.starts_with('/') {
            PathBuf::from(path)
        } else {
            Path::new(self.workdir.as_deref().unwrap_or("/")).join(path)
        }
    }
}

/// One history entry added by the build.
#[derive(Debug, Clone)]
struct Added {
    layer: Option<Layer>,
    created_by: String,
    created: String,
}

/// The state of a build in progress.
struct Executor<'a> {
    build: &'a Build,
    store: &'a Store,
    layers: Vec<Layer>,
    added: Vec<Added>,
    config: ConfigState,
    /// The image of the current state, once made (for a RUN, or to look inside).
    current: Option<(Image, UnionView)>,
    /// Intermediate images made, removed at the end.
    intermediates: Vec<Digest>,
    /// Whether a CMD step ran (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// The build-time variables so far (`ARG`), in order, each name once.
    args: Vec<(String, String)>,
}

impl<'a> Executor<'a> {
    fn new(build: &'a Build, store: &'a Store) -> Executor<'a> {
        let (layers, config) = match &build.base {
            Some(b) => (b.layers().to_vec(), ConfigState::of(b)),
            None => (Vec::new(), ConfigState::default()),
        };
        Executor {
            build,
            store,
            layers,
            added: Vec::new(),
            config,
            current: None,
            intermediates: Vec::new(),
            cmd_set: false,
            args: Vec::new(),
        }
    }

    fn timestamp(&self) -> String {
        self.build.epoch.map_or_else(now_rfc3339, rfc3339)
    }

    fn now_secs(&self) -> u64 {
        self.build.epoch.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
    }

    /// The digest of the state a step starts from.
    fn parent(&self) -> Digest {
        let ids: Vec<Digest> = self.layers.iter().map(|l| l.diff_id).collect();
        let chain = chain_id(&ids).map_or_else(|| "empty".to_owned(), |c| c.to_string());
        let config = serde_json::to_string(&self.config).unwrap_or_default();
        Digest::of(
            format!(
                "chain {chain}\nconfig {config}\nepoch {:?}\n",
                self.build.epoch
            )
            .as_bytes(),
        )
    }

    /// An image builder of the current state.
    fn builder(&self) -> ImageBuilder {
        let mut b = match &self.build.base {
            Some(base) => ImageBuilder::from_image(base),
            None => ImageBuilder::new(),
        };
        for a in &self.added {
            b = b.created(a.created.clone());
            b = match a.layer {
                Some(l) => b.layer(l, a.created_by.clone()),
                None => b.step(a.created_by.clone()),
            };
        }
        let c = &self.config;
        for kv in &c.env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            b = b.env(k, v);
        }
        if let Some(cmd) = &c.cmd {
            b = b.cmd(cmd.clone());
        }
        if let Some(ep) = &c.entrypoint {
            b = b.entrypoint(ep.clone());
        }
        if let Some(w) = &c.workdir {
            b = b.working_dir(w.clone());
        }
        if let Some(u) = &c.user {
            b = b.user(u.clone());
        }
        for p in &c.exposed {
            b = b.expose(p.clone());
        }
        for v in &c.volumes {
            b = b.volume(v.clone());
        }
        for (k, v) in &c.labels {
            b = b.label(k.clone(), v.clone());
        }
        if let Some(s) = &c.stop_signal {
            b = b.stop_signal(s.clone());
        }
        b
    }

    /// The image and view of the current state, made (committed untagged, unpacked) if
    /// needed.
    fn current(&mut self) -> Result<(Image, UnionView), StepError> {
        if let Some(c) = &self.current {
            return Ok(c.clone());
        }
        let image = self
            .store
            .commit(self.builder().created(self.timestamp()))?;
        self.intermediates.push(image.manifest_digest());
        let view = view_of(self.store, &image)?;
        self.current = Some((image.clone(), view.clone()));
        Ok((image, view))
    }

    fn record(&mut self, layer: Option<Layer>, created_by: String, created: String) {
        if let Some(l) = layer {
            self.layers.push(l);
        }
        self.added.push(Added {
            layer,
            created_by,
            created,
        });
        self.current = None;
    }

    fn config_step(&mut self, step: &Step) -> Result<StepReport, StepError> {
        match step {
            Step::Env(k, v) => self.config.set_env(k, v),
            Step::Arg(k, v) => match self.args.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.clone(),
                None => self.args.push((k.clone(), v.clone())),
            },
            Step::User(u) => {
                if u.split(':').any(|p| p.parse::<u32>().is_err()) {
                    let (_, view) = self.current()?;
                    crate::config::resolve_identity(&view, Some(u), None)?;
                }
                self.config.user = Some(u.clone());
            }
            Step::Expose(p) => {
                self.config.exposed.insert(p.to_string());
            }
            Step::Volume(v) => {
                self.config.volumes.insert(v.clone());
            }
            Step::Label(k, v) => {
                self.config.labels.insert(k.clone(), v.clone());
            }
            Step::Cmd(v) => {
                self.config.cmd = Some(v.clone());
                self.cmd_set = true;
            }
            Step::Entrypoint(v) => {
                self.config.entrypoint = Some(v.clone());
                if !self.cmd_set {
                    // An inherited CMD does not survive a new ENTRYPOINT (Docker's rule).
                    self.config.cmd = None;
                }
            }
            Step::StopSignal(s) => self.config.stop_signal = Some(s.as_str().to_owned()),
            _ => unreachable_step(),
        }
        let created_by = step.instruction();
        let created = self.timestamp();
        self.record(None, created_by.clone(), created);
        Ok(StepReport {
            index: 0,
            instruction: step.instruction(),
            cached: false,
            layer: None,
            created_by,
            output: Vec::new(),
            duration: Duration::ZERO,
        })
    }

    fn step(&mut self, step: &Step) -> Result<StepReport, StepError> {
        if !step.touches_files() {
            return self.config_step(step);
        }
        // The key, from what the step says and reads, without looking inside the image.
        let (key_text, manifest) = match step {
            Step::Copy(c) => {
                let plan = self.copy_plan(c, None)?;
                let m = copy::manifest(&plan, false)?;
                let mut k = String::from("COPY");
                if let Some(o) = &c.chown {
                    k += &format!(" --chown={o}");
                }
                if let Some(m) = c.chmod {
                    k += &format!(" --chmod={m:o}");
                }
                (format!("{k} -> {}", c.dest), Some(m))
            }
            Step::AddTar { tar, dest } => {
                let f = File::open(tar).map_err(|source| StepError::Io {
                    op: "opening",
                    path: tar.clone(),
                    source,
                })?;
                let (d, _) =
                    Digest::of_reader(BufReader::new(f)).map_err(|source| StepError::Io {
                        op: "reading",
                        path: tar.clone(),
                        source,
                    })?;
                (format!("ADD tar -> {dest}"), Some(d))
            }
            Step::Workdir(d) => (
                format!("WORKDIR {}", self.config.absolute(d).display()),
                None,
            ),
            Step::Run(_) => (self.run_instruction(step), None),
            _ => (step.instruction(), None),
        };
        if let Step::Workdir(d) = step {
            self.config.workdir = Some(self.config.absolute(d).display().to_string());
        }
        let key = cache::key(&self.parent(), &key_text, manifest.as_ref());
        if !self.build.no_cache
            && let Some(hit) = cache::lookup(self.store, &key)
        {
            let report = StepReport {
                index: 0,
                instruction: step.instruction(),
                cached: true,
                layer: hit.layer,
                created_by: hit.created_by.clone(),
                output: Vec::new(),
                duration: Duration::ZERO,
            };
            self.record(hit.layer, hit.created_by, hit.created);
            return Ok(report);
        }
        let (layer, created_by, output) = match step {
            Step::Run(cmd) => {
                let (layer, out) = self.run(cmd)?;
                (Some(layer), self.run_instruction(step), out)
            }
            Step::Copy(c) => {
                let (_, view) = self.current()?;
                let plan = self.copy_plan(c, Some(&view))?;
                let single_dir = c.sources.len() == 1
                    && std::fs::metadata(&c.sources[0]).is_ok_and(|m| m.is_dir());
                let kind = if c.sources.len() > 1 {
                    "multi"
                } else if single_dir {
                    "dir"
                } else {
                    "file"
                };
                let layer = copy::write_layer(
                    self.store,
                    Some(&view),
                    plan,
                    self.build.epoch,
                    self.now_secs(),
                )?;
                let m = manifest.map(|m| m.hex()).unwrap_or_default();
                (
                    Some(layer),
                    format!("COPY {kind}:{m} in {}", c.dest),
                    Vec::new(),
                )
            }
            Step::AddTar { tar, dest } => {
                let (_, view) = self.current()?;
                let dir = copy::unpack_tar(self.store, tar)?;
                let dest_abs = copy::resolve_in_view(Some(&view), &self.config.absolute(dest));
                let mut plan = copy::Plan::new();
                let meta = std::fs::metadata(dir.path()).map_err(|source| StepError::Io {
                    op: "reading",
                    path: dir.path().to_owned(),
                    source,
                })?;
                copy::plan_tree(
                    &mut plan,
                    dir.path(),
                    meta,
                    &dest_abs,
                    EntryAttrs::default(),
                    false,
                )?;
                let key = copy::key_of(&dest_abs);
                if !key.is_empty() {
                    plan.entry(key).or_insert(copy::Planned::EnsureDir {
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    });
                }
                let layer = copy::write_layer(
                    self.store,
                    Some(&view),
                    plan,
                    self.build.epoch,
                    self.now_secs(),
                )?;
                drop(dir);
                let m = manifest.map(|m| m.hex()).unwrap_or_default();
                (Some(layer), format!("ADD file:{m} in {dest}"), Vec::new())
            }
            Step::Workdir(_) => {
                let (_, view) = self.current()?;
                let dir = self
                    .config
                    .absolute(self.config.workdir.as_deref().unwrap_or("/"));
                let resolved = copy::resolve_in_view(Some(&view), &dir);
                let abs = Path::new("/").join(&resolved);
                let layer = if view.metadata(&abs).is_ok_and(|m| m.is_dir())
                    || copy::key_of(&resolved).is_empty()
                {
                    None
                } else {
                    let mut plan = copy::Plan::new();
                    plan.insert(
                        copy::key_of(&resolved),
                        copy::Planned::EnsureDir {
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                        },
                    );
                    Some(copy::write_layer(
                        self.store,
                        Some(&view),
                        plan,
                        self.build.epoch,
                        self.now_secs(),
                    )?)
                };
                (layer, format!("WORKDIR {}", dir.display()), Vec::new())
            }
            _ => unreachable_step(),
        };
        let created = self.timestamp();
        let entry = cache::CacheEntry {
            layer,
            created_by: created_by.clone(),
            created: created.clone(),
        };
        if let Err(e) = cache::store_entry(self.store, &key, &entry) {
            tracing::warn!("recording build cache entry {key}: {e}");
        }
        self.record(layer, created_by.clone(), created);
        Ok(StepReport {
            index: 0,
            instruction: step.instruction(),
            cached: false,
            layer,
            created_by,
            output,
            duration: Duration::ZERO,
        })
    }

    /// The entries of a `COPY`. Without a view (for the cache key), the destination is taken
    /// as written and the owner as `0:0`; with one, symlinks of the destination are resolved
    /// in the image and `--chown` names looked up.
    fn copy_plan(&self, c: &Copy, view: Option<&UnionView>) -> Result<copy::Plan, StepError> {
        let dest_abs = self.config.absolute(&c.dest);
        let dest = copy::resolve_in_view(view, &dest_abs);
        let (uid, gid) = match (&c.chown, view) {
            (Some(spec), Some(view)) => resolve_owner(view, spec)?,
            _ => (0, 0),
        };
        let attrs = EntryAttrs {
            uid: Some(uid),
            gid: Some(gid),
            mode: c.chmod,
        };
        let mut metas = Vec::new();
        for src in &c.sources {
            // A source given as a symlink is followed, as Docker does.
            let meta = std::fs::metadata(src).map_err(|source| StepError::Io {
                op: "reading",
                path: src.clone(),
                source,
            })?;
            metas.push(meta);
        }
        let into_dir = c.dest.ends_with('/') || c.sources.len() > 1 || metas[0].is_dir();
        let mut plan = copy::Plan::new();
        for (src, meta) in c.sources.iter().zip(metas) {
            let is_dir = meta.is_dir();
            let target = if is_dir || !into_dir {
                dest.clone()
            } else {
                dest.join(src.file_name().unwrap_or_default())
            };
            let source = if is_dir {
                src.clone()
            } else {
                std::fs::canonicalize(src).unwrap_or_else(|_| src.clone())
            };
            copy::plan_tree(&mut plan, &source, meta, &target, attrs, true)?;
        }
        if into_dir && !copy::key_of(&dest).is_empty() {
            plan.entry(copy::key_of(&dest))
                .or_insert(copy::Planned::EnsureDir {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                });
        }
        Ok(plan)
    }

    /// Run a `RUN` step's container and make its writable layer a layer.
    /// A `RUN` as its history and cache key name it: with the build-time variables it sees,
    /// as BuildKit writes them (`RUN |2 A=1 B=2 /bin/sh -c ...`).
    fn run_instruction(&self, step: &Step) -> String {
        let args = self.run_args();
        let instruction = step.instruction();
        if args.is_empty() {
            return instruction;
        }
        let rest = instruction.strip_prefix("RUN ").unwrap_or(&instruction);
        let vars: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("RUN |{} {} {rest}", vars.len(), vars.join(" "))
    }

    /// The build-time variables a `RUN` gets: those no `ENV` of the same name hides.
    fn run_args(&self) -> Vec<(String, String)> {
        self.args
            .iter()
            .filter(|(k, _)| {
                !self
                    .config
                    .env
                    .iter()
                    .any(|kv| kv.split_once('=').is_some_and(|(name, _)| name == k))
            })
            .cloned()
            .collect()
    }

    fn run(&mut self, cmd: &RunCommand) -> Result<(Layer, Vec<u8>), StepError> {
        let (image, view) = self.current()?;
        let argv: Vec<String> = match cmd {
            RunCommand::Shell(c) => {
                if view.open(Path::new("/bin/sh")).is_err() {
                    return Err(StepError::NoShell);
                }
                vec!["/bin/sh".into(), "-c".into(), c.clone()]
            }
            RunCommand::Exec(v) => v.clone(),
        };
        let mut builder = ContainerBuilder::new(self.store, &image);
        // Each RUN runs on a new intermediate image: flattening it would be work for one use.
        builder.flatten = false;
        let mut child = builder
            .command(&argv[0])
            .args(&argv[1..])
            .envs(self.run_args())
            .network(self.build.network)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (out, err) = crate::container::child::collect(child.stdout.take(), child.stderr.take());
        let mut container: Container = child.into_container();
        let status = container.wait()?;
        let out = out.unwrap_or_default();
        let err = err.unwrap_or_default();
        if !matches!(status, Status::Exited { code: Some(0), .. }) {
            let tail = &err[err.len().saturating_sub(2048)..];
            container.close()?;
            return Err(StepError::RunFailed {
                status,
                stderr: String::from_utf8_lossy(tail).into_owned(),
            });
        }
        let tmp_dir = self.store.layout().tmp();
        let io_err = |op| {
            let p = tmp_dir.clone();
            move |source| StepError::Io {
                op,
                path: p,
                source,
            }
        };
        let mut tmp = tempfile::tempfile_in(&tmp_dir).map_err(io_err("creating a file in"))?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut tmp);
            let opts = DiffOptions {
                mtime_clamp: self.build.epoch,
                ..DiffOptions::default()
            };
            container
                .backend
                .diff(&container.snapshot, &mut w, &opts)
                .map_err(ContainerError::from)?;
            io::Write::flush(&mut w).map_err(io_err("writing a layer in"))?;
        }
        tmp.seek(SeekFrom::Start(0))
            .map_err(io_err("rewinding a layer in"))?;
        let layer = self
            .store
            .add_layer(BufReader::with_capacity(1 << 20, tmp))?
            .layer;
        container.close()?;
        let mut output = out;
        output.extend_from_slice(&err);
        Ok((layer, output))
    }
}

/// The uid and gid of a `--chown` spec: names looked up in the image; without a group, the
/// gid is the uid's number (as Docker does).
fn resolve_owner(view: &UnionView, spec: &str) -> Result<(u32, u32), StepError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => crate::config::resolve_identity(view, Some(user), Some("0"))?.uid,
    };
    let gid = match group {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => crate::config::resolve_identity(view, Some("0"), Some(g))?.gid,
        },
    };
    Ok((uid, gid))
}

/// The kinds of steps are split between `config_step` and `step` by `touches_files`.
fn unreachable_step() -> ! {
    unreachable!("step kinds are dispatched by Step::touches_files")
}
