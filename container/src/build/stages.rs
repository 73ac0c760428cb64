//! Several named stages built as one: only those the target needs run, independent ones in
//! parallel (one thread each), each stage's result an untagged image until the target is
//! tagged and the others are removed from the index.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc;
use std::time::Instant;

use molde_image::{Image, Reference, Store};

use super::exec::Executor;
use super::state::remove_untagged;
use super::step::{CopyFrom, RunMount, Step};
use super::{Base, Build, BuildError, BuildReport, Settings, StepReport};

/// A build made of stages (a multi-stage Dockerfile): each a [`Build`] with an optional name;
/// a stage may start from an earlier one ([`Build::from_stage`]) and copy from any earlier one
/// ([`Copy::from`](super::Copy::from)). The target is the last stage unless
/// [`Stages::target`] names another.
///
/// ```no_run
/// use molde_container::build::{Build, Copy, CopyFrom, Stages};
/// # fn f(store: &molde_image::Store, base: &molde_image::Image) -> Result<(), Box<dyn std::error::Error>> {
/// let report = Stages::new()
///     .stage("builder", Build::from_image(base).run("echo built > /out"))
///     .stage("app", Build::from_image(base)
///         .copy(Copy::new("/out", "/app/out").from(CopyFrom::Stage("builder".into()))))
///     .build(store, "app:1")?;
/// # let _ = report; Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Stages {
    stages: Vec<(String, Build)>,
    target: Option<String>,
    settings: Settings,
}

impl Stages {
    /// No stages yet.
    pub fn new() -> Stages {
        Stages::default()
    }
    /// Add a stage named `name` (an empty name: an unnamed stage, reachable by its index).
    pub fn stage(mut self, name: impl Into<String>, build: Build) -> Stages {
        self.stages.push((name.into().to_ascii_lowercase(), build));
        self
    }
    /// Stop at the stage `name` (or index): it is the image made.
    pub fn target(mut self, name: impl Into<String>) -> Stages {
        self.target = Some(name.into());
        self
    }
    /// The stages, in order.
    pub fn stages(&self) -> &[(String, Build)] {
        &self.stages
    }
    /// Use the settings (epoch, network, cache, secrets, fetcher) of `build` for every stage.
    pub fn settings_from(self, build: &Build) -> Stages {
        let s = build.settings.clone();
        self.with_settings(s)
    }
    pub(crate) fn with_settings(mut self, settings: Settings) -> Stages {
        self.settings = settings;
        self
    }
    /// Fix the source-date epoch of every stage (see [`Build::source_date_epoch`]).
    pub fn source_date_epoch(mut self, secs: u64) -> Stages {
        self.settings.epoch = Some(secs);
        self
    }
    /// Ignore the cache in every stage.
    pub fn no_cache(mut self, yes: bool) -> Stages {
        self.settings.no_cache = yes;
        self
    }
    /// The network `RUN --network=default` gets (see [`Build::network`]).
    pub fn network(mut self, network: crate::launch::Network) -> Stages {
        self.settings.network = network;
        self
    }
    /// A secret for `RUN --mount=type=secret` (see [`Build::secret`]).
    pub fn secret(mut self, id: impl Into<String>, path: impl Into<std::path::PathBuf>) -> Stages {
        self.settings.secrets.insert(id.into(), path.into());
        self
    }
    /// Variables in the environment of every `RUN`, kept out of the history and the cache
    /// keys (Docker's predefined proxy arguments: `HTTP_PROXY`...).
    pub fn run_env(mut self, vars: Vec<(String, String)>) -> Stages {
        self.settings.run_env = vars;
        self
    }
    /// How `ADD <url>` downloads (see [`Build::fetcher`]).
    pub fn fetcher(mut self, fetcher: super::Fetcher) -> Stages {
        self.settings.fetcher = Some(fetcher);
        self
    }

    /// A stage's name for messages: its name, or its index; nothing for a lone unnamed stage.
    fn label(&self, i: usize) -> String {
        match self.stages[i].0.as_str() {
            "" if self.stages.len() == 1 => String::new(),
            "" => i.to_string(),
            n => n.to_owned(),
        }
    }

