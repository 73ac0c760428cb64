//! Snapshot backends: containerd's snapshotter vocabulary over a stack of layer directories.
//!
//! - **prepare**: a writable snapshot over read-only lowers; returns the mounts that show it.
//! - **view**: a read-only snapshot over lowers.
//! - **diff**: the changes written into a snapshot, as a layer.
//! - **remove**: delete a snapshot's own state (never the lowers).
//! - **mounts**: what to mount to see the snapshot ([`Snapshot::mounts`]), as data.
//!
//! Lowers are layer directories in overlay format ([`crate::Format::Overlay`]), topmost first.
//! Backends: kernel overlayfs, and a copy-based fallback where overlay is not available.
