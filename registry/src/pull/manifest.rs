//! Resolving a reference to one image manifest: fetch what the tag or digest names, refuse
//! schema 1 and unknown media types, pick the platform from an index, then fetch the
//! config. Digests are of the bytes as served, never of re-serialised JSON.

use molde_image::layerfs::Digest;
use molde_image::{Layer, LayerMediaType};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::client::Remote;
use crate::error::RegistryError;
use crate::platform::{self, Platform};

/// The largest manifest or index accepted.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The largest image config accepted.
pub const MAX_CONFIG: u64 = 8 << 20;

const ACCEPT: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// An image manifest as served, and its config.
pub(crate) struct Resolved {
    /// The digest of what the reference names (an index, or the manifest itself).
    pub digest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: Digest,
    pub config_bytes: Vec<u8>,
    pub config_digest: Digest,
    /// The layers as the manifest names them, with the DiffIDs the config declares.
    pub layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

enum Kind {
    Index,
    Manifest,
}

fn kind(remote: &Remote, what: &str, bytes: &[u8]) -> Result<Kind, RegistryError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| invalid(remote, what, e))?;
    if probe.schema_version == Some(1) {
        return Err(RegistryError::SchemaV1 {
            reference: remote.name.clone(),
            media_type: probe
                .media_type
                .unwrap_or_else(|| "application/vnd.docker.distribution.manifest.v1+json".into()),
        });
    }
    match probe.media_type.as_deref() {
        Some(OCI_IMAGE_INDEX_MEDIA_TYPE | IMAGE_MANIFEST_LIST_MEDIA_TYPE) => Ok(Kind::Index),
        Some(OCI_IMAGE_MEDIA_TYPE | IMAGE_MANIFEST_MEDIA_TYPE) => Ok(Kind::Manifest),
        Some(other) => Err(RegistryError::UnsupportedMediaType {
            reference: remote.name.clone(),
            what: what.to_owned(),
            media_type: other.to_owned(),
        }),
        None if probe.manifests.is_some() => Ok(Kind::Index),
        None if probe.config.is_some() => Ok(Kind::Manifest),
        None => Err(RegistryError::Invalid {
            reference: remote.name.clone(),
            what: what.to_owned(),
            reason: "neither a manifest nor an index (no mediaType, config or manifests)".into(),
        }),
    }
}

fn invalid(remote: &Remote, what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Invalid {
        reference: remote.name.clone(),
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

fn mismatch(remote: &Remote, what: &str, expected: Digest, actual: Digest) -> RegistryError {
    RegistryError::DigestMismatch {
        reference: remote.name.clone(),
        what: what.to_owned(),
        expected,
        actual,
    }
}

/// The client's own digest check failing is a digest mismatch too.
fn map_digest_error(remote: &Remote, what: &str, e: RegistryError) -> RegistryError {
    if let RegistryError::Protocol {
        source:
            OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }),
        ..
    } = &e
        && let (Ok(x), Ok(a)) = (expected.parse(), actual.parse())
    {
        return mismatch(remote, what, x, a);
    }
    e
}

/// Fetch the manifest or index `reference` names, checked against `expected` if pinned.
async fn fetch_document(
    remote: &Remote,
    reference: &oci_client::Reference,
    what: &str,
    expected: Option<Digest>,
) -> Result<(Vec<u8>, Digest), RegistryError> {
    let (bytes, _) = remote
        .retry(|| {
            remote
                .client
                .pull_manifest_raw(reference, &remote.auth, ACCEPT)
        })
        .await
        .map_err(|e| map_digest_error(remote, what, e))?;
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(RegistryError::TooLarge {
            reference: remote.name.clone(),
            what: what.to_owned(),
            size: bytes.len() as u64,
            limit: MAX_MANIFEST,
        });
    }
    let digest = Digest::of(&bytes);
    if let Some(x) = expected.filter(|x| *x != digest) {
        return Err(mismatch(remote, what, x, digest));
    }
    Ok((bytes.to_vec(), digest))
}

fn pinned(remote: &Remote, digest: Digest) -> oci_client::Reference {
    oci_client::Reference::with_digest(
        remote.reference.registry().to_owned(),
        remote.reference.repository().to_owned(),
        digest.to_string(),
    )
}

