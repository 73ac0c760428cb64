//! start and wait: launch the container's process over its writable layer, collect its end.

use std::time::{Duration, Instant};

use super::Container;
use super::stop::foreign_pidfd;
use super::timeout::{Outcome, RunTimeout};
use crate::config;
use crate::error::{ContainerError, io_err};
use crate::launch::pidfd::poll_exit;
use crate::launch::{self, ContainerMount, ExitStatus, IdMaps, MountKind, Network, Rlimit, Spec};
use crate::record::{self, MountRecord, Record, State};
use crate::volume::Volume;
use molde_layerfs::mount::Mount;

impl Container {
    /// Start the container's process (from created, or again from exited: a restart keeps
    /// the writable layer and its changes).
    pub fn start(&mut self) -> Result<(), ContainerError> {
        self.check_not_removed("start")?;
        let guard = record::lock(&self.paths)?;
        // The record file is this handle's; only the state may have changed.
        let mut current = self.record.clone();
        current.reload_state(&self.paths)?;
        if !matches!(current.state, State::Created | State::Exited) {
            return Err(self.state_error(&current, "start"));
        }
        let Some(owner) = record::try_own(&self.paths)? else {
            return Err(ContainerError::State {
                id: self.id.clone(),
                state: "owned by another handle".into(),
                op: "start",
            });
        };
        let spec = self.spec()?;
        let mut spec = spec;
        let cgroup = self.make_cgroup()?;
        if let Some(cg) = &cgroup {
            spec.cgroup_procs = cg.procs_files().map_err(|source| ContainerError::Cgroup {
                id: self.id.clone(),
                source,
            })?;
        }
        let mut pump = None;
        if let Some(config) = self.record.run.logs {
            let (out, err, p) = crate::logs::pump::start(self.paths.dir().to_owned(), config)
                .map_err(|source| ContainerError::Process {
                    id: self.id.clone(),
                    op: "starting the log pump",
                    source,
                })?;
            spec.stdout = launch::Stdio::Fd(out);
            spec.stderr = launch::Stdio::Fd(err);
            pump = Some(p);
        }
        let pending = super::networking::prepare(
            &self.store,
            &self.id,
            &self.paths,
            &self.record.run.network,
            &mut spec,
        )?;
        let mut process = match launch::spawn(&spec) {
            Ok(p) => p,
            Err(e) => return Err(pending.take_error().map_or(e.into(), Into::into)),
        };
        // The pump sees the end once the container's processes closed their copies.
        drop(spec);
        let net = match pending.serve(process.pidfd()) {
            Ok(net) => net,
            Err(e) => {
                let _ = process.kill();
                let _ = process.wait();
                return Err(e);
            }
        };
        // The timeout holds even if nobody waits: its watchdog kills the process at the
        // deadline.
        let timeout = match self.record.run.timeout_ms {
            Some(ms) => match RunTimeout::arm(&process, Duration::from_millis(ms)) {
                Ok(t) => Some(t),
                Err(source) => {
                    // Without its watchdog the timeout would not hold: the start fails (the
                    // cgroup, dropped, is removed; the record was not touched yet).
                    let _ = process.kill();
                    let _ = process.wait();
                    return Err(ContainerError::Process {
                        id: self.id.clone(),
                        op: "starting the timeout watchdog",
                        source,
                    });
                }
            },
            None => None,
        };
        let pid = process.pid();
        let start = record::pid_info(pid).map(|(s, _)| s);
        if let Err(e) = super::published::persist(&self.paths, &net, pid, start) {
            let _ = process.kill();
            let _ = process.wait();
            return Err(e);
        }
        let mut r = current;
        r.state = State::Running;
        r.pid = Some(pid);
        r.pid_start = start;
        r.program_pid = (process.program_pid() != pid).then(|| process.program_pid());
        r.program_pid_start = r
            .program_pid
            .and_then(|p| record::pid_info(p).map(|(s, _)| s));
        r.started = Some(molde_image::builder::now_rfc3339());
        r.exit_code = None;
        r.exit_signal = None;
        r.write_state(&self.paths)?;
        drop(guard);
        self.record = r;
        self.timeout = timeout;
        self.process = Some(process);
        self.cgroup = cgroup;
        self.owner = Some(owner);
        self.net = Some(net);
        if pump.is_some() {
            self.log_pump = pump;
        }
        Ok(())
    }

