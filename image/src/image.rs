//! [`Image`]: an immutable, cheap-to-clone view of a stored image (manifest + config), and its
//! history read like `docker history`.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use molde_layerfs::{Digest, chain_id};
use oci_spec::image::{Config, ImageConfiguration, ImageManifest};

use crate::layer::{Layer, LayerMediaType};

/// Why a manifest and config do not make a valid image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The non-empty history entries, the layers and the DiffIDs do not agree in number.
    #[error(
        "image invariant broken: {layers} layers, {diff_ids} diff_ids, {history} non-empty history entries"
    )]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// DiffIDs in the config.
        diff_ids: usize,
        /// History entries without `empty_layer: true` (when the config has a history).
        history: usize,
    },
    /// A layer's media type is not one molde can unpack.
    #[error("layer {digest}: unknown media type {media_type:?}")]
    UnknownMediaType {
        /// The layer's digest as written.
        digest: String,
        /// The media type found.
        media_type: String,
    },
    /// A digest is not a sha256 digest.
    #[error("{what}: {source}")]
    BadDigest {
        /// Which digest.
        what: String,
        /// Why it does not parse.
        #[source]
        source: molde_layerfs::digest::ParseDigestError,
    },
}

/// A stored image: its manifest, its config and its layers. Immutable; cloning is an `Arc` bump.
#[derive(Debug, Clone)]
pub struct Image(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    manifest_digest: Digest,
    manifest_size: u64,
    config_digest: Digest,
    manifest: ImageManifest,
    config: ImageConfiguration,
    layers: Vec<Layer>,
    /// The ChainID of each prefix of the stack, bottom first (computed once, in one pass).
    chain_ids: Vec<Digest>,
    /// Docker's fields of the run config that the OCI config has no place for
    /// (`Healthcheck`, `OnBuild`, `Shell`), as they were in the config document.
    docker: BTreeMap<String, serde_json::Value>,
}

/// The fields of Docker's run config kept beside the OCI ones.
pub const DOCKER_FIELDS: [&str; 3] = ["Healthcheck", "OnBuild", "Shell"];

/// One step of an image's history, like a row of `docker history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When the step ran (RFC 3339), if recorded.
    pub created: Option<String>,
    /// The command or description of the step.
    pub created_by: Option<String>,
    /// A free comment.
    pub comment: Option<String>,
    /// The layer the step made; `None` for a step that changed only the config.
    pub layer: Option<Layer>,
}

/// Docker's extra fields of the run config in a config document.
pub(crate) fn docker_fields_of(config_bytes: &[u8]) -> BTreeMap<String, serde_json::Value> {
    let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_slice(config_bytes) else {
        return BTreeMap::new();
    };
    let Some(serde_json::Value::Object(run)) = doc.remove("config") else {
        return BTreeMap::new();
    };
    run.into_iter()
        .filter(|(k, v)| DOCKER_FIELDS.contains(&k.as_str()) && !v.is_null())
        .collect()
}

fn parse_digest(what: impl Into<String>, s: &str) -> Result<Digest, ImageError> {
    s.parse().map_err(|source| ImageError::BadDigest {
        what: what.into(),
        source,
    })
}

impl Image {
    /// Make an image from its parsed documents, checking the invariant: the number of layers,
    /// of DiffIDs and (when a history is present) of non-empty history entries are equal.
    pub fn from_documents(
        manifest_digest: Digest,
        manifest_size: u64,
        manifest: ImageManifest,
        config_digest: Digest,
        config: ImageConfiguration,
    ) -> Result<Image, ImageError> {
        let diff_ids = config.rootfs().diff_ids();
        let history = config
            .history()
            .as_ref()
            .map(|h| h.iter().filter(|e| e.empty_layer() != Some(true)).count());
        let n = manifest.layers().len();
        if diff_ids.len() != n || history.is_some_and(|h| h != n) {
            return Err(ImageError::LayerCount {
                layers: n,
                diff_ids: diff_ids.len(),
                history: history.unwrap_or(n),
            });
        }
        let mut layers = Vec::with_capacity(n);
        for (i, (desc, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
            let media_type =
                LayerMediaType::parse(desc.media_type().as_ref()).ok_or_else(|| {
                    ImageError::UnknownMediaType {
                        digest: desc.digest().to_string(),
                        media_type: desc.media_type().to_string(),
                    }
                })?;
            layers.push(Layer {
                digest: parse_digest(format!("layer {i} digest"), desc.digest().as_ref())?,
                diff_id: parse_digest(format!("layer {i} diff_id"), diff_id)?,
                size: desc.size(),
                media_type,
            });
        }
        // ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)): one hash per layer.
        let mut chain_ids: Vec<Digest> = Vec::with_capacity(layers.len());
        for l in &layers {
            let next = match chain_ids.last() {
                None => l.diff_id,
                Some(prev) => chain_id(&[*prev, l.diff_id]).unwrap_or(l.diff_id),
            };
            chain_ids.push(next);
        }
        Ok(Image(Arc::new(Inner {
            manifest_digest,
            manifest_size,
            config_digest,
            manifest,
            config,
            layers,
            chain_ids,
            docker: BTreeMap::new(),
        })))
    }

    /// The same image with Docker's extra run-config fields ([`DOCKER_FIELDS`]) read from its
    /// config document's bytes (the OCI types drop them).
    pub(crate) fn with_docker_fields(mut self, config_bytes: &[u8]) -> Image {
        let fields = docker_fields_of(config_bytes);
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.docker = fields;
        }
        self
    }

