//! System call filtering (seccomp) for every process of a container, exec'd ones included.
//!
//! [`Seccomp::Default`] is moby's default profile (its allow list by architecture, the argument
//! filters of `clone`, `clone3`, `personality` and `socket`, and its rules that depend on the
//! container's capabilities), kept as data in `default.json` in Docker's format. A caller may
//! give a profile of its own in Docker's or the OCI runtime spec's JSON ([`Seccomp::from_json`])
//! or turn filtering off with [`Seccomp::Unconfined`].
//!
//! A profile is compiled to BPF before `clone` (x86_64 and aarch64; the argument conditions
//! by `seccompiler`, the dispatch on the system call number a decision tree of ours, see
//! `tree`); the default once per process for each capability set. The child installs it with the raw
//! `seccomp` system call, allocating nothing: last before `execve`, after `PR_SET_NO_NEW_PRIVS`
//! (or, with no_new_privs off, before it changes ids, while it still holds `CAP_SYS_ADMIN`).

#[cfg(test)]
mod bpf_run;
mod compile;
#[cfg(test)]
mod equivalence;
mod profile;
mod table;
mod tree;

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, LazyLock, Mutex};

use seccompiler::BpfProgram;
use serde::{Deserialize, Serialize};

pub use profile::{Condition, Profile, Rule};

/// The system call filter of a container's processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// moby's default profile (what Docker and podman apply): what it does not allow fails
    /// with `EPERM`.
    #[default]
    Default,
    /// No filtering at all (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// A profile of the caller's.
    Profile(Box<Profile>),
}

