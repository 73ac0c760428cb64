//! The Dockerfile syntax: parser directives, comments, line continuations (with either escape
//! character), heredocs, and each instruction split into its keyword, flags and arguments as
//! BuildKit's parser splits them. Nothing is expanded here; the result is a list of [`Node`]s
//! with their lines, which [`Node::dump`] prints in BuildKit's own test format (the
//! conformance suite compares the two).

use super::shell::{Lex, Vars};
use super::words::{Json, is_blank, parse_json, parse_words, split_blanks, split_command};

/// A syntax error, with the line (from 1) where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    /// The line.
    pub line: usize,
    /// The first line of the instruction, when the error is in one.
    pub instruction: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// A parser directive (`# syntax=...`, `# escape=...`, `# check=...`) at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Its name, lower case.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Its line.
    pub line: usize,
}

/// A heredoc attached to an instruction (`RUN <<EOF`, `COPY <<EOF /file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word (quotes removed).
    pub name: String,
    /// The file descriptor it feeds (`3<<EOF`), 0 by default.
    pub fd: u32,
    /// Whether variables in the body are expanded (the terminator was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are removed from the body's lines.
    pub chomp: bool,
    /// The body, every line with its newline.
    pub content: String,
}

/// One key/value pair of `ENV` or `LABEL`, as written (quotes kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The key.
    pub key: String,
    /// The value, quotes kept.
    pub value: String,
    /// `false` for the old `ENV key value` form.
    pub equals: bool,
}

/// The arguments of an instruction, in the shape its keyword gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// Nothing after the keyword (or flags only).
    None,
    /// A list of words (whitespace-separated with quotes kept, or a JSON array).
    List(Vec<String>),
    /// The rest of the line as one string (shell forms, `USER`, `WORKDIR`...).
    Text(String),
    /// `ENV` / `LABEL` pairs.
    Pairs(Vec<Pair>),
    /// `HEALTHCHECK`: its kind (`CMD`, `NONE`) and command.
    Health {
        /// `CMD` or `NONE` as written.
        kind: String,
        /// The command after it.
        command: Box<Args>,
    },
    /// `ONBUILD`: the instruction it holds.
    Sub(Box<Node>),
    /// An instruction this parser does not know: its text, kept for the error message.
    Unknown(String),
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (any case).
    pub keyword: String,
    /// The `--flags` before the arguments, quotes removed.
    pub flags: Vec<String>,
    /// The arguments.
    pub args: Args,
    /// The arguments are the exec (JSON array) form.
    pub json: bool,
    /// Heredoc bodies, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The instruction's text, continuations joined.
    pub original: String,
    /// Its first line (from 1).
    pub start_line: usize,
    /// Its last line (heredoc bodies included).
    pub end_line: usize,
    /// The column (from 1) of its keyword.
    pub column: usize,
}

/// A parsed Dockerfile: directives, escape character and instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The directives at its top.
    pub directives: Vec<Directive>,
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// The instructions.
    pub nodes: Vec<Node>,
    /// Warnings (empty continuation lines).
    pub warnings: Vec<String>,
}

impl Node {
    /// The keyword, upper case.
    pub fn command(&self) -> String {
        self.keyword.to_ascii_uppercase()
    }
}

/// The directive parser: only at the very top, each name once.
struct Directives {
    done: bool,
    found: Vec<Directive>,
}

impl Directives {
    /// Look at `line` (newline removed); a directive is recorded, anything else ends them.
    fn see(&mut self, line: &str, number: usize) -> Result<Option<Directive>, String> {
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let rest = rest.trim_start();
        let name_len = rest
            .char_indices()
            .take_while(|(i, c)| {
                if *i == 0 {
                    c.is_ascii_alphabetic()
                } else {
                    c.is_ascii_alphanumeric()
                }
            })
            .count();
        let (name, after) = rest.split_at(name_len);
        let value = after.trim_start().strip_prefix('=').map(str::trim);
        let (Some(value), false) = (value, name.is_empty()) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if value.is_empty() || !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        let d = Directive {
            name,
            value: value.to_owned(),
            line: number,
        };
        self.found.push(d.clone());
        Ok(Some(d))
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// `line` without its continuation escape, and whether it ends the instruction. The escape
/// continues the line when it is the last non-blank character and not itself escaped.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    if let Some(before) = body.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before.to_owned(), false);
    }
    (line.to_owned(), true)
}

struct Lines<'a> {
    lines: Vec<&'a str>,
    next: usize,
}

