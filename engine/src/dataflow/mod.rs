//! Everything that touches timely-dataflow lives in this module, so that a
//! timely upgrade changes one place.
//!
//! The shape (DESIGN.md §2):
//!
//! ```text
//!  sources ─► router ─►┐ outer scope: time = epoch (u64)
//!                      │
//!        ┌─────────────▼──────────── inner scope: time = (epoch, hop) ─┐
//!        │ concat ─► Exchange(worker of id) ─► functions ─┬─► egress ──┼─► leave ─► sinks
//!        │   ▲                                            │            │
//!        │   └──────── feedback (+(0, 1)) ◄───────────────┘ messages   │
//!        └─────────────────────────────────────────────────────────────┘
//! ```
//!
//! A message sent at `(e, k)` arrives at `(e, k + 1)`; past the hop cap and
//! for delayed messages it moves to `(e + 1, 0)`, which is legal because the
//! order is lexicographic. So epoch `e` is complete exactly when every
//! cascade it started is quiet, and runaway cycles cannot stall it.

pub mod baseline;
pub mod checkpointing;
mod function;
mod rescale;
mod sink;
mod source;
mod stop;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::{
    Concat, Concatenate, ConnectLoop, Enter, Feedback, Leave, Probe,
};
use timely::dataflow::{ProbeHandle, Scope, Stream};
use timely::{CommunicationConfig, WorkerConfig};

use statefun_sdk::EgressMessage;

use crate::app::{Application, Durability};
use crate::checkpoint::rescale::Decision;
use crate::checkpoint::{agree, DurableBackend, RocksOptions, RocksStore, Schedule, WorkerReport};
use crate::envelope::Envelope;
use crate::shared::{Metrics, Shared};
use crate::state::{MemoryBackend, StateBackend};

use checkpointing::{Control, WorkerCheckpoint};
pub use function::{Checkpointing, FunctionWorker};

/// The time of the function loop: `(epoch, hop)`, ordered lexicographically.
pub type LoopTime = (u64, u32);

/// Where this process sits in a timely cluster (`-w`, `-n`, `-p`, `-h`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Worker threads per process (`-w`).
    pub workers: usize,
    /// Number of processes (`-n`).
    pub processes: usize,
    /// This process's index (`-p`).
    pub process: usize,
    /// A file with one `host:port` per process (`-h`); default `localhost:2101+i`.
    pub hostfile: Option<PathBuf>,
    /// The processes' addresses given inline (`--hosts`): a pattern with `{i}` expanded for
    /// `i` in `0..processes` (`statefun-{i}.statefun:2101`, as a StatefulSet names its
    /// pods), or a comma-separated list. Not together with `hostfile`.
    pub hosts: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
            hosts: None,
        }
    }
}

/// The addresses `--hosts` gives for `processes` processes: `pattern` with `{i}` replaced by
/// 0, 1, …, or a comma-separated list of exactly `processes` addresses.
///
/// ```
/// use statefun_engine::dataflow::expand_hosts;
/// assert_eq!(
///     expand_hosts("statefun-{i}.statefun:2101", 2).unwrap(),
///     ["statefun-0.statefun:2101", "statefun-1.statefun:2101"]
/// );
/// assert_eq!(expand_hosts("a:1, b:2", 2).unwrap(), ["a:1", "b:2"]);
/// assert!(expand_hosts("a:1", 2).is_err());
/// ```
pub fn expand_hosts(pattern: &str, processes: usize) -> Result<Vec<String>, String> {
    if pattern.contains("{i}") {
        return Ok((0..processes)
            .map(|i| pattern.replace("{i}", &i.to_string()))
            .collect());
    }
    let list: Vec<String> = pattern
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    if list.len() != processes {
        return Err(format!(
            "--hosts lists {} addresses, but -n is {processes}: give one host:port per process, \
             comma-separated, or a pattern with {{i}} (e.g. `statefun-{{i}}.statefun:2101`)",
            list.len()
        ));
    }
    Ok(list)
}