/// Resolve the reference to one manifest (through an index, for `platform`), and fetch
/// its config.
pub(crate) async fn resolve(
    remote: &Remote,
    platform: &Platform,
) -> Result<Resolved, RegistryError> {
    let pin = match remote.reference.digest() {
        Some(d) => Some(
            d.parse()
                .map_err(|e| invalid(remote, "the reference's digest", e))?,
        ),
        None => None,
    };
    let (bytes, digest) = fetch_document(remote, &remote.reference, "the manifest", pin).await?;
    let (manifest_bytes, manifest_digest) = match kind(remote, "the manifest", &bytes)? {
        Kind::Manifest => (bytes, digest),
        Kind::Index => {
            let what = format!("index {digest}");
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| invalid(remote, &what, e))?;
            let chosen = platform
                .select(&index)
                .ok_or_else(|| RegistryError::NoPlatform {
                    reference: remote.name.clone(),
                    platform: platform.to_string(),
                    available: index.manifests().iter().map(platform::describe).collect(),
                })?;
            let md: Digest = chosen
                .digest()
                .as_ref()
                .parse()
                .map_err(|e| invalid(remote, &what, e))?;
            let what = format!("manifest {md}");
            let (b, d) = fetch_document(remote, &pinned(remote, md), &what, Some(md)).await?;
            if let Kind::Index = kind(remote, &what, &b)? {
                return Err(invalid(remote, &what, "an index inside an index"));
            }
            (b, d)
        }
    };
    let what = format!("manifest {manifest_digest}");
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| invalid(remote, &what, e))?;
    let (config_bytes, config_digest) = fetch_config(remote, &manifest, &what).await?;
    let layers = layers_of(remote, &manifest, &config_bytes, &what)?;
    Ok(Resolved {
        digest,
        manifest_bytes,
        manifest_digest,
        config_bytes,
        config_digest,
        layers,
    })
}

async fn fetch_config(
    remote: &Remote,
    manifest: &ImageManifest,
    what: &str,
) -> Result<(Vec<u8>, Digest), RegistryError> {
    let desc = manifest.config();
    let mt = desc.media_type().to_string();
    if mt != DOCKER_CONFIG && mt != OCI_CONFIG {
        return Err(RegistryError::UnsupportedMediaType {
            reference: remote.name.clone(),
            what: format!("the config of {what}"),
            media_type: mt,
        });
    }
    if desc.size() > MAX_CONFIG {
        return Err(RegistryError::TooLarge {
            reference: remote.name.clone(),
            what: format!("the config of {what}"),
            size: desc.size(),
            limit: MAX_CONFIG,
        });
    }
    let digest: Digest = desc
        .digest()
        .as_ref()
        .parse()
        .map_err(|e| invalid(remote, what, e))?;
    let cwhat = format!("config {digest}");
    let oci_desc = oci_client::manifest::OciDescriptor {
        media_type: mt,
        digest: digest.to_string(),
        size: desc.size() as i64,
        ..Default::default()
    };
    let bytes = remote
        .retry(|| async {
            let mut out = Vec::new();
            remote
                .client
                .pull_blob(&remote.reference, &oci_desc, &mut out)
                .await
                .map(|()| out)
        })
        .await
        .map_err(|e| map_digest_error(remote, &cwhat, e))?;
    let actual = Digest::of(&bytes);
    if actual != digest {
        return Err(mismatch(remote, &cwhat, digest, actual));
    }
    Ok((bytes, digest))
}

/// The manifest's layers with the DiffIDs of the config, every media type checked.
fn layers_of(
    remote: &Remote,
    manifest: &ImageManifest,
    config_bytes: &[u8],
    what: &str,
) -> Result<Vec<Layer>, RegistryError> {
    let config: ImageConfiguration =
        serde_json::from_slice(config_bytes).map_err(|e| invalid(remote, "the config", e))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(invalid(
            remote,
            what,
            format!(
                "{} layers but the config declares {} DiffIDs",
                manifest.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (i, (l, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
        let lwhat = format!("layer {i} ({}) of {what}", l.digest());
        let media_type = LayerMediaType::parse(l.media_type().as_ref()).ok_or_else(|| {
            RegistryError::UnsupportedMediaType {
                reference: remote.name.clone(),
                what: lwhat.clone(),
                media_type: l.media_type().to_string(),
            }
        })?;
        layers.push(Layer {
            digest: l
                .digest()
                .as_ref()
                .parse()
                .map_err(|e| invalid(remote, &lwhat, e))?,
            diff_id: diff_id.parse().map_err(|e| invalid(remote, &lwhat, e))?,
            size: l.size(),
            media_type,
        });
    }
    Ok(layers)
}
