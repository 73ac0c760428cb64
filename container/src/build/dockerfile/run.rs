//! `RUN` in a Dockerfile: its flags, its `--mount`s, its heredocs; and heredoc bodies as
//! `COPY` writes them.

use std::path::Path;

use super::convert::{Converter, StageState};
use super::flags::{Flags, parse_bool, size_bytes};
use super::syntax::{Args, Heredoc, Node};
use super::words::split_blanks;
use crate::build::step::{Run, RunCommand, RunMount, RunNetwork, Sharing};

type R<T> = Result<T, String>;

impl Converter<'_> {
    /// `RUN`: its flags, mounts, command and heredocs.
    pub(super) fn run_step(&mut self, st: &StageState, node: &Node, flags: &Flags) -> R<Run> {
        let vars = st.vars();
        let network = match flags.value("network")? {
            None | Some("default") => RunNetwork::Default,
            Some("none") => RunNetwork::None,
            Some("host") => RunNetwork::Host,
            Some(n) => return Err(format!("--network={n}: expected default, none or host")),
        };
        match flags.value("security")? {
            None | Some("sandbox") => {}
            Some(s) => return Err(format!("--security={s} is not supported (only sandbox)")),
        }
        let command = match (&node.args, node.json) {
            (Args::List(v), true) if !v.is_empty() => RunCommand::Exec(v.clone()),
            (Args::Text(t), false) => RunCommand::Shell(run_text(t, &node.heredocs)),
            _ => return Err("RUN needs a command".into()),
        };
        let mut run = Run::of(command).network(network);
        for m in flags.values("mount")? {
            let m = st.lex.word(m, &vars).map_err(|e| e.to_string())?;
            run = run.mount(self.mount(&m)?);
        }
        Ok(run)
    }

    /// One `--mount=type=...,target=...` of a `RUN`.
    fn mount(&mut self, spec: &str) -> R<RunMount> {
        let mut kind = "bind".to_owned();
        let mut fields: Vec<(String, Option<String>)> = Vec::new();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_owned())),
                None => (part.trim().to_ascii_lowercase(), None),
            };
            if k == "type" {
                kind = v.unwrap_or_default();
            } else {
                fields.push((k, v));
            }
        }
        let get = |names: &[&str]| {
            fields
                .iter()
                .find(|(k, _)| names.contains(&k.as_str()))
                .map(|(_, v)| v.clone().unwrap_or_default())
        };
        let flag = |names: &[&str]| -> R<bool> {
            match fields.iter().find(|(k, _)| names.contains(&k.as_str())) {
                None => Ok(false),
                Some((_, None)) => Ok(true),
                Some((k, Some(v))) => {
                    parse_bool(v).ok_or_else(|| format!("--mount {k}={v}: expected true or false"))
                }
            }
        };
        let known: &[&str] = match kind.as_str() {
            "cache" => &[
                "target",
                "dst",
                "destination",
                "id",
                "sharing",
                "ro",
                "readonly",
                "mode",
                "uid",
                "gid",
            ],
            "bind" => &[
                "target",
                "dst",
                "destination",
                "source",
                "src",
                "from",
                "rw",
                "readwrite",
                "ro",
                "readonly",
            ],
            "tmpfs" => &["target", "dst", "destination", "size"],
            "secret" => &[
                "target",
                "dst",
                "destination",
                "id",
                "required",
                "mode",
                "uid",
                "gid",
            ],
            "ssh" => return Err("--mount=type=ssh is not supported".into()),
            k => {
                return Err(format!(
                    "--mount type={k} is not supported (cache, bind, tmpfs, secret)"
                ));
            }
        };
        if let Some((k, _)) = fields.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(format!("--mount type={kind}: unknown option {k:?}"));
        }
        let target = get(&["target", "dst", "destination"]);
        let num = |names: &[&str], default: u32, radix: u32| -> R<u32> {
            match get(names) {
                None => Ok(default),
                Some(v) => u32::from_str_radix(&v, radix)
                    .map_err(|_| format!("--mount {}={v}: not a number", names[0])),
            }
        };
        Ok(match kind.as_str() {
            "cache" => {
                let target = target.ok_or("--mount=type=cache needs a target")?;
                RunMount::Cache {
                    id: get(&["id"]).unwrap_or_else(|| target.clone()),
                    target,
                    sharing: match get(&["sharing"]).as_deref() {
                        None | Some("shared") => Sharing::Shared,
                        Some("locked") => Sharing::Locked,
                        Some("private") => Sharing::Private,
                        Some(s) => {
                            return Err(format!(
                                "--mount sharing={s}: expected shared, private or locked"
                            ));
                        }
                    },
                    readonly: flag(&["ro", "readonly"])?,
                    mode: num(&["mode"], 0o755, 8)?,
                    uid: num(&["uid"], 0, 10)?,
                    gid: num(&["gid"], 0, 10)?,
                }
            }
            "bind" => {
                let target = target.ok_or("--mount=type=bind needs a target")?;
                let source = get(&["source", "src"]).unwrap_or_else(|| ".".into());
                let from = match get(&["from"]) {
                    Some(f) => Some(self.source_of(&f)?),
                    None => None,
                };
                let source = match from {
                    Some(_) => Path::new("/").join(source.trim_start_matches('/')),
                    None => self.context_path(&source)?,
                };
                RunMount::Bind {
                    target,
                    source,
                    from,
                    rw: flag(&["rw", "readwrite"])?,
                    context: Some(self.df.context.clone()),
                }
            }
            "tmpfs" => RunMount::Tmpfs {
                target: target.ok_or("--mount=type=tmpfs needs a target")?,
                size: get(&["size"]).map(|s| size_bytes(&s)).transpose()?,
            },
            _ => {
                let id = get(&["id"])
                    .or_else(|| {
                        target
                            .as_deref()
                            .and_then(|t| t.rsplit('/').next())
                            .map(str::to_owned)
                    })
                    .ok_or("--mount=type=secret needs an id")?;
                RunMount::Secret {
                    target: target.unwrap_or_else(|| format!("/run/secrets/{id}")),
                    id,
                    required: flag(&["required"])?,
                }
            }
        })
    }
}

