//! Building images: a typed recipe ([`Build`]) or several named stages ([`Stages`]), run step
//! by step with a cache, reproducible with a fixed source-date epoch, and a Dockerfile
//! frontend ([`dockerfile`]) that parses into the same recipes.
//!
//! - A filesystem step (`RUN`, `COPY`, `ADD`, a `WORKDIR` that must create its directory)
//!   adds exactly one layer and one history entry; a config step (`ENV`, `USER`, `EXPOSE`,
//!   `VOLUME`, `LABEL`, `CMD`, `ENTRYPOINT`, `STOPSIGNAL`, `SHELL`, `HEALTHCHECK`, `ONBUILD`,
//!   `MAINTAINER`, a `WORKDIR` that exists) one `empty_layer` history entry.
//! - `RUN` runs a container of the current state (its env, working directory and user come
//!   from the config so far) and commits its writable layer (a native diff of the overlay
//!   upper). Its mounts (`cache`, `bind`, `tmpfs`, `secret`) are there while it runs and never
//!   in the layer. `COPY` and `ADD` write their layer directly, without a container.
//! - Before any work, the recipe is checked: a `RUN` with no shell to run (on scratch, or on a
//!   base without `/bin/sh`), a missing source, a bad tag fail naming the step.
//! - Stages: a stage starts from an image, scratch or an earlier stage and may copy from
//!   others; only the stages the target needs run, independent ones in parallel, and the
//!   image made has the target stage's layers only.
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
//! link target of every entry it reads; not mtimes). Keys are kept in the store,
//! `molde/build-cache/<key>`. Touching a source keeps the cache; changing a file's content,
//! mode or name invalidates the step and, since the layers change, every step after it. A file
//! of the context that no step reads is in no key.

mod cache;
mod check;
pub mod copy;
mod copy_from;
mod copy_step;
pub mod dockerfile;
mod exec;
pub mod ignore;
mod run;
mod run_step;
mod stages;
mod state;
pub mod step;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use molde_image::{Image, Layer, Store, StoreError};
use nix::sys::signal::Signal;

pub use copy::CopyError;
pub use stages::Stages;
pub use step::{
    Copy, CopyFrom, Healthcheck, Port, Run, RunCommand, RunMount, RunNetwork, Sharing, Step,
};

use crate::config::ConfigError;
use crate::container::Status;
use crate::error::ContainerError;
use crate::launch::Network;

/// Downloads the URL of an `ADD <url>` into a host file and returns its path. molde-container
/// has no HTTP client; the caller (the facade, with the registry crate's client) gives one.
pub type Fetcher = Arc<dyn Fn(&str) -> Result<PathBuf, String> + Send + Sync>;

/// What a stage starts from.
#[derive(Debug, Clone)]
pub enum Base {
    /// `FROM scratch`: nothing.
    Scratch,
    /// An image of the store.
    Image(Image),
    /// An earlier stage of the same [`Stages`], by name or index.
    Stage(String),
}

/// Settings of a whole build (every stage shares them).
#[derive(Clone, Default)]
pub(crate) struct Settings {
    pub(crate) epoch: Option<u64>,
    pub(crate) network: Network,
    pub(crate) no_cache: bool,
    pub(crate) secrets: BTreeMap<String, PathBuf>,
    pub(crate) fetcher: Option<Fetcher>,
    pub(crate) run_env: Vec<(String, String)>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("epoch", &self.epoch)
            .field("network", &self.network)
            .field("no_cache", &self.no_cache)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("fetcher", &self.fetcher.is_some())
            .finish()
    }
}

