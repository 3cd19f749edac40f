//! Ingress sources as timely input operators, and the router that turns
//! their records into messages for function instances.

use std::sync::Arc;
use std::time::Duration;

use statefun_connectors::{RecordKey, SourceRecord, SourceStatus};
use statefun_sdk::proto::ingress::IngressRecord;
use statefun_sdk::{Address, TypeName, TypedValue};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, Stream};

use super::checkpointing::SharedCheckpoint;
use crate::app::{Application, IngressPlan, RoutePlan};
use crate::clock::Clock;
use crate::dead_letter::{BadRecord, BadRecords, DEAD_LETTER_FUNCTION};
use crate::envelope::{Envelope, Metadata};
use crate::shared::{Metrics, RateLimit, Shared};

/// Turns source records into envelopes: one per target of the record's route,
/// with the record key as the function id.
///
/// Records that cannot become messages (no key, an empty key or one that is
/// not UTF-8, no value) follow the ingress's [`BadRecords`] policy: skipped,
/// counted and logged; the job fails naming the record; or the record goes
/// to a dead-letter egress — never a crash loop.
pub(crate) struct Router {
    ingress: String,
    routes: Vec<RoutePlan>,
    policy: BadRecords,
    /// The built-in forwarding instance dead letters are addressed to.
    dead_letter: Option<Address>,
    bad_key: RateLimit,
    no_value: RateLimit,
    rejected: RateLimit,
    bad_route: RateLimit,
    failure: Option<String>,
}

/// What became of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Messages for its targets.
    Delivered,
    /// Skipped as bad.
    Skipped,
    /// Bad, and sent to the dead-letter egress.
    DeadLettered,
}

impl Router {
    pub(crate) fn new(plan: &IngressPlan) -> Self {
        Router::for_routes(&plan.id, plan.routes.clone(), plan.bad_records.clone())
    }

    /// A router for ingress `id` without a source of its own: a host stream
    /// ([`super::host_ingress`]) is routed by the same code as module ingresses.
    pub(crate) fn for_routes(id: &TypeName, routes: Vec<RoutePlan>, policy: BadRecords) -> Self {
        let dead_letter = match &policy {
            BadRecords::DeadLetter(d) => TypeName::parse(DEAD_LETTER_FUNCTION)
                .ok()
                .map(|t| Address::new(t, d.egress.to_string())),
            _ => None,
        };
        Router {
            ingress: id.to_string(),
            routes,
            policy,
            dead_letter,
            bad_key: RateLimit::default(),
            no_value: RateLimit::default(),
            rejected: RateLimit::default(),
            bad_route: RateLimit::default(),
            failure: None,
        }
    }

