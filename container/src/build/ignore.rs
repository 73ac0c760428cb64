//! Path patterns as `.dockerignore` and `COPY --exclude` write them: one pattern a line,
//! `#` comments, `!` exceptions, `*` and `?` within a path component, `[a-z]` classes, `\`
//! escapes, and `**` for any number of components. A path is excluded when the last pattern
//! that matches it, or one of its parent directories, is not an exception.

use std::path::{Component, Path};

/// A list of patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    negate: bool,
    parts: Vec<String>,
}

impl Ignore {
    /// The rules of a `.dockerignore` file's text.
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let parts = clean(pat);
            if parts.is_empty() {
                continue;
            }
            rules.push(Rule { negate, parts });
        }
        Ignore { rules }
    }

    /// Rules from patterns given one by one (`COPY --exclude`).
    pub fn of_patterns<S: AsRef<str>>(patterns: &[S]) -> Ignore {
        let text: Vec<&str> = patterns.iter().map(AsRef::as_ref).collect();
        Ignore::parse(&text.join("\n"))
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule is an exception (`!`): an excluded directory must then still be
    /// walked, for what the exception brings back.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.negate)
    }

    /// Whether the relative path `path` is excluded.
    pub fn excluded(&self, path: &Path) -> bool {
        let comps: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let mut excluded = false;
        for r in &self.rules {
            // The path itself or one of its parents.
            let hit = (1..=comps.len()).any(|n| match_parts(&r.parts, &comps[..n]));
            if hit {
                excluded = !r.negate;
            }
        }
        excluded
    }
}

/// A pattern's components, cleaned as a path (`./`, `/` and `..` resolved lexically).
fn clean(pat: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in pat.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_owned()),
        }
    }
    out
}

fn match_parts(pat: &[String], path: &[String]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(p) if p == "**" => (0..=path.len()).any(|i| match_parts(&pat[1..], &path[i..])),
        Some(p) => !path.is_empty() && glob(p, &path[0]) && match_parts(&pat[1..], &path[1..]),
    }
}

/// One component against one pattern component (`*`, `?`, `[...]`, `\x`).
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    glob_chars(&p, &s)
}

fn glob_chars(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|i| glob_chars(&p[1..], &s[i..])),
        Some('?') => !s.is_empty() && glob_chars(&p[1..], &s[1..]),
        Some('[') => {
            let Some(end) = p.iter().skip(1).position(|c| *c == ']').map(|e| e + 1) else {
                return s.first() == Some(&'[') && glob_chars(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let class = &p[1..end];
            let (negate, class) = match class.first() {
                Some('^' | '!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut found = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    found |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    found |= class[i] == c;
                    i += 1;
                }
            }
            found != negate && glob_chars(&p[end + 1..], &s[1..])
        }
        Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob_chars(&p[2..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob_chars(&p[1..], &s[1..]),
    }
}

/// Whether a path has wildcard characters.
pub(crate) fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let ig = Ignore::parse(
            "# comment\n*.log\n**/*.tmp\n/build\ndocs\n!docs/README.md\nsecret?.txt\n[ab].c\n",
        );
        let ex = |p: &str| ig.excluded(Path::new(p));
        assert!(ex("a.log"));
        assert!(!ex("sub/a.log"), "* does not cross /");
        assert!(ex("x.tmp") && ex("a/b/c/x.tmp"));
        assert!(ex("build") && ex("build/out/bin"));
        assert!(ex("docs/guide.md"));
        assert!(!ex("docs/README.md"));
        assert!(ex("secret1.txt") && !ex("secret12.txt"));
        assert!(ex("a.c") && !ex("c.c"));
        assert!(!ex("src/main.rs"));
        assert!(ig.has_exceptions());
        assert!(Ignore::of_patterns(&["**"]).excluded(Path::new("any/thing")));
    }
}