impl<'a> Lines<'a> {
    /// The next line with its newline removed, and its number (from 1).
    fn next(&mut self) -> Option<(usize, &'a str)> {
        let l = self.lines.get(self.next)?;
        self.next += 1;
        Some((self.next, l.trim_end_matches(['\r', '\n'])))
    }
    /// The next line as it is (newline kept).
    fn next_raw(&mut self) -> Option<(usize, &'a str)> {
        let l = self.lines.get(self.next)?;
        self.next += 1;
        Some((self.next, l))
    }
}

/// Parse `text`.
pub fn parse(text: &str) -> Result<Parsed, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = Lines {
        lines: text.split_inclusive('\n').collect(),
        next: 0,
    };
    let mut directives = Directives {
        done: false,
        found: Vec::new(),
    };
    let mut escape = '\\';
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let err = |line: usize, instruction: Option<&str>, message: String| SyntaxError {
        line,
        instruction: instruction.map(str::to_owned),
        message,
    };
    while let Some((start, raw)) = lines.next() {
        let column = raw.len() - raw.trim_start().len() + 1;
        let first = raw.trim_start();
        if let Some(d) = directives
            .see(first, start)
            .map_err(|m| err(start, None, m))?
            && d.name == "escape"
        {
            escape = match d.value.as_str() {
                "\\" => '\\',
                "`" => '`',
                v => {
                    return Err(err(
                        start,
                        None,
                        format!("invalid escape token '{v}' does not match ` or \\"),
                    ));
                }
            };
        }
        if is_comment(first) {
            continue;
        }
        let (body, mut done) = trim_continuation(first, escape);
        if done && body.is_empty() {
            continue;
        }
        let mut line = body;
        let mut empty_continuation = false;
        let mut end = start;
        while !done {
            let Some((n, next)) = lines.next() else { break };
            end = n;
            if is_comment(next) {
                continue;
            }
            if next.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (body, d) = trim_continuation(next, escape);
            line += &body;
            done = d;
        }
        if empty_continuation {
            warnings.push(format!("line {end}: empty continuation line in: {line}"));
        }
        let mut node = node_from_line(&line, escape).map_err(|m| err(start, Some(&line), m))?;
        node.start_line = start;
        node.column = column;
        if can_hold_heredoc(&node) && line.contains("<<") {
            for mut doc in heredoc_markers(&line) {
                let mut content = String::new();
                let mut terminated = false;
                while let Some((n, raw)) = lines.next_raw() {
                    end = n;
                    let mut candidate = raw.trim_end_matches(['\r', '\n']);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    content += raw;
                }
                if !terminated {
                    return Err(err(
                        start,
                        Some(&line),
                        format!("unterminated heredoc (no line {:?} ends it)", doc.name),
                    ));
                }
                doc.content = content;
                node.heredocs.push(doc);
            }
        }
        node.end_line = end;
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(err(
            lines.next,
            None,
            "file with no instructions".to_owned(),
        ));
    }
    Ok(Parsed {
        directives: directives.found,
        escape,
        nodes,
        warnings,
    })
}

fn can_hold_heredoc(node: &Node) -> bool {
    let node = match &node.args {
        Args::Sub(inner) if node.command() == "ONBUILD" => inner,
        _ => node,
    };
    matches!(node.command().as_str(), "RUN" | "COPY" | "ADD") && !node.json
}

/// The heredoc markers of an instruction line (`<<EOF`, `<<-EOF`, `3<<"EOF"`), in order.
fn heredoc_markers(line: &str) -> Vec<Heredoc> {
    let empty = Vars::new();
    let Ok(words) = Lex::raw('\\').words(line, &empty) else {
        return Vec::new();
    };
    words.iter().filter_map(|w| heredoc_marker(w)).collect()
}

fn heredoc_marker(word: &str) -> Option<Heredoc> {
    let digits = word.chars().take_while(char::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let empty = Vars::new();
    let plain = Lex::new('\\').skipping_unset().words(rest, &empty).ok()?;
    let [name] = plain.as_slice() else {
        return None;
    };
    let raw = Lex::raw('\\').words(rest, &empty).ok()?;
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    Some(Heredoc {
        name: name.clone(),
        fd: word[..digits].parse().unwrap_or(0),
        expand: raw.len() == 1 && quotes(name) == quotes(&raw[0]),
        chomp,
        content: String::new(),
    })
}

/// One instruction's node from its joined line.
fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let (keyword, flags, rest) = split_command(line, escape);
    let mut json = false;
    let args = match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => match parse_json(&rest) {
            Json::Strings(v) => {
                json = true;
                Args::List(v)
            }
            Json::NotStrings => return Err(not_strings()),
            Json::No => whitespace_list(&rest),
        },
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(&rest, &mut json)?,
        "arg" => match parse_words(&rest, escape) {
            w if w.is_empty() => Args::None,
            w => Args::List(w),
        },
        "env" | "label" => name_values(&rest, &keyword.to_ascii_uppercase(), escape)?,
        "expose" | "from" => whitespace_list(&rest),
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                Args::None
            } else {
                Args::Text(rest.clone())
            }
        }
        "healthcheck" => health(&rest, &mut json)?,
        "onbuild" => {
            if rest.is_empty() {
                Args::None
            } else {
                let mut inner = node_from_line(&rest, escape)?;
                inner.original = rest.clone();
                Args::Sub(Box::new(inner))
            }
        }
        _ => Args::Unknown(rest.clone()),
    };
    Ok(Node {
        keyword,
        flags,
        args,
        json,
        heredocs: Vec::new(),
        original: line.to_owned(),
        start_line: 0,
        end_line: 0,
        column: 1,
    })
}