    /// Why the job must stop, if a bad record met the `fail` policy.
    pub(crate) fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }

    /// Applies the bad-record policy to a record that cannot become a message.
    fn bad(&mut self, record: Bad, out: &mut impl FnMut(Envelope)) -> Routed {
        let Bad {
            kind,
            why,
            key,
            value,
            metadata,
        } = record;
        let limit = match kind {
            BadKind::Key => &mut self.bad_key,
            BadKind::Value => &mut self.no_value,
            BadKind::Rejected => &mut self.rejected,
        };
        // A dead letter says where its record was read; a host record without
        // metadata cannot (host ingresses refuse the dead-letter policy), so it
        // is skipped.
        match (&self.policy, &self.dead_letter, metadata.get()) {
            (BadRecords::DeadLetter(plan), Some(target), Some(record)) => {
                let value = plan.record(&BadRecord {
                    ingress: &self.ingress,
                    why: &why,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    metadata: &record,
                });
                if let Some(n) = limit.hit() {
                    tracing::warn!(ingress = %self.ingress, metadata = ?&*record, dead_letter = %plan.egress, dead_lettered = n,
                        "record sent to the dead-letter egress: {why}");
                }
                out(Envelope {
                    target: target.clone(),
                    caller: None,
                    value,
                    metadata,
                });
                Routed::DeadLettered
            }
            (BadRecords::Fail, _, record) => {
                let from =
                    record.map_or_else(|| "a host record".to_owned(), |m| format!("{:?}", *m));
                self.failure.get_or_insert_with(|| {
                    format!(
                        "ingress `{}`: {why} ({from}); the job stops because its bad-record policy is `fail` \
                         (use `badRecords: skip` on the ingress or --on-bad-record skip to count and skip such records, \
                         or `badRecords: {{policy: dead-letter, egress: <id>, topic: <topic>}}` to keep them)",
                        self.ingress
                    )
                });
                Routed::Skipped
            }
            (_, _, record) => {
                if let Some(n) = limit.hit() {
                    tracing::warn!(ingress = %self.ingress, metadata = ?record.as_deref(), skipped = n, "record skipped: {why}");
                }
                Routed::Skipped
            }
        }
    }

    /// Routes `record`, pushing envelopes into `out`.
    pub(crate) fn route(&mut self, record: SourceRecord, mut out: impl FnMut(Envelope)) -> Routed {
        let SourceRecord {
            key,
            value,
            route,
            metadata,
            rejected,
        } = record;
        let metadata = Metadata::of_record(metadata);
        if let Some(why) = rejected {
            let bad = Bad {
                kind: BadKind::Rejected,
                why,
                key: key.map(RecordKey::into_vec),
                value,
                metadata,
            };
            return self.bad(bad, &mut out);
        }
        self.route_parts(key, value, route, metadata, out)
    }

    /// Routes a record given by its parts; `metadata` is `Metadata::None` for a host
    /// record that carries none (its messages then carry none either).
    pub(crate) fn route_parts(
        &mut self,
        key: Option<RecordKey>,
        value: Option<Vec<u8>>,
        route: usize,
        metadata: Metadata,
        mut out: impl FnMut(Envelope),
    ) -> Routed {
        let Some(plan) = self.routes.get(route) else {
            if let Some(n) = self.bad_route.hit() {
                tracing::error!(ingress = %self.ingress, route, skipped = n, "record for an unknown route skipped");
            }
            return Routed::Skipped;
        };
        let bad_key = |why: String, key: Option<RecordKey>, value, metadata| Bad {
            kind: BadKind::Key,
            why,
            key: key.map(RecordKey::into_vec),
            value,
            metadata,
        };
        let Some(key) = key else {
            let why = "it has no key, and the key is the function id".to_owned();
            return self.bad(bad_key(why, None, value, metadata), &mut out);
        };
        // Inline when short (most ids): no allocation crosses workers.
        let id = match utf8(&key) {
            Ok(id) if !id.is_empty() => statefun_sdk::Id::from(id),
            Ok(_) => {
                let why = "its key is empty, and the key is the function id".to_owned();
                return self.bad(bad_key(why, Some(key), value, metadata), &mut out);
            }
            Err(e) => {
                let why = format!("its key is not UTF-8 ({e}), and keys are function ids");
                return self.bad(bad_key(why, Some(key), value, metadata), &mut out);
            }
        };
        let Some(value) = value else {
            let bad = Bad {
                kind: BadKind::Value,
                why: "it has no value (a tombstone)".to_owned(),
                key: Some(key.into_vec()),
                value: None,
                metadata,
            };
            return self.bad(bad, &mut out);
        };
        let value = TypedValue::new(plan.value_type.clone(), value);
        if !plan.wrapped.is_empty() {
            // Without metadata there is nothing to wrap: the value goes as it is.
            let wrapped = metadata.get().map_or_else(
                || value.clone(),
                |m| IngressRecord::of(&self.ingress, &value, &m).to_typed_value(),
            );
            for target in &plan.wrapped {
                out(Envelope {
                    target: Address::new(target.clone(), id.clone()),
                    caller: None,
                    value: wrapped.clone(),
                    metadata: Metadata::None,
                });
            }
        }
        if let Some((last, others)) = plan.targets.split_last() {
            for target in others {
                out(Envelope {
                    target: Address::new(target.clone(), id.clone()),
                    caller: None,
                    value: value.clone(),
                    metadata: metadata.clone(),
                });
            }
            out(Envelope {
                target: Address::new(last.clone(), id),
                caller: None,
                value,
                metadata,
            });
        }
        Routed::Delivered
    }
}

