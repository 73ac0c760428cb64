//! The steps of a recipe, as data: what each instruction says, checked when it is made where
//! it can be, and its normalized text (the cache key's instruction and the history's
//! `created_by`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use nix::sys::signal::Signal;

pub use super::copy_from::CopyFrom;
use super::ignore::Ignore;
pub use super::run_step::{Healthcheck, Run, RunCommand, RunMount, RunNetwork, Sharing};

/// A network port with its protocol, as `EXPOSE` declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// The port number.
    pub number: u16,
    /// `true` for udp, `false` for tcp.
    pub udp: bool,
}

impl Port {
    /// A tcp port.
    pub fn tcp(number: u16) -> Port {
        Port { number, udp: false }
    }
    /// A udp port.
    pub fn udp(number: u16) -> Port {
        Port { number, udp: true }
    }
}

impl From<u16> for Port {
    /// A bare number is a tcp port, as in a Dockerfile.
    fn from(number: u16) -> Port {
        Port::tcp(number)
    }
}

impl fmt::Display for Port {
    /// `80/tcp`, `53/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.number,
            if self.udp { "udp" } else { "tcp" }
        )
    }
}

impl std::str::FromStr for Port {
    type Err = String;
    /// `80`, `80/tcp`, `53/udp`.
    fn from_str(s: &str) -> Result<Port, String> {
        let (num, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let number = num
            .parse::<u16>()
            .map_err(|_| format!("invalid port {s:?}: expected a number 0-65535"))?;
        match proto.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Port::tcp(number)),
            "udp" => Ok(Port::udp(number)),
            p => Err(format!("invalid port {s:?}: unknown protocol {p:?}")),
        }
    }
}

impl Eq for CopyFrom {}

/// A `COPY` of files into the image, with its owner and mode options.
///
/// ```
/// use molde_container::build::Copy;
/// let c = Copy::new("target/app", "/usr/local/bin/").chown("app:app").chmod(0o755);
/// # let _ = c;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub(crate) sources: Vec<PathBuf>,
    pub(crate) dest: String,
    pub(crate) chown: Option<String>,
    pub(crate) chmod: Option<u32>,
    pub(crate) from: Option<CopyFrom>,
    pub(crate) inline: Vec<(String, Vec<u8>)>,
    pub(crate) exclude: Vec<String>,
    pub(crate) parents: bool,
    pub(crate) context: Option<PathBuf>,
    pub(crate) text: Option<String>,
    pub(crate) ignore: Option<Arc<Ignore>>,
}

impl Copy {
    /// Copy the host file or directory `source` to `dest` in the image. A directory's
    /// contents go into `dest`; a file goes to `dest` itself, or into it when `dest` ends with
    /// `/`. A relative `dest` is relative to the working directory.
    pub fn new(source: impl Into<PathBuf>, dest: impl Into<String>) -> Copy {
        Copy::many([source], dest)
    }
    /// Copy several sources into the directory `dest`.
    pub fn many<P: Into<PathBuf>>(
        sources: impl IntoIterator<Item = P>,
        dest: impl Into<String>,
    ) -> Copy {
        Copy {
            sources: sources.into_iter().map(Into::into).collect(),
            dest: dest.into(),
            chown: None,
            chmod: None,
            from: None,
            inline: Vec::new(),
            exclude: Vec::new(),
            parents: false,
            context: None,
            text: None,
            ignore: None,
        }
    }
    /// Write a file made of `content` (a heredoc: `COPY <<EOF /etc/motd`): named `name` in
    /// the directory `dest` when `dest` ends with `/`, else `dest` itself.
    pub fn inline(
        name: impl Into<String>,
        content: impl Into<Vec<u8>>,
        dest: impl Into<String>,
    ) -> Copy {
        let mut c = Copy::many(Vec::<PathBuf>::new(), dest);
        c.inline.push((name.into(), content.into()));
        c
    }
    /// Also write the file `name` made of `content` (another heredoc of the same `COPY`).
    pub fn and_inline(mut self, name: impl Into<String>, content: impl Into<Vec<u8>>) -> Copy {
        self.inline.push((name.into(), content.into()));
        self
    }
    /// The owner of what is copied: `user`, `uid`, `user:group` or `uid:gid`, names resolved
    /// in the image's `/etc/passwd` and `/etc/group` (default: `0:0`). Without a group, the
    /// gid is the uid's number, as Docker does.
    pub fn chown(mut self, owner: impl Into<String>) -> Copy {
        self.chown = Some(owner.into());
        self
    }
    /// The permission bits of what is copied (default: the source's).
    pub fn chmod(mut self, mode: u32) -> Copy {
        self.chmod = Some(mode & 0o7777);
        self
    }
    /// Read the sources from an earlier stage or an image (`COPY --from`): they are then
    /// absolute paths in its filesystem, not host paths.
    pub fn from(mut self, from: CopyFrom) -> Copy {
        self.from = Some(from);
        self
    }
    /// Leave out what matches `pattern` (`COPY --exclude`, `*`, `?`, `**` wildcards, relative
    /// to each source directory).
    pub fn exclude(mut self, pattern: impl Into<String>) -> Copy {
        self.exclude.push(pattern.into());
        self
    }
    /// Keep each source's parent directories under `dest` (`COPY --parents`), relative to the
    /// context root given by [`Copy::context`] (or to `/` for `--from`).
    pub fn parents(mut self, yes: bool) -> Copy {
        self.parents = yes;
        self
    }
    /// The build context the host sources are in: history and step reports name the sources
    /// relative to it (never as host absolute paths).
    pub fn context(mut self, dir: impl Into<PathBuf>) -> Copy {
        self.context = Some(dir.into());
        self
    }
    /// Leave out the context paths `rules` exclude (a `.dockerignore`; paths relative to the
    /// [`Copy::context`]).
    pub fn ignore(mut self, rules: Arc<Ignore>) -> Copy {
        self.ignore = Some(rules);
        self
    }
    /// The instruction as the history shows it (the Dockerfile frontend gives its own line).
    pub fn text(mut self, text: impl Into<String>) -> Copy {
        self.text = Some(text.into());
        self
    }