/// The ordinal at the end of a host name (`statefun-3` → 3), as a Kubernetes StatefulSet
/// names its pods: the process index for `--process-from-hostname`.
///
/// ```
/// use statefun_engine::dataflow::hostname_ordinal;
/// assert_eq!(hostname_ordinal("statefun-3"), Some(3));
/// assert_eq!(hostname_ordinal("my-app-12.example"), None);
/// assert_eq!(hostname_ordinal("statefun"), None);
/// ```
pub fn hostname_ordinal(hostname: &str) -> Option<usize> {
    let (_, ordinal) = hostname.trim().rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse().ok()
}

impl ClusterConfig {
    /// The timely configuration for this cluster position.
    pub fn timely_config(&self) -> Result<timely::Config, String> {
        if self.workers == 0 {
            return Err("-w/--workers must be at least 1".into());
        }
        let communication = if self.processes > 1 {
            if self.process >= self.processes {
                return Err(format!(
                    "-p/--process {} is out of range for -n/--processes {}: use 0..{}",
                    self.process,
                    self.processes,
                    self.processes - 1
                ));
            }
            let addresses = match (&self.hostfile, &self.hosts) {
                (Some(_), Some(_)) => {
                    return Err("give either -h/--hostfile or --hosts, not both".into())
                }
                (None, Some(pattern)) => expand_hosts(pattern, self.processes)?,
                (Some(path), None) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read hostfile {}: {e}", path.display()))?;
                    let lines: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .take(self.processes)
                        .collect();
                    if lines.len() < self.processes {
                        return Err(format!(
                            "hostfile {} lists {} addresses, but -n is {}: give one host:port per line",
                            path.display(),
                            lines.len(),
                            self.processes
                        ));
                    }
                    lines
                }
                (None, None) => (0..self.processes)
                    .map(|i| format!("localhost:{}", 2101 + i))
                    .collect(),
            };
            CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses,
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            CommunicationConfig::Process(self.workers)
        } else {
            CommunicationConfig::Thread
        };
        Ok(timely::Config {
            communication,
            worker: WorkerConfig::default(),
        })
    }
}

/// Builds the function graph inside `scope`: messages in, egress records out.
///
/// This is the library entry point: `ingress` may come from
/// [`ingress_stream`] or from any other operator of the caller's dataflow,
/// and the returned egress stream can feed sinks ([`attach_sinks`]) or
/// further analysis (e.g. differential-dataflow).
pub fn build_function_graph<'s>(
    scope: Scope<'s, u64>,
    ingress: Stream<'s, u64, Vec<Envelope>>,
    worker: FunctionWorker,
) -> Stream<'s, u64, Vec<EgressMessage>> {
    function_graph(scope, ingress, worker).0
}

/// The function graph with its control stream (restored outbox records and
/// finish announcements for checkpointed sinks).
#[allow(clippy::type_complexity)]
fn function_graph<'s>(
    scope: Scope<'s, u64>,
    ingress: Stream<'s, u64, Vec<Envelope>>,
    worker: FunctionWorker,
) -> (
    Stream<'s, u64, Vec<EgressMessage>>,
    Stream<'s, u64, Vec<Control>>,
) {
    scope.scoped::<LoopTime, _, _>("Functions", move |inner| {
        let (handle, loop_stream) = inner.feedback::<Vec<Envelope>>((0, 1));
        let messages = ingress.enter(inner).concat(loop_stream);
        let (sent, egress, control) = function::functions(messages, worker);
        sent.connect_loop(handle);
        (egress.leave(scope), control.leave(scope))
    })
}

