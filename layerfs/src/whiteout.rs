//! Whiteouts: how a layer says "this path of a lower layer is gone".
//!
//! Two encodings exist and molde converts between them:
//! - **tar** (OCI image-spec): an empty file `.wh.NAME` hides `NAME` of lower layers; an empty
//!   file `.wh..wh..opq` in a directory hides every lower entry of that directory (it applies
//!   first, wherever it sits in the tar). A whiteout never hides what its own layer wrote.
//! - **overlay** (kernel overlayfs): a character device 0/0 named `NAME`, and the xattr
//!   `trusted.overlay.opaque=y` (or `user.overlay.opaque=y` when the overlay is mounted with
//!   `userxattr`, as in a user namespace) on an opaque directory.

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The prefix of a tar whiteout entry's file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of a tar opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Which xattr namespace overlayfs uses for its own attributes (opaque directories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OverlayXattr {
    /// `trusted.overlay.*`: the default; writing it needs CAP_SYS_ADMIN in the initial namespace.
    #[default]
    Trusted,
    /// `user.overlay.*`: used with the `userxattr` mount option, inside user namespaces.
    User,
}

impl OverlayXattr {
    /// The name of the opaque-directory xattr.
    pub fn opaque(self) -> &'static str {
        match self {
            OverlayXattr::Trusted => "trusted.overlay.opaque",
            OverlayXattr::User => "user.overlay.opaque",
        }
    }

    /// The right namespace for this process: `User` unless it is root in the initial user
    /// namespace (where `trusted.*` works).
    pub fn for_current_process() -> OverlayXattr {
        if crate::privilege::in_initial_user_namespace() && nix::unistd::geteuid().is_root() {
            OverlayXattr::Trusted
        } else {
            OverlayXattr::User
        }
    }
}

/// How a layer's whiteouts are laid down on disk when it is applied to a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// One rootfs directory: whiteouts are applied by deleting what they hide.
    Flat,
    /// A directory usable as an overlay lowerdir: whiteouts are kept as char 0/0 devices and
    /// opaque directories as the given xattr.
    Overlay(OverlayXattr),
}

/// What a tar entry's file name says about whiteouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarName<'a> {
    /// An ordinary entry.
    Plain,
    /// `.wh.NAME`: hides `NAME` of lower layers.
    Whiteout(&'a OsStr),
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
}

/// Classify a tar entry's last path component.
pub fn classify(file_name: &OsStr) -> TarName<'_> {
    let b = file_name.as_bytes();
    if b == OPAQUE_MARKER.as_bytes() {
        TarName::Opaque
    } else if let Some(rest) = b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        TarName::Whiteout(OsStr::from_bytes(rest))
    } else {
        TarName::Plain
    }
}

/// The tar whiteout file name for `name`: `.wh.NAME`.
pub fn whiteout_name(name: &OsStr) -> OsString {
    let mut s = OsString::from(WHITEOUT_PREFIX);
    s.push(name);
    s
}

/// Whether `meta` (from `symlink_metadata`) is an overlay whiteout: a char device 0/0.
pub fn is_overlay_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether the directory at `path` is marked opaque with `xattr`.
pub fn is_opaque_dir(path: &Path, xattr: OverlayXattr) -> bool {
    matches!(xattr::get(path, xattr.opaque()), Ok(Some(v)) if v == b"y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_names() {
        assert_eq!(classify(OsStr::new("a")), TarName::Plain);
        assert_eq!(
            classify(OsStr::new(".wh.a")),
            TarName::Whiteout(OsStr::new("a"))
        );
        assert_eq!(classify(OsStr::new(".wh..wh..opq")), TarName::Opaque);
        assert_eq!(whiteout_name(OsStr::new("x")), OsString::from(".wh.x"));
    }
}
