//! Egress sinks at the end of the dataflow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use statefun_connectors::Sink;
use statefun_sdk::{EgressMessage, TypeName};
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::OkErr;
use timely::dataflow::Stream;

use super::checkpointing::{sink_slot, Control, SharedEvidence, FINISH_EPOCH};
use crate::app::Application;
use crate::checkpoint::{Schedule, Verdict};
use crate::shared::Shared;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concat, Inspect};

/// How often sinks are flushed while the job runs (always at the end).
///
/// A flush waits for the external system to acknowledge (Kafka, Kinesis), so
/// flushing at every 10 ms epoch would stall the worker; without checkpoints
/// the flush cadence does not change what is delivered, only when errors
/// surface.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Writes egress records to their sinks.
///
/// Single-writer sinks (files) run on worker 0 and every record for them is
/// sent there; other sinks (Kafka, Kinesis producers) run on every worker and
/// write the records produced on it. Sinks write records as they arrive and
/// are flushed when the egress frontier passes an epoch (at most every
/// [`FLUSH_INTERVAL`]) and when the stream ends.
pub(crate) fn sinks<'s>(
    egress: Stream<'s, u64, Vec<EgressMessage>>,
    app: Arc<Application>,
    shared: Arc<Shared>,
) {
    let (to_one, local) = split_single_writers(egress, &app);
    sink_operator(
        to_one,
        Exchange::new(|_: &EgressMessage| 0u64),
        true,
        &app,
        &shared,
    );
    sink_operator(local, Pipeline, false, &app, &shared);
}

/// Splits the egress stream into records for single-writer sinks (files,
/// written by worker 0) and records every worker writes itself.
fn split_single_writers<'s>(
    egress: Stream<'s, u64, Vec<EgressMessage>>,
    app: &Application,
) -> (
    Stream<'s, u64, Vec<EgressMessage>>,
    Stream<'s, u64, Vec<EgressMessage>>,
) {
    let single: std::collections::BTreeSet<TypeName> = app
        .egresses
        .iter()
        .filter(|(_, plan)| plan.single_writer())
        .map(|(id, _)| id.clone())
        .collect();
    egress.ok_err(move |m| {
        if single.contains(&m.egress) {
            Ok(m)
        } else {
            Err(m)
        }
    })
}

/// Opens the sinks this operator writes on worker `index`: the
/// single-writer ones on worker 0, or every other one on each worker.
pub(crate) fn open_sinks(
    app: &Application,
    single_writers: bool,
    index: usize,
    resume: bool,
    shared: &Shared,
) -> BTreeMap<TypeName, Box<dyn Sink>> {
    let mut sinks: BTreeMap<TypeName, Box<dyn Sink>> = BTreeMap::new();
    for (id, plan) in &app.egresses {
        if plan.single_writer() != single_writers || (single_writers && index != 0) {
            continue;
        }
        match plan.open(resume, index) {
            Ok(sink) => {
                sinks.insert(id.clone(), sink);
            }
            Err(e) => shared.fail(format!("cannot open egress `{id}`: {e}")),
        }
    }
    sinks
}

fn sink_operator<'s, P>(
    stream: Stream<'s, u64, Vec<EgressMessage>>,
    pact: P,
    single_writers: bool,
    app: &Arc<Application>,
    shared: &Arc<Shared>,
) where
    P: ParallelizationContract<u64, Vec<EgressMessage>>,
{
    let index = stream.scope().index();
    let shared = shared.clone();
    let mut sinks = open_sinks(app, single_writers, index, false, &shared);
    let mut unconfirmed = Unconfirmed::new(app.settings.epoch_interval, index);
    let mut frontier_seen: Option<u64> = Some(0);
    let mut dirty = false;
    let mut last_flush = Instant::now();
    let name = if single_writers {
        "Egress (single writer)"
    } else {
        "Egress"
    };
    stream.sink(pact, name, move |(input, frontier)| {
        input.for_each(|cap, data| {
            let touched = write_runs(&mut sinks, data, &shared);
            dirty |= !touched.is_empty();
            if let Some(&epoch) = cap.least() {
                for id in touched.keys() {
                    unconfirmed.wrote(id, epoch);
                }
            }
            shared.metrics.count_egress(
                index,
                touched.iter().map(|(id, (n, b))| (id.as_str(), *n, *b)),
            );
            data.clear();
        });
        let now = frontier.frontier().first().copied();
        if now != frontier_seen {
            frontier_seen = now;
            let finished = now.is_none();
            if dirty && (finished || last_flush.elapsed() >= FLUSH_INTERVAL) {
                flush_all(&mut sinks, &shared, &mut unconfirmed);
                dirty = false;
                last_flush = Instant::now();
            }
        }
    });
}