/// One stream of routed messages from every ingress of `app` on this worker.
///
/// `progress` is a probe on the completed output (e.g. the egress stream):
/// sources pause while more than `max_epochs_in_flight` epochs are incomplete.
pub fn ingress_stream<'s>(
    scope: Scope<'s, u64>,
    app: &Arc<Application>,
    shared: &Arc<Shared>,
    progress: &ProbeHandle<u64>,
) -> Stream<'s, u64, Vec<Envelope>> {
    checkpointed_ingress_stream(scope, app, shared, progress, None)
}

fn checkpointed_ingress_stream<'s>(
    scope: Scope<'s, u64>,
    app: &Arc<Application>,
    shared: &Arc<Shared>,
    progress: &ProbeHandle<u64>,
    checkpoint: Option<checkpointing::SharedCheckpoint>,
) -> Stream<'s, u64, Vec<Envelope>> {
    let streams: Vec<_> = app
        .ingresses
        .iter()
        .map(|plan| source::ingress(scope, plan, app, shared, progress, checkpoint.clone()))
        .collect();
    scope.concatenate(streams)
}

/// Writes egress records to the sinks declared in module.yaml.
pub fn attach_sinks<'s>(
    egress: Stream<'s, u64, Vec<EgressMessage>>,
    app: &Arc<Application>,
    shared: &Arc<Shared>,
) {
    sink::sinks(egress, app.clone(), shared.clone());
}

/// Counts reported at the end of a run (summed over this process's workers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Ingress records read.
    pub records_in: u64,
    /// Ingress records skipped as bad input.
    pub records_skipped: u64,
    /// Bad ingress records sent to a dead-letter egress.
    pub records_dead_lettered: u64,
    /// Function invocations.
    pub invocations: u64,
    /// Failed invocations.
    pub failed_invocations: u64,
    /// Egress records written.
    pub records_out: u64,
    /// Egress records for undeclared egresses.
    pub unknown_egress: u64,
}

impl RunReport {
    fn from_metrics(m: &Metrics) -> Self {
        RunReport {
            records_in: Metrics::get(&m.records_in),
            records_skipped: Metrics::get(&m.records_skipped),
            records_dead_lettered: Metrics::get(&m.records_dead_lettered),
            invocations: Metrics::get(&m.invocations),
            failed_invocations: Metrics::get(&m.failed_invocations),
            records_out: Metrics::get(&m.records_out),
            unknown_egress: Metrics::get(&m.unknown_egress),
        }
    }
}

/// A factory of per-worker state backends (worker index, peers).
pub type BackendFactory = Arc<dyn Fn(usize, usize) -> Box<dyn StateBackend> + Send + Sync>;

/// The in-memory backend factory.
pub fn memory_backend() -> BackendFactory {
    Arc::new(|_, _| Box::new(MemoryBackend::default()))
}

