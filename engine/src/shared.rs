//! What the workers of one process share: the shutdown flag, the first
//! fatal failure, and metrics counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// The remote-function HTTP pool of this process, made by the first worker that needs it.
    remote: OnceLock<(Vec<HttpEndpoint>, PoolOrError)>,
    /// Counters, summed over the workers of this process.
    pub metrics: Metrics,
}

impl Shared {
    /// Asks every source to stop reading; the dataflow then drains and ends.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
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
    /// Records read per ingress id (see [`Metrics::ingress_counter`]).
    by_ingress: std::sync::Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// Records written per egress id (see [`Metrics::count_egress`]).
    by_egress: std::sync::Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// `(invocations, failures)` per function type (see [`Metrics::count_functions`]).
    by_function: std::sync::Mutex<BTreeMap<String, (u64, u64)>>,
    /// The workers' checkpoint pauses (µs: freezing the window and handing it to the
    /// writer), for the p50/p99 in benchmarks.
    pub checkpoint_pauses_us: std::sync::Mutex<Vec<u64>>,
}

impl Metrics {
    /// The counter of records read by ingress `id` (taken when an operator is built, so
    /// that counting costs one atomic add per batch, as the process total does).
    pub fn ingress_counter(&self, id: &str) -> Arc<AtomicU64> {
        Self::counter_in(&self.by_ingress, id)
    }

    /// Counts records written by sinks, per egress id and in the process total.
    pub fn count_egress<'a>(&self, written: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut total = 0;
        if let Ok(mut map) = self.by_egress.lock() {
            for (id, n) in written {
                total += n;
                map.entry(id.to_string())
                    .or_default()
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
        Self::add(&self.records_out, total);
    }

    /// Counts invocations and failures per function type (an operator's
    /// tally of one activation: one lock per activation, not per message).
    /// Failures for a type nothing serves are counted under
    /// [`Metrics::UNREGISTERED`], so a stream of bad targets cannot create
    /// one series per invented name.
    pub fn count_functions(&self, tally: impl IntoIterator<Item = (String, u64, u64)>) {
        if let Ok(mut map) = self.by_function.lock() {
            for (function, invocations, failures) in tally {
                let entry = map.entry(function).or_default();
                entry.0 += invocations;
                entry.1 += failures;
            }
        }
    }

    /// The label of failures for function types nothing serves.
    pub const UNREGISTERED: &'static str = "(unregistered)";

    /// `(function type, invocations, failures)` so far.
    pub fn by_function(&self) -> Vec<(String, u64, u64)> {
        self.by_function
            .lock()
            .map(|m| m.iter().map(|(f, (i, e))| (f.clone(), *i, *e)).collect())
            .unwrap_or_default()
    }

    /// Records read per ingress id, and written per egress id, so far.
    pub fn by_id(&self) -> (Counts, Counts) {
        let read = |map: &std::sync::Mutex<BTreeMap<String, Arc<AtomicU64>>>| {
            map.lock()
                .map(|m| m.iter().map(|(id, c)| (id.clone(), Self::get(c))).collect())
                .unwrap_or_default()
        };
        (read(&self.by_ingress), read(&self.by_egress))
    }

    fn counter_in(
        map: &std::sync::Mutex<BTreeMap<String, Arc<AtomicU64>>>,
        id: &str,
    ) -> Arc<AtomicU64> {
        match map.lock() {
            Ok(mut m) => m.entry(id.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
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

    #[test]
    fn function_tallies_add_up_per_type() {
        let m = Metrics::default();
        m.count_functions([("ns/a".to_string(), 3, 1), ("ns/b".to_string(), 2, 0)]);
        m.count_functions([
            ("ns/a".to_string(), 1, 0),
            (Metrics::UNREGISTERED.to_string(), 0, 4),
        ]);
        assert_eq!(
            m.by_function(),
            vec![
                (Metrics::UNREGISTERED.to_string(), 0, 4),
                ("ns/a".to_string(), 4, 1),
                ("ns/b".to_string(), 2, 0),
            ]
        );
    }
}
