//! From the parse to stages: the instructions before the first `FROM` (global `ARG`s), one
//! [`Build`] per `FROM`, and the scope of variables as Docker gives it.

use std::collections::HashMap;

use molde_image::Image;

use super::shell::{Lex, Vars};
use super::syntax::{Args, Node};
use super::{Dockerfile, DockerfileError, ImageLookupError};
use crate::build::state::onbuild_triggers;
use crate::build::{Build, Stages, Step};

/// Build arguments Docker predefines for proxies: given by the caller, they reach `RUN`s
/// without an `ARG`, and stay out of the history.
pub(super) const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The platform of this host in Docker's words (`linux/amd64`), and its OS, architecture and
/// variant.
pub(super) fn platform() -> (String, String, String, String) {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" => ("ppc64le", ""),
        other => (other, ""),
    };
    let p = if variant.is_empty() {
        format!("linux/{arch}")
    } else {
        format!("linux/{arch}/{variant}")
    };
    (p, "linux".into(), arch.into(), variant.into())
}

/// What a stage knows once converted: for a later `FROM <stage>`.
#[derive(Debug, Clone)]
pub(super) struct StageInfo {
    pub name: String,
    pub env: Vec<(String, String)>,
    pub shell: Option<Vec<String>>,
    /// The `ONBUILD` triggers the stage stored: a stage `FROM` it runs them.
    pub onbuild: Vec<String>,
}

/// One stage being converted.
pub(super) struct StageState {
    pub lex: Lex,
    pub env: Vec<(String, String)>,
    pub args: Vec<(String, Option<String>)>,
    pub shell: Option<Vec<String>>,
    pub steps: Vec<Step>,
}

impl StageState {
    /// The variables instructions expand: the stage's `ARG`s with a value, `ENV`s over them.
    pub fn vars(&self) -> Vars {
        let mut v: Vars = self
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        v.extend(self.env.iter().cloned());
        v
    }
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(n, _)| n != k);
        self.env.push((k.to_owned(), v.to_owned()));
    }
    pub fn shell(&self) -> Vec<String> {
        self.shell
            .clone()
            .unwrap_or_else(crate::build::step::default_shell)
    }
}

/// The conversion: the file, how images are found, what is known so far.
pub(super) struct Converter<'a> {
    pub df: &'a Dockerfile,
    pub find: &'a mut dyn FnMut(&str) -> Result<Image, ImageLookupError>,
    /// The last image that could not be had, for the error of its instruction.
    pub failed: Option<ImageLookupError>,
    /// Checking only: no image is looked up.
    pub dry: bool,
    pub meta: Vars,
    pub stages: Vec<StageInfo>,
    pub images: HashMap<String, Image>,
}

