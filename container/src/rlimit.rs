//! Resource limits (`setrlimit`) for a container's processes, made safe to apply.
//!
//! Raising a hard limit above the current one needs `CAP_SYS_RESOURCE`, which a process may lack
//! even as root (a bounding set without it, as on hosts that run us in a sandbox), and always in
//! a new user namespace. [`effective`] lowers such requests to what the process may set, with a
//! warning, so that the launcher's `setrlimit` in the child cannot fail with EPERM halfway
//! through the setup. The launcher applies these rules itself: pass it the requested limits.

pub use nix::sys::resource::Resource;

/// One resource limit: `soft` is what the kernel enforces, `hard` the ceiling up to which the
/// process may raise `soft`. `u64::MAX` is unlimited (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The resource (`RLIMIT_NOFILE`, `RLIMIT_NPROC`, ...).
    pub resource: Resource,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// The limits to apply for `requested`: a hard limit above the current hard limit is lowered to
/// it when the child could not raise it (this thread lacks `CAP_SYS_RESOURCE` in its effective
/// or its bounding set, or `new_userns`: capabilities in a new user namespace do not count for
/// rlimits, which belong to the host), and a soft limit above its hard limit is lowered to the
/// hard limit; each change is logged as a warning. Limits the process may set pass unchanged.
pub fn effective(requested: &[Rlimit], new_userns: bool) -> Vec<Rlimit> {
    let raw: Vec<crate::launch::Rlimit> = requested
        .iter()
        .map(|r| crate::launch::Rlimit {
            resource: r.resource as libc::__rlimit_resource_t,
            soft: r.soft,
            hard: r.hard,
        })
        .collect();
    launch_limits(&raw, new_userns)
        .into_iter()
        .zip(requested)
        .map(|(l, r)| Rlimit {
            resource: r.resource,
            soft: l.soft,
            hard: l.hard,
        })
        .collect()
}

/// [`effective`] for the launcher's raw limits: the one set of rules, which the launcher
/// applies (callers pass the requested values through).
pub(crate) fn launch_limits(
    requested: &[crate::launch::Rlimit],
    new_userns: bool,
) -> Vec<crate::launch::Rlimit> {
    if requested.is_empty() {
        return Vec::new();
    }
    let may_raise = !new_userns && may_raise_hard_limits();
    requested
        .iter()
        .map(|r| clamp(*r, may_raise, current_hard(r.resource)))
        .collect()
}

/// The current hard limit of `resource`, if it can be read.
fn current_hard(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is valid for writes.
    (unsafe { libc::getrlimit(resource, &mut cur) } == 0).then_some(cur.rlim_max)
}

/// Whether this thread may raise hard limits: `CAP_SYS_RESOURCE` in both its effective and its
/// bounding set (the launcher's child inherits the first and can never regain it past the
/// second). Asked of the kernel (`capget`, `PR_CAPBSET_READ`) at each call: capabilities are
/// per thread and may change.
pub fn may_raise_hard_limits() -> bool {
    let has = |set| {
        caps::has_cap(None, set, caps::Capability::CAP_SYS_RESOURCE).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read this thread's capabilities; assuming no CAP_SYS_RESOURCE");
            false
        })
    };
    has(caps::CapSet::Effective) && has(caps::CapSet::Bounding)
}

/// [`effective`] for one limit, given whether hard limits may rise and the current hard limit
/// (`None` if unknown: left as requested, the kernel decides).
fn clamp(
    mut r: crate::launch::Rlimit,
    may_raise: bool,
    current_hard: Option<u64>,
) -> crate::launch::Rlimit {
    if !may_raise
        && let Some(current) = current_hard
        && r.hard > current
    {
        tracing::warn!(
            resource = ?r.resource,
            requested = r.hard,
            current,
            "hard limit lowered to the current one: raising it needs CAP_SYS_RESOURCE, which \
             this process lacks"
        );
        r.hard = current;
    }
    if r.soft > r.hard {
        tracing::warn!(
            resource = ?r.resource,
            soft = r.soft,
            hard = r.hard,
            "soft limit lowered to the hard limit"
        );
        r.soft = r.hard;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nofile(soft: u64, hard: u64) -> crate::launch::Rlimit {
        crate::launch::Rlimit {
            resource: libc::RLIMIT_NOFILE,
            soft,
            hard,
        }
    }

    #[test]
    fn without_the_capability_hard_limits_do_not_rise() {
        assert_eq!(
            clamp(nofile(100, 5000), false, Some(1024)),
            nofile(100, 1024)
        );
        assert_eq!(
            clamp(nofile(4000, 5000), false, Some(1024)),
            nofile(1024, 1024)
        );
        // Lowering is always allowed.
        assert_eq!(clamp(nofile(100, 512), false, Some(1024)), nofile(100, 512));
    }

    #[test]
    fn with_the_capability_requests_pass() {
        assert_eq!(
            clamp(nofile(100, 5000), true, Some(1024)),
            nofile(100, 5000)
        );
        assert_eq!(
            clamp(nofile(9000, 5000), true, Some(1024)),
            nofile(5000, 5000)
        );
    }

    #[test]
    fn unknown_current_limit_leaves_the_request() {
        assert_eq!(clamp(nofile(1, 2), false, None), nofile(1, 2));
    }

    /// `CAP_SYS_RESOURCE` in this thread's effective and bounding masks, as its
    /// `/proc/thread-self/status` shows them.
    fn status_says() -> bool {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let mask = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
                .unwrap()
        };
        mask("CapEff:") & mask("CapBnd:") & (1 << 24) != 0
    }

    /// The answer is this thread's, asked again at each call: a thread that drops the
    /// capability from its effective set is told no, the others are not affected.
    #[test]
    fn the_capability_check_is_per_thread_and_current() {
        let here = may_raise_hard_limits();
        assert_eq!(here, status_says());
        std::thread::spawn(|| {
            assert_eq!(may_raise_hard_limits(), status_says());
            let _ = caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_RESOURCE,
            );
            assert!(!status_says());
            assert!(!may_raise_hard_limits());
        })
        .join()
        .unwrap();
        assert_eq!(may_raise_hard_limits(), here);
    }
}
