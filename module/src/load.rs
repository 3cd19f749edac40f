//! Turning YAML documents into a validated [`Module`], collecting every problem on the way.
//!
//! This module walks the documents, claims ingress and egress ids, and runs the checks that
//! need the whole file (endpoint overlap, Kafka cluster references, dead-letter egresses);
//! what each kind's `spec` may hold is read and checked in [`crate::kinds`], on the field
//! readers of [`crate::fields`].

use std::collections::HashMap;

use statefun_sdk::TypeName;

use crate::diag::{Diagnostic, Diagnostics, Location, Severity};
use crate::fields::expected_one_of;
use crate::model::{
    BadRecordPolicy, Egress, EgressLocation, EgressSpec, FunctionPattern, Ingress, IngressLocation,
    IngressSpec, Module, Properties,
};
use crate::yaml::{parse_documents, Mark, Node, Value};

/// Where the id of an ingress or egress was written (for duplicate-id messages).
pub(crate) struct Declared {
    pub(crate) id_mark: Mark,
    pub(crate) id_field: String,
}

/// The state of one load: the module so far and every diagnostic.
pub(crate) struct Loader<'f> {
    pub(crate) file: &'f str,
    document: usize,
    diags: Vec<Diagnostic>,
    pub(crate) module: Module,
    ingress_ids: HashMap<TypeName, Location>,
    egress_ids: HashMap<TypeName, Location>,
    /// Declared Kafka clusters: where each id was declared.
    pub(crate) cluster_ids: HashMap<String, Location>,
    /// `cluster:` references, resolved once every document is read (a cluster may be
    /// declared after its users): (ingress or egress id, is an ingress, where).
    pub(crate) cluster_refs: Vec<(TypeName, bool, Location)>,
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
    pub(crate) fn location(&self, mark: Mark, field: &str) -> Location {
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

    pub(crate) fn error(&mut self, mark: Mark, field: &str, message: impl Into<String>) {
        self.report(Severity::Error, mark, field, message);
    }

    pub(crate) fn warn(&mut self, mark: Mark, field: &str, message: impl Into<String>) {
        self.report(Severity::Warning, mark, field, message);
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

    // ----- ids -------------------------------------------------------------

    pub(crate) fn add_ingress(
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

    pub(crate) fn add_egress(
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

    // ----- checks across documents -----------------------------------------

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