/// Sinks of a checkpointed run: egress records are held until their
/// checkpoint is durable on every worker — positive evidence, a token from
/// each worker in `evidence` (see `checkpoint::evidence`) — then delivered and
/// committed.
///
/// Each sink operator says what it delivered with a token `(slot, through)`,
/// broadcast to every worker into `evidence.delivered`: a worker deletes an
/// outbox only once every sink operator delivered it, and drops the last one
/// after every sink operator delivered the final checkpoint.
pub(crate) fn checkpointed_sinks<'s>(
    egress: Stream<'s, u64, Vec<EgressMessage>>,
    control: Stream<'s, u64, Vec<Control>>,
    app: Arc<Application>,
    shared: Arc<Shared>,
    schedule: Schedule,
    resume: bool,
    evidence: SharedEvidence,
) {
    let control = super::checkpointing::observe_control(control, evidence.clone(), shared.clone());
    let (to_one, local) = split_single_writers(egress, &app);
    let settings = SinkSettings {
        app: &app,
        shared: &shared,
        schedule,
        resume,
        evidence: &evidence,
    };
    let one = checkpointed_sink(
        to_one,
        control.clone(),
        Exchange::new(|_: &EgressMessage| 0u64),
        true,
        &settings,
    );
    let each = checkpointed_sink(local, control, Pipeline, false, &settings);
    one.concat(each)
        .broadcast()
        .inspect(move |(slot, through): &(usize, u64)| {
            evidence.borrow_mut().delivered.token(*slot, *through);
        });
}

struct SinkSettings<'a> {
    app: &'a Arc<Application>,
    shared: &'a Arc<Shared>,
    schedule: Schedule,
    resume: bool,
    evidence: &'a SharedEvidence,
}

