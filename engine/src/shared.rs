//! What the workers of one process share: the shutdown flag, the first
//! fatal failure, and metrics counters.
//!
//! Metrics cost the hot path (nearly) nothing because workers never touch a
//! shared counter per record or invocation: operators tally locally (plain
//! integers and [`Histogram`]s) and add their tally here once per activation
//! or batch — one relaxed atomic add, or one short lock for the maps keyed
//! by id. `/metrics` reads and sums the result when scraped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use statefun_connectors::sink::SinkStats;
use statefun_module::HttpEndpoint;
use statefun_remote::RemotePool;

use crate::state::StateCensus;

/// A process's remote-function pool, or why it could not be made.
type PoolOrError = Result<Arc<RemotePool>, String>;

/// Process-wide run state shared by all workers of this process.
#[derive(Default)]
pub struct Shared {
    shutdown: AtomicBool,
    started: AtomicBool,
    /// Workers of this process whose dataflow is built, and how many there are.
    ready_workers: std::sync::atomic::AtomicUsize,
    local_workers: std::sync::atomic::AtomicUsize,
    failure: Mutex<Option<String>>,
    /// Called when shutdown begins (see [`Shared::on_shutdown`]).
    stop_wakers: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
    /// The remote-function HTTP pool of this process, made by the first worker that needs it.
    remote: OnceLock<(Vec<HttpEndpoint>, PoolOrError)>,
    /// Counters, summed over the workers of this process.
    pub metrics: Metrics,
}

impl Shared {
    /// Asks every source to stop reading; the dataflow then drains and ends.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let wakers = match self.stop_wakers.lock() {
            Ok(w) => w.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for wake in wakers {
            wake();
        }
    }

    /// Calls `wake` when shutdown begins (at once if it has). An operator that may sit idle
    /// — the function operator waiting for a remote answer that never comes, or for a
    /// delayed message due in an hour — registers its activator here, so its shutdown grace
    /// period starts when the signal arrives rather than at its next event, which may never
    /// come.
    pub fn on_shutdown(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        match self.stop_wakers.lock() {
            Ok(mut w) => w.push(wake.clone()),
            Err(poisoned) => poisoned.into_inner().push(wake.clone()),
        }
        // After the push: a shutdown that began before it may not have seen it.
        if self.shutting_down() {
            wake();
        }
    }

    /// Whether shutdown was requested (by a signal or a failure).
    #[inline]
    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Marks that this process's workers run: with several processes, timely
    /// has connected to every other one.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    /// Says how many workers this process runs (for [`Shared::ready`]).
    pub fn expect_workers(&self, n: usize) {
        self.local_workers.store(n, Ordering::SeqCst);
    }

    /// A worker of this process built its dataflow: state restored, sources opened.
    pub fn worker_ready(&self) {
        self.ready_workers.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether every worker of this process built its dataflow (see
    /// [`Shared::worker_ready`]); `/readyz` also requires no stop and no failure.
    pub fn ready(&self) -> bool {
        let expected = self.local_workers.load(Ordering::SeqCst);
        expected > 0 && self.ready_workers.load(Ordering::SeqCst) >= expected
    }

    /// Whether this process's workers run (see [`Shared::mark_started`]).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Records a fatal failure (the first one wins) and requests shutdown.
    pub fn fail(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::error!("{message}");
        if let Ok(mut slot) = self.failure.lock() {
            if slot.is_none() {
                *slot = Some(message);
            }
        }
        self.request_shutdown();
    }

    /// Whether a fatal failure was recorded (the job is failing).
    pub fn failed(&self) -> bool {
        self.failure.lock().map(|f| f.is_some()).unwrap_or(true)
    }

    /// The process's remote-function pool for `endpoints` (one runtime, and one
    /// connection pool and concurrency limit per endpoint, for all workers), made
    /// on first use; an error if an endpoint's URL or TLS files are unusable. Other
    /// endpoints than the first call's (a `Shared` reused for another app) get a pool
    /// of their own.
    pub fn remote_pool(&self, endpoints: &[HttpEndpoint]) -> Result<Arc<RemotePool>, String> {
        let make = || RemotePool::new(endpoints).map_err(|e| e.to_string());
        let (for_endpoints, pool) = self.remote.get_or_init(|| (endpoints.to_vec(), make()));
        if for_endpoints.as_slice() == endpoints {
            pool.clone()
        } else {
            make()
        }
    }

    /// The first fatal failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// The counters of every remote endpoint, if this run made its pool (`/metrics`).
    pub fn remote_stats(&self) -> Vec<statefun_remote::stats::EndpointSnapshot> {
        match self.remote.get() {
            Some((_, Ok(pool))) => pool.stats(),
            _ => Vec::new(),
        }
    }
}

/// Upper bounds (seconds) of the runtime's latency histograms — function invocations and
/// checkpoint writes and pauses: 1 µs (an embedded invocation takes a few hundred ns) to
/// 10 s (a remote invocation or a large checkpoint).
pub const LATENCY_BOUNDS: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the egress delivery histogram: from an epoch's end to the
/// sink's confirmation, 1 ms (a flush right after the epoch) to 5 min (a checkpoint
/// interval of minutes, or a destination that throttles).
pub const DELIVERY_BOUNDS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// A histogram with fixed upper bounds, kept by one thread (an operator's tally, or under
/// a lock) and merged into the process's when the tally is flushed.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last bucket is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

impl Default for Histogram {
    /// A latency histogram ([`LATENCY_BOUNDS`]).
    fn default() -> Self {
        Histogram::new(&LATENCY_BOUNDS)
    }
}

impl Histogram {
    /// An empty histogram with `bounds` (ascending; `+Inf` is added).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Adds `n` observations of `value` (an upper bound counts as inside its bucket, as
    /// Prometheus's `le` says).
    #[inline]
    pub fn observe_n(&mut self, value: f64, n: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get_mut(i) {
            *c += n;
        }
        self.sum += value * n as f64;
    }

    /// Adds one observation of `value`.
    pub fn observe(&mut self, value: f64) {
        self.observe_n(value, 1);
    }

    /// Adds `other`'s observations (with the same bounds; others are ignored).
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() != self.counts.len() {
            return;
        }
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        self.sum += other.sum;
    }

    /// Forgets every observation.
    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.sum = 0.0;
    }

    /// How many observations it holds.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of the observed values.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// The upper bounds, without `+Inf`.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Observations per bucket (not cumulative), `+Inf` last.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
}