/// A record that cannot become a message, and why.
/// `key` as text. An ASCII key (most ids) is checked by a plain byte loop, which for
/// a few bytes costs a fraction of `str::from_utf8`'s general validation (a tenth of
/// the router's instructions per record in `statefun bench`).
#[inline]
fn utf8(key: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if key.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(key) })
    } else {
        std::str::from_utf8(key)
    }
}

struct Bad {
    kind: BadKind,
    why: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// `Metadata::None` for a host record without metadata.
    metadata: Metadata,
}

#[derive(Clone, Copy)]
enum BadKind {
    Key,
    Value,
    /// The connector rejected it, with its reason (a corrupt KPL aggregate).
    Rejected,
}

/// The source operator of one ingress on this worker.
pub(crate) fn ingress<'s>(
    scope: Scope<'s, u64>,
    plan: &IngressPlan,
    app: &Arc<Application>,
    shared: &Arc<Shared>,
    progress: &ProbeHandle<u64>,
    checkpoint: Option<SharedCheckpoint>,
) -> Stream<'s, u64, Vec<Envelope>> {
    let index = scope.index();
    let peers = scope.peers();
    let plan = plan.clone();
    let shared = shared.clone();
    let progress = progress.clone();
    let settings = app.settings.clone();
    let clock = Clock::new(settings.epoch_interval);
    let worker = scope.worker();
    let name = format!("Ingress {}", plan.id);
    source::<_, super::batches::Batches<Envelope>, _, _>(scope, &name, move |cap, info| {
        let activator = worker.activator_for(info.address.clone());
        let ingress_id = plan.id.to_string();
        let (read_here, bytes_here) = shared.metrics.ingress_counter(&ingress_id, index);
        let mut source = match plan.open(index, peers) {
            Ok(mut source) => {
                let sync = worker.sync_activator_for(info.address.to_vec());
                source.set_waker(Arc::new(move || {
                    let _ = sync.activate();
                }));
                Some(source)
            }
            Err(e) => {
                shared.fail(format!("cannot open ingress `{}`: {e}", plan.id));
                None
            }
        };
        // With checkpoints, a source must be able to say where it is, and
        // resumes where the restored checkpoint says.
        if let (Some(ck), Some(src)) = (checkpoint.as_ref(), source.as_mut()) {
            let resume = ck.borrow().resume.get(&ingress_id).cloned();
            let result = match resume {
                Some(position) => src.seek(&position).map_err(|e| {
                    format!(
                        "ingress `{}` cannot resume from the checkpoint: {e}",
                        plan.id
                    )
                }),
                None => Ok(()),
            };
            let result = result.and_then(|()| match src.position() {
                Some(position) => {
                    ck.borrow_mut().record(&ingress_id, 0, position);
                    Ok(())
                }
                None => Err(format!(
                    "ingress `{}` cannot resume from checkpoints (stdin cannot be re-read); \
                     read from a file, Kafka or Kinesis, or run without --state-dir",
                    plan.id
                )),
            });
            if let Err(message) = result {
                shared.fail(message);
                source = None;
            }
        }
        let mut cap = source.as_ref().map(|_| cap);
        // Positions taken at checkpoint epochs, until their checkpoint is acknowledged.
        let mut taken: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut acknowledged: Option<u64> = None;
        let mut router = Router::new(&plan);
        let mut buffer = Vec::with_capacity(settings.source_batch);
        let (mut read, mut skipped, mut dead_lettered) = (0u64, 0u64, 0u64);
        // Key and value bytes of the records read, counted with them.
        let mut bytes = 0u64;
        // Lines the source itself rejected (malformed, bad values).
        let mut source_skipped = 0u64;
        move |output| {
            let (Some(c), Some(src)) = (cap.as_mut(), source.as_mut()) else {
                return;
            };
            if shared.shutting_down() {
                record_final(&checkpoint, &ingress_id, &**src);
                cap = None;
                return;
            }
            let now_ms = Clock::now_ms();
            let epoch = clock.epoch_at(now_ms).max(*c.time());
            if *c.time() < epoch {
                // Crossing a checkpoint epoch: record where the source is, as
                // every record so far is stamped with an earlier epoch.
                if let Some(ck) = checkpoint.as_ref() {
                    let mut ck = ck.borrow_mut();
                    if ck.schedule.next_at_or_after(*c.time()) < epoch {
                        if let Some(position) = src.position() {
                            ck.record(&ingress_id, epoch, position.clone());
                            taken.push((epoch, position));
                        }
                    }
                    // Acknowledge the newest checkpoint complete everywhere
                    // (Kafka: commit its offsets to the consumer group).
                    let done = progress.with_frontier(|f| f.first().copied());
                    if let Some(c) = done.and_then(|f| ck.schedule.last_before(f)) {
                        if acknowledged.is_none_or(|a| a < c) && !taken.is_empty() {
                            if let Some(p) = crate::checkpoint::position_at(&taken, c) {
                                if let Err(e) = src.checkpoint_complete(p) {
                                    tracing::warn!(ingress = %plan.id, "cannot acknowledge checkpoint positions: {e}");
                                }
                            }
                            acknowledged = Some(c);
                            taken.retain(|(b, _)| *b > c);
                        }
                    }
                }
                c.downgrade(&epoch);
            }
            // Backpressure: hold back while too many epochs are incomplete, or
            // while too many messages wait for remote functions.
            let remote_backlog =
                Metrics::get(&shared.metrics.remote_queued) > settings.max_remote_queued;
            if remote_backlog
                || progress.less_than(&epoch.saturating_sub(settings.max_epochs_in_flight))
            {
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            buffer.clear();
            let status = match src.poll(&mut buffer, settings.source_batch) {
                Ok(status) => status,
                Err(e) => {
                    shared.fail(format!("ingress `{}` failed: {e}", plan.id));
                    cap = None;
                    return;
                }
            };
            if !buffer.is_empty() {
                let mut session = output.session_with_builder(&*c);
                for record in buffer.drain(..) {
                    read += 1;
                    let key = record.key.as_ref().map_or(0, |k| k.len());
                    bytes += (key + record.value.as_ref().map_or(0, Vec::len)) as u64;
                    match router.route(record, |e| session.give(e)) {
                        Routed::Delivered => {}
                        Routed::Skipped => skipped += 1,
                        Routed::DeadLettered => dead_lettered += 1,
                    }
                }
            }
            if let Some(failure) = router.take_failure() {
                shared.fail(failure);
                cap = None;
                return;
            }
            let stats = src.stats();
            skipped += stats.skipped.saturating_sub(source_skipped);
            source_skipped = stats.skipped;
            let n = std::mem::take(&mut read);
            Metrics::add(&shared.metrics.records_in, n);
            Metrics::add(&read_here, n);
            Metrics::add(&bytes_here, std::mem::take(&mut bytes));
            Metrics::add(
                &shared.metrics.records_skipped,
                std::mem::take(&mut skipped),
            );
            Metrics::add(
                &shared.metrics.records_dead_lettered,
                std::mem::take(&mut dead_lettered),
            );
            match status {
                SourceStatus::Ready => activator.activate(),
                SourceStatus::Idle { retry_after } => {
                    // Wake at the next epoch at the latest, to advance time.
                    let next_epoch = clock.until_next_epoch(now_ms);
                    let delay = retry_after.map_or(next_epoch, |r| r.min(next_epoch));
                    activator.activate_after(delay);
                }
                SourceStatus::Exhausted => {
                    let stats = src.stats();
                    tracing::debug!(ingress = %plan.id, worker = index, records = stats.records, skipped = stats.skipped, "ingress exhausted");
                    record_final(&checkpoint, &ingress_id, &**src);
                    cap = None;
                }
            }
        }
    })
}

