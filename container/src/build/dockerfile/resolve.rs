//! How a `FROM` or `COPY --from` image is found: an [`ImageResolver`], and the typed
//! [`ImageLookupError`] it gives when it cannot find one.

use std::sync::Arc;

use molde_image::{Image, Store, StoreError};

/// Why the image a `FROM` or `COPY --from` names could not be had. It names the reference
/// as written (after build arguments were expanded).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageLookupError {
    /// No such image: not in the store, nor (for a resolver that pulls) in its registry.
    #[error("image {reference} not found: {detail}")]
    NotFound {
        /// The reference.
        reference: String,
        /// Where it was looked for, and what to do.
        detail: String,
    },
    /// The image could not be had for another reason: a registry unreachable or refusing
    /// the credentials, a store error.
    #[error("image {reference}: {source}")]
    Failed {
        /// The reference.
        reference: String,
        /// The cause.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl ImageLookupError {
    /// The reference that could not be resolved.
    pub fn reference(&self) -> &str {
        match self {
            ImageLookupError::NotFound { reference, .. }
            | ImageLookupError::Failed { reference, .. } => reference,
        }
    }

    /// Whether the image does not exist (rather than could not be reached).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ImageLookupError::NotFound { .. })
    }
}

impl PartialEq for ImageLookupError {
    /// The same variant, reference and message (a cause is compared by its message).
    fn eq(&self, other: &Self) -> bool {
        self.is_not_found() == other.is_not_found()
            && self.reference() == other.reference()
            && self.to_string() == other.to_string()
    }
}

impl Eq for ImageLookupError {}

/// Finds the image a `FROM` or `COPY --from` names. The default ([`StoreResolver`]) looks
/// in the store; a caller that can pull gives its own (the facade's
/// `molde::RegistryResolver`, with the `registry` feature).
pub trait ImageResolver: Send + Sync {
    /// The image `name` (a reference as written in the Dockerfile).
    fn resolve(&self, store: &Store, name: &str) -> Result<Image, ImageLookupError>;
}

/// Resolves names in the store only.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreResolver;

impl StoreResolver {
    /// The typed error for `name` from the store's answer.
    pub fn lookup_error(name: &str, error: StoreError) -> ImageLookupError {
        match error {
            StoreError::NotFound(_) => ImageLookupError::NotFound {
                reference: name.to_owned(),
                detail: "not in the store (this resolver looks in the store only: import or \
                         pull the image first, or build with a resolver that pulls)"
                    .into(),
            },
            other => ImageLookupError::Failed {
                reference: name.to_owned(),
                source: Arc::new(other),
            },
        }
    }
}

impl ImageResolver for StoreResolver {
    fn resolve(&self, store: &Store, name: &str) -> Result<Image, ImageLookupError> {
        store
            .resolve(name)
            .map_err(|e| StoreResolver::lookup_error(name, e))
    }
}

impl<F> ImageResolver for F
where
    F: Fn(&Store, &str) -> Result<Image, ImageLookupError> + Send + Sync,
{
    fn resolve(&self, store: &Store, name: &str) -> Result<Image, ImageLookupError> {
        self(store, name)
    }
}
