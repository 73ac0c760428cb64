//! How the child reports a failed setup step: (stage, errno, index) on the error channel,
//! then `_exit`. Raw syscalls only (the child after `clone`, the init, the terminal's setup).

use super::error::Stage;
use super::sys;

/// A report on the error channel: the stage, the errno and an index (which mount, which exec
/// candidate) the parent uses to name the path.
pub(crate) const REPORT_LEN: usize = 12;

/// Report `stage`/`errno`/`index` to the parent and exit.
pub(crate) fn fail(err_w: i32, stage: Stage, errno: i32, index: u32) -> ! {
    let mut buf = [0u8; REPORT_LEN];
    buf[0..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&errno.to_ne_bytes());
    buf[8..12].copy_from_slice(&index.to_ne_bytes());
    let _ = sys::write(err_w, &buf);
    sys::exit(127)
}

/// `$call`'s value, or its errno reported as `$stage` (with `$index`) by [`fail`].
macro_rules! step {
    ($p:expr, $stage:expr, $index:expr, $call:expr) => {
        match $call {
            Ok(v) => v,
            Err(errno) => {
                use $crate::launch::failure::ErrFd as _;
                $crate::launch::failure::fail($p.err_w(), $stage, errno, $index as u32)
            }
        }
    };
}
pub(crate) use step;

/// Where `step!` reports: the error channel's descriptor.
pub(crate) trait ErrFd {
    /// The error channel's descriptor.
    fn err_w(&self) -> i32;
}

impl ErrFd for i32 {
    fn err_w(&self) -> i32 {
        *self
    }
}