/// Records where a source stopped, for the final checkpoint.
fn record_final(
    checkpoint: &Option<SharedCheckpoint>,
    ingress: &str,
    source: &dyn statefun_connectors::Source,
) {
    if let (Some(ck), Some(position)) = (checkpoint, source.position()) {
        ck.borrow_mut().record(ingress, u64::MAX, position);
    }
}

#[cfg(test)]
mod tests {
    use statefun_connectors::GeneratorConfig;
    use statefun_sdk::proto::egress::KafkaProducerRecord;
    use statefun_sdk::IngressMetadata;

    use super::*;
    use crate::app::SourcePlan;
    use crate::dead_letter::{DeadLetterPlan, Destination, REASON_HEADER};

    fn plan(bad_records: BadRecords) -> IngressPlan {
        let id = TypeName::parse("example/names").unwrap();
        let targets = ["a", "b", "c"].map(|t| TypeName::parse(&format!("example/{t}")).unwrap());
        IngressPlan {
            id: id.clone(),
            routes: vec![RoutePlan {
                value_type: "io.statefun.types/string".into(),
                targets: targets.to_vec(),
                wrapped: Vec::new(),
            }],
            source: SourcePlan::Generator(GeneratorConfig {
                id,
                value_type: "io.statefun.types/string".into(),
                keys: 1,
                rate: 0.0,
                count: 0,
                value_size: 1,
                stamp: false,
                scrambled_keys: false,
            }),
            bad_records,
        }
    }

