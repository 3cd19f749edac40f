//! Ingress sources as timely input operators, and the router that turns
//! their records into messages for function instances.

use std::sync::Arc;
use std::time::Duration;

use statefun_connectors::{SourceRecord, SourceStatus};
use statefun_sdk::{Address, TypedValue};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, Stream};

use super::checkpointing::SharedCheckpoint;
use crate::app::{Application, IngressPlan, RoutePlan};
use crate::clock::Clock;
use crate::envelope::Envelope;
use crate::shared::{Metrics, RateLimit, Shared};

/// Turns source records into envelopes: one per target of the record's route,
/// with the record key as the function id.
///
/// Records that cannot be routed (no key, a key that is not UTF-8, no value,
/// an unknown route) follow `Settings::bad_records`: skipped, counted and
/// logged (the default), or they fail the job naming the record — never a
/// crash loop.
pub(crate) struct Router {
    ingress: String,
    routes: Vec<RoutePlan>,
    bad_key: RateLimit,
    no_value: RateLimit,
    bad_route: RateLimit,
    fail_on_bad: bool,
    failure: Option<String>,
}

impl Router {
    pub(crate) fn new(plan: &IngressPlan) -> Self {
        Router {
            ingress: plan.id.to_string(),
            routes: plan.routes.clone(),
            bad_key: RateLimit::default(),
            no_value: RateLimit::default(),
            bad_route: RateLimit::default(),
            fail_on_bad: false,
            failure: None,
        }
    }

    /// A router that fails (see [`Router::take_failure`]) on the first bad record instead of skipping it.
    pub(crate) fn failing_on_bad_records(mut self, fail: bool) -> Self {
        self.fail_on_bad = fail;
        self
    }

    /// Why the job must stop, if a bad record met the `fail` policy.
    pub(crate) fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }

    /// Skips (logged, rate-limited) or, under the `fail` policy, records a failure.
    fn bad(&mut self, kind: BadKind, metadata: &statefun_sdk::IngressMetadata, why: &str) -> bool {
        if self.fail_on_bad {
            self.failure.get_or_insert_with(|| {
                format!(
                    "ingress `{}`: {why} ({metadata:?}); the job stops because of --on-bad-record fail \
                     (use --on-bad-record skip to count and skip such records)",
                    self.ingress
                )
            });
            return false;
        }
        let limit = match kind {
            BadKind::Key => &mut self.bad_key,
            BadKind::Value => &mut self.no_value,
        };
        if let Some(n) = limit.hit() {
            tracing::warn!(ingress = %self.ingress, metadata = ?metadata, skipped = n, "record skipped: {why}");
        }
        false
    }

    /// Routes `record`, pushing envelopes into `out`; returns false if it was skipped.
    pub(crate) fn route(&mut self, record: SourceRecord, mut out: impl FnMut(Envelope)) -> bool {
        let SourceRecord {
            key,
            value,
            route,
            metadata,
        } = record;
        let Some(plan) = self.routes.get(route) else {
            if let Some(n) = self.bad_route.hit() {
                tracing::error!(ingress = %self.ingress, route, skipped = n, "record for an unknown route skipped");
            }
            return false;
        };
        let id = match key.map(String::from_utf8) {
            Some(Ok(id)) => id,
            Some(Err(e)) => {
                let why = format!(
                    "its key is not UTF-8 ({}), and keys are function ids",
                    e.utf8_error()
                );
                return self.bad(BadKind::Key, &metadata, &why);
            }
            None => {
                return self.bad(
                    BadKind::Key,
                    &metadata,
                    "it has no key, and the key is the function id",
                );
            }
        };
        let Some(value) = value else {
            return self.bad(BadKind::Value, &metadata, "it has no value (a tombstone)");
        };
        let value = TypedValue::new(plan.value_type.clone(), value);
        let metadata = Box::new(metadata);
        if let Some((last, others)) = plan.targets.split_last() {
            for target in others {
                out(Envelope {
                    target: Address::new(target.clone(), id.clone()),
                    caller: None,
                    value: value.clone(),
                    metadata: Some(metadata.clone()),
                });
            }
            out(Envelope {
                target: Address::new(last.clone(), id),
                caller: None,
                value,
                metadata: Some(metadata),
            });
        }
        true
    }
}

#[derive(Clone, Copy)]
enum BadKind {
    Key,
    Value,
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
    source::<_, CapacityContainerBuilder<Vec<Envelope>>, _, _>(scope, &name, move |cap, info| {
        let activator = worker.activator_for(info.address.clone());
        let ingress_id = plan.id.to_string();
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
        let mut router = Router::new(&plan).failing_on_bad_records(settings.fail_on_bad_records);
        let mut buffer = Vec::with_capacity(settings.source_batch);
        let (mut read, mut skipped) = (0u64, 0u64);
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
                let mut session = output.session(&*c);
                for record in buffer.drain(..) {
                    read += 1;
                    if !router.route(record, |e| session.give(e)) {
                        skipped += 1;
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
            Metrics::add(&shared.metrics.records_in, std::mem::take(&mut read));
            Metrics::add(
                &shared.metrics.records_skipped,
                std::mem::take(&mut skipped),
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
