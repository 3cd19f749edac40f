//! `statefun run --metrics-addr HOST:PORT`: what a monitoring system and an orchestrator
//! read from every process over HTTP.
//!
//! * `GET /metrics`: the process's counters, gauges and histograms in the OpenMetrics text
//!   format (Prometheus scrapes it; docs/OBSERVABILITY.md lists them), labelled with the
//!   process index. Values are read when a scrape comes from what the workers already keep
//!   ([`crate::shared::Metrics`], flushed once per activation), from the remote endpoints'
//!   counters (kept by the HTTP client, [`statefun_remote::stats`]) and from the Kafka
//!   sources' partition gauges ([`statefun_connectors::kafka::lag`]), so a metrics endpoint
//!   adds nothing to the hot path.
//! * `GET /healthz`: 200 while the process runs (a liveness probe).
//! * `GET /readyz`: 200 once every worker of the process has built its dataflow —
//!   state restored, sources opened — and 503 with the reason before that, while it
//!   stops, and after a failure (a readiness probe).
//!
//! The server runs on its own thread (a one-thread tokio runtime with hyper), so a slow
//! scraper never holds up a worker. With `--restart`, the endpoint stays up across
//! restarts and shows the run in progress.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeGaugeValue, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use statefun_connectors::kafka::lag::PartitionProgress;
use statefun_remote::stats::{EndpointSnapshot, HistogramSnapshot};

use crate::shared::{Flows, FunctionCounts, Histogram, Metrics, Shared};
use crate::state::FunctionState;

/// The run a scrape reads: replaced by each restart of `--restart on-failure`.
pub type CurrentRun = Arc<Mutex<Arc<Shared>>>;

