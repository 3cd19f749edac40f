//! `io.statefun.kafka.v1/ingress`, `io.statefun.kafka.v1/egress` and our
//! `io.statefun-rs.kafka.v1/cluster`: topics, startup positions and offsets, delivery
//! semantics, and the cluster definitions that ingresses and egresses may share.
//!
//! A `cluster:` reference is only recorded here: a cluster may be declared after its users,
//! so `load` resolves the references once every document is read.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::MetaId;
use crate::diag::Location;
use crate::fields::{index, join, Obj};
use crate::load::Loader;
use crate::model::{
    AutoOffsetReset, EgressLocation, EgressSpec, IngressLocation, IngressSpec, KafkaCluster,
    KafkaDeliverySemantic, KafkaEgress, KafkaIngress, KafkaStartupPosition, KafkaTopic,
    PartitionOffset,
};
use crate::time::{format_duration, parse_duration};
use crate::yaml::{Node, Value};

/// The broker default of `transaction.max.timeout.ms`.
const BROKER_MAX_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl Loader<'_> {
    pub(super) fn kafka_ingress(&mut self, spec: &Node, path: &str, meta_id: MetaId<'_>) {
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
                "remoteMetadata",
                "cluster",
            ],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let (bad_records, bad_loc, bad_ok) = self.bad_records(&o);
        let remote_metadata = self.remote_metadata(&o);
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
            remote_metadata,
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

    pub(super) fn kafka_egress(&mut self, spec: &Node, path: &str, meta_id: MetaId<'_>) {
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
    pub(super) fn kafka_cluster(&mut self, spec: &Node, path: &str) {
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
            let first = self.line_of(first);
            self.error(
                id_node,
                &o.field("id"),
                format!("Kafka cluster `{id}` is declared twice (first at {first})"),
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