    /// Wait for the container's process to end (killing it at its timeout, then failing with
    /// [`ContainerError::TimedOut`]). For a container started by another process, waits for
    /// its end without learning its code.
    pub fn wait(&mut self) -> Result<super::Status, ContainerError> {
        let owned = self.process.is_some();
        self.wait_inner(true)?;
        if owned && self.process.is_none() {
            // This handle collected its own process and recorded the end: the record is
            // current.
            if self.removed {
                return Ok(super::Status::Removed);
            }
            return Ok(super::Status::from_record(&self.record));
        }
        self.status()
    }

    /// Wait at most `timeout`; `None` if still running then. A run killed at its own
    /// timeout meanwhile fails with [`ContainerError::TimedOut`], as with [`Container::wait`].
    pub fn wait_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<super::Status>, ContainerError> {
        self.wait_until(Instant::now() + timeout, true)
    }

    /// Wait for this handle's process until `limit`, or its own deadline if sooner (which,
    /// passed, expires the run). `timeout_is_error`: a run that timed out is an error.
    pub(crate) fn wait_until(
        &mut self,
        limit: Instant,
        timeout_is_error: bool,
    ) -> Result<Option<super::Status>, ContainerError> {
        let until = match &self.timeout {
            Some(t) if t.deadline() < limit => t.deadline(),
            _ => limit,
        };
        let id = self.id.clone();
        let Some(p) = self.process.as_mut() else {
            return self.wait_foreign(Some(limit.saturating_duration_since(Instant::now())));
        };
        let got = p
            .wait_timeout(until.saturating_duration_since(Instant::now()))
            .map_err(|source| ContainerError::Process {
                id: id.clone(),
                op: "waiting",
                source,
            })?;
        match got {
            Some(st) => {
                self.conclude(st, timeout_is_error)?;
                Ok(Some(self.status()?))
            }
            None if self.timeout.as_ref().is_some_and(|t| t.deadline() <= until) => {
                self.wait_inner(timeout_is_error)?;
                Ok(Some(self.status()?))
            }
            None => Ok(None),
        }
    }

    /// Wait for a process this handle does not own (started by another process).
    fn wait_foreign(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<super::Status>, ContainerError> {
        let r = Record::read(&self.paths)?;
        if r.state == State::Running
            && let (Some(pid), Some(start)) = (r.pid, r.pid_start)
            && let Some(fd) = foreign_pidfd(pid, start)
            && !poll_exit(&fd, timeout)
        {
            return Ok(None);
        }
        Ok(Some(self.status()?))
    }

    /// Wait for this handle's process to end; at its deadline, expire it (kill) and collect
    /// it. `timeout_is_error`: a run that timed out is an error.
    pub(crate) fn wait_inner(&mut self, timeout_is_error: bool) -> Result<(), ContainerError> {
        let id = self.id.clone();
        let Some(p) = self.process.as_mut() else {
            self.wait_foreign(None)?;
            return Ok(());
        };
        let perr = |op: &'static str| {
            let id = id.clone();
            move |source| ContainerError::Process { id, op, source }
        };
        let status = match &self.timeout {
            Some(t) => match p
                .wait_timeout(t.deadline().saturating_duration_since(Instant::now()))
                .map_err(perr("waiting"))?
            {
                Some(st) => st,
                None => {
                    let fd = p
                        .pidfd()
                        .try_clone_to_owned()
                        .map_err(perr("killing at the timeout"))?;
                    t.expire(&fd).map_err(perr("killing at the timeout"))?;
                    p.wait().map_err(perr("waiting"))?
                }
            },
            None => p.wait().map_err(perr("waiting"))?,
        };
        self.conclude(status, timeout_is_error)
    }

    /// The one place a collected end is judged: timed out (the run's [`RunTimeout`] says so)
    /// or ended by itself; recorded either way. `timeout_is_error`: a timeout is an error.
    fn conclude(
        &mut self,
        status: ExitStatus,
        timeout_is_error: bool,
    ) -> Result<(), ContainerError> {
        let outcome = self
            .timeout
            .as_ref()
            .map(|t| (t.outcome(status), t.limit()));
        self.finish(status)?;
        match outcome {
            Some((Outcome::TimedOut(_), timeout)) if timeout_is_error => {
                Err(ContainerError::TimedOut {
                    id: self.id.clone(),
                    timeout,
                })
            }
            _ => Ok(()),
        }
    }

