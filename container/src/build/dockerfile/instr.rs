//! Each instruction of a stage, from its node to the recipe's steps: variables expanded
//! where the reference expands them, flags read, paths of the context checked.

use std::path::{Component, Path, PathBuf};

use nix::sys::signal::Signal;

use super::convert::{Converter, StageState, check_name};
use super::flags::{Flags, duration_ns, parse_bool};
use super::run::{heredoc_content, is_heredoc_word};
use super::syntax::{Args, Node};
use crate::build::copy::is_tar;
use crate::build::ignore::has_wildcards;
use crate::build::step::{Copy, CopyFrom, Healthcheck, Port, Step};

type R<T> = Result<T, String>;

fn text_of(node: &Node) -> R<String> {
    match &node.args {
        Args::Text(t) => Ok(t.clone()),
        _ => Err(format!("{} needs a value", node.command())),
    }
}

fn list_of(node: &Node) -> R<Vec<String>> {
    match &node.args {
        Args::List(v) => Ok(v.clone()),
        _ => Err(format!("{} needs arguments", node.command())),
    }
}

impl Converter<'_> {
    /// Convert one instruction of a stage, adding its steps to `st`.
    pub(super) fn instruction(&mut self, st: &mut StageState, node: &Node) -> R<()> {
        let cmd = node.command();
        let flags = Flags::parse(&cmd, &node.flags)?;
        let vars = st.vars();
        let word = |s: &str| st.lex.word(s, &vars).map_err(|e| e.to_string());
        let step = match cmd.as_str() {
            "RUN" => Step::Run(self.run_step(st, node, &flags)?),
            "COPY" | "ADD" => self.copy(st, node, &flags)?,
            "ARG" => return self.arg(st, node),
            "ENV" | "LABEL" => {
                let Args::Pairs(pairs) = &node.args else {
                    return Err(format!("{cmd} needs key=value pairs"));
                };
                let mut kvs = Vec::new();
                for p in pairs {
                    let k = word(&p.key)?;
                    if k.is_empty() {
                        return Err(format!("{cmd}: a key is empty"));
                    }
                    let v = word(&p.value)?;
                    kvs.push((k, v));
                }
                if cmd == "ENV" {
                    // Every pair sees the variables as they were before the instruction.
                    for (k, v) in &kvs {
                        st.set_env(k, v);
                    }
                    Step::Env(kvs)
                } else {
                    Step::Label(kvs)
                }
            }
            "EXPOSE" => {
                let mut ports = Vec::new();
                for w in list_of(node)? {
                    for w in st.lex.words(&w, &vars).map_err(|e| e.to_string())? {
                        ports.extend(ports_of(&w)?);
                    }
                }
                Step::Expose(ports)
            }
            "VOLUME" => {
                let mut vs = Vec::new();
                for w in list_of(node)? {
                    let v = word(&w)?;
                    if v.trim().is_empty() {
                        return Err("VOLUME: a path is empty".into());
                    }
                    vs.push(v);
                }
                Step::Volume(vs)
            }
            "WORKDIR" => Step::Workdir(word(&text_of(node)?)?),
            "USER" => {
                let u = word(&text_of(node)?)?;
                if u.contains(char::is_whitespace) {
                    return Err(format!("USER takes one user, got {u:?}"));
                }
                Step::User(u)
            }
            "STOPSIGNAL" => Step::StopSignal(signal(&word(&text_of(node)?)?)?),
            "MAINTAINER" => Step::Maintainer(text_of(node)?),
            "CMD" | "ENTRYPOINT" => {
                let argv = match (&node.args, node.json) {
                    (Args::List(v), true) => v.clone(),
                    (Args::Text(t), _) => {
                        let mut s = st.shell();
                        s.push(t.clone());
                        s
                    }
                    _ => return Err(format!("{cmd} needs a command")),
                };
                if cmd == "CMD" {
                    Step::Cmd(argv)
                } else {
                    Step::Entrypoint(argv)
                }
            }
            "SHELL" => match (&node.args, node.json) {
                (Args::List(v), true) if !v.is_empty() => {
                    st.shell = Some(v.clone());
                    Step::Shell(v.clone())
                }
                _ => {
                    return Err(
                        "SHELL needs the exec form: SHELL [\"executable\", \"parameters\"]".into(),
                    );
                }
            },
            "HEALTHCHECK" => Step::Healthcheck(healthcheck(node, &flags)?),
            "ONBUILD" => {
                let Args::Sub(inner) = &node.args else {
                    return Err("ONBUILD needs an instruction".into());
                };
                let c = inner.command();
                if matches!(c.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(format!("ONBUILD {c} is not allowed"));
                }
                if matches!(inner.args, Args::Unknown(_)) {
                    return Err(format!("ONBUILD: unknown instruction {:?}", inner.keyword));
                }
                Step::OnBuild(inner.original.trim().to_owned())
            }
            "FROM" => unreachable!("FROM starts a stage"),
            _ => {
                return Err(format!(
                    "unknown instruction {:?} (supported: ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE \
                     FROM HEALTHCHECK LABEL MAINTAINER ONBUILD RUN SHELL STOPSIGNAL USER VOLUME \
                     WORKDIR)",
                    node.keyword
                ));
            }
        };
        st.steps.push(step);
        Ok(())
    }

    /// `ARG name[=default] ...` in a stage.
    fn arg(&mut self, st: &mut StageState, node: &Node) -> R<()> {
        let Args::List(words) = &node.args else {
            return Err("ARG needs a name: ARG NAME[=default]".into());
        };
        for w in words {
            let vars = st.vars();
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (
                    n.to_owned(),
                    Some(st.lex.word(d, &vars).map_err(|e| e.to_string())?),
                ),
                None => (w.clone(), None),
            };
            check_name(&name)?;
            // A bare ARG brings the global value in (a build argument wins over both).
            let value = self
                .given(&name)
                .or(default)
                .or_else(|| self.meta.get(&name).cloned());
            st.args.retain(|(n, _)| *n != name);
            st.args.push((name.clone(), value.clone()));
            if let Some(v) = value {
                st.steps.push(Step::Arg(name, v));
            }
        }
        Ok(())
    }

    /// A `COPY --from` / mount `from=`: an earlier stage, else an image.
    pub(super) fn source_of(&mut self, name: &str) -> R<CopyFrom> {
        if let Some(i) = self.stage_index(name) {
            let n = &self.stages[i].name;
            return Ok(CopyFrom::Stage(if n.is_empty() {
                i.to_string()
            } else {
                n.clone()
            }));
        }
        if self.dry {
            return Ok(CopyFrom::Stage(name.to_owned()));
        }
        Ok(CopyFrom::Image(
            self.image(name)
                .map_err(|e| format!("--from={name}: {e}"))?,
        ))
    }

    /// A path of the build context, refusing what leaves it.
    pub(super) fn context_path(&self, src: &str) -> R<PathBuf> {
        let mut depth: i32 = 0;
        for c in Path::new(src).components() {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            if depth < 0 {
                return Err(format!("source {src:?} is outside the build context"));
            }
        }
        Ok(self.df.context.join(src.trim_start_matches('/')))
    }

    /// `COPY` and `ADD`.
    fn copy(&mut self, st: &mut StageState, node: &Node, flags: &Flags) -> R<Step> {
        let cmd = node.command();
        let vars = st.vars();
        let word = |s: &str| st.lex.word(s, &vars).map_err(|e| e.to_string());
        let mut docs = node.heredocs.iter();
        let mut sources = Vec::new();
        let mut inline: Vec<(String, Vec<u8>)> = Vec::new();
        for w in list_of(node)? {
            if !node.json && is_heredoc_word(&w) {
                let Some(doc) = docs.next() else {
                    return Err(format!("{cmd}: heredoc {w} has no body"));
                };
                inline.push((
                    doc.name.clone(),
                    heredoc_content(st, doc, &vars)?.into_bytes(),
                ));
                continue;
            }
            if node.json {
                sources.push(word(&w)?);
            } else {
                sources.extend(st.lex.words(&w, &vars).map_err(|e| e.to_string())?);
            }
        }
        let dest = if inline.is_empty() || sources.len() > 1 || !sources.is_empty() {
            sources
                .pop()
                .ok_or_else(|| format!("{cmd} needs a source and a destination"))?
        } else {
            return Err(format!("{cmd} needs a destination"));
        };
        if sources.is_empty() && inline.is_empty() {
            return Err(format!("{cmd} needs a source and a destination"));
        }
        let chown = flags.value("chown")?.map(word).transpose()?;
        let chmod = match flags.value("chmod")? {
            None => None,
            Some(m) => {
                let m = word(m)?;
                Some(
                    u32::from_str_radix(&m, 8)
                        .ok()
                        .filter(|v| *v <= 0o7777)
                        .ok_or_else(|| {
                            format!("--chmod={m}: only octal modes (such as 755) are supported")
                        })?,
                )
            }
        };
        if flags.has("keep-git-dir") {
            return Err("ADD --keep-git-dir: git sources are not supported".into());
        }
        let unpack = match flags.value("unpack")? {
            None => true,
            Some(v) => {
                parse_bool(v).ok_or_else(|| format!("--unpack={v}: expected true or false"))?
            }
        };
        if cmd == "ADD" {
            if let Some(git) = sources
                .iter()
                .find(|s| s.starts_with("git@") || s.starts_with("git://") || s.ends_with(".git"))
            {
                return Err(format!(
                    "ADD {git}: git repositories as sources are not supported"
                ));
            }
            if let Some(url) = sources.iter().find(|s| s.contains("://")) {
                if sources.len() > 1 {
                    return Err("ADD of a URL takes one source".into());
                }
                let checksum = flags.value("checksum")?.map(word).transpose()?;
                return Ok(Step::AddUrl {
                    url: url.clone(),
                    dest,
                    chown,
                    chmod,
                    checksum,
                });
            }
            if flags.has("checksum") {
                return Err("ADD --checksum is only for URL sources".into());
            }
        }
        let from = match flags.value("from")? {
            Some(f) if cmd == "COPY" => Some(self.source_of(&word(f)?)?),
            _ => None,
        };
        let paths: Vec<PathBuf> = match &from {
            Some(_) => sources
                .iter()
                .map(|s| Path::new("/").join(s.trim_start_matches('/')))
                .collect(),
            None => sources
                .iter()
                .map(|s| self.context_path(s))
                .collect::<R<_>>()?,
        };
        if cmd == "ADD"
            && unpack
            && paths.len() == 1
            && inline.is_empty()
            && !has_wildcards(&sources[0])
            && is_tar(&paths[0])
        {
            if chown.is_some() || chmod.is_some() {
                return Err("ADD of a tar with --chown/--chmod is not supported".into());
            }
            return Ok(Step::AddTar {
                tar: paths[0].clone(),
                dest,
            });
        }
        let mut c = Copy::many(paths, dest)
            .context(self.df.context.clone())
            .ignore(self.df.ignore.clone())
            .parents(flags.bool("parents")?)
            .text(node.original.trim().to_owned());
        c.inline = inline;
        for e in flags.values("exclude")? {
            c = c.exclude(word(e)?);
        }
        if let Some(o) = chown {
            c = c.chown(o);
        }
        if let Some(m) = chmod {
            c = c.chmod(m);
        }
        if let Some(f) = from {
            c = c.from(f);
        }
        Ok(Step::Copy(c))
    }
}