fn checkpointed_sink<'s, P>(
    stream: Stream<'s, u64, Vec<EgressMessage>>,
    control: Stream<'s, u64, Vec<Control>>,
    pact: P,
    single_writers: bool,
    settings: &SinkSettings<'_>,
) -> Stream<'s, u64, Vec<(usize, u64)>>
where
    P: ParallelizationContract<u64, Vec<EgressMessage>>,
{
    let scope = stream.scope();
    let index = scope.index();
    let shared = settings.shared.clone();
    let schedule = settings.schedule;
    let evidence = settings.evidence.clone();
    let slot = sink_slot(index, single_writers);
    let mut sinks = open_sinks(
        settings.app,
        single_writers,
        index,
        settings.resume,
        &shared,
    );
    // Sinks of this worker's own records learn which checkpoint they write.
    let labels = (!single_writers).then_some(index);
    let mut unconfirmed = Unconfirmed::new(settings.app.settings.epoch_interval, index);
    let name = if single_writers {
        "Egress (single writer, checkpointed)"
    } else {
        "Egress (checkpointed)"
    };
    stream.binary_frontier::<_, CapacityContainerBuilder<Vec<(usize, u64)>>, _, _, _, _>(
        control,
        pact,
        Pipeline,
        name,
        move |cap, _info| {
            let mut cap = Some(cap);
            let mut pending: BTreeMap<u64, Vec<EgressMessage>> = BTreeMap::new();
            let mut replay: Vec<(u64, EgressMessage)> = Vec::new();
            let mut replayed = false;
            let mut finished = 0usize;
            move |(input, frontier), (control, control_frontier), output| {
                input.for_each(|time, data| {
                    if let Some(&epoch) = time.least() {
                        pending.entry(epoch).or_default().append(data);
                    }
                });
                control.for_each(|_time, data| {
                    for c in data.drain(..) {
                        match c {
                            Control::Replay {
                                worker,
                                checkpoint,
                                message,
                            } => {
                                // Single writers take every worker's records; others their own.
                                if sinks.contains_key(&message.egress) && (single_writers || worker == index) {
                                    replay.push((checkpoint, message));
                                }
                            }
                            Control::Finished { .. } => finished += 1,
                            // Taken in by `observe_control`.
                            Control::Written { .. } | Control::Stop { .. } => {}
                        }
                    }
                });
                let Some(held) = cap.as_mut() else {
                    pending.clear();
                    return;
                };
                // First the records of restored checkpoints that may not have
                // been delivered; exactly-once sinks skip what they delivered.
                if !replayed {
                    if control_frontier.less_equal(&0) {
                        return;
                    }
                    replayed = true;
                    redeliver(&mut sinks, std::mem::take(&mut replay), labels, &shared, &mut unconfirmed);
                }
                // No token can arrive any more for checkpoints before the
                // control frontier: one missing there was never written, and
                // the job fails instead of delivering it.
                if let Some(c) = control_frontier
                    .frontier()
                    .first()
                    .and_then(|&f| schedule.last_before(f))
                {
                    let mut ev = evidence.borrow_mut();
                    if let Verdict::Unwritten(workers) = ev.written.check(c) {
                        if !ev.reported {
                            ev.reported = true;
                            shared.fail(format!(
                                "checkpoint {} was not written by worker(s) {workers:?} (failed or stopped), so nothing of it is delivered; the job stops and a restart resumes from the last checkpoint every worker wrote",
                                schedule.id(c)
                            ));
                        }
                    }
                }
                // Deliver what every worker wrote and whose records have all arrived.
                let written = evidence.borrow().written.through();
                match frontier.frontier().first().copied() {
                    Some(f) => {
                        let (Some(arrived), Some(written)) = (schedule.last_before(f), written) else { return };
                        let c = arrived.min(written);
                        if *held.time() > c {
                            return;
                        }
                        deliver_through(&mut sinks, &mut pending, c, &schedule, labels, &shared, &mut unconfirmed);
                        if !shared.failed() {
                            output.session(&*held).give((slot, c));
                        }
                        held.downgrade(&(c + 1));
                    }
                    None => {
                        if !control_frontier.is_empty() {
                            return;
                        }
                        // Checkpoints every worker wrote before the end.
                        if let Some(c) = written.filter(|&w| w < FINISH_EPOCH && *held.time() <= w) {
                            deliver_through(&mut sinks, &mut pending, c, &schedule, labels, &shared, &mut unconfirmed);
                            if !shared.failed() {
                                output.session(&*held).give((slot, c));
                            }
                        }
                        let batch = by_checkpoint(std::mem::take(&mut pending), &schedule);
                        let records: usize = batch.iter().map(|g| g.records.len()).sum();
                        if written.is_some_and(|w| w >= FINISH_EPOCH) {
                            deliver(&mut sinks, batch, labels, Some(schedule.final_id()), &shared, &mut unconfirmed);
                            if !shared.failed() {
                                output.session(&*held).give((slot, FINISH_EPOCH));
                            }
                        } else if records > 0 {
                            tracing::warn!(
                                records,
                                workers_finished = finished,
                                "egress records of the unfinished checkpoint are not delivered (not every worker wrote it); a restart recomputes them"
                            );
                        }
                        cap = None;
                    }
                }
            }
        },
    )
}

/// Flushes every sink, counts what each reported ([`Sink::take_stats`]) and times the
/// delivery of the epochs each confirmed (`unconfirmed`); a failure fails the job, naming
/// the egress.
pub(crate) fn flush_all(
    sinks: &mut BTreeMap<TypeName, Box<dyn Sink>>,
    shared: &Shared,
    unconfirmed: &mut Unconfirmed,
) {
    for (id, sink) in sinks.iter_mut() {
        let flushed = sink.flush();
        if let Err(e) = &flushed {
            shared.fail(format!("egress `{id}` failed to flush: {e}"));
        }
        shared
            .metrics
            .count_sink(id.as_str(), unconfirmed.worker, &sink.take_stats());
        unconfirmed.settle(id, flushed.is_ok(), shared);
    }
}

/// The epochs of records a sink operator wrote and its sinks have not confirmed yet, per
/// egress, so that each confirmation (a flush or a commit) is timed from the end of those
/// epochs: `statefun_egress_delivery_seconds`.
///
/// One entry per egress and epoch, not per record, and one clock read and one lock per
/// confirmation: the cost does not grow with the records. It also names the worker whose
/// sinks it times, for the `worker` label of what they report.
pub(crate) struct Unconfirmed {
    /// The worker (global index) whose sinks these are.
    pub(crate) worker: usize,
    /// The epoch length in seconds (epochs are wall-clock ticks, `crate::clock`).
    epoch_seconds: f64,
    by_egress: BTreeMap<TypeName, Vec<u64>>,
    /// Reused between confirmations.
    latencies: crate::shared::Histogram,
}

impl Unconfirmed {
    /// For epochs of `epoch_interval`, on `worker`.
    pub(crate) fn new(epoch_interval: Duration, worker: usize) -> Self {
        Unconfirmed {
            worker,
            epoch_seconds: epoch_interval.as_secs_f64(),
            by_egress: BTreeMap::new(),
            latencies: crate::shared::Histogram::new(&crate::shared::DELIVERY_BOUNDS),
        }
    }

