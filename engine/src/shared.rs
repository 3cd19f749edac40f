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
}

impl FunctionCounts {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.invocations == 0 && self.errors == 0 && self.remote_failures == 0
    }

    fn add(&mut self, other: &FunctionCounts) {
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.remote_failures += other.remote_failures;
        self.latency.merge(&other.latency);
    }

    /// Forgets everything counted, keeping the allocation.
    pub fn clear(&mut self) {
        self.invocations = 0;
        self.errors = 0;
        self.remote_failures = 0;
        self.latency.clear();
    }
}

/// Records and bytes, per ingress or egress id.
#[derive(Default)]
struct Flow {
    records: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

/// Counts by id: `(id, count)`, in id order.
pub type Counts = Vec<(String, u64)>;

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
    /// Records and bytes read per ingress id (see [`Metrics::ingress_counter`]).
    by_ingress: std::sync::Mutex<BTreeMap<String, Flow>>,
    /// Records and bytes written per egress id (see [`Metrics::count_egress`]).
    by_egress: std::sync::Mutex<BTreeMap<String, Flow>>,
    /// What each egress's sinks reported ([`Sink::take_stats`]), summed per egress id (see
    /// [`Metrics::count_sink`]).
    ///
    /// [`Sink::take_stats`]: statefun_connectors::Sink::take_stats
    sink_stats: std::sync::Mutex<BTreeMap<String, SinkStats>>,
    /// Delivery latency per egress id (see [`Metrics::observe_delivery`]).
    delivery: std::sync::Mutex<BTreeMap<String, Histogram>>,
    /// Messages functions sent to functions (the feedback loop), delayed ones when they
    /// fell due; with [`Metrics::feedback_processed`] the loop's backlog.
    pub feedback_sent: AtomicU64,
    /// Messages from functions (not from ingresses) the function operators took in to
    /// invoke (or to send to a remote endpoint).
    pub feedback_processed: AtomicU64,
    /// What was counted per function type (see [`Metrics::count_functions`]).
    by_function: std::sync::Mutex<BTreeMap<String, FunctionCounts>>,
    /// Messages for function types nothing serves (counted as failed invocations).
    pub unregistered: AtomicU64,
    /// Delayed messages pending, over the workers (a gauge; each worker adds its change).
    pub delayed_pending: AtomicU64,
    /// Messages sent into the next epoch because their hop reached the hop cap.
    pub hop_cap_deferrals: AtomicU64,
    /// Stored state values per worker (global index), as each last reported.
    state_values: std::sync::Mutex<BTreeMap<usize, u64>>,
    /// Checkpoints that failed (a write or hand-over error: the job stops).
    pub checkpoint_failures: AtomicU64,
    /// Bytes written by checkpoints, over all of them.
    pub checkpoint_bytes: AtomicU64,
    /// Workers that restored their state from a checkpoint at start (each start or restart
    /// that resumes counts once per worker).
    pub checkpoint_restores: AtomicU64,
    /// How long checkpoints took to encode and write (background writer), in seconds.
    pub checkpoint_write: std::sync::Mutex<Histogram>,
    /// How long workers paused for checkpoints, in seconds.
    pub checkpoint_pause: std::sync::Mutex<Histogram>,
    /// The workers' checkpoint pauses (µs: freezing the window and handing it to the
    /// writer), for the p50/p99 in benchmarks.
    pub checkpoint_pauses_us: std::sync::Mutex<Vec<u64>>,
}

/// Per id: `(id, records, bytes)`, in id order.
pub type Flows = Vec<(String, u64, u64)>;

