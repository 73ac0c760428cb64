//! The process launcher: a container's first process in its own namespaces, on its own root,
//! and further processes exec'd into a running container.
//!
//! Everything the child needs is prepared before `clone`; after it the child uses raw syscalls
//! only (no allocation, no locks: safe in a multi-threaded host) and reports a failed setup step
//! as plain numbers (stage, errno) through a close-on-exec pipe, which the parent turns into a
//! typed [`LaunchError`].

mod error;
mod process;
mod spec;

pub use error::{LaunchError, Stage};
pub use process::{ChildStderr, ChildStdin, ChildStdout, ExitStatus, Process};
pub use spec::{
    Capability, ContainerMount, DEFAULT_PATH, ExecSpec, IdMap, IdMaps, MountKind, Network, Rlimit,
    Spec, Stdio, default_capabilities,
};