impl Converter<'_> {
    /// A build argument the caller gave.
    pub fn given(&self, name: &str) -> Option<String> {
        self.df
            .build_args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The image `name`, found once. A failure is kept for the instruction's error
    /// ([`Converter::err_at`]).
    pub fn image(&mut self, name: &str) -> Result<Image, ImageLookupError> {
        if let Some(i) = self.images.get(name) {
            return Ok(i.clone());
        }
        let i = (self.find)(name).inspect_err(|e| self.failed = Some(e.clone()))?;
        self.images.insert(name.to_owned(), i.clone());
        Ok(i)
    }

    /// The index of the stage named `name` (or numbered) among those converted so far.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .rposition(|s| !s.name.is_empty() && s.name == lower)
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.stages.len())
            })
    }

    fn err(&self, node: &Node, message: impl Into<String>) -> DockerfileError {
        self.df.error(Some(node), message)
    }

    /// The error of `node`, with the image that could not be had if that is the cause.
    fn err_at(&mut self, node: &Node, message: impl Into<String>) -> DockerfileError {
        let mut e = self.df.error(Some(node), message);
        e.image = self.failed.take().map(Box::new);
        e
    }

    /// The global `ARG`s (before the first `FROM`).
    fn meta_arg(&mut self, node: &Node) -> Result<(), DockerfileError> {
        let Args::List(words) = &node.args else {
            return Err(self.err(node, "ARG needs a name: ARG NAME[=default]"));
        };
        let lex = Lex::new(self.df.parsed.escape);
        for w in words {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => {
                    let d = lex
                        .word(d, &self.meta)
                        .map_err(|e| self.err(node, e.to_string()))?;
                    (n.to_owned(), Some(d))
                }
                None => (w.clone(), None),
            };
            check_name(&name).map_err(|m| self.err(node, m))?;
            if let Some(v) = self.given(&name).or(default) {
                self.meta.insert(name, v);
            }
        }
        Ok(())
    }

    /// Convert every stage.
    fn run(&mut self) -> Result<Stages, DockerfileError> {
        let (p, os, arch, variant) = platform();
        for (k, v) in [
            ("TARGETPLATFORM", &p),
            ("TARGETOS", &os),
            ("TARGETARCH", &arch),
            ("TARGETVARIANT", &variant),
            ("BUILDPLATFORM", &p),
            ("BUILDOS", &os),
            ("BUILDARCH", &arch),
            ("BUILDVARIANT", &variant),
        ] {
            self.meta.insert(k.to_owned(), v.clone());
        }
        let nodes = &self.df.parsed.nodes;
        let first_from = nodes.iter().position(|n| n.command() == "FROM");
        for n in &nodes[..first_from.unwrap_or(nodes.len())] {
            if n.command() != "ARG" {
                return Err(self.err(
                    n,
                    format!(
                        "{} before the first FROM (only ARG may come first)",
                        n.command()
                    ),
                ));
            }
            self.meta_arg(n)?;
        }
        let Some(first) = first_from else {
            return Err(self.df.error(
                nodes.last(),
                "no FROM: a Dockerfile starts a stage with FROM",
            ));
        };
        let mut stages = Stages::new();
        let mut starts: Vec<usize> = nodes[first..]
            .iter()
            .enumerate()
            .filter(|(_, n)| n.command() == "FROM")
            .map(|(i, _)| first + i)
            .collect();
        starts.push(nodes.len());
        for w in starts.windows(2) {
            let (name, build) = self.stage(&nodes[w[0]], &nodes[w[0] + 1..w[1]])?;
            stages = stages.stage(name, build);
        }
        if let Some(t) = &self.df.target {
            if self.stage_index(t).is_none() {
                return Err(self.df.error(None, format!("target stage {t:?} not found")));
            }
            stages = stages.target(t.clone());
        }
        let mut run_env = Vec::new();
        for p in PROXY_ARGS {
            if let Some(v) = self.given(p) {
                run_env.push((p.to_owned(), v));
            }
        }
        Ok(stages.run_env(run_env))
    }

    /// One stage: its `FROM` and its instructions.
    fn stage(&mut self, from: &Node, body: &[Node]) -> Result<(String, Build), DockerfileError> {
        let (name, build, mut st, triggers) = self.from(from)?;
        let at = |n: &Node| format!("{}:{}:{}", self.df.file, n.start_line, n.column);
        // Where each step comes from, for the errors of the build.
        let mut origins: Vec<String> = Vec::new();
        for t in &triggers {
            let parsed = super::syntax::parse(t).map_err(|e| {
                self.err(
                    from,
                    format!("ONBUILD trigger {t:?} of the base image: {e}"),
                )
            })?;
            for n in &parsed.nodes {
                self.instruction(&mut st, n).map_err(|e| {
                    self.err(
                        from,
                        format!("ONBUILD trigger {t:?} of the base image: {e}"),
                    )
                })?;
                origins.resize(st.steps.len(), format!("{} (ONBUILD {t})", at(from)));
            }
        }
        for n in body {
            if n.command() == "FROM" {
                continue;
            }
            self.instruction(&mut st, n)
                .map_err(|m| self.err_at(n, m))?;
            origins.resize(st.steps.len(), at(n));
        }
        let onbuild = st
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::OnBuild(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        self.stages.push(StageInfo {
            name: name.clone(),
            env: st.env.clone(),
            shell: st.shell.clone(),
            onbuild,
        });
        let mut b = build.base_at(at(from));
        for (s, o) in st.steps.into_iter().zip(origins) {
            b = b.step_at(s, o);
        }
        Ok((name, b))
    }

    /// A `FROM`: the stage's name, its recipe's base, its state and the base's triggers.
    #[allow(clippy::type_complexity)]
    fn from(
        &mut self,
        node: &Node,
    ) -> Result<(String, Build, StageState, Vec<String>), DockerfileError> {
        let lex = Lex::new(self.df.parsed.escape);
        let flags =
            super::flags::Flags::parse("FROM", &node.flags).map_err(|m| self.err(node, m))?;
        if let Some(p) = flags.value("platform").map_err(|m| self.err(node, m))? {
            let p = lex
                .word(p, &self.meta)
                .map_err(|e| self.err(node, e.to_string()))?;
            let here = platform().0;
            if p != here {
                return Err(self.err(
                    node,
                    format!("--platform={p}: only this host's platform ({here}) can be built; cross-platform builds are not supported"),
                ));
            }
        }
        let words = match &node.args {
            Args::List(w) => w.clone(),
            _ => return Err(self.err(node, "FROM needs an image: FROM image [AS name]")),
        };
        let (image, name) = match words.as_slice() {
            [i] => (i.clone(), String::new()),
            [i, a, n] if a.eq_ignore_ascii_case("as") => (i.clone(), n.to_ascii_lowercase()),
            _ => return Err(self.err(node, "expected FROM image [AS name]")),
        };
        if !name.is_empty() {
            check_stage_name(&name).map_err(|m| self.err(node, m))?;
            if self.stages.iter().any(|s| s.name == name) {
                return Err(self.err(node, format!("duplicate stage name {name:?}")));
            }
        }
        let image = lex
            .word(&image, &self.meta)
            .map_err(|e| self.err(node, e.to_string()))?;
        if image.is_empty() {
            return Err(self.err(node, "FROM names no image (is a build argument empty?)"));
        }
        let mut st = StageState {
            lex,
            env: Vec::new(),
            args: Vec::new(),
            shell: None,
            steps: Vec::new(),
        };
        let mut triggers = Vec::new();
        let build = if image.eq_ignore_ascii_case("scratch") {
            Build::scratch()
        } else if let Some(i) = self
            .stage_index(&image)
            .filter(|_| !image.contains([':', '/', '@']))
        {
            let s = &self.stages[i];
            st.env = s.env.clone();
            st.shell = s.shell.clone();
            triggers = s.onbuild.clone();
            Build::from_stage(s.name.clone().if_empty(i.to_string()))
        } else if self.dry {
            Build::scratch()
        } else {
            let img = match self.image(&image) {
                Ok(i) => i,
                Err(e) => return Err(self.err_at(node, format!("FROM {image}: {e}"))),
            };
            st.env = img
                .env()
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            st.shell = img
                .docker_field("Shell")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            triggers = onbuild_triggers(&img);
            Build::from_image(&img)
        };
        Ok((name, build, st, triggers))
    }
}

