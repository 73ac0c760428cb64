//! [`Ahead`]: things made ahead of need by a background thread (the network and mount
//! namespaces of privileged launches), handed out once each, oldest first.
//!
//! The pool belongs to the one process that first used it: a child forked without exec finds
//! it off for good and makes what it needs itself. It never takes the pool's lock, which the
//! maker thread (absent from the child) may have held at the moment of the fork: the owner is
//! claimed in an atomic before the lock is ever taken, and checked before taking it. A maker that
//! fails switches the pool off: every `take` is then `None`, and launches make what they need
//! themselves, as they would without it, until a `take` some seconds later starts a new maker
//! (the failure may have been passing: a limit such as `user.max_net_namespaces` reached for a
//! moment).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// Whether this process is the one `owner` names, claiming it if none is named yet (0). Per
/// process state behind a lock (or a once-cell) checks this first: a child forked without exec
/// is another process, whose copy of the lock may have been held by a thread of its parent at
/// the fork, forever. It must leave such state alone.
pub(crate) fn owns(owner: &AtomicU32) -> bool {
    let pid = std::process::id();
    match owner.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => true,
        Err(current) => current == pid,
    }
}

/// How many to keep ready: enough for a burst of two starts, few enough that an idle host
/// holds almost nothing.
const READY: usize = 2;

/// How long a pool whose maker failed stays off before a `take` starts a new maker.
pub(crate) const RETRY: Duration = Duration::from_secs(10);

struct State<T> {
    /// Oldest first.
    ready: VecDeque<T>,
    /// The maker thread exists (started at the first `take`).
    started: bool,
    /// Making failed, then: every `take` is `None` until `retry` has passed.
    off: Option<Instant>,
}

/// A pool of `T` kept filled by a maker thread (see the module docs).
pub(crate) struct Ahead<T> {
    /// The maker thread's name.
    name: &'static str,
    /// How long the pool stays off after the maker failed.
    retry: Duration,
    state: Mutex<State<T>>,
    /// Signalled when the maker should look again (something was taken or asked for).
    wanted: Condvar,
    /// How many were handed out, in this process and its forked ancestors.
    handed_out: AtomicU64,
    /// The process the pool belongs to (0: none yet), claimed before `state` is first locked.
    owner: AtomicU32,
}

impl<T: Send + 'static> Ahead<T> {
    /// An empty pool whose maker thread will be called `name`, off for `retry` after a
    /// failure.
    pub(crate) const fn new(name: &'static str, retry: Duration) -> Ahead<T> {
        Ahead {
            name,
            retry,
            state: Mutex::new(State {
                ready: VecDeque::new(),
                started: false,
                off: None,
            }),
            wanted: Condvar::new(),
            handed_out: AtomicU64::new(0),
            owner: AtomicU32::new(0),
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
        // Claimed before any lock: a thread holding the lock implies an owner, so a forked
        // child (another pid) returns here without touching a lock its parent's threads may
        // have held when it was made.
        if !owns(&self.owner) {
            return None;
        }
        let mut state = self.state();
        if let Some(since) = state.off {
            if since.elapsed() < self.retry {
                return None;
            }
            // Try again: the failed maker has returned.
            state.off = None;
            state.started = false;
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
            if spawned.is_err() {
                state.off = Some(Instant::now());
            }
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

    /// For the maker, which returns after: making failed with `errno`; the pool is off for a
    /// while.
    pub(crate) fn switch_off(&self, errno: Errno) {
        tracing::debug!("{} off for {:?}: {errno}", self.name, self.retry);
        let mut state = self.state();
        state.off = Some(Instant::now());
        state.ready.clear();
    }

    /// How many were handed out so far.
    pub(crate) fn handed_out(&self) -> u64 {
        self.handed_out.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    static POOL: Ahead<u32> = Ahead::new("ahead-test", Duration::from_millis(100));
    /// How many makers were started; the first fails at once.
    static MAKERS: AtomicU32 = AtomicU32::new(0);

    fn maker(pool: &'static Ahead<u32>) {
        let n = MAKERS.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            return pool.switch_off(Errno::ENOSPC);
        }
        let mut made = 0;
        loop {
            pool.wait_until_wanted();
            made += 1;
            pool.push(n * 1000 + made);
        }
    }

    /// Take until something comes or `limit` passes (the pool fills on its thread).
    fn take_within(limit: Duration) -> Option<u32> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(got) = POOL.take(maker) {
                POOL.wake();
                return Some(got);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    #[test]
    fn a_failed_maker_switches_the_pool_off_for_a_while_then_a_new_one_starts() {
        // The first maker fails: the pool is off, nothing is handed out meanwhile.
        assert_eq!(POOL.take(maker), None);
        assert_eq!(take_within(Duration::from_millis(50)), None);
        assert_eq!(MAKERS.load(Ordering::SeqCst), 1);
        // After the retry delay a take starts a second maker, whose first is handed out
        // first, each once.
        let first = take_within(Duration::from_secs(5)).expect("a second maker");
        assert_eq!(MAKERS.load(Ordering::SeqCst), 2);
        assert_eq!(first, 1001);
        let second = take_within(Duration::from_secs(5)).unwrap();
        assert_eq!(second, 1002);
        assert_eq!(POOL.handed_out(), 2);
    }
}
