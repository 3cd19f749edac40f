//! What the engine and the CLI ask of a loaded module: endpoint lookup, target checks,
//! the checkpoint-interval check, the `validate` summary and the `describe` routing table.

use std::fmt::Write as _;
use std::time::Duration;

use statefun_sdk::TypeName;

use crate::diag::{Diagnostic, Location, Severity};
use crate::model::*;
use crate::time::format_duration;

/// Why an ingress target resolves to no function type ([`Module::resolve_target`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetProblem {
    /// No endpoint covers it and no Rust function has its type (or, for `ns/*`, no type
    /// of the namespace is known).
    Unserved,
    /// `ns/*`, where endpoint number `endpoint` (in module order) serves `ns` by
    /// namespace: the remote function types cannot be listed.
    ByNamespace {
        /// Index into [`Module::endpoints`].
        endpoint: usize,
    },
}

impl TargetProblem {
    /// Whether the problem holds whatever the binary running the module registers in
    /// Rust: `validate` reports these as errors, [`TargetProblem::Unserved`] as warnings.
    pub fn is_definite(&self) -> bool {
        matches!(self, TargetProblem::ByNamespace { .. })
    }
}

impl Module {
    /// The endpoint serving `function_type`: an exact pattern wins over a namespace pattern.
    pub fn endpoint_for(&self, function_type: &TypeName) -> Option<&HttpEndpoint> {
        self.endpoints
            .iter()
            .find(|e| matches!(&e.functions, FunctionPattern::Exact(t) if t == function_type))
            .or_else(|| {
                self.endpoints.iter().find(|e| {
                    matches!(&e.functions, FunctionPattern::Namespace(ns) if ns == function_type.namespace())
                })
            })
    }

    /// The function types the records of an ingress target go to, given the function types
    /// registered in Rust (`rust`): the one resolution `validate` and `run` share.
    ///
    /// - `ns/name` goes to that type when an endpoint covers it or a Rust function has it.
    /// - `ns/*` fans out to every type of `ns` the app can name: the Rust functions of `ns`
    ///   and the types endpoints declare exactly (`functions: ns/name`), sorted. When an
    ///   endpoint serves `ns` by namespace (`functions: ns/*`) there is no such list: a
    ///   remote server's functions are known only to the server (StateFun's protocol has no
    ///   way to ask), so the target is refused ([`TargetProblem::ByNamespace`]) rather than
    ///   fanned out to the Rust types alone and silently missing the remote ones. Upstream
    ///   StateFun has no fan-out at all: it would address a function literally named `*`.
    ///
    /// ```
    /// use statefun_module::{load_str, FunctionPattern, TargetProblem, TypeName};
    /// let m = load_str("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/cart\n  urlPathTemplate: http://f/{function.name}\n", "m.yaml").unwrap();
    /// let rust = [TypeName::parse("shop/audit").unwrap()];
    /// let all = FunctionPattern::parse("shop/*").unwrap();
    /// let types: Vec<String> = m.resolve_target(&all, &rust).unwrap().iter().map(|t| t.to_string()).collect();
    /// assert_eq!(types, ["shop/audit", "shop/cart"]);
    /// let other = FunctionPattern::parse("shop/user").unwrap();
    /// assert_eq!(m.resolve_target(&other, &rust), Err(TargetProblem::Unserved));
    /// ```
    pub fn resolve_target(
        &self,
        target: &FunctionPattern,
        rust: &[TypeName],
    ) -> Result<Vec<TypeName>, TargetProblem> {
        match target {
            FunctionPattern::Exact(t) => {
                if rust.contains(t) || self.endpoint_for(t).is_some() {
                    Ok(vec![t.clone()])
                } else {
                    Err(TargetProblem::Unserved)
                }
            }
            FunctionPattern::Namespace(ns) => {
                let by_namespace = self
                    .endpoints
                    .iter()
                    .position(|e| matches!(&e.functions, FunctionPattern::Namespace(n) if n == ns));
                if let Some(endpoint) = by_namespace {
                    return Err(TargetProblem::ByNamespace { endpoint });
                }
                let mut types: Vec<TypeName> = rust
                    .iter()
                    .filter(|t| t.namespace() == ns)
                    .cloned()
                    .chain(self.endpoints.iter().filter_map(|e| match &e.functions {
                        FunctionPattern::Exact(t) if t.namespace() == ns => Some(t.clone()),
                        _ => None,
                    }))
                    .collect();
                types.sort();
                types.dedup();
                if types.is_empty() {
                    Err(TargetProblem::Unserved)
                } else {
                    Ok(types)
                }
            }
        }
    }

