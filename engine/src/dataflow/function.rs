//! The function operator: invokes function instances on the worker that owns
//! their key group, and sends what they produce back around the loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use statefun_sdk::{EgressMessage, TypeName};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ExchangeCore;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::batches::Batches;
use super::checkpointing::{Control, SharedCheckpoint, SharedEvidence, FINISH_EPOCH};
use super::LoopTime;
use crate::app::{Application, FunctionErrorAction};
use crate::checkpoint::{CheckpointBackend, CheckpointMeta, Recovered};
use crate::clock::Clock;
use crate::envelope::Envelope;
use crate::invoke::{invoke, Scratch};
use crate::keygroup::worker_for_id;
use crate::remote::{Finished, RemoteDriver};
use crate::shared::{FunctionCounts, Metrics, RateLimit, Shared};
use crate::state::{StateBackend, StateKey};
use crate::timers::Timers;

/// What one worker's function operator owns: the application, this worker's
/// state backend, and the shared run state.
pub struct FunctionWorker {
    app: Arc<Application>,
    backend: Box<dyn StateBackend>,
    shared: Arc<Shared>,
    checkpoints: Option<Checkpointing>,
}

/// What the function operator needs to take checkpoints.
pub struct Checkpointing {
    /// The durable backend (replaces the plain one).
    pub backend: Box<dyn CheckpointBackend>,
    /// The worker's checkpoint context (schedule, source positions).
    pub context: SharedCheckpoint,
    /// The restored checkpoint, if the run resumes one.
    pub recovered: Option<Recovered>,
    /// Every worker's checkpoint tokens and every sink operator's delivery
    /// tokens, as seen by this worker: pending state is merged only behind
    /// what every worker wrote, outboxes deleted only behind what every sink
    /// delivered.
    pub evidence: SharedEvidence,
}

impl FunctionWorker {
    /// Bundles what the function operator of one worker needs.
    pub fn new(app: Arc<Application>, backend: Box<dyn StateBackend>, shared: Arc<Shared>) -> Self {
        FunctionWorker {
            app,
            backend,
            shared,
            checkpoints: None,
        }
    }

    /// A worker whose state is durable and checkpointed.
    pub fn durable(app: Arc<Application>, shared: Arc<Shared>, checkpoints: Checkpointing) -> Self {
        FunctionWorker {
            app,
            backend: Box::new(crate::state::MemoryBackend::default()),
            shared,
            checkpoints: Some(checkpoints),
        }
    }
}

/// A checkpoint in progress in the function operator.
struct Snapshotter {
    context: SharedCheckpoint,
    evidence: SharedEvidence,
    /// The checkpoint epoch the operator waits to pass.
    next: u64,
    /// Held on the egress output at `(next, 0)` until `next` is handed to the
    /// writer (sinks deliver a checkpoint only with every worker's token for it).
    egress_cap: Option<Capability<LoopTime>>,
    /// Held on the control output at the oldest checkpoint not yet durable until
    /// it is and its token sent, so the token stream's frontier passing a
    /// checkpoint means every token for it has arrived.
    control_cap: Option<Capability<LoopTime>>,
    /// Checkpoints handed to the background writer, oldest first: `(checkpoint
    /// epoch, the next checkpoint epoch, id of the write, last checkpoint id it covers)`.
    writing: std::collections::VecDeque<(u64, u64, u64, u64)>,
    /// Whether this worker told its peers that its process is stopping
    /// (`Some(true)`: with a failure).
    announced: Option<bool>,
    /// Messages of epochs after `next`, held back until it is written.
    stash: BTreeMap<LoopTime, Stashed>,
    /// Messages sent into epochs after `next` before it was written, with their epoch.
    inflight: Vec<(u64, Envelope)>,
    /// Egress records produced since the last checkpoint.
    outbox: Vec<EgressMessage>,
}

/// The function operator prefetches state in bursts of this many messages:
/// every this many invocations, the lines of the burst after the next one, so
/// that a line is asked for 8 to 15 messages before it is used — far enough
/// that its miss completes while the invocations in between run, near enough
/// that it is still in L1 (one at a time, a message 2 ahead gave 3.83 M
/// records/s at 1 M keys, 6 ahead 3.91 M, 12 3.82 M, 24 3.51 M, 48 2.91 M;
/// none 2.43 M).
///
/// Why bursts: the prefetch instruction itself stalls once the table outgrows
/// what the TLB reaches (sampled with `perf`, the time on the instruction after
/// it is 5 % of the run at 100 k keys, 11 % at 300 k, 14 % at 1 M: a page-table
/// walk, two-level on a virtual machine, before the prefetch can retire). One
/// prefetch per message met those stalls one by one between invocations; a
/// burst's prefetches are issued together, so their walks and misses overlap.
/// Measured at 1 M keys, one worker, alternating with one prefetch 6 ahead: 16
/// of 18 pairs faster, median +11 % (docs/BENCHMARKS.md).
const PREFETCH_BURST: usize = 8;

/// Asks `state` to start loading the state of the [`PREFETCH_BURST`] messages
/// from `skip` on in `ahead` (fewer where `ahead` ends sooner).
#[inline]
fn prefetch_state(state: &dyn StateBackend, ahead: &[Envelope], skip: usize) {
    for message in ahead.iter().skip(skip).take(PREFETCH_BURST) {
        state.prefetch(&message.target.function_type, &message.target.id);
    }
}

