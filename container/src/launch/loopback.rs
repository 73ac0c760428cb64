//! Loopback up in the current network namespace (raw syscalls: the child after `clone` calls
//! it, as does the maker of network namespaces).

use super::sys::{self, Sys};

/// Bring up the loopback interface of the current network namespace.
pub(crate) fn loopback_up() -> Sys {
    // SAFETY: plain integer arguments.
    let sock = sys::check(unsafe {
        libc::syscall(
            libc::SYS_socket,
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        )
    })? as i32;
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq living across the calls.
    let result = sys::check(unsafe {
        libc::syscall(
            libc::SYS_ioctl,
            sock,
            libc::SIOCGIFFLAGS,
            &mut req as *mut libc::ifreq,
        )
    })
    .and_then(|_| {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above.
        sys::check(unsafe {
            libc::syscall(
                libc::SYS_ioctl,
                sock,
                libc::SIOCSIFFLAGS,
                &req as *const libc::ifreq,
            )
        })
    });
    sys::close(sock);
    result
}