    /// Record the end of this handle's process and release what its run held.
    pub(crate) fn finish(&mut self, status: ExitStatus) -> Result<(), ContainerError> {
        self.process = None;
        self.timeout = None;
        self.net = None;
        if let Some(mut pump) = self.log_pump.take() {
            // Once the end is known, so is all the output (the pump ends at the pipes' EOF,
            // which the end of the pid namespace brings).
            pump.wait(Duration::from_secs(1));
        }
        let mut errors = Vec::new();
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all();
            if let Err(source) = cg.remove() {
                errors.push(ContainerError::Cgroup {
                    id: self.id.clone(),
                    source,
                });
            }
        }
        let updated = Record::update_known(&self.record, &self.paths, |r| {
            r.state = State::Exited;
            r.pid = None;
            r.pid_start = None;
            r.program_pid = None;
            r.program_pid_start = None;
            r.exit_code = status.code();
            r.exit_signal = status.signal().map(|s| s as i32);
            r.finished = Some(molde_image::builder::now_rfc3339());
            true
        });
        self.owner = None;
        match updated {
            Ok(r) => self.record = r,
            // Removed meanwhile by another handle.
            Err(crate::record::RecordError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                self.removed = true;
            }
            Err(e) => errors.push(e.into()),
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ContainerError::Cleanup {
                id: self.id.clone(),
                errors,
            }),
        }
    }

    pub(crate) fn check_not_removed(&self, op: &'static str) -> Result<(), ContainerError> {
        if self.removed {
            return Err(ContainerError::State {
                id: self.id.clone(),
                state: "removed".into(),
                op,
            });
        }
        Ok(())
    }

    pub(crate) fn state_error(&self, r: &Record, op: &'static str) -> ContainerError {
        ContainerError::State {
            id: self.id.clone(),
            state: super::Status::from_record(r).to_string(),
            op,
        }
    }

    fn make_cgroup(&self) -> Result<Option<crate::cgroup::Cgroup>, ContainerError> {
        let run = &self.record.run;
        if run.memory_bytes.is_none() && run.pids.is_none() && run.cpu_quota.is_none() {
            return Ok(None);
        }
        let limits = crate::cgroup::Limits {
            memory_bytes: run.memory_bytes,
            pids: run.pids,
            cpu_quota: run.cpu_quota,
        };
        crate::cgroup::Cgroup::create(&self.id, &limits)
            .map(Some)
            .map_err(|source| ContainerError::Cgroup {
                id: self.id.clone(),
                source,
            })
    }

    /// The launcher's spec for one start.
    fn spec(&self) -> Result<Spec, ContainerError> {
        let run = &self.record.run;
        let Some((program, args)) = run.argv.split_first() else {
            return Err(record::RecordError::Invalid {
                path: self.paths.record(),
                reason: "its command line (run.argv) is empty",
            }
            .into());
        };
        let mut spec = Spec::new(self.rootfs(), program.clone());
        spec.rootfs_mounts = self.snapshot.mounts.clone();
        for m in &mut spec.rootfs_mounts {
            if let Mount::Overlay(o) = m
                && let Some(work) = &o.workdir
            {
                // The writable layer is mounted `volatile`: its unmount at the container's
                // end does not sync the whole filesystem under it. Commit syncs it first.
                // The kernel leaves a marker refusing a second volatile mount; this handle
                // knows the mount is gone (the container's mount namespace ended with its
                // last process), so it clears it.
                clear_volatile_marker(work).map_err(io_err(
                    "clearing the volatile marker of the writable layer in",
                    work,
                ))?;
                o.volatile = true;
            }
        }
        if self.record.storage == record::LayerStorage::TmpfsInNamespace {
            spec.layer_tmpfs = layer_dirs(&spec.rootfs_mounts);
        }
        spec.readonly_rootfs = run.read_only_rootfs;
        for m in &run.mounts {
            spec.mounts.push(match m {
                MountRecord::Bind {
                    source,
                    target,
                    read_only,
                } => ContainerMount {
                    target: target.clone(),
                    kind: MountKind::Bind {
                        source: source.clone(),
                        read_only: *read_only,
                    },
                },
                MountRecord::Tmpfs {
                    target,
                    size_bytes,
                    mode,
                } => ContainerMount {
                    target: target.clone(),
                    kind: MountKind::Tmpfs {
                        size_bytes: *size_bytes,
                        mode: *mode,
                    },
                },
                MountRecord::Volume {
                    name,
                    target,
                    read_only,
                } => ContainerMount {
                    target: target.clone(),
                    kind: MountKind::Bind {
                        source: Volume::create(&self.store, name)?.path().to_owned(),
                        read_only: *read_only,
                    },
                },
            });
        }
        spec.hostname = run.hostname.clone();
        spec.args = args.to_vec();
        spec.env = run.env.clone();
        spec.path_dirs = config::path_dirs(&run.env);
        spec.cwd = run.cwd.clone();
        spec.uid = run.uid;
        spec.gid = run.gid;
        spec.groups = run.groups.clone();
        spec.ambient_capabilities = run.ambient_capabilities.clone();
        spec.no_new_privs = run.no_new_privileges;
        spec.seccomp = run.seccomp.clone();
        spec.landlock = run.landlock.clone();
        spec.network = if run.host_network {
            Network::Host
        } else {
            Network::Isolated
        };
        // Unprivileged: the user's subordinate ranges where it has them, else its own ids.
        spec.user_namespace = IdMaps::for_current_process().cloned();
        let stdio = |s: &Option<super::builder::Stdio>| -> Result<launch::Stdio, ContainerError> {
            match s {
                Some(s) => s.to_launch().map_err(|source| ContainerError::Process {
                    id: self.id.clone(),
                    op: "duplicating a standard stream",
                    source,
                }),
                None => Ok(launch::Stdio::Inherit),
            }
        };
        spec.stdin = stdio(&self.stdin)?;
        spec.stdout = stdio(&self.stdout)?;
        spec.stderr = stdio(&self.stderr)?;
        spec.terminal = run.tty.then_some(self.terminal_size);
        // The launcher lowers what the child could not set.
        spec.rlimits = run
            .rlimits
            .iter()
            .filter_map(|&(resource, soft, hard)| {
                Some(Rlimit {
                    resource: resource_from(resource)? as libc::__rlimit_resource_t,
                    soft,
                    hard,
                })
            })
            .collect();
        spec.init = run.init;
        Ok(spec)
    }
}

