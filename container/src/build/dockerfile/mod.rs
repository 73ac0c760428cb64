//! The Dockerfile frontend: parse a Dockerfile into a [`Build`] recipe.
//!
//! Supported: `FROM` (an image in the store, or `scratch`; one stage), `RUN` (shell and exec
//! form), `COPY` (`--chown`, `--chmod`), `ADD` of local files (a tar is unpacked under the
//! destination), `WORKDIR`, `ENV` (`ENV k v` and `ENV k=v ...`), `USER`, `EXPOSE`, `VOLUME`,
//! `LABEL`, `CMD`, `ENTRYPOINT`, `ARG` (defaults and build args), `STOPSIGNAL`, comments and
//! line continuations. Variables (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`; `\$`
//! escapes) are substituted from `ARG`s and `ENV`s in `FROM`, `COPY`, `ADD`, `ENV`, `EXPOSE`,
//! `LABEL`, `STOPSIGNAL`, `USER`, `VOLUME`, `WORKDIR`; not in `RUN`, whose shell sees `ENV`s
//! and, as Docker gives them, the `ARG`s declared after `FROM` in its environment. Anything else (multi-stage builds, `COPY --from`, remote `ADD`, heredocs,
//! wildcards, `HEALTHCHECK`, `ONBUILD`, `SHELL`, `MAINTAINER`) is an error naming its line.
//!
//! ```no_run
//! use molde_container::build::dockerfile::Dockerfile;
//! # fn f(store: &molde_image::Store) -> Result<(), Box<dyn std::error::Error>> {
//! let text = "FROM base:1\nARG NAME=world\nRUN echo hello $NAME > /greeting\n";
//! let df = Dockerfile::parse(text, std::path::Path::new("."), &[("NAME", "you")])?;
//! let report = df.into_build(store)?.build(store, "greeter:1")?;
//! # let _ = report; Ok(()) }
//! ```

mod shell;
pub mod syntax;
mod words;

pub use shell::ShellError;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use molde_image::Store;
use nix::sys::signal::Signal;

use super::step::{Copy, Port, RunCommand, Step};
use super::{Build, copy};

/// A Dockerfile error, naming its line (from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile line {line}: {message}")]
pub struct DockerfileError {
    /// The line of the instruction (its first line, for a continued one).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The base of a parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// `FROM scratch`.
    Scratch,
    /// `FROM name`: an image of the store, by tag or id.
    Image(String),
}

/// A parsed Dockerfile: its base and its steps, each with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The base.
    pub from: From,
    /// The line of the `FROM`.
    pub from_line: usize,
    /// The steps, with their lines.
    pub steps: Vec<(usize, Step)>,
}

fn err(line: usize, message: impl Into<String>) -> DockerfileError {
    DockerfileError {
        line,
        message: message.into(),
    }
}

/// Logical lines: comments dropped, continuations joined; each with its first line number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        if cur.is_none() && trimmed.is_empty() {
            continue;
        }
        let (body, cont) = match raw.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (raw.trim_end(), false),
        };
        match &mut cur {
            Some((_, s)) => {
                // Joined as Docker joins them: the backslash and newline removed.
                s.push_str(body.trim_start());
            }
            None => cur = Some((n, body.trim_start().to_owned())),
        }
        if !cont && let Some(c) = cur.take() {
            out.push(c);
        }
    }
    if let Some(c) = cur {
        out.push(c);
    }
    out
}