/// A seccomp profile that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// Not JSON of Docker's or the OCI runtime spec's seccomp form.
    #[error(
        "the seccomp profile is not JSON of Docker's or the OCI runtime spec's seccomp form: \
         {source}"
    )]
    Json {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A feature molde does not implement.
    #[error("the seccomp profile uses {what}, which molde does not support: remove it")]
    Unsupported {
        /// What.
        what: String,
    },
    /// The compiler refused the profile (an argument index above 5, a filter too long).
    #[error("the seccomp profile does not compile to BPF: {0}")]
    Compile(#[source] seccompiler::BackendError),
}

/// The filters of one profile for one container, installed in order.
pub(crate) type Programs = Arc<Vec<BpfProgram>>;

/// The default profile, read once.
static DEFAULT: LazyLock<Profile> = LazyLock::new(|| {
    serde_json::from_str(include_str!("default.json")).expect("default.json is a valid profile")
});

/// The default profile's filters by capability set, compiled once each per process.
static COMPILED: Mutex<Option<HashMap<u64, Programs>>> = Mutex::new(None);

/// The process `DEFAULT` and `COMPILED` belong to: a child forked without exec compiles its
/// own each time, never waiting on a lock or a once-cell its parent's threads may have held
/// at the fork.
static OWNER: AtomicU32 = AtomicU32::new(0);

impl Seccomp {
    /// A profile in Docker's seccomp JSON (`defaultAction`, `syscalls` with `names`, `action`,
    /// `errnoRet`, `args`, and `includes`/`excludes` on capabilities, architectures and kernel
    /// version) or the OCI runtime spec's `linux.seccomp`; checked by compiling it.
    pub fn from_json(json: &[u8]) -> Result<Seccomp, SeccompError> {
        let profile: Profile =
            serde_json::from_slice(json).map_err(|source| SeccompError::Json { source })?;
        Seccomp::profile(profile)
    }

    /// A profile given as data; checked by compiling it.
    pub fn profile(profile: Profile) -> Result<Seccomp, SeccompError> {
        compile_profile(&profile, 0)?;
        Ok(Seccomp::Profile(Box::new(profile)))
    }

    /// moby's default profile, as data (to adapt into a profile of one's own).
    pub fn default_profile() -> Profile {
        DEFAULT.clone()
    }

    /// The filters for a container holding the capabilities `caps` (bits); `None`: none.
    pub(crate) fn programs(&self, caps: u64) -> Result<Option<Programs>, SeccompError> {
        match self {
            Seccomp::Unconfined => Ok(None),
            Seccomp::Profile(p) => compile_profile(p, caps).map(|p| Some(Arc::new(p))),
            Seccomp::Default if !crate::launch::ahead::owns(&OWNER) => {
                let profile: Profile = serde_json::from_str(include_str!("default.json"))
                    .expect("default.json is a valid profile");
                compile_profile(&profile, caps).map(|p| Some(Arc::new(p)))
            }
            Seccomp::Default => {
                let mut cache = COMPILED.lock().unwrap_or_else(|p| p.into_inner());
                let cache = cache.get_or_insert_with(HashMap::new);
                if let Some(p) = cache.get(&caps) {
                    return Ok(Some(p.clone()));
                }
                let programs = Arc::new(compile_profile(&DEFAULT, caps)?);
                cache.insert(caps, programs.clone());
                Ok(Some(programs))
            }
        }
    }
}

fn compile_profile(profile: &Profile, caps: u64) -> Result<Vec<BpfProgram>, SeccompError> {
    let target = profile::Target::here(caps);
    compile::compile(
        (profile.default_action, profile.default_errno_ret),
        profile.rules_for(&target),
    )
}

/// Install `programs` in this thread, in order (`seccomp(SECCOMP_SET_MODE_FILTER)`): raw
/// system calls only, nothing allocated (for the child after `clone`). The errno on failure.
pub(crate) fn install(programs: &[BpfProgram]) -> Result<(), i32> {
    for program in programs {
        let fprog = libc::sock_fprog {
            len: program.len() as libc::c_ushort,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points at `program`'s instructions (seccompiler's `sock_filter` has
        // the kernel's layout), alive across the call; the kernel copies them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            // SAFETY: reads this thread's errno.
            return Err(unsafe { *libc::__errno_location() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles_for_each_capability_set_once() {
        let caps = crate::launch::default_capabilities()
            .iter()
            .fold(0u64, |m, c| m | 1 << c.index());
        let a = Seccomp::Default.programs(caps).unwrap().unwrap();
        let b = Seccomp::Default.programs(caps).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &b), "compiled once");
        // The allow list (EPERM otherwise), then clone3's ENOSYS.
        assert_eq!(a.len(), 2);
        let admin = caps | 1 << caps::Capability::CAP_SYS_ADMIN.index();
        let c = Seccomp::Default.programs(admin).unwrap().unwrap();
        assert_eq!(c.len(), 1, "with CAP_SYS_ADMIN clone3 is allowed");
        assert!(Seccomp::Unconfined.programs(caps).unwrap().is_none());
    }

    #[test]
    fn profiles_in_docker_or_oci_json() {
        let docker = br#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[],"syscalls":[
            {"names":["keyctl"],"action":"SCMP_ACT_ERRNO","errnoRet":38,"comment":"x"},
            {"names":["mount"],"action":"SCMP_ACT_KILL_PROCESS","excludes":{"caps":["CAP_SYS_ADMIN"]}}]}"#;
        let Seccomp::Profile(p) = Seccomp::from_json(docker).unwrap() else {
            panic!("a profile")
        };
        assert_eq!(p.syscalls.len(), 2);
        assert_eq!(p.syscalls[1].excludes.caps, ["CAP_SYS_ADMIN"]);
        let oci = br#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW",
            "args":[{"index":0,"value":2,"op":"SCMP_CMP_LE"}]}]}"#;
        assert!(Seccomp::from_json(oci).is_ok());
        assert!(matches!(
            Seccomp::from_json(b"{\"syscalls\": 3}"),
            Err(SeccompError::Json { .. })
        ));
        let notify = br#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#;
        assert!(matches!(
            Seccomp::from_json(notify),
            Err(SeccompError::Unsupported { .. })
        ));
        let bad_index = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],
            "action":"SCMP_ACT_ALLOW","args":[{"index":7,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#;
        assert!(matches!(
            Seccomp::from_json(bad_index),
            Err(SeccompError::Compile(_))
        ));
    }
}
