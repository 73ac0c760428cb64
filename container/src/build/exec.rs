//! The state of one stage being built, step by step: config steps change the config,
//! filesystem steps are looked up in the cache, else run (`run.rs`) or copied
//! (`copy_step.rs`), and each adds its history entry.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use molde_image::builder::{now_rfc3339, rfc3339};
use molde_image::{Image, ImageBuilder, Layer, Store};
use molde_layerfs::view::UnionView;
use molde_layerfs::{Digest, chain_id};

use super::state::{ConfigState, healthcheck_json, remove_untagged, view_of};
use super::step::Step;
use super::{Settings, StepError, StepReport, cache, copy};

/// One history entry added by the build.
#[derive(Debug, Clone)]
struct Added {
    layer: Option<Layer>,
    created_by: String,
    created: String,
}

/// The images of the stages this one reads, by name or index.
pub(crate) type StageLookup<'a> = &'a dyn Fn(&str) -> Option<Image>;

/// The state of a stage in progress.
pub(crate) struct Executor<'a> {
    pub(super) settings: &'a Settings,
    pub(super) store: &'a Store,
    pub(super) stages: StageLookup<'a>,
    base: Option<Image>,
    layers: Vec<Layer>,
    added: Vec<Added>,
    pub(super) config: ConfigState,
    /// The image of the current state, once made (for a RUN, or to look inside).
    current: Option<(Image, UnionView)>,
    /// Intermediate images made, removed at the end.
    intermediates: Vec<Image>,
    /// Whether a CMD step ran (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// The build-time variables so far (`ARG`), in order, each name once.
    pub(super) args: Vec<(String, String)>,
}

