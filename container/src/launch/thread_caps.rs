//! What depends on the capabilities of the thread that makes the child, read on that thread.
//!
//! Capabilities belong to threads, not processes, and a child inherits those of the thread
//! that calls `clone`: the launcher thread (or the main thread), not the embedder's thread
//! that asked for the launch. So the capability masks and the clamping of resource limits
//! ([`crate::rlimit`]) are settled by [`fit`] on the cloning thread, right before `clone`,
//! from what it holds; the caller's thread only states what is wanted.

use caps::CapSet;
use nix::errno::Errno;

use super::child::Prepared;
use super::error::{LaunchError, Stage};

/// One capability set of this thread, as bits.
fn this_thread(set: CapSet) -> u64 {
    caps::read(None, set)
        .unwrap_or_default()
        .iter()
        .filter(|c| c.index() < 64)
        .fold(0, |bits, c| bits | 1u64 << c.index())
}

/// Of `wanted`, the capabilities a child of this thread can hold: those in its bounding set,
/// and in its permitted set unless a new user namespace grants them all.
pub(crate) fn holdable(wanted: u64, new_userns: bool) -> u64 {
    let mut mask = wanted & this_thread(CapSet::Bounding);
    if !new_userns {
        mask &= this_thread(CapSet::Permitted);
    }
    mask
}

/// Settle `prepared`'s capabilities and resource limits for a child of this thread (call it
/// on the thread that will `clone`, before it does). An ambient capability this thread cannot
/// grant is an error (`EPERM`) rather than silently missing.
pub(crate) fn fit(prepared: &mut Prepared) -> Result<(), LaunchError> {
    prepared.caps = holdable(prepared.wanted_caps, prepared.new_userns);
    if prepared.ambient & !prepared.caps != 0 {
        return Err(LaunchError::new(Stage::Capabilities, Errno::EPERM));
    }
    let new_userns = prepared.new_userns;
    if let Some(root) = prepared.root.as_mut() {
        root.rlimits = crate::rlimit::launch_limits(&root.wanted_rlimits, new_userns)
            .into_iter()
            .map(|l| {
                let limit = libc::rlimit {
                    rlim_cur: l.soft,
                    rlim_max: l.hard,
                };
                (l.resource, limit)
            })
            .collect();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that dropped a capability from its own sets makes children without it,
    /// whatever the thread asking for the launch holds.
    #[test]
    fn masks_follow_the_thread_that_reads_them() {
        let chown = 1u64 << caps::Capability::CAP_CHOWN.index();
        let main_has = holdable(chown, false);
        let other = std::thread::spawn(move || {
            let _ = caps::drop(None, CapSet::Effective, caps::Capability::CAP_CHOWN);
            let _ = caps::drop(None, CapSet::Permitted, caps::Capability::CAP_CHOWN);
            holdable(chown, false)
        })
        .join()
        .unwrap();
        assert_eq!(other, 0, "the thread that dropped it cannot pass it on");
        assert_eq!(holdable(chown, false), main_has, "this thread is unchanged");
    }
}