/// Remove `<workdir>/work/incompat` (overlayfs' mark of an earlier `volatile` mount), if any.
///
/// After a host crash the writable layer may have lost the writes of its last seconds (as any
/// file written without fsync does); the mount goes ahead with what the disk kept.
fn clear_volatile_marker(workdir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let work = workdir.join("work");
    let incompat = work.join("incompat");
    match std::fs::symlink_metadata(&incompat) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // overlayfs leaves `work` with mode 0: looking inside it fails without
            // CAP_DAC_OVERRIDE; open it up and look again.
            if std::fs::symlink_metadata(&work).is_err() {
                return Ok(());
            }
            std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))?;
            if std::fs::symlink_metadata(&incompat).is_err() {
                return Ok(());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))?;
        }
        Err(e) => return Err(e),
    }
    molde_layerfs::snapshot::remove_tree(&incompat)
}

/// The resource a persisted number names.
fn resource_from(n: u32) -> Option<crate::rlimit::Resource> {
    use crate::rlimit::Resource::*;
    [
        RLIMIT_AS,
        RLIMIT_CORE,
        RLIMIT_CPU,
        RLIMIT_DATA,
        RLIMIT_FSIZE,
        RLIMIT_LOCKS,
        RLIMIT_MEMLOCK,
        RLIMIT_MSGQUEUE,
        RLIMIT_NICE,
        RLIMIT_NOFILE,
        RLIMIT_NPROC,
        RLIMIT_RSS,
        RLIMIT_RTPRIO,
        RLIMIT_RTTIME,
        RLIMIT_SIGPENDING,
        RLIMIT_STACK,
    ]
    .into_iter()
    .find(|r| *r as libc::__rlimit_resource_t == n)
}

/// The directories a writable layer's tmpfs must hold for `mounts` to be made on it (an
/// overlay's upper and work directories, or the bind of an upper alone), made in the tmpfs
/// before them ([`Spec::layer_tmpfs`]).
fn layer_dirs(mounts: &[Mount]) -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    for m in mounts {
        match m {
            Mount::Overlay(o) => dirs.extend(o.upperdir.iter().chain(&o.workdir).cloned()),
            Mount::Bind { source, .. } => dirs.push(source.clone()),
        }
    }
    dirs
}
