//! A [`Node`] printed as BuildKit's parser test data write it: `(copy ["--from=a"] "x" "y")`.

use super::syntax::{Args, Node};

impl Node {
    /// The node as BuildKit's parser test data writes it: `(copy ["--from=a"] "x" "y")`.
    pub fn dump(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let f: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s += &format!(" [{}]", f.join(" "));
        }
        dump_args(&self.args, &mut s);
        s.trim().to_owned()
    }
}

fn dump_args(args: &Args, s: &mut String) {
    let mut put = |v: &str| {
        s.push(' ');
        s.push_str(&go_quote(v));
    };
    match args {
        Args::None => {}
        Args::List(v) => v.iter().for_each(|w| put(w)),
        Args::Text(t) => put(t),
        Args::Unknown(_) => put(""),
        Args::Pairs(ps) => {
            for p in ps {
                put(&p.key);
                put(&p.value);
                put(if p.equals { "=" } else { "" });
            }
        }
        Args::Health { kind, command } => {
            put(kind);
            dump_args(command, s);
        }
        Args::Sub(n) => {
            s.push_str(" (");
            s.push_str(&n.dump());
            s.push(')');
        }
    }
}

/// A string quoted as Go's `strconv.Quote` does.
fn go_quote(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\u{7}' => out += "\\a",
            '\u{8}' => out += "\\b",
            '\u{c}' => out += "\\f",
            '\n' => out += "\\n",
            '\r' => out += "\\r",
            '\t' => out += "\\t",
            '\u{b}' => out += "\\v",
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out += &format!("\\x{:02x}", c as u32),
            c if c.is_control() => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