    /// Egress `id`'s sink was given records of `epoch`.
    pub(crate) fn wrote(&mut self, id: &TypeName, epoch: u64) {
        match self.by_egress.get_mut(id) {
            Some(epochs) => {
                if epochs.last() != Some(&epoch) {
                    epochs.push(epoch);
                }
            }
            None => {
                self.by_egress.insert(id.clone(), vec![epoch]);
            }
        }
    }

    /// Egress `id`'s sink confirmed (`ok`) what it was given, or failed (then the job fails
    /// and nothing is observed): one observation per epoch, the time since the epoch ended
    /// (0 for records confirmed before their epoch ended, which runs without checkpoints
    /// may do).
    pub(crate) fn settle(&mut self, id: &TypeName, ok: bool, shared: &Shared) {
        let Some(epochs) = self.by_egress.get_mut(id) else {
            return;
        };
        if ok && !epochs.is_empty() && self.epoch_seconds > 0.0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.latencies.clear();
            for &epoch in epochs.iter() {
                let ended = (epoch as f64 + 1.0) * self.epoch_seconds;
                self.latencies.observe((now - ended).max(0.0));
            }
            shared
                .metrics
                .observe_delivery(id.as_str(), self.worker, &self.latencies);
        }
        epochs.clear();
    }
}

/// Delivers the egress records of restored checkpoints, `(checkpoint, record)`, that
/// `sinks` did not deliver before (exactly-once sinks know what they delivered; the others
/// write everything again), oldest checkpoint first, and commits them as the newest.
/// `labels` as for [`deliver`].
///
/// Their delivery is timed (`unconfirmed`) from the end of their checkpoint's epoch — the
/// records' own epochs are not kept, and theirs is the latest they can be of — so the
/// latency of records that waited out a crash and a restart shows; records of a run's final
/// checkpoint (no epoch) are not timed.
pub(crate) fn redeliver(
    sinks: &mut BTreeMap<TypeName, Box<dyn Sink>>,
    mut replay: Vec<(u64, EgressMessage)>,
    labels: Option<usize>,
    shared: &Shared,
    unconfirmed: &mut Unconfirmed,
) {
    replay.sort_by_key(|(checkpoint, _)| *checkpoint);
    let through = replay.last().map(|(c, _)| *c);
    let mut batch: Vec<Group> = Vec::new();
    let mut by_sink: BTreeMap<TypeName, (u64, u64)> = BTreeMap::new();
    for (checkpoint, message) in replay {
        let Some(sink) = sinks.get(&message.egress) else {
            continue;
        };
        if sink.delivered().is_some_and(|d| checkpoint <= d) {
            by_sink.entry(message.egress.clone()).or_default().1 += 1;
            continue;
        }
        by_sink.entry(message.egress.clone()).or_default().0 += 1;
        match batch.last_mut() {
            Some(group) if group.checkpoint == checkpoint => group.records.push(message),
            _ => batch.push(Group {
                checkpoint,
                epoch: crate::checkpoint::describe_id(checkpoint).1,
                records: vec![message],
            }),
        }
    }
    for (egress, (sent, skipped)) in &by_sink {
        tracing::info!(%egress, redelivered = sent, skipped_as_delivered = skipped,
            "egress records of restored checkpoints");
    }
    if let Some(through) = through {
        deliver(sinks, batch, labels, Some(through), shared, unconfirmed);
    }
}

/// Delivers (and commits, as checkpoint `c`) the records of `pending` of
/// epochs up to checkpoint epoch `c`, leaving the later ones pending.
fn deliver_through(
    sinks: &mut BTreeMap<TypeName, Box<dyn Sink>>,
    pending: &mut BTreeMap<u64, Vec<EgressMessage>>,
    c: u64,
    schedule: &Schedule,
    labels: Option<usize>,
    shared: &Shared,
    unconfirmed: &mut Unconfirmed,
) {
    let later = pending.split_off(&(c + 1));
    let ready = std::mem::replace(pending, later);
    deliver(
        sinks,
        by_checkpoint(ready, schedule),
        labels,
        Some(schedule.id(c)),
        shared,
        unconfirmed,
    );
}

/// Records of one epoch that belong to one checkpoint (whose outbox holds them). Records
/// replayed from a restored checkpoint carry the checkpoint's epoch (their own are not
/// kept); `None` for a run's final checkpoint.
struct Group {
    checkpoint: u64,
    epoch: Option<u64>,
    records: Vec<EgressMessage>,
}