/// A recipe: a base (an image, scratch, or an earlier stage) and steps, each method adding
/// one. Nothing runs until [`Build::build`] (or [`Stages::build`]).
#[derive(Debug, Clone)]
pub struct Build {
    pub(crate) base: Base,
    pub(crate) steps: Vec<Step>,
    pub(crate) settings: Settings,
    /// Where each step comes from (`Dockerfile:12:1`), index 0 for the base; empty for steps
    /// of the typed API.
    pub(crate) origins: Vec<String>,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The image made (tagged).
    pub image: Image,
    /// The tag it got.
    pub reference: String,
    /// Each step of every stage that ran, stage by stage in the order they finished.
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
    /// The stage (its name, or its index for an unnamed one).
    pub stage: String,
    /// The step's number in its stage, from 1.
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
    #[error("no {0} in the image to run a shell-form RUN (use the exec form, or add a shell)")]
    NoShell(String),
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
    /// A `COPY` source matched nothing.
    #[error("no source matches {0:?} (check the path and the .dockerignore)")]
    NoMatch(String),
    /// What the step asks cannot be done (a secret not given, an `ADD <url>` without a
    /// fetcher, a checksum that differs...).
    #[error("{0}")]
    Refused(String),
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

/// Why a build failed. Steps are numbered from 1 within their stage.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The recipe cannot work; found before any work was done.
    #[error(
        "{}{}step {step} ({instruction}): {reason}",
        at_prefix(at),
        stage_prefix(stage)
    )]
    Invalid {
        /// Where the step comes from (`Dockerfile:12:1`), when from a Dockerfile.
        at: String,
        /// The stage.
        stage: String,
        /// The step's number (0 for the base or the tag).
        step: usize,
        /// The instruction.
        instruction: String,
        /// What is wrong.
        reason: String,
    },
    /// A step failed while running.
    #[error(
        "{}{}step {step} ({instruction}): {source}",
        at_prefix(at),
        stage_prefix(stage)
    )]
    Step {
        /// Where the step comes from (`Dockerfile:12:1`), when from a Dockerfile.
        at: String,
        /// The stage.
        stage: String,
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

fn at_prefix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

fn stage_prefix(stage: &str) -> String {
    if stage.is_empty() {
        String::new()
    } else {
        format!("stage {stage}, ")
    }
}

impl Build {
    /// Remove the build cache entries of `store` that can never be used again: those whose
    /// layer the store has collected (run [`Store::gc`] first) and unreadable ones. Returns
    /// how many were removed. Entries are small files; nothing else holds on to them.
    pub fn prune_cache(store: &Store) -> std::io::Result<usize> {
        cache::prune(store)
    }

    fn with_base(base: Base) -> Build {
        Build {
            base,
            steps: Vec::new(),
            settings: Settings::default(),
            origins: vec![String::new()],
        }
    }
    /// A recipe on top of `image` (`FROM image`), which must be in the store given to
    /// [`Build::build`].
    pub fn from_image(image: &Image) -> Build {
        Build::with_base(Base::Image(image.clone()))
    }
    /// A recipe from nothing (`FROM scratch`).
    pub fn scratch() -> Build {
        Build::with_base(Base::Scratch)
    }
    /// A stage on top of the earlier stage `name` of the same [`Stages`] (`FROM name`).
    pub fn from_stage(name: impl Into<String>) -> Build {
        Build::with_base(Base::Stage(name.into()))
    }
    /// What the recipe starts from.
    pub fn base(&self) -> &Base {
        &self.base
    }
    /// Add a step given as data.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self.origins.push(String::new());
        self
    }
    /// Add a step that comes from `origin` (`Dockerfile:12:1`), named in its errors.
    pub(crate) fn step_at(mut self, step: Step, origin: String) -> Self {
        self.steps.push(step);
        self.origins.push(origin);
        self
    }
    /// Say where the base comes from (the `FROM` line).
    pub(crate) fn base_at(mut self, origin: String) -> Self {
        self.origins[0] = origin;
        self
    }
    /// Where step `n` (from 1; 0 for the base) comes from, if known.
    pub(crate) fn origin(&self, n: usize) -> String {
        self.origins.get(n).cloned().unwrap_or_default()
    }
    /// `RUN` in shell form: `/bin/sh -c command`.
    pub fn run(self, command: impl Into<String>) -> Self {
        self.step(Step::Run(Run::shell(command)))
    }
    /// `RUN` in exec form: `argv` as it is.
    pub fn run_exec<S: Into<String>>(self, argv: impl IntoIterator<Item = S>) -> Self {
        self.step(Step::Run(Run::exec(argv)))
    }
    /// `RUN` with mounts or a network (see [`Run`]).
    pub fn run_with(self, run: Run) -> Self {
        self.step(Step::Run(run))
    }
    /// `COPY` files (see [`struct@Copy`] for owner, mode and `--from`).
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
        self.step(Step::Env(vec![(key.into(), value.into())]))
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
        self.step(Step::Expose(vec![port.into()]))
    }
    /// `VOLUME path`.
    pub fn volume(self, path: impl Into<String>) -> Self {
        self.step(Step::Volume(vec![path.into()]))
    }
    /// `LABEL key=value`.
    pub fn label(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.step(Step::Label(vec![(key.into(), value.into())]))
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
    /// `HEALTHCHECK`: stored in the image's config (Docker's `Healthcheck` field).
    pub fn healthcheck(self, check: Healthcheck) -> Self {
        self.step(Step::Healthcheck(Some(check)))
    }
    /// `SHELL [argv]`: the shell of later shell-form steps, stored in the config.
    pub fn shell<S: Into<String>>(self, argv: impl IntoIterator<Item = S>) -> Self {
        self.step(Step::Shell(argv.into_iter().map(Into::into).collect()))
    }
    /// `ONBUILD instruction`: stored; a later Dockerfile build `FROM` this image runs it.
    pub fn onbuild(self, instruction: impl Into<String>) -> Self {
        self.step(Step::OnBuild(instruction.into()))
    }
    /// Fix the source-date epoch: history and image `created` times are this instant, and
    /// every layer mtime later than it is clamped to it. The same recipe then gives the same
    /// image digest, in any store.
    pub fn source_date_epoch(mut self, secs: u64) -> Self {
        self.settings.epoch = Some(secs);
        self
    }
    /// The network of `RUN` containers (default: isolated, loopback only); what
    /// `RUN --network=default` gets.
    pub fn network(mut self, network: Network) -> Self {
        self.settings.network = network;
        self
    }
    /// Ignore the cache (every step runs; the cache is still filled).
    pub fn no_cache(mut self, yes: bool) -> Self {
        self.settings.no_cache = yes;
        self
    }
    /// The secret `id` for `RUN --mount=type=secret,id=...`: the host file `path`, mounted
    /// read-only while the `RUN` runs, never in a layer, the history or a cache key.
    pub fn secret(mut self, id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.settings.secrets.insert(id.into(), path.into());
        self
    }
    /// How `ADD <url>` downloads (without one, such an `ADD` fails saying so).
    pub fn fetcher(mut self, fetcher: Fetcher) -> Self {
        self.settings.fetcher = Some(fetcher);
        self
    }
    /// The steps so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Run the recipe in `store` and tag the result `reference` (`name:tag`).
    pub fn build(&self, store: &Store, reference: &str) -> Result<BuildReport, BuildError> {
        let settings = self.settings.clone();
        Stages::new()
            .stage("", self.clone())
            .with_settings(settings)
            .build(store, reference)
    }
}
