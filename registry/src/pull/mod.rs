//! [`Pull`]: an image from a registry into a store, as `docker pull` does.
//!
//! resolve (index -> this platform's manifest) -> config -> each layer: present in the
//! store by digest or by DiffID (`Already exists`), else downloaded (a few at a time),
//! verified as it streams into the store's ingest and unpacked as soon as it is in; the
//! top layer is unpacked last (see [`molde_image::unpack::unpack_layer`]) -> the image
//! enters the index with its tag, only once every layer is stored and unpacked.

mod download;
mod manifest;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, TryStreamExt, stream};
use molde_image::blob::Expected;
use molde_image::layerfs::{Digest, digest::chain_id};
use molde_image::unpack::StagedLayer;
use molde_image::{Image, Layer, Reference, Store, StoreError};

use crate::client::{RegistryOptions, Remote};
use crate::error::RegistryError;
use crate::mirrors::Source;
use crate::platform::Platform;
use crate::progress::{LayerStatus, Progress, ProgressFn};

pub use manifest::{MAX_CONFIG, MAX_MANIFEST};

/// The default number of layers downloaded at once.
pub const DEFAULT_CONCURRENCY: usize = 3;

/// A pull to run: `Pull::new(&store, "alpine:3.19").run()`.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use molde_image::Store;
/// use molde_registry::{Pull, ProgressDisplay};
///
/// let store = Store::open_default()?;
/// let display = Arc::new(ProgressDisplay::stdout());
/// let report = Pull::new(&store, "alpine:3.19").progress(display.callback()).run()?;
/// println!("{} layers, {} bytes fetched", report.layers.len(), report.bytes_fetched);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Pull {
    store: Store,
    reference: String,
    platform: Platform,
    concurrency: usize,
    unpack: bool,
    progress: Option<ProgressFn>,
    options: RegistryOptions,
}

/// One layer of a pulled image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulledLayer {
    /// The layer as stored (the blob may be another compression of the registry's).
    pub layer: Layer,
    /// Whether the store had it before (`Already exists`).
    pub existed: bool,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The image, now in the store (tagged when the reference has a tag).
    pub image: Image,
    /// The tag it got, if any.
    pub tag: Option<Reference>,
    /// The digest of what the reference names, as served (a multi-platform index's digest,
    /// or the manifest's): docker's `Digest:` line.
    pub digest: Digest,
    /// The digest of the platform's manifest as served.
    pub manifest_digest: Digest,
    /// The layers, bottom first.
    pub layers: Vec<PulledLayer>,
    /// Bytes downloaded for layers (0 when every layer existed).
    pub bytes_fetched: u64,
    /// Whether anything new came (a layer, or the tag moved): docker's `Downloaded newer
    /// image` against `Image is up to date`.
    pub newer: bool,
    /// Where the image came from: the reference pulled, on a mirror when one served it
    /// (see [`crate::mirrors`]).
    pub source: String,
}

impl PullReport {
    /// docker's `Status:` line.
    pub fn status(&self) -> String {
        let name = self
            .tag
            .as_ref()
            .map_or_else(|| self.image.id().to_string(), |t| t.to_string());
        if self.newer {
            format!("Downloaded newer image for {name}")
        } else {
            format!("Image is up to date for {name}")
        }
    }
}

impl fmt::Display for PullReport {
    /// As `docker pull` prints it, once done.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.layers {
            let s = if l.existed {
                "Already exists"
            } else {
                "Pull complete"
            };
            writeln!(f, "{}: {s}", &l.layer.digest.hex()[..12])?;
        }
        writeln!(f, "Digest: {}", self.digest)?;
        writeln!(f, "Status: {}", self.status())
    }
}

/// Pull `reference` into `store` with the default options: this machine's platform, 3
/// layers at a time, unpacked, credentials from the auth files.
pub fn pull(store: &Store, reference: &str) -> Result<PullReport, RegistryError> {
    Pull::new(store, reference).run()
}