/// The ports of one `EXPOSE` word: `80`, `80/tcp`, `53/udp`, `8000-8002/tcp`.
fn ports_of(w: &str) -> R<Vec<Port>> {
    let (nums, proto) = w.split_once('/').unwrap_or((w, "tcp"));
    let udp = match proto.to_ascii_lowercase().as_str() {
        "tcp" => false,
        "udp" => true,
        "sctp" => return Err(format!("EXPOSE {w}: sctp is not supported (tcp, udp)")),
        p => return Err(format!("EXPOSE {w}: unknown protocol {p:?}")),
    };
    let (lo, hi) = nums.split_once('-').unwrap_or((nums, nums));
    let parse = |n: &str| {
        n.parse::<u16>()
            .map_err(|_| format!("EXPOSE {w}: invalid port {n:?}"))
    };
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo > hi {
        return Err(format!("EXPOSE {w}: the range ends before it starts"));
    }
    Ok((lo..=hi).map(|n| Port { number: n, udp }).collect())
}

/// A `STOPSIGNAL` value: a name (`SIGTERM`, `term`) or a number.
fn signal(v: &str) -> R<Signal> {
    let v = v.trim().to_ascii_uppercase();
    let sig = match v.parse::<i32>() {
        Ok(n) => Signal::try_from(n).ok(),
        Err(_) => {
            let name = if v.starts_with("SIG") {
                v.clone()
            } else {
                format!("SIG{v}")
            };
            name.parse::<Signal>().ok()
        }
    };
    sig.ok_or_else(|| format!("STOPSIGNAL: unknown signal {v:?}"))
}