fn not_strings() -> String {
    "when using JSON array syntax, arrays must be comprised of strings only".to_owned()
}

fn whitespace_list(rest: &str) -> Args {
    if rest.is_empty() {
        return Args::None;
    }
    Args::List(split_blanks(rest))
}

fn maybe_json(rest: &str, json: &mut bool) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::None);
    }
    match parse_json(rest) {
        Json::Strings(v) => {
            *json = true;
            Ok(Args::List(v))
        }
        Json::NotStrings => Err(not_strings()),
        Json::No => Ok(Args::Text(rest.to_owned())),
    }
}

fn health(rest: &str, json: &mut bool) -> Result<Args, String> {
    let kind_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if kind_len == 0 {
        return Ok(Args::None);
    }
    let command = maybe_json(rest[kind_len..].trim_start(), json)?;
    Ok(Args::Health {
        kind: rest[..kind_len].to_owned(),
        command: Box::new(command),
    })
}

/// `KEY name value` (old form: the rest of the line is the value) or `KEY a=1 b="2 3"`.
fn name_values(rest: &str, keyword: &str, escape: char) -> Result<Args, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Args::None);
    };
    if !first.contains('=') {
        let t = rest.trim_start_matches(is_blank);
        let Some(i) = t.find(is_blank) else {
            return Err(format!("{keyword} must have two arguments"));
        };
        let value = t[i..].trim_start_matches(is_blank);
        return Ok(Args::Pairs(vec![Pair {
            key: t[..i].to_owned(),
            value: value.to_owned(),
            equals: false,
        }]));
    }
    let mut pairs = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        pairs.push(Pair {
            key: k.to_owned(),
            value: v.to_owned(),
            equals: true,
        });
    }
    Ok(Args::Pairs(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredocs_are_read_after_their_line() {
        let p = parse(
            "FROM a\nRUN <<EOF cat >/x && 3<<-'END' sh\nhello $A\nEOF\n\tbye\n\tEND\nCMD x\n",
        )
        .unwrap();
        let run = &p.nodes[1];
        assert_eq!((run.start_line, run.end_line), (2, 6));
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].name, "EOF");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.heredocs[0].content, "hello $A\n");
        assert_eq!(run.heredocs[1].fd, 3);
        assert!(run.heredocs[1].chomp && !run.heredocs[1].expand);
        assert_eq!(run.heredocs[1].content, "\tbye\n");
        assert_eq!(p.nodes[2].start_line, 7);
        let e = parse("FROM a\nCOPY <<EOF /x\nnever ends\n").unwrap_err();
        assert_eq!(e.line, 2);
        // Not in the exec form.
        let p = parse("FROM a\nRUN [\"<<EOF\"]\nEOF\n").unwrap();
        assert_eq!(p.nodes.len(), 3);
    }

    #[test]
    fn directives_only_at_the_top() {
        let p = parse(
            "# syntax=docker/dockerfile:1\n#escape=`\n# check=skip=all\nFROM a\nRUN a `\n b\n",
        )
        .unwrap();
        assert_eq!(p.escape, '`');
        assert_eq!(p.directives.len(), 3);
        assert_eq!(p.nodes[1].original, "RUN a  b");
        let p = parse("# hi\n# escape=`\nFROM a\nRUN a `\n").unwrap();
        assert_eq!(p.escape, '\\');
        assert!(parse("# escape=x\nFROM a").is_err());
        assert_eq!(parse("#escape=`\n#escape=`\nFROM a").unwrap_err().line, 2);
    }

    #[test]
    fn columns_and_lines() {
        let p = parse("\n  FROM a\nRUN a \\\n  # note\n  b\n").unwrap();
        assert_eq!((p.nodes[0].start_line, p.nodes[0].column), (2, 3));
        assert_eq!((p.nodes[1].start_line, p.nodes[1].end_line), (3, 5));
        assert_eq!(p.nodes[1].args, Args::Text("a   b".into()));
    }
}
