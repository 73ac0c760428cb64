//! [`CopyFrom`]: where a `COPY` (or a `RUN --mount`) reads from, other than the build context.

use molde_image::Image;

/// Where a `COPY` reads its sources: the host (the build context), an earlier stage of the
/// same build, or an image.
#[derive(Debug, Clone)]
pub enum CopyFrom {
    /// A stage of the [`Stages`](super::Stages) being built, by name (or index as text).
    Stage(String),
    /// An image of the store.
    Image(Image),
}

impl PartialEq for CopyFrom {
    fn eq(&self, other: &CopyFrom) -> bool {
        match (self, other) {
            (CopyFrom::Stage(a), CopyFrom::Stage(b)) => a == b,
            (CopyFrom::Image(a), CopyFrom::Image(b)) => a.manifest_digest() == b.manifest_digest(),
            _ => false,
        }
    }
}