/// Runs `app` on this process's workers until every ingress is exhausted and
/// all work is done, or until shutdown is requested through `shared`.
pub fn run(
    app: Arc<Application>,
    cluster: &ClusterConfig,
    shared: Arc<Shared>,
    backends: BackendFactory,
    log_interval: Duration,
) -> Result<RunReport, String> {
    let config = cluster.timely_config()?;
    let local_workers = cluster.workers.max(1);
    shared.expect_workers(local_workers);
    let started = Instant::now();
    let worker_shared = shared.clone();
    let durability = app.settings.durability.clone();
    if let Some(d) = &durability {
        std::fs::create_dir_all(&d.state_dir).map_err(|e| {
            format!(
                "cannot create the state directory {}: {e}; check the path and its permissions",
                d.state_dir.display()
            )
        })?;
    }
    // Timely panics in the calling thread when it joins communication
    // threads that panicked (a peer process died): caught here, it is the
    // run's failure, so that `--restart` can run the job again.
    let execution = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let shared = worker_shared.clone();
        shared.mark_started();
        let probe = ProbeHandle::new();
        let stop = match &durability {
            None => {
                let stop = worker.dataflow::<u64, _, _>(|scope| {
                    let ingress = ingress_stream(scope, &app, &shared, &probe);
                    let function_worker =
                        FunctionWorker::new(app.clone(), backends(index, peers), shared.clone());
                    let egress =
                        build_function_graph(scope, ingress, function_worker).probe_with(&probe);
                    attach_sinks(egress, &app, &shared);
                    stop::job_wide_stop(scope, &shared, &probe)
                });
                shared.worker_ready();
                stop
            }
            Some(d) => {
                let Some((durable, recovered)) = recover(worker, d, &shared, &app, local_workers) else {
                    return;
                };
                let every = (d.checkpoint_interval.as_millis()
                    / app.settings.epoch_interval.as_millis().max(1))
                .max(1) as u64;
                let schedule = Schedule::new(every, recovered.as_ref().map(|r| r.id));
                let resume_positions = recovered
                    .as_ref()
                    .map(|r| r.sources.iter().cloned().collect())
                    .unwrap_or_default();
                let resuming = recovered.is_some();
                let context = Rc::new(RefCell::new(WorkerCheckpoint::new(schedule, resume_positions)));
                let evidence = checkpointing::CheckpointEvidence::new(peers);
                worker.dataflow::<u64, _, _>(|scope| {
                    let ingress =
                        checkpointed_ingress_stream(scope, &app, &shared, &probe, Some(context.clone()));
                    let function_worker = FunctionWorker::durable(
                        app.clone(),
                        shared.clone(),
                        Checkpointing {
                            backend: Box::new(durable),
                            context,
                            recovered,
                            evidence: evidence.clone(),
                        },
                    );
                    let (egress, control) = function_graph(scope, ingress, function_worker);
                    let egress = egress.probe_with(&probe);
                    sink::checkpointed_sinks(
                        egress,
                        control,
                        app.clone(),
                        shared.clone(),
                        schedule,
                        resuming,
                        evidence.clone(),
                    );
                });
                shared.worker_ready();
                let mut progress = ProgressLog::new(log_interval);
                while worker.step_or_park(Some(Duration::from_millis(50))) {
                    if index == 0 {
                        let epoch = probe.with_frontier(|f| f.first().copied());
                        progress.tick(&shared.metrics, epoch);
                    }
                }
                // Every sink delivered the final checkpoint: its outbox is
                // done with, so a restart does not send it again.
                let all_delivered = evidence.borrow().delivered.covers(checkpointing::FINISH_EPOCH);
                if all_delivered && !shared.failed() {
                    if let Err(e) = forget_outboxes(d, index, peers) {
                        tracing::warn!(worker = index, "{e}; a restart re-sends the last checkpoint's records to at-least-once egresses");
                    }
                }
                return;
            }
        };
        let mut progress = ProgressLog::new(log_interval);
        while worker.step_or_park(Some(Duration::from_millis(50))) {
            if index == 0 {
                let epoch = probe.with_frontier(|f| f.first().copied());
                progress.tick(&shared.metrics, epoch);
            }
            // The work is done: let the stop signal go now, not at its next poll.
            if probe.done() {
                stop.activate();
            }
        }
    })
    .map_err(|e| format!("cannot start timely workers: {e}"))?;
        Ok::<_, String>(guards.join())
    }));
    match execution {
        Ok(joined) => {
            for (i, result) in joined?.into_iter().enumerate() {
                if let Err(e) = result {
                    shared.fail(format!("worker {i} failed: {e}"));
                }
            }
        }
        Err(_) => shared.fail(
            "the connection to another process of the job broke (it stopped or died); every process stops"
                .to_string(),
        ),
    }
    let report = RunReport::from_metrics(&shared.metrics);
    tracing::info!(
        elapsed_s = started.elapsed().as_secs_f64(),
        records_in = report.records_in,
        records_skipped = report.records_skipped,
        records_dead_lettered = report.records_dead_lettered,
        invocations = report.invocations,
        failed_invocations = report.failed_invocations,
        records_out = report.records_out,
        "run finished"
    );
    match shared.failure() {
        Some(failure) => Err(failure),
        None => Ok(report),
    }
}