/// The last function type looked up and its entry.
type LastEntry<'a> = Option<(&'a TypeName, &'a Arc<crate::entry::FunctionEntry>)>;

/// The registered entry of `function`, through `last`: messages usually come in runs for
/// one type, and the hit costs a pointer comparison instead of hashing the name.
#[inline]
fn entry_of<'a>(
    app: &'a Application,
    last: &mut LastEntry<'a>,
    function: &TypeName,
) -> Option<&'a Arc<crate::entry::FunctionEntry>> {
    match *last {
        Some((t, entry)) if t == function => Some(entry),
        _ => {
            *last = app.functions.get_key_value(function);
            last.map(|(_, entry)| entry)
        }
    }
}

/// How many messages' state a durable backend reads in one batched read
/// ([`StateBackend::fetch`]), ahead of invoking them.
const FETCH_AHEAD: usize = 256;

/// Hands the state keys of the first [`FETCH_AHEAD`] of `messages` (every declared value
/// of embedded functions) to [`StateBackend::fetch`]; returns how many messages that
/// covered.
fn fetch_ahead(app: &Application, state: &mut dyn StateBackend, messages: &[Envelope]) -> usize {
    let n = messages.len().min(FETCH_AHEAD);
    let mut last = None;
    // Plain loops into a slice: nested `flat_map`s behind a `dyn Iterator` took ~150
    // instructions per message (callgrind).
    let mut keys = Vec::with_capacity(n);
    for m in &messages[..n] {
        let function = &m.target.function_type;
        if let Some(entry) = entry_of(app, &mut last, function) {
            for (slot, spec) in entry.specs.iter().enumerate() {
                keys.push(StateKey {
                    function,
                    id: &m.target.id,
                    spec: &spec.name,
                    slot: slot as u16,
                });
            }
        }
    }
    state.fetch(&keys);
    n
}

/// The entry of `function` in an operator's tally (a short list: an operator
/// serves few function types, the latest first is the usual hit). Entries
/// stay from one activation to the next, cleared when flushed, so a tally
/// allocates only when a type is first met.
///
/// The usual hit, the type met last, is inline; the search is not (inlining it all
/// into the operator's loop cost more than the call, measured).
#[inline(always)]
fn tally<'t>(
    counts: &'t mut Vec<(TypeName, FunctionCounts)>,
    function: &TypeName,
) -> &'t mut FunctionCounts {
    let last = counts.len().wrapping_sub(1);
    match counts.get(last) {
        Some((f, _)) if f == function => &mut counts[last].1,
        _ => tally_search(counts, function),
    }
}

/// [`tally`] past the last entry.
#[inline(never)]
fn tally_search<'t>(
    counts: &'t mut Vec<(TypeName, FunctionCounts)>,
    function: &TypeName,
) -> &'t mut FunctionCounts {
    let at = match counts.iter().rposition(|(f, _)| f == function) {
        Some(at) => at,
        None => {
            counts.push((function.clone(), FunctionCounts::default()));
            counts.len() - 1
        }
    };
    &mut counts[at].1
}

/// Counts `messages` into the feedback loop, per target function type.
fn count_looped(counts: &mut Vec<(TypeName, FunctionCounts)>, messages: &[Envelope]) {
    for m in messages {
        tally(counts, &m.target.function_type).loop_sent += 1;
    }
}

/// Gives each embedded invocation of a batch the batch's mean latency: `before` holds the
/// tally's invocation counts when the batch began, `elapsed` is its duration. Timing the
/// batch, not each invocation, keeps clock reads off the per-invocation path (two per
/// batch of up to a container of messages); a batch mixing function types gives each the
/// same mean.
fn observe_batch(
    counts: &mut [(TypeName, FunctionCounts)],
    before: &[u64],
    elapsed: std::time::Duration,
) {
    let invoked =
        |i: usize, c: &FunctionCounts| c.invocations - before.get(i).copied().unwrap_or(0);
    let total: u64 = counts
        .iter()
        .enumerate()
        .map(|(i, (_, c))| invoked(i, c))
        .sum();
    if total == 0 {
        return;
    }
    let mean = elapsed.as_secs_f64() / total as f64;
    for (i, (_, c)) in counts.iter_mut().enumerate() {
        let n = invoked(i, c);
        if n > 0 {
            c.latency.observe_n(mean, n);
        }
    }
}

type Stashed = (Capability<LoopTime>, Capability<LoopTime>, Vec<Envelope>);

impl Snapshotter {
    /// Keeps `message` in the outbox of the checkpoint in progress (with
    /// checkpoints), so a crash before it is delivered sends it again.
    fn keep(snap: &mut Option<Snapshotter>, message: &EgressMessage) {
        if let Some(s) = snap.as_mut() {
            s.outbox.push(message.clone());
        }
    }

    /// Tells every worker of every process, once, that this process is
    /// stopping, and again if it is failing: `Shared` is per process, and a
    /// job must never run on in part.
    fn announce_stop(
        &mut self,
        control: &mut OutputBuilderSession<'_, LoopTime, CapacityContainerBuilder<Vec<Control>>>,
        shared: &Shared,
        index: usize,
    ) {
        if !shared.shutting_down() {
            return;
        }
        let failure = shared.failure();
        if self.announced == Some(true) || (self.announced == Some(false) && failure.is_none()) {
            return;
        }
        let Some(cc) = self.control_cap.as_ref() else {
            return;
        };
        self.announced = Some(failure.is_some());
        control.session(cc).give(Control::Stop {
            worker: index,
            failure,
        });
    }