impl Pull {
    /// A pull of `reference` (`alpine`, `alpine:3.19`, `ghcr.io/o/app@sha256:...`;
    /// `alpine` means `docker.io/library/alpine:latest`) into `store`.
    pub fn new(store: &Store, reference: &str) -> Pull {
        Pull {
            store: store.clone(),
            reference: reference.to_owned(),
            platform: Platform::host(),
            concurrency: DEFAULT_CONCURRENCY,
            unpack: true,
            progress: None,
            options: RegistryOptions::default(),
        }
    }

    /// Which image of a multi-platform index to take (default: this machine's).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// How many layers to download at once (default 3, at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Whether to unpack the layers (default true; a container needs them unpacked, and
    /// starting one unpacks what is missing).
    pub fn unpack(mut self, unpack: bool) -> Self {
        self.unpack = unpack;
        self
    }

    /// Receive progress events (see [`crate::ProgressDisplay`] for a docker-like display).
    pub fn progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Transport and credential options.
    pub fn options(mut self, options: RegistryOptions) -> Self {
        self.options = options;
        self
    }

    /// Run the pull, blocking the calling thread. It runs on a runtime of its own in a
    /// thread of its own, so it may be called from anywhere, also from async code (where
    /// [`Pull::run_async`] is the better choice).
    pub fn run(self) -> Result<PullReport, RegistryError> {
        let name = self.reference.clone();
        crate::runtime::block_on(&name, self.run_async())
    }

    /// Run the pull on the caller's tokio runtime. Blocking store work goes to its blocking
    /// pool.
    pub async fn run_async(self) -> Result<PullReport, RegistryError> {
        let asked = Reference::parse(&self.reference)?;
        self.emit(Progress::Resolving {
            reference: asked.to_string(),
        });
        let sources = self.options.registries()?.sources(&self.reference)?;
        let (remote, resolved, reference) = self.resolve(&sources).await?;
        let store = self.store.clone();
        let name = remote.name.clone();
        let pin = blocking(&name, move || store.pin()).await?;
        let config = Expected {
            digest: resolved.config_digest,
            size: Some(resolved.config_bytes.len() as u64),
        };
        let (store, bytes) = (self.store.clone(), resolved.config_bytes.clone());
        blocking(&name, move || store.ingest_blob(&bytes[..], Some(config))).await?;
        let fetched = Arc::new(AtomicU64::new(0));
        let layers = self.fetch_layers(&remote, &resolved, &fetched).await?;
        let image = self
            .register(&remote, &resolved, &layers, &reference)
            .await?;
        drop(pin);
        let report = PullReport {
            newer: image.1 || layers.iter().any(|l| !l.existed),
            image: image.0,
            tag: tag_of(&reference),
            digest: resolved.digest,
            manifest_digest: resolved.manifest_digest,
            layers,
            bytes_fetched: fetched.load(Ordering::Relaxed),
            source: remote.name.clone(),
        };
        self.emit(Progress::Done {
            digest: report.digest,
            status: report.status(),
        });
        Ok(report)
    }

    /// The first source (mirrors, then the registry; for a short name, each search
    /// registry in turn) that has the image: its connection, the resolved manifest, and the
    /// name the image is known by there (its tag's name).
    async fn resolve(
        &self,
        sources: &[Source],
    ) -> Result<(Arc<Remote>, manifest::Resolved, Reference), RegistryError> {
        let mut failed = None;
        for source in sources {
            let reference = Reference::parse(&source.reference)?;
            let mut options = self.options.clone();
            if source.insecure {
                options = options.insecure(reference.registry());
            }
            let attempt = async {
                let remote =
                    Remote::connect(&reference, &options, oci_client::RegistryOperation::Pull)
                        .await?;
                let resolved = manifest::resolve(&remote, &self.platform).await?;
                Ok::<_, RegistryError>((remote, resolved))
            };
            match attempt.await {
                Ok((remote, resolved)) => {
                    return Ok((Arc::new(remote), resolved, Reference::parse(&source.name)?));
                }
                Err(e) => {
                    tracing::debug!(source = %source.reference, error = %e, "trying the next source");
                    failed = Some(e);
                }
            }
        }
        Err(failed.unwrap_or_else(|| RegistryError::Task {
            reference: self.reference.clone(),
            reason: "registries.conf left nowhere to pull from".into(),
        }))
    }

