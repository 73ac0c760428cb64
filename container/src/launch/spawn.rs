//! The parent's side of a launch: `clone` (on the launcher thread), id maps, cgroups, the
//! go-ahead, and reading the child's report from the error channel.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;

use super::child::{self, Prepared};
use super::error::{LaunchError, Stage};
use super::prepare::{self, io_errno};
use super::process::Process;
use super::report::{
    abandon, conclude, next_report, read_report_from, report_error, with_terminal,
};
use super::spec::{Network, Spec};
use molde_layerfs::idmap::IdMapError;

/// Work for the launcher thread; it lends the stack children made with `CLONE_VM` run on.
type Job = Box<dyn FnOnce(&mut ChildStack) + Send>;

/// The thread every `clone` happens on. `PR_SET_PDEATHSIG` fires when the *thread* that made
/// the child ends, so children must not be made on short-lived threads (a tokio blocking pool
/// retires idle threads): this one lives as long as the process. It blocks every signal, so
/// each child starts with all blocked (no host handler runs in a child). Made at the first
/// launch (a failure to make it is that launch's error, and the next launch tries again).
static LAUNCHER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// The process whose launcher thread `LAUNCHER` feeds (0: none yet), claimed before `LAUNCHER`
/// is first locked. A child forked without exec is another process: its copy of the lock may
/// have been held by a thread of its parent at the fork, and the launcher thread is not in it,
/// so it never uses either (see [`clone_child`]).
static LAUNCHER_PID: AtomicU32 = AtomicU32::new(0);

/// Whether this process owns the launcher thread (claiming it if nobody does).
fn owns_launcher() -> bool {
    super::ahead::owns(&LAUNCHER_PID)
}

/// Run `job` on the launcher thread.
fn on_launcher(job: Job) -> Result<(), LaunchError> {
    let mut launcher = LAUNCHER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tx = match launcher.as_ref() {
        Some(tx) => tx,
        None => {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("molde-launcher".into())
                .spawn(move || {
                    let _ = nix::sys::signal::pthread_sigmask(
                        nix::sys::signal::SigmaskHow::SIG_SETMASK,
                        Some(&nix::sys::signal::SigSet::all()),
                        None,
                    );
                    let mut stack = ChildStack::default();
                    for job in rx {
                        job(&mut stack);
                    }
                })
                .map_err(|e| LaunchError::new(Stage::Clone, io_errno(&e)))?;
            launcher.insert(tx)
        }
    };
    if tx.send(job).is_err() {
        // The thread is gone: the next launch makes a new one.
        *launcher = None;
        return Err(LaunchError::new(Stage::Clone, Errno::EAGAIN));
    }
    Ok(())
}

/// The stack a child made with `CLONE_VM | CLONE_VFORK` runs on until its `execve`: one
/// mapping, made at the first such launch and kept (the launcher thread makes one child at a
/// time, and is suspended while it runs), with a guard page at its low end.
#[derive(Default)]
pub(crate) struct ChildStack {
    base: usize,
}

impl ChildStack {
    /// Room for the child's frames (it allocates nothing; its largest local is a PATH_MAX
    /// buffer): only the pages touched are ever backed.
    const SIZE: usize = 1 << 20;

    /// The stack's top (it grows down), mapping it first if need be.
    fn top(&mut self) -> Result<*mut libc::c_void, Errno> {
        if self.base == 0 {
            // SAFETY: a new private anonymous mapping; no existing memory is affected.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    Self::SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(Errno::last());
            }
            // SAFETY: the first page of the mapping just made, which nothing uses yet.
            if unsafe { libc::mprotect(base, 4096, libc::PROT_NONE) } < 0 {
                let errno = Errno::last();
                // SAFETY: the mapping just made, unused.
                unsafe { libc::munmap(base, Self::SIZE) };
                return Err(errno);
            }
            self.base = base as usize;
        }
        Ok((self.base + Self::SIZE) as *mut libc::c_void)
    }
}

/// The raw pointer to the prepared data, moved to the launcher thread while the caller's
/// [`Cloning`] keeps it borrowed.
struct SendPtr(*mut Prepared);
// SAFETY: the pointee outlives its use on the launcher thread and in the child: the `Cloning`
// that borrows it waits for the job to end before it lets go, and the caller touches nothing
// of it meanwhile.
unsafe impl Send for SendPtr {}