impl<'a> Executor<'a> {
    pub(crate) fn new(
        store: &'a Store,
        settings: &'a Settings,
        base: Option<Image>,
        stages: StageLookup<'a>,
    ) -> Executor<'a> {
        let (layers, config) = match &base {
            Some(b) => (b.layers().to_vec(), ConfigState::of(b)),
            None => (Vec::new(), ConfigState::default()),
        };
        Executor {
            settings,
            store,
            stages,
            base,
            layers,
            added: Vec::new(),
            config,
            current: None,
            intermediates: Vec::new(),
            cmd_set: false,
            args: Vec::new(),
        }
    }

    pub(super) fn timestamp(&self) -> String {
        self.settings.epoch.map_or_else(now_rfc3339, rfc3339)
    }

    pub(super) fn now_secs(&self) -> u64 {
        self.settings.epoch.unwrap_or_else(|| {
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
                self.settings.epoch
            )
            .as_bytes(),
        )
    }

    /// An image builder of the current state.
    fn builder(&self) -> ImageBuilder {
        let mut b = match &self.base {
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
        self.config.apply(b)
    }

    /// The image and view of the current state, made (committed untagged, unpacked) if
    /// needed.
    pub(super) fn current(&mut self) -> Result<(Image, UnionView), StepError> {
        if let Some(c) = &self.current {
            return Ok(c.clone());
        }
        let image = self
            .store
            .commit(self.builder().created(self.timestamp()))?;
        self.intermediates.push(image.clone());
        let view = view_of(self.store, &image)?;
        self.current = Some((image.clone(), view.clone()));
        Ok((image, view))
    }

    /// Commit the stage's image (untagged) and drop the intermediate images. A stage whose
    /// final state (layers, config, history) a build has made before gets that image back:
    /// nothing is written.
    pub(crate) fn finish(self) -> Result<Image, StepError> {
        let mut text = format!(
            "STAGE base {:?}\n",
            self.base.as_ref().map(Image::manifest_digest)
        );
        for a in &self.added {
            text += &format!("{} {}\n", a.layer.is_some(), a.created_by);
        }
        let key = cache::key(&self.parent(), &text, None);
        if !self.settings.no_cache
            && let Some(md) = cache::lookup_image(self.store, &key)
            && let Ok(image) = self.store.load(md)
        {
            self.drop_intermediates(None);
            return Ok(image);
        }
        let created = self.timestamp();
        let image = self.store.commit(self.builder().created(created))?;
        if let Err(e) = cache::store_image(self.store, &key, &image.manifest_digest()) {
            tracing::warn!("recording the image of a stage: {e}");
        }
        self.drop_intermediates(Some(image.manifest_digest()));
        Ok(image)
    }

    fn drop_intermediates(&self, keep: Option<Digest>) {
        for image in &self.intermediates {
            if Some(image.manifest_digest()) != keep {
                remove_untagged(self.store, image);
            }
        }
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
            Step::Env(kvs) => kvs.iter().for_each(|(k, v)| self.config.set_env(k, v)),
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
            Step::Expose(ps) => {
                self.config
                    .exposed
                    .extend(ps.iter().map(ToString::to_string));
            }
            Step::Volume(vs) => self.config.volumes.extend(vs.iter().cloned()),
            Step::Label(kvs) => self.config.labels.extend(kvs.iter().cloned()),
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
            Step::Shell(v) => self.config.shell = Some(v.clone()),
            Step::Healthcheck(h) => {
                self.config.healthcheck = Some(match h {
                    Some(h) => healthcheck_json(h),
                    None => serde_json::json!({ "Test": ["NONE"] }),
                });
            }
            Step::OnBuild(t) => self.config.onbuild.push(t.clone()),
            Step::Maintainer(m) => self.config.author = Some(m.clone()),
            _ => unreachable_step(),
        }
        let created_by = self.shown(step);
        let created = self.timestamp();
        self.record(None, created_by.clone(), created);
        Ok(StepReport {
            stage: String::new(),
            index: 0,
            instruction: created_by.clone(),
            cached: false,
            layer: None,
            created_by,
            output: Vec::new(),
            duration: Duration::ZERO,
        })
    }

    /// The instruction as the history shows it (a `RUN` with the build args it sees, as
    /// BuildKit writes them: `RUN |2 A=1 B=2 /bin/sh -c ...`; `RUN` with the stage's shell).
    pub(super) fn shown(&self, step: &Step) -> String {
        let Step::Run(r) = step else {
            return step.instruction();
        };
        let mut r = r.clone();
        r.shell = Some(self.config.shell());
        let instruction = Step::Run(r).instruction();
        let args = self.run_args();
        if args.is_empty() {
            return instruction;
        }
        let rest = instruction.strip_prefix("RUN ").unwrap_or(&instruction);
        let vars: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("RUN |{} {} {rest}", vars.len(), vars.join(" "))
    }

    /// The build-time variables a `RUN` gets: those no `ENV` of the same name hides.
    pub(super) fn run_args(&self) -> Vec<(String, String)> {
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

    pub(crate) fn step(&mut self, step: &Step) -> Result<StepReport, StepError> {
        if !step.touches_files() {
            return self.config_step(step);
        }
        if let Step::AddUrl {
            url,
            dest,
            chown,
            chmod,
            checksum,
        } = step
        {
            // Downloaded first: the key covers what was downloaded.
            let file = self.fetch(url, checksum.as_deref())?;
            let dest = if dest.ends_with('/') {
                let name = url
                    .split(['?', '#'])
                    .next()
                    .and_then(|u| u.rsplit('/').next())
                    .filter(|n| !n.is_empty())
                    .unwrap_or("download");
                format!("{dest}{name}")
            } else {
                dest.clone()
            };
            let mut c = super::Copy::new(file, dest)
                .chmod(chmod.unwrap_or(0o600))
                .text(step.instruction());
            if let Some(o) = chown {
                c = c.chown(o.clone());
            }
            return self.step(&Step::Copy(c));
        }
        // The key, from what the step says and reads, without looking inside the image.
        let (key_text, manifest) = match step {
            Step::Copy(c) => {
                let m = self.copy_manifest(c)?;
                (format!("{} -> {}", copy_key_text(c), c.dest), Some(m))
            }
            Step::AddTar { tar, dest } => (format!("ADD tar -> {dest}"), Some(digest_file(tar)?)),
            Step::Workdir(d) => (
                format!("WORKDIR {}", self.config.absolute(d).display()),
                None,
            ),
            Step::Run(r) => (
                format!("{} {}", self.shown(step), self.mounts_key(r)?),
                None,
            ),
            _ => (step.instruction(), None),
        };
        if let Step::Workdir(d) = step {
            self.config.workdir = Some(self.config.absolute(d).display().to_string());
        }
        let key = cache::key(&self.parent(), &key_text, manifest.as_ref());
        if !self.settings.no_cache
            && let Some(hit) = cache::lookup(self.store, &key)
        {
            let report = StepReport {
                stage: String::new(),
                index: 0,
                instruction: self.shown(step),
                cached: true,
                layer: hit.layer,
                created_by: hit.created_by.clone(),
                output: Vec::new(),
                duration: Duration::ZERO,
            };
            self.record(hit.layer, hit.created_by, hit.created);
            return Ok(report);
        }
        let (layer, output) = match step {
            Step::Run(r) => {
                let (layer, out) = self.run(r)?;
                (Some(layer), out)
            }
            Step::Copy(c) => (Some(self.copy(c)?), Vec::new()),
            Step::AddTar { tar, dest } => (Some(self.add_tar(tar, dest)?), Vec::new()),
            Step::Workdir(_) => (self.make_workdir()?, Vec::new()),
            _ => unreachable_step(),
        };
        let created_by = match step {
            Step::Workdir(_) => {
                format!("WORKDIR {}", self.config.workdir.as_deref().unwrap_or("/"))
            }
            _ => self.shown(step),
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
            stage: String::new(),
            index: 0,
            instruction: created_by.clone(),
            cached: false,
            layer,
            created_by,
            output,
            duration: Duration::ZERO,
        })
    }

    /// The layer of a `WORKDIR` whose directory is missing (none when it exists).
    fn make_workdir(&mut self) -> Result<Option<Layer>, StepError> {
        let (_, view) = self.current()?;
        let dir = self
            .config
            .absolute(self.config.workdir.as_deref().unwrap_or("/"));
        let resolved = copy::resolve_in_view(Some(&view), &dir);
        let abs = Path::new("/").join(&resolved);
        if view.metadata(&abs).is_ok_and(|m| m.is_dir()) || copy::key_of(&resolved).is_empty() {
            return Ok(None);
        }
        let mut plan = copy::Plan::new();
        plan.insert(
            copy::key_of(&resolved),
            copy::Planned::EnsureDir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        );
        Ok(Some(copy::write_layer(
            self.store,
            Some(&view),
            plan,
            self.settings.epoch,
            self.now_secs(),
        )?))
    }
}

