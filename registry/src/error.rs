//! [`RegistryError`]: why a pull or push failed. Every variant names the reference, and
//! those that come from the registry carry its own message.

use molde_image::layerfs::Digest;
use molde_image::{ReferenceError, StoreError};
use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::auth::CredentialsError;

/// Why a pull or a push failed. A failed pull tags nothing; blobs it completed stay in the
/// store (unreferenced until an image names them) and the next pull reuses them.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference is not valid.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A `registries.conf` file could not be read or is not valid.
    #[error("registries.conf {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// `registries.conf` blocks the registry this reference is on.
    #[error("{reference}: registry {registry} is blocked by registries.conf")]
    Blocked {
        /// The image reference.
        reference: String,
        /// The blocked prefix.
        registry: String,
    },
    /// The registry answered with an HTTP error status (after retries, for 429 and 5xx).
    #[error("{reference}: registry {registry} answered {status}{}: {message}", hint(*.status))]
    Status {
        /// The image reference.
        reference: String,
        /// The registry (`host[:port]`).
        registry: String,
        /// The HTTP status (401, 403, 404, 429, 5xx...).
        status: u16,
        /// The registry's own message.
        message: String,
    },
    /// The registry could not be reached, or the connection broke (after retries).
    #[error("{reference}: cannot talk to registry {registry}: {source}")]
    Connection {
        /// The image reference.
        reference: String,
        /// The registry.
        registry: String,
        /// The transport's error.
        #[source]
        source: OciDistributionError,
    },
    /// The registry broke the distribution protocol (an answer the client cannot use).
    #[error("{reference}: registry {registry}: {source}")]
    Protocol {
        /// The image reference.
        reference: String,
        /// The registry.
        registry: String,
        /// The client's complaint.
        #[source]
        source: OciDistributionError,
    },
    /// The manifest is a Docker schema 1 manifest, which molde does not read.
    #[error(
        "{reference}: the registry serves a Docker schema 1 manifest ({media_type}), deprecated \
         since 2017 and not supported: push the image again with a current docker, podman or skopeo"
    )]
    SchemaV1 {
        /// The image reference.
        reference: String,
        /// The media type served.
        media_type: String,
    },
    /// A document or layer is of a media type molde does not handle.
    #[error("{reference}: {what} has media type {media_type:?}, which molde does not handle")]
    UnsupportedMediaType {
        /// The image reference.
        reference: String,
        /// Which document or layer.
        what: String,
        /// The media type found.
        media_type: String,
    },
    /// A manifest or config is larger than molde accepts.
    #[error("{reference}: {what} is {size} bytes, more than the {limit} bytes accepted")]
    TooLarge {
        /// The image reference.
        reference: String,
        /// Which document.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Content does not match its digest.
    #[error("{reference}: {what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The image reference.
        reference: String,
        /// Which document or blob.
        what: String,
        /// The digest expected.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The download ended before the blob's declared size (after retries).
    #[error("{reference}: blob {digest} is truncated: got {got} of {expected} bytes")]
    Truncated {
        /// The image reference.
        reference: String,
        /// The blob.
        digest: Digest,
        /// Bytes expected.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// A document is malformed.
    #[error("{reference}: {what}: {reason}")]
    Invalid {
        /// The image reference.
        reference: String,
        /// Which document.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// No image of the index is for the platform asked for.
    #[error("{reference}: no image for platform {platform} (the index has: {})", available.join(", "))]
    NoPlatform {
        /// The image reference.
        reference: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the index offers.
        available: Vec<String>,
    },
    /// Credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// A TLS certificate given could not be used.
    #[error("TLS certificate {what}: {reason}")]
    Certificate {
        /// Which certificate.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A store operation failed (storing a blob, unpacking, tagging).
    #[error("{reference}: {source}")]
    Store {
        /// The image reference.
        reference: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
    /// The background task running the transfer failed.
    #[error("{reference}: transfer task failed: {reason}")]
    Task {
        /// The image reference.
        reference: String,
        /// Why.
        reason: String,
    },
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => " (unauthorized: log in, or check the credentials)",
        403 => " (denied: the credentials lack access to this repository)",
        404 => " (not found: check the name and tag)",
        429 => " (too many requests: try again later)",
        500..=599 => " (server error)",
        _ => "",
    }
}

/// The most of a registry's message an error keeps: its words, not a copy of a huge page
/// (a proxy's HTML, megabytes of junk).
const MESSAGE_LIMIT: usize = 1024;

/// `message` trimmed, and cut at [`MESSAGE_LIMIT`] bytes (on a character boundary) saying how
/// long it was.
fn excerpt(message: &str) -> String {
    let m = message.trim();
    if m.len() <= MESSAGE_LIMIT {
        return m.to_owned();
    }
    let mut end = MESSAGE_LIMIT;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &m[..end], m.len())
}

/// What the transport says a failure is: an HTTP status with the registry's message, a
/// broken or refused connection, or anything else.
pub(crate) enum Failure {
    Status(u16, String),
    Connection,
    Other,
}

pub(crate) fn classify(e: &OciDistributionError) -> Failure {
    match e {
        OciDistributionError::ServerError { code, message, .. } => {
            Failure::Status(*code, excerpt(message))
        }
        OciDistributionError::UnauthorizedError { url } => {
            Failure::Status(401, format!("unauthorized at {url}"))
        }
        OciDistributionError::AuthenticationFailure(m) => Failure::Status(401, excerpt(m)),
        OciDistributionError::RegistryError { envelope, .. } => {
            let status = envelope
                .errors
                .first()
                .map(|e| match &e.code {
                    OciErrorCode::Unauthorized => 401,
                    OciErrorCode::Denied => 403,
                    OciErrorCode::Toomanyrequests => 429,
                    OciErrorCode::BlobUnknown
                    | OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound => 404,
                    _ => 400,
                })
                .unwrap_or(400);
            Failure::Status(status, excerpt(&envelope.to_string()))
        }
        OciDistributionError::ImageManifestNotFoundError(m) => Failure::Status(404, excerpt(m)),
        OciDistributionError::RequestError(r) => match r.status() {
            Some(s) => Failure::Status(s.as_u16(), r.to_string()),
            None => Failure::Connection,
        },
        OciDistributionError::IoError(_) => Failure::Connection,
        _ => Failure::Other,
    }
}

/// Whether a failure is worth another try: 429, 5xx, and connections refused or broken.
pub(crate) fn retryable(e: &OciDistributionError) -> bool {
    match classify(e) {
        Failure::Status(s, _) => s == 429 || s == 408 || (500..=599).contains(&s),
        Failure::Connection => true,
        Failure::Other => false,
    }
}

/// The typed error of a transport failure.
pub(crate) fn from_transport(
    reference: &str,
    registry: &str,
    e: OciDistributionError,
) -> RegistryError {
    match classify(&e) {
        Failure::Status(status, message) => RegistryError::Status {
            reference: reference.to_owned(),
            registry: registry.to_owned(),
            status,
            message,
        },
        Failure::Connection => RegistryError::Connection {
            reference: reference.to_owned(),
            registry: registry.to_owned(),
            source: e,
        },
        Failure::Other => RegistryError::Protocol {
            reference: reference.to_owned(),
            registry: registry.to_owned(),
            source: e,
        },
    }
}