    /// A field of Docker's run config that OCI has no place for (`Healthcheck`, `OnBuild`,
    /// `Shell`; see [`DOCKER_FIELDS`]), as the config document holds it.
    pub fn docker_field(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.docker.get(key)
    }

    /// All of Docker's extra run-config fields the image has.
    pub fn docker_fields(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.0.docker
    }

    /// The image id: the digest of its config (as `docker images` shows).
    pub fn id(&self) -> Digest {
        self.0.config_digest
    }
    /// The digest of its manifest (what `name@sha256:...` names).
    pub fn manifest_digest(&self) -> Digest {
        self.0.manifest_digest
    }
    /// The size of the manifest blob.
    pub fn manifest_size(&self) -> u64 {
        self.0.manifest_size
    }
    /// The parsed manifest.
    pub fn manifest(&self) -> &ImageManifest {
        &self.0.manifest
    }
    /// The parsed config.
    pub fn config(&self) -> &ImageConfiguration {
        &self.0.config
    }
    /// The layers, bottom first.
    pub fn layers(&self) -> &[Layer] {
        &self.0.layers
    }
    /// The DiffIDs, bottom first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.0.layers.iter().map(|l| l.diff_id).collect()
    }
    /// The ChainID of each prefix of the layer stack, bottom first (`chain_ids()[i]` names
    /// layers `0..=i`).
    pub fn chain_ids(&self) -> Vec<Digest> {
        self.0.chain_ids.clone()
    }
    /// The total size of the layer blobs, in bytes.
    pub fn size(&self) -> u64 {
        self.0.layers.iter().map(|l| l.size).sum()
    }
    /// When the image was created (RFC 3339), if recorded.
    pub fn created(&self) -> Option<&str> {
        self.0.config.created().as_deref()
    }

    fn run(&self) -> Option<&Config> {
        self.0.config.config().as_ref()
    }
    /// Environment, `KEY=value` entries.
    pub fn env(&self) -> &[String] {
        self.run().and_then(|c| c.env().as_deref()).unwrap_or(&[])
    }
    /// The value of one environment variable.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env().iter().find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v)
        })
    }
    /// The default command (arguments to the entrypoint, if any).
    pub fn cmd(&self) -> &[String] {
        self.run().and_then(|c| c.cmd().as_deref()).unwrap_or(&[])
    }
    /// The entrypoint.
    pub fn entrypoint(&self) -> &[String] {
        self.run()
            .and_then(|c| c.entrypoint().as_deref())
            .unwrap_or(&[])
    }
    /// The working directory, if set.
    pub fn working_dir(&self) -> Option<&str> {
        self.run().and_then(|c| c.working_dir().as_deref())
    }
    /// The user, if set.
    pub fn user(&self) -> Option<&str> {
        self.run().and_then(|c| c.user().as_deref())
    }
    /// Exposed ports (`80/tcp`), sorted.
    pub fn exposed_ports(&self) -> Vec<String> {
        let mut v = self
            .run()
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default();
        v.sort();
        v
    }
    /// Volumes, sorted.
    pub fn volumes(&self) -> Vec<String> {
        let mut v = self
            .run()
            .and_then(|c| c.volumes().clone())
            .unwrap_or_default();
        v.sort();
        v
    }
    /// Labels.
    pub fn labels(&self) -> HashMap<String, String> {
        self.run()
            .and_then(|c| c.labels().clone())
            .unwrap_or_default()
    }
    /// The stop signal, if set.
    pub fn stop_signal(&self) -> Option<&str> {
        self.run().and_then(|c| c.stop_signal().as_deref())
    }

    /// The history, oldest first, each non-empty entry paired with its layer. An image whose
    /// config has no history gets one anonymous entry per layer.
    pub fn history(&self) -> Vec<HistoryEntry> {
        let Some(history) = self.0.config.history() else {
            return self
                .layers()
                .iter()
                .map(|l| HistoryEntry {
                    created: None,
                    created_by: None,
                    comment: None,
                    layer: Some(*l),
                })
                .collect();
        };
        let mut layers = self.layers().iter();
        history
            .iter()
            .map(|h| HistoryEntry {
                created: h.created().clone(),
                created_by: h.created_by().clone(),
                comment: h.comment().clone(),
                layer: if h.empty_layer() == Some(true) {
                    None
                } else {
                    layers.next().copied()
                },
            })
            .collect()
    }

    /// The history as `docker history` prints it: newest first, columns IMAGE, CREATED,
    /// CREATED BY, SIZE, COMMENT (the top row names the image id, the others `<missing>`).
    pub fn history_table(&self) -> String {
        let mut out = format!(
            "{:<14}{:<22}{:<46}{:<10}{}\n",
            "IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"
        );
        let id = self.id().hex()[..12].to_owned();
        for (i, h) in self.history().iter().rev().enumerate() {
            let mut by = h.created_by.clone().unwrap_or_default().replace('\n', " ");
            if by.chars().count() > 44 {
                by = by.chars().take(41).collect::<String>() + "...";
            }
            let _ = writeln!(
                out,
                "{:<14}{:<22}{:<46}{:<10}{}",
                if i == 0 { id.as_str() } else { "<missing>" },
                h.created.as_deref().unwrap_or("<missing>"),
                by,
                human_size(h.layer.map_or(0, |l| l.size)),
                h.comment.as_deref().unwrap_or("")
            );
        }
        out
    }
}

/// A size as docker prints it: `0B`, `812B`, `4.1kB`, `5.6MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}
