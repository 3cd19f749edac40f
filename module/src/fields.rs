//! The field readers every kind's `spec` is built from.
//!
//! A mapping is read once into an `Obj`, with its keys checked (plain text, no duplicates,
//! none unknown, with a did-you-mean); the readers of text, numbers, durations, choices and
//! lists then report a bad value at its field's path and give nothing (or the default) back,
//! so that one load goes on to find every problem in the file.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use statefun_sdk::TypeName;

use crate::load::Loader;
use crate::model::{FunctionPattern, Properties};
use crate::time::parse_duration;
use crate::yaml::{Mark, Node, Value};

/// Hints for fields that are unknown where they appear but mean something elsewhere.
fn field_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "typeUrl" => "StateFun 3 names the record type with `valueType` (a `<namespace>/<name>` type name)",
        "transport" => "only `io.statefun.endpoints.v2/http` has `transport`; v1 endpoints set `timeouts`",
        "timeouts" => "`timeouts` belongs to `io.statefun.endpoints.v1/http`; in v2, put `call`/`connect` (or `timeouts`) under `transport`",
        "functions" => "StateFun 2.x `functions` were replaced by `endpoints` in the 3.0 format",
        "kind" => "in the legacy format the kind goes in `meta.type` (or `meta.kind` for endpoints)",
        _ => return None,
    })
}

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = word.to_lowercase();
    let mut best: Option<(&'a str, f64)> = None;
    for c in candidates {
        let score = strsim::normalized_damerau_levenshtein(&w, &c.to_lowercase());
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.filter(|(_, s)| *s >= 0.6).map(|(c, _)| c)
}

/// "did you mean `x`?" or the list of what is accepted.
pub(crate) fn expected_one_of(word: &str, candidates: &[&str]) -> String {
    match did_you_mean(word, candidates) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!(
            "expected one of: {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A mapping node whose keys were checked (strings, no duplicates, all known).
pub(crate) struct Obj<'n> {
    pub(crate) mark: Mark,
    pub(crate) path: String,
    entries: Vec<(&'n str, &'n Node)>,
    keys: Vec<(&'n str, Mark)>,
    /// Known fields that an unknown key was taken as a typo of (not reported again as missing).
    suggested: Vec<&'static str>,
}

impl<'n> Obj<'n> {
    pub(crate) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn key_mark(&self, key: &str) -> Mark {
        self.keys
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, m)| *m)
            .unwrap_or(self.mark)
    }
}

impl Loader<'_> {
    /// Reads a mapping, reporting non-string or duplicate keys and keys not in `known`.
    pub(crate) fn obj<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&'static str],
    ) -> Option<Obj<'n>> {
        let Value::Map(map) = &node.value else {
            let what = if node.is_null() {
                "is empty".to_string()
            } else {
                format!("expected a mapping, found {}", node.describe())
            };
            self.error(node.mark, path, what);
            return None;
        };
        let mut o = Obj {
            mark: node.mark,
            path: path.to_string(),
            entries: Vec::with_capacity(map.len()),
            keys: Vec::with_capacity(map.len()),
            suggested: Vec::new(),
        };
        let mut seen: HashMap<&str, Mark> = HashMap::new();
        for (k, v) in map {
            let Some(key) = k.scalar() else {
                self.error(
                    k.mark,
                    path,
                    format!("keys must be plain text, found {}", k.describe()),
                );
                continue;
            };
            if let Some(first) = seen.get(key) {
                self.error(
                    k.mark,
                    &join(path, key),
                    format!("duplicate key `{key}` (first given at line {})", first.line),
                );
                continue;
            }
            seen.insert(key, k.mark);
            if !known.contains(&key) {
                if let Some(s) = did_you_mean(key, known) {
                    o.suggested.push(s);
                }
                let mut msg = format!("unknown field `{key}`; {}", expected_one_of(key, known));
                if let Some(h) = field_hint(key) {
                    msg = format!("unknown field `{key}`: {h}");
                }
                self.error(k.mark, &join(path, key), msg);
                continue;
            }
            o.entries.push((key, v));
            o.keys.push((key, k.mark));
        }
        Some(o)
    }

    /// Reports keys of `o` that do not apply to the chosen `type`.
    pub(crate) fn only(&mut self, o: &Obj<'_>, allowed: &[&str], what: &str) {
        for (k, _) in &o.entries {
            if !allowed.contains(k) {
                let m = o.key_mark(k);
                self.error(m, &o.field(k), format!("`{k}` does not apply to {what}"));
            }
        }
    }

    /// The node of a required field, reporting it when missing.
    pub(crate) fn req<'n>(&mut self, o: &Obj<'n>, key: &str) -> Option<&'n Node> {
        let n = o.get(key);
        if n.is_none() && !o.suggested.contains(&key) {
            self.error(o.mark, &o.path, format!("missing required field `{key}`"));
        }
        n
    }

    pub(crate) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } if !text.trim().is_empty() => Some(text.clone()),
            Value::Scalar { .. } | Value::Null => {
                self.error(node.mark, path, "must not be empty");
                None
            }
            _ => {
                self.error(
                    node.mark,
                    path,
                    format!("expected text, found {}", node.describe()),
                );
                None
            }
        }
    }

    pub(crate) fn req_str(&mut self, o: &Obj<'_>, key: &str) -> Option<String> {
        let n = self.req(o, key)?;
        self.string(n, &o.field(key))
    }

    pub(crate) fn opt_str(&mut self, o: &Obj<'_>, key: &str) -> Option<String> {
        let n = o.get(key)?;
        self.string(n, &o.field(key))
    }

    pub(crate) fn typename(&mut self, node: &Node, path: &str) -> Option<TypeName> {
        let text = self.string(node, path)?;
        match TypeName::parse(&text) {
            Ok(t) => Some(t),
            Err(statefun_sdk::SdkError::InvalidTypeName(why)) => {
                self.error(node.mark, path, why);
                None
            }
            Err(e) => {
                self.error(node.mark, path, e.to_string());
                None
            }
        }
    }

    pub(crate) fn req_typename(&mut self, o: &Obj<'_>, key: &str) -> Option<TypeName> {
        let n = self.req(o, key)?;
        self.typename(n, &o.field(key))
    }

    pub(crate) fn uint(&mut self, node: &Node, path: &str) -> Option<u64> {
        let Some(text) = node.scalar() else {
            self.error(
                node.mark,
                path,
                format!("expected a whole number, found {}", node.describe()),
            );
            return None;
        };
        let t = text.trim().trim_start_matches('+');
        match t.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) if t.starts_with('-') && t[1..].parse::<u64>().is_ok() => {
                self.error(
                    node.mark,
                    path,
                    format!("must not be negative, found `{text}`"),
                );
                None
            }
            Err(_) => {
                self.error(
                    node.mark,
                    path,
                    format!("expected a whole number, found `{text}`"),
                );
                None
            }
        }
    }

    pub(crate) fn opt_uint(&mut self, o: &Obj<'_>, key: &str, default: u64, min: u64) -> u64 {
        let Some(n) = o.get(key) else {
            return default;
        };
        let path = o.field(key);
        match self.uint(n, &path) {
            Some(v) if v < min => {
                self.error(n.mark, &path, format!("must be at least {min}, found {v}"));
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    pub(crate) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.scalar().map(str::to_ascii_lowercase).as_deref() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => {
                self.error(node.mark, path, "expected `true` or `false`".to_string());
                None
            }
        }
    }

    pub(crate) fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let text = self.string(node, path)?;
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.mark, path, e);
                None
            }
        }
    }

    pub(crate) fn opt_duration(&mut self, o: &Obj<'_>, key: &str) -> Option<Duration> {
        let n = o.get(key)?;
        self.duration(n, &o.field(key))
    }

    pub(crate) fn pattern(&mut self, node: &Node, path: &str) -> Option<FunctionPattern> {
        let text = self.string(node, path)?;
        match FunctionPattern::parse(&text) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(node.mark, path, e);
                None
            }
        }
    }

    /// A choice among fixed words (`type: latest`), with did-you-mean.
    pub(crate) fn choice(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        options: &[&str],
    ) -> Option<String> {
        let text = self.string(node, path)?;
        if options.contains(&text.as_str()) {
            return Some(text);
        }
        self.error(
            node.mark,
            path,
            format!(
                "unknown {what} `{text}`; {}",
                expected_one_of(&text, options)
            ),
        );
        None
    }

    /// `properties`: a list of single-key maps, or a plain map.
    pub(crate) fn properties(&mut self, o: &Obj<'_>, key: &str) -> Properties {
        let Some(node) = o.get(key) else {
            return Properties::default();
        };
        let path = o.field(key);
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut push = |l: &mut Self, k: &Node, v: &Node, p: &str| {
            let Some(name) = k.scalar() else {
                l.error(k.mark, p, "property names must be plain text");
                return;
            };
            let value = match &v.value {
                Value::Scalar { text, .. } => text.clone(),
                Value::Null => String::new(),
                _ => {
                    l.error(
                        v.mark,
                        &join(p, name),
                        format!("property values must be text, found {}", v.describe()),
                    );
                    return;
                }
            };
            if !seen.insert(name.to_string()) {
                l.error(
                    k.mark,
                    &join(p, name),
                    format!("property `{name}` is set twice"),
                );
                return;
            }
            pairs.push((name.to_string(), value));
        };
        match &node.value {
            Value::Null => {}
            Value::Map(entries) => {
                for (k, v) in entries {
                    push(self, k, v, &path);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = index(&path, i);
                    match &item.value {
                        Value::Map(entries) if entries.len() == 1 => {
                            push(self, &entries[0].0, &entries[0].1, &p);
                        }
                        _ => self.error(
                            item.mark,
                            &p,
                            "each property must be a single `key: value` entry",
                        ),
                    }
                }
            }
            Value::Scalar { .. } => self.error(
                node.mark,
                &path,
                "expected a list of `key: value` entries or a mapping",
            ),
        }
        Properties(pairs)
    }

    /// A list field that must hold at least one mapping.
    pub(crate) fn list<'n>(&mut self, o: &Obj<'n>, key: &str, what: &str) -> Option<&'n [Node]> {
        let node = self.req(o, key)?;
        match &node.value {
            Value::Seq(items) if !items.is_empty() => Some(items),
            Value::Seq(_) | Value::Null => {
                self.error(
                    node.mark,
                    &o.field(key),
                    format!("must list at least one {what}"),
                );
                None
            }
            _ => {
                self.error(
                    node.mark,
                    &o.field(key),
                    format!("expected a list of {what}s, found {}", node.describe()),
                );
                None
            }
        }
    }
}