    /// The sources as the history names them: relative to the context, or file names.
    pub(crate) fn shown_sources(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .sources
            .iter()
            .map(|s| {
                if self.from.is_some() {
                    return s.display().to_string();
                }
                match self.context.as_deref().and_then(|c| s.strip_prefix(c).ok()) {
                    Some(r) if r.as_os_str().is_empty() => ".".to_owned(),
                    Some(r) => r.display().to_string(),
                    None => s
                        .file_name()
                        .map_or_else(|| ".".to_owned(), |n| n.to_string_lossy().into_owned()),
                }
            })
            .collect();
        out.extend(self.inline.iter().map(|(n, _)| format!("<<{n}")));
        out
    }
}

/// One step of a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run a command in a container of the current state; its changes become a layer.
    Run(Run),
    /// Copy files.
    Copy(Copy),
    /// Add a local tar (plain, gzip or zstd): its contents go under `dest`.
    AddTar {
        /// The tar on the host.
        tar: PathBuf,
        /// Where its contents go (a directory).
        dest: String,
    },
    /// Download a URL (through the build's [`Fetcher`](super::Fetcher)) and copy it in.
    AddUrl {
        /// The URL.
        url: String,
        /// Where it goes (`dest/` puts it there under the URL's last path component).
        dest: String,
        /// The owner (`--chown`).
        chown: Option<String>,
        /// The mode (`--chmod`; default 0600, as Docker's).
        chmod: Option<u32>,
        /// The sha256 it must have (`--checksum=sha256:...`).
        checksum: Option<String>,
    },
    /// Set environment variables (one history entry).
    Env(Vec<(String, String)>),
    /// A build-time variable (`ARG`): in the environment of the `RUN` steps after it (unless
    /// an `ENV` of the same name is set), part of their cache key, never in the image's
    /// config.
    Arg(String, String),
    /// Set the working directory (made, as a layer, when missing).
    Workdir(String),
    /// Set the user (`name`, `uid`, `name:group`, `uid:gid`).
    User(String),
    /// Declare exposed ports.
    Expose(Vec<Port>),
    /// Declare volumes.
    Volume(Vec<String>),
    /// Set labels.
    Label(Vec<(String, String)>),
    /// Set the default command.
    Cmd(Vec<String>),
    /// Set the entrypoint.
    Entrypoint(Vec<String>),
    /// Set the stop signal.
    StopSignal(Signal),
    /// Set the shell of later shell-form `RUN`, `CMD` and `ENTRYPOINT` (stored in the config).
    Shell(Vec<String>),
    /// Set (or, with `None`, disable) the health check.
    Healthcheck(Option<Healthcheck>),
    /// Store an instruction to run when a later build starts `FROM` this image.
    OnBuild(String),
    /// Set the image's author (`MAINTAINER`, deprecated).
    Maintainer(String),
}

/// A JSON string array, as Docker prints exec forms: `["a","b"]`.
pub(crate) fn json_array(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
}

