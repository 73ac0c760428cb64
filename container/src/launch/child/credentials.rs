//! The process's credentials: the bounding set, groups, gid and uid, then its capabilities
//! (root keeps the container's set; any other uid only the ambient ones asked for by name).

use super::Prepared;
use crate::launch::error::Stage;
use crate::launch::failure::{fail, step};
use crate::launch::sys;

/// Capability header and data of `capset(2)` (version 3: two 32-bit words).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drop from the bounding set what the container does not keep (first: dropping needs
/// `CAP_SETPCAP`, which the change of ids may take away).
pub(super) fn bound(p: &Prepared) {
    for cap in 0..=p.last_cap {
        if p.caps & (1u64 << cap) == 0 {
            match sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0) {
                Ok(_) | Err(libc::EINVAL) => {}
                Err(e) => fail(p.err_w, Stage::Capabilities, e, cap),
            }
        }
    }
}

/// Groups, gid, uid, then the capabilities held.
pub(super) fn change_ids(p: &Prepared) {
    if !p.setgroups_denied {
        // SAFETY: `groups` is valid for reads of its length.
        step!(
            p,
            Stage::Setgroups,
            0,
            sys::check(unsafe {
                libc::syscall(libc::SYS_setgroups, p.groups.len(), p.groups.as_ptr())
            })
        );
    }
    // Raw syscalls, not libc's setgid/setuid: glibc's broadcast them to all threads of the
    // parent (which do not exist here) under a lock.
    // SAFETY: plain integer argument.
    step!(
        p,
        Stage::Setgid,
        0,
        sys::check(unsafe { libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) })
    );
    step!(
        p,
        Stage::Capabilities,
        0,
        sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0)
    );
    // SAFETY: plain integer argument.
    step!(
        p,
        Stage::Setuid,
        0,
        sys::check(unsafe { libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) })
    );
    // A change of ids clears the parent-death signal: armed again (as runc does).
    step!(
        p,
        Stage::DeathSignal,
        0,
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
    );
    step!(
        p,
        Stage::Capabilities,
        0,
        sys::prctl(libc::PR_SET_KEEPCAPS, 0, 0)
    );
    // As runc, crun and Docker: root keeps `caps`; any other uid holds none but the ambient
    // ones asked for by name (the bounding set keeps `caps`, so a setuid binary such as `su`
    // still works where no_new_privs is off). Inheritable: the ambient ones only (the
    // CVE-2022-29162 lesson).
    let held = if p.uid == 0 {
        p.caps | p.ambient
    } else {
        p.ambient
    };
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |shift: u32| CapData {
        effective: (held >> shift) as u32,
        permitted: (held >> shift) as u32,
        inheritable: (p.ambient >> shift) as u32,
    };
    let data = [word(0), word(32)];
    // SAFETY: header and two data words, as capset v3 expects, living across the call.
    step!(
        p,
        Stage::Capabilities,
        0,
        sys::check(unsafe {
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr())
        })
    );
    for cap in 0..=p.last_cap {
        if p.ambient & (1u64 << cap) != 0 {
            step!(
                p,
                Stage::Capabilities,
                cap,
                sys::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong
                )
            );
        }
    }
}
