//! Splitting an instruction's text as BuildKit's parser does, before any variable is expanded:
//! the keyword, the leading `--flags`, and the arguments as words that keep their quotes
//! (quotes are removed later, when the words are expanded).

/// Whitespace as the parser's `[\t\v\f\r ]` class sees it.
pub(crate) fn is_blank(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Split on runs of blanks, as a regular-expression split would: leading or trailing blanks
/// give an empty first or last piece.
pub(crate) fn split_blanks(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut in_gap = false;
    for c in s.chars() {
        if is_blank(c) {
            if !in_gap {
                out.push(String::new());
                in_gap = true;
            }
        } else {
            in_gap = false;
            if let Some(last) = out.last_mut() {
                last.push(c);
            }
        }
    }
    out
}

/// The keyword, the flags and the rest of an instruction line.
pub(crate) fn split_command(line: &str, escape: char) -> (String, Vec<String>, String) {
    let line = line.trim();
    let (keyword, rest) = match line.find(is_blank) {
        Some(i) => {
            let rest = line[i..].trim_start_matches(is_blank);
            (&line[..i], rest)
        }
        None => (line, ""),
    };
    let (rest, flags) = extract_flags(rest, escape);
    (keyword.to_owned(), flags, rest.trim().to_owned())
}

enum Phase {
    Spaces,
    Word,
    Quote(char),
}

/// The leading `--name[=value]` words of `line` (quotes and escapes removed) and what follows
/// them. A bare `--` ends the flags and is dropped.
pub(crate) fn extract_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut it = line.char_indices().peekable();
    while let Some((pos, c)) = it.next() {
        match phase {
            Phase::Spaces => {
                if c.is_whitespace() {
                    continue;
                }
                if c != '-' || it.peek().map(|&(_, n)| n) != Some('-') {
                    return (&line[pos..], flags);
                }
                phase = Phase::Word;
                word.push(c);
            }
            Phase::Word => {
                if c.is_whitespace() {
                    if word == "--" {
                        return (&line[pos..], flags);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    phase = Phase::Spaces;
                } else if c == '\'' || c == '"' {
                    blank_ok = true;
                    phase = Phase::Quote(c);
                } else if c == escape {
                    if let Some((_, n)) = it.next() {
                        word.push(n);
                    }
                } else {
                    word.push(c);
                }
            }
            Phase::Quote(q) => {
                if c == q {
                    phase = Phase::Word;
                } else if c == escape {
                    match it.next() {
                        Some((_, n)) => word.push(n),
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(c);
                }
            }
        }
    }
    if !matches!(phase, Phase::Spaces) && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push(word);
    }
    ("", flags)
}

/// Words separated by whitespace, quotes kept (a quoted part may hold spaces); an escape
/// character keeps itself and the character after it.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut it = rest.chars().peekable();
    while let Some(c) = it.next() {
        if let Phase::Spaces = phase {
            if c.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word => {
                if c.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    phase = Phase::Spaces;
                    continue;
                }
                if c == '\'' || c == '"' {
                    blank_ok = true;
                    phase = Phase::Quote(c);
                    word.push(c);
                } else if c == escape {
                    if let Some(n) = it.next() {
                        word.push(c);
                        word.push(n);
                    }
                } else {
                    word.push(c);
                }
            }
            Phase::Quote(q) => {
                if c == q {
                    phase = Phase::Word;
                    word.push(c);
                } else if c == escape && q != '\'' {
                    match it.next() {
                        Some(n) => {
                            word.push(c);
                            word.push(n);
                        }
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(c);
                }
            }
            Phase::Spaces => {}
        }
    }
    if !matches!(phase, Phase::Spaces) && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// What a JSON-array argument turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Json {
    /// Not a JSON array: the shell form.
    No,
    /// An array of strings.
    Strings(Vec<String>),
    /// An array holding something other than strings (an error).
    NotStrings,
}

/// `rest` as the exec (JSON) form, if it is one.
pub(crate) fn parse_json(rest: &str) -> Json {
    let t = rest.trim_start();
    if !t.starts_with('[') {
        return Json::No;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(t) {
        Err(_) => Json::No,
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Strings(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes() {
        assert_eq!(parse_words("foo bar", '\\'), ["foo", "bar"]);
        assert_eq!(parse_words("foo=\"a b\" c", '\\'), ["foo=\"a b\"", "c"]);
        assert_eq!(parse_words("a\\ b c", '\\'), ["a\\ b", "c"]);
        assert_eq!(parse_words("'a\\' b", '\\'), ["'a\\'", "b"]);
        assert_eq!(parse_words("\"\"", '\\'), ["\"\""]);
    }

    #[test]
    fn flags_end_at_the_first_other_word() {
        assert_eq!(
            extract_flags("--a=1 --b=\"x y\" src dst", '\\'),
            ("src dst", vec!["--a=1".to_owned(), "--b=x y".to_owned()])
        );
        assert_eq!(
            extract_flags("--a -- --b", '\\'),
            (" --b", vec!["--a".to_owned()])
        );
        assert_eq!(extract_flags("-x", '\\'), ("-x", vec![]));
        let (k, f, r) = split_command("  COPY  --from=b  a  b ", '\\');
        assert_eq!(
            (k.as_str(), f, r.as_str()),
            ("COPY", vec!["--from=b".into()], "a  b")
        );
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            parse_json(" [\"a\", \"b\"]"),
            Json::Strings(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_json("[\"a\", [\"b\"]]"), Json::NotStrings);
        assert_eq!(parse_json("['a']"), Json::No);
        assert_eq!(parse_json("echo [x]"), Json::No);
        assert_eq!(split_blanks(" a  b"), ["", "a", "b"]);
    }
}