impl Metrics {
    /// The counters of records and bytes read by ingress `id` (taken when an operator is
    /// built, so that counting costs one atomic add per batch, as the process total does).
    pub fn ingress_counter(&self, id: &str) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
        match self.by_ingress.lock() {
            Ok(mut m) => {
                let flow = m.entry(id.to_string()).or_default();
                (flow.records.clone(), flow.bytes.clone())
            }
            Err(_) => Default::default(),
        }
    }

    /// Counts records and bytes written by sinks, per egress id, and the records in the
    /// process total.
    pub fn count_egress<'a>(&self, written: impl IntoIterator<Item = (&'a str, u64, u64)>) {
        let mut total = 0;
        if let Ok(mut map) = self.by_egress.lock() {
            for (id, n, bytes) in written {
                total += n;
                let flow = match map.get(id) {
                    Some(flow) => flow,
                    None => map.entry(id.to_string()).or_default(),
                };
                Self::add(&flow.records, n);
                Self::add(&flow.bytes, bytes);
            }
        }
        Self::add(&self.records_out, total);
    }

    /// Adds what a sink of egress `id` reported since it was last asked (once per commit or
    /// flush, not per record); nothing for a sink with nothing to report.
    pub fn count_sink(&self, id: &str, stats: &SinkStats) {
        if *stats == SinkStats::default() {
            return;
        }
        if let Ok(mut map) = self.sink_stats.lock() {
            match map.get_mut(id) {
                Some(entry) => entry.add(stats),
                None => {
                    map.insert(id.to_string(), *stats);
                }
            }
        }
    }

    /// `(egress id, what its sinks reported)` so far, in id order, for egresses whose sinks
    /// reported anything.
    pub fn sink_stats(&self) -> Vec<(String, SinkStats)> {
        self.sink_stats
            .lock()
            .map(|m| m.iter().map(|(id, s)| (id.clone(), *s)).collect())
            .unwrap_or_default()
    }

    /// Adds a sink operator's delivery latencies of egress `id` (one observation per epoch
    /// of records a sink confirmed), once per flush or commit.
    pub fn observe_delivery(&self, id: &str, latencies: &Histogram) {
        if latencies.count() == 0 {
            return;
        }
        if let Ok(mut map) = self.delivery.lock() {
            match map.get_mut(id) {
                Some(h) => h.merge(latencies),
                None => {
                    map.insert(id.to_string(), latencies.clone());
                }
            }
        }
    }

    /// Delivery latency per egress id so far, in id order.
    pub fn delivery(&self) -> Vec<(String, Histogram)> {
        self.delivery
            .lock()
            .map(|m| m.iter().map(|(id, h)| (id.clone(), h.clone())).collect())
            .unwrap_or_default()
    }

    /// Adds an operator's tally of one activation per function type: one lock per
    /// activation, not per message; empty entries are skipped. Messages for a type
    /// nothing serves are counted apart ([`Metrics::unregistered`], shown as
    /// [`Metrics::UNREGISTERED`]), so a stream of bad targets cannot create one series per
    /// invented name.
    pub fn count_functions<'a>(
        &self,
        tally: impl IntoIterator<Item = (&'a str, &'a FunctionCounts)>,
    ) {
        if let Ok(mut map) = self.by_function.lock() {
            for (function, counts) in tally {
                if counts.is_empty() {
                    continue;
                }
                match map.get_mut(function) {
                    Some(entry) => entry.add(counts),
                    None => {
                        map.insert(function.to_string(), counts.clone());
                    }
                }
            }
        }
    }

    /// The label of failures for function types nothing serves.
    pub const UNREGISTERED: &'static str = "(unregistered)";

    /// What was counted per function type so far, in type order.
    pub fn by_function(&self) -> Vec<(String, FunctionCounts)> {
        self.by_function
            .lock()
            .map(|m| m.iter().map(|(f, c)| (f.clone(), c.clone())).collect())
            .unwrap_or_default()
    }

    /// Records a worker's count of stored state values.
    pub fn set_state_values(&self, worker: usize, values: u64) {
        if let Ok(mut map) = self.state_values.lock() {
            map.insert(worker, values);
        }
    }

    /// `(worker, stored state values)` as each worker last reported.
    pub fn state_values(&self) -> Vec<(usize, u64)> {
        self.state_values
            .lock()
            .map(|m| m.iter().map(|(w, n)| (*w, *n)).collect())
            .unwrap_or_default()
    }

    /// Records read per ingress id, and written per egress id, so far.
    pub fn by_id(&self) -> (Counts, Counts) {
        let (read, written) = self.flows();
        let records = |flows: Flows| flows.into_iter().map(|(id, n, _)| (id, n)).collect();
        (records(read), records(written))
    }

    /// Records and bytes read per ingress id, and written per egress id, so far.
    pub fn flows(&self) -> (Flows, Flows) {
        let read = |map: &std::sync::Mutex<BTreeMap<String, Flow>>| {
            map.lock()
                .map(|m| {
                    m.iter()
                        .map(|(id, f)| (id.clone(), Self::get(&f.records), Self::get(&f.bytes)))
                        .collect()
                })
                .unwrap_or_default()
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
        m.count_functions([
            ("ns/a", &counts(3, 1, 2e-6)),
            ("ns/b", &counts(2, 0, 1.0)),
            ("ns/c", &FunctionCounts::default()),
        ]);
        m.count_functions([("ns/a", &counts(1, 0, 0.3))]);
        let all = m.by_function();
        let summary: Vec<(&str, u64, u64, u64)> = all
            .iter()
            .map(|(f, c)| (f.as_str(), c.invocations, c.errors, c.latency.count()))
            .collect();
        assert_eq!(summary, vec![("ns/a", 4, 1, 4), ("ns/b", 2, 0, 2)]);
        let a = &all[0].1.latency;
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
        let (records, bytes) = m.ingress_counter("ns/in");
        Metrics::add(&records, 3);
        Metrics::add(&bytes, 30);
        m.count_egress([("ns/out", 2, 20), ("ns/out", 1, 5)]);
        let (read, written) = m.flows();
        assert_eq!(read, vec![("ns/in".to_string(), 3, 30)]);
        assert_eq!(written, vec![("ns/out".to_string(), 3, 25)]);
        assert_eq!(Metrics::get(&m.records_out), 3);
        let mut reported = 0;
        Metrics::move_gauge(&m.delayed_pending, &mut reported, 5);
        Metrics::move_gauge(&m.delayed_pending, &mut reported, 2);
        assert_eq!(Metrics::get(&m.delayed_pending), 2);
    }
}