/// Substitute `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR:+a}` from `vars`; `\$` is a literal `$`.
fn substitute_with(
    s: &str,
    vars: &HashMap<String, String>,
    line: usize,
    keep_unknown: bool,
) -> Result<String, DockerfileError> {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            let Some(end) = chars[i + 2..].iter().position(|&c| c == '}') else {
                return Err(err(line, format!("unterminated ${{ in {s:?}")));
            };
            let inner: String = chars[i + 2..i + 2 + end].iter().collect();
            let value = if let Some((name, d)) = inner.split_once(":-") {
                vars.get(name)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .unwrap_or_else(|| d.to_owned())
            } else if let Some((name, a)) = inner.split_once(":+") {
                if vars.get(name).is_some_and(|v| !v.is_empty()) {
                    a.to_owned()
                } else {
                    String::new()
                }
            } else {
                if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(err(line, format!("bad substitution ${{{inner}}}")));
                }
                match vars.get(&inner) {
                    Some(v) => v.clone(),
                    None if keep_unknown => format!("${{{inner}}}"),
                    None => String::new(),
                }
            };
            out.push_str(&value);
            i += 3 + end;
            continue;
        }
        let name: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
        } else {
            match vars.get(&name) {
                Some(v) => out.push_str(v),
                None if keep_unknown => {
                    out.push('$');
                    out.push_str(&name);
                }
                None => {}
            }
            i += 1 + name.chars().count();
        }
    }
    Ok(out)
}

/// Substitute from `vars`, unknown variables becoming empty.
fn substitute(
    s: &str,
    vars: &HashMap<String, String>,
    line: usize,
) -> Result<String, DockerfileError> {
    substitute_with(s, vars, line, false)
}

/// Split into words, shell-like: whitespace separates, quotes group, backslash escapes.
fn words(s: &str, line: usize) -> Result<Vec<String>, DockerfileError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(err(line, format!("unterminated quote in {s:?}")));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// A JSON array of strings, if `s` is one.
fn json_array(s: &str) -> Option<Vec<String>> {
    let t = s.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

/// `key=value` pairs (quotes allowed), as `ENV k=v ...` and `LABEL` take them.
fn pairs(s: &str, line: usize, what: &str) -> Result<Vec<(String, String)>, DockerfileError> {
    let ws = words(s, line)?;
    if ws.is_empty() {
        return Err(err(line, format!("{what} needs arguments")));
    }
    ws.into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(err(line, format!("{what}: expected key=value, got {w:?}"))),
        })
        .collect()
}

/// A path of the build context, refusing what leaves it.
fn context_path(context: &Path, src: &str, line: usize) -> Result<PathBuf, DockerfileError> {
    if src.contains(['*', '?', '[']) {
        return Err(err(
            line,
            format!("wildcards in sources are not supported: {src:?}"),
        ));
    }
    let mut depth: i32 = 0;
    for c in Path::new(src).components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(err(
                line,
                format!("source {src:?} is outside the build context"),
            ));
        }
    }
    Ok(context.join(src.trim_start_matches('/')))
}

