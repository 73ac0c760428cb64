//! [`RegistryResolver`]: the images a Dockerfile's `FROM` and `COPY --from` name, found in
//! the store or else pulled from their registry (cargo feature `registry`).

use std::fmt;
use std::sync::Arc;

use molde_container::build::dockerfile::{ImageLookupError, ImageResolver, StoreResolver};
use molde_image::{Image, Store, StoreError};
use molde_registry::{Platform, ProgressFn, Pull, RegistryError, RegistryOptions};

/// Resolves a Dockerfile's `FROM` and `COPY --from` images as `docker build` does: an image
/// the store has (by tag, digest or id) is used as it is; any other is pulled into the store
/// with [`molde_registry::Pull`] (this machine's platform, the build's only target; plain
/// HTTP for loopback registries; credentials from the usual auth files), then used. Give it
/// to [`Dockerfile::into_build_with`](molde_container::build::dockerfile::Dockerfile::into_build_with).
///
/// An image that neither the store nor its registry has is
/// [`ImageLookupError::NotFound`], naming the reference, in the
/// [`DockerfileError`](molde_container::build::dockerfile::DockerfileError)'s `image` field.
///
/// ```no_run
/// use std::sync::Arc;
/// use molde::RegistryResolver;
/// use molde::container::build::dockerfile::Dockerfile;
/// use molde::registry::ProgressDisplay;
/// # fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let store = molde::open_store("/var/lib/molde")?;
/// let display = Arc::new(ProgressDisplay::stdout());
/// let resolver = RegistryResolver::new().progress(display.callback());
/// let df = Dockerfile::load("Dockerfile".as_ref(), ".".as_ref(), &[])?;
/// let report = df.into_build_with(&store, &resolver)?.build(&store, "app:1")?;
/// println!("{}", report.image.id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RegistryResolver {
    platform: Platform,
    options: RegistryOptions,
    progress: Option<ProgressFn>,
}

impl Default for RegistryResolver {
    fn default() -> Self {
        RegistryResolver::new()
    }
}

impl fmt::Debug for RegistryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryResolver")
            .field("platform", &self.platform)
            .field("options", &self.options)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl RegistryResolver {
    /// A resolver pulling this machine's platform with the default registry options.
    pub fn new() -> RegistryResolver {
        RegistryResolver {
            platform: Platform::host(),
            options: RegistryOptions::default(),
            progress: None,
        }
    }

    /// Which image of a multi-platform index to pull (default: this machine's, the only
    /// platform molde builds for).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Transport and credential options for the pulls.
    pub fn options(mut self, options: RegistryOptions) -> Self {
        self.options = options;
        self
    }

    /// Receive the pulls' progress events (a build reports nothing else while it resolves
    /// its images; [`molde_registry::ProgressDisplay`] draws them as `docker pull` does).
    pub fn progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }
}

impl ImageResolver for RegistryResolver {
    fn resolve(&self, store: &Store, name: &str) -> Result<Image, ImageLookupError> {
        match store.resolve(name) {
            Ok(image) => return Ok(image),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(StoreResolver::lookup_error(name, e)),
        }
        let mut pull = Pull::new(store, name)
            .platform(self.platform.clone())
            .options(self.options.clone());
        if let Some(p) = &self.progress {
            pull = pull.progress(p.clone());
        }
        pull.run()
            .map(|r| r.image)
            .map_err(|e| lookup_error(name, e))
    }
}

/// A pull's failure as a lookup's: 404 (no such repository, tag or manifest) is not found.
fn lookup_error(name: &str, e: RegistryError) -> ImageLookupError {
    match e {
        RegistryError::Status { status: 404, .. } => ImageLookupError::NotFound {
            reference: name.to_owned(),
            detail: format!("not in the store, nor in its registry: {e}"),
        },
        other => ImageLookupError::Failed {
            reference: name.to_owned(),
            source: Arc::new(other),
        },
    }
}
