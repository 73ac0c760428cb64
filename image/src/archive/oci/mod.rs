//! The OCI image layout: a directory (`oci-layout`, `index.json`, `blobs/sha256/`) and the
//! oci-archive, a tar of one. Tags are `org.opencontainers.image.ref.name` annotations, written
//! in docker's familiar form (`demo:v1`), as in the store's own `index.json`.
//!
//! The parts: `import` (a layout's index read, its platform picked, every blob verified into the
//! store, from a directory or straight from an archive's tar) and `export` (the images' blobs
//! and an index written as a directory or as a tar).

mod export;
mod import;

pub use export::{ExportedImage, export_archive, export_dir};
pub(super) use export::{append_blob, append_bytes, dir_header, file_header, resolve_all};
pub(super) use import::import_scanned;
pub use import::{import_archive, import_dir};

use super::{ArchiveError, parse_json};

/// The content of a layout's `oci-layout` file.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Refuse a layout whose `oci-layout` file is missing or of another version than 1.x.
fn check_layout(what: &str, bytes: Option<&[u8]>) -> Result<(), ArchiveError> {
    let not = |reason: String| ArchiveError::Format {
        format: "an OCI image layout",
        reason,
    };
    let bytes = bytes.ok_or_else(|| not(format!("{what} has no oci-layout file")))?;
    let v: serde_json::Value = parse_json(&format!("{what}: oci-layout"), bytes)?;
    match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(ver) if ver.starts_with("1.") => Ok(()),
        other => Err(not(format!("unsupported imageLayoutVersion {other:?}"))),
    }
}