    /// Every ingress target [`Module::resolve_target`] refuses, one diagnostic per target
    /// entry, at the entry's file and line: what `run` refuses to start on.
    ///
    /// `statefun validate`, which cannot see the Rust functions of the binary that will run
    /// the module, shows [`TargetProblem::Unserved`] ones as warnings
    /// ([`Diagnostic::with_severity`]; see [`TargetProblem::is_definite`]).
    pub fn check_targets(&self, rust: &[TypeName]) -> Vec<(Diagnostic, TargetProblem)> {
        let mut out = Vec::new();
        for (i, ingress) in self.ingresses.iter().enumerate() {
            for (r, route) in ingress.routes().iter().enumerate() {
                for (t, target) in route.targets.iter().enumerate() {
                    let Err(problem) = self.resolve_target(target, rust) else {
                        continue;
                    };
                    let loc = self
                        .locations
                        .ingresses
                        .get(i)
                        .and_then(|l| l.targets.get(r))
                        .and_then(|l| l.get(t))
                        .cloned()
                        .unwrap_or_else(|| Location {
                            file: ingress.file.clone(),
                            ..Location::default()
                        });
                    let message = self.target_problem(&ingress.id, target, &problem);
                    out.push((Diagnostic::at(Severity::Error, &loc, message), problem));
                }
            }
        }
        out
    }

    /// What is wrong with `target` of ingress `ingress`, and what to do.
    pub fn target_problem(
        &self,
        ingress: &TypeName,
        target: &FunctionPattern,
        problem: &TargetProblem,
    ) -> String {
        match problem {
            TargetProblem::Unserved => format!(
                "target `{target}` of ingress `{ingress}` is served by no endpoint and by no function registered in Rust; its records would be dropped"
            ),
            TargetProblem::ByNamespace { endpoint } => {
                let ns = target.namespace();
                let at = self
                    .locations
                    .endpoints
                    .get(*endpoint)
                    .map(|l| match l.line {
                        Some(line) => format!(" at {}:{line}", l.file),
                        None => format!(" in {}", l.file),
                    })
                    .unwrap_or_default();
                format!(
                    "target `{target}` of ingress `{ingress}`: namespace `{ns}` is served by the endpoint{at} (`functions: {ns}/*`), \
                     and which functions a remote server binds is known only to the server, so `{ns}/*` cannot be fanned out \
                     to them; list the function types the records should reach (`targets: [{ns}/<name>, ...]`)"
                )
            }
        }
    }

