//! [`Push`]: an image of the store to a registry, as `docker push` does: each blob the
//! registry lacks (asked with `HEAD` first; mounted from another repository of the same
//! registry when one is named and the registry agrees) is uploaded from the store, a few at
//! a time; then the manifest, byte for byte as stored, under the tag. Pulling it back gives
//! the same manifest digest.

use std::fmt;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};
use http::HeaderValue;
use molde_image::layerfs::Digest;
use molde_image::{Image, Reference, Store};
use oci_client::errors::OciDistributionError;
use tokio_util::io::ReaderStream;

use crate::client::{RegistryOptions, Remote};
use crate::error::RegistryError;
use crate::progress::{LayerStatus, Progress, ProgressFn};
use crate::pull::{DEFAULT_CONCURRENCY, blocking};

/// A push to run: `Push::new(&store, "app:v1", "registry.example/team/app:v1").run()`.
#[derive(Clone)]
pub struct Push {
    store: Store,
    image: String,
    target: String,
    concurrency: usize,
    mount_from: Option<String>,
    progress: Option<ProgressFn>,
    options: RegistryOptions,
}

/// What happened to one blob of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushedBlob {
    /// The registry had it.
    Existed,
    /// Mounted from another repository of the registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// The image pushed.
    pub image: Image,
    /// Where.
    pub target: Reference,
    /// The manifest's digest (the same as in the store).
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
    /// Each layer (bottom first), then the config.
    pub blobs: Vec<(Digest, PushedBlob)>,
    /// Bytes uploaded.
    pub bytes_sent: u64,
}

impl fmt::Display for PushReport {
    /// As `docker push` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (d, what) in &self.blobs {
            let s = match what {
                PushedBlob::Existed => "Layer already exists",
                PushedBlob::Mounted => "Mounted",
                PushedBlob::Uploaded => "Pushed",
            };
            writeln!(f, "{}: {s}", &d.hex()[..12])?;
        }
        writeln!(
            f,
            "{}: digest: {} size: {}",
            self.target.tag().unwrap_or("latest"),
            self.digest,
            self.size
        )
    }
}

/// Push the store's image `image` (a tag, id or digest) to `target` with default options.
pub fn push(store: &Store, image: &str, target: &str) -> Result<PushReport, RegistryError> {
    Push::new(store, image, target).run()
}

impl Push {
    /// A push of the store's image `image` (see [`Store::resolve`]) to `target`
    /// (`host[:port]/repo[:tag]`; no tag means `latest`).
    pub fn new(store: &Store, image: &str, target: &str) -> Push {
        Push {
            store: store.clone(),
            image: image.to_owned(),
            target: target.to_owned(),
            concurrency: DEFAULT_CONCURRENCY,
            mount_from: None,
            progress: None,
            options: RegistryOptions::default(),
        }
    }

    /// How many blobs to upload at once (default 3).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Ask the registry to mount missing blobs from this repository of the same registry
    /// (`team/base`) before uploading them.
    pub fn mount_from(mut self, repository: impl Into<String>) -> Self {
        self.mount_from = Some(repository.into());
        self
    }

    /// Receive progress events.
    pub fn progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Transport and credential options.
    pub fn options(mut self, options: RegistryOptions) -> Self {
        self.options = options;
        self
    }

    /// Run the push, blocking (see [`crate::Pull::run`]).
    pub fn run(self) -> Result<PushReport, RegistryError> {
        let name = self.target.clone();
        crate::runtime::block_on(&name, self.run_async())
    }

