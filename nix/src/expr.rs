//! A small Nix value tree and its deterministic, correctly escaped rendering.
//!
//! Attribute sets are `BTreeMap`s, so keys come out sorted; lists keep their order (callers
//! sort where order carries no meaning). Strings are escaped (`\`, `"`, `${`, newlines, tabs)
//! and attribute names quoted unless they are plain identifiers and not keywords.

use std::collections::BTreeMap;
use std::fmt::Write;

/// A Nix value.
#[derive(Debug, Clone, PartialEq)]
pub enum Nix {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string literal.
    Str(String),
    /// A string with interpolations: literal parts are escaped, `Expr` parts go in `${...}`.
    Interp(Vec<Part>),
    /// A Nix expression written as is (e.g. `pkgs.postgresql_16`, `./hosts/a.nix`).
    Expr(String),
    /// A list.
    List(Vec<Nix>),
    /// An attribute set.
    Attrs(BTreeMap<String, Nix>),
}

/// Part of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// An expression interpolated with `${...}`.
    Expr(String),
}

impl From<&str> for Nix {
    fn from(s: &str) -> Self {
        Nix::Str(s.to_string())
    }
}
impl From<String> for Nix {
    fn from(s: String) -> Self {
        Nix::Str(s)
    }
}
impl From<bool> for Nix {
    fn from(b: bool) -> Self {
        Nix::Bool(b)
    }
}
impl From<i64> for Nix {
    fn from(i: i64) -> Self {
        Nix::Int(i)
    }
}

impl Nix {
    /// An empty attribute set.
    pub fn attrs() -> Self {
        Nix::Attrs(BTreeMap::new())
    }

    /// A list of strings.
    pub fn strs<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Self {
        Nix::List(items.into_iter().map(|s| Nix::Str(s.into())).collect())
    }

    /// Sets `value` at a dotted path of attribute names (given as separate segments, so a
    /// segment may contain dots), creating intermediate sets. Merges with what is there.
    pub fn set(&mut self, path: &[&str], value: Nix) {
        let Nix::Attrs(map) = self else {
            *self = Nix::attrs();
            return self.set(path, value);
        };
        match path {
            [] => {}
            [last] => match (map.get_mut(*last), value) {
                (Some(existing @ Nix::Attrs(_)), Nix::Attrs(more)) => {
                    for (k, v) in more {
                        existing.set(&[k.as_str()], v);
                    }
                }
                (_, value) => {
                    map.insert((*last).to_string(), value);
                }
            },
            [first, rest @ ..] => {
                let child = map.entry((*first).to_string()).or_insert_with(Nix::attrs);
                if !matches!(child, Nix::Attrs(_)) {
                    *child = Nix::attrs();
                }
                child.set(rest, value);
            }
        }
    }

