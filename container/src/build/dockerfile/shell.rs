//! Words as a Dockerfile's instructions see them: quotes removed, escapes applied and
//! variables expanded (`$A`, `${A}`, `${A:-default}`, `${A-default}`, `${A:+alt}`, `${A+alt}`,
//! `${A:?message}`, `${A?message}`, `${A#prefix}`, `${A##prefix}`, `${A%suffix}`,
//! `${A%%suffix}`), the way BuildKit's shell lexer does. Expansion happens before word
//! splitting, so a value with spaces splits unless it is quoted.

use std::collections::HashMap;

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// A quote was not closed.
    #[error("unterminated {0} quote")]
    UnterminatedQuote(&'static str),
    /// `${` without its `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${}`, `${:x}` and the like.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A modifier the lexer does not know, such as `${A/x/y}`.
    #[error("unsupported modifier ({0}) in substitution (supported: - + ? # % and their : forms)")]
    UnsupportedModifier(String),
    /// `${A?message}` with `A` unset (or empty, for `:?`).
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// Its message.
        message: String,
    },
}

/// The variables a word may name.
pub(crate) type Vars = HashMap<String, String>;

/// A lexer: the escape character and how raw the output stays.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lex {
    escape: char,
    /// Keep quotes in the output (heredoc detection).
    raw_quotes: bool,
    /// Keep escape characters in the output.
    raw_escapes: bool,
    /// Leave unset variables as written.
    skip_unset: bool,
}

struct Words {
    words: Vec<String>,
    buf: String,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

struct Scan<'a> {
    lex: Lex,
    chars: Vec<char>,
    pos: usize,
    vars: &'a Vars,
    /// Names looked up and found.
    used: Vec<String>,
}

