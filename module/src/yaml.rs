//! A small YAML tree that remembers where every node came from.
//!
//! `serde_yaml` forgets positions, so the loader builds its own tree from the
//! event stream of `yaml-rust2`, driving the parser iteratively (no recursion,
//! so deeply nested input cannot overflow the stack) and bounding both the
//! nesting depth and the size that aliases may expand to.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Deepest nesting accepted; real module files nest fewer than 15 levels.
const MAX_DEPTH: usize = 128;
/// Most nodes a file may expand to once aliases are resolved (guards against "billion laughs").
const MAX_NODES: usize = 2_000_000;

/// A 1-based line and column in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Mark {
    pub line: usize,
    pub column: usize,
}

/// One YAML node and where it starts.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub value: Value,
    pub mark: Mark,
    /// Number of nodes in this subtree (itself included).
    size: usize,
}

/// The content of a node.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    /// An empty value, `~` or `null`.
    Null,
    /// Any other scalar (quoted scalars are never null).
    Scalar { text: String },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order (duplicates kept; the loader reports them).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short description of the node's shape for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Null => "an empty value",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The scalar text, if this is a (non-null) scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Whether the node is null.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
}

/// One document of the stream: its 1-based index and its root (None when empty).
#[derive(Debug)]
pub(crate) struct Document {
    pub index: usize,
    pub root: Option<Node>,
}

/// A syntax error: where, in which document, and what.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub document: usize,
    pub mark: Mark,
    pub message: String,
}

/// Parses every document of `text`. Documents completed before a syntax error are returned too.
pub(crate) fn parse_documents(text: &str) -> (Vec<Document>, Option<SyntaxError>) {
    // yaml-rust2 has an `assert!` or two on paths we have not seen reached; never let one escape.
    match std::panic::catch_unwind(|| parse_inner(text)) {
        Ok(result) => result,
        Err(_) => (
            Vec::new(),
            Some(SyntaxError {
                document: 0,
                mark: Mark::default(),
                message: "the YAML parser could not read this file".to_string(),
            }),
        ),
    }
}

enum Frame {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Node>,
        size: usize,
    },
    Map {
        mark: Mark,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        size: usize,
    },
}

fn mark_of(m: &yaml_rust2::scanner::Marker) -> Mark {
    Mark {
        line: m.line(),
        column: m.col() + 1,
    }
}

fn parse_inner(text: &str) -> (Vec<Document>, Option<SyntaxError>) {
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut doc_index = 0usize;
    let mut total = 0usize;
    let err = |document: usize, mark: Mark, message: String| SyntaxError {
        document,
        mark,
        message,
    };
    loop {
        // An empty value (`key:` with nothing after it) is reported where its key is.
        let mut empty_value = false;
        let (event, marker) = match parser.next_token() {
            Ok(e) => e,
            Err(e) => {
                return (
                    docs,
                    Some(err(
                        doc_index.max(1),
                        mark_of(e.marker()),
                        format!("invalid YAML: {}", e.info()),
                    )),
                );
            }
        };
        let mark = mark_of(&marker);
        let node = match event {
            Event::StreamStart | Event::Nothing => continue,
            Event::StreamEnd => break,
            Event::DocumentStart => {
                doc_index += 1;
                anchors.clear();
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                docs.push(Document {
                    index: doc_index,
                    root: root.take(),
                });
                continue;
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => {
                    total += n.size;
                    if total > MAX_NODES {
                        return (
                            docs,
                            Some(err(
                                doc_index,
                                mark,
                                "aliases expand this file beyond two million nodes".to_string(),
                            )),
                        );
                    }
                    n.clone()
                }
                None => {
                    return (
                        docs,
                        Some(err(doc_index, mark, "unknown alias".to_string())),
                    )
                }
            },
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = matches!(style, TScalarStyle::Plain);
                empty_value = plain && text.is_empty();
                let value = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar { text }
                };
                let n = Node {
                    value,
                    mark,
                    size: 1,
                };
                total += 1;
                if anchor > 0 {
                    anchors.insert(anchor, n.clone());
                }
                n
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return (
                        docs,
                        Some(err(
                            doc_index,
                            mark,
                            format!("nesting deeper than {MAX_DEPTH} levels"),
                        )),
                    );
                }
                total += 1;
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        mark,
                        anchor,
                        items: Vec::new(),
                        size: 1,
                    }
                } else {
                    Frame::Map {
                        mark,
                        anchor,
                        entries: Vec::new(),
                        pending_key: None,
                        size: 1,
                    }
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (n, anchor) = match stack.pop() {
                    Some(Frame::Seq {
                        mark,
                        anchor,
                        items,
                        size,
                    }) => (
                        Node {
                            value: Value::Seq(items),
                            mark,
                            size,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        mark,
                        anchor,
                        entries,
                        size,
                        ..
                    }) => (
                        Node {
                            // The parser marks a block mapping at its first `:`; its first key is clearer.
                            mark: entries.first().map_or(mark, |(k, _)| k.mark),
                            value: Value::Map(entries),
                            size,
                        },
                        anchor,
                    ),
                    None => {
                        return (
                            docs,
                            Some(err(
                                doc_index,
                                mark,
                                "unbalanced collection end".to_string(),
                            )),
                        )
                    }
                };
                if anchor > 0 {
                    anchors.insert(anchor, n.clone());
                }
                n
            }
        };
        // Attach the finished node to its parent, or make it the document root.
        let mut node = node;
        match stack.last_mut() {
            None => root = Some(node).filter(|n| !n.is_null()),
            Some(Frame::Seq { items, size, .. }) => {
                *size += node.size;
                items.push(node);
            }
            Some(Frame::Map {
                entries,
                pending_key,
                size,
                ..
            }) => {
                *size += node.size;
                match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(key) => {
                        if empty_value {
                            node.mark = key.mark;
                        }
                        entries.push((key, node))
                    }
                }
            }
        }
    }
    (docs, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let (docs, e) = parse_documents("a: 1\nb:\n  - x\n");
        assert!(e.is_none());
        let Some(Node {
            value: Value::Map(m),
            ..
        }) = &docs[0].root
        else {
            panic!("not a map")
        };
        assert_eq!(m[0].0.mark, Mark { line: 1, column: 1 });
        let Value::Seq(items) = &m[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[0].mark, Mark { line: 3, column: 5 });
    }

    #[test]
    fn empty_documents_have_no_root() {
        let (docs, e) = parse_documents("---\n---\na: 1\n---\n");
        assert!(e.is_none());
        let roots: Vec<bool> = docs.iter().map(|d| d.root.is_some()).collect();
        assert_eq!(roots, vec![false, true, false]);
        assert_eq!(docs[1].index, 2);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(100_000);
        let (_, e) = parse_documents(&text);
        assert!(e.is_some());
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&" ".repeat(i));
            text.push_str("a:\n");
        }
        let (_, e) = parse_documents(&text);
        assert!(e.is_some());
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (_, e) = parse_documents(&text);
        assert!(e.is_some());
    }
}
