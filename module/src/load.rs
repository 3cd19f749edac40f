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
    IngressSpec, Module, Properties, RemoteMetadata,
};
use crate::yaml::{parse_documents, Mark, Node, Value};

/// Where the id of an ingress or egress was written (for duplicate-id messages).
pub(crate) struct Declared {
    pub(crate) id_mark: Mark,
    pub(crate) id_field: String,
}

/// The state of one load: the module so far and every diagnostic.
pub(crate) struct Loader<'f> {
    /// The file being read (items and diagnostics record it).
    pub(crate) file: &'f str,
    /// Whether the module is loaded from several files.
    several: bool,
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
    load_all(&[(file, text)])
}

/// Loads several module files as one module: `sources` are (file name, text) pairs, in
/// order. It is one walk over every document of every file, so ids are claimed, and the
/// checks that need the whole module (endpoint overlap, cluster references, dead-letter
/// egresses) are made, across files exactly as within one; each item records the file that
/// declares it, and each diagnostic names its own file.
pub(crate) fn load_all(sources: &[(&str, &str)]) -> Result<Module, Diagnostics> {
    let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
    let mut l = Loader {
        file: names.first().copied().unwrap_or_default(),
        several: sources.len() > 1,
        document: 0,
        diags: Vec::new(),
        module: Module {
            file: names.join(", "),
            files: names.iter().map(ToString::to_string).collect(),
            ..Module::default()
        },
        ingress_ids: HashMap::new(),
        egress_ids: HashMap::new(),
        cluster_ids: HashMap::new(),
        cluster_refs: Vec::new(),
    };
    for &(file, text) in sources {
        l.file = file;
        l.document = 0;
        let first_diag = l.diags.len();
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
        if docs.iter().all(|d| d.root.is_none())
            && !l.diags[first_diag..].iter().any(Diagnostic::is_error)
        {
            let message = if l.several {
                "the file is empty: it declares no endpoints, ingresses or egresses"
            } else {
                "the module is empty: it declares no endpoints, ingresses or egresses"
            };
            l.diags.push(Diagnostic {
                severity: Severity::Warning,
                file: file.to_string(),
                document: 0,
                line: None,
                column: None,
                field: String::new(),
                message: message.to_string(),
            });
        }
    }
    l.document = 0;
    l.check_endpoint_overlap();
    l.resolve_clusters();
    l.check_dead_letters();
    let mut diags = l.diags;
    // Files in the order given, then source order within each.
    let file_index = |d: &Diagnostic| names.iter().position(|n| *n == d.file);
    diags.sort_by_key(|d| {
        (
            file_index(d),
            d.document,
            d.line.unwrap_or(0),
            d.column.unwrap_or(0),
        )
    });
    if diags.iter().any(Diagnostic::is_error) {
        Err(Diagnostics(diags))
    } else {
        let mut module = l.module;
        module.warnings = diags;
        Ok(module)
    }
}

/// How a message at a location in `here` names `first`, where something was declared
/// before: `in document 2 at line 7` in the same file, `at a.yaml:7, document 2` in another.
pub(crate) fn declared_at(here: &str, first: &Location) -> String {
    let line = first.line.unwrap_or(0);
    if first.file == here {
        format!("in document {} at line {line}", first.document)
    } else {
        format!("at {}:{line}, document {}", first.file, first.document)
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

    /// How a message about the current file names the line of `first`: `line 3` when it
    /// is in this file, `a.yaml:3` when in another.
    pub(crate) fn line_of(&self, first: &Location) -> String {
        let line = first.line.unwrap_or(0);
        if first.file == self.file {
            format!("line {line}")
        } else {
            format!("{}:{line}", first.file)
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
        remote_metadata: RemoteMetadata,
        location: IngressLocation,
    ) {
        let here = self.location(decl.id_mark, &decl.id_field);
        if !claim_id(&mut self.diags, &mut self.ingress_ids, "ingress", &id, here) {
            return;
        }
        self.module.ingresses.push(Ingress {
            id,
            file: self.file.to_string(),
            spec,
            bad_records,
            remote_metadata,
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
        self.module.egresses.push(Egress {
            id,
            file: self.file.to_string(),
            spec,
        });
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
                    "`{}` is already served by the endpoint declared {}; each function type must have one endpoint",
                    e.functions, declared_at(&locs[i].file, &locs[j])
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
                    let at = if locs[j].file == locs[i].file {
                        format!(
                            "document {}, line {}",
                            locs[j].document,
                            locs[j].line.unwrap_or(0)
                        )
                    } else {
                        format!(
                            "{}:{}, document {}",
                            locs[j].file,
                            locs[j].line.unwrap_or(0),
                            locs[j].document
                        )
                    };
                    found.push((Severity::Warning, i, j, format!(
                        "`{t}` is also covered by `{}` ({at}); this more specific endpoint wins for it",
                        eps[j].functions
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
            "duplicate {kind} id `{id}` (first declared {})",
            declared_at(&here.file, first)
        );
        diags.push(Diagnostic::at(Severity::Error, &here, msg));
        return false;
    }
    ids.insert(id.clone(), here);
    true
}