/// Drops the outboxes of worker `index`'s store after a clean finish.
fn forget_outboxes(d: &Durability, index: usize, peers: usize) -> Result<(), String> {
    let path = d.state_dir.join(format!("worker-{index}"));
    let store = RocksStore::open(
        &path,
        &RocksOptions {
            block_cache_bytes: 1 << 20,
        },
    )
    .map_err(|e| e.to_string())?;
    let (mut backend, _) = DurableBackend::open(store, index, peers)?;
    backend.forget_outboxes()
}

/// Opens this worker's durable state, agrees with every worker on the
/// checkpoint to restore, and restores it. `None` (after failing the job)
/// if any worker cannot; every worker then returns, so none waits forever.
///
/// When the state was written by another number of workers, the workers first
/// rescale it (`rescale`, decided by [`crate::checkpoint::rescale::decide`]) and then
/// restore as usual.
fn recover(
    worker: &mut timely::worker::Worker,
    durability: &Durability,
    shared: &Shared,
    app: &Arc<Application>,
    local_workers: usize,
) -> Option<(
    DurableBackend<RocksStore>,
    Option<crate::checkpoint::Recovered>,
)> {
    let (index, peers) = (worker.index(), worker.peers());
    let path = durability.state_dir.join(format!("worker-{index}"));
    let options = RocksOptions {
        block_cache_bytes: durability.block_cache_bytes,
    };
    let failed = |error: String| WorkerReport {
        worker: index,
        peers: None,
        restorable: Vec::new(),
        error: Some(error),
        merged: false,
        missing: false,
    };
    let fail = |e: String| {
        shared.fail(format!(
            "cannot restore from {}: {e}",
            durability.state_dir.display()
        ))
    };
    let mut rescaled = false;
    let (mut backend, reports, missing) = loop {
        let missing = !path.exists();
        let opened = RocksStore::open(&path, &options)
            .map_err(|e| e.to_string())
            .and_then(|store| DurableBackend::open(store, index, peers));
        let (backend, report) = match opened {
            Ok((backend, report)) => (Some(backend), WorkerReport { missing, ..report }),
            Err(e) => (None, failed(e)),
        };
        let inventory = rescale::inventory(
            &durability.state_dir,
            index,
            peers,
            local_workers,
            report.clone(),
        );
        let inventories = checkpointing::exchange_all(worker, inventory);
        let decision = crate::checkpoint::rescale::decide(&inventories, peers);
        let holds_nothing = report.peers.is_none() && report.restorable.is_empty();
        let (plan, finish) = match decision {
            Ok(Decision::Keep) => {
                let reports = inventories
                    .into_iter()
                    .filter_map(|i| i.found.into_iter().find(|f| f.own))
                    .map(|f| f.report)
                    .collect::<Vec<_>>();
                break (backend, reports, missing);
            }
            Ok(Decision::Rescale(plan)) => (plan, false),
            Ok(Decision::Finish(plan)) => (plan, true),
            Err(e) => {
                if missing {
                    // Leave no new empty directory behind: the next start must
                    // see it missing again, not as a worker that wrote nothing.
                    drop(backend);
                    let _ = std::fs::remove_dir_all(&path);
                }
                fail(e);
                return None;
            }
        };
        // The rescale opens the databases itself; a new worker's empty one makes room
        // for the database the rescale builds.
        drop(backend);
        if holds_nothing {
            let _ = std::fs::remove_dir_all(&path);
        }
        let result = if rescaled {
            Err("the rescale did not take effect (the state directories changed while the job started)".to_string())
        } else {
            rescale::carry_out(worker, durability, app, shared, &plan, finish)
        };
        if let Err(e) = result {
            fail(e);
            return None;
        }
        rescaled = true;
    };
    let agreed = match agree(&reports, peers) {
        Ok(agreed) => agreed,
        Err(e) => {
            if missing {
                // Leave no new empty directory behind: the next start must
                // see it missing again, not as a worker that wrote nothing.
                drop(backend.take());
                let _ = std::fs::remove_dir_all(&path);
            }
            fail(e);
            return None;
        }
    };
    let restored = match backend.as_mut() {
        Some(b) => b.restore(agreed),
        None => Err("state not opened".to_string()),
    };
    // A second round, so that a worker that failed to restore stops everyone.
    let status = match &restored {
        Ok(_) => WorkerReport {
            worker: index,
            peers: Some(peers),
            restorable: Vec::new(),
            error: None,
            merged: false,
            missing: false,
        },
        Err(e) => failed(e.clone()),
    };
    let statuses = checkpointing::exchange_all(worker, status);
    if let Some(e) = statuses.iter().find_map(|r| r.error.as_ref()) {
        fail(e.clone());
        return None;
    }
    let (backend, recovered) = (backend?, restored.ok()?);
    if index == 0 {
        match &recovered {
            Some(r) => {
                let (generation, epoch) = crate::checkpoint::describe_id(r.id);
                tracing::info!(
                    checkpoint = r.id,
                    generation,
                    epoch,
                    state_dir = %durability.state_dir.display(),
                    "restoring checkpoint"
                );
            }
            None => {
                tracing::info!(state_dir = %durability.state_dir.display(), "no checkpoint found: starting fresh")
            }
        }
    }
    if let Some(r) = &recovered {
        tracing::debug!(
            worker = index,
            delayed = r.timers.len(),
            inflight = r.inflight.len(),
            replay = r.replay.len(),
            "restored"
        );
    }
    Some((backend, recovered))
}