/// What `clone` gave: the child's pid (its pidfd is in the [`Cloning`]'s slot).
type CloneResult = Result<u32, LaunchError>;

/// A child being made on the launcher thread, which may still be using the [`Prepared`] data
/// it borrows (and, made with `CLONE_VM`, this process's memory): until its `execve` or exit
/// the launcher thread is suspended in `clone`. Holds the go-ahead's write end. Dropping it
/// (on a path that did not [`finish`](Cloning::finish)) closes the go-ahead, kills a child it
/// knows of and waits for the job: the borrowed data is never freed under the child.
pub(crate) struct Cloning<'a> {
    rx: Option<mpsc::Receiver<CloneResult>>,
    sync_w: Option<OwnedFd>,
    /// Where the kernel writes the child's pidfd before the child runs (-1 until then): a
    /// child that never reaches its exec can be killed through it while the thread that made
    /// it is still suspended in `clone`.
    pidfd: Arc<AtomicI32>,
    /// The child's pid, once its first report told it.
    pid: Option<u32>,
    _prepared: std::marker::PhantomData<&'a mut Prepared>,
}

impl Cloning<'_> {
    /// Let the child go (after the id maps and cgroups are written).
    pub(crate) fn go(&mut self) -> Result<(), LaunchError> {
        let Some(sync_w) = self.sync_w.take() else {
            return Err(LaunchError::new(Stage::Sync, Errno::EBADF));
        };
        nix::unistd::write(&sync_w, b"g").map_err(|e| LaunchError::new(Stage::Sync, e))?;
        Ok(())
    }

    /// Wait for `clone` to return on the launcher thread (with `CLONE_VFORK`: until the child
    /// has exec'd or exited); its pid and pidfd. A child still waiting for the go-ahead gets
    /// EOF and exits.
    pub(crate) fn finish(mut self) -> Result<(u32, OwnedFd), LaunchError> {
        self.wait_clone()
    }

    /// Give up on the child: kill it if it is known to exist, wait for the clone, reap it.
    /// Returns `e`.
    pub(crate) fn give_up(mut self, e: LaunchError) -> LaunchError {
        self.stop();
        e
    }

    fn wait_clone(&mut self) -> Result<(u32, OwnedFd), LaunchError> {
        self.sync_w = None;
        let Some(rx) = self.rx.take() else {
            return Err(LaunchError::new(Stage::Clone, Errno::ECHILD));
        };
        let pid = rx
            .recv()
            .map_err(|_| LaunchError::new(Stage::Clone, Errno::EAGAIN))??;
        // SAFETY: CLONE_PIDFD stored a new pidfd in the slot, which nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(self.pidfd.load(Ordering::Acquire)) };
        Ok((pid, pidfd))
    }

    /// Kill the child if it is known to exist, wait for the clone, reap the child.
    fn stop(&mut self) {
        let pidfd = self.pidfd.load(Ordering::Acquire);
        if pidfd >= 0 {
            // Not closed before `wait_clone` hands it to a Process: still the child's.
            let _ = super::pidfd::send_signal(pidfd, libc::SIGKILL);
        } else if let Some(pid) = self.pid {
            // The child is ours and not reaped (only its pidfd's waitid reaps it), so `pid`
            // still names it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Ok((pid, pidfd)) = self.wait_clone() {
            let mut process = Process::new(pid, pidfd, None, None, None);
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for Cloning<'_> {
    fn drop(&mut self) {
        if self.rx.is_some() {
            self.stop();
        }
    }
}

/// Make the child on the launcher thread: `clone` with `flags | CLONE_PIDFD`; the child runs
/// [`child::main`]. With `shares_memory` (and `prepared.shares_memory` set to match) the
/// child is made with `CLONE_VM | CLONE_VFORK` on the launcher's own child stack: nothing of
/// this process's memory is copied. `child_ends` (this process's copies of the child's
/// descriptors) are closed once `clone` returns; `sync_w` is the go-ahead.
///
/// # Safety
///
/// The returned [`Cloning`] must be finished, given up or dropped, never leaked
/// (`mem::forget`): until then the child, and the launcher thread, use `prepared`.
pub(crate) unsafe fn clone_child<'a>(
    prepared: &'a mut Prepared,
    flags: u64,
    child_ends: Vec<OwnedFd>,
    sync_w: Option<OwnedFd>,
) -> Result<Cloning<'a>, LaunchError> {
    let forked = !owns_launcher();
    if forked && prepared.handshake {
        // Cloned on this thread, which must stay free to write the id maps and cgroups while
        // the child waits: fork-style, not suspended until the child's exec.
        prepared.shares_memory = false;
    }
    let shares_memory = prepared.shares_memory;
    let (tx, rx) = mpsc::channel();
    let pidfd = Arc::new(AtomicI32::new(-1));
    if forked || (shares_memory && !prepared.handshake && on_main_thread()) {
        // On the main thread, with nothing to write while the child waits: clone right here,
        // which saves two hand-offs between threads (on an idle core each costs a wake-up).
        // The main thread's end is the process's, so the child's parent-death signal keeps
        // its meaning. Signals are blocked around the clone, as on the launcher thread. In a
        // child forked without exec (no launcher thread in it), always here: its children's
        // parent-death signal then follows this thread.
        let result = MAIN_STACK.with(|stack| {
            with_signals_blocked(|| {
                if shares_memory {
                    shared_clone(prepared, flags, &mut stack.borrow_mut(), &pidfd)
                } else {
                    raw_clone(prepared, flags, &pidfd)
                }
            })
        });
        drop(child_ends);
        let _ = tx.send(result);
        return Ok(Cloning {
            rx: Some(rx),
            sync_w,
            pidfd,
            pid: None,
            _prepared: std::marker::PhantomData,
        });
    }
    let ptr = SendPtr(prepared);
    let slot = pidfd.clone();
    let job: Job = Box::new(move |stack| {
        let ptr = ptr;
        // SAFETY: see SendPtr.
        let prepared = unsafe { &mut *ptr.0 };
        let result = if shares_memory {
            shared_clone(prepared, flags, stack, &slot)
        } else {
            raw_clone(prepared, flags, &slot)
        };
        // After `clone` (and with CLONE_VFORK, after the child's exec): the error channel's
        // EOF now waits only for the child.
        drop(child_ends);
        let _ = tx.send(result);
    });
    on_launcher(job)?;
    Ok(Cloning {
        rx: Some(rx),
        sync_w,
        pidfd,
        pid: None,
        _prepared: std::marker::PhantomData,
    })
}