    /// Takes the writer's reports (oldest first): for each durable checkpoint its
    /// token goes out to every worker and the control capability moves to the next
    /// checkpoint; a failed write fails the job (and no later token goes out).
    /// Returns whether every reported write succeeded.
    fn written(
        &mut self,
        done: Vec<crate::checkpoint::Written>,
        control: &mut OutputBuilderSession<'_, LoopTime, CapacityContainerBuilder<Vec<Control>>>,
        shared: &Shared,
        index: usize,
    ) -> bool {
        let mut all_ok = true;
        for (id, result) in done {
            let Some(&(c, next, expected, last)) = self.writing.front() else {
                continue;
            };
            if id != expected {
                shared.fail(format!(
                    "worker {index}: the checkpoint writer reported checkpoint {id}, expected {expected}"
                ));
                return false;
            }
            self.writing.pop_front();
            match result {
                Ok((took, bytes)) if !shared.failed() => {
                    crate::failpoint::hit("checkpoint-after-write");
                    let m = &shared.metrics;
                    // The histogram first: a scrape never sees more checkpoints than writes timed.
                    m.observe_checkpoint(index, false, took.as_secs_f64());
                    Metrics::add(&m.checkpoint_bytes, bytes as u64);
                    Metrics::add(&m.checkpoints, 1);
                    m.last_checkpoint_id
                        .fetch_max(last, std::sync::atomic::Ordering::Relaxed);
                    m.last_checkpoint_bytes
                        .store(bytes as u64, std::sync::atomic::Ordering::Relaxed);
                    m.last_checkpoint_us.store(
                        took.as_micros() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    m.last_checkpoint_at_ms
                        .store(Clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(
                        worker = index,
                        checkpoint = last,
                        write_us = took.as_micros() as u64,
                        "checkpoint durable"
                    );
                    if c == FINISH_EPOCH {
                        continue;
                    }
                    // The token goes out before the capability moves on: whoever
                    // sees the frontier pass `c` has it.
                    if let Some(cc) = self.control_cap.as_mut() {
                        control.session(&*cc).give(Control::Written {
                            worker: index,
                            through: c,
                        });
                        cc.downgrade(&(next, 0));
                    }
                }
                Ok(_) => all_ok = false,
                Err(e) => {
                    Metrics::add(&shared.metrics.checkpoint_failures, 1);
                    shared.fail(format!(
                        "worker {index} could not write checkpoint {id}: {e}; the job stops and a restart resumes from the last complete checkpoint"
                    ));
                    all_ok = false;
                }
            }
        }
        all_ok
    }

    /// Logs `messages` sent into `epoch` if that is after the pending
    /// checkpoint: they are in flight when it is written.
    fn log_sent(&mut self, epoch: u64, messages: &[Envelope]) {
        if epoch > self.next {
            self.inflight
                .extend(messages.iter().map(|m| (epoch, m.clone())));
        }
    }
}

/// When messages sent by an invocation at `time` are sent: at `time`
/// (arriving at hop + 1), or past the hop cap at the next epoch, so that
/// this one can complete.
fn send_time((epoch, hop): LoopTime, hop_cap: u32) -> LoopTime {
    if hop + 1 < hop_cap {
        (epoch, hop)
    } else {
        (epoch + 1, 0)
    }
}

/// The state backend the operator invokes functions against.
enum Backend {
    Plain(Box<dyn StateBackend>),
    Durable(Box<dyn CheckpointBackend>),
}

impl Backend {
    fn state(&mut self) -> &mut dyn StateBackend {
        match self {
            Backend::Plain(b) => &mut **b,
            Backend::Durable(b) => &mut **b,
        }
    }
}

type LoopOutput = OutputBuilder<LoopTime, Batches<Envelope>>;
type EgressOutput = OutputBuilder<LoopTime, CapacityContainerBuilder<Vec<EgressMessage>>>;
type ControlOutput = OutputBuilder<LoopTime, CapacityContainerBuilder<Vec<Control>>>;

/// The function operator: returns (messages to loop back, egress records, control records).
#[allow(clippy::type_complexity)]
pub(crate) fn functions<'s>(
    messages: Stream<'s, LoopTime, Vec<Envelope>>,
    worker: FunctionWorker,
) -> (
    Stream<'s, LoopTime, Vec<Envelope>>,
    Stream<'s, LoopTime, Vec<EgressMessage>>,
    Stream<'s, LoopTime, Vec<Control>>,
) {
    let scope = messages.scope();
    let peers = scope.peers();
    let mut builder = OperatorBuilder::new("Functions".to_owned(), scope);
    let address = builder.operator_info().address;
    let activator = scope.activator_for(address.clone());
    let sync_activator = scope.worker().sync_activator_for(address.to_vec());
    let write_activator = scope.worker().sync_activator_for(address.to_vec());
    let stop_activator = scope.worker().sync_activator_for(address.to_vec());
    // The checkpoint writer wakes the operator when a batch is durable.
    let write_waker: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let _ = write_activator.activate();
    });
    // Route by id only, so all function types of one id share a worker.
    let mut input = builder.new_input(
        messages,
        ExchangeCore::<Batches<Envelope>, _>::new_core(move |e: &Envelope| {
            worker_for_id(&e.target.id, peers) as u64
        }),
    );
    let (loop_out, loop_stream) = builder.new_output::<Vec<Envelope>>();
    let (egress_out, egress_stream) = builder.new_output::<Vec<EgressMessage>>();
    let (control_out, control_stream) = builder.new_output::<Vec<Control>>();
    let mut loop_out: LoopOutput = OutputBuilder::from(loop_out);
    let mut egress_out: EgressOutput = OutputBuilder::from(egress_out);
    let mut control_out: ControlOutput = OutputBuilder::from(control_out);
    let index = scope.index();

    builder.build(move |initial| {
        let FunctionWorker {
            app,
            backend,
            shared,
            checkpoints,
        } = worker;
        // Shutdown wakes the operator: waiting for a remote answer or a delayed message, with
        // its sources paused, it may have nothing else to wake it, and its grace period
        // starts when it runs.
        shared.on_shutdown(Arc::new(move || {
            let _ = stop_activator.activate();
        }));
        let clock = Clock::new(app.settings.epoch_interval);
        let hop_cap = app.settings.hop_cap;
        let mut timers = Timers::default();
        // Held while delayed messages are pending, at (current epoch, 0).
        let mut timer_cap: Option<Capability<LoopTime>> = None;
        let mut initial = initial.into_iter();
        let (loop_cap, egress_cap, control_cap) = (initial.next(), initial.next(), initial.next());
        // Restored in-flight messages and outbox records go out at the start.
        let mut restored_inflight: Vec<Envelope> = Vec::new();
        let mut restored_outbox: Vec<Control> = Vec::new();
        let mut startup_cap = None;
        // Without checkpoints we hold nothing until delayed messages are pending.
        let (mut backend, mut snap) = match checkpoints {
            None => (Backend::Plain(backend), None),
            Some(Checkpointing { backend: durable, context, recovered, evidence }) => {
                if let Some(r) = recovered {
                    Metrics::add(&shared.metrics.checkpoint_restores, 1);
                    timers = r.timers;
                    restored_inflight = r.inflight;
                    restored_outbox = r
                        .replay
                        .into_iter()
                        .map(|(checkpoint, message)| Control::Replay { worker: index, checkpoint, message })
                        .collect();
                }
                if !timers.is_empty() {
                    timer_cap = loop_cap.clone();
                }
                if !restored_inflight.is_empty() || !restored_outbox.is_empty() {
                    startup_cap = loop_cap;
                }
                let next = context.borrow().schedule.next_at_or_after(0);
                let mut egress_cap = egress_cap;
                if let Some(c) = egress_cap.as_mut() {
                    c.downgrade(&(next, 0));
                }
                // The durable backend serves state; the plain one is unused.
                drop(backend);
                let snapshotter = Snapshotter {
                    context,
                    evidence,
                    next,
                    egress_cap,
                    control_cap,
                    announced: None,
                    writing: std::collections::VecDeque::new(),
                    stash: BTreeMap::new(),
                    inflight: Vec::new(),
                    outbox: Vec::new(),
                };
                (Backend::Durable(durable), Some(snapshotter))
            }
        };
        let mut scratch = Scratch::default();
        let mut unknown_function = RateLimit::default();
        let mut failed = RateLimit::default();
        let mut unknown_egress = RateLimit::default();
        let mut drain_deadline: Option<Instant> = None;
        // Whether shutdown dropped work (then no final checkpoint is written).
        let mut dropped_work = false;
        // Remote functions: the driver, and the capabilities held for the
        // times of messages queued or in flight (count per time).
        let mut remote: Option<RemoteDriver<LoopTime>> = None;
        if !app.endpoints.is_empty() {
            let waker = Arc::new(move || {
                let _ = sync_activator.activate();
            });
            let driver = shared
                .remote_pool(&app.endpoints)
                .and_then(|pool| RemoteDriver::new(&app.endpoints, pool, waker, app.remote_dead_letter.clone()));
            match driver {
                Ok(driver) => remote = Some(driver),
                Err(e) => shared.fail(format!("cannot set up remote function endpoints: {e}")),
            }
        }
        type Held = (Capability<LoopTime>, Capability<LoopTime>, usize);
        let mut held: BTreeMap<LoopTime, Held> = BTreeMap::new();
        let mut finished: Vec<Finished<LoopTime>> = Vec::new();
        // This worker's shares of the process-wide remote backlog and delayed-message gauges.
        let mut reported_queued = 0u64;
        let mut reported_delayed = 0u64;
        // When this worker last reported its stored state values (ms; at most once a second).
        let mut state_reported_ms = 0u64;
        // Messages to invoke now: (loop capability, egress capability, messages), at one time.
        let mut work: Vec<Stashed> = Vec::new();
        let mut started = false;
        // Invocations, failures and latencies per function type in one activation.
        let mut by_function: Vec<(TypeName, FunctionCounts)> = Vec::new();
        // The tally's invocation counts when a batch began (see `observe_batch`).
        let mut before: Vec<u64> = Vec::new();

        move |frontiers| {
            let now_ms = Clock::now_ms();
            let (mut failures, mut bad_egress) = (0u64, 0u64);
            let mut unregistered = 0u64;
            // Messages sent into the next epoch by the hop cap.
            let mut deferred = 0u64;
            // Messages this activation put into the feedback loop, and took out of it.
            let (mut looped, mut unlooped) = (0u64, 0u64);
            let mut loop_handle = loop_out.activate();
            let mut egress_handle = egress_out.activate();
            let mut control_handle = control_out.activate();

            // A restored checkpoint's in-flight messages go back into the
            // loop, and its undelivered outbox to the sinks, before anything else.
            if !started {
                started = true;
                if let Some(cap) = startup_cap.take() {
                    if !restored_inflight.is_empty() {
                        looped += restored_inflight.len() as u64;
                        count_looped(&mut by_function, &restored_inflight);
                        loop_handle.session_with_builder(&cap).give_iterator(restored_inflight.drain(..));
                    }
                }
                if let Some(s) = snap.as_mut() {
                    let next = s.next;
                    if let Some(cc) = s.control_cap.as_mut() {
                        if !restored_outbox.is_empty() {
                            control_handle.session(&*cc).give_iterator(restored_outbox.drain(..));
                        }
                        cc.downgrade(&(next, 0));
                    }
                }
            }

            // A stop or failure of this process is every process's: tell the
            // peers before anything of this worker is released.
            if let Some(s) = snap.as_mut() {
                s.announce_stop(&mut control_handle, &shared, index);
            }

            // After shutdown and its grace period — at once if the job failed —
            // in-flight messages are dropped (and counted) and held capabilities
            // released, so that runaway cycles or unreachable remote functions
            // cannot keep the process alive. With checkpoints, nothing of the
            // unfinished checkpoint is written or delivered: a restart resumes
            // from the last complete one.
            if shared.shutting_down() {
                let grace = if shared.failed() {
                    std::time::Duration::ZERO
                } else {
                    app.settings.shutdown_grace
                };
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + grace);
                if Instant::now() >= deadline {
                    let mut dropped = 0;
                    input.for_each(|_cap, data| {
                        dropped += data.len() as u64;
                        data.clear();
                    });
                    if let Some(driver) = remote.as_ref() {
                        dropped += driver.queued() as u64;
                    }
                    dropped += work.drain(..).map(|w| w.2.len() as u64).sum::<u64>();
                    if let Some(s) = snap.as_mut() {
                        dropped += std::mem::take(&mut s.stash).into_values().map(|w| w.2.len() as u64).sum::<u64>();
                        s.announce_stop(&mut control_handle, &shared, index);
                        s.egress_cap = None;
                        if let Some(cc) = s.control_cap.take() {
                            control_handle.session(&cc).give(Control::Finished { worker: index, clean: false });
                        }
                    }
                    if dropped > 0 || !held.is_empty() || timer_cap.is_some() {
                        dropped_work = true;
                        tracing::warn!(
                            dropped,
                            remote_in_flight = held.len(),
                            delayed = timers.len(),
                            "shutdown: dropping in-flight messages, pending remote invocations and delayed messages"
                        );
                    }
                    held.clear();
                    timer_cap = None;
                    return;
                }
                activator.activate_after(deadline.saturating_duration_since(Instant::now()));
            }

            // Messages of epochs after the checkpoint in progress wait until it is written.
            input.for_each(|cap, data| {
                let Some(&time) = cap.least() else {
                    return;
                };
                match snap.as_mut() {
                    Some(s) if time.0 > s.next => {
                        s.stash
                            .entry(time)
                            .or_insert_with(|| (cap.delayed(&time, 0), cap.delayed(&time, 1), Vec::new()))
                            .2
                            .append(data);
                    }
                    _ => work.push((cap.delayed(&time, 0), cap.delayed(&time, 1), std::mem::take(data))),
                }
            });

            let mut last = None;
            for (loop_cap, egress_cap, mut data) in work.drain(..) {
                let time @ (epoch, _) = *loop_cap.time();
                let send_time = send_time(time, hop_cap);
                let defers = send_time.0 > epoch;
                before.clear();
                before.extend(by_function.iter().map(|(_, c)| c.invocations));
                let batch_started = Instant::now();
                let send_cap = loop_cap.delayed(&send_time);
                let mut sent = loop_handle.session_with_builder(&send_cap);
                let mut egress = egress_handle.session(&egress_cap);
                // Messages are invoked where they lie in `data` (dropped, emptied, with it).
                let mut at = 0;
                // Messages ahead whose state a durable backend has read (batched).
                let fetching = backend.state().fetches();
                // Whether to start loading the state of messages ahead (in bursts).
                let prefetching = !fetching && backend.state().prefetches();
                let mut fetched = 0;
                // Messages left before the next burst of prefetches.
                let mut until_burst = 0;
                if prefetching {
                    prefetch_state(backend.state(), &data, 0);
                }
                while at < data.len() {
                    if fetching && fetched == 0 {
                        fetched = fetch_ahead(&app, backend.state(), &data[at..]);
                    }
                    at += 1;
                    let (done, ahead) = data.split_at_mut(at);
                    let envelope = &mut done[at - 1];
                    fetched = fetched.saturating_sub(1);
                    // A message of a function (not of an ingress) taken out of the loop.
                    let from_loop = u64::from(!envelope.metadata.is_some());
                    unlooped += from_loop;
                    // Start loading the state of the messages of the burst after
                    // the next: their cache misses then overlap the invocations in
                    // between instead of stalling their own. (A backend that
                    // fetches has looked up those entries in its batch read already.)
                    if prefetching {
                        if until_burst == 0 {
                            until_burst = PREFETCH_BURST;
                            prefetch_state(backend.state(), ahead, PREFETCH_BURST - 1);
                        }
                        until_burst -= 1;
                    }
                    let function_type = &envelope.target.function_type;
                    let Some(entry) = entry_of(&app, &mut last, function_type) else {
                        tally(&mut by_function, &envelope.target.function_type).loop_processed += from_loop;
                        if let Some(driver) = remote.as_mut().filter(|d| d.serves(&envelope.target.function_type)) {
                            held.entry(time)
                                .or_insert_with(|| (loop_cap.clone(), egress_cap.clone(), 0))
                                .2 += 1;
                            driver.enqueue(envelope.take(), time, backend.state(), now_ms);
                            continue;
                        }
                        failures += 1;
                        unregistered += 1;
                        let why = format!(
                            "no function of type `{}` is registered or served by an endpoint",
                            envelope.target.function_type
                        );
                        let failed_message = Some((envelope.target.clone(), envelope.take_value()));
                        if let Some(dead) = function_failed(&app, &shared, index, &why, failed_message, &mut unknown_function) {
                            Snapshotter::keep(&mut snap, &dead);
                            egress.give(dead);
                        }
                        continue;
                    };
                    let counts = tally(&mut by_function, &entry.function_type);
                    counts.invocations += 1;
                    counts.loop_processed += from_loop;
                    // The message, kept only where a failure would dead-letter it.
                    let kept = matches!(app.function_error, FunctionErrorAction::DeadLetter(_))
                        .then(|| (envelope.target.clone(), envelope.value.clone()));
                    match invoke(entry, envelope, backend.state(), &mut timers, now_ms, &mut scratch) {
                        Ok(effects) => {
                            if let Some(s) = snap.as_mut() {
                                s.log_sent(send_time.0, &effects.messages);
                            }
                            if defers {
                                deferred += effects.messages.len() as u64;
                            }
                            looped += effects.messages.len() as u64;
                            count_looped(&mut by_function, &effects.messages);
                            // (Most invocations send nothing: a drain's set-up and drop cost more
                            // than the check.)
                            if !effects.messages.is_empty() {
                                sent.give_iterator(effects.messages.drain(..));
                            }
                            if !effects.egress.is_empty() {
                                for message in effects.egress.drain(..) {
                                    if declared(&app, &shared, &message, &mut unknown_egress, &mut bad_egress) {
                                        Snapshotter::keep(&mut snap, &message);
                                        egress.give(message);
                                    }
                                }
                            }
                        }
                        Err(error) => {
                            failures += 1;
                            tally(&mut by_function, &entry.function_type).errors += 1;
                            let why = error.to_string();
                            if let Some(dead) = function_failed(&app, &shared, index, &why, kept, &mut failed) {
                                Snapshotter::keep(&mut snap, &dead);
                                egress.give(dead);
                            }
                        }
                    }
                }
                observe_batch(&mut by_function, &before, batch_started.elapsed());
                if !timers.is_empty() && timer_cap.is_none() {
                    timer_cap = Some(loop_cap.delayed(&(epoch + 1, 0)));
                }
            }

            if let Some(driver) = remote.as_mut() {
                let polled = driver.poll(backend.state(), &mut timers, now_ms, &mut finished);
                Metrics::add(&shared.metrics.remote_state_handshakes, driver.take_handshakes());
                if let Err(failure) = polled {
                    shared.fail(failure.message);
                }
                for Finished { function, failed, times, messages, egress, latency } in finished.drain(..) {
                    let n = times.len() as u64;
                    let counts = tally(&mut by_function, &function);
                    counts.invocations += n;
                    if failed {
                        counts.remote_failures += n;
                    }
                    counts.latency.observe_n(latency.as_secs_f64(), n);
                    // Effects go out at the batch's least time, whose capabilities we hold.
                    if let Some(least) = times.iter().min() {
                        if let Some((loop_cap, egress_cap, _)) = held.get(least) {
                            let send_time = send_time(*least, hop_cap);
                            if let Some(s) = snap.as_mut() {
                                s.log_sent(send_time.0, &messages);
                            }
                            if send_time.0 > least.0 {
                                deferred += messages.len() as u64;
                            }
                            looped += messages.len() as u64;
                            count_looped(&mut by_function, &messages);
                            loop_handle
                                .session_with_builder(&loop_cap.delayed(&send_time))
                                .give_iterator(messages.into_iter());
                            let mut session = egress_handle.session(egress_cap);
                            for message in egress {
                                if declared(&app, &shared, &message, &mut unknown_egress, &mut bad_egress) {
                                    Snapshotter::keep(&mut snap, &message);
                                    session.give(message);
                                }
                            }
                        }
                    }
                    // Delayed messages the batch scheduled need a capability
                    // before the batch's are released.
                    if !timers.is_empty() && timer_cap.is_none() {
                        if let Some((cap, _, _)) = times.iter().min().and_then(|t| held.get(t)) {
                            let epoch = cap.time().0;
                            timer_cap = Some(cap.delayed(&(epoch + 1, 0)));
                        }
                    }
                    for time in times {
                        if let Some(entry) = held.get_mut(&time) {
                            entry.2 -= 1;
                            if entry.2 == 0 {
                                held.remove(&time);
                            }
                        }
                    }
                }
            }

            if let Some(tc) = timer_cap.as_mut() {
                if shared.shutting_down() {
                    // Pending delayed messages stay in `timers`: with
                    // checkpoints the final checkpoint keeps them for the next run.
                    tracing::warn!(pending = timers.len(), "shutting down with delayed messages pending");
                    timer_cap = None;
                } else {
                    let epoch = clock.epoch_at(now_ms);
                    if tc.time().0 < epoch {
                        tc.downgrade(&(epoch, 0));
                    }
                    let due = timers.pop_due(now_ms);
                    if !due.is_empty() {
                        if let Some(s) = snap.as_mut() {
                            s.log_sent(tc.time().0, &due);
                        }
                        looped += due.len() as u64;
                        count_looped(&mut by_function, &due);
                        loop_handle.session_with_builder(&*tc).give_iterator(due.into_iter());
                    }
                    match timers.next_due_ms() {
                        None => timer_cap = None,
                        Some(next) => {
                            // Wake when the next message is due, and at every
                            // epoch boundary to let time advance.
                            let until_due = std::time::Duration::from_millis(next.saturating_sub(now_ms));
                            activator.activate_after(until_due.min(clock.until_next_epoch(now_ms)));
                        }
                    }
                }
            }

            if let Some(error) = backend.state().take_error() {
                shared.fail(format!("worker {index}: {error}"));
            }

            // Checkpoints the writer made durable: their tokens go out, and the
            // control capability moves past them.
            if let (Some(s), Backend::Durable(durable)) = (snap.as_mut(), &mut backend) {
                let done = durable.poll_written();
                s.written(done, &mut control_handle, &shared, index);
            }

            // The checkpoint: once no message of its epochs can still arrive,
            // hand it to the writer, let the sinks go on (they deliver it only
            // with every worker's token), and release what was held back.
            if let (Some(s), Backend::Durable(durable)) = (snap.as_mut(), &mut backend) {
                let frontier = &frontiers[0];
                if s.egress_cap.is_some() && !frontier.less_equal(&(s.next, u32::MAX)) {
                    let first_epoch = frontier.frontier().iter().map(|t| t.0).min();
                    let schedule = s.context.borrow().schedule;
                    let (c, id) = match first_epoch {
                        Some(f) => {
                            let c = schedule.last_before(f).unwrap_or(s.next);
                            (c, schedule.id(c))
                        }
                        None => (FINISH_EPOCH, schedule.final_id()),
                    };
                    // The final checkpoint is written only if nothing was dropped.
                    let clean = first_epoch.is_some() || (!dropped_work && !shared.failed());
                    let mut ok = true;
                    let next = match first_epoch {
                        Some(_) => schedule.next_at_or_after(c + 1),
                        None => FINISH_EPOCH,
                    };
                    if clean {
                        // This worker received nothing after `next`, so one
                        // write stands for every checkpoint from `next` to `c`.
                        let meta = CheckpointMeta {
                            id: schedule.id(s.next),
                            last: id,
                            sources: s.context.borrow_mut().positions_between(s.next, c),
                            timers: timers.clone(),
                            inflight: s.inflight.clone(),
                            ..CheckpointMeta::default()
                        };
                        // Later checkpoints still need what is in flight beyond `c`.
                        s.inflight.retain(|(e, _)| *e > c);
                        let (complete, delivered) = {
                            let evidence = s.evidence.borrow();
                            let id = |c: Option<u64>| c.map(|c| schedule.id_or_final(c, FINISH_EPOCH));
                            (id(evidence.written.through()), id(evidence.delivered.through()))
                        };
                        crate::failpoint::hit("checkpoint-before-write");
                        match durable.checkpoint_in_background(meta, &s.outbox, complete, delivered, &write_waker) {
                            Ok(stats) => {
                                s.outbox.clear();
                                s.writing.push_back((c, next, stats.id, id));
                                let m = &shared.metrics;
                                let us = stats.duration.as_micros() as u64;
                                m.observe_checkpoint(index, true, stats.duration.as_secs_f64());
                                if let Ok(mut pauses) = m.checkpoint_pauses_us.lock() {
                                    if pauses.len() < 1_000_000 {
                                        pauses.push(us);
                                    }
                                }
                                tracing::debug!(worker = index, checkpoint = id, changes = stats.changes,
                                    merged = stats.merged, us, "checkpoint handed to the writer");
                            }
                            Err(e) => {
                                Metrics::add(&shared.metrics.checkpoint_failures, 1);
                                shared.fail(format!(
                                    "worker {index} could not write checkpoint {id}: {e}; the job stops and a restart resumes from the last complete checkpoint"
                                ));
                                ok = false;
                            }
                        }
                    }
                    match first_epoch {
                        Some(_) if ok => {
                            s.next = next;
                            if let Some(cap) = s.egress_cap.as_mut() {
                                cap.downgrade(&(s.next, 0));
                            }
                            let later = s.stash.split_off(&(s.next + 1, 0));
                            let ready = std::mem::replace(&mut s.stash, later);
                            if !ready.is_empty() {
                                work.extend(ready.into_values());
                                activator.activate();
                            }
                        }
                        _ => {
                            // The end: every write finishes (and its token goes
                            // out) before this worker says it finished.
                            let done = durable.wait_written();
                            let written = s.written(done, &mut control_handle, &shared, index);
                            let ok = ok && written;
                            if first_epoch.is_none() && clean && ok {
                                tracing::info!(worker = index, checkpoint = id, "final checkpoint written");
                            }
                            s.announce_stop(&mut control_handle, &shared, index);
                            s.egress_cap = None;
                            if let Some(cc) = s.control_cap.take() {
                                control_handle
                                    .session(&cc)
                                    .give(Control::Finished { worker: index, clean: clean && ok });
                            }
                        }
                    }
                }
            }

            let m = &shared.metrics;
            let each_second = now_ms >= state_reported_ms.saturating_add(1000);
            if let Some(driver) = remote.as_ref() {
                let queued = driver.queued() as u64;
                if queued != reported_queued || each_second {
                    m.set_remote_backlog(index, &driver.queued_by_endpoint());
                }
                Metrics::move_gauge(&m.remote_queued, &mut reported_queued, queued);
                let total = Metrics::get(&m.remote_queued);
                m.remote_queued_peak.fetch_max(total, std::sync::atomic::Ordering::Relaxed);
            }
            Metrics::move_gauge(&m.delayed_pending, &mut reported_delayed, timers.len() as u64);
            if each_second {
                state_reported_ms = now_ms;
                if crate::observe::served() {
                    if let Some(census) = backend.state().census(now_ms) {
                        m.set_state(index, census);
                    }
                }
            }
            // Every invocation is in the tally by its type.
            let invocations = by_function.iter().map(|(_, c)| c.invocations).sum();
            Metrics::add(&m.invocations, invocations);
            Metrics::add(&m.failed_invocations, failures);
            Metrics::add(&m.unregistered, unregistered);
            Metrics::add(&m.hop_cap_deferrals, deferred);
            Metrics::add(&m.feedback_sent, looped);
            Metrics::add(&m.feedback_processed, unlooped);
            if by_function.iter().any(|(_, c)| !c.is_empty()) {
                // Types nothing serves (messages sent to invented names) are counted under
                // one name and leave the tally, so they cannot grow it or the series.
                let served = |f: &TypeName| {
                    app.functions.contains_key(f) || remote.as_ref().is_some_and(|d| d.serves(f))
                };
                m.count_functions(
                    index,
                    by_function.iter().map(|(f, c)| {
                        (if served(f) { f.as_str() } else { Metrics::UNREGISTERED }, c)
                    }),
                );
                by_function.retain_mut(|(f, c)| {
                    c.clear();
                    served(f)
                });
            }
            Metrics::add(&m.unknown_egress, bad_egress);
        }
    });

    (loop_stream, egress_stream, control_stream)
}

