//! [`Ahead`]: things made ahead of need by a background thread (the network and mount
//! namespaces of privileged launches), handed out once each, oldest first.
//!
//! The pool belongs to one process: a child forked without exec gets a fresh one (its copies
//! of what its parent made are its parent's too, and the maker thread is gone). A maker that
//! fails switches the pool off for the rest of the process: every `take` is then `None`, and
//! launches make what they need themselves, as they would without it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use nix::errno::Errno;

/// How many to keep ready: enough for a burst of two starts, few enough that an idle host
/// holds almost nothing.
const READY: usize = 2;

struct State<T> {
    /// The process the pool belongs to.
    pid: u32,
    /// Oldest first.
    ready: VecDeque<T>,
    /// The maker thread exists (started at the first `take`).
    started: bool,
    /// Making failed: every `take` is `None`.
    off: bool,
}

/// A pool of `T` kept filled by a maker thread (see the module docs).
pub(crate) struct Ahead<T> {
    /// The maker thread's name.
    name: &'static str,
    state: Mutex<State<T>>,
    /// Signalled when the maker should look again (something was taken or asked for).
    wanted: Condvar,
    /// How many were handed out, in this process and its forked ancestors.
    handed_out: AtomicU64,
}

impl<T: Send + 'static> Ahead<T> {
    /// An empty pool whose maker thread will be called `name`.
    pub(crate) const fn new(name: &'static str) -> Ahead<T> {
        Ahead {
            name,
            state: Mutex::new(State {
                pid: 0,
                ready: VecDeque::new(),
                started: false,
                off: false,
            }),
            wanted: Condvar::new(),
            handed_out: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The oldest one ready, if any. The first call of a process starts the maker thread,
    /// which blocks every signal and runs `maker` (and returns `None`). The maker is not
    /// asked for the next one here: see [`Ahead::wake`].
    pub(crate) fn take(&'static self, maker: fn(&'static Ahead<T>)) -> Option<T> {
        let mut state = self.state();
        let pid = std::process::id();
        if state.pid != pid {
            // First use, or a forked child: nothing made by another process is handed out.
            state.pid = pid;
            state.ready.clear();
            state.started = false;
            state.off = false;
        }
        if state.off {
            return None;
        }
        if !state.started {
            state.started = true;
            let spawned = std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || {
                    let _ = nix::sys::signal::pthread_sigmask(
                        nix::sys::signal::SigmaskHow::SIG_SETMASK,
                        Some(&nix::sys::signal::SigSet::all()),
                        None,
                    );
                    maker(self);
                });
            state.off = spawned.is_err();
            return None;
        }
        let got = state.ready.pop_front();
        if got.is_some() {
            self.handed_out.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    /// Ask the maker to fill the pool again.
    pub(crate) fn wake(&self) {
        self.wanted.notify_one();
    }

    /// For the maker: wait until the pool wants one more (fewer than [`READY`] ready).
    pub(crate) fn wait_until_wanted(&self) {
        let mut state = self.state();
        while state.ready.len() >= READY {
            state = self
                .wanted
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// For the maker: one more made.
    pub(crate) fn push(&self, made: T) {
        self.state().ready.push_back(made);
    }

    /// For the maker, which returns after: making failed with `errno`; the pool is off for the
    /// rest of the process.
    pub(crate) fn switch_off(&self, errno: Errno) {
        tracing::debug!("{} off: {errno}", self.name);
        let mut state = self.state();
        state.off = true;
        state.ready.clear();
    }

    /// How many were handed out so far.
    pub(crate) fn handed_out(&self) -> u64 {
        self.handed_out.load(Ordering::Relaxed)
    }
}
