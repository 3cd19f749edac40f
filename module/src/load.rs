//! Turning YAML documents into a validated [`Module`], collecting every problem on the way.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use statefun_sdk::TypeName;

use crate::diag::{Diagnostic, Diagnostics, Location, Severity};
use crate::model::*;
use crate::time::{format_duration, parse_duration, parse_timestamp};
use crate::yaml::{parse_documents, Mark, Node, Value};

/// The broker default of `transaction.max.timeout.ms`.
const BROKER_MAX_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The kinds a document (or a legacy `meta.type`) can declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    EndpointV1,
    EndpointV2,
    KafkaIngress,
    KafkaEgress,
    KafkaCluster,
    KinesisIngress,
    KinesisEgress,
    FileIngress,
    FileEgress,
    GeneratorIngress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Endpoint,
    Ingress,
    Egress,
    /// Shared definitions (Kafka clusters) that ingresses and egresses refer to.
    Definition,
}

impl Kind {
    fn role(self) -> Role {
        match self {
            Kind::EndpointV1 | Kind::EndpointV2 => Role::Endpoint,
            Kind::KafkaIngress
            | Kind::KinesisIngress
            | Kind::FileIngress
            | Kind::GeneratorIngress => Role::Ingress,
            Kind::KafkaEgress | Kind::KinesisEgress | Kind::FileEgress => Role::Egress,
            Kind::KafkaCluster => Role::Definition,
        }
    }
}

/// Every kind of the `kind:`/`spec:` format.
const KINDS: &[(&str, Kind)] = &[
    ("io.statefun.endpoints.v2/http", Kind::EndpointV2),
    ("io.statefun.endpoints.v1/http", Kind::EndpointV1),
    ("io.statefun.kafka.v1/ingress", Kind::KafkaIngress),
    ("io.statefun.kafka.v1/egress", Kind::KafkaEgress),
    ("io.statefun.kinesis.v1/ingress", Kind::KinesisIngress),
    ("io.statefun.kinesis.v1/egress", Kind::KinesisEgress),
    ("io.statefun-rs.kafka.v1/cluster", Kind::KafkaCluster),
    ("io.statefun-rs.file.v1/ingress", Kind::FileIngress),
    ("io.statefun-rs.file.v1/egress", Kind::FileEgress),
    (
        "io.statefun-rs.generator.v1/ingress",
        Kind::GeneratorIngress,
    ),
];

/// Names the legacy `version: "3.0"` format uses, and what they mean now.
const LEGACY_KINDS: &[(&str, Kind)] = &[
    ("io.statefun.kafka/ingress", Kind::KafkaIngress),
    ("io.statefun.kafka/egress", Kind::KafkaEgress),
    ("io.statefun.kinesis/ingress", Kind::KinesisIngress),
    ("io.statefun.kinesis/egress", Kind::KinesisEgress),
    ("io.statefun.endpoints/http", Kind::EndpointV1),
    ("http", Kind::EndpointV1),
];

/// StateFun 2.x kinds that cannot be read as they are, and what to write instead.
const UNSUPPORTED_KINDS: &[(&str, &str)] = &[
    (
        "statefun.kafka.io/protobuf-ingress",
        "io.statefun.kafka.v1/ingress",
    ),
    (
        "statefun.kafka.io/routable-protobuf-ingress",
        "io.statefun.kafka.v1/ingress",
    ),
    (
        "statefun.kafka.io/generic-egress",
        "io.statefun.kafka.v1/egress",
    ),
    (
        "statefun.kinesis.io/protobuf-ingress",
        "io.statefun.kinesis.v1/ingress",
    ),
    (
        "statefun.kinesis.io/routable-protobuf-ingress",
        "io.statefun.kinesis.v1/ingress",
    ),
    (
        "statefun.kinesis.io/generic-egress",
        "io.statefun.kinesis.v1/egress",
    ),
    (
        "io.statefun.kafka/protobuf-ingress",
        "io.statefun.kafka.v1/ingress",
    ),
    (
        "io.statefun.kafka/routable-protobuf-ingress",
        "io.statefun.kafka.v1/ingress",
    ),
    (
        "io.statefun.kinesis/routable-protobuf-ingress",
        "io.statefun.kinesis.v1/ingress",
    ),
];

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
fn expected_one_of(word: &str, candidates: &[&str]) -> String {
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

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A mapping node whose keys were checked (strings, no duplicates, all known).
struct Obj<'n> {
    mark: Mark,
    path: String,
    entries: Vec<(&'n str, &'n Node)>,
    keys: Vec<(&'n str, Mark)>,
    /// Known fields that an unknown key was taken as a typo of (not reported again as missing).
    suggested: Vec<&'static str>,
}

impl<'n> Obj<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn field(&self, key: &str) -> String {
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

/// Where the id of an ingress or egress was written (for duplicate-id messages).
struct Declared {
    id_mark: Mark,
    id_field: String,
}

/// The state of one load: the module so far and every diagnostic.
pub(crate) struct Loader<'f> {
    file: &'f str,
    document: usize,
    diags: Vec<Diagnostic>,
    module: Module,
    ingress_ids: HashMap<TypeName, Location>,
    egress_ids: HashMap<TypeName, Location>,
    /// Declared Kafka clusters: where each id was declared.
    cluster_ids: HashMap<String, Location>,
    /// `cluster:` references, resolved once every document is read (a cluster may be
    /// declared after its users): (ingress or egress id, is an ingress, where).
    cluster_refs: Vec<(TypeName, bool, Location)>,
}

/// Loads `text` (named `file` in messages).
pub(crate) fn load(text: &str, file: &str) -> Result<Module, Diagnostics> {
    let mut l = Loader {
        file,
        document: 0,
        diags: Vec::new(),
        module: Module {
            file: file.to_string(),
            ..Module::default()
        },
        ingress_ids: HashMap::new(),
        egress_ids: HashMap::new(),
        cluster_ids: HashMap::new(),
        cluster_refs: Vec::new(),
    };
    let (docs, syntax) = parse_documents(text);
    for doc in &docs {
        l.document = doc.index;
        if let Some(root) = &doc.root {
            l.document(root);
        }
    }
    if let Some(e) = syntax {
        l.document = e.document;
        l.diags.push(Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            document: e.document,
            line: (e.mark.line > 0).then_some(e.mark.line),
            column: (e.mark.line > 0).then_some(e.mark.column),
            field: String::new(),
            message: e.message,
        });
    }
    if docs.iter().all(|d| d.root.is_none()) && !l.diags.iter().any(Diagnostic::is_error) {
        l.diags.push(Diagnostic {
            severity: Severity::Warning,
            file: file.to_string(),
            document: 0,
            line: None,
            column: None,
            field: String::new(),
            message: "the module is empty: it declares no endpoints, ingresses or egresses"
                .to_string(),
        });
    }
    l.check_endpoint_overlap();
    l.resolve_clusters();
    l.check_dead_letters();
    let mut diags = l.diags;
    diags.sort_by_key(|d| (d.document, d.line.unwrap_or(0), d.column.unwrap_or(0)));
    if diags.iter().any(Diagnostic::is_error) {
        Err(Diagnostics(diags))
    } else {
        let mut module = l.module;
        module.warnings = diags;
        Ok(module)
    }
}

impl<'f> Loader<'f> {
    fn location(&self, mark: Mark, field: &str) -> Location {
        Location {
            file: self.file.to_string(),
            document: self.document,
            line: Some(mark.line),
            column: Some(mark.column),
            field: field.to_string(),
        }
    }

    fn report(&mut self, severity: Severity, mark: Mark, field: &str, message: impl Into<String>) {
        let loc = self.location(mark, field);
        self.diags.push(Diagnostic::at(severity, &loc, message));
    }

    fn error(&mut self, mark: Mark, field: &str, message: impl Into<String>) {
        self.report(Severity::Error, mark, field, message);
    }

    fn warn(&mut self, mark: Mark, field: &str, message: impl Into<String>) {
        self.report(Severity::Warning, mark, field, message);
    }

    // ----- generic readers -------------------------------------------------