/// Logs throughput every `interval`: records in/out per second and the epoch frontier.
struct ProgressLog {
    interval: Duration,
    last: Instant,
    last_in: u64,
    last_out: u64,
    last_invocations: u64,
}

impl ProgressLog {
    fn new(interval: Duration) -> Self {
        ProgressLog {
            interval,
            last: Instant::now(),
            last_in: 0,
            last_out: 0,
            last_invocations: 0,
        }
    }

    fn tick(&mut self, m: &Metrics, epoch: Option<u64>) {
        // The egress frontier at `epoch`: every epoch before it is complete.
        if let Some(e) = epoch {
            m.completed_epoch
                .store(e.saturating_sub(1), std::sync::atomic::Ordering::Relaxed);
        }
        let elapsed = self.last.elapsed();
        if elapsed < self.interval {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let (records_in, records_out, invocations) = (
            Metrics::get(&m.records_in),
            Metrics::get(&m.records_out),
            Metrics::get(&m.invocations),
        );
        tracing::info!(
            in_per_s = ((records_in - self.last_in) as f64 / secs).round(),
            out_per_s = ((records_out - self.last_out) as f64 / secs).round(),
            invocations_per_s = ((invocations - self.last_invocations) as f64 / secs).round(),
            records_in,
            records_out,
            skipped = Metrics::get(&m.records_skipped),
            dead_lettered = Metrics::get(&m.records_dead_lettered),
            failed = Metrics::get(&m.failed_invocations),
            epoch_frontier = epoch,
            checkpoints = Metrics::get(&m.checkpoints),
            last_checkpoint_ms = Metrics::get(&m.last_checkpoint_us) as f64 / 1000.0,
            last_checkpoint_bytes = Metrics::get(&m.last_checkpoint_bytes),
            checkpoint_age_ms = match Metrics::get(&m.last_checkpoint_at_ms) {
                0 => None,
                at => Some(crate::clock::Clock::now_ms().saturating_sub(at)),
            },
            "progress"
        );
        self.last = Instant::now();
        self.last_in = records_in;
        self.last_out = records_out;
        self.last_invocations = invocations;
    }
}