/// Labels records of each epoch with the checkpoint they belong to (whose outbox holds
/// them), keeping their order.
fn by_checkpoint(by_epoch: BTreeMap<u64, Vec<EgressMessage>>, schedule: &Schedule) -> Vec<Group> {
    by_epoch
        .into_iter()
        .map(|(epoch, records)| Group {
            checkpoint: schedule.id(schedule.next_at_or_after(epoch)),
            epoch: Some(epoch),
            records,
        })
        .collect()
}

/// Writes `batch` (records grouped by the checkpoint they belong to) to its
/// sinks and commits every sink that wrote as `checkpoint`. With `labels`
/// (this worker's index), each sink is told the checkpoint of the records
/// that follow ([`Sink::begin_checkpoint`]).
/// The epochs of the records written are timed when their sinks commit (`unconfirmed`).
fn deliver(
    sinks: &mut BTreeMap<TypeName, Box<dyn Sink>>,
    batch: Vec<Group>,
    labels: Option<usize>,
    checkpoint: Option<u64>,
    shared: &Shared,
    unconfirmed: &mut Unconfirmed,
) {
    let mut touched: BTreeMap<TypeName, (u64, u64)> = BTreeMap::new();
    let mut announced: Option<u64> = None;
    for group in &batch {
        if group.records.is_empty() {
            continue;
        }
        if let Some(worker) = labels {
            if announced != Some(group.checkpoint) {
                announced = Some(group.checkpoint);
                for sink in sinks.values_mut() {
                    sink.begin_checkpoint(worker, group.checkpoint);
                }
            }
        }
        for (id, (n, bytes)) in write_runs(sinks, &group.records, shared) {
            if let Some(epoch) = group.epoch {
                unconfirmed.wrote(&id, epoch);
            }
            let entry = touched.entry(id).or_default();
            entry.0 += n;
            entry.1 += bytes;
        }
    }
    if crate::failpoint::enabled() && !touched.is_empty() {
        // Make the uncommitted records reach the file, as a crash mid-write would.
        for id in touched.keys() {
            if let Some(sink) = sinks.get_mut(id) {
                let _ = sink.flush();
            }
        }
        crate::failpoint::hit("sink-before-commit");
    }
    if let Some(checkpoint) = checkpoint {
        for id in touched.keys() {
            if let Some(sink) = sinks.get_mut(id) {
                let committed = sink.commit(checkpoint);
                if let Err(e) = &committed {
                    shared.fail(format!(
                        "egress `{id}` failed to commit checkpoint {checkpoint}: {e}"
                    ));
                }
                // What the sink reported (transactions, Kinesis entries), once per commit.
                shared
                    .metrics
                    .count_sink(id.as_str(), unconfirmed.worker, &sink.take_stats());
                unconfirmed.settle(id, committed.is_ok(), shared);
            }
        }
    }
    if !touched.is_empty() {
        crate::failpoint::hit("sink-after-commit");
    }
    shared.metrics.count_egress(
        unconfirmed.worker,
        touched.iter().map(|(id, (n, b))| (id.as_str(), *n, *b)),
    );
}

/// Writes `records` to their sinks, one call per run of records for the same
/// egress; returns how many records each egress took, and their payload bytes (the
/// encoded value each function sent, e.g. a Kafka producer record). Failures fail the job.
fn write_runs(
    sinks: &mut BTreeMap<TypeName, Box<dyn Sink>>,
    records: &[EgressMessage],
    shared: &Shared,
) -> BTreeMap<TypeName, (u64, u64)> {
    let mut written: BTreeMap<TypeName, (u64, u64)> = BTreeMap::new();
    let mut rest = records;
    while let Some(first) = rest.first() {
        let run = rest.iter().take_while(|m| m.egress == first.egress).count();
        let (chunk, tail) = rest.split_at(run);
        rest = tail;
        match sinks.get_mut(&first.egress) {
            Some(sink) => match sink.write(chunk) {
                Ok(()) => {
                    let bytes: usize = chunk.iter().map(|m| m.value.value.len()).sum();
                    let entry = written.entry(first.egress.clone()).or_default();
                    entry.0 += chunk.len() as u64;
                    entry.1 += bytes as u64;
                }
                Err(e) => shared.fail(format!("egress `{}` failed: {e}", first.egress)),
            },
            None => shared.fail(format!(
                "egress `{}` received records but is not open on this worker",
                first.egress
            )),
        }
    }
    written
}