/// The HTTP endpoint of a process; stops when dropped.
pub struct MetricsServer {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// The address it listens on (the port chosen when `addr` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the endpoint needs to know about the process besides its counters.
#[derive(Clone, Copy, Debug)]
pub struct ProcessInfo {
    /// This process's index (`-p`), the `process` label.
    pub process: usize,
    /// The epoch length, to turn the epoch frontier into a lag in seconds.
    pub epoch_interval: Duration,
}

/// Whether this process serves `/metrics` (set once by [`serve`]).
static SERVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process serves `/metrics`: work done only for metrics (counting the stored
/// state) is skipped without it.
pub fn served() -> bool {
    SERVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Starts serving `/metrics`, `/healthz` and `/readyz` on `addr` for the run in `current`.
pub fn serve(addr: &str, current: CurrentRun, info: ProcessInfo) -> Result<MetricsServer, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("statefun-metrics")
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start the metrics endpoint: {e}"))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| {
            format!(
                "--metrics-addr {addr}: cannot listen ({e}); give a free HOST:PORT, e.g. \
                 0.0.0.0:9249, or another port"
            )
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    // Kafka sources fetch their partitions' high watermarks, and workers count their state,
    // only where someone reads them.
    statefun_connectors::kafka::lag::enable();
    SERVED.store(true, std::sync::atomic::Ordering::Relaxed);
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let current = current.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let shared = current.lock().map(|s| s.clone()).ok();
                    async move { Ok::<_, Infallible>(respond(request.uri().path(), shared, info)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok(MetricsServer {
        runtime: Some(runtime),
        addr: bound,
    })
}

fn respond(path: &str, shared: Option<Arc<Shared>>, info: ProcessInfo) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    match (path, shared) {
        ("/healthz", _) => reply(StatusCode::OK, text, "ok\n".into()),
        ("/readyz", Some(shared)) => match not_ready(&shared) {
            None => reply(StatusCode::OK, text, "ready\n".into()),
            Some(why) => reply(StatusCode::SERVICE_UNAVAILABLE, text, format!("{why}\n")),
        },
        ("/metrics", Some(shared)) => match render(&shared, info) {
            Ok(body) => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, text, format!("{e}\n")),
        },
        ("/readyz" | "/metrics", None) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "no run in progress\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Why the process is not ready, if it is not (see the module docs).
pub fn not_ready(shared: &Shared) -> Option<String> {
    if let Some(failure) = shared.failure() {
        return Some(format!("failed: {failure}"));
    }
    if shared.shutting_down() {
        return Some("stopping: draining to a final checkpoint".into());
    }
    if !shared.ready() {
        return Some(
            "starting: not every worker has restored its state and opened its sources yet".into(),
        );
    }
    None
}

/// Labels of one series (besides `process`), in order.
type Labels = Vec<(String, String)>;

/// `worker` and then `pairs`, as [`labels`].
fn labelled(worker: usize, pairs: &[(&str, &str)]) -> Labels {
    let worker = worker.to_string();
    let mut all = vec![("worker", worker.as_str())];
    all.extend_from_slice(pairs);
    labels(&all)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// Series of one metric, in the order given (a `Family` would hash them into any order).
#[derive(Debug)]
struct Series<M> {
    kind: MetricType,
    rows: Vec<(Labels, M)>,
}

impl<M: EncodeMetric> EncodeMetric for Series<M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, metric) in &self.rows {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// A histogram read at scrape time (prometheus-client's `Histogram` is a live one).
#[derive(Debug)]
struct ConstHistogram {
    sum: f64,
    count: u64,
    /// `(upper bound, observations in the bucket)`, not cumulative; `+Inf` is `f64::MAX`.
    buckets: Vec<(f64, u64)>,
}

impl ConstHistogram {
    fn new(bounds: &[f64], counts: &[u64], sum: f64) -> Self {
        let buckets = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(counts.iter().copied())
            .collect();
        ConstHistogram {
            sum,
            count: counts.iter().sum(),
            buckets,
        }
    }

    fn of(h: &Histogram) -> Self {
        Self::new(h.bounds(), h.counts(), h.sum())
    }

    fn of_snapshot(h: &HistogramSnapshot) -> Self {
        Self::new(h.bounds, &h.counts, h.sum)
    }
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What `render` registers: counters, gauges and histograms, each with labelled series.
struct Out<'r> {
    registry: &'r mut Registry,
}

impl Out<'_> {
    fn counters(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        let rows = rows
            .into_iter()
            .map(|(l, v)| (l, ConstCounter::new(v)))
            .collect();
        self.registry.register(
            name,
            help,
            Series {
                kind: MetricType::Counter,
                rows,
            },
        );
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.registry.register(name, help, ConstCounter::new(value));
    }

    fn gauges<N>(&mut self, name: &str, help: &str, rows: Vec<(Labels, N)>)
    where
        N: EncodeGaugeValue + std::fmt::Debug + Send + Sync + 'static,
    {
        let rows = rows
            .into_iter()
            .map(|(l, v)| (l, ConstGauge::new(v)))
            .collect();
        self.registry.register(
            name,
            help,
            Series {
                kind: MetricType::Gauge,
                rows,
            },
        );
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) {
        self.registry.register(name, help, ConstGauge::new(value));
    }

    fn histograms(&mut self, name: &str, help: &str, rows: Vec<(Labels, ConstHistogram)>) {
        self.registry.register(
            name,
            help,
            Series {
                kind: MetricType::Histogram,
                rows,
            },
        );
    }
}

/// The OpenMetrics text of the process's metrics, read now (docs/OBSERVABILITY.md lists
/// them). Everything is summed over the workers here, at scrape time, from the tallies
/// they flush once per activation.
pub fn render(shared: &Shared, info: ProcessInfo) -> Result<String, String> {
    let m = &shared.metrics;
    let mut root = Registry::default();
    let registry = root
        .sub_registry_with_prefix("statefun")
        .sub_registry_with_label(("process".into(), info.process.to_string().into()));
    let mut out = Out { registry };
    let get = Metrics::get;
    let now_ms = crate::clock::Clock::now_ms();

    // Ingress.
    let (read, written) = m.flows();
    let by = |label: &str, flows: &Flows, bytes: bool| -> Vec<(Labels, u64)> {
        flows
            .iter()
            .map(|(id, w, n, b)| (labelled(*w, &[(label, id)]), if bytes { *b } else { *n }))
            .collect()
    };
    out.counters(
        "ingress_records",
        "Records read, by ingress",
        by("ingress", &read, false),
    );
    out.counters(
        "ingress_bytes",
        "Key and value bytes of the records read, by ingress",
        by("ingress", &read, true),
    );
    out.counter(
        "ingress_records_skipped",
        "Ingress records skipped as bad (badRecords: skip), each logged",
        get(&m.records_skipped),
    );
    out.counter(
        "ingress_records_dead_lettered",
        "Bad ingress records written to a dead-letter egress",
        get(&m.records_dead_lettered),
    );
    let ours: std::collections::BTreeSet<&str> =
        read.iter().map(|(id, _, _, _)| id.as_str()).collect();
    let partitions: Vec<_> = statefun_connectors::kafka::lag::partitions()
        .into_iter()
        .filter(|p| ours.contains(p.ingress.as_str()))
        .collect();
    let partition_rows = |value: &dyn Fn(&PartitionProgress) -> Option<i64>| -> Vec<(Labels, i64)> {
        partitions
            .iter()
            .filter_map(|p| {
                let v = value(p)?;
                let (worker, partition) = (p.worker.to_string(), p.partition.to_string());
                let l = labels(&[
                    ("worker", &worker),
                    ("ingress", &p.ingress),
                    ("topic", &p.topic),
                    ("partition", &partition),
                ]);
                Some((l, v))
            })
            .collect()
    };
    out.gauges(
        "kafka_partition_position",
        "Offset of the next record the job reads from the partition",
        partition_rows(&|p| Some(p.position)),
    );
    out.gauges(
        "kafka_partition_high_watermark",
        "Offset after the partition's newest record (fetched every second off the workers)",
        partition_rows(&|p| p.high_watermark),
    );
    out.gauges(
        "kafka_partition_lag_records",
        "Records in the partition the job has not read yet (high watermark - position)",
        partition_rows(&|p| p.lag()),
    );
    let shards: Vec<(Labels, f64)> = statefun_connectors::kinesis::lag::shards()
        .into_iter()
        .filter(|s| ours.contains(s.ingress.as_str()))
        .filter_map(|s| {
            let millis = s.millis_behind_latest?;
            let worker = s.worker.to_string();
            let l = labels(&[
                ("worker", &worker),
                ("ingress", &s.ingress),
                ("stream", &s.stream),
                ("shard", &s.shard),
            ]);
            Some((l, millis as f64 / 1000.0))
        })
        .collect();
    out.gauges(
        "kinesis_shard_behind_latest_seconds",
        "How far the shard's reader is behind the shard's newest record (GetRecords' MillisBehindLatest)",
        shards,
    );

    // Functions.
    let functions = m.by_function();
    let function_rows = |value: &dyn Fn(&FunctionCounts) -> u64| -> Vec<(Labels, u64)> {
        functions
            .iter()
            .map(|(f, w, c)| (labelled(*w, &[("function", f)]), value(c)))
            .collect()
    };
    out.counters(
        "function_invocations",
        "Function invocations (Rust and remote), by function type",
        function_rows(&|c| c.invocations),
    );
    let mut failures = Vec::new();
    for (f, w, c) in &functions {
        failures.push((
            labelled(*w, &[("function", f), ("kind", "error")]),
            c.errors,
        ));
        failures.push((
            labelled(*w, &[("function", f), ("kind", "remote")]),
            c.remote_failures,
        ));
    }
    let unregistered = get(&m.unregistered);
    if unregistered > 0 {
        failures.push((
            labels(&[
                ("function", Metrics::UNREGISTERED),
                ("kind", "unregistered"),
            ]),
            unregistered,
        ));
    }
    out.counters(
        "function_invocation_failures",
        "Invocations that failed, by function type and kind (error: the Rust function returned \
         an error; remote: a remote invocation failed for good; unregistered: nothing serves the type)",
        failures,
    );
    out.histograms(
        "function_invocation_seconds",
        "Invocation latency by function type (embedded: the mean of its batch; remote: request \
         to answer)",
        functions
            .iter()
            .map(|(f, w, c)| {
                let l = labelled(*w, &[("function", f)]);
                (l, ConstHistogram::of(&c.latency))
            })
            .collect(),
    );
    out.gauge(
        "delayed_messages_pending",
        "Delayed messages (send_after) waiting to be delivered",
        clamp(get(&m.delayed_pending)),
    );
    // Workers add their tallies once per activation: the gauge can be off, for a moment, by
    // what activations in progress have not added yet.
    let processed = get(&m.feedback_processed);
    let sent = get(&m.feedback_sent);
    out.counter(
        "feedback_messages_sent",
        "Messages functions sent to functions into the feedback loop (delayed ones when due)",
        sent,
    );
    out.counter(
        "feedback_messages_processed",
        "Messages from functions taken out of the feedback loop to be invoked",
        processed,
    );
    out.gauge(
        "feedback_messages_pending",
        "Messages in the feedback loop not processed yet: sent - processed (with several \
         processes, sum over them: a message may be sent by one and processed by another)",
        clamp(sent) - clamp(processed),
    );
    out.counters(
        "function_loop_messages_sent",
        "Messages sent into the feedback loop, by target function type and the worker that \
         sent them (by functions, from timers when due, or restored in flight)",
        function_rows(&|c| c.loop_sent),
    );
    out.counters(
        "function_loop_messages_processed",
        "Messages taken out of the feedback loop, by function type and the worker that took them",
        function_rows(&|c| c.loop_processed),
    );
    let mut loop_pending: std::collections::BTreeMap<&str, i64> = Default::default();
    for (f, _, c) in &functions {
        *loop_pending.entry(f.as_str()).or_default() +=
            clamp(c.loop_sent) - clamp(c.loop_processed);
    }
    out.gauges(
        "function_loop_messages_pending",
        "Messages in the feedback loop not processed yet, by target function type: sent - \
         processed over this process's workers (with several processes, sum over them)",
        loop_pending
            .into_iter()
            .map(|(f, n)| (labels(&[("function", f)]), n))
            .collect(),
    );
    out.counter(
        "hop_cap_deferrals",
        "Messages sent into the next epoch because their hop reached the hop cap (a cycle)",
        get(&m.hop_cap_deferrals),
    );
    let state = m.state();
    let state_rows = |value: &dyn Fn(&FunctionState) -> u64| -> Vec<(Labels, i64)> {
        state
            .iter()
            .flat_map(|(w, census)| {
                census
                    .by_function
                    .iter()
                    .map(|f| (labelled(*w, &[("function", &f.function)]), clamp(value(f))))
            })
            .collect()
    };
    out.gauges(
        "state_values",
        "Stored state values (one per instance and value spec), by worker and function type \
         (in memory: counted once a second; with --state-dir: a background pass over the last \
         merged checkpoint, see statefun_state_counted_age_seconds)",
        state_rows(&|f| f.values),
    );
    out.gauges(
        "state_value_bytes",
        "Bytes of the stored state values (their wire bytes, without keys), by worker and \
         function type, counted as statefun_state_values",
        state_rows(&|f| f.bytes),
    );
    out.gauges(
        "state_counted_age_seconds",
        "Time since the state metrics of each worker were counted",
        state
            .iter()
            .map(|(w, census)| {
                let age = now_ms.saturating_sub(census.counted_at_ms) as f64 / 1000.0;
                (labelled(*w, &[]), age)
            })
            .collect(),
    );

    // Remote functions.
    let endpoints = shared.remote_stats();
    let endpoint_rows = |value: &dyn Fn(&EndpointSnapshot) -> u64| -> Vec<(Labels, u64)> {
        endpoints
            .iter()
            .map(|e| (labels(&[("endpoint", &e.endpoint)]), value(e)))
            .collect()
    };
    out.counters(
        "remote_requests",
        "HTTP requests to remote functions (one per batch), by endpoint",
        endpoint_rows(&|e| e.requests),
    );
    out.counters(
        "remote_retries",
        "Attempts beyond the first of remote requests, by endpoint",
        endpoint_rows(&|e| e.retries),
    );
    out.counters(
        "remote_request_failures",
        "Remote requests that failed for good, by endpoint and kind",
        endpoints
            .iter()
            .flat_map(|e| {
                e.failures
                    .iter()
                    .map(|(kind, n)| (labels(&[("endpoint", &e.endpoint), ("kind", kind)]), *n))
            })
            .collect(),
    );
    out.gauges(
        "remote_in_flight_requests",
        "Remote requests sent and not answered yet, by endpoint",
        endpoint_rows(&|e| e.in_flight)
            .into_iter()
            .map(|(l, v)| (l, clamp(v)))
            .collect(),
    );
    out.histograms(
        "remote_request_seconds",
        "Remote request latency (retries and backoff included), by endpoint",
        endpoints
            .iter()
            .map(|e| {
                (
                    labels(&[("endpoint", &e.endpoint)]),
                    ConstHistogram::of_snapshot(&e.latency),
                )
            })
            .collect(),
    );
    out.histograms(
        "remote_batch_messages",
        "Messages (invocations) per remote request, by endpoint",
        endpoints
            .iter()
            .map(|e| {
                (
                    labels(&[("endpoint", &e.endpoint)]),
                    ConstHistogram::of_snapshot(&e.batch_messages),
                )
            })
            .collect(),
    );
    out.counter(
        "remote_state_handshakes",
        "Remote requests answered IncompleteInvocationContext (state the runtime had not sent) and sent again",
        get(&m.remote_state_handshakes),
    );
    out.gauge(
        "remote_queued_messages",
        "Messages waiting behind in-flight remote function requests",
        clamp(get(&m.remote_queued)),
    );
    out.gauges(
        "remote_backlog_messages",
        "Messages waiting behind in-flight remote requests, by worker and endpoint",
        m.remote_backlog()
            .into_iter()
            .map(|(e, w, n)| (labelled(w, &[("endpoint", &e)]), clamp(n)))
            .collect(),
    );
    out.gauge(
        "remote_queued_messages_peak",
        "The most messages ever waiting behind remote function requests",
        clamp(get(&m.remote_queued_peak)),
    );

    // Egress.
    out.counters(
        "egress_records",
        "Records written by sinks, by egress (with --state-dir once their checkpoint is durable everywhere)",
        by("egress", &written, false),
    );
    out.counters(
        "egress_bytes",
        "Payload bytes of the records written by sinks (the encoded values functions sent), by egress",
        by("egress", &written, true),
    );
    out.counter(
        "egress_records_unknown",
        "Egress records for egress ids module.yaml does not declare",
        get(&m.unknown_egress),
    );
    let sinks = m.sink_stats();
    out.counters(
        "egress_transactions",
        "Transactions of exactly-once Kafka egresses, by egress and outcome (committed, aborted)",
        sinks
            .iter()
            .filter(|(_, _, s)| s.has_transactions())
            .flat_map(|(id, w, s)| {
                [
                    ("committed", s.transactions_committed),
                    ("aborted", s.transactions_aborted),
                ]
                .map(|(outcome, n)| (labelled(*w, &[("egress", id), ("outcome", outcome)]), n))
            })
            .collect(),
    );
    let kinesis: Vec<_> = sinks.iter().filter(|(_, _, s)| s.has_entries()).collect();
    out.counters(
        "egress_kinesis_entries",
        "PutRecords entries of Kinesis egresses, by egress and outcome (written: acknowledged; \
         throttled: ProvisionedThroughputExceeded, sent again; failed: another error, sent again)",
        kinesis
            .iter()
            .flat_map(|(id, w, s)| {
                [
                    ("written", s.entries_written),
                    ("throttled", s.entries_throttled),
                    ("failed", s.entries_failed),
                ]
                .map(|(outcome, n)| (labelled(*w, &[("egress", id), ("outcome", outcome)]), n))
            })
            .collect(),
    );
    out.counters(
        "egress_kinesis_retries",
        "PutRecords calls of Kinesis egresses sent again after throttled or failed entries, by egress",
        kinesis
            .iter()
            .map(|(id, w, s)| (labelled(*w, &[("egress", id)]), s.retries))
            .collect(),
    );
    out.histograms(
        "egress_delivery_seconds",
        "Time from the end of an epoch to its sink confirming its records (with --state-dir \
         after their checkpoint is durable), one observation per egress, sink and epoch",
        m.delivery()
            .iter()
            .map(|(id, w, h)| (labelled(*w, &[("egress", id)]), ConstHistogram::of(h)))
            .collect(),
    );

    // Checkpoints.
    out.counter(
        "checkpoints",
        "Checkpoints made durable by this process's workers",
        get(&m.checkpoints),
    );
    out.counter(
        "checkpoint_failures",
        "Checkpoints that failed to be handed over or written (the job stops)",
        get(&m.checkpoint_failures),
    );
    out.counter(
        "checkpoint_bytes",
        "Bytes written by checkpoints",
        get(&m.checkpoint_bytes),
    );
    out.counter(
        "checkpoint_restores",
        "Workers that restored their state from a checkpoint at start",
        get(&m.checkpoint_restores),
    );
    let times = |pause: bool| -> Vec<(Labels, ConstHistogram)> {
        m.checkpoint_times(pause)
            .iter()
            .map(|(w, h)| (labelled(*w, &[]), ConstHistogram::of(h)))
            .collect()
    };
    out.histograms(
        "checkpoint_write_seconds",
        "How long checkpoints took to encode and write (on the background writer)",
        times(false),
    );
    out.histograms(
        "checkpoint_pause_seconds",
        "How long workers paused for checkpoints (freezing the window and handing it over)",
        times(true),
    );
    let last_at = get(&m.last_checkpoint_at_ms);
    if last_at > 0 {
        out.gauges(
            "checkpoint_age_seconds",
            "Time since the newest durable checkpoint of this process",
            vec![(Vec::new(), now_ms.saturating_sub(last_at) as f64 / 1000.0)],
        );
        out.gauges(
            "checkpoint_last_write_seconds",
            "How long the newest checkpoint took to encode and write (background writer)",
            vec![(Vec::new(), get(&m.last_checkpoint_us) as f64 / 1e6)],
        );
        out.gauge(
            "checkpoint_last_bytes",
            "Bytes written by the newest checkpoint",
            clamp(get(&m.last_checkpoint_bytes)),
        );
        out.gauge(
            "checkpoint_last_id",
            "The id of the newest durable checkpoint",
            clamp(get(&m.last_checkpoint_id)),
        );
    }

    // Progress and readiness.
    let epoch_ms = info.epoch_interval.as_millis().max(1) as u64;
    let completed = get(&m.completed_epoch);
    out.gauge(
        "epoch_frontier",
        "The newest epoch every worker completed (epochs are --epoch-ms long since 1970)",
        clamp(completed),
    );
    if completed > 0 {
        let behind_ms = now_ms.saturating_sub((completed + 1).saturating_mul(epoch_ms));
        out.gauges(
            "epoch_lag_seconds",
            "How far the completed epoch is behind the wall clock: the backpressure signal",
            vec![(Vec::new(), behind_ms as f64 / 1000.0)],
        );
    }
    out.gauge(
        "ready",
        "1 when /readyz answers 200",
        i64::from(not_ready(shared).is_none()),
    );
    let mut text = String::new();
    encode(&mut text, &root).map_err(|e| format!("cannot encode the metrics: {e}"))?;
    Ok(text)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_read_the_counters_and_readiness_follows_the_run() {
        let shared = Shared::default();
        shared.expect_workers(2);
        Metrics::add(&shared.metrics.ingress_counter("ns/in", 0).0, 40);
        Metrics::add(&shared.metrics.ingress_counter("ns/in", 1).0, 2);
        shared.metrics.count_egress(1, [("ns/out", 7, 70)]);
        let info = ProcessInfo {
            process: 3,
            epoch_interval: Duration::from_millis(10),
        };
        let text = render(&shared, info).unwrap();
        for line in [
            "statefun_ingress_records_total{process=\"3\",worker=\"0\",ingress=\"ns/in\"} 40",
            "statefun_ingress_records_total{process=\"3\",worker=\"1\",ingress=\"ns/in\"} 2",
            "statefun_egress_records_total{process=\"3\",worker=\"1\",egress=\"ns/out\"} 7",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        assert!(text.contains("statefun_ready{process=\"3\"} 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(not_ready(&shared).unwrap().starts_with("starting"));
        shared.worker_ready();
        assert!(not_ready(&shared).is_some(), "one of two workers");
        shared.worker_ready();
        assert_eq!(not_ready(&shared), None);
        shared.request_shutdown();
        assert!(not_ready(&shared).unwrap().starts_with("stopping"));
        shared.fail("disk full");
        assert_eq!(not_ready(&shared).unwrap(), "failed: disk full");
    }

    #[test]
    fn sink_reports_delivery_and_the_feedback_loop_are_rendered() {
        use statefun_connectors::sink::SinkStats;
        let shared = Shared::default();
        let m = &shared.metrics;
        let kinesis = SinkStats {
            entries_written: 10,
            entries_throttled: 15,
            entries_failed: 2,
            retries: 3,
            ..SinkStats::default()
        };
        m.count_sink("ns/k", 0, &kinesis);
        m.count_sink("ns/k", 0, &kinesis);
        m.count_sink(
            "ns/kafka",
            1,
            &SinkStats {
                transactions_committed: 4,
                ..SinkStats::default()
            },
        );
        m.count_sink("ns/file", 0, &SinkStats::default());
        let mut h = Histogram::new(&crate::shared::DELIVERY_BOUNDS);
        h.observe(0.2);
        h.observe(3.0);
        m.observe_delivery("ns/k", 0, &h);
        Metrics::add(&m.feedback_sent, 7);
        Metrics::add(&m.feedback_processed, 5);
        // Per function type: 4 messages to ns/f sent on worker 0, 1 processed on worker 0 and
        // 2 on worker 1.
        let looped = |sent, processed| FunctionCounts {
            loop_sent: sent,
            loop_processed: processed,
            ..FunctionCounts::default()
        };
        m.count_functions(0, [("ns/f", &looped(4, 1))]);
        m.count_functions(1, [("ns/f", &looped(0, 2))]);
        m.set_remote_backlog(1, &[("ns/*".to_string(), 9)]);
        m.observe_checkpoint(1, true, 0.003);
        m.observe_checkpoint(1, false, 0.2);
        m.set_state(
            1,
            crate::state::StateCensus {
                by_function: vec![FunctionState {
                    function: "ns/f".into(),
                    values: 3,
                    bytes: 24,
                }],
                counted_at_ms: 1,
            },
        );
        let info = ProcessInfo {
            process: 0,
            epoch_interval: Duration::from_millis(10),
        };
        let text = render(&shared, info).unwrap();
        for line in [
            "statefun_egress_kinesis_entries_total{process=\"0\",worker=\"0\",egress=\"ns/k\",outcome=\"written\"} 20",
            "statefun_egress_kinesis_entries_total{process=\"0\",worker=\"0\",egress=\"ns/k\",outcome=\"throttled\"} 30",
            "statefun_egress_kinesis_entries_total{process=\"0\",worker=\"0\",egress=\"ns/k\",outcome=\"failed\"} 4",
            "statefun_egress_kinesis_retries_total{process=\"0\",worker=\"0\",egress=\"ns/k\"} 6",
            "statefun_egress_transactions_total{process=\"0\",worker=\"1\",egress=\"ns/kafka\",outcome=\"committed\"} 4",
            "statefun_egress_delivery_seconds_count{process=\"0\",worker=\"0\",egress=\"ns/k\"} 2",
            "statefun_egress_delivery_seconds_bucket{process=\"0\",le=\"0.25\",worker=\"0\",egress=\"ns/k\"} 1",
            "statefun_function_loop_messages_sent_total{process=\"0\",worker=\"0\",function=\"ns/f\"} 4",
            "statefun_function_loop_messages_processed_total{process=\"0\",worker=\"1\",function=\"ns/f\"} 2",
            "statefun_function_loop_messages_pending{process=\"0\",function=\"ns/f\"} 1",
            "statefun_remote_backlog_messages{process=\"0\",worker=\"1\",endpoint=\"ns/*\"} 9",
            "statefun_checkpoint_pause_seconds_count{process=\"0\",worker=\"1\"} 1",
            "statefun_checkpoint_pause_seconds_bucket{process=\"0\",le=\"0.005\",worker=\"1\"} 1",
            "statefun_checkpoint_write_seconds_count{process=\"0\",worker=\"1\"} 1",
            "statefun_state_values{process=\"0\",worker=\"1\",function=\"ns/f\"} 3",
            "statefun_state_value_bytes{process=\"0\",worker=\"1\",function=\"ns/f\"} 24",
            "statefun_feedback_messages_sent_total{process=\"0\"} 7",
            "statefun_feedback_messages_processed_total{process=\"0\"} 5",
            "statefun_feedback_messages_pending{process=\"0\"} 2",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        // Series only for what each sink kind reports.
        assert!(!text.contains("egress=\"ns/file\""), "{text}");
        assert!(
            !text.contains("statefun_egress_kinesis_entries_total{process=\"0\",worker=\"1\""),
            "{text}"
        );
        assert!(
            !text.contains("statefun_egress_transactions_total{process=\"0\",worker=\"0\""),
            "{text}"
        );
    }
}