    /// Reads a mapping, reporting non-string or duplicate keys and keys not in `known`.
    fn obj<'n>(&mut self, node: &'n Node, path: &str, known: &[&'static str]) -> Option<Obj<'n>> {
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
    fn only(&mut self, o: &Obj<'_>, allowed: &[&str], what: &str) {
        for (k, _) in &o.entries {
            if !allowed.contains(k) {
                let m = o.key_mark(k);
                self.error(m, &o.field(k), format!("`{k}` does not apply to {what}"));
            }
        }
    }

    /// The node of a required field, reporting it when missing.
    fn req<'n>(&mut self, o: &Obj<'n>, key: &str) -> Option<&'n Node> {
        let n = o.get(key);
        if n.is_none() && !o.suggested.contains(&key) {
            self.error(o.mark, &o.path, format!("missing required field `{key}`"));
        }
        n
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
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

    fn req_str(&mut self, o: &Obj<'_>, key: &str) -> Option<String> {
        let n = self.req(o, key)?;
        self.string(n, &o.field(key))
    }

    fn opt_str(&mut self, o: &Obj<'_>, key: &str) -> Option<String> {
        let n = o.get(key)?;
        self.string(n, &o.field(key))
    }

    fn typename(&mut self, node: &Node, path: &str) -> Option<TypeName> {
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

    fn req_typename(&mut self, o: &Obj<'_>, key: &str) -> Option<TypeName> {
        let n = self.req(o, key)?;
        self.typename(n, &o.field(key))
    }

    fn uint(&mut self, node: &Node, path: &str) -> Option<u64> {
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

    fn opt_uint(&mut self, o: &Obj<'_>, key: &str, default: u64, min: u64) -> u64 {
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

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.scalar().map(str::to_ascii_lowercase).as_deref() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => {
                self.error(node.mark, path, "expected `true` or `false`".to_string());
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let text = self.string(node, path)?;
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.mark, path, e);
                None
            }
        }
    }

    fn opt_duration(&mut self, o: &Obj<'_>, key: &str) -> Option<Duration> {
        let n = o.get(key)?;
        self.duration(n, &o.field(key))
    }

    fn pattern(&mut self, node: &Node, path: &str) -> Option<FunctionPattern> {
        let text = self.string(node, path)?;
        match FunctionPattern::parse(&text) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(node.mark, path, e);
                None
            }
        }
    }

    /// `targets: [...]`: the patterns and where each was written.
    fn targets(&mut self, o: &Obj<'_>) -> Option<(Vec<FunctionPattern>, Vec<Location>)> {
        let node = self.req(o, "targets")?;
        let path = o.field("targets");
        let Value::Seq(items) = &node.value else {
            let msg = match node.scalar() {
                Some(t) => {
                    format!("expected a list of targets, found `{t}`; write `targets: [{t}]`")
                }
                None => format!("expected a list of targets, found {}", node.describe()),
            };
            self.error(node.mark, &path, msg);
            return None;
        };
        if items.is_empty() {
            self.error(
                node.mark,
                &path,
                "no targets: records would be dropped; list at least one `<namespace>/<name>`",
            );
            return None;
        }
        let mut patterns = Vec::new();
        let mut locations = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = index(&path, i);
            match self.pattern(item, &p) {
                Some(pat) => {
                    if patterns.contains(&pat) {
                        self.warn(
                            item.mark,
                            &p,
                            format!(
                                "target `{pat}` is listed twice; it will receive each record twice"
                            ),
                        );
                    }
                    patterns.push(pat);
                    locations.push(self.location(item.mark, &p));
                }
                None => ok = false,
            }
        }
        ok.then_some((patterns, locations))
    }

    /// A choice among fixed words (`type: latest`), with did-you-mean.
    fn choice(&mut self, node: &Node, path: &str, what: &str, options: &[&str]) -> Option<String> {
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
    fn properties(&mut self, o: &Obj<'_>, key: &str) -> Properties {
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

    /// The id: `spec.id`, or the legacy `meta.id`.
    fn id(
        &mut self,
        o: &Obj<'_>,
        meta_id: Option<&(&Node, String)>,
    ) -> Option<(TypeName, Declared)> {
        match (o.get("id"), meta_id) {
            (Some(n), Some((m, mpath))) => {
                let a = self.typename(n, &o.field("id"))?;
                let b = self.typename(m, mpath)?;
                if a != b {
                    self.error(
                        n.mark,
                        &o.field("id"),
                        format!("`id` is `{a}` but `meta.id` is `{b}`; give it once"),
                    );
                    return None;
                }
                Some((
                    a,
                    Declared {
                        id_mark: n.mark,
                        id_field: o.field("id"),
                    },
                ))
            }
            (Some(n), None) => {
                let t = self.typename(n, &o.field("id"))?;
                Some((
                    t,
                    Declared {
                        id_mark: n.mark,
                        id_field: o.field("id"),
                    },
                ))
            }
            (None, Some((m, mpath))) => {
                let t = self.typename(m, mpath)?;
                Some((
                    t,
                    Declared {
                        id_mark: m.mark,
                        id_field: mpath.clone(),
                    },
                ))
            }
            (None, None) => {
                self.error(o.mark, &o.path, "missing required field `id`");
                None
            }
        }
    }

    // ----- documents -------------------------------------------------------

    fn document(&mut self, root: &Node) {
        let is_legacy = matches!(&root.value, Value::Map(m) if m.iter().any(|(k, _)| k.scalar() == Some("version")));
        if is_legacy {
            self.legacy(root);
            return;
        }
        if !matches!(root.value, Value::Map(_)) {
            self.error(
                root.mark,
                "",
                format!(
                    "a module document must be a mapping with `kind:` and `spec:`, found {}",
                    root.describe()
                ),
            );
            return;
        }
        let Some(o) = self.obj(root, "", &["kind", "spec"]) else {
            return;
        };
        let kind_node = self.req(&o, "kind");
        let spec = self.req(&o, "spec");
        let Some(kind_node) = kind_node else { return };
        let Some(kind_text) = self.string(kind_node, "kind") else {
            return;
        };
        let Some(kind) = self.resolve_kind(&kind_text, kind_node.mark, "kind", false) else {
            return;
        };
        if let Some(spec) = spec {
            self.spec(kind, spec, "spec", None);
        }
    }

    /// Maps a kind name to a [`Kind`]; legacy names are accepted only in the legacy format.
    fn resolve_kind(&mut self, text: &str, mark: Mark, path: &str, legacy: bool) -> Option<Kind> {
        if let Some((_, k)) = KINDS.iter().find(|(n, _)| *n == text) {
            return Some(*k);
        }
        if let Some((_, k)) = LEGACY_KINDS.iter().find(|(n, _)| *n == text) {
            if legacy {
                return Some(*k);
            }
            let new = KINDS.iter().find(|(_, kk)| kk == k).map_or("", |(n, _)| *n);
            self.error(
                mark,
                path,
                format!("`{text}` is a legacy type name; in the `kind:` format write `{new}`"),
            );
            return None;
        }
        if let Some((_, replacement)) = UNSUPPORTED_KINDS.iter().find(|(n, _)| *n == text) {
            self.error(
                mark,
                path,
                format!(
                    "`{text}` (StateFun 2.x, Protobuf-typed records) is not supported; use `{replacement}`, which names each record's type with `valueType`"
                ),
            );
            return None;
        }
        let names: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
        self.error(
            mark,
            path,
            format!("unknown kind `{text}`; {}", expected_one_of(text, &names)),
        );
        None
    }

    fn spec(&mut self, kind: Kind, spec: &Node, path: &str, meta_id: Option<(&Node, String)>) {
        let meta_id = meta_id.as_ref();
        match kind {
            Kind::EndpointV1 | Kind::EndpointV2 => self.endpoint(kind, spec, path),
            Kind::KafkaIngress => self.kafka_ingress(spec, path, meta_id),
            Kind::KafkaEgress => self.kafka_egress(spec, path, meta_id),
            Kind::KafkaCluster => self.kafka_cluster(spec, path),
            Kind::KinesisIngress => self.kinesis_ingress(spec, path, meta_id),
            Kind::KinesisEgress => self.kinesis_egress(spec, path, meta_id),
            Kind::FileIngress => self.file_ingress(spec, path, meta_id),
            Kind::FileEgress => self.file_egress(spec, path, meta_id),
            Kind::GeneratorIngress => self.generator_ingress(spec, path, meta_id),
        }
    }

    // ----- legacy format ---------------------------------------------------

    fn legacy(&mut self, root: &Node) {
        let Some(o) = self.obj(root, "", &["version", "module"]) else {
            return;
        };
        if let Some(v) = o.get("version") {
            let text = v.scalar().unwrap_or("").trim().to_string();
            if text != "3.0" {
                let shown = if text.is_empty() {
                    v.describe().to_string()
                } else {
                    format!("`{text}`")
                };
                self.error(
                    v.mark,
                    "version",
                    format!(
                        "module format version {shown} is not supported; the supported formats are `version: \"3.0\"` and the `kind:`/`spec:` documents of StateFun 3.1+"
                    ),
                );
                return;
            }
        }
        let Some(module) = self.req(&o, "module") else {
            return;
        };
        let Some(m) = self.obj(module, "module", &["meta", "spec"]) else {
            return;
        };
        if let Some(meta) = self.req(&m, "meta") {
            if let Some(mo) = self.obj(meta, "module.meta", &["type"]) {
                if let Some(t) = self.req_str(&mo, "type") {
                    if t != "remote" {
                        let mark = mo.get("type").map_or(mo.mark, |n| n.mark);
                        self.error(
                            mark,
                            "module.meta.type",
                            format!("module type `{t}` is not supported; only `remote` modules can be loaded"),
                        );
                    }
                }
            }
        }
        let Some(spec) = self.req(&m, "spec") else {
            return;
        };
        let Some(s) = self.obj(spec, "module.spec", &["endpoints", "ingresses", "egresses"]) else {
            return;
        };
        for (list, wrapper, role) in [
            ("endpoints", "endpoint", Role::Endpoint),
            ("ingresses", "ingress", Role::Ingress),
            ("egresses", "egress", Role::Egress),
        ] {
            let Some(node) = s.get(list) else { continue };
            let path = s.field(list);
            match &node.value {
                Value::Null => {}
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.legacy_item(item, &index(&path, i), wrapper, list, role);
                    }
                }
                _ => self.error(
                    node.mark,
                    &path,
                    format!(
                        "expected a list of `- {wrapper}:` entries, found {}",
                        node.describe()
                    ),
                ),
            }
        }
    }

    /// One `- ingress: {meta, spec}` entry (also accepting `meta`/`spec` as siblings of `ingress:`).
    fn legacy_item(
        &mut self,
        item: &Node,
        path: &str,
        wrapper: &'static str,
        list: &str,
        role: Role,
    ) {
        let nested = matches!(&item.value, Value::Map(m)
            if m.iter().any(|(k, v)| k.scalar() == Some(wrapper) && matches!(v.value, Value::Map(_))));
        let inner = if nested {
            let Some(o) = self.obj(item, path, &[wrapper]) else {
                return;
            };
            let Some(n) = o.get(wrapper) else { return };
            let p = o.field(wrapper);
            let Some(io) = self.obj(n, &p, &["meta", "spec"]) else {
                return;
            };
            io
        } else {
            let Some(o) = self.obj(item, path, &[wrapper, "meta", "spec"]) else {
                return;
            };
            if !o.has(wrapper) {
                self.error(
                    o.mark,
                    path,
                    format!("expected `- {wrapper}:` with `meta` and `spec`"),
                );
                return;
            }
            o
        };
        let Some(meta) = self.req(&inner, "meta") else {
            return;
        };
        let meta_path = inner.field("meta");
        let type_key = if role == Role::Endpoint {
            "kind"
        } else {
            "type"
        };
        let known: &[&str] = if role == Role::Endpoint {
            &["kind"]
        } else {
            &["type", "id"]
        };
        let Some(mo) = self.obj(meta, &meta_path, known) else {
            return;
        };
        let spec = self.req(&inner, "spec");
        let Some(type_node) = self.req(&mo, type_key) else {
            return;
        };
        let type_path = mo.field(type_key);
        let Some(type_text) = self.string(type_node, &type_path) else {
            return;
        };
        let Some(kind) = self.resolve_kind(&type_text, type_node.mark, &type_path, true) else {
            return;
        };
        if kind.role() != role {
            let what = match kind.role() {
                Role::Endpoint => "an endpoint kind",
                Role::Ingress => "an ingress type",
                Role::Egress => "an egress type",
                Role::Definition => "a definition kind (only in the `kind:` format)",
            };
            self.error(
                type_node.mark,
                &type_path,
                format!("`{type_text}` is {what}, but it is listed under `{list}`"),
            );
            return;
        }
        let meta_id = mo.get("id").map(|n| (n, mo.field("id")));
        if let Some(spec) = spec {
            let spec_path = inner.field("spec");
            if spec.is_null() && role != Role::Endpoint {
                self.error(spec.mark, &spec_path, "is empty");
                return;
            }
            self.spec(kind, spec, &spec_path, meta_id);
        }
    }

    // ----- endpoints -------------------------------------------------------

    fn endpoint(&mut self, kind: Kind, spec: &Node, path: &str) {
        let v2 = kind == Kind::EndpointV2;
        let known: &[&str] = if v2 {
            &[
                "functions",
                "urlPathTemplate",
                "maxNumBatchRequests",
                "transport",
            ]
        } else {
            &[
                "functions",
                "urlPathTemplate",
                "maxNumBatchRequests",
                "timeouts",
            ]
        };
        let Some(o) = self.obj(spec, path, known) else {
            return;
        };
        let functions = self
            .req(&o, "functions")
            .and_then(|n| self.pattern(n, &o.field("functions")));
        let url = self.req_str(&o, "urlPathTemplate");
        if let (Some(u), Some(n)) = (&url, o.get("urlPathTemplate")) {
            self.check_url(u, n.mark, &o.field("urlPathTemplate"));
        }
        let max = self.opt_uint(&o, "maxNumBatchRequests", 1000, 1);
        let mut transport = HttpTransport::default();
        if let Some(n) = o.get("timeouts") {
            self.timeouts(n, &o.field("timeouts"), &mut transport);
        }
        if let Some(n) = o.get("transport") {
            self.transport(n, &o.field("transport"), &mut transport);
        }
        let (Some(functions), Some(url)) = (functions, url) else {
            return;
        };
        let fmark = o.get("functions").map_or(o.mark, |n| n.mark);
        self.module
            .locations
            .endpoints
            .push(self.location(fmark, &o.field("functions")));
        self.module.endpoints.push(HttpEndpoint {
            functions,
            url_path_template: url,
            max_num_batch_requests: usize::try_from(max).unwrap_or(usize::MAX),
            version: if v2 {
                EndpointVersion::V2
            } else {
                EndpointVersion::V1
            },
            transport,
        });
    }

    fn check_url(&mut self, url: &str, mark: Mark, path: &str) {
        let Some((scheme, rest)) = url.split_once("://") else {
            self.error(
                mark,
                path,
                format!("`{url}` is not a URL; write e.g. `http://host:8000/{{function.name}}`"),
            );
            return;
        };
        let schemes = ["http", "https", "http+unix", "https+unix"];
        if !schemes.contains(&scheme) {
            self.error(
                mark,
                path,
                format!(
                    "unsupported URL scheme `{scheme}`; {}",
                    expected_one_of(scheme, &schemes)
                ),
            );
            return;
        }
        if rest.is_empty() || rest.starts_with('{') {
            self.error(
                mark,
                path,
                format!("`{url}` has no host (or, for `+unix`, no socket path)"),
            );
            return;
        }
        if scheme.ends_with("+unix") && !rest.starts_with('/') {
            self.error(
                mark,
                path,
                format!("a `{scheme}` URL names an absolute socket path: `{scheme}:///path/to/socket.sock/{{function.name}}`"),
            );
            return;
        }
        let mut s = url;
        while let Some(open) = s.find('{') {
            let after = &s[open..];
            let Some(close) = after.find('}') else {
                self.error(mark, path, "unclosed `{` in the URL template");
                return;
            };
            let placeholder = &after[..=close];
            if placeholder != "{function.name}" {
                self.error(
                    mark,
                    path,
                    format!("unknown placeholder `{placeholder}`; only `{{function.name}}` is supported"),
                );
                return;
            }
            s = &after[close + 1..];
        }
    }

    fn timeouts(&mut self, node: &Node, path: &str, t: &mut HttpTransport) {
        let Some(o) = self.obj(node, path, &["call", "connect", "read", "write"]) else {
            return;
        };
        if let Some(d) = self.opt_duration(&o, "call") {
            t.call_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "connect") {
            t.connect_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "read") {
            t.read_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "write") {
            t.write_timeout = d;
        }
    }

    fn transport(&mut self, node: &Node, path: &str, t: &mut HttpTransport) {
        let Some(o) = self.obj(
            node,
            path,
            &[
                "type",
                "call",
                "connect",
                "timeouts",
                "pool_ttl",
                "pool_size",
                "payload_max_bytes",
                "trust_cacerts",
                "client_cert",
                "client_key",
                "client_key_password",
            ],
        ) else {
            return;
        };
        if let Some(n) = o.get("type") {
            let types = [
                "io.statefun.transports.v1/async",
                "io.statefun.transports.v1/okhttp",
            ];
            if let Some(ty) = self.choice(n, &o.field("type"), "transport type", &types) {
                if ty == types[0] {
                    t.kind = TransportType::Async;
                    t.call_timeout = Duration::from_secs(120);
                    t.connect_timeout = Duration::from_secs(20);
                }
            }
        }
        if let Some(n) = o.get("timeouts") {
            self.timeouts(n, &o.field("timeouts"), t);
        }
        if let Some(d) = self.opt_duration(&o, "call") {
            t.call_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "connect") {
            t.connect_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "pool_ttl") {
            t.pool_ttl = d;
        }
        t.pool_size = usize::try_from(self.opt_uint(&o, "pool_size", t.pool_size as u64, 1))
            .unwrap_or(usize::MAX);
        t.payload_max_bytes =
            usize::try_from(self.opt_uint(&o, "payload_max_bytes", t.payload_max_bytes as u64, 1))
                .unwrap_or(usize::MAX);
        t.tls.trust_cacerts = self.opt_str(&o, "trust_cacerts");
        t.tls.client_cert = self.opt_str(&o, "client_cert");
        t.tls.client_key = self.opt_str(&o, "client_key");
        t.tls.client_key_password = self.opt_str(&o, "client_key_password").map(Secret::new);
        if t.tls.client_cert.is_some() != t.tls.client_key.is_some() {
            self.error(
                o.mark,
                path,
                "`client_cert` and `client_key` must be given together",
            );
        }
    }

    fn check_endpoint_overlap(&mut self) {
        let eps = &self.module.endpoints;
        let locs = &self.module.locations.endpoints;
        let mut found = Vec::new();
        let mut first: HashMap<&FunctionPattern, usize> = HashMap::new();
        let mut namespaces: HashMap<&str, usize> = HashMap::new();
        for (i, e) in eps.iter().enumerate() {
            if let Some(&j) = first.get(&e.functions) {
                found.push((Severity::Error, i, j, format!(
                    "`{}` is already served by the endpoint declared in document {} at line {}; each function type must have one endpoint",
                    e.functions, locs[j].document, locs[j].line.unwrap_or(0)
                )));
                continue;
            }
            first.insert(&e.functions, i);
            if let FunctionPattern::Namespace(ns) = &e.functions {
                namespaces.insert(ns, i);
            }
        }
        for (i, e) in eps.iter().enumerate() {
            if let FunctionPattern::Exact(t) = &e.functions {
                if let Some(&j) = namespaces.get(t.namespace()) {
                    found.push((Severity::Warning, i, j, format!(
                        "`{t}` is also covered by `{}` (document {}, line {}); this more specific endpoint wins for it",
                        eps[j].functions, locs[j].document, locs[j].line.unwrap_or(0)
                    )));
                }
            }
        }
        for (sev, i, _, msg) in found {
            if let Some(loc) = self.module.locations.endpoints.get(i) {
                self.diags.push(Diagnostic::at(sev, loc, msg));
            }
        }
    }

    // ----- shared ingress/egress parts -------------------------------------

    fn add_ingress(
        &mut self,
        id: TypeName,
        decl: Declared,
        spec: IngressSpec,
        bad_records: Option<BadRecordPolicy>,
        location: IngressLocation,
    ) {
        let here = self.location(decl.id_mark, &decl.id_field);
        if !claim_id(&mut self.diags, &mut self.ingress_ids, "ingress", &id, here) {
            return;
        }
        self.module.ingresses.push(Ingress {
            id,
            spec,
            bad_records,
        });
        self.module.locations.ingresses.push(location);
    }

    /// `badRecords` (statefun-rs extension): `skip`, `fail`, or
    /// `{policy: dead-letter, egress, topic | stream}`. Returns the policy (if
    /// given), where it was given, and whether it was valid.
    fn bad_records(&mut self, o: &Obj<'_>) -> (Option<BadRecordPolicy>, Option<Location>, bool) {
        let Some(node) = o.get("badRecords") else {
            return (None, None, true);
        };
        let path = o.field("badRecords");
        let loc = Some(self.location(node.mark, &path));
        let policies = ["skip", "fail", "dead-letter"];
        let (policy, fields) = if node.scalar().is_some() {
            (
                self.choice(node, &path, "bad-record policy", &policies),
                None,
            )
        } else {
            let Some(b) = self.obj(node, &path, &["policy", "egress", "topic", "stream"]) else {
                return (None, loc, false);
            };
            let policy = self
                .req(&b, "policy")
                .and_then(|n| self.choice(n, &b.field("policy"), "bad-record policy", &policies));
            (policy, Some(b))
        };
        let policy = match (policy.as_deref(), fields) {
            (Some("dead-letter"), None) => {
                self.error(
                    node.mark,
                    &path,
                    "the dead-letter policy needs an egress: write `badRecords: {policy: dead-letter, egress: <egress id>, topic: <topic>}`",
                );
                None
            }
            (Some("dead-letter"), Some(b)) => {
                let egress = self.req_typename(&b, "egress");
                let topic = self.opt_str(&b, "topic");
                let stream = self.opt_str(&b, "stream");
                if topic.is_some() && stream.is_some() {
                    self.error(
                        b.mark,
                        &b.path,
                        "give `topic` (for a Kafka egress) or `stream` (for a Kinesis egress), not both",
                    );
                    None
                } else {
                    egress.map(|egress| {
                        BadRecordPolicy::DeadLetter(DeadLetter {
                            egress,
                            topic,
                            stream,
                        })
                    })
                }
            }
            (Some(p), fields) => {
                if let Some(b) = fields {
                    self.only(&b, &["policy"], &format!("the `{p}` policy"));
                }
                Some(if p == "fail" {
                    BadRecordPolicy::Fail
                } else {
                    BadRecordPolicy::Skip
                })
            }
            (None, _) => None,
        };
        let ok = policy.is_some();
        (policy, loc, ok)
    }

    /// Dead-letter egresses must be declared in the module and able to take
    /// the record: a Kafka egress needs `topic`, a Kinesis egress `stream`.
    fn check_dead_letters(&mut self) {
        let mut found = Vec::new();
        for (i, ingress) in self.module.ingresses.iter().enumerate() {
            let Some(BadRecordPolicy::DeadLetter(d)) = &ingress.bad_records else {
                continue;
            };
            let egress = self.module.egresses.iter().find(|e| e.id == d.egress);
            let problem = match egress.map(|e| &e.spec) {
                None => Some(format!(
                    "dead-letter egress `{}` is not declared in this module; declare it (kind io.statefun.kafka.v1/egress, io.statefun.kinesis.v1/egress or io.statefun-rs.file.v1/egress)",
                    d.egress
                )),
                Some(EgressSpec::Kafka(_)) if d.topic.is_none() => Some(format!(
                    "dead-letter egress `{}` is a Kafka egress: add `topic: <topic for dead letters>`",
                    d.egress
                )),
                Some(EgressSpec::Kinesis(_)) if d.stream.is_none() => Some(format!(
                    "dead-letter egress `{}` is a Kinesis egress: add `stream: <stream for dead letters>`",
                    d.egress
                )),
                _ => None,
            };
            if let Some(p) = problem {
                found.push((i, p));
            }
        }
        for (i, message) in found {
            if let Some(loc) = self
                .module
                .locations
                .ingresses
                .get(i)
                .and_then(|l| l.bad_records.clone())
            {
                self.diags
                    .push(Diagnostic::at(Severity::Error, &loc, message));
            }
        }
    }

    fn add_egress(
        &mut self,
        id: TypeName,
        decl: Declared,
        spec: EgressSpec,
        location: EgressLocation,
    ) {
        let here = self.location(decl.id_mark, &decl.id_field);
        if !claim_id(&mut self.diags, &mut self.egress_ids, "egress", &id, here) {
            return;
        }
        self.module.egresses.push(Egress { id, spec });
        self.module.locations.egresses.push(location);
    }

    /// A list field that must hold at least one mapping.
    fn list<'n>(&mut self, o: &Obj<'n>, key: &str, what: &str) -> Option<&'n [Node]> {
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

    fn timestamp(&mut self, o: &Obj<'_>) -> Option<crate::time::Timestamp> {
        let key = match (o.has("timestamp"), o.has("date")) {
            (true, true) => {
                self.error(
                    o.mark,
                    &o.path,
                    "give either `timestamp` or `date`, not both",
                );
                return None;
            }
            (true, false) => "timestamp",
            (false, true) => "date",
            (false, false) => {
                self.error(o.mark, &o.path, "missing required field `timestamp` (an ISO-8601 time such as `2026-04-23T00:00:00.000Z`)");
                return None;
            }
        };
        let node = o.get(key)?;
        let path = o.field(key);
        let text = self.string(node, &path)?;
        match parse_timestamp(&text) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(node.mark, &path, e);
                None
            }
        }
    }

    // ----- Kafka -----------------------------------------------------------

    fn kafka_ingress(&mut self, spec: &Node, path: &str, meta_id: Option<&(&Node, String)>) {
        let Some(o) = self.obj(
            spec,
            path,
            &[
                "id",
                "address",
                "consumerGroupId",
                "topics",
                "startupPosition",
                "autoOffsetResetPosition",
                "properties",
                "badRecords",
                "cluster",
            ],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let (bad_records, bad_loc, bad_ok) = self.bad_records(&o);
        let (address, cluster) = self.kafka_address(&o);
        let properties = self.properties(&o, "properties");
        let group = if o.has("consumerGroupId") || properties.get("group.id").is_none() {
            self.req_str(&o, "consumerGroupId")
        } else {
            properties.get("group.id").map(str::to_string)
        };
        let mut topics = Vec::new();
        let mut target_locs = Vec::new();
        let mut topics_ok = true;
        let mut names: HashMap<String, usize> = HashMap::new();
        if let Some(items) = self.list(&o, "topics", "topic") {
            let tpath = o.field("topics");
            for (i, item) in items.iter().enumerate() {
                let p = index(&tpath, i);
                let Some(to) = self.obj(item, &p, &["topic", "valueType", "targets"]) else {
                    topics_ok = false;
                    continue;
                };
                let topic = self.req_str(&to, "topic");
                if let (Some(t), Some(n)) = (&topic, to.get("topic")) {
                    if let Some(why) = kafka_topic_problem(t) {
                        self.error(n.mark, &to.field("topic"), why);
                    }
                    if let Some(first) = names.insert(t.clone(), n.mark.line) {
                        self.error(
                            n.mark,
                            &to.field("topic"),
                            format!("topic `{t}` is listed twice in this ingress (first at line {first}); merge the targets into one entry"),
                        );
                    }
                }
                let value_type = self.req_typename(&to, "valueType");
                let targets = self.targets(&to);
                match (topic, value_type, targets) {
                    (Some(topic), Some(value_type), Some((targets, locs))) => {
                        topics.push(KafkaTopic {
                            topic,
                            value_type,
                            targets,
                        });
                        target_locs.push(locs);
                    }
                    _ => topics_ok = false,
                }
            }
        } else {
            topics_ok = false;
        }
        let startup = match o.get("startupPosition") {
            None => Some(KafkaStartupPosition::Latest),
            Some(n) => self.kafka_startup(n, &o.field("startupPosition"), &topics),
        };
        let reset = match o.get("autoOffsetResetPosition") {
            None => Some(AutoOffsetReset::Latest),
            Some(n) => self
                .choice(
                    n,
                    &o.field("autoOffsetResetPosition"),
                    "auto offset reset position",
                    &["latest", "earliest"],
                )
                .map(|c| {
                    if c == "earliest" {
                        AutoOffsetReset::Earliest
                    } else {
                        AutoOffsetReset::Latest
                    }
                }),
        };
        let (Some((id, decl)), Some(address), Some(group), Some(startup), Some(reset), true, true) =
            (id, address, group, startup, reset, topics_ok, bad_ok)
        else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        if let Some((_, at)) = &cluster {
            self.cluster_refs.push((id.clone(), true, at.clone()));
        }
        self.add_ingress(
            id,
            decl,
            IngressSpec::Kafka(KafkaIngress {
                address,
                consumer_group_id: group,
                topics,
                startup_position: startup,
                auto_offset_reset: reset,
                properties,
                cluster: cluster.map(|(c, _)| c),
                properties_file: None,
            }),
            bad_records,
            IngressLocation {
                spec: spec_loc,
                targets: target_locs,
                bad_records: bad_loc,
            },
        );
    }

    fn kafka_startup(
        &mut self,
        node: &Node,
        path: &str,
        topics: &[KafkaTopic],
    ) -> Option<KafkaStartupPosition> {
        // A bare word is accepted too: `startupPosition: earliest`.
        let types = [
            "latest",
            "earliest",
            "group-offsets",
            "specific-offsets",
            "at-timestamp",
            "date",
        ];
        if node.scalar().is_some() {
            let t = self.choice(node, path, "startup position", &types)?;
            return match t.as_str() {
                "latest" => Some(KafkaStartupPosition::Latest),
                "earliest" => Some(KafkaStartupPosition::Earliest),
                "group-offsets" => Some(KafkaStartupPosition::GroupOffsets),
                _ => {
                    self.error(
                        node.mark,
                        path,
                        format!(
                            "`{t}` needs more settings; write it as a mapping with `type: {t}`"
                        ),
                    );
                    None
                }
            };
        }
        let o = self.obj(node, path, &["type", "offsets", "timestamp", "date"])?;
        let tnode = self.req(&o, "type")?;
        let t = self.choice(tnode, &o.field("type"), "startup position", &types)?;
        let what = format!("startup position `{t}`");
        match t.as_str() {
            "latest" | "earliest" | "group-offsets" => {
                self.only(&o, &["type"], &what);
                Some(match t.as_str() {
                    "latest" => KafkaStartupPosition::Latest,
                    "earliest" => KafkaStartupPosition::Earliest,
                    _ => KafkaStartupPosition::GroupOffsets,
                })
            }
            "specific-offsets" => {
                self.only(&o, &["type", "offsets"], &what);
                let n = self.req(&o, "offsets")?;
                self.offsets(n, &o.field("offsets"), topics)
                    .map(KafkaStartupPosition::SpecificOffsets)
            }
            _ => {
                self.only(&o, &["type", "timestamp", "date"], &what);
                self.timestamp(&o).map(KafkaStartupPosition::AtTimestamp)
            }
        }
    }

    fn offsets(
        &mut self,
        node: &Node,
        path: &str,
        topics: &[KafkaTopic],
    ) -> Option<Vec<PartitionOffset>> {
        let mut entries: Vec<(&Node, &Node, String)> = Vec::new();
        match &node.value {
            Value::Map(m) => entries.extend(m.iter().map(|(k, v)| (k, v, path.to_string()))),
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    match &item.value {
                        Value::Map(m) => {
                            entries.extend(m.iter().map(|(k, v)| (k, v, index(path, i))))
                        }
                        _ => self.error(
                            item.mark,
                            &index(path, i),
                            "each offset must be a `<topic>/<partition>: <offset>` entry",
                        ),
                    }
                }
            }
            _ => {
                self.error(
                    node.mark,
                    path,
                    "expected a list of `<topic>/<partition>: <offset>` entries",
                );
                return None;
            }
        }
        if entries.is_empty() {
            self.error(
                node.mark,
                path,
                "no offsets given; list `<topic>/<partition>: <offset>` entries",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        let mut seen = HashSet::new();
        for (k, v, p) in entries {
            let key = k.scalar().unwrap_or("").to_string();
            let fp = join(&p, &key);
            let Some((topic, partition)) = key.rsplit_once('/').filter(|(t, _)| !t.is_empty())
            else {
                self.error(
                    k.mark,
                    &fp,
                    format!("bad offsets entry `{key}`: write `<topic>/<partition>: <offset>`, e.g. `orders/0: 42`"),
                );
                ok = false;
                continue;
            };
            let partition = match partition.trim().parse::<i64>() {
                Ok(p) if p < 0 => {
                    self.error(
                        k.mark,
                        &fp,
                        format!("negative partition {p} in `{key}`; partitions start at 0"),
                    );
                    ok = false;
                    continue;
                }
                Ok(p) => match i32::try_from(p) {
                    Ok(p) => p,
                    Err(_) => {
                        self.error(
                            k.mark,
                            &fp,
                            format!("partition {p} in `{key}` is too large"),
                        );
                        ok = false;
                        continue;
                    }
                },
                Err(_) => {
                    self.error(
                        k.mark,
                        &fp,
                        format!("bad offsets entry `{key}`: the partition after the last `/` must be a number, e.g. `{topic}/0`"),
                    );
                    ok = false;
                    continue;
                }
            };
            let offset = match v.scalar().map(|s| s.trim().parse::<i64>()) {
                Some(Ok(o)) if o >= 0 => o,
                Some(Ok(o)) => {
                    self.error(v.mark, &fp, format!("negative offset {o}; offsets start at 0 (use `earliest`/`latest` for the ends)"));
                    ok = false;
                    continue;
                }
                _ => {
                    self.error(
                        v.mark,
                        &fp,
                        format!("the offset of `{key}` must be a whole number"),
                    );
                    ok = false;
                    continue;
                }
            };
            if !seen.insert((topic.to_string(), partition)) {
                self.error(k.mark, &fp, format!("`{key}` is given twice"));
                ok = false;
                continue;
            }
            if !topics.is_empty() && !topics.iter().any(|t| t.topic == topic) {
                self.warn(k.mark, &fp, format!("topic `{topic}` is not among this ingress's `topics`; this offset is ignored"));
            }
            out.push(PartitionOffset {
                topic: topic.to_string(),
                partition,
                offset,
            });
        }
        ok.then_some(out)
    }

    fn kafka_egress(&mut self, spec: &Node, path: &str, meta_id: Option<&(&Node, String)>) {
        let Some(o) = self.obj(
            spec,
            path,
            &["id", "address", "deliverySemantic", "properties", "cluster"],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let (address, cluster) = self.kafka_address(&o);
        let properties = self.properties(&o, "properties");
        let mut ds_loc = None;
        let semantic = match o.get("deliverySemantic") {
            None => Some(KafkaDeliverySemantic::AtLeastOnce),
            Some(n) => {
                ds_loc = Some(self.location(n.mark, &o.field("deliverySemantic")));
                self.kafka_semantic(n, &o.field("deliverySemantic"))
            }
        };
        let (Some((id, decl)), Some(address), Some(semantic)) = (id, address, semantic) else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        if let Some((_, at)) = &cluster {
            self.cluster_refs.push((id.clone(), false, at.clone()));
        }
        self.add_egress(
            id,
            decl,
            EgressSpec::Kafka(KafkaEgress {
                address,
                delivery_semantic: semantic,
                properties,
                cluster: cluster.map(|(c, _)| c),
                properties_file: None,
            }),
            EgressLocation {
                spec: spec_loc,
                delivery_semantic: ds_loc,
            },
        );
    }

    /// A Kafka ingress's or egress's `address`, or its `cluster` (then the address is
    /// filled in from the cluster once every document is read): exactly one of the two.
    fn kafka_address(&mut self, o: &Obj<'_>) -> (Option<String>, Option<(String, Location)>) {
        let Some(node) = o.get("cluster") else {
            return (self.req_str(o, "address"), None);
        };
        let field = o.field("cluster");
        let Some(cluster) = self.string(node, &field) else {
            return (None, None);
        };
        if let Some(a) = o.get("address") {
            self.error(
                a.mark,
                &o.field("address"),
                format!(
                    "give either `address` or `cluster` (`{cluster}` has the address), not both"
                ),
            );
            return (None, None);
        }
        let at = self.location(node.mark, &field);
        (Some(String::new()), Some((cluster, at)))
    }

    /// `io.statefun-rs.kafka.v1/cluster`.
    fn kafka_cluster(&mut self, spec: &Node, path: &str) {
        let Some(o) = self.obj(
            spec,
            path,
            &["id", "address", "properties", "propertiesFile"],
        ) else {
            return;
        };
        let id = self.req_str(&o, "id");
        let address = self.req_str(&o, "address");
        let properties = self.properties(&o, "properties");
        let properties_file = self.opt_str(&o, "propertiesFile").map(|f| {
            // Relative to the module file, as a user reading the file expects.
            let base = std::path::Path::new(self.file)
                .parent()
                .unwrap_or(std::path::Path::new(""));
            let path = std::path::Path::new(&f);
            if path.is_absolute() {
                f
            } else {
                base.join(path).to_string_lossy().into_owned()
            }
        });
        let (Some(id), Some(address)) = (id, address) else {
            return;
        };
        let id_node = o.get("id").map(|n| n.mark).unwrap_or(o.mark);
        let here = self.location(id_node, &o.field("id"));
        if let Some(first) = self.cluster_ids.get(&id) {
            let first = first.line.unwrap_or(0);
            self.error(
                id_node,
                &o.field("id"),
                format!("Kafka cluster `{id}` is declared twice (first at line {first})"),
            );
            return;
        }
        self.cluster_ids.insert(id.clone(), here);
        self.module.kafka_clusters.push(KafkaCluster {
            id,
            address,
            properties,
            properties_file,
        });
    }

    /// Fills in the address and base properties of every Kafka ingress and egress that
    /// names a `cluster`, or reports the name (with the declared ones) if no cluster has it.
    fn resolve_clusters(&mut self) {
        let refs = std::mem::take(&mut self.cluster_refs);
        for (id, is_ingress, at) in refs {
            let spec = if is_ingress {
                self.module
                    .ingresses
                    .iter_mut()
                    .find(|i| i.id == id)
                    .and_then(|i| match &mut i.spec {
                        IngressSpec::Kafka(k) => Some((
                            &mut k.cluster,
                            &mut k.address,
                            &mut k.properties,
                            &mut k.properties_file,
                        )),
                        _ => None,
                    })
            } else {
                self.module
                    .egresses
                    .iter_mut()
                    .find(|e| e.id == id)
                    .and_then(|e| match &mut e.spec {
                        EgressSpec::Kafka(k) => Some((
                            &mut k.cluster,
                            &mut k.address,
                            &mut k.properties,
                            &mut k.properties_file,
                        )),
                        _ => None,
                    })
            };
            let Some((cluster, address, properties, properties_file)) = spec else {
                continue;
            };
            let name = cluster.clone().unwrap_or_default();
            match self.module.kafka_clusters.iter().find(|c| c.id == name) {
                Some(c) => {
                    *address = c.address.clone();
                    *properties_file = c.properties_file.clone();
                    // The cluster's properties first; the user's own override them.
                    let mut merged: Vec<(String, String)> = c
                        .properties
                        .iter()
                        .filter(|(k, _)| properties.get(k).is_none())
                        .cloned()
                        .collect();
                    merged.extend(properties.iter().cloned());
                    *properties = Properties(merged);
                }
                None => {
                    let declared: Vec<&str> = self
                        .module
                        .kafka_clusters
                        .iter()
                        .map(|c| c.id.as_str())
                        .collect();
                    let message = if declared.is_empty() {
                        format!("no Kafka cluster `{name}` is declared; add a document `kind: io.statefun-rs.kafka.v1/cluster` with `id: {name}`")
                    } else {
                        format!(
                            "no Kafka cluster `{name}` is declared; {}",
                            expected_one_of(&name, &declared)
                        )
                    };
                    self.diags
                        .push(Diagnostic::at(Severity::Error, &at, message));
                }
            }
        }
    }

    fn kafka_semantic(&mut self, node: &Node, path: &str) -> Option<KafkaDeliverySemantic> {
        let types = ["exactly-once", "at-least-once", "none"];
        if node.scalar().is_some() {
            return match self
                .choice(node, path, "delivery semantic", &types)?
                .as_str()
            {
                "at-least-once" => Some(KafkaDeliverySemantic::AtLeastOnce),
                "none" => Some(KafkaDeliverySemantic::None),
                _ => {
                    self.error(node.mark, path, "`exactly-once` needs a transaction timeout: write `{type: exactly-once, transactionTimeout: 1min}`");
                    None
                }
            };
        }
        let o = self.obj(
            node,
            path,
            &["type", "transactionTimeoutMillis", "transactionTimeout"],
        )?;
        let tnode = self.req(&o, "type")?;
        let t = self.choice(tnode, &o.field("type"), "delivery semantic", &types)?;
        match t.as_str() {
            "at-least-once" => {
                self.only(
                    &o,
                    &["type"],
                    "`at-least-once`; transaction timeouts apply to `exactly-once` only",
                );
                Some(KafkaDeliverySemantic::AtLeastOnce)
            }
            "none" => {
                self.only(
                    &o,
                    &["type"],
                    "`none`; transaction timeouts apply to `exactly-once` only",
                );
                Some(KafkaDeliverySemantic::None)
            }
            _ => {
                let (timeout, mark, field) = match (
                    o.get("transactionTimeoutMillis"),
                    o.get("transactionTimeout"),
                ) {
                    (Some(_), Some(_)) => {
                        self.error(o.mark, path, "give either `transactionTimeoutMillis` or `transactionTimeout`, not both");
                        return None;
                    }
                    (Some(n), None) => {
                        let f = o.field("transactionTimeoutMillis");
                        if n.scalar().is_some_and(|s| {
                            s.trim().parse::<u64>().is_err() && parse_duration(s).is_ok()
                        }) {
                            self.error(n.mark, &f, "`transactionTimeoutMillis` is a number of milliseconds; for a duration such as `1min` use `transactionTimeout`");
                            return None;
                        }
                        (Duration::from_millis(self.uint(n, &f)?), n.mark, f)
                    }
                    (None, Some(n)) => {
                        let f = o.field("transactionTimeout");
                        (self.duration(n, &f)?, n.mark, f)
                    }
                    (None, None) => {
                        self.error(
                            o.mark,
                            path,
                            "`exactly-once` needs a transaction timeout: add `transactionTimeout: 1min` (or `transactionTimeoutMillis: 60000`), longer than the checkpoint interval and at most 15min",
                        );
                        return None;
                    }
                };
                if timeout.is_zero() {
                    self.error(mark, &field, "the transaction timeout must be positive");
                    return None;
                }
                if timeout > BROKER_MAX_TRANSACTION_TIMEOUT {
                    self.warn(
                        mark,
                        &field,
                        format!(
                            "transaction timeout {} is above 15min, the broker default `transaction.max.timeout.ms`; the producer fails unless the broker allows more",
                            format_duration(timeout)
                        ),
                    );
                }
                Some(KafkaDeliverySemantic::ExactlyOnce {
                    transaction_timeout: timeout,
                })
            }
        }
    }

    // ----- Kinesis ---------------------------------------------------------

    fn aws_region(&mut self, o: &Obj<'_>) -> Option<AwsRegion> {
        let Some(node) = o.get("awsRegion") else {
            return Some(AwsRegion::Default);
        };
        let path = o.field("awsRegion");
        let types = ["default", "specific", "custom-endpoint"];
        let ro = self.obj(node, &path, &["type", "id", "endpoint"])?;
        let tnode = self.req(&ro, "type")?;
        let t = self.choice(tnode, &ro.field("type"), "AWS region type", &types)?;
        let what = format!("region type `{t}`");
        match t.as_str() {
            "default" => {
                self.only(&ro, &["type"], &what);
                Some(AwsRegion::Default)
            }
            "specific" => {
                self.only(&ro, &["type", "id"], &what);
                let id = self.region_id(&ro)?;
                Some(AwsRegion::Specific(id))
            }
            _ => {
                let endpoint = self.req_str(&ro, "endpoint");
                let id = self.region_id(&ro);
                let endpoint = endpoint?;
                let ok = ["http://", "https://"]
                    .iter()
                    .any(|p| endpoint.starts_with(p) && endpoint.len() > p.len());
                if !ok {
                    let mark = ro.get("endpoint").map_or(ro.mark, |n| n.mark);
                    self.error(
                        mark,
                        &ro.field("endpoint"),
                        format!("`{endpoint}` is not an http:// or https:// URL, e.g. `http://localstack:4566`"),
                    );
                    return None;
                }
                Some(AwsRegion::CustomEndpoint { endpoint, id: id? })
            }
        }
    }

    fn region_id(&mut self, ro: &Obj<'_>) -> Option<String> {
        let id = self.req_str(ro, "id")?;
        let valid = id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            let mark = ro.get("id").map_or(ro.mark, |n| n.mark);
            self.error(
                mark,
                &ro.field("id"),
                format!("`{id}` is not an AWS region id (lower-case letters, digits and `-`, e.g. `us-east-1`)"),
            );
            return None;
        }
        Some(id)
    }

    fn aws_credentials(&mut self, o: &Obj<'_>) -> Option<AwsCredentials> {
        let Some(node) = o.get("awsCredentials") else {
            return Some(AwsCredentials::Default);
        };
        let path = o.field("awsCredentials");
        let types = ["default", "basic", "profile"];
        let co = self.obj(
            node,
            &path,
            &[
                "type",
                "accessKeyId",
                "secretAccessKey",
                "profile",
                "profileName",
                "profilePath",
            ],
        )?;
        let tnode = self.req(&co, "type")?;
        let t = self.choice(tnode, &co.field("type"), "AWS credentials type", &types)?;
        let what = format!("credentials type `{t}`");
        match t.as_str() {
            "default" => {
                self.only(&co, &["type"], &what);
                Some(AwsCredentials::Default)
            }
            "basic" => {
                self.only(&co, &["type", "accessKeyId", "secretAccessKey"], &what);
                let key = self.req_str(&co, "accessKeyId");
                let secret = self.req_str(&co, "secretAccessKey");
                Some(AwsCredentials::Basic {
                    access_key_id: key?,
                    secret_access_key: Secret::new(secret?),
                })
            }
            _ => {
                self.only(
                    &co,
                    &["type", "profile", "profileName", "profilePath"],
                    &what,
                );
                let name = match (co.has("profile"), co.has("profileName")) {
                    (true, true) => {
                        self.error(
                            co.mark,
                            &path,
                            "give either `profile` or `profileName`, not both",
                        );
                        return None;
                    }
                    (false, true) => self.opt_str(&co, "profileName")?,
                    (true, false) => self.opt_str(&co, "profile")?,
                    (false, false) => {
                        self.error(
                            co.mark,
                            &path,
                            "missing required field `profileName` (or `profile`)",
                        );
                        return None;
                    }
                };
                let profile_path = self.opt_str(&co, "profilePath");
                Some(AwsCredentials::Profile {
                    name,
                    path: profile_path,
                })
            }
        }
    }

    fn kinesis_ingress(&mut self, spec: &Node, path: &str, meta_id: Option<&(&Node, String)>) {
        let Some(o) = self.obj(
            spec,
            path,
            &[
                "id",
                "awsRegion",
                "awsCredentials",
                "startupPosition",
                "streams",
                "clientConfigProperties",
                "badRecords",
            ],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let (bad_records, bad_loc, bad_ok) = self.bad_records(&o);
        let region = self.aws_region(&o);
        let credentials = self.aws_credentials(&o);
        let startup = match o.get("startupPosition") {
            None => Some(KinesisStartupPosition::Latest),
            Some(n) => self.kinesis_startup(n, &o.field("startupPosition")),
        };
        let properties = self.properties(&o, "clientConfigProperties");
        let mut streams = Vec::new();
        let mut target_locs = Vec::new();
        let mut ok = true;
        let mut names: HashMap<String, usize> = HashMap::new();
        if let Some(items) = self.list(&o, "streams", "stream") {
            let spath = o.field("streams");
            for (i, item) in items.iter().enumerate() {
                let p = index(&spath, i);
                let Some(so) = self.obj(item, &p, &["stream", "streamArn", "valueType", "targets"])
                else {
                    ok = false;
                    continue;
                };
                let stream = self.opt_str(&so, "stream");
                let arn = self.opt_str(&so, "streamArn");
                if !so.has("stream") && !so.has("streamArn") {
                    self.error(
                        so.mark,
                        &so.path,
                        "missing required field `stream` (or `streamArn`)",
                    );
                }
                let mut arn_ok = true;
                let mut stream_name = stream.clone();
                if let Some(a) = &arn {
                    let mark = so.get("streamArn").map_or(so.mark, |n| n.mark);
                    let field = so.field("streamArn");
                    match parse_kinesis_arn(a) {
                        Err(why) => {
                            self.error(mark, &field, why);
                            arn_ok = false;
                        }
                        Ok((arn_region, arn_name)) => {
                            if let Some(Some(r)) = region.as_ref().map(AwsRegion::id) {
                                if r != arn_region {
                                    self.error(mark, &field, format!("the stream ARN is in region `{arn_region}`, but `awsRegion` is `{r}`"));
                                    arn_ok = false;
                                }
                            }
                            match &stream {
                                Some(s) if s != arn_name => {
                                    self.error(mark, &field, format!("the stream ARN names stream `{arn_name}`, but `stream` is `{s}`"));
                                    arn_ok = false;
                                }
                                Some(_) => {}
                                None => stream_name = Some(arn_name.to_string()),
                            }
                        }
                    }
                }
                if let Some(s) = &stream_name {
                    let mark = so
                        .get("stream")
                        .or(so.get("streamArn"))
                        .map_or(so.mark, |n| n.mark);
                    if let Some(first) = names.insert(s.clone(), mark.line) {
                        self.error(mark, &p, format!("stream `{s}` is listed twice in this ingress (first at line {first}); merge the targets into one entry"));
                        ok = false;
                    }
                }
                let value_type = self.req_typename(&so, "valueType");
                let targets = self.targets(&so);
                match (stream_name, value_type, targets, arn_ok) {
                    (Some(stream), Some(value_type), Some((targets, locs)), true) => {
                        streams.push(KinesisStream {
                            stream,
                            arn,
                            value_type,
                            targets,
                        });
                        target_locs.push(locs);
                    }
                    _ => ok = false,
                }
            }
        } else {
            ok = false;
        }
        let (Some((id, decl)), Some(region), Some(credentials), Some(startup), true, true) =
            (id, region, credentials, startup, ok, bad_ok)
        else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        self.add_ingress(
            id,
            decl,
            IngressSpec::Kinesis(KinesisIngress {
                aws_region: region,
                aws_credentials: credentials,
                startup_position: startup,
                streams,
                client_config_properties: properties,
            }),
            bad_records,
            IngressLocation {
                spec: spec_loc,
                targets: target_locs,
                bad_records: bad_loc,
            },
        );
    }

    fn kinesis_startup(&mut self, node: &Node, path: &str) -> Option<KinesisStartupPosition> {
        let types = ["latest", "trim-horizon", "earliest", "at-timestamp", "date"];
        if node.scalar().is_some() {
            let t = self.choice(node, path, "startup position", &types)?;
            return match t.as_str() {
                "latest" => Some(KinesisStartupPosition::Latest),
                "trim-horizon" | "earliest" => Some(KinesisStartupPosition::TrimHorizon),
                _ => {
                    self.error(node.mark, path, format!("`{t}` needs a time; write it as a mapping with `type: {t}` and `timestamp`"));
                    None
                }
            };
        }
        let o = self.obj(node, path, &["type", "timestamp", "date"])?;
        let tnode = self.req(&o, "type")?;
        let t = self.choice(tnode, &o.field("type"), "startup position", &types)?;
        let what = format!("startup position `{t}`");
        match t.as_str() {
            "latest" => {
                self.only(&o, &["type"], &what);
                Some(KinesisStartupPosition::Latest)
            }
            "trim-horizon" | "earliest" => {
                self.only(&o, &["type"], &what);
                Some(KinesisStartupPosition::TrimHorizon)
            }
            _ => self.timestamp(&o).map(KinesisStartupPosition::AtTimestamp),
        }
    }

    fn kinesis_egress(&mut self, spec: &Node, path: &str, meta_id: Option<&(&Node, String)>) {
        let Some(o) = self.obj(
            spec,
            path,
            &[
                "id",
                "awsRegion",
                "awsCredentials",
                "streamName",
                "maxOutstandingRecords",
                "clientConfigProperties",
                "recordIds",
            ],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let region = self.aws_region(&o);
        let credentials = self.aws_credentials(&o);
        let stream = self.req_str(&o, "streamName");
        if let (Some(s), Some(n)) = (&stream, o.get("streamName")) {
            if s.starts_with("arn:") {
                self.error(
                    n.mark,
                    &o.field("streamName"),
                    "`streamName` is the short stream name, not an ARN",
                );
            }
        }
        let max = self.opt_uint(&o, "maxOutstandingRecords", 1000, 1);
        let properties = self.properties(&o, "clientConfigProperties");
        // statefun-rs extension: frame records with a deterministic id.
        let record_ids = match o.get("recordIds") {
            None => Some(false),
            Some(n) => self.boolean(n, &o.field("recordIds")),
        };
        let (Some((id, decl)), Some(region), Some(credentials), Some(stream), Some(record_ids)) =
            (id, region, credentials, stream, record_ids)
        else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        self.add_egress(
            id,
            decl,
            EgressSpec::Kinesis(KinesisEgress {
                aws_region: region,
                aws_credentials: credentials,
                stream_name: stream,
                max_outstanding_records: usize::try_from(max).unwrap_or(usize::MAX),
                client_config_properties: properties,
                record_ids,
            }),
            EgressLocation {
                spec: spec_loc,
                delivery_semantic: None,
            },
        );
    }

    // ----- development kinds -----------------------------------------------

    fn file_ingress(&mut self, spec: &Node, path: &str, meta_id: Option<&(&Node, String)>) {
        let Some(o) = self.obj(
            spec,
            path,
            &["id", "path", "valueType", "targets", "follow"],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let file = self.req_str(&o, "path");
        let value_type = self.req_typename(&o, "valueType");
        let targets = self.targets(&o);
        let follow = match o.get("follow") {
            None => Some(false),
            Some(n) => self.boolean(n, &o.field("follow")),
        };
        let (Some((id, decl)), Some(file), Some(value_type), Some((targets, locs)), Some(follow)) =
            (id, file, value_type, targets, follow)
        else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        self.add_ingress(
            id,
            decl,
            IngressSpec::File(FileIngress {
                path: file,
                value_type,
                targets,
                follow,
            }),
            None,
            IngressLocation {
                spec: spec_loc,
                targets: vec![locs],
                bad_records: None,
            },
        );
    }

    fn file_egress(&mut self, spec: &Node, path: &str, meta_id: Option<&(&Node, String)>) {
        let Some(o) = self.obj(spec, path, &["id", "path", "deliverySemantic"]) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let file = self.req_str(&o, "path");
        let mut ds_loc = None;
        let semantic = match o.get("deliverySemantic") {
            None => Some(FileDeliverySemantic::AtLeastOnce),
            Some(n) => {
                let p = o.field("deliverySemantic");
                ds_loc = Some(self.location(n.mark, &p));
                let (tnode, tpath) = if n.scalar().is_some() {
                    (Some(n), p)
                } else {
                    match self.obj(n, &p, &["type"]) {
                        Some(so) => (self.req(&so, "type"), so.field("type")),
                        None => (None, p),
                    }
                };
                tnode
                    .and_then(|t| {
                        self.choice(
                            t,
                            &tpath,
                            "delivery semantic",
                            &["at-least-once", "exactly-once"],
                        )
                    })
                    .map(|c| {
                        if c == "exactly-once" {
                            FileDeliverySemantic::ExactlyOnce
                        } else {
                            FileDeliverySemantic::AtLeastOnce
                        }
                    })
            }
        };
        let (Some((id, decl)), Some(file), Some(semantic)) = (id, file, semantic) else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        self.add_egress(
            id,
            decl,
            EgressSpec::File(FileEgress {
                path: file,
                delivery_semantic: semantic,
            }),
            EgressLocation {
                spec: spec_loc,
                delivery_semantic: ds_loc,
            },
        );
    }

    fn generator_ingress(&mut self, spec: &Node, path: &str, meta_id: Option<&(&Node, String)>) {
        let Some(o) = self.obj(
            spec,
            path,
            &[
                "id",
                "valueType",
                "targets",
                "keys",
                "rate",
                "count",
                "valueSize",
            ],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let value_type = self.req_typename(&o, "valueType");
        let targets = self.targets(&o);
        let keys = self.opt_uint(&o, "keys", 1000, 1);
        let count = self.opt_uint(&o, "count", 0, 0);
        let value_size = self.opt_uint(&o, "valueSize", 100, 0);
        let rate = match o.get("rate") {
            None => Some(0.0),
            Some(n) => {
                let f = o.field("rate");
                match n.scalar().map(|s| s.trim().parse::<f64>()) {
                    Some(Ok(r)) if r.is_finite() && r >= 0.0 => Some(r),
                    _ => {
                        self.error(
                            n.mark,
                            &f,
                            "expected messages per second: a number ≥ 0 (0 = as fast as possible)",
                        );
                        None
                    }
                }
            }
        };
        let (Some((id, decl)), Some(value_type), Some((targets, locs)), Some(rate)) =
            (id, value_type, targets, rate)
        else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        self.add_ingress(
            id,
            decl,
            IngressSpec::Generator(GeneratorIngress {
                value_type,
                targets,
                keys,
                rate,
                count,
                value_size: usize::try_from(value_size).unwrap_or(usize::MAX),
            }),
            None,
            IngressLocation {
                spec: spec_loc,
                targets: vec![locs],
                bad_records: None,
            },
        );
    }
}

/// Why `name` is not a legal Kafka topic name, if it is not.
fn kafka_topic_problem(name: &str) -> Option<String> {
    if name.len() > 249 {
        return Some(format!("topic name `{name}` is longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Some(format!("`{name}` is not a legal topic name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "topic name `{name}` contains `{c}`; Kafka allows only letters, digits, `.`, `_` and `-`"
        ));
    }
    None
}

/// Checks `arn:<partition>:kinesis:<region>:<account>:stream/<name>`; returns (region, name).
pub(crate) fn parse_kinesis_arn(arn: &str) -> Result<(&str, &str), String> {
    let shape = "expected `arn:aws:kinesis:<region>:<account>:stream/<name>`";
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Err(format!("malformed stream ARN `{arn}`: {shape}"));
    }
    let (partition, service, region, account, resource) =
        (parts[1], parts[2], parts[3], parts[4], parts[5]);
    if !(partition == "aws" || partition.starts_with("aws-")) {
        return Err(format!(
            "malformed stream ARN `{arn}`: unknown partition `{partition}`; {shape}"
        ));
    }
    if service != "kinesis" {
        return Err(format!(
            "malformed stream ARN `{arn}`: service `{service}` is not `kinesis`; {shape}"
        ));
    }
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "malformed stream ARN `{arn}`: `{region}` is not a region; {shape}"
        ));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "malformed stream ARN `{arn}`: the account `{account}` must be 12 digits; {shape}"
        ));
    }
    let Some(name) = resource.strip_prefix("stream/") else {
        return Err(format!(
            "malformed stream ARN `{arn}`: the resource must be `stream/<name>`; {shape}"
        ));
    };
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "malformed stream ARN `{arn}`: stream name `{name}` must be 1-128 letters, digits, `_`, `.` or `-`"
        ));
    }
    Ok((region, name))
}

/// Records `id` (of an ingress or egress) as declared `here`. Returns false,
/// with an error pointing at the first declaration, if it already was: ids
/// name the ingress/egress at run time, so two with one id would be ambiguous.
fn claim_id(
    diags: &mut Vec<Diagnostic>,
    ids: &mut HashMap<TypeName, Location>,
    kind: &str,
    id: &TypeName,
    here: Location,
) -> bool {
    if let Some(first) = ids.get(id) {
        let msg = format!(
            "duplicate {kind} id `{id}` (first declared in document {} at line {})",
            first.document,
            first.line.unwrap_or(0)
        );
        diags.push(Diagnostic::at(Severity::Error, &here, msg));
        return false;
    }
    ids.insert(id.clone(), here);
    true
}
