//! What the engine and the CLI ask of a loaded module: endpoint lookup, target checks,
//! the checkpoint-interval check, the `validate` summary and the `describe` routing table.

use std::fmt::Write as _;
use std::time::Duration;

use statefun_sdk::TypeName;

use crate::diag::{Diagnostic, Location, Severity};
use crate::model::*;
use crate::time::format_duration;

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

    /// Ingress targets that nothing serves, as errors (one per target entry).
    ///
    /// A target is served when an endpoint pattern covers it or `is_served` says a function
    /// registered in Rust has that type. For a namespace target `ns/*`, it is served when an
    /// endpoint lies in `ns` or `is_served` answers true for the type name `ns/*`.
    /// `statefun validate`, which cannot see Rust functions, shows these as warnings
    /// ([`Diagnostic::with_severity`]); `run` refuses to start on them.
    pub fn check_targets(&self, is_served: &dyn Fn(&TypeName) -> bool) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (i, ingress) in self.ingresses.iter().enumerate() {
            for (r, route) in ingress.routes().iter().enumerate() {
                for (t, target) in route.targets.iter().enumerate() {
                    let served = match target {
                        FunctionPattern::Exact(ty) => {
                            self.endpoint_for(ty).is_some() || is_served(ty)
                        }
                        FunctionPattern::Namespace(ns) => {
                            self.endpoints.iter().any(|e| e.functions.namespace() == ns)
                                || TypeName::new(ns, "*").is_ok_and(|ty| is_served(&ty))
                        }
                    };
                    if served {
                        continue;
                    }
                    let loc = self
                        .locations
                        .ingresses
                        .get(i)
                        .and_then(|l| l.targets.get(r))
                        .and_then(|l| l.get(t))
                        .cloned()
                        .unwrap_or_else(|| Location {
                            file: self.file.clone(),
                            ..Location::default()
                        });
                    out.push(Diagnostic::at(
                        Severity::Error,
                        &loc,
                        format!(
                            "target `{target}` of ingress `{}` is served by no endpoint and by no function registered in Rust; its records would be dropped",
                            ingress.id
                        ),
                    ));
                }
            }
        }
        out
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
    /// egresses; endpoints. Secrets are shown as `***`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
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
            let _ = writeln!(s, "  {} ({})", ingress.id, describe_ingress(&ingress.spec));
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
            let _ = writeln!(s, "  {} ({})", egress.id, describe_egress(&egress.spec));
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
        for e in &self.endpoints {
            let t = &e.transport;
            let _ = writeln!(
                s,
                "  {} → {} (max batch {}, call timeout {}, connect timeout {}{})",
                e.functions,
                e.url_path_template,
                e.max_num_batch_requests,
                format_duration(t.call_timeout),
                format_duration(t.connect_timeout),
                if t.tls.client_key_password.is_some() {
                    ", client_key_password ***"
                } else {
                    ""
                }
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