impl Lex {
    /// The usual lexer for `escape` (`\` or `` ` ``).
    pub(crate) fn new(escape: char) -> Lex {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
        }
    }

    /// A lexer that keeps quotes, escapes and unset variables as written: it only splits.
    pub(crate) fn raw(escape: char) -> Lex {
        Lex {
            escape,
            raw_quotes: true,
            raw_escapes: true,
            skip_unset: true,
        }
    }

    /// A lexer that leaves unset variables as written.
    pub(crate) fn skipping_unset(mut self) -> Lex {
        self.skip_unset = true;
        self
    }

    /// `word` expanded, as one word (spaces kept).
    #[allow(dead_code)] // the frontend's next step uses it
    pub(crate) fn word(&self, word: &str, vars: &Vars) -> Result<String, ShellError> {
        Ok(self.process(word, vars)?.0)
    }

    /// `word` expanded and split into words.
    pub(crate) fn words(&self, word: &str, vars: &Vars) -> Result<Vec<String>, ShellError> {
        Ok(self.process(word, vars)?.1)
    }

    fn process(&self, word: &str, vars: &Vars) -> Result<(String, Vec<String>), ShellError> {
        let mut s = Scan {
            lex: *self,
            chars: word.chars().collect(),
            pos: 0,
            vars,
            used: Vec::new(),
        };
        s.until(None, self.raw_escapes)
    }
}

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Process until `stop` (consumed) or the end; the word and its split.
    fn until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ShellError> {
        let saved = self.lex.raw_escapes;
        self.lex.raw_escapes = raw_escapes;
        let r = self.until_inner(stop);
        self.lex.raw_escapes = saved;
        r
    }

    fn until_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words {
            words: Vec::new(),
            buf: String::new(),
            in_word: false,
        };
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let v = self.dollar()?;
                    result.push_str(&v);
                    words.add_string(&v);
                }
                '<' => {
                    let v = self.maybe_heredoc();
                    result.push_str(&v);
                    words.add_raw_string(&v);
                }
                '\'' => {
                    let v = self.single_quote()?;
                    result.push_str(&v);
                    words.add_raw_string(&v);
                }
                '"' => {
                    let v = self.double_quote()?;
                    result.push_str(&v);
                    words.add_raw_string(&v);
                }
                _ => {
                    self.pos += 1;
                    if c == self.lex.escape {
                        if self.lex.raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        let Some(n) = self.next() else { break };
                        words.add_raw_char(n);
                        result.push(n);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if stop.is_some() {
            return Err(ShellError::MissingBrace);
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Result<String, ShellError> {
        let mut out = String::new();
        let q = self.next().unwrap_or('\'');
        if self.lex.raw_quotes {
            out.push(q);
        }
        loop {
            match self.next() {
                None => return Err(ShellError::UnterminatedQuote("single")),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ShellError> {
        let mut out = String::new();
        let q = self.next().unwrap_or('"');
        if self.lex.raw_quotes {
            out.push(q);
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedQuote("double")),
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    let mut c = c;
                    if c == self.lex.escape {
                        if self.lex.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.pos += 1;
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// `<<` and the blanks after it stay one word with what follows (a heredoc marker).
    fn maybe_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.pos += 1;
        let mut out = String::from("<<");
        while let Some(c) = self.peek().filter(|c| *c == ' ' || *c == '\t') {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let v = self.lex_vars_get(name)?;
        if !self.used.iter().any(|u| u == name) {
            self.used.push(name.to_owned());
        }
        Some(v)
    }

    fn lex_vars_get(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ShellError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            _ => {}
        }
        let name = self.name();
        let Some(c) = self.next() else {
            return Err(ShellError::MissingBrace);
        };
        if c == '}' {
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            });
        }
        let (null_is_unset, op) = if c == ':' {
            match self.next() {
                Some(op) => (true, op),
                None => return Err(ShellError::MissingBrace),
            }
        } else {
            (false, c)
        };
        let modifier = if null_is_unset {
            format!(":{op}")
        } else {
            op.to_string()
        };
        if !matches!(op, '-' | '+' | '?' | '#' | '%') || (null_is_unset && matches!(op, '#' | '%'))
        {
            return Err(ShellError::UnsupportedModifier(modifier));
        }
        let (mut word, _) = self.until(Some('}'), matches!(op, '#' | '%'))?;
        let value = self.lookup(&name);
        if value.is_none() && self.lex.skip_unset {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let unset = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
        let value = value.unwrap_or_default();
        Ok(match op {
            '-' => {
                if unset {
                    word
                } else {
                    value
                }
            }
            '+' => {
                if unset {
                    String::new()
                } else {
                    word
                }
            }
            '?' => {
                if unset {
                    let message = if !word.is_empty() {
                        word
                    } else if null_is_unset && self.vars.contains_key(&name) {
                        "is not allowed to be empty".into()
                    } else {
                        "is not allowed to be unset".into()
                    };
                    return Err(ShellError::Required { name, message });
                }
                value
            }
            _ => {
                let greedy = word.starts_with(op);
                if greedy {
                    word.remove(0);
                }
                trim_affix(&value, &word, op == '#', greedy)
            }
        })
    }
}

/// `value` without the prefix (`#`) or suffix (`%`) `pattern` matches (`*` and `?` are
/// wildcards; shortest match, or longest when `greedy`).
fn trim_affix(value: &str, pattern: &str, prefix: bool, greedy: bool) -> String {
    let cuts: Vec<usize> = value
        .char_indices()
        .map(|(i, _)| i)
        .chain([value.len()])
        .collect();
    let candidates: Box<dyn Iterator<Item = &usize>> = match (prefix, greedy) {
        (true, false) | (false, true) => Box::new(cuts.iter()),
        (true, true) | (false, false) => Box::new(cuts.iter().rev()),
    };
    for &i in candidates {
        let (part, rest) = if prefix {
            (&value[..i], &value[i..])
        } else {
            (&value[i..], &value[..i])
        };
        if glob_match(pattern, part) {
            return rest.to_owned();
        }
    }
    value.to_owned()
}

/// A shell pattern (`*`, `?`, `\x`) matching all of `s`.
fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&p[2..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(&p, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [
            ("A", "1"),
            ("E", ""),
            ("P", "a b"),
            ("F", "dir/file.tar.gz"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn w(s: &str) -> Result<String, ShellError> {
        Lex::new('\\').word(s, &vars())
    }

    #[test]
    fn expansion_forms() {
        assert_eq!(w("$A ${A} $NOPE${NOPE}x").unwrap(), "1 1 x");
        assert_eq!(w("${NOPE:-d} ${E:-d} ${E-d} ${A:-d}").unwrap(), "d d  1");
        assert_eq!(w("${A:+y} ${E:+y} ${E+y} ${NOPE+y}.").unwrap(), "y  y .");
        assert_eq!(w("${NOPE:-${A}0}").unwrap(), "10");
        assert_eq!(
            w("${F#*/} ${F##*.} ${F%.*} ${F%%.*}").unwrap(),
            "file.tar.gz gz dir/file.tar dir/file"
        );
        assert_eq!(w("${A?} ok").unwrap(), "1 ok");
        assert!(matches!(
            w("${NOPE?need it}"),
            Err(ShellError::Required { .. })
        ));
        assert!(matches!(w("${E:?}"), Err(ShellError::Required { .. })));
        assert_eq!(w("${A"), Err(ShellError::MissingBrace));
        assert_eq!(w("${}"), Err(ShellError::BadSubstitution));
        assert!(matches!(
            w("${A/1/2}"),
            Err(ShellError::UnsupportedModifier(_))
        ));
        assert_eq!(w("$ $1x \\$A").unwrap(), "$ x $A");
    }

    #[test]
    fn quotes_and_splitting() {
        let l = Lex::new('\\');
        assert_eq!(
            l.words("$P \"$P\" 'x $A' c\\ d", &vars()).unwrap(),
            ["a", "b", "a b", "x $A", "c d"]
        );
        assert_eq!(w("\"a\\\"b\\$A\\x\"").unwrap(), "a\"b$A\\x");
        assert_eq!(w("'a"), Err(ShellError::UnterminatedQuote("single")));
        assert_eq!(Lex::new('`').word("a`$b", &vars()).unwrap(), "a$b");
        let raw = Lex::raw('\\');
        assert_eq!(
            raw.words("RUN <<EOF cat \"x y\" $Z", &vars()).unwrap(),
            ["RUN", "<<EOF", "cat", "\"x y\"", "$Z"]
        );
        assert_eq!(
            raw.words("COPY << 'EOT' /x", &vars()).unwrap(),
            ["COPY", "<< 'EOT'", "/x"]
        );
    }
}
