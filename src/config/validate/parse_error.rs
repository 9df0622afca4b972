//! serde-saphyr's own errors (syntax, unknown field, wrong type) → [`ConfigError`], with the
//! position taken from the error value and the field path recovered by walking a positional
//! tree of the same text to that position.

use std::fmt;
use std::path::Path;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::{DefaultMessageFormatter, MessageFormatter, Spanned};

use crate::config::ConfigError;

pub(super) fn convert(file: &Path, text: &str, err: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = match err.location() {
        Some(l) if l.line() > 0 => (l.line() as usize, l.column() as usize),
        _ => (1, 1),
    };
    let raw_msg = DefaultMessageFormatter.format_message(err.without_snippet());
    // Duplicate keys pass through here so that a duplicate-key error gets its path too.
    let mut options = crate::config::raw::options();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    let path = serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options)
        .ok()
        .map(|root| {
            let mut path = String::new();
            locate(&root, (line as u64, column as u64), &mut path);
            path
        })
        .unwrap_or_default();
    ConfigError {
        file: file.to_path_buf(),
        line,
        column,
        path,
        message: crate::config::error::clip_quotes(tidy(&raw_msg)),
    }
}

/// Makes the parser's wording read like the rest of our messages.
fn tidy(msg: &str) -> String {
    let msg = msg.split(", set DuplicateKeyPolicy").next().unwrap_or(msg);
    match msg {
        "invalid u32" | "invalid u64" => "expected a whole number ≥ 0".into(),
        "invalid floating point" => "expected a number".into(),
        "" => "cannot be parsed".into(),
        m => m.replace(|c: char| c.is_control(), " "),
    }
}

/// The document's shape with positions, for naming the field an error points into.
enum Node {
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = s.next_element()? {
                    v.push(x);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key()? {
                    v.push((k, m.next_value()?));
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn pos<T>(s: &Spanned<T>) -> (u64, u64) {
    (s.referenced.line(), s.referenced.column())
}

/// Appends to `path` the fields and indexes leading to the innermost node starting at or before
/// `at` (an unknown key names itself).
fn locate(node: &Spanned<Node>, at: (u64, u64), path: &mut String) {
    match &node.value {
        Node::Scalar => {}
        Node::Map(entries) => {
            let hit = entries.iter().rposition(|(k, _)| pos(k) <= at);
            if let Some(i) = hit {
                let (k, v) = &entries[i];
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&k.value);
                if pos(k) != at {
                    locate(v, at, path);
                }
            }
        }
        Node::Seq(items) => {
            if let Some(i) = items.iter().rposition(|x| pos(x) <= at) {
                path.push_str(&format!("[{i}]"));
                locate(&items[i], at, path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert_text(text: &str) -> ConfigError {
        let e = crate::config::raw::parse(text).expect_err("must not parse");
        convert(Path::new("f.yaml"), text, &e)
    }

    #[test]
    fn path_is_recovered_for_parser_errors() {
        let cases = [
            (
                "listners: []\n",
                (1, 1),
                "listners",
                "unknown field `listners`",
            ),
            (
                "routes:\n  - name: a\n  - name: b\n    balance: {virtual_nodes: x}\n",
                (4, 30),
                "routes[1].balance.virtual_nodes",
                "whole number",
            ),
            (
                "routes:\n  - backends:\n      - {name: a}\n      - {name: b, nme: c}\n",
                (4, 19),
                "routes[0].backends[1].nme",
                "unknown field",
            ),
            (
                "admin:\n  bind: a\n  bind: b\n",
                (3, 3),
                "admin.bind",
                "duplicate mapping key: bind",
            ),
        ];
        for (text, (line, column), path, msg) in cases {
            let e = convert_text(text);
            assert_eq!(
                (e.line, e.column, e.path.as_str()),
                (line, column, path),
                "{text}"
            );
            assert!(e.message.contains(msg), "{text}: {}", e.message);
        }
    }

    #[test]
    fn syntax_errors_have_a_position_and_no_path() {
        let e = convert_text("routes: [\n");
        assert_eq!((e.line, e.path.as_str()), (1, ""));
    }
}
