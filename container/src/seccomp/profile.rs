//! A seccomp profile as Docker writes it: the OCI runtime spec's `LinuxSeccomp` fields (read
//! into oci-spec's types) plus, per rule, Docker's `includes` / `excludes` conditions on the
//! container's capabilities, the architecture and the kernel version. [`Profile::rules_for`]
//! settles those conditions for one container.

use std::str::FromStr;

use caps::Capability;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSyscall};
use serde::{Deserialize, Serialize};

/// A seccomp profile in Docker's (or the OCI runtime spec's) JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The action for a system call no rule matches.
    pub default_action: LinuxSeccompAction,
    /// The errno of `SCMP_ACT_ERRNO` as the default action (default: `EPERM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// The rules.
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

/// One rule: oci-spec's `LinuxSyscall` (names, action, errno, argument filters) and Docker's
/// conditions for it to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The system calls, their action and argument filters.
    #[serde(flatten)]
    pub syscall: LinuxSyscall,
    /// The rule applies only where all of these hold.
    #[serde(default, skip_serializing_if = "Condition::is_empty")]
    pub includes: Condition,
    /// The rule does not apply where any of these holds.
    #[serde(default, skip_serializing_if = "Condition::is_empty")]
    pub excludes: Condition,
}

/// Docker's conditions on a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Capabilities of the container (`CAP_SYS_ADMIN`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    /// Architectures, as Docker names them (`amd64`, `arm64`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arches: Vec<String>,
    /// A minimum kernel version (`4.8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

impl Condition {
    fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }
}

/// What a profile's conditions are judged against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// The container's capabilities (bits).
    pub caps: u64,
    /// Docker's name of this architecture.
    pub arch: &'static str,
    /// This kernel's (major, minor) version.
    pub kernel: (u32, u32),
}

impl Target {
    /// This machine, for a container with the capabilities `caps`.
    pub(crate) fn here(caps: u64) -> Target {
        Target {
            caps,
            arch: if cfg!(target_arch = "aarch64") {
                "arm64"
            } else {
                "amd64"
            },
            kernel: nix::sys::utsname::uname()
                .ok()
                .and_then(|u| version(&u.release().to_string_lossy()))
                .unwrap_or((0, 0)),
        }
    }

    fn has_cap(&self, name: &str) -> bool {
        Capability::from_str(name).is_ok_and(|c| c.index() < 64 && self.caps & 1 << c.index() != 0)
    }
}

/// `major.minor` of a kernel release such as `6.1.0-13-amd64`.
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl Profile {
    /// The profile in an OCI runtime spec's `linux.seccomp` (no conditions).
    pub fn from_oci(seccomp: &LinuxSeccomp) -> Profile {
        Profile {
            default_action: seccomp.default_action(),
            default_errno_ret: seccomp.default_errno_ret(),
            syscalls: seccomp
                .syscalls()
                .iter()
                .flatten()
                .map(|s| Rule {
                    syscall: s.clone(),
                    includes: Condition::default(),
                    excludes: Condition::default(),
                })
                .collect(),
        }
    }

    /// The rules that apply to `target`, in order.
    pub(crate) fn rules_for(&self, target: &Target) -> impl Iterator<Item = &LinuxSyscall> {
        self.syscalls
            .iter()
            .filter(move |r| applies(r, target))
            .map(|r| &r.syscall)
    }
}

fn applies(rule: &Rule, t: &Target) -> bool {
    let inc = &rule.includes;
    let exc = &rule.excludes;
    let kernel_ok = inc
        .min_kernel
        .as_deref()
        .and_then(version)
        .is_none_or(|min| t.kernel >= min);
    inc.caps.iter().all(|c| t.has_cap(c))
        && (inc.arches.is_empty() || inc.arches.iter().any(|a| a == t.arch))
        && kernel_ok
        && !exc.caps.iter().any(|c| t.has_cap(c))
        && !exc.arches.iter().any(|a| a == t.arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn conditions_select_rules_by_capability_arch_and_kernel() {
        let admin = 1u64 << Capability::CAP_SYS_ADMIN.index();
        let t = |caps, arch, kernel| Target { caps, arch, kernel };
        let r = rule(
            r#"{"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}"#,
        );
        assert!(applies(&r, &t(admin, "amd64", (6, 1))));
        assert!(!applies(&r, &t(0, "amd64", (6, 1))));
        let r = rule(
            r#"{"names":["clone"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"],"arches":["s390x"]}}"#,
        );
        assert!(applies(&r, &t(0, "amd64", (6, 1))));
        assert!(!applies(&r, &t(admin, "amd64", (6, 1))));
        assert!(!applies(&r, &t(0, "s390x", (6, 1))));
        let r = rule(
            r#"{"names":["ptrace"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8","arches":["amd64","arm64"]}}"#,
        );
        assert!(applies(&r, &t(0, "arm64", (4, 8))));
        assert!(!applies(&r, &t(0, "arm64", (4, 7))));
        assert!(!applies(&r, &t(0, "x86", (6, 1))));
        assert_eq!(version("6.1.0-13-amd64"), Some((6, 1)));
        assert_eq!(version("junk"), None);
    }
}