    /// Every leaf path (attribute names joined by `.`), depth-first in sorted order. Used to
    /// check emitted option paths.
    pub fn leaf_paths(&self) -> Vec<Vec<String>> {
        fn walk(v: &Nix, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            match v {
                Nix::Attrs(map) if !map.is_empty() => {
                    for (k, child) in map {
                        prefix.push(k.clone());
                        walk(child, prefix, out);
                        prefix.pop();
                    }
                }
                _ => out.push(prefix.clone()),
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// Renders with two-space indentation.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, indent: usize) {
        match self {
            Nix::Null => out.push_str("null"),
            Nix::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Nix::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Nix::Str(s) => {
                out.push('"');
                escape_into(out, s);
                out.push('"');
            }
            Nix::Interp(parts) => {
                out.push('"');
                for p in parts {
                    match p {
                        Part::Lit(s) => escape_into(out, s),
                        Part::Expr(e) => {
                            out.push_str("${");
                            out.push_str(e);
                            out.push('}');
                        }
                    }
                }
                out.push('"');
            }
            Nix::Expr(e) => out.push_str(e),
            Nix::List(items) if items.is_empty() => out.push_str("[ ]"),
            Nix::List(items) => {
                out.push_str("[\n");
                for item in items {
                    pad(out, indent + 1);
                    item.write(out, indent + 1);
                    out.push('\n');
                }
                pad(out, indent);
                out.push(']');
            }
            Nix::Attrs(map) if map.is_empty() => out.push_str("{ }"),
            Nix::Attrs(map) => {
                out.push_str("{\n");
                for (k, v) in map {
                    pad(out, indent + 1);
                    if is_plain_identifier(k) {
                        out.push_str(k);
                    } else {
                        out.push('"');
                        escape_into(out, k);
                        out.push('"');
                    }
                    out.push_str(" = ");
                    v.write(out, indent + 1);
                    out.push_str(";\n");
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    const SPACES: &str = "                                                                ";
    let mut n = indent * 2;
    while n > 0 {
        let k = n.min(SPACES.len());
        out.push_str(&SPACES[..k]);
        n -= k;
    }
}

/// Escapes text for a `"..."` Nix string.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

/// [`escape`], appending to `out` (no allocation when nothing needs escaping).
fn escape_into(out: &mut String, s: &str) {
    if !s
        .bytes()
        .any(|b| matches!(b, b'\\' | b'"' | b'\n' | b'\r' | b'\t' | b'$'))
    {
        out.push_str(s);
        return;
    }
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
}

const KEYWORDS: [&str; 12] = [
    "if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or", "true", "false",
];

/// Whether `name` can be written as a bare attribute name.
pub fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-'))
        && !KEYWORDS.contains(&name)
}

/// An attribute name, quoted when it is not a plain identifier.
pub fn attr_name(name: &str) -> String {
    if is_plain_identifier(name) {
        name.to_string()
    } else {
        format!("\"{}\"", escape(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(escape(r#"a\b"c${d}$e"#), r#"a\\b\"c\${d}$e"#);
        assert_eq!(escape("x\ny\tz"), "x\\ny\\tz");
    }

    #[test]
    fn attribute_names_are_quoted_when_needed() {
        assert_eq!(attr_name("web-1"), "web-1");
        assert_eq!(attr_name("10.0.0.1:80"), "\"10.0.0.1:80\"");
        assert_eq!(attr_name("let"), "\"let\"");
        assert_eq!(attr_name("a.b"), "\"a.b\"");
        assert_eq!(attr_name("9lives"), "\"9lives\"");
    }

    #[test]
    fn rendering_is_sorted_and_parses() {
        let mut v = Nix::attrs();
        v.set(&["z", "b"], Nix::Int(1));
        v.set(&["a"], Nix::strs(["x", "y${z}"]));
        v.set(&["z", "a"], Nix::Bool(true));
        v.set(
            &["m"],
            Nix::Interp(vec![
                Part::Expr("pkgs.bash".into()),
                Part::Lit("/bin/sh \"q\"".into()),
            ]),
        );
        let text = v.render();
        assert_eq!(
            text,
            "{\n  a = [\n    \"x\"\n    \"y\\${z}\"\n  ];\n  m = \"${pkgs.bash}/bin/sh \\\"q\\\"\";\n  z = {\n    a = true;\n    b = 1;\n  };\n}"
        );
        let parsed = rnix::Root::parse(&text);
        assert!(parsed.errors().is_empty(), "{:?}", parsed.errors());
    }

    #[test]
    fn set_merges_nested_sets() {
        let mut v = Nix::attrs();
        v.set(&["services", "nats", "enable"], true.into());
        let mut more = Nix::attrs();
        more.set(&["port"], Nix::Int(4222));
        v.set(&["services", "nats"], more);
        assert_eq!(
            v.leaf_paths(),
            vec![
                vec!["services".to_string(), "nats".into(), "enable".into()],
                vec!["services".to_string(), "nats".into(), "port".into()],
            ]
        );
    }
}