/// The newest checkpoint a probe's frontier has passed (all of them once it is empty).
/// Applies `--on-function-error` to a message a function failed on (or that
/// no function serves): fails the job, or counts and logs it (rate-limited),
/// or returns its dead letter for the egress.
fn function_failed(
    app: &Application,
    shared: &Shared,
    index: usize,
    why: &str,
    message: Option<(statefun_sdk::Address, statefun_sdk::TypedValue)>,
    log: &mut RateLimit,
) -> Option<EgressMessage> {
    match &app.function_error {
        FunctionErrorAction::Fail => {
            if !shared.failed() {
                shared.fail(format!(
                    "worker {index}: {why}; the job stops (--on-function-error fail): a restart resumes \
                     from the last checkpoint and delivers the message again; `--on-function-error skip` \
                     or `dead-letter=<egress>` goes on instead"
                ));
            }
            None
        }
        FunctionErrorAction::Skip => {
            if let Some(n) = log.hit() {
                tracing::error!(
                    failed = n,
                    "{why}; message dropped (--on-function-error skip)"
                );
            }
            None
        }
        FunctionErrorAction::DeadLetter(plan) => {
            let (address, argument) = message?;
            if let Some(n) = log.hit() {
                tracing::error!(failed = n, %address, dead_letter = %plan.egress, "{why}; message sent to the dead-letter egress");
            }
            Some(plan.remote(&address, why, argument))
        }
    }
}

/// Whether `message` goes to an egress module.yaml declares; if not, it is
/// counted, logged (rate-limited) and dropped — or, under `--on-function-error
/// fail`, the job fails — for Rust and remote functions alike.
fn declared(
    app: &Application,
    shared: &Shared,
    message: &EgressMessage,
    log: &mut RateLimit,
    dropped: &mut u64,
) -> bool {
    if app.egresses.contains_key(&message.egress) {
        return true;
    }
    if app.function_error == FunctionErrorAction::Fail && !shared.failed() {
        shared.fail(format!(
            "a function sent a record to egress `{}`, which module.yaml does not declare; the job \
             stops (--on-function-error fail): declare the egress, or run with `--on-function-error skip`",
            message.egress
        ));
        return false;
    }
    *dropped += 1;
    if let Some(n) = log.hit() {
        tracing::error!(egress = %message.egress, dropped = n,
            "egress message dropped: no egress with this id is declared in module.yaml");
    }
    false
}
