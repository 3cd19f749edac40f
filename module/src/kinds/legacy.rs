//! The legacy single-document `version: "3.0"` format.
//!
//! Its `module.spec` lists endpoints, ingresses and egresses, each as a `meta` (type, id) and a
//! `spec`; the type names map onto the kinds of the `kind:` format, so each `spec` is read by
//! the same code in both formats.

use crate::fields::index;
use crate::load::Loader;
use crate::yaml::{Node, Value};

use super::{Kind, Role};

/// Names the legacy `version: "3.0"` format uses, and what they mean now.
pub(super) const LEGACY_KINDS: &[(&str, Kind)] = &[
    ("io.statefun.kafka/ingress", Kind::KafkaIngress),
    ("io.statefun.kafka/egress", Kind::KafkaEgress),
    ("io.statefun.kinesis/ingress", Kind::KinesisIngress),
    ("io.statefun.kinesis/egress", Kind::KinesisEgress),
    ("io.statefun.endpoints/http", Kind::EndpointV1),
    ("http", Kind::EndpointV1),
];

impl Loader<'_> {
    pub(crate) fn legacy(&mut self, root: &Node) {
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
}