    /// Run the push on the caller's tokio runtime.
    pub async fn run_async(self) -> Result<PushReport, RegistryError> {
        let target = Reference::parse(&self.target)?;
        let remote = Arc::new(
            Remote::connect(&target, &self.options, oci_client::RegistryOperation::Push).await?,
        );
        let (store, what) = (self.store.clone(), self.image.clone());
        let image = blocking(&remote.name, move || store.resolve(&what)).await?;
        let mut blobs: Vec<(Digest, u64)> =
            image.layers().iter().map(|l| (l.digest, l.size)).collect();
        blobs.push((image.id(), image.manifest().config().size()));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let this = &self;
        let results: Vec<(usize, PushedBlob)> = stream::iter(blobs.iter().copied().enumerate())
            .map(|(i, (digest, size))| {
                let remote = Arc::clone(&remote);
                let sent = Arc::clone(&sent);
                async move {
                    let r = this.push_blob(&remote, i, digest, size, &sent).await?;
                    Ok::<_, RegistryError>((i, r))
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let mut results = results;
        results.sort_by_key(|(i, _)| *i);
        let (digest, size) = self.push_manifest(&remote, &image).await?;
        let report = PushReport {
            blobs: results.into_iter().map(|(i, r)| (blobs[i].0, r)).collect(),
            target,
            digest,
            size,
            image,
            bytes_sent: sent.load(std::sync::atomic::Ordering::Relaxed),
        };
        if let Some(p) = &self.progress {
            p(&Progress::Pushed {
                tag: report.target.tag().unwrap_or("latest").to_owned(),
                digest,
                size,
            });
        }
        Ok(report)
    }

    fn emit(&self, index: usize, digest: Digest, status: LayerStatus) {
        if let Some(p) = &self.progress {
            p(&Progress::Layer {
                index,
                digest,
                status,
            });
        }
    }

    async fn push_blob(
        &self,
        remote: &Remote,
        i: usize,
        digest: Digest,
        size: u64,
        sent: &std::sync::atomic::AtomicU64,
    ) -> Result<PushedBlob, RegistryError> {
        let d = digest.to_string();
        let exists = remote
            .retry(|| remote.client.blob_exists(&remote.reference, &d))
            .await?;
        if exists {
            self.emit(i, digest, LayerStatus::LayerAlreadyExists);
            return Ok(PushedBlob::Existed);
        }
        if let Some(from) = &self.mount_from {
            let source = oci_client::Reference::with_tag(
                remote.reference.registry().to_owned(),
                from.clone(),
                "latest".into(),
            );
            // A registry that cannot mount answers 202 and an upload session: upload.
            if remote
                .client
                .mount_blob(&remote.reference, &source, &d)
                .await
                .is_ok()
            {
                self.emit(i, digest, LayerStatus::Mounted { from: from.clone() });
                return Ok(PushedBlob::Mounted);
            }
        }
        let path = self.store.layout().blob(&digest);
        let mut pause = remote.policy().1;
        let mut attempt = 1;
        loop {
            let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| RegistryError::Store {
                    reference: remote.name.clone(),
                    source: Box::new(molde_image::StoreError::Io {
                        op: "opening",
                        path: path.clone(),
                        source: e,
                    }),
                })?;
            let counter = Arc::clone(&done);
            let progress = self.progress.clone();
            let body = ReaderStream::with_capacity(file, 1 << 20).map(move |chunk| {
                let chunk = chunk.map_err(OciDistributionError::IoError)?;
                let n = counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed)
                    + chunk.len() as u64;
                if let Some(p) = &progress {
                    p(&Progress::Layer {
                        index: i,
                        digest,
                        status: LayerStatus::Pushing {
                            done: n,
                            total: size,
                        },
                    });
                }
                Ok(chunk)
            });
            match remote
                .client
                .push_blob_stream(&remote.reference, body, &d, Some(size))
                .await
            {
                Ok(_) => break,
                Err(e) if attempt < remote.policy().0 && crate::error::retryable(&e) => {
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                Err(e) => return Err(remote.error(e)),
            }
        }
        sent.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        self.emit(i, digest, LayerStatus::Pushed);
        Ok(PushedBlob::Uploaded)
    }

    /// Upload the manifest as stored (same bytes, same digest) under the target's tag.
    async fn push_manifest(
        &self,
        remote: &Remote,
        image: &Image,
    ) -> Result<(Digest, u64), RegistryError> {
        let md = image.manifest_digest();
        let path = self.store.layout().blob(&md);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| RegistryError::Store {
                reference: remote.name.clone(),
                source: Box::new(molde_image::StoreError::Io {
                    op: "reading",
                    path: path.clone(),
                    source: e,
                }),
            })?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
            .unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_owned());
        let content_type =
            HeaderValue::from_str(&media_type).map_err(|e| RegistryError::Invalid {
                reference: remote.name.clone(),
                what: format!("manifest {md}"),
                reason: e.to_string(),
            })?;
        let size = bytes.len() as u64;
        let body = bytes::Bytes::from(bytes);
        remote
            .retry(|| {
                remote.client.push_manifest_raw(
                    &remote.reference,
                    body.clone(),
                    content_type.clone(),
                )
            })
            .await?;
        Ok((md, size))
    }
}
