//! Per-endpoint counters of remote invocations, for the engine's `/metrics`.
//!
//! Kept by the HTTP client on its own runtime (the worker threads never touch them): every
//! call to an endpoint adds to its [`EndpointStats`] with a few relaxed atomic operations,
//! and a scrape reads a [`EndpointSnapshot`] of each through [`crate::RemotePool::stats`].
//! The endpoint is named by its `functions` pattern (`example/*`), the one identity an
//! endpoint has in module.yaml; its URL could carry credentials and never becomes a label.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::client::RemoteErrorKind;

/// Upper bounds (seconds) of the request latency histogram: 1 ms to 60 s, for the round
/// trips of remote functions (a local socket answers in about a millisecond; the default
/// call timeout is a minute).
pub const LATENCY_BOUNDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds of the batch size histogram (messages per request): powers of two up to
/// 1024, around the default `maxNumBatchRequests` of 1000.
pub const BATCH_BOUNDS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The failure kinds counted per endpoint (labels of `statefun_remote_request_failures_total`).
pub const FAILURE_KINDS: [&str; 7] = [
    "status",
    "timeout",
    "request_too_large",
    "response_too_large",
    "invalid_url",
    "tls",
    "runtime",
];

impl RemoteErrorKind {
    /// The kind as a metrics label (one of [`FAILURE_KINDS`], or `no_endpoint`).
    pub fn label(&self) -> &'static str {
        match self {
            RemoteErrorKind::NoEndpoint => "no_endpoint",
            RemoteErrorKind::InvalidUrl(_) => "invalid_url",
            RemoteErrorKind::Tls(_) => "tls",
            RemoteErrorKind::Status { .. } => "status",
            RemoteErrorKind::Timeout { .. } => "timeout",
            RemoteErrorKind::RequestTooLarge { .. } => "request_too_large",
            RemoteErrorKind::ResponseTooLarge { .. } => "response_too_large",
            RemoteErrorKind::Runtime(_) => "runtime",
        }
    }
}

/// A histogram any thread may add to without a lock (fixed bounds, one atomic per bucket).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<AtomicU64>,
    /// The sum of the observed values, in millionths (µs for seconds).
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram with `bounds` (ascending upper bounds; `+Inf` is added).
    pub fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Adds one observation of `value`.
    pub fn observe(&self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// What it holds now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Ascending upper bounds; `counts` has one more entry, for `+Inf`.
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative).
    pub counts: Vec<u64>,
    /// The sum of the observed values.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// How many observations it holds.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The counters of one endpoint (see the module docs).
#[derive(Debug)]
pub struct EndpointStats {
    requests: AtomicU64,
    retries: AtomicU64,
    in_flight: AtomicU64,
    failures: [AtomicU64; FAILURE_KINDS.len()],
    latency: AtomicHistogram,
    batch: AtomicHistogram,
}

impl Default for EndpointStats {
    fn default() -> Self {
        EndpointStats {
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            failures: Default::default(),
            latency: AtomicHistogram::new(&LATENCY_BOUNDS),
            batch: AtomicHistogram::new(&BATCH_BOUNDS),
        }
    }
}

/// Counts a call as in flight until dropped — also when its future is dropped unfinished
/// (the runtime shut down), so the gauge cannot drift.
pub(crate) struct InFlight<'a>(&'a EndpointStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EndpointStats {
    /// A call with `messages` invocations starts.
    pub(crate) fn start(&self, messages: usize) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.batch.observe(messages as f64);
        InFlight(self)
    }

    /// A call ended after `took` and `attempts` HTTP attempts, failing with `failure`.
    pub(crate) fn finish(&self, took: Duration, attempts: u32, failure: Option<&RemoteErrorKind>) {
        self.latency.observe(took.as_secs_f64());
        let retries = u64::from(attempts.saturating_sub(1));
        if retries > 0 {
            self.retries.fetch_add(retries, Ordering::Relaxed);
        }
        if let Some(kind) = failure {
            let label = kind.label();
            if let Some(i) = FAILURE_KINDS.iter().position(|k| *k == label) {
                self.failures[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// What it holds now, for the endpoint named `endpoint`.
    pub fn snapshot(&self, endpoint: &str) -> EndpointSnapshot {
        EndpointSnapshot {
            endpoint: endpoint.to_string(),
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            failures: FAILURE_KINDS
                .iter()
                .zip(&self.failures)
                .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
                .collect(),
            latency: self.latency.snapshot(),
            batch_messages: self.batch.snapshot(),
        }
    }
}

/// One endpoint's counters, read at one moment ([`crate::RemotePool::stats`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSnapshot {
    /// The endpoint's `functions` pattern.
    pub endpoint: String,
    /// HTTP calls started (one per batch sent; a state handshake's second call counts too).
    pub requests: u64,
    /// Attempts beyond the first, over all calls.
    pub retries: u64,
    /// Calls not finished yet.
    pub in_flight: u64,
    /// Calls that failed for good, by kind ([`FAILURE_KINDS`]).
    pub failures: Vec<(&'static str, u64)>,
    /// Seconds from a call's start to its answer (retries and backoff included).
    pub latency: HistogramSnapshot,
    /// Messages (invocations) per call.
    pub batch_messages: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_counts_while_in_flight_and_lands_in_its_buckets() {
        let stats = EndpointStats::default();
        {
            let _call = stats.start(3);
            assert_eq!(stats.snapshot("e/*").in_flight, 1);
            stats.finish(
                Duration::from_millis(20),
                3,
                Some(&RemoteErrorKind::Timeout {
                    call_timeout: Duration::from_secs(1),
                    last_cause: None,
                }),
            );
        }
        let s = stats.snapshot("e/*");
        assert_eq!((s.requests, s.retries, s.in_flight), (1, 2, 0));
        assert!(s.failures.contains(&("timeout", 1)));
        assert_eq!(s.latency.count(), 1);
        // 20 ms lands in the 25 ms bucket; 3 messages in the bucket of 4.
        assert_eq!(s.latency.counts[4], 1);
        assert_eq!(s.batch_messages.counts[2], 1);
        assert!((s.latency.sum - 0.02).abs() < 1e-9);
    }
}
