//! The process launcher: a container's first process in its own namespaces, on its own root,
//! and further processes exec'd into a running container.
//!
//! Everything the child needs is prepared before `clone`; after it the child uses raw syscalls
//! only (no allocation, no locks: safe in a multi-threaded host) and reports a failed setup step
//! as plain numbers (stage, errno) through a close-on-exec unix socket pair (the error
//! channel; it also carries the kernel-translated pid of an init's program), which the parent turns into a
//! typed [`LaunchError`].
//!
//! The launch sequence, in the child: signal dispositions to their defaults (all signals stay
//! blocked until the exec); parent-death signal; announce the host pid (first report); wait
//! for the parent (id maps and cgroups written); not dumpable until exec (children made
//! fork-style; a container's first process is made with `CLONE_VM | CLONE_VFORK` and copies
//! nothing of the host's memory); the network namespace made ahead joined where the launch
//! got one; in a copy of the host's mount namespace, `/` made a recursive slave and the rootfs
//! mounted at the root directory; host trees for bind mounts and device nodes taken
//! (`open_tree`); where the launch got a mount namespace made ahead (which holds nothing of the
//! host), the rootfs made detached before it is joined, then stacked on its root and made the
//! root (`chroot`); `/proc` and `/sys` (read-only) mounted in the new root; in a copy,
//! `pivot_root(".", ".")` and the old root detached; `/dev` (tmpfs, device nodes, devpts,
//! shm); further mounts; masked
//! and read-only paths; read-only root; hostname; loopback; rlimits; stdio, every other fd
//! closed (with a terminal: opened in the container's devpts, its master sent to the parent, its
//! slave the stdio); capabilities bounded; groups, gid, uid; capabilities set; cwd (checked to be inside
//! the root); no_new_privs; (init: fork, supervise); with a terminal, a session of its own with it as controlling
//! terminal; signal mask emptied; exec.
//! docs/ARCHITECTURE.md ("Launch sequence") gives the reason for each step.

pub(crate) mod ahead;
mod bundle;
mod child;
mod console;
mod error;
mod exec;
mod exit;
mod failure;
mod init;
mod loopback;
mod mntns;
pub(crate) mod netns;
pub(crate) mod pidfd;
mod prepare;
mod process;
mod report;
mod spawn;
mod spec;
mod sys;
mod terminal;
mod thread_caps;

pub use bundle::{BundleError, spec_from_bundle};
pub use error::{LaunchError, Stage};
pub use exec::exec;
pub use exit::ExitStatus;
pub use process::{ChildStderr, ChildStdin, ChildStdout, Process};
pub use spawn::spawn;
pub use terminal::{Terminal, WindowSize};

pub use spec::{
    BeforeRun, Capability, ContainerMount, DEFAULT_PATH, ExecSpec, IdMap, IdMaps, MountKind,
    Network, Rlimit, Spec, Stdio, default_capabilities,
};

/// How many launches of this process so far were given a mount namespace made ahead (a
/// privileged launch joins one instead of copying the host's mount table; see the launch
/// sequence in docs/ARCHITECTURE.md). For tests and diagnostics: a launch that finds none
/// ready copies the host's, which only costs time.
#[doc(hidden)]
pub fn mount_namespaces_made_ahead() -> u64 {
    mntns::handed_out()
}
