//! The steps of a recipe, as data: what each instruction says, checked when it is made where
//! it can be, and its normalized text (the cache key's instruction and the history's
//! `created_by`).

use std::fmt;
use std::path::PathBuf;

use nix::sys::signal::Signal;

/// How a `RUN` step gives its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCommand {
    /// Shell form: run through the image's `/bin/sh -c`.
    Shell(String),
    /// Exec form: an argv, run as it is (no shell).
    Exec(Vec<String>),
}

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

/// A `COPY` of host files and directories into the image, with its owner and mode options.
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
}

impl Copy {
    /// Copy the host file or directory `source` to `dest` in the image. A directory's
    /// contents go into `dest`; a file goes to `dest` itself, or into it when `dest` ends with
    /// `/`. A relative `dest` is relative to the working directory.
    pub fn new(source: impl Into<PathBuf>, dest: impl Into<String>) -> Copy {
        Copy {
            sources: vec![source.into()],
            dest: dest.into(),
            chown: None,
            chmod: None,
        }
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
        }
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
}

/// One step of a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run a command in a container of the current state; its changes become a layer.
    Run(RunCommand),
    /// Copy host files.
    Copy(Copy),
    /// Add a local tar (plain, gzip or zstd): its contents go under `dest`.
    AddTar {
        /// The tar on the host.
        tar: PathBuf,
        /// Where its contents go (a directory).
        dest: String,
    },
    /// Set an environment variable.
    Env(String, String),
    /// A build-time variable (`ARG`): in the environment of the `RUN` steps after it (unless
    /// an `ENV` of the same name is set), part of their cache key, never in the image's
    /// config.
    Arg(String, String),
    /// Set the working directory (made, as a layer, when missing).
    Workdir(String),
    /// Set the user (`name`, `uid`, `name:group`, `uid:gid`).
    User(String),
    /// Declare an exposed port.
    Expose(Port),
    /// Declare a volume.
    Volume(String),
    /// Set a label.
    Label(String, String),
    /// Set the default command.
    Cmd(Vec<String>),
    /// Set the entrypoint.
    Entrypoint(Vec<String>),
    /// Set the stop signal.
    StopSignal(Signal),
}

/// A JSON string array, as Docker prints exec forms: `["a","b"]`.
pub(crate) fn json_array(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
}

impl Step {
    /// The instruction's keyword (`RUN`, `COPY`, ...).
    pub fn keyword(&self) -> &'static str {
        match self {
            Step::Run(_) => "RUN",
            Step::Copy(_) => "COPY",
            Step::AddTar { .. } => "ADD",
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
        }
    }

    /// Whether the step may change the filesystem (and so may add a layer).
    pub fn touches_files(&self) -> bool {
        matches!(
            self,
            Step::Run(_) | Step::Copy(_) | Step::AddTar { .. } | Step::Workdir(_)
        )
    }

    /// The instruction as written, normalized (host paths as given): for messages and, for
    /// steps without host content, the cache key.
    pub fn instruction(&self) -> String {
        match self {
            Step::Run(RunCommand::Shell(c)) => format!("RUN /bin/sh -c {c}"),
            Step::Run(RunCommand::Exec(v)) => format!("RUN {}", json_array(v)),
            Step::Copy(c) => {
                let mut s = String::from("COPY");
                if let Some(o) = &c.chown {
                    s += &format!(" --chown={o}");
                }
                if let Some(m) = c.chmod {
                    s += &format!(" --chmod={m:o}");
                }
                for src in &c.sources {
                    s += &format!(" {}", src.display());
                }
                s + " " + &c.dest
            }
            Step::AddTar { tar, dest } => format!("ADD {} {dest}", tar.display()),
            Step::Env(k, v) => format!("ENV {k}={v}"),
            Step::Arg(k, v) => format!("ARG {k}={v}"),
            Step::Workdir(d) => format!("WORKDIR {d}"),
            Step::User(u) => format!("USER {u}"),
            Step::Expose(p) => format!("EXPOSE {p}"),
            Step::Volume(v) => format!("VOLUME [{}]", serde_json::to_string(v).unwrap_or_default()),
            Step::Label(k, v) => format!(
                "LABEL {}={}",
                k,
                serde_json::to_string(v).unwrap_or_default()
            ),
            Step::Cmd(v) => format!("CMD {}", json_array(v)),
            Step::Entrypoint(v) => format!("ENTRYPOINT {}", json_array(v)),
            Step::StopSignal(s) => format!("STOPSIGNAL {}", s.as_str()),
        }
    }
}