thread_local! {
    /// The child stack of launches made on the main thread.
    static MAIN_STACK: std::cell::RefCell<ChildStack> = std::cell::RefCell::new(ChildStack::default());
}

/// Whether this is the process's main thread (its thread id is the process id).
fn on_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}

/// Run `f` with every signal blocked in this thread, then restore the thread's mask.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    );
    let out = f();
    if blocked.is_ok() {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    out
}

/// Where a `CLONE_VM` child starts, on its own stack.
extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` pointer `shared_clone` passed, alive until this child
    // execs or exits (see SendPtr).
    let prepared = unsafe { &mut *arg.cast::<Prepared>() };
    child::main(prepared)
}

/// `clone(CLONE_VM | CLONE_VFORK | flags)` on the child stack: returns once the child has
/// exec'd or exited.
fn shared_clone(
    prepared: &mut Prepared,
    flags: u64,
    stack: &mut ChildStack,
    pidfd: &AtomicI32,
) -> CloneResult {
    super::thread_caps::fit(prepared)?;
    let top = stack.top().map_err(|e| LaunchError::new(Stage::Clone, e))?;
    let dumpable = host_dumpable();
    let all =
        flags | (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD) as u64;
    // SAFETY: the child runs `child_entry` on `top`, a stack nothing else uses (this thread is
    // suspended until the child execs or exits); it shares this process's memory but writes
    // only to its stack and to `prepared`, which nobody else touches meanwhile, makes raw
    // syscalls only, and runs no signal handler (all signals blocked, then defaulted). With
    // CLONE_PIDFD glibc's clone stores the pidfd at the parent_tid argument (`pidfd`, which
    // outlives the call), before the child runs.
    let ret = unsafe {
        libc::clone(
            child_entry,
            top,
            all as libc::c_int,
            (prepared as *mut Prepared).cast::<libc::c_void>(),
            pidfd.as_ptr(),
        )
    };
    let errno = Errno::last();
    // The child's change of ids (setresuid...) made the shared memory, the host's,
    // non-dumpable (the kernel's commit_creds): the host gets its own setting back now that
    // the child has its own memory.
    restore_dumpable(dumpable);
    if ret < 0 {
        return Err(LaunchError::new(Stage::Clone, errno));
    }
    Ok(ret as u32)
}

/// This process's dumpable setting before its first `CLONE_VM` launch.
fn host_dumpable() -> Option<libc::c_int> {
    static DUMPABLE: std::sync::OnceLock<Option<libc::c_int>> = std::sync::OnceLock::new();
    *DUMPABLE.get_or_init(|| {
        // SAFETY: plain integer arguments.
        let d = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        // Only 0 and 1 can be set back with prctl.
        matches!(d, 0 | 1).then_some(d)
    })
}

/// Set this process's dumpable setting back to `dumpable` if it changed.
fn restore_dumpable(dumpable: Option<libc::c_int>) {
    let Some(d) = dumpable else { return };
    // SAFETY: plain integer arguments.
    unsafe {
        if libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != d {
            libc::prctl(libc::PR_SET_DUMPABLE, d as libc::c_ulong, 0, 0, 0);
        }
    }
}

/// `struct clone_args` of `clone3(2)`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn raw_clone(prepared: &mut Prepared, flags: u64, slot: &AtomicI32) -> CloneResult {
    super::thread_caps::fit(prepared)?;
    let args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: slot.as_ptr() as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: fork-like clone3 (no stack given): the child continues on a copy of this stack
    // and never returns from child::main.
    let mut ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 && Errno::last() == Errno::ENOSYS {
        // SAFETY: fork-like clone; with CLONE_PIDFD the pidfd is stored at the parent_tid
        // argument.
        ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::CLONE_PIDFD as u64 | libc::SIGCHLD as u64) as libc::c_ulong,
                0usize,
                slot.as_ptr(),
                0usize,
                0usize,
            )
        };
    }
    match ret {
        0 => child::main(prepared),
        r if r < 0 => Err(LaunchError::new(Stage::Clone, Errno::last())),
        pid => Ok(pid as u32),
    }
}

/// Start a container's first process as `spec` says. Returns once the program has been
/// exec'd (or the init has started it), or with the setup step that failed.
pub fn spawn(spec: &Spec) -> Result<Process, LaunchError> {
    let (mut prepared, mut side) = prepare::spawn(spec)?;
    let mut flags =
        (libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWCGROUP)
            as u64;
    let joins_netns = prepared.root.as_ref().is_some_and(|r| r.netns >= 0);
    let joins_mntns = prepared.root.as_ref().is_some_and(|r| r.mntns >= 0);
    // A child joining a mount namespace made ahead does not copy the host's.
    if !joins_mntns {
        flags |= libc::CLONE_NEWNS as u64;
    }
    if spec.network == Network::Isolated && !joins_netns {
        flags |= libc::CLONE_NEWNET as u64;
    }
    if spec.user_namespace.is_some() {
        flags |= libc::CLONE_NEWUSER as u64;
    }
    let joins_userns = spec.join_userns.is_some();
    if joins_userns {
        // Made in the joined user namespace by the child itself (`child::join`).
        flags = 0;
    }
    // With id maps or cgroups to write, the child announces itself (its host pid comes with
    // the report's credentials) and waits: with CLONE_VFORK the launcher thread stays in
    // `clone` until the exec, so they are written from here. Without, it goes on at once. An
    // init never execs: it is made fork-style.
    let handshake = (spec.user_namespace.is_some() && !joins_userns)
        || !spec.cgroup_procs.is_empty()
        || spec.before_run.is_some();
    prepared.handshake = handshake;
    // A child that joins a user namespace never execs (it stays as the supervisor).
    prepared.shares_memory = !spec.init && !joins_userns;
    let child_ends = std::mem::take(&mut side.child_ends);
    // SAFETY: `cloning` is finished or given up on every path below (or dropped, which gives
    // up), before `prepared` goes.
    let mut cloning = unsafe { clone_child(&mut prepared, flags, child_ends, side.sync_w.take())? };
    if handshake {
        let pid = match read_report_from(&side.err_r) {
            Ok(Some(((0, _, _), Some(pid)))) => pid,
            Ok(Some(((0, _, _), None))) => {
                return Err(cloning.give_up(LaunchError::new(Stage::Sync, Errno::ESRCH)));
            }
            Ok(Some(((stage, errno, index), _))) => {
                return Err(cloning.give_up(report_error(&side, stage, errno, index)));
            }
            // No child: `clone` failed (its error), or the child died before a word.
            Ok(None) => {
                return Err(match cloning.finish() {
                    Err(e) => e,
                    Ok((pid, pidfd)) => abandon(
                        &mut Process::new(pid, pidfd, None, None, None),
                        LaunchError::new(Stage::Sync, Errno::EPIPE),
                    ),
                });
            }
            Err(e) => return Err(cloning.give_up(e)),
        };
        cloning.pid = Some(pid);
        if let Err(e) = release(spec, pid).and_then(|()| cloning.go()) {
            return Err(cloning.give_up(e));
        }
    }
    // With init, the program (init's child) first reports that it forked (stage 0); the
    // credentials of that report give its host pid, the process an exec joins (the init is not
    // dumpable, so an unprivileged caller cannot open its namespaces).
    let mut program_pid = None;
    let mut terminal = None;
    let report = loop {
        match next_report(&side.err_r, &mut terminal) {
            Ok(Some(((0, _, _), sender))) if spec.init || joins_userns => match sender {
                Some(program) => program_pid = Some(program),
                None => {
                    return Err(cloning.give_up(LaunchError::new(Stage::InitFork, Errno::ESRCH)));
                }
            },
            Ok(got) => break got.map(|(report, _)| report),
            Err(e) => return Err(cloning.give_up(e)),
        }
    };
    let (pid, pidfd) = cloning.finish()?;
    // From here on a failure must not leave the child behind: Process's Drop kills and reaps.
    let mut process = Process::new(
        pid,
        pidfd,
        side.stdin.take(),
        side.stdout.take(),
        side.stderr.take(),
    );
    if let Some(program) = program_pid {
        process.set_program_pid(program);
    }
    conclude(&mut process, &side, Ok(report))?;
    with_terminal(&mut process, spec.terminal.is_some(), terminal)?;
    Ok(process)
}

/// Write the id maps and cgroup membership (the child waits for the go-ahead meanwhile).
fn release(spec: &Spec, pid: u32) -> Result<(), LaunchError> {
    if let Some(maps) = spec
        .user_namespace
        .as_ref()
        .filter(|_| spec.join_userns.is_none())
    {
        maps.write_for(pid).map_err(|e| map_error(e, pid))?;
    }
    let pid_text = pid.to_string();
    for fd in &spec.cgroup_procs {
        nix::unistd::write(fd, pid_text.as_bytes())
            .map_err(|e| LaunchError::new(Stage::Cgroup, e))?;
    }
    if let Some(before) = &spec.before_run {
        (before.0)(pid).map_err(|e| LaunchError::new(Stage::Prepare, io_errno(&e)))?;
    }
    Ok(())
}

/// The launch error of a map that could not be written: the stage, the errno and the file
/// or helper (`newuidmap`/`newgidmap`, whose refusal is EPERM).
fn map_error(e: IdMapError, pid: u32) -> LaunchError {
    let (stage, errno, path) = match &e {
        IdMapError::Write { path, source } => {
            let stage = if path.ends_with("uid_map") {
                Stage::UidMap
            } else {
                Stage::GidMap
            };
            (stage, io_errno(source), path.clone())
        }
        IdMapError::Spawn { tool, source } => (tool_stage(tool), io_errno(source), tool.into()),
        IdMapError::Refused { tool, .. } => (tool_stage(tool), Errno::EPERM, tool.into()),
        IdMapError::Read { path, source } => (Stage::UidMap, io_errno(source), path.clone()),
    };
    tracing::debug!(pid, error = %e, "writing the id maps failed");
    LaunchError::at(stage, errno, path)
}

fn tool_stage(tool: &str) -> Stage {
    if tool == "newuidmap" {
        Stage::UidMap
    } else {
        Stage::GidMap
    }
}