/// `HEALTHCHECK [options] CMD command` or `HEALTHCHECK NONE`.
fn healthcheck(node: &Node, flags: &Flags) -> R<Option<Healthcheck>> {
    let Args::Health { kind, command } = &node.args else {
        return Err("HEALTHCHECK needs CMD command or NONE".into());
    };
    match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !node.flags.is_empty() || !matches!(**command, Args::None) {
                return Err("HEALTHCHECK NONE takes no options or arguments".into());
            }
            Ok(None)
        }
        "CMD" => {
            let test = match (&**command, node.json) {
                (Args::List(v), true) if !v.is_empty() => {
                    let mut t = vec!["CMD".to_owned()];
                    t.extend(v.iter().cloned());
                    t
                }
                (Args::Text(t), false) => vec!["CMD-SHELL".to_owned(), t.clone()],
                _ => return Err("HEALTHCHECK CMD needs a command".into()),
            };
            let d = |name: &str| -> R<u64> { flags.value(name)?.map_or(Ok(0), duration_ns) };
            let retries = match flags.value("retries")? {
                None => 0,
                Some(r) => r
                    .parse::<u64>()
                    .map_err(|_| format!("--retries={r}: not a number"))?,
            };
            Ok(Some(Healthcheck {
                test,
                interval: d("interval")?,
                timeout: d("timeout")?,
                start_period: d("start-period")?,
                start_interval: d("start-interval")?,
                retries,
            }))
        }
        k => Err(format!("HEALTHCHECK {k}: expected CMD or NONE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges() {
        assert_eq!(ports_of("80").unwrap(), [Port::tcp(80)]);
        assert_eq!(ports_of("53/UDP").unwrap(), [Port::udp(53)]);
        assert_eq!(
            ports_of("8000-8002/tcp").unwrap(),
            [Port::tcp(8000), Port::tcp(8001), Port::tcp(8002)]
        );
        assert!(
            ports_of("9-1").is_err() && ports_of("80/sctp").is_err() && ports_of("http").is_err()
        );
    }
}