/// What a function operator counts per function type in one activation, and what the
/// process has counted so far ([`Metrics::by_function`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionCounts {
    /// Invocations (Rust and remote).
    pub invocations: u64,
    /// Invocations whose Rust function returned an error.
    pub errors: u64,
    /// Remote invocations that failed for good (after retries, or an answer that could
    /// not be applied).
    pub remote_failures: u64,
    /// Invocation latency: embedded invocations each get the mean of their batch (two clock
    /// reads per batch, none per invocation); remote ones the time from sending their
    /// request to its answer.
    pub latency: Histogram,
    /// Messages sent to this type into the feedback loop (by functions, from timers when
    /// due, or restored in flight): with [`FunctionCounts::loop_processed`] the loop's
    /// backlog for the type.
    pub loop_sent: u64,
    /// Messages for this type taken out of the feedback loop (to invoke, to send to a
    /// remote endpoint, or to fail as unregistered).
    pub loop_processed: u64,
}

impl FunctionCounts {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.invocations == 0
            && self.errors == 0
            && self.remote_failures == 0
            && self.loop_sent == 0
            && self.loop_processed == 0
    }

    fn add(&mut self, other: &FunctionCounts) {
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.remote_failures += other.remote_failures;
        self.loop_sent += other.loop_sent;
        self.loop_processed += other.loop_processed;
        self.latency.merge(&other.latency);
    }

    /// Forgets everything counted, keeping the allocation.
    pub fn clear(&mut self) {
        self.invocations = 0;
        self.errors = 0;
        self.remote_failures = 0;
        self.loop_sent = 0;
        self.loop_processed = 0;
        self.latency.clear();
    }
}