    /// The index of the stage `name` (a name, or an index) among the first `before`.
    fn find(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self.stages[..before]
            .iter()
            .rposition(|(n, _)| !n.is_empty() && *n == lower)
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < before)
    }

    /// The stages stage `i` reads (its base, `--from`s, mounts `from`).
    fn deps(&self, i: usize) -> Result<BTreeSet<usize>, BuildError> {
        let (_, build) = &self.stages[i];
        let label = self.label(i);
        let mut out = BTreeSet::new();
        let mut want = |n: &str, step: usize, what: String| -> Result<(), BuildError> {
            match self.find(n, i) {
                Some(j) => {
                    out.insert(j);
                    Ok(())
                }
                None => Err(BuildError::Invalid {
                    stage: label.clone(),
                    step,
                    instruction: what,
                    reason: format!("no earlier stage is named {n:?}"),
                }),
            }
        };
        if let Base::Stage(n) = &build.base {
            want(n, 0, format!("FROM {n}"))?;
        }
        for (k, s) in build.steps.iter().enumerate() {
            match s {
                Step::Copy(c) => {
                    if let Some(CopyFrom::Stage(n)) = &c.from {
                        want(n, k + 1, s.instruction())?;
                    }
                }
                Step::Run(r) => {
                    for m in &r.mounts {
                        if let RunMount::Bind {
                            from: Some(CopyFrom::Stage(n)),
                            ..
                        } = m
                        {
                            want(n, k + 1, s.instruction())?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Build the stages the target needs and tag the target's image `reference`.
    pub fn build(&self, store: &Store, reference: &str) -> Result<BuildReport, BuildError> {
        let start = Instant::now();
        let tag = Reference::parse(reference).map_err(|e| BuildError::Invalid {
            stage: String::new(),
            step: 0,
            instruction: format!("tag {reference}"),
            reason: e.to_string(),
        })?;
        let n = self.stages.len();
        let target = match &self.target {
            None if n == 0 => {
                return Err(BuildError::Invalid {
                    stage: String::new(),
                    step: 0,
                    instruction: "FROM".into(),
                    reason: "a build needs at least one stage".into(),
                });
            }
            None => n - 1,
            Some(t) => self.find(t, n).ok_or_else(|| BuildError::Invalid {
                stage: String::new(),
                step: 0,
                instruction: format!("target {t}"),
                reason: "no stage has this name".into(),
            })?,
        };
        let deps: Vec<BTreeSet<usize>> = (0..n).map(|i| self.deps(i)).collect::<Result<_, _>>()?;
        let mut needed = BTreeSet::from([target]);
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            for &d in &deps[i] {
                if needed.insert(d) {
                    todo.push(d);
                }
            }
        }
        for &i in &needed {
            let (_, b) = &self.stages[i];
            b.check(store, &self.label(i), &self.settings)?;
        }
        let commit_err = |source| BuildError::Commit {
            reference: reference.to_owned(),
            source: Box::new(source),
        };
        // Layers made by the steps are in no image until the final commit: keep GC away from
        // them for the whole build.
        let _pin = store.pin().map_err(commit_err)?;
        let (images, steps) = self.run_stages(store, &needed, &deps)?;
        let image = images
            .get(&target)
            .cloned()
            .ok_or_else(|| BuildError::Invalid {
                stage: self.label(target),
                step: 0,
                instruction: "FROM".into(),
                reason: "the target stage made no image".into(),
            })?;
        store.tag(&image, &tag.to_string()).map_err(commit_err)?;
        for (i, img) in &images {
            if *i != target && img.manifest_digest() != image.manifest_digest() {
                remove_untagged(store, img);
            }
        }
        Ok(BuildReport {
            image,
            reference: tag.to_string(),
            steps,
            duration: start.elapsed(),
        })
    }

    /// Run the `needed` stages, each as soon as the stages it reads are done, in parallel.
    #[allow(clippy::type_complexity)]
    fn run_stages(
        &self,
        store: &Store,
        needed: &BTreeSet<usize>,
        deps: &[BTreeSet<usize>],
    ) -> Result<(HashMap<usize, Image>, Vec<StepReport>), BuildError> {
        let mut done: HashMap<usize, Image> = HashMap::new();
        let mut started: BTreeSet<usize> = BTreeSet::new();
        let mut reports = Vec::new();
        let mut failure: Option<BuildError> = None;
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel();
            let mut running = 0usize;
            loop {
                if failure.is_none() {
                    for &i in needed {
                        if started.contains(&i) || !deps[i].iter().all(|d| done.contains_key(d)) {
                            continue;
                        }
                        started.insert(i);
                        running += 1;
                        let inputs: HashMap<usize, Image> =
                            deps[i].iter().map(|d| (*d, done[d].clone())).collect();
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let r = self.run_stage(store, i, &inputs);
                            let _ = tx.send((i, r));
                        });
                    }
                }
                if running == 0 {
                    break;
                }
                let Ok((i, r)) = rx.recv() else { break };
                running -= 1;
                match r {
                    Ok((image, steps)) => {
                        done.insert(i, image);
                        reports.extend(steps);
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
        });
        if let Some(e) = failure {
            for img in done.values() {
                remove_untagged(store, img);
            }
            return Err(e);
        }
        Ok((done, reports))
    }

    /// Build stage `i`, given the images of the stages it reads.
    fn run_stage(
        &self,
        store: &Store,
        i: usize,
        inputs: &HashMap<usize, Image>,
    ) -> Result<(Image, Vec<StepReport>), BuildError> {
        let (_, build) = &self.stages[i];
        let label = self.label(i);
        let stage_image = |n: &str| self.find(n, i).and_then(|j| inputs.get(&j).cloned());
        let base = match &build.base {
            Base::Scratch => None,
            Base::Image(img) => Some(img.clone()),
            Base::Stage(n) => stage_image(n),
        };
        let mut exec = Executor::new(store, &self.settings, base, &stage_image);
        let mut steps = Vec::new();
        for (k, step) in build.steps.iter().enumerate() {
            let t = Instant::now();
            let mut r = exec.step(step).map_err(|source| BuildError::Step {
                stage: label.clone(),
                step: k + 1,
                instruction: step.instruction(),
                source: Box::new(source),
            })?;
            r.stage = label.clone();
            r.index = k + 1;
            r.duration = t.elapsed();
            steps.push(r);
        }
        let image = exec.finish().map_err(|source| BuildError::Step {
            stage: label.clone(),
            step: build.steps.len(),
            instruction: "commit".into(),
            source: Box::new(source),
        })?;
        Ok((image, steps))
    }
}