    fn emit(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(&p);
        }
    }

    fn emit_layer(&self, index: usize, digest: Digest, status: LayerStatus) {
        self.emit(Progress::Layer {
            index,
            digest,
            status,
        });
    }

    /// Every layer stored (found or downloaded) and, unless told not to, unpacked; the top
    /// one last.
    async fn fetch_layers(
        &self,
        remote: &Arc<Remote>,
        resolved: &manifest::Resolved,
        fetched: &Arc<AtomicU64>,
    ) -> Result<Vec<PulledLayer>, RegistryError> {
        let diff_ids: Vec<Digest> = resolved.layers.iter().map(|l| l.diff_id).collect();
        let chains: Vec<Digest> = (1..=diff_ids.len())
            .filter_map(|n| chain_id(&diff_ids[..n]))
            .collect();
        let mut plan = Vec::new();
        for (i, l) in resolved.layers.iter().enumerate() {
            let local = if self.store.has_blob(&l.digest) {
                Some(*l)
            } else {
                self.store.layer_by_diff_id(&l.diff_id)
            };
            let status = if local.is_some() {
                LayerStatus::AlreadyExists
            } else {
                LayerStatus::Waiting
            };
            self.emit_layer(i, l.digest, status);
            plan.push((i, *l, local));
        }
        let top = plan.len().saturating_sub(1);
        let mut done: Vec<(usize, PulledLayer, Option<StagedLayer>)> = stream::iter(plan)
            .map(|(i, l, local)| {
                let remote = Arc::clone(remote);
                let fetched = Arc::clone(fetched);
                let chain = chains[i];
                async move {
                    let Some(layer) = local else {
                        let (pulled, staged) =
                            self.download(&remote, i, l, chain, &fetched).await?;
                        // Every layer but the top enters the store as soon as it is in.
                        let staged = match staged {
                            Some(s) if i != top => {
                                blocking(&remote.name, move || s.commit()).await?;
                                None
                            }
                            staged => staged,
                        };
                        if staged.is_none() {
                            self.emit_layer(i, l.digest, LayerStatus::PullComplete);
                        }
                        return Ok::<_, RegistryError>((i, pulled, staged));
                    };
                    let pulled = PulledLayer {
                        layer,
                        existed: true,
                    };
                    if self.unpack && i != top {
                        self.unpack_one(&remote, i, pulled, chain).await?;
                    }
                    Ok((i, pulled, None))
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        done.sort_by_key(|(i, _, _)| *i);
        // The top layer last, once every layer below it is in place: a present top means a
        // whole stack (see `unpack_layer`).
        if let Some((i, pulled, staged)) = done.last_mut() {
            match staged.take() {
                Some(s) => {
                    blocking(&remote.name, move || s.commit()).await?;
                    self.emit_layer(*i, pulled.layer.digest, LayerStatus::PullComplete);
                }
                None if self.unpack && pulled.existed => {
                    self.unpack_one(remote, *i, *pulled, chains[*i]).await?;
                }
                None => {}
            }
        }
        Ok(done.into_iter().map(|(_, p, _)| p).collect())
    }

    /// Download one layer, unpacking it as it streams in when the pull unpacks: the layer
    /// as pulled and its tree, staged (`None` when its stack was unpacked already).
    async fn download(
        &self,
        remote: &Remote,
        i: usize,
        l: Layer,
        chain: Digest,
        fetched: &AtomicU64,
    ) -> Result<(PulledLayer, Option<StagedLayer>), RegistryError> {
        let last = AtomicU64::new(0);
        let report = |n: u64| {
            fetched.fetch_add(n - last.swap(n, Ordering::Relaxed), Ordering::Relaxed);
            self.emit_layer(
                i,
                l.digest,
                LayerStatus::Downloading {
                    done: n,
                    total: l.size,
                },
            );
        };
        self.emit_layer(
            i,
            l.digest,
            LayerStatus::Downloading {
                done: 0,
                total: l.size,
            },
        );
        let unpack_as = self.unpack.then_some(chain);
        let streamed = download::download(remote, &self.store, &l, unpack_as, &report).await?;
        self.emit_layer(i, l.digest, LayerStatus::Verifying);
        let pulled = PulledLayer {
            layer: l,
            existed: streamed.blob.existed,
        };
        Ok((pulled, streamed.staged))
    }

    async fn unpack_one(
        &self,
        remote: &Remote,
        i: usize,
        pulled: PulledLayer,
        chain: Digest,
    ) -> Result<(), RegistryError> {
        let store = self.store.clone();
        let layer = pulled.layer;
        let path = store.layout().layer(&chain);
        if !path.is_dir() {
            self.emit_layer(i, layer.digest, LayerStatus::Extracting);
            blocking(&remote.name, move || {
                molde_image::unpack::unpack_layer(&store, &layer, chain)
            })
            .await?;
        }
        if !pulled.existed {
            self.emit_layer(i, layer.digest, LayerStatus::PullComplete);
        }
        Ok(())
    }

    /// Store the manifest (as served when its blobs are the store's, else one naming the
    /// stored blobs) and add the image to the index, with its tag and the digest it was
    /// pulled by (see [`Store::add_repo_digest`]). Returns it, and whether the index
    /// changed (a new image or a moved tag).
    async fn register(
        &self,
        remote: &Remote,
        resolved: &manifest::Resolved,
        layers: &[PulledLayer],
        reference: &Reference,
    ) -> Result<(Image, bool), RegistryError> {
        let store = self.store.clone();
        let stored: Vec<Layer> = layers.iter().map(|l| l.layer).collect();
        let same = stored == resolved.layers;
        let bytes = resolved.manifest_bytes.clone();
        let (config, config_size) = (resolved.config_digest, resolved.config_bytes.len() as u64);
        let tag = tag_of(reference);
        // docker's RepoDigests: the image is found by the digest the registry serves it
        // under, also when its stored manifest names other blobs.
        let repo_digest = Reference::parse(&format!(
            "{}@{}",
            reference.familiar_name(),
            resolved.digest
        ))?;
        blocking(&remote.name, move || {
            let md = if same {
                store.ingest_blob(&bytes[..], None)?.digest
            } else {
                store
                    .write_manifest(config, config_size, &stored)?
                    .manifest_digest()
            };
            let before = match &tag {
                Some(t) => store
                    .resolve(&t.to_string())
                    .ok()
                    .map(|i| i.manifest_digest()),
                None => None,
            };
            let image = store.register(md, tag.as_ref())?;
            store.add_repo_digest(&image, &repo_digest)?;
            Ok((image, before != Some(md)))
        })
        .await
    }
}

/// The tag a pull gives: the reference's, in familiar form (none for a bare digest).
fn tag_of(reference: &Reference) -> Option<Reference> {
    let tag = reference.tag()?;
    Reference::parse(&format!("{}:{tag}", reference.familiar_name())).ok()
}

/// Run blocking store work on the runtime's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RegistryError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|source| RegistryError::Store {
            reference: name.to_owned(),
            source: Box::new(source),
        }),
        Err(e) => Err(RegistryError::Task {
            reference: name.to_owned(),
            reason: e.to_string(),
        }),
    }
}
