//! The kinds a module document can declare, and the spec parts several of them share.
//!
//! Each family of kinds reads, defaults and checks its own `spec` in a module of its own, so
//! adding a connector is one new file here plus its registration in this one: a variant of
//! `Kind`, its role, its row in `KINDS` and its arm in `Loader::spec`.

mod endpoint;
mod file;
mod generator;
mod kafka;
mod kinesis;
mod legacy;

use statefun_sdk::TypeName;

use crate::diag::Location;
use crate::fields::{expected_one_of, index, Obj};
use crate::load::{Declared, Loader};
use crate::model::{BadRecordPolicy, DeadLetter, FunctionPattern, RemoteMetadata};
use crate::time::parse_timestamp;
use crate::yaml::{Mark, Node, Value};
use legacy::LEGACY_KINDS;

/// A legacy document's `meta.id` node and its path, when the spec comes from
/// one (its id may be given there instead of in `spec.id`).
pub(crate) type MetaId<'a> = Option<&'a (&'a Node, String)>;

/// The kinds a document (or a legacy `meta.type`) can declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
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

impl Loader<'_> {
    // ----- registry --------------------------------------------------------

    /// Maps a kind name to a [`Kind`]; legacy names are accepted only in the legacy format.
    pub(crate) fn resolve_kind(
        &mut self,
        text: &str,
        mark: Mark,
        path: &str,
        legacy: bool,
    ) -> Option<Kind> {
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

    /// Reads the `spec` of one `kind`; every kind's reader is registered here.
    pub(crate) fn spec(
        &mut self,
        kind: Kind,
        spec: &Node,
        path: &str,
        meta_id: Option<(&Node, String)>,
    ) {
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

    // ----- shared ingress/egress parts -------------------------------------

    /// The id: `spec.id`, or the legacy `meta.id`.
    fn id(&mut self, o: &Obj<'_>, meta_id: MetaId<'_>) -> Option<(TypeName, Declared)> {
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

    /// `remoteMetadata` (statefun-rs extension): `none` (the default) or
    /// `wrap`. An invalid value is reported and read as the default (the
    /// module then fails to load).
    fn remote_metadata(&mut self, o: &Obj<'_>) -> RemoteMetadata {
        let Some(node) = o.get("remoteMetadata") else {
            return RemoteMetadata::None;
        };
        let path = o.field("remoteMetadata");
        match self
            .choice(node, &path, "remoteMetadata", &["none", "wrap"])
            .as_deref()
        {
            Some("wrap") => RemoteMetadata::Wrap,
            _ => RemoteMetadata::None,
        }
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
}