trait IfEmpty {
    fn if_empty(self, other: String) -> String;
}
impl IfEmpty for String {
    fn if_empty(self, other: String) -> String {
        if self.is_empty() { other } else { self }
    }
}

/// A variable name: not empty, no `=` or blank.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(|c: char| c == '=' || c.is_whitespace()) {
        return Err(format!(
            "invalid name {name:?}: expected ARG NAME[=default]"
        ));
    }
    Ok(())
}

fn check_stage_name(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid stage name {name:?}: a letter, then letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Check `df` as far as can be done without images.
pub(super) fn check(df: &Dockerfile) -> Result<(), DockerfileError> {
    let mut none = |name: &str| -> Result<Image, ImageLookupError> {
        Err(ImageLookupError::NotFound {
            reference: name.to_owned(),
            detail: "not looked up".into(),
        })
    };
    let mut c = Converter {
        df,
        find: &mut none,
        failed: None,
        dry: true,
        meta: Vars::new(),
        stages: Vec::new(),
        images: HashMap::new(),
    };
    c.run().map(|_| ())
}

/// Convert `df`, finding images with `find`.
pub(super) fn convert(
    df: &Dockerfile,
    find: &mut dyn FnMut(&str) -> Result<Image, ImageLookupError>,
) -> Result<Stages, DockerfileError> {
    let mut c = Converter {
        df,
        find,
        failed: None,
        dry: false,
        meta: Vars::new(),
        stages: Vec::new(),
        images: HashMap::new(),
    };
    c.run()
}
