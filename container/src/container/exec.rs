//! exec: a further process in a running container (joining its namespaces and cgroup), with
//! the container's environment, working directory and user unless overridden.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::builder::Stdio;
use super::child::Output;
use super::{Container, Status};
use crate::config::{self, EnvOp};
use crate::error::ContainerError;
use crate::launch::{self, ChildStderr, ChildStdin, ChildStdout, ExecSpec, ExitStatus, Process};

/// Builds a process to run in a running container, like `std::process::Command`. Made by
/// [`Container::exec`].
#[derive(Debug)]
pub struct ExecBuilder<'a> {
    container: &'a Container,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<EnvOp>,
    cwd: Option<PathBuf>,
    user: Option<String>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    terminal: Option<launch::WindowSize>,
}

/// A process exec'd into a running container. Dropping it kills the process.
#[derive(Debug)]
pub struct ExecChild {
    /// Its stdin, when piped.
    pub stdin: Option<ChildStdin>,
    /// Its stdout, when piped.
    pub stdout: Option<ChildStdout>,
    /// Its stderr, when piped.
    pub stderr: Option<ChildStderr>,
    /// The host's end of its terminal ([`ExecBuilder::tty`]).
    pub terminal: Option<launch::Terminal>,
    id: String,
    process: Process,
}

pub(crate) fn status_of(st: ExitStatus) -> Status {
    Status::Exited {
        code: st.code(),
        signal: st.signal().map(|s| s as i32),
    }
}

impl Container {
    /// A further process to run in this running container.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> ExecBuilder<'_> {
        ExecBuilder {
            container: self,
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            user: None,
            stdin: None,
            stdout: None,
            stderr: None,
            terminal: None,
        }
    }
}

/// The `cgroup.procs` files of the container's cgroup, which an exec'd process joins (so that
/// the container's limits and `kill_all` cover it too): this handle's own cgroup, or the one
/// its starter made.
fn cgroup_procs(c: &Container) -> Result<Vec<std::os::fd::OwnedFd>, ContainerError> {
    use crate::cgroup::{Cgroup, Parent};
    let cerr = |source| ContainerError::Cgroup {
        id: c.id.clone(),
        source,
    };
    if let Some(cg) = &c.cgroup {
        return cg.procs_files().map_err(cerr);
    }
    let run = &c.record.run;
    if run.memory_bytes.is_none() && run.pids.is_none() && run.cpu_quota.is_none() {
        // Started without limits: no cgroup was made.
        return Ok(Vec::new());
    }
    match Cgroup::open_in(&Parent::default(), &c.id).map_err(cerr)? {
        Some(cg) => {
            let files = cg.procs_files();
            // Not ours: dropping it would remove it.
            cg.keep();
            files.map_err(cerr)
        }
        None => Ok(Vec::new()),
    }
}