impl Dockerfile {
    /// Parse `text`. Sources of `COPY`/`ADD` are relative to `context`; `build_args` override
    /// `ARG` defaults.
    pub fn parse(
        text: &str,
        context: &Path,
        build_args: &[(&str, &str)],
    ) -> Result<Dockerfile, DockerfileError> {
        let given: HashMap<String, String> = build_args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut args: HashMap<String, String> = HashMap::new();
        let mut envs: HashMap<String, String> = HashMap::new();
        let mut from: Option<(usize, From)> = None;
        let mut steps = Vec::new();
        for (line, text) in logical_lines(text) {
            let (kw, rest) = match text.split_once(char::is_whitespace) {
                Some((k, r)) => (k.to_ascii_uppercase(), r.trim().to_owned()),
                None => (text.to_ascii_uppercase(), String::new()),
            };
            if rest.contains("<<")
                && matches!(kw.as_str(), "RUN" | "COPY" | "ADD")
                && words(&rest, line).is_ok_and(|w| {
                    w.iter()
                        .any(|w| w.starts_with("<<") && w.len() > 2 && !w[2..].starts_with('<'))
                })
            {
                return Err(err(line, format!("{kw}: heredocs are not supported")));
            }
            // Variables: ARGs then ENVs (ENV wins, as in Docker).
            let mut vars = args.clone();
            vars.extend(envs.clone());
            let sub = |s: &str| substitute(s, &vars, line);
            if kw == "ARG" {
                let (name, default) = match rest.split_once('=') {
                    Some((n, d)) => {
                        let d = words(&sub(d)?, line)?.join(" ");
                        (n.trim().to_owned(), Some(d))
                    }
                    None => (rest.trim().to_owned(), None),
                };
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(err(line, "ARG: expected ARG name[=default]"));
                }
                let value = given.get(&name).cloned().or(default);
                if from.is_some()
                    && let Some(v) = &value
                {
                    // In scope for the RUN steps after it, as their environment.
                    steps.push((line, Step::Arg(name.clone(), v.clone())));
                }
                args.insert(name, value.unwrap_or_default());
                continue;
            }
            if kw == "FROM" {
                if from.is_some() {
                    return Err(err(
                        line,
                        "multi-stage builds (a second FROM) are not supported",
                    ));
                }
                let ws = words(&sub(&rest)?, line)?;
                if ws.iter().any(|w| w.starts_with("--")) {
                    return Err(err(line, "FROM flags (--platform) are not supported"));
                }
                match ws.as_slice() {
                    [name] => {
                        let f = if name == "scratch" {
                            From::Scratch
                        } else {
                            From::Image(name.clone())
                        };
                        from = Some((line, f));
                    }
                    [_, a, _] if a.eq_ignore_ascii_case("as") => {
                        return Err(err(line, "named stages (FROM x AS y) are not supported"));
                    }
                    _ => return Err(err(line, "FROM: expected one image name")),
                }
                continue;
            }
            if from.is_none() {
                return Err(err(line, format!("{kw} before FROM")));
            }
            let step = match kw.as_str() {
                "RUN" => {
                    if rest.starts_with("--") {
                        return Err(err(
                            line,
                            "RUN flags (--mount, --network) are not supported",
                        ));
                    }
                    match json_array(&rest) {
                        Some(v) if v.is_empty() => return Err(err(line, "RUN: empty command")),
                        Some(v) => Step::Run(RunCommand::Exec(v)),
                        None if rest.is_empty() => return Err(err(line, "RUN: empty command")),
                        // The shell expands variables itself: ARGs are in its environment.
                        None => Step::Run(RunCommand::Shell(rest.clone())),
                    }
                }
                "CMD" | "ENTRYPOINT" => {
                    let v = json_array(&rest)
                        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), rest.clone()]);
                    if kw == "CMD" {
                        Step::Cmd(v)
                    } else {
                        Step::Entrypoint(v)
                    }
                }
                "COPY" | "ADD" => {
                    let mut ws = match json_array(&rest) {
                        Some(v) => v.iter().map(|w| sub(w)).collect::<Result<Vec<_>, _>>()?,
                        None => words(&sub(&rest)?, line)?,
                    };
                    let mut chown = None;
                    let mut chmod = None;
                    while ws.first().is_some_and(|w| w.starts_with("--")) {
                        let flag = ws.remove(0);
                        if let Some(v) = flag.strip_prefix("--chown=") {
                            chown = Some(v.to_owned());
                        } else if let Some(v) = flag.strip_prefix("--chmod=") {
                            chmod = Some(u32::from_str_radix(v, 8).map_err(|_| {
                                err(line, format!("{kw} --chmod: {v:?} is not an octal mode"))
                            })?);
                        } else {
                            return Err(err(line, format!("{kw} {flag}: not supported")));
                        }
                    }
                    if ws.len() < 2 {
                        return Err(err(line, format!("{kw} needs a source and a destination")));
                    }
                    let dest = ws.pop().unwrap_or_default();
                    if kw == "ADD"
                        && let Some(u) = ws
                            .iter()
                            .find(|w| w.contains("://") || w.starts_with("git@"))
                    {
                        return Err(err(
                            line,
                            format!("ADD of a remote source {u:?} is not supported"),
                        ));
                    }
                    let sources = ws
                        .iter()
                        .map(|s| context_path(context, s, line))
                        .collect::<Result<Vec<_>, _>>()?;
                    if kw == "ADD" && sources.len() == 1 && copy::is_tar(&sources[0]) {
                        if chown.is_some() || chmod.is_some() {
                            return Err(err(
                                line,
                                "ADD of a tar with --chown/--chmod is not supported",
                            ));
                        }
                        Step::AddTar {
                            tar: sources[0].clone(),
                            dest,
                        }
                    } else {
                        let mut c = Copy::many(sources, dest);
                        if let Some(o) = chown {
                            c = c.chown(o);
                        }
                        if let Some(m) = chmod {
                            c = c.chmod(m);
                        }
                        Step::Copy(c)
                    }
                }
                "ENV" => {
                    let s = sub(&rest)?;
                    let first = s.split_whitespace().next().unwrap_or("");
                    let kvs = if !first.contains('=') {
                        // ENV key value (the rest of the line, as it is).
                        let value = s[first.len()..].trim();
                        if first.is_empty() || value.is_empty() {
                            return Err(err(
                                line,
                                "ENV: expected ENV key value or ENV key=value ...",
                            ));
                        }
                        vec![(first.to_owned(), value.to_owned())]
                    } else {
                        pairs(&s, line, "ENV")?
                    };
                    let mut it = kvs.into_iter();
                    let (k, v) = it.next().ok_or_else(|| err(line, "ENV needs arguments"))?;
                    envs.insert(k.clone(), v.clone());
                    let mut first_step = Step::Env(k, v);
                    // Several pairs: one step each, all on this line.
                    for (k, v) in it {
                        envs.insert(k.clone(), v.clone());
                        steps.push((line, first_step));
                        first_step = Step::Env(k, v);
                    }
                    first_step
                }
                "LABEL" => {
                    let kvs = pairs(&sub(&rest)?, line, "LABEL")?;
                    let n = kvs.len();
                    let mut last = None;
                    for (i, (k, v)) in kvs.into_iter().enumerate() {
                        if i + 1 < n {
                            steps.push((line, Step::Label(k, v)));
                        } else {
                            last = Some(Step::Label(k, v));
                        }
                    }
                    last.ok_or_else(|| err(line, "LABEL needs arguments"))?
                }
                "EXPOSE" => {
                    let ws = words(&sub(&rest)?, line)?;
                    if ws.is_empty() {
                        return Err(err(line, "EXPOSE needs a port"));
                    }
                    let mut ports = Vec::new();
                    for w in ws {
                        ports.push(w.parse::<Port>().map_err(|e| err(line, e))?);
                    }
                    let last = ports.pop().map(Step::Expose);
                    for p in ports {
                        steps.push((line, Step::Expose(p)));
                    }
                    last.ok_or_else(|| err(line, "EXPOSE needs a port"))?
                }
                "VOLUME" => {
                    let s = sub(&rest)?;
                    let mut vs = match json_array(&s) {
                        Some(v) => v,
                        None => words(&s, line)?,
                    };
                    let last = vs.pop().ok_or_else(|| err(line, "VOLUME needs a path"))?;
                    for v in vs {
                        steps.push((line, Step::Volume(v)));
                    }
                    Step::Volume(last)
                }
                "WORKDIR" | "USER" => {
                    let v = sub(&rest)?.trim().to_owned();
                    if v.is_empty() || (kw == "USER" && v.contains(char::is_whitespace)) {
                        return Err(err(line, format!("{kw} needs one value")));
                    }
                    if kw == "USER" {
                        Step::User(v)
                    } else {
                        Step::Workdir(v)
                    }
                }
                "STOPSIGNAL" => {
                    let v = sub(&rest)?.trim().to_ascii_uppercase();
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
                    Step::StopSignal(
                        sig.ok_or_else(|| err(line, format!("STOPSIGNAL: unknown signal {v:?}")))?,
                    )
                }
                "HEALTHCHECK" | "ONBUILD" | "SHELL" | "MAINTAINER" => {
                    return Err(err(line, format!("{kw} is not supported")));
                }
                other => return Err(err(line, format!("unknown instruction {other:?}"))),
            };
            steps.push((line, step));
        }
        let Some((from_line, from)) = from else {
            return Err(err(1, "no FROM"));
        };
        Ok(Dockerfile {
            from,
            from_line,
            steps,
        })
    }

    /// The recipe: `FROM` resolved in `store`, the steps in order.
    pub fn into_build(self, store: &Store) -> Result<Build, DockerfileError> {
        let mut b = match &self.from {
            From::Scratch => Build::scratch(),
            From::Image(name) => {
                let img = store
                    .resolve(name)
                    .map_err(|e| err(self.from_line, format!("FROM {name}: {e}")))?;
                Build::from_image(&img)
            }
        };
        for (_, s) in self.steps {
            b = b.step(s);
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
        Dockerfile::parse(text, Path::new("/ctx"), &[])
    }
    fn steps(text: &str) -> Vec<Step> {
        parse(text)
            .unwrap()
            .steps
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }
    fn line_of(text: &str) -> usize {
        parse(text).unwrap_err().line
    }

    #[test]
    fn from_scratch_and_image() {
        assert_eq!(parse("FROM scratch").unwrap().from, From::Scratch);
        assert_eq!(
            parse("from alpine:3").unwrap().from,
            From::Image("alpine:3".into())
        );
        assert_eq!(line_of("\n\nRUN x\nFROM a"), 3);
        assert_eq!(line_of("# c\n"), 1);
        assert_eq!(line_of("FROM a AS b"), 1);
        assert_eq!(line_of("FROM a\nFROM b"), 2);
        assert_eq!(line_of("FROM --platform=linux/amd64 a"), 1);
    }

    #[test]
    fn run_forms() {
        assert_eq!(
            steps("FROM a\nRUN echo hi && ls"),
            vec![Step::Run(RunCommand::Shell("echo hi && ls".into()))]
        );
        assert_eq!(
            steps("FROM a\nRUN [\"/bin/echo\", \"a b\"]"),
            vec![Step::Run(RunCommand::Exec(vec![
                "/bin/echo".into(),
                "a b".into()
            ]))]
        );
        assert_eq!(line_of("FROM a\nRUN"), 2);
        assert_eq!(line_of("FROM a\nRUN []"), 2);
        assert_eq!(line_of("FROM a\nRUN --mount=type=cache,target=/x true"), 2);
        assert_eq!(line_of("FROM a\n\nRUN <<EOF\necho\nEOF"), 3);
    }

    #[test]
    fn comments_and_continuations() {
        let s = steps(
            "# top\nFROM a\n# x\nRUN apt-get update \\\n    # inner comment\n    && echo done\nENV A=1",
        );
        assert_eq!(
            s,
            vec![
                Step::Run(RunCommand::Shell("apt-get update && echo done".into())),
                Step::Env("A".into(), "1".into())
            ]
        );
        let df = parse("FROM a\nRUN a \\\n b\nRUN [\"x\"] \n BAD").unwrap_err();
        assert_eq!(df.line, 5);
    }

    #[test]
    fn env_forms() {
        assert_eq!(
            steps("FROM a\nENV PATH /usr/bin:/bin with spaces"),
            vec![Step::Env("PATH".into(), "/usr/bin:/bin with spaces".into())]
        );
        assert_eq!(
            steps("FROM a\nENV A=1 B=\"two words\" C=x\\ y"),
            vec![
                Step::Env("A".into(), "1".into()),
                Step::Env("B".into(), "two words".into()),
                Step::Env("C".into(), "x y".into())
            ]
        );
        assert_eq!(
            steps("FROM a\nENV A=1\nENV B=${A}2 C=$A-3\nWORKDIR /x/$B"),
            vec![
                Step::Env("A".into(), "1".into()),
                Step::Env("B".into(), "12".into()),
                Step::Env("C".into(), "1-3".into()),
                Step::Workdir("/x/12".into())
            ]
        );
        assert_eq!(line_of("FROM a\nENV A"), 2);
        assert_eq!(line_of("FROM a\nENV A=1 =2"), 2);
    }

    #[test]
    fn args_and_build_args() {
        let text = "ARG BASE=alpine\nFROM $BASE\nARG VERSION=1.0\nARG EMPTY\nLABEL v=$VERSION e=\"[$EMPTY]\" d=${NOPE:-dflt} p=${VERSION:+set}\nRUN echo $VERSION \\$HOME $PATH ${X}";
        let df = Dockerfile::parse(text, Path::new("/c"), &[("VERSION", "2.5")]).unwrap();
        assert_eq!(df.from, From::Image("alpine".into()));
        let s: Vec<Step> = df.steps.into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            s,
            vec![
                Step::Arg("VERSION".into(), "2.5".into()),
                Step::Label("v".into(), "2.5".into()),
                Step::Label("e".into(), "[]".into()),
                Step::Label("d".into(), "dflt".into()),
                Step::Label("p".into(), "set".into()),
                Step::Run(RunCommand::Shell("echo $VERSION \\$HOME $PATH ${X}".into()))
            ]
        );
        let df = Dockerfile::parse("ARG B=x\nFROM $B", Path::new("/c"), &[("B", "y:1")]).unwrap();
        assert_eq!(df.from, From::Image("y:1".into()));
        assert_eq!(line_of("FROM a\nARG"), 2);
        assert_eq!(line_of("FROM a\nLABEL x=${bad"), 2);
    }

    #[test]
    fn copy_and_add() {
        assert_eq!(
            steps("FROM a\nCOPY --chown=app:app --chmod=750 src/ lib /opt/"),
            vec![Step::Copy(
                Copy::many(["/ctx/src/", "/ctx/lib"], "/opt/")
                    .chown("app:app")
                    .chmod(0o750)
            )]
        );
        assert_eq!(
            steps("FROM a\nCOPY [\"a b\", \"/d/\"]"),
            vec![Step::Copy(Copy::many(["/ctx/a b"], "/d/"))]
        );
        // ADD of a non-tar local file is a COPY.
        assert_eq!(
            steps("FROM a\nADD notes.txt /n"),
            vec![Step::Copy(Copy::many(["/ctx/notes.txt"], "/n"))]
        );
        assert_eq!(line_of("FROM a\nCOPY --from=build /x /y"), 2);
        assert_eq!(line_of("FROM a\nADD https://example.com/x.tar /x"), 2);
        assert_eq!(line_of("FROM a\nCOPY ../secret /x"), 2);
        assert_eq!(line_of("FROM a\nCOPY *.txt /x/"), 2);
        assert_eq!(line_of("FROM a\nCOPY onlyone"), 2);
        assert_eq!(line_of("FROM a\nCOPY --chmod=9z a b"), 2);
    }

    #[test]
    fn config_instructions() {
        let s = steps(
            "FROM a\nEXPOSE 80 53/udp\nVOLUME [\"/data\", \"/logs\"]\nVOLUME /x\nUSER 1000:1000\nWORKDIR app\nCMD [\"nginx\", \"-g\"]\nENTRYPOINT run.sh --fast\nSTOPSIGNAL SIGQUIT\nstopsignal 15\nSTOPSIGNAL term",
        );
        assert_eq!(
            s,
            vec![
                Step::Expose(Port::tcp(80)),
                Step::Expose(Port::udp(53)),
                Step::Volume("/data".into()),
                Step::Volume("/logs".into()),
                Step::Volume("/x".into()),
                Step::User("1000:1000".into()),
                Step::Workdir("app".into()),
                Step::Cmd(vec!["nginx".into(), "-g".into()]),
                Step::Entrypoint(vec!["/bin/sh".into(), "-c".into(), "run.sh --fast".into()]),
                Step::StopSignal(Signal::SIGQUIT),
                Step::StopSignal(Signal::SIGTERM),
                Step::StopSignal(Signal::SIGTERM),
            ]
        );
        assert_eq!(line_of("FROM a\nEXPOSE http"), 2);
        assert_eq!(line_of("FROM a\nEXPOSE 80/sctp"), 2);
        assert_eq!(line_of("FROM a\nSTOPSIGNAL SIGNOPE"), 2);
        assert_eq!(line_of("FROM a\nUSER a b"), 2);
    }

    #[test]
    fn unsupported_instructions_name_their_line() {
        for (i, kw) in [
            "HEALTHCHECK CMD true",
            "ONBUILD RUN x",
            "SHELL [\"/bin/bash\"]",
            "MAINTAINER me",
            "FOO bar",
        ]
        .iter()
        .enumerate()
        {
            let text = format!("FROM a\n{}{kw}", "\n".repeat(i));
            assert_eq!(line_of(&text), 2 + i, "{kw}");
        }
    }
}