    fn record(key: Option<&[u8]>, value: Option<&[u8]>) -> SourceRecord {
        SourceRecord {
            key: key.map(RecordKey::from_slice),
            value: value.map(<[u8]>::to_vec),
            route: 0,
            metadata: IngressMetadata::Kafka {
                topic: "names".into(),
                partition: 0,
                offset: 3,
                timestamp_ms: None,
                headers: Vec::new(),
            }
            .into(),
            rejected: None,
        }
    }

    fn route(router: &mut Router, r: SourceRecord) -> (Routed, Vec<Envelope>) {
        let mut out = Vec::new();
        let routed = router.route(r, |e| out.push(e));
        (routed, out)
    }

    fn bad_records() -> Vec<SourceRecord> {
        vec![
            record(None, Some(b"v")),
            record(Some(b""), Some(b"v")),
            record(Some(&[0xff]), Some(b"v")),
            record(Some(b"alice"), None),
        ]
    }

    #[test]
    fn a_record_fans_out_to_every_target_with_its_key_as_id() {
        let mut router = Router::new(&plan(BadRecords::Skip));
        let (routed, out) = route(&mut router, record(Some(b"alice"), Some(b"v")));
        assert_eq!(routed, Routed::Delivered);
        let targets: Vec<String> = out.iter().map(|e| e.target.to_string()).collect();
        assert_eq!(
            targets,
            ["example/a/alice", "example/b/alice", "example/c/alice"]
        );
        assert!(out
            .iter()
            .all(|e| e.value.value == b"v" && e.metadata.is_some()));
    }

    #[test]
    fn keys_of_every_length_and_script_become_ids_and_invalid_ones_are_bad() {
        let long = "a-key-longer-than-the-inline-sixteen-bytes";
        for id in [
            "7",
            "0123456789abcdef",
            long,
            "zoë",
            "ключ-длиннее-шестнадцати-байт",
        ] {
            let mut router = Router::new(&plan(BadRecords::Skip));
            let (routed, out) = route(&mut router, record(Some(id.as_bytes()), Some(b"v")));
            assert_eq!(routed, Routed::Delivered, "{id}");
            assert_eq!(out[0].target.id, id);
        }
        // Not UTF-8 after an ASCII start, short and long: bad, with the position named.
        for key in [&b"abc\xff"[..], b"0123456789abcdefghij\xc3"] {
            let mut router = Router::new(&plan(BadRecords::Fail));
            assert_eq!(
                route(&mut router, record(Some(key), Some(b"v"))).1,
                Vec::new()
            );
            let failure = router.take_failure().expect("a failure");
            assert!(
                failure.contains("not UTF-8")
                    && failure.contains(&format!("index {}", key.len() - 1)),
                "{failure}"
            );
        }
    }