/// Records and bytes, per ingress or egress id.
#[derive(Clone, Default)]
struct Flow {
    records: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

/// Counts by id: `(id, count)`, in id order.
pub type Counts = Vec<(String, u64)>;

/// Per id, per worker (global index).
type ByWorker<V> = std::sync::Mutex<BTreeMap<String, BTreeMap<usize, V>>>;

/// Everything of a [`ByWorker`] map, in id and worker order.
fn rows<V: Clone>(map: &ByWorker<V>) -> Vec<(String, usize, V)> {
    map.lock()
        .map(|m| {
            m.iter()
                .flat_map(|(id, by)| by.iter().map(|(w, v)| (id.clone(), *w, v.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// The entry of `(id, worker)`, made by `make` when new; allocates the id only when it is
/// new.
fn entry_with<'m, V>(
    map: &'m mut BTreeMap<String, BTreeMap<usize, V>>,
    id: &str,
    worker: usize,
    make: impl FnOnce() -> V,
) -> &'m mut V {
    if !map.contains_key(id) {
        map.insert(id.to_string(), BTreeMap::new());
    }
    map.get_mut(id)
        .map(|by| by.entry(worker).or_insert_with(make))
        .expect("inserted above")
}

/// [`entry_with`] a default value.
fn entry<'m, V: Default>(
    map: &'m mut BTreeMap<String, BTreeMap<usize, V>>,
    id: &str,
    worker: usize,
) -> &'m mut V {
    entry_with(map, id, worker, V::default)
}

/// Counters of one process. Workers add their local counts in batches.
#[derive(Default)]
pub struct Metrics {
    /// Records read from ingresses.
    pub records_in: AtomicU64,
    /// Ingress records skipped (bad key or value), each logged.
    pub records_skipped: AtomicU64,
    /// Bad ingress records written to a dead-letter egress instead.
    pub records_dead_lettered: AtomicU64,
    /// Function invocations.
    pub invocations: AtomicU64,
    /// Invocations that failed (function error or unknown function type), each logged.
    pub failed_invocations: AtomicU64,
    /// Egress records written by sinks.
    pub records_out: AtomicU64,
    /// Egress records for egress ids that module.yaml does not declare, each logged.
    pub unknown_egress: AtomicU64,
    /// The newest epoch whose egress records every worker has produced, as worker 0
    /// of this process sees it (the egress frontier).
    pub completed_epoch: AtomicU64,
    /// Messages waiting behind in-flight remote requests (a gauge): sources
    /// pause while it exceeds `Settings::max_remote_queued`.
    pub remote_queued: AtomicU64,
    /// The highest `remote_queued` seen by this process.
    pub remote_queued_peak: AtomicU64,
    /// Remote requests answered `IncompleteInvocationContext` (the function
    /// declared state the runtime did not send yet) and sent again.
    pub remote_state_handshakes: AtomicU64,
    /// Checkpoints written by this process's workers.
    pub checkpoints: AtomicU64,
    /// The id of the newest checkpoint written by a worker of this process.
    pub last_checkpoint_id: AtomicU64,
    /// How long the newest checkpoint took to encode and write, in microseconds (on the
    /// background writer; the worker's pauses are `checkpoint_pauses_us`).
    pub last_checkpoint_us: AtomicU64,
    /// Bytes written by the newest checkpoint.
    pub last_checkpoint_bytes: AtomicU64,
    /// When the newest checkpoint was written (ms since the Unix epoch).
    pub last_checkpoint_at_ms: AtomicU64,
    /// Records and bytes read per ingress id and worker (see [`Metrics::ingress_counter`]).
    by_ingress: ByWorker<Flow>,
    /// Records and bytes written per egress id and worker (see [`Metrics::count_egress`]).
    by_egress: ByWorker<Flow>,
    /// What each egress's sinks reported ([`Sink::take_stats`]), summed per egress id and
    /// worker (see [`Metrics::count_sink`]).
    ///
    /// [`Sink::take_stats`]: statefun_connectors::Sink::take_stats
    sink_stats: ByWorker<SinkStats>,
    /// Delivery latency per egress id and worker (see [`Metrics::observe_delivery`]).
    delivery: ByWorker<Histogram>,
    /// Messages functions sent to functions (the feedback loop), delayed ones when they
    /// fell due; with [`Metrics::feedback_processed`] the loop's backlog.
    pub feedback_sent: AtomicU64,
    /// Messages from functions (not from ingresses) the function operators took in to
    /// invoke (or to send to a remote endpoint).
    pub feedback_processed: AtomicU64,
    /// What was counted per function type and worker (see [`Metrics::count_functions`]).
    by_function: ByWorker<FunctionCounts>,
    /// Messages waiting behind in-flight remote requests, per endpoint and worker, as each
    /// worker last reported (see [`Metrics::set_remote_backlog`]).
    remote_backlog: ByWorker<u64>,
    /// Messages for function types nothing serves (counted as failed invocations).
    pub unregistered: AtomicU64,
    /// Delayed messages pending, over the workers (a gauge; each worker adds its change).
    pub delayed_pending: AtomicU64,
    /// Messages sent into the next epoch because their hop reached the hop cap.
    pub hop_cap_deferrals: AtomicU64,
    /// Stored state per worker (global index), as each last reported.
    state: std::sync::Mutex<BTreeMap<usize, StateCensus>>,
    /// Checkpoints that failed (a write or hand-over error: the job stops).
    pub checkpoint_failures: AtomicU64,
    /// Bytes written by checkpoints, over all of them.
    pub checkpoint_bytes: AtomicU64,
    /// Workers that restored their state from a checkpoint at start (each start or restart
    /// that resumes counts once per worker).
    pub checkpoint_restores: AtomicU64,
    /// How long checkpoints took to encode and write (background writer), in seconds, per
    /// worker (see [`Metrics::observe_checkpoint`]).
    checkpoint_write: std::sync::Mutex<BTreeMap<usize, Histogram>>,
    /// How long workers paused for checkpoints, in seconds, per worker.
    checkpoint_pause: std::sync::Mutex<BTreeMap<usize, Histogram>>,
    /// The workers' checkpoint pauses (µs: freezing the window and handing it to the
    /// writer), for the p50/p99 in benchmarks.
    pub checkpoint_pauses_us: std::sync::Mutex<Vec<u64>>,
}

/// Per id and worker: `(id, worker, records, bytes)`, in id and worker order.
pub type Flows = Vec<(String, usize, u64, u64)>;

impl Metrics {
    /// The counters of records and bytes read by ingress `id` on `worker` (taken when an
    /// operator is built, so that counting costs one atomic add per batch, as the process
    /// total does).
    pub fn ingress_counter(&self, id: &str, worker: usize) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
        match self.by_ingress.lock() {
            Ok(mut m) => {
                let flow = entry(&mut m, id, worker);
                (flow.records.clone(), flow.bytes.clone())
            }
            Err(_) => Default::default(),
        }
    }

    /// Counts records and bytes written by `worker`'s sinks, per egress id, and the records
    /// in the process total.
    pub fn count_egress<'a>(
        &self,
        worker: usize,
        written: impl IntoIterator<Item = (&'a str, u64, u64)>,
    ) {
        let mut total = 0;
        if let Ok(mut map) = self.by_egress.lock() {
            for (id, n, bytes) in written {
                total += n;
                let flow = entry(&mut map, id, worker);
                Self::add(&flow.records, n);
                Self::add(&flow.bytes, bytes);
            }
        }
        Self::add(&self.records_out, total);
    }

    /// Adds what a sink of egress `id` on `worker` reported since it was last asked (once
    /// per commit or flush, not per record); nothing for a sink with nothing to report.
    pub fn count_sink(&self, id: &str, worker: usize, stats: &SinkStats) {
        if *stats == SinkStats::default() {
            return;
        }
        if let Ok(mut map) = self.sink_stats.lock() {
            entry(&mut map, id, worker).add(stats);
        }
    }

    /// `(egress id, worker, what its sinks reported)` so far, in id and worker order, for
    /// sinks that reported anything.
    pub fn sink_stats(&self) -> Vec<(String, usize, SinkStats)> {
        rows(&self.sink_stats)
    }

    /// Adds the delivery latencies of egress `id` on `worker` (one observation per epoch of
    /// records a sink confirmed), once per flush or commit.
    pub fn observe_delivery(&self, id: &str, worker: usize, latencies: &Histogram) {
        if latencies.count() == 0 {
            return;
        }
        if let Ok(mut map) = self.delivery.lock() {
            entry_with(&mut map, id, worker, || Histogram::new(latencies.bounds()))
                .merge(latencies);
        }
    }

    /// Delivery latency per egress id and worker so far.
    pub fn delivery(&self) -> Vec<(String, usize, Histogram)> {
        rows(&self.delivery)
    }

    /// Records the messages waiting behind in-flight remote requests on `worker`, per
    /// endpoint (its `functions` pattern): the worker's whole list, replacing the last.
    pub fn set_remote_backlog(&self, worker: usize, backlog: &[(String, u64)]) {
        if let Ok(mut map) = self.remote_backlog.lock() {
            for by in map.values_mut() {
                by.remove(&worker);
            }
            for (endpoint, n) in backlog {
                *entry(&mut map, endpoint, worker) = *n;
            }
        }
    }

    /// `(endpoint, worker, messages queued)` as each worker last reported.
    pub fn remote_backlog(&self) -> Vec<(String, usize, u64)> {
        rows(&self.remote_backlog)
    }

    /// Adds `worker`'s tally of one activation per function type: one lock per
    /// activation, not per message; empty entries are skipped. Messages for a type
    /// nothing serves are counted apart ([`Metrics::unregistered`], shown as
    /// [`Metrics::UNREGISTERED`]), so a stream of bad targets cannot create one series per
    /// invented name.
    pub fn count_functions<'a>(
        &self,
        worker: usize,
        tally: impl IntoIterator<Item = (&'a str, &'a FunctionCounts)>,
    ) {
        if let Ok(mut map) = self.by_function.lock() {
            for (function, counts) in tally {
                if counts.is_empty() {
                    continue;
                }
                entry(&mut map, function, worker).add(counts);
            }
        }
    }

    /// The label of failures for function types nothing serves.
    pub const UNREGISTERED: &'static str = "(unregistered)";

    /// What was counted per function type so far, in type order.
    pub fn by_function(&self) -> Vec<(String, usize, FunctionCounts)> {
        rows(&self.by_function)
    }

    /// Observes how long one of `worker`'s checkpoints took: `pause` for the worker's
    /// pause, else the background write.
    pub fn observe_checkpoint(&self, worker: usize, pause: bool, seconds: f64) {
        if let Ok(mut map) = self.checkpoint_histograms(pause).lock() {
            map.entry(worker).or_default().observe(seconds);
        }
    }

    /// The per-worker histograms of checkpoint pauses (`pause`) or background writes.
    fn checkpoint_histograms(&self, pause: bool) -> &std::sync::Mutex<BTreeMap<usize, Histogram>> {
        if pause {
            &self.checkpoint_pause
        } else {
            &self.checkpoint_write
        }
    }

    /// `(worker, histogram)` of checkpoint pauses (`pause`) or background writes so far.
    pub fn checkpoint_times(&self, pause: bool) -> Vec<(usize, Histogram)> {
        self.checkpoint_histograms(pause)
            .lock()
            .map(|m| m.iter().map(|(w, h)| (*w, h.clone())).collect())
            .unwrap_or_default()
    }

    /// Records `worker`'s stored state.
    pub fn set_state(&self, worker: usize, census: StateCensus) {
        if let Ok(mut map) = self.state.lock() {
            map.insert(worker, census);
        }
    }

    /// `(worker, its stored state)` as each worker last reported.
    pub fn state(&self) -> Vec<(usize, StateCensus)> {
        self.state
            .lock()
            .map(|m| m.iter().map(|(w, c)| (*w, c.clone())).collect())
            .unwrap_or_default()
    }

    /// Records read per ingress id, and written per egress id, so far (summed over the
    /// workers).
    pub fn by_id(&self) -> (Counts, Counts) {
        let (read, written) = self.flows();
        let records = |flows: Flows| {
            let mut by: BTreeMap<String, u64> = BTreeMap::new();
            for (id, _, n, _) in flows {
                *by.entry(id).or_default() += n;
            }
            by.into_iter().collect()
        };
        (records(read), records(written))
    }

    /// Records and bytes read per ingress id and worker, and written per egress id and
    /// worker, so far.
    pub fn flows(&self) -> (Flows, Flows) {
        let read = |map: &ByWorker<Flow>| {
            rows(map)
                .into_iter()
                .map(|(id, w, f)| (id, w, Self::get(&f.records), Self::get(&f.bytes)))
                .collect()
        };
        (read(&self.by_ingress), read(&self.by_egress))
    }

    /// Moves a gauge kept as the sum of the workers' values by one worker's change: the
    /// worker last `reported` its value, which is now `now`.
    pub fn move_gauge(gauge: &AtomicU64, reported: &mut u64, now: u64) {
        if now > *reported {
            gauge.fetch_add(now - *reported, Ordering::Relaxed);
        } else if now < *reported {
            gauge.fetch_sub(*reported - now, Ordering::Relaxed);
        }
        *reported = now;
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Logs the first few occurrences of a recurring problem, then every 1000th,
/// so that bad input cannot flood the log while every case stays counted.
#[derive(Default)]
pub struct RateLimit {
    seen: u64,
}

impl RateLimit {
    /// Counts one occurrence; returns whether to log it, with the running count.
    pub fn hit(&mut self) -> Option<u64> {
        self.seen += 1;
        (self.seen <= 10 || self.seen.is_multiple_of(1000)).then_some(self.seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(invocations: u64, errors: u64, latency: f64) -> FunctionCounts {
        let mut c = FunctionCounts {
            invocations,
            errors,
            ..FunctionCounts::default()
        };
        c.latency.observe_n(latency, invocations);
        c
    }

    #[test]
    fn function_tallies_add_up_per_type() {
        let m = Metrics::default();
        m.count_functions(
            0,
            [
                ("ns/a", &counts(3, 1, 2e-6)),
                ("ns/b", &counts(2, 0, 1.0)),
                ("ns/c", &FunctionCounts::default()),
            ],
        );
        m.count_functions(0, [("ns/a", &counts(1, 0, 0.3))]);
        m.count_functions(1, [("ns/a", &counts(5, 0, 0.3))]);
        let all = m.by_function();
        let summary: Vec<(&str, usize, u64, u64, u64)> = all
            .iter()
            .map(|(f, w, c)| (f.as_str(), *w, c.invocations, c.errors, c.latency.count()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("ns/a", 0, 4, 1, 4),
                ("ns/a", 1, 5, 0, 5),
                ("ns/b", 0, 2, 0, 2)
            ]
        );
        let a = &all[0].2.latency;
        // 2 µs lands in the 2.5 µs bucket (index 1), 0.3 s in the 0.5 s one (index 17).
        assert_eq!((a.counts()[1], a.counts()[17]), (3, 1));
        assert!((a.sum() - (6e-6 + 0.3)).abs() < 1e-12);
    }

    #[test]
    fn histogram_bounds_are_inclusive_and_overflow_goes_to_inf() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        h.observe(1.0);
        h.observe_n(1.5, 2);
        h.observe(7.0);
        assert_eq!(h.counts(), &[1, 2, 1]);
        assert_eq!(h.count(), 4);
        let mut other = Histogram::new(&[1.0, 2.0]);
        other.observe(0.5);
        h.merge(&other);
        assert_eq!(h.counts(), &[2, 2, 1]);
        h.clear();
        assert_eq!((h.count(), h.sum()), (0, 0.0));
    }

    #[test]
    fn flows_count_records_and_bytes_per_id() {
        let m = Metrics::default();
        let (records, bytes) = m.ingress_counter("ns/in", 1);
        Metrics::add(&records, 3);
        Metrics::add(&bytes, 30);
        // The same counters again for the same worker; others for another.
        Metrics::add(&m.ingress_counter("ns/in", 1).0, 1);
        Metrics::add(&m.ingress_counter("ns/in", 0).0, 2);
        m.count_egress(0, [("ns/out", 2, 20), ("ns/out", 1, 5)]);
        m.count_egress(3, [("ns/out", 4, 8)]);
        let (read, written) = m.flows();
        let s = |id: &str| id.to_string();
        assert_eq!(read, vec![(s("ns/in"), 0, 2, 0), (s("ns/in"), 1, 4, 30)]);
        assert_eq!(
            written,
            vec![(s("ns/out"), 0, 3, 25), (s("ns/out"), 3, 4, 8)]
        );
        assert_eq!(m.by_id(), (vec![(s("ns/in"), 6)], vec![(s("ns/out"), 7)]));
        assert_eq!(Metrics::get(&m.records_out), 7);
        m.set_remote_backlog(0, &[(s("a/*"), 3), (s("b/*"), 1)]);
        m.set_remote_backlog(1, &[(s("a/*"), 2)]);
        m.set_remote_backlog(0, &[(s("b/*"), 4)]);
        assert_eq!(m.remote_backlog(), vec![(s("a/*"), 1, 2), (s("b/*"), 0, 4)]);
        let mut reported = 0;
        Metrics::move_gauge(&m.delayed_pending, &mut reported, 5);
        Metrics::move_gauge(&m.delayed_pending, &mut reported, 2);
        assert_eq!(Metrics::get(&m.delayed_pending), 2);
    }
}
