//! `statefun run --metrics-addr HOST:PORT`: what a monitoring system and an orchestrator
//! read from every process over HTTP.
//!
//! * `GET /metrics`: the process's counters and gauges in the OpenMetrics text format
//!   (Prometheus scrapes it), labelled with the process index. Values are read from the
//!   process-wide atomics the workers already update ([`crate::shared::Metrics`]) when a
//!   scrape comes, so a metrics endpoint adds nothing to the hot path.
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
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::shared::{Metrics, Shared};

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

/// The OpenMetrics text of the process's metrics, read now.
pub fn render(shared: &Shared, info: ProcessInfo) -> Result<String, String> {
    let m = &shared.metrics;
    let mut root = Registry::default();
    let registry = root
        .sub_registry_with_prefix("statefun")
        .sub_registry_with_label(("process".into(), info.process.to_string().into()));
    let counter =
        |registry: &mut Registry, name: &str, help: &str, value: &std::sync::atomic::AtomicU64| {
            registry.register(name, help, ConstCounter::new(Metrics::get(value)));
        };
    let (read, written) = m.by_id();
    let by_id = |registry: &mut Registry,
                 name: &str,
                 help: &str,
                 label: &str,
                 values: Vec<(String, u64)>| {
        let family = Family::<Vec<(String, String)>, Counter>::default();
        for (id, n) in values {
            family
                .get_or_create(&vec![(label.to_string(), id)])
                .inc_by(n);
        }
        registry.register(name, help, family);
    };
    by_id(
        registry,
        "ingress_records",
        "Records read, by ingress",
        "ingress",
        read,
    );
    counter(
        registry,
        "ingress_records_skipped",
        "Ingress records skipped as bad (badRecords: skip), each logged",
        &m.records_skipped,
    );
    counter(
        registry,
        "ingress_records_dead_lettered",
        "Bad ingress records written to a dead-letter egress",
        &m.records_dead_lettered,
    );
    let (invoked, failed): (Vec<_>, Vec<_>) = m
        .by_function()
        .into_iter()
        .map(|(function, i, e)| ((function.clone(), i), (function, e)))
        .unzip();
    by_id(
        registry,
        "function_invocations",
        "Function invocations (Rust and remote), by function type",
        "function",
        invoked,
    );
    by_id(
        registry,
        "function_invocation_failures",
        "Invocations that failed, by function type ((unregistered): a type nothing serves)",
        "function",
        failed,
    );
    by_id(
        registry,
        "egress_records",
        "Records written by sinks, by egress (with --state-dir once their checkpoint is durable everywhere)",
        "egress",
        written,
    );
    counter(
        registry,
        "egress_records_unknown",
        "Egress records for egress ids module.yaml does not declare",
        &m.unknown_egress,
    );
    counter(
        registry,
        "checkpoints",
        "Checkpoints made durable by this process's workers",
        &m.checkpoints,
    );
    counter(
        registry,
        "remote_state_handshakes",
        "Remote requests answered IncompleteInvocationContext (state the runtime had not sent) and sent again",
        &m.remote_state_handshakes,
    );
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        registry.register(name, help, ConstGauge::new(value));
    };
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    gauge(
        registry,
        "remote_queued_messages",
        "Messages waiting behind in-flight remote function requests",
        clamp(Metrics::get(&m.remote_queued)),
    );
    gauge(
        registry,
        "remote_queued_messages_peak",
        "The most messages ever waiting behind remote function requests",
        clamp(Metrics::get(&m.remote_queued_peak)),
    );
    let now_ms = crate::clock::Clock::now_ms();
    let epoch_ms = info.epoch_interval.as_millis().max(1) as u64;
    let completed = Metrics::get(&m.completed_epoch);
    gauge(
        registry,
        "epoch_frontier",
        "The newest epoch every worker completed (epochs are --epoch-ms long since 1970)",
        clamp(completed),
    );
    if completed > 0 {
        let behind_ms = now_ms.saturating_sub((completed + 1).saturating_mul(epoch_ms));
        registry.register(
            "epoch_lag_seconds",
            "How far the completed epoch is behind the wall clock: the backpressure signal",
            ConstGauge::new(behind_ms as f64 / 1000.0),
        );
    }
    let last_at = Metrics::get(&m.last_checkpoint_at_ms);
    if last_at > 0 {
        registry.register(
            "checkpoint_age_seconds",
            "Time since the newest durable checkpoint of this process",
            ConstGauge::new(now_ms.saturating_sub(last_at) as f64 / 1000.0),
        );
        registry.register(
            "checkpoint_last_write_seconds",
            "How long the newest checkpoint took to encode and write (background writer)",
            ConstGauge::new(Metrics::get(&m.last_checkpoint_us) as f64 / 1e6),
        );
        gauge(
            registry,
            "checkpoint_last_bytes",
            "Bytes written by the newest checkpoint",
            clamp(Metrics::get(&m.last_checkpoint_bytes)),
        );
        gauge(
            registry,
            "checkpoint_last_id",
            "The id of the newest durable checkpoint",
            clamp(Metrics::get(&m.last_checkpoint_id)),
        );
    }
    gauge(
        registry,
        "ready",
        "1 when /readyz answers 200",
        i64::from(not_ready(shared).is_none()),
    );
    let mut out = String::new();
    encode(&mut out, &root).map_err(|e| format!("cannot encode the metrics: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_read_the_counters_and_readiness_follows_the_run() {
        let shared = Shared::default();
        shared.expect_workers(2);
        Metrics::add(&shared.metrics.ingress_counter("ns/in"), 42);
        shared.metrics.count_egress([("ns/out", 7)]);
        let info = ProcessInfo {
            process: 3,
            epoch_interval: Duration::from_millis(10),
        };
        let text = render(&shared, info).unwrap();
        assert!(
            text.contains("statefun_ingress_records_total{process=\"3\",ingress=\"ns/in\"} 42")
                && text
                    .contains("statefun_egress_records_total{process=\"3\",egress=\"ns/out\"} 7"),
            "{text}"
        );
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
}