    /// Errors for exactly-once Kafka egresses whose transaction timeout is not longer than
    /// the checkpoint interval (transactions would time out before their checkpoint completes).
    pub fn check_checkpoint_interval(&self, interval: Duration) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (i, egress) in self.egresses.iter().enumerate() {
            let EgressSpec::Kafka(k) = &egress.spec else {
                continue;
            };
            let Some(timeout) = k.transaction_timeout() else {
                continue;
            };
            if timeout > interval {
                continue;
            }
            let loc = self
                .locations
                .egresses
                .get(i)
                .map(|l| {
                    l.delivery_semantic
                        .clone()
                        .unwrap_or_else(|| l.spec.clone())
                })
                .unwrap_or_else(|| Location {
                    file: self.file.clone(),
                    ..Location::default()
                });
            out.push(Diagnostic::at(
                Severity::Error,
                &loc,
                format!(
                    "egress `{}`: transaction timeout {} is not longer than the checkpoint interval {}; raise it above the interval (and at most 15min)",
                    egress.id,
                    format_duration(timeout),
                    format_duration(interval)
                ),
            ));
        }
        out
    }

    /// The summary `statefun validate` prints: ingresses → topics/streams → valueType → targets;
    /// egresses; endpoints. Secrets are shown as `***`. The first line names the module's
    /// file; for a module of several files it names them all, and every ingress, egress and
    /// endpoint line ends in `[<file>]`, the file that declares it.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let several = self.files.len() > 1;
        let from = |file: Option<&str>| match file {
            Some(f) if several => format!(" [{f}]"),
            _ => String::new(),
        };
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let _ = writeln!(
            s,
            "{}: {}, {}, {}",
            self.file,
            plural(self.ingresses.len(), "ingress", "ingresses"),
            plural(self.egresses.len(), "egress", "egresses"),
            plural(self.endpoints.len(), "endpoint", "endpoints")
        );
        if !self.ingresses.is_empty() {
            s.push_str("ingresses:\n");
        }
        for ingress in &self.ingresses {
            let _ = writeln!(
                s,
                "  {} ({}){}",
                ingress.id,
                describe_ingress(&ingress.spec),
                from(Some(&ingress.file))
            );
            match &ingress.spec {
                IngressSpec::Kafka(k) => {
                    for t in &k.topics {
                        let _ = writeln!(
                            s,
                            "    topic {} → {} → {}",
                            t.topic,
                            t.value_type,
                            targets(&t.targets)
                        );
                    }
                    write_properties(&mut s, "    ", &k.properties);
                }
                IngressSpec::Kinesis(k) => {
                    for st in &k.streams {
                        let arn = st
                            .arn
                            .as_ref()
                            .map(|a| format!(" ({a})"))
                            .unwrap_or_default();
                        let _ = writeln!(
                            s,
                            "    stream {}{arn} → {} → {}",
                            st.stream,
                            st.value_type,
                            targets(&st.targets)
                        );
                    }
                    write_properties(&mut s, "    ", &k.client_config_properties);
                }
                IngressSpec::File(f) => {
                    let _ = writeln!(
                        s,
                        "    {} → {} → {}",
                        if f.path == "-" { "stdin" } else { &f.path },
                        f.value_type,
                        targets(&f.targets)
                    );
                }
                IngressSpec::Generator(g) => {
                    let _ = writeln!(
                        s,
                        "    generated → {} → {}",
                        g.value_type,
                        targets(&g.targets)
                    );
                }
            }
        }
        if !self.egresses.is_empty() {
            s.push_str("egresses:\n");
        }
        for egress in &self.egresses {
            let _ = writeln!(
                s,
                "  {} ({}){}",
                egress.id,
                describe_egress(&egress.spec),
                from(Some(&egress.file))
            );
            match &egress.spec {
                EgressSpec::Kafka(k) => write_properties(&mut s, "    ", &k.properties),
                EgressSpec::Kinesis(k) => {
                    write_properties(&mut s, "    ", &k.client_config_properties)
                }
                EgressSpec::File(_) => {}
            }
        }
        if !self.endpoints.is_empty() {
            s.push_str("endpoints:\n");
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let t = &e.transport;
            let declared = self.locations.endpoints.get(i).map(|l| l.file.as_str());
            let _ = writeln!(
                s,
                "  {} → {} (max batch {}, call timeout {}, connect timeout {}{}){}",
                e.functions,
                e.url_path_template,
                e.max_num_batch_requests,
                format_duration(t.call_timeout),
                format_duration(t.connect_timeout),
                if t.tls.client_key_password.is_some() {
                    ", client_key_password ***"
                } else {
                    ""
                },
                from(declared)
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "{w}");
        }
        s
    }

    /// The routing table `statefun describe` prints: one row per (ingress, source, target),
    /// with the endpoint that serves the target (or a note that a Rust function must serve it).
    pub fn routing_table(&self) -> String {
        let mut rows: Vec<[String; 5]> = vec![[
            "INGRESS".into(),
            "SOURCE".into(),
            "VALUE TYPE".into(),
            "TARGET".into(),
            "SERVED BY".into(),
        ]];
        for ingress in &self.ingresses {
            let sources: Vec<String> = match &ingress.spec {
                IngressSpec::Kafka(k) => k
                    .topics
                    .iter()
                    .map(|t| format!("kafka topic {}", t.topic))
                    .collect(),
                IngressSpec::Kinesis(k) => k
                    .streams
                    .iter()
                    .map(|s| format!("kinesis stream {}", s.stream))
                    .collect(),
                IngressSpec::File(f) => vec![if f.path == "-" {
                    "stdin".to_string()
                } else {
                    format!("file {}", f.path)
                }],
                IngressSpec::Generator(_) => vec!["generator".to_string()],
            };
            for (route, source) in ingress.routes().iter().zip(sources) {
                for target in &route.targets {
                    let served = match target {
                        FunctionPattern::Exact(t) => self
                            .endpoint_for(t)
                            .map(|e| e.url_for(t))
                            .unwrap_or_else(|| {
                                "(no endpoint: a Rust function, if registered)".to_string()
                            }),
                        FunctionPattern::Namespace(ns) => self
                            .endpoints
                            .iter()
                            .find(|e| e.functions.namespace() == ns)
                            .map(|e| e.url_path_template.clone())
                            .unwrap_or_else(|| {
                                "(no endpoint: a Rust function, if registered)".to_string()
                            }),
                    };
                    rows.push([
                        ingress.id.to_string(),
                        source.clone(),
                        route.value_type.to_string(),
                        target.to_string(),
                        served,
                    ]);
                }
            }
        }
        let mut widths = [0usize; 5];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut s = String::new();
        for row in &rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }
}