pub(super) fn is_heredoc_word(w: &str) -> bool {
    let digits = w.chars().take_while(char::is_ascii_digit).count();
    w[digits..].starts_with("<<") && w.len() > digits + 2
}

/// A heredoc's body as a file gets it: tabs removed (`<<-`), variables expanded unless the
/// terminator was quoted.
pub(super) fn heredoc_content(
    st: &StageState,
    doc: &Heredoc,
    vars: &super::shell::Vars,
) -> R<String> {
    let mut content = doc.content.clone();
    if doc.chomp {
        content = content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect();
    }
    if doc.expand {
        let _ = st;
        content = expand_heredoc(&content, vars);
    }
    Ok(content)
}

/// `$A` and `${A}` in a heredoc body (quotes are text there).
fn expand_heredoc(content: &str, vars: &super::shell::Vars) -> String {
    let mut out = String::new();
    let mut it = content.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' && it.peek() == Some(&'$') {
            out.push('$');
            it.next();
            continue;
        }
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = it.peek() == Some(&'{');
        if braced {
            it.next();
        }
        let mut name = String::new();
        while let Some(&n) = it.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                it.next();
            } else {
                break;
            }
        }
        if braced {
            if it.peek() == Some(&'}') {
                it.next();
            } else {
                out.push_str("${");
                out.push_str(&name);
                continue;
            }
        }
        if name.is_empty() {
            out.push('$');
            if braced {
                out.push_str("{}");
            }
        } else {
            out.push_str(vars.get(&name).map_or("", String::as_str));
        }
    }
    out
}

/// The shell command of a `RUN` with heredocs: the line and the bodies, as the shell reads a
/// heredoc; a `RUN <<EOF` alone runs its body as the script (with the `#!` interpreter it
/// names, if any).
fn run_text(text: &str, docs: &[Heredoc]) -> String {
    if docs.is_empty() {
        return text.to_owned();
    }
    let only = split_blanks(text.trim());
    if docs.len() == 1 && only.len() == 1 && is_heredoc_word(&only[0]) {
        let d = &docs[0];
        let body = if d.chomp {
            d.content
                .split_inclusive('\n')
                .map(|l| l.trim_start_matches('\t'))
                .collect()
        } else {
            d.content.clone()
        };
        if let Some(rest) = body.strip_prefix("#!") {
            let interp = rest.lines().next().unwrap_or("/bin/sh").trim().to_owned();
            let quote = if d.expand { "" } else { "'" };
            return format!("{interp} <<{quote}{}{quote}\n{body}{}\n", d.name, d.name);
        }
        return body;
    }
    let mut s = text.to_owned();
    s.push('\n');
    for d in docs {
        s += &d.content;
        s += &d.name;
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_heredocs() {
        let doc = |name: &str, content: &str, expand| Heredoc {
            name: name.into(),
            fd: 0,
            expand,
            chomp: false,
            content: content.into(),
        };
        assert_eq!(
            run_text("<<EOF", &[doc("EOF", "echo a\necho b\n", true)]),
            "echo a\necho b\n"
        );
        assert_eq!(
            run_text("cat <<EOF > /x", &[doc("EOF", "hi $A\n", true)]),
            "cat <<EOF > /x\nhi $A\nEOF\n"
        );
        assert_eq!(
            run_text(
                "<<'EOT'",
                &[doc("EOT", "#!/usr/bin/env python3\nprint(1)\n", false)]
            ),
            "/usr/bin/env python3 <<'EOT'\n#!/usr/bin/env python3\nprint(1)\nEOT\n"
        );
        let vars = [("A".to_owned(), "1".to_owned())].into_iter().collect();
        assert_eq!(
            expand_heredoc("a=$A ${A} \\$A '$A' $B.", &vars),
            "a=1 1 $A '1' ."
        );
    }
}