impl ExecBuilder<'_> {
    /// Add an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }
    /// Add arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }
    /// Set an environment variable (over the container's).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push(EnvOp::Set(
            key.as_ref().to_owned(),
            value.as_ref().to_owned(),
        ));
        self
    }
    /// The working directory (default: the container's).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }
    /// The user (default: the container's), resolved in the container's `/etc/passwd`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    /// Standard input (default: inherit; null for `output`).
    pub fn stdin(mut self, s: impl Into<Stdio>) -> Self {
        self.stdin = Some(s.into());
        self
    }
    /// Standard output (default: inherit; piped for `output`).
    pub fn stdout(mut self, s: impl Into<Stdio>) -> Self {
        self.stdout = Some(s.into());
        self
    }
    /// Standard error (default: inherit; piped for `output`).
    pub fn stderr(mut self, s: impl Into<Stdio>) -> Self {
        self.stderr = Some(s.into());
        self
    }

    /// Run it on a terminal of its own (`docker exec -it`), of 24 rows and 80 columns unless
    /// [`ExecBuilder::terminal_size`] says otherwise: the container's devpts gives it, as
    /// [`crate::ContainerBuilder::tty`] describes; the host's end is [`ExecChild::terminal`].
    pub fn tty(mut self, yes: bool) -> Self {
        self.terminal = yes.then(|| self.terminal.unwrap_or_default());
        self
    }
    /// The terminal's window size at start (implies [`ExecBuilder::tty`]).
    pub fn terminal_size(mut self, rows: u16, cols: u16) -> Self {
        self.terminal = Some(launch::WindowSize { rows, cols });
        self
    }

    /// Start the process.
    pub fn spawn(self) -> Result<ExecChild, ContainerError> {
        let c = self.container;
        let id = c.id.clone();
        let (pid, start) = c.exec_target()?;
        let run = &c.record.run;
        let (uid, gid, groups, home) = match &self.user {
            Some(u) => {
                let ident = config::resolve_identity(&c.view(), Some(u), None)?;
                (ident.uid, ident.gid, ident.groups, ident.home)
            }
            None => (run.uid, run.gid, run.groups.clone(), None),
        };
        let base: Vec<String> = run
            .env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        let mut ops = self.env.clone();
        if let Some(h) = &home {
            ops.insert(0, EnvOp::Set("HOME".into(), h.clone().into_os_string()));
        }
        let env = config::merge_env(&base, &ops, home.as_deref());
        let mut spec = ExecSpec::new(self.program.clone());
        spec.args = self.args.clone();
        spec.path_dirs = config::path_dirs(&env);
        spec.env = env;
        spec.cwd = self.cwd.clone().unwrap_or_else(|| run.cwd.clone());
        spec.uid = uid;
        spec.gid = gid;
        spec.groups = groups;
        spec.ambient_capabilities = run.ambient_capabilities.clone();
        spec.no_new_privs = run.no_new_privileges;
        spec.seccomp = run.seccomp.clone();
        spec.landlock = run.landlock.clone();
        spec.target_start = start;
        spec.cgroup_procs = cgroup_procs(c)?;
        let dup = |s: &Option<Stdio>| -> Result<launch::Stdio, ContainerError> {
            match s {
                Some(s) => s.to_launch().map_err(|source| ContainerError::Process {
                    id: id.clone(),
                    op: "duplicating a standard stream",
                    source,
                }),
                None => Ok(launch::Stdio::Inherit),
            }
        };
        spec.stdin = dup(&self.stdin)?;
        spec.stdout = dup(&self.stdout)?;
        spec.stderr = dup(&self.stderr)?;
        spec.terminal = self.terminal;
        let mut process = launch::exec(pid, &spec)?;
        Ok(ExecChild {
            stdin: process.take_stdin(),
            stdout: process.take_stdout(),
            stderr: process.take_stderr(),
            terminal: process.take_terminal(),
            id,
            process,
        })
    }

    /// Run the process to its end and collect its output (on a terminal, what it shows is
    /// `stdout`).
    pub fn output(mut self) -> Result<Output, ContainerError> {
        self.stdin.get_or_insert_with(Stdio::null);
        self.stdout.get_or_insert_with(Stdio::piped);
        self.stderr.get_or_insert_with(Stdio::piped);
        let mut child = self.spawn()?;
        let stdout = super::child::output_reader(child.terminal.take(), child.stdout.take());
        let (out, err) = super::child::collect(stdout, child.stderr.take());
        let status = child.wait()?;
        let perr = child.perr("reading output");
        Ok(Output {
            status,
            stdout: out.map_err(perr)?,
            stderr: err.map_err(child.perr("reading output"))?,
        })
    }
}

impl ExecChild {
    fn perr(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> ContainerError + use<> {
        let id = self.id.clone();
        move |source| ContainerError::Process { id, op, source }
    }

    /// Its host pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
    /// Wait for its end.
    pub fn wait(&mut self) -> Result<Status, ContainerError> {
        drop(self.stdin.take());
        let e = self.perr("waiting");
        self.process.wait().map(status_of).map_err(e)
    }
    /// Its status if it has ended.
    pub fn try_wait(&mut self) -> Result<Option<Status>, ContainerError> {
        let e = self.perr("waiting");
        self.process.try_wait().map(|s| s.map(status_of)).map_err(e)
    }
    /// Wait at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Status>, ContainerError> {
        let e = self.perr("waiting");
        self.process
            .wait_timeout(timeout)
            .map(|s| s.map(status_of))
            .map_err(e)
    }
    /// Kill it.
    pub fn kill(&mut self) -> Result<(), ContainerError> {
        let e = self.perr("killing");
        self.process.kill().map_err(e)
    }
}