fn targets(t: &[FunctionPattern]) -> String {
    t.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_properties(s: &mut String, indent: &str, p: &Properties) {
    for (k, v) in p.redacted() {
        let _ = writeln!(s, "{indent}{k} = {v}");
    }
}

fn describe_region(r: &AwsRegion) -> String {
    match r {
        AwsRegion::Default => "default region".into(),
        AwsRegion::Specific(id) => format!("region {id}"),
        AwsRegion::CustomEndpoint { endpoint, id } => format!("region {id} at {endpoint}"),
    }
}

fn describe_credentials(c: &AwsCredentials) -> String {
    match c {
        AwsCredentials::Default => "default credentials".into(),
        AwsCredentials::Basic { access_key_id, .. } => {
            format!("basic credentials {access_key_id}/***")
        }
        AwsCredentials::Profile { name, path } => match path {
            Some(p) => format!("profile {name} in {p}"),
            None => format!("profile {name}"),
        },
    }
}

fn describe_ingress(spec: &IngressSpec) -> String {
    match spec {
        IngressSpec::Kafka(k) => {
            let start = match &k.startup_position {
                KafkaStartupPosition::Latest => "latest".to_string(),
                KafkaStartupPosition::Earliest => "earliest".to_string(),
                KafkaStartupPosition::GroupOffsets => "group-offsets".to_string(),
                KafkaStartupPosition::SpecificOffsets(o) => {
                    format!("{} specific offsets", o.len())
                }
                KafkaStartupPosition::AtTimestamp(t) => format!("at {t}"),
            };
            let reset = match k.auto_offset_reset {
                AutoOffsetReset::Latest => "latest",
                AutoOffsetReset::Earliest => "earliest",
            };
            format!(
                "kafka {}, group {}, startup {start}, auto offset reset {reset}",
                k.address, k.consumer_group_id
            )
        }
        IngressSpec::Kinesis(k) => {
            let start = match &k.startup_position {
                KinesisStartupPosition::Latest => "latest".to_string(),
                KinesisStartupPosition::TrimHorizon => "trim-horizon".to_string(),
                KinesisStartupPosition::AtTimestamp(t) => format!("at {t}"),
            };
            format!(
                "kinesis, {}, {}, startup {start}",
                describe_region(&k.aws_region),
                describe_credentials(&k.aws_credentials)
            )
        }
        IngressSpec::File(f) => format!(
            "file {}{}",
            if f.path == "-" { "stdin" } else { &f.path },
            if f.follow { ", follow" } else { "" }
        ),
        IngressSpec::Generator(g) => format!(
            "generator, {} keys, {} msg/s, {} messages, {} bytes each",
            g.keys,
            if g.rate == 0.0 {
                "unlimited".to_string()
            } else {
                g.rate.to_string()
            },
            if g.count == 0 {
                "unbounded".to_string()
            } else {
                g.count.to_string()
            },
            g.value_size
        ),
    }
}

fn describe_egress(spec: &EgressSpec) -> String {
    match spec {
        EgressSpec::Kafka(k) => {
            let ds = match k.delivery_semantic {
                KafkaDeliverySemantic::ExactlyOnce {
                    transaction_timeout,
                } => format!(
                    "exactly-once, transaction timeout {}",
                    format_duration(transaction_timeout)
                ),
                KafkaDeliverySemantic::AtLeastOnce => "at-least-once".into(),
                KafkaDeliverySemantic::None => "no delivery guarantee".into(),
            };
            format!("kafka {}, {ds}", k.address)
        }
        EgressSpec::Kinesis(k) => format!(
            "kinesis stream {}, {}, {}, max outstanding {}{}",
            k.stream_name,
            describe_region(&k.aws_region),
            describe_credentials(&k.aws_credentials),
            k.max_outstanding_records,
            if k.record_ids { ", record ids" } else { "" }
        ),
        EgressSpec::File(f) => format!(
            "file {}, {}",
            if f.path == "-" { "stdout" } else { &f.path },
            match f.delivery_semantic {
                FileDeliverySemantic::AtLeastOnce => "at-least-once",
                FileDeliverySemantic::ExactlyOnce => "exactly-once",
            }
        ),
    }
}