impl Executor<'_> {
    /// Download `url` through the build's fetcher, checking `checksum` (`sha256:<hex>`).
    fn fetch(&self, url: &str, checksum: Option<&str>) -> Result<std::path::PathBuf, StepError> {
        let Some(fetch) = &self.settings.fetcher else {
            return Err(StepError::Refused(format!(
                "ADD {url}: this build has no fetcher to download with (give one with \
                 Build::fetcher, or download the file into the context and COPY it)"
            )));
        };
        let file = fetch(url).map_err(|e| StepError::Refused(format!("downloading {url}: {e}")))?;
        if let Some(want) = checksum {
            let got = digest_file(&file)?;
            if got.to_string() != want {
                return Err(StepError::Refused(format!(
                    "ADD {url}: the download's digest is {got}, not {want}"
                )));
            }
        }
        Ok(file)
    }
}

/// The part of a `COPY`'s key that its options make.
fn copy_key_text(c: &super::Copy) -> String {
    let mut k = String::from("COPY");
    if let Some(o) = &c.chown {
        k += &format!(" --chown={o}");
    }
    if let Some(m) = c.chmod {
        k += &format!(" --chmod={m:o}");
    }
    if c.parents {
        k += " --parents";
    }
    for e in &c.exclude {
        k += &format!(" --exclude={e}");
    }
    k
}

/// The digest of a host file's content.
pub(super) fn digest_file(path: &Path) -> Result<Digest, StepError> {
    let io = |op| {
        move |source| StepError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let f = std::fs::File::open(path).map_err(io("opening"))?;
    let (d, _) = Digest::of_reader(std::io::BufReader::new(f)).map_err(io("reading"))?;
    Ok(d)
}

/// The kinds of steps are split between `config_step` and `step` by `touches_files`.
fn unreachable_step() -> ! {
    unreachable!("step kinds are dispatched by Step::touches_files")
}