    #[test]
    fn wrapped_targets_get_the_value_with_its_metadata_and_the_others_the_value() {
        let mut plan = plan(BadRecords::Skip);
        let remote = TypeName::parse("remote/fn").unwrap();
        plan.routes[0].targets.truncate(1);
        plan.routes[0].wrapped = vec![remote];
        let mut router = Router::new(&plan);
        let mut r = record(Some(b"alice"), Some(b"v"));
        let expected_metadata = IngressMetadata::Kafka {
            topic: "names".into(),
            partition: 2,
            offset: 9,
            timestamp_ms: Some(1234),
            headers: vec![("trace".into(), Some(b"t1".to_vec())), ("n".into(), None)],
        };
        r.metadata = expected_metadata.clone().into();
        let (routed, out) = route(&mut router, r);
        assert_eq!(routed, Routed::Delivered);
        let by_target: Vec<(String, &Envelope)> =
            out.iter().map(|e| (e.target.to_string(), e)).collect();
        assert_eq!(by_target.len(), 2);
        let (target, wrapped) = &by_target[0];
        assert_eq!(target, "remote/fn/alice");
        let record = IngressRecord::from_typed_value(&wrapped.value).unwrap();
        assert_eq!(record.ingress, "example/names");
        assert_eq!(record.value_typename, "io.statefun.types/string");
        assert_eq!(record.value, b"v");
        assert_eq!(record.metadata(), Some(expected_metadata.clone()));
        let (target, plain) = &by_target[1];
        assert_eq!(target, "example/a/alice");
        assert_eq!(plain.value.value, b"v");
        assert_eq!(plain.value.typename, "io.statefun.types/string");
        assert_eq!(plain.metadata.get().as_deref(), Some(&expected_metadata));
    }

    #[test]
    fn a_record_the_connector_rejected_meets_the_policy_with_its_reason() {
        let rejected = |r: SourceRecord| SourceRecord {
            rejected: Some("KPL aggregate: MD5 mismatch".into()),
            ..r
        };
        let mut router = Router::new(&plan(BadRecords::Skip));
        let r = rejected(record(Some(b"alice"), Some(b"v")));
        assert_eq!(route(&mut router, r), (Routed::Skipped, Vec::new()));
        let mut router = Router::new(&plan(BadRecords::Fail));
        let r = rejected(record(Some(b"alice"), Some(b"v")));
        assert_eq!(route(&mut router, r).1, Vec::new());
        let failure = router.take_failure().expect("a failure");
        assert!(failure.contains("KPL aggregate: MD5 mismatch"), "{failure}");
    }

    #[test]
    fn skip_drops_bad_records_and_keeps_going() {
        let mut router = Router::new(&plan(BadRecords::Skip));
        for r in bad_records() {
            assert_eq!(route(&mut router, r), (Routed::Skipped, Vec::new()));
        }
        assert!(router.take_failure().is_none());
    }

    #[test]
    fn fail_names_the_ingress_and_the_record() {
        for (r, why) in
            bad_records()
                .into_iter()
                .zip(["no key", "key is empty", "not UTF-8", "tombstone"])
        {
            let mut router = Router::new(&plan(BadRecords::Fail));
            assert_eq!(route(&mut router, r).1, Vec::new());
            let failure = router.take_failure().expect("a failure");
            assert!(failure.contains("example/names"), "{failure}");
            assert!(failure.contains(why), "{failure}");
            assert!(failure.contains("offset: 3"), "{failure}");
        }
    }

    #[test]
    fn dead_letters_go_to_the_forwarding_function_for_the_egress() {
        let mut router = Router::new(&plan(BadRecords::DeadLetter(DeadLetterPlan {
            egress: TypeName::parse("example/dlq").unwrap(),
            destination: Destination::Kafka {
                topic: "names.dlq".into(),
            },
        })));
        for r in bad_records() {
            let (routed, out) = route(&mut router, r);
            assert_eq!(routed, Routed::DeadLettered);
            assert_eq!(out.len(), 1);
            assert_eq!(
                out[0].target.to_string(),
                format!("{DEAD_LETTER_FUNCTION}/example/dlq")
            );
            let record = KafkaProducerRecord::from_typed_value(&out[0].value).unwrap();
            assert_eq!(record.topic, "names.dlq");
            assert!(record.headers.iter().any(|h| h.key == REASON_HEADER));
        }
        assert!(router.take_failure().is_none());
    }
}