fn pairs_text(kw: &str, kvs: &[(String, String)], quote: bool) -> String {
    let mut s = String::from(kw);
    for (k, v) in kvs {
        if quote {
            s += &format!(" {k}={}", serde_json::to_string(v).unwrap_or_default());
        } else {
            s += &format!(" {k}={v}");
        }
    }
    s
}

impl Step {
    /// The instruction's keyword (`RUN`, `COPY`, ...).
    pub fn keyword(&self) -> &'static str {
        match self {
            Step::Run(_) => "RUN",
            Step::Copy(_) => "COPY",
            Step::AddTar { .. } | Step::AddUrl { .. } => "ADD",
            Step::Env(..) => "ENV",
            Step::Arg(..) => "ARG",
            Step::Workdir(_) => "WORKDIR",
            Step::User(_) => "USER",
            Step::Expose(_) => "EXPOSE",
            Step::Volume(_) => "VOLUME",
            Step::Label(..) => "LABEL",
            Step::Cmd(_) => "CMD",
            Step::Entrypoint(_) => "ENTRYPOINT",
            Step::StopSignal(_) => "STOPSIGNAL",
            Step::Shell(_) => "SHELL",
            Step::Healthcheck(_) => "HEALTHCHECK",
            Step::OnBuild(_) => "ONBUILD",
            Step::Maintainer(_) => "MAINTAINER",
        }
    }

    /// Whether the step may change the filesystem (and so may add a layer).
    pub fn touches_files(&self) -> bool {
        matches!(
            self,
            Step::Run(_)
                | Step::Copy(_)
                | Step::AddTar { .. }
                | Step::AddUrl { .. }
                | Step::Workdir(_)
        )
    }

    /// The instruction as the history names it: host paths relative to the build context,
    /// never absolute; no secret.
    pub fn instruction(&self) -> String {
        match self {
            Step::Run(r) => {
                let mut s = String::from("RUN");
                for m in &r.mounts {
                    s += &format!(" --mount={}", m.describe());
                }
                match r.network {
                    RunNetwork::Default => {}
                    RunNetwork::None => s += " --network=none",
                    RunNetwork::Host => s += " --network=host",
                }
                match &r.command {
                    RunCommand::Shell(c) => {
                        let shell = r.shell.clone().unwrap_or_else(default_shell);
                        format!("{s} {} {c}", shell.join(" "))
                    }
                    RunCommand::Exec(v) => format!("{s} {}", json_array(v)),
                }
            }
            Step::Copy(c) => {
                if let Some(t) = &c.text {
                    return t.clone();
                }
                let mut s = String::from("COPY");
                match &c.from {
                    Some(CopyFrom::Stage(n)) => s += &format!(" --from={n}"),
                    Some(CopyFrom::Image(i)) => s += &format!(" --from={}", i.id()),
                    None => {}
                }
                if let Some(o) = &c.chown {
                    s += &format!(" --chown={o}");
                }
                if let Some(m) = c.chmod {
                    s += &format!(" --chmod={m:o}");
                }
                for src in c.shown_sources() {
                    s += &format!(" {src}");
                }
                s + " " + &c.dest
            }
            Step::AddTar { tar, dest } => format!(
                "ADD {} {dest}",
                tar.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            ),
            Step::AddUrl { url, dest, .. } => format!("ADD {url} {dest}"),
            Step::Env(kvs) => pairs_text("ENV", kvs, false),
            Step::Arg(k, v) => format!("ARG {k}={v}"),
            Step::Workdir(d) => format!("WORKDIR {d}"),
            Step::User(u) => format!("USER {u}"),
            Step::Expose(ps) => {
                let v: Vec<String> = ps.iter().map(Port::to_string).collect();
                format!("EXPOSE {}", v.join(" "))
            }
            Step::Volume(v) => format!("VOLUME {}", json_array(v)),
            Step::Label(kvs) => pairs_text("LABEL", kvs, true),
            Step::Cmd(v) => format!("CMD {}", json_array(v)),
            Step::Entrypoint(v) => format!("ENTRYPOINT {}", json_array(v)),
            Step::StopSignal(s) => format!("STOPSIGNAL {}", s.as_str()),
            Step::Shell(v) => format!("SHELL {}", json_array(v)),
            Step::Healthcheck(None) => "HEALTHCHECK NONE".to_owned(),
            Step::Healthcheck(Some(h)) => format!("HEALTHCHECK {}", json_array(&h.test)),
            Step::OnBuild(t) => format!("ONBUILD {t}"),
            Step::Maintainer(m) => format!("MAINTAINER {m}"),
        }
    }
}

/// `["/bin/sh", "-c"]`.
pub(crate) fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}
