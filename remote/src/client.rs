//! The HTTP side of remote functions: a pooled, retrying client per endpoint
//! on a tokio runtime beside the timely workers.
//!
//! # Why hyper 1 + hyper-util's pooled client, not reqwest
//!
//! StateFun endpoints may be `http+unix://` / `https+unix://` URLs (a Unix
//! socket path followed by the request path). reqwest has no public connector
//! hook, so Unix sockets would need a second client stack. hyper-util's legacy
//! client takes any `tower` connector: one small connector here opens TCP or
//! Unix streams, with or without rustls on top, so all four schemes share one
//! code path, one connection pool (`pool_size` idle connections per host,
//! closed after `pool_ttl`), and one retry loop. rustls uses the `ring`
//! provider (no C toolchain beyond what `ring` ships, no OpenSSL), with the
//! webpki roots unless the transport names its own CA file.
//!
//! # Timeouts and retries
//!
//! - `call`: bounds the whole invocation, retries and backoff included.
//! - `connect`: bounds opening one connection (TCP/Unix and TLS handshake).
//! - `write` + `read`: bound the wait for the response head after sending
//!   (the request is written as one small buffer, so the two are not
//!   separable with hyper), and `read` bounds the wait for each body chunk.
//!
//! Failed attempts are retried with exponential backoff (2 ms doubling, capped
//! at 1 s, jittered to 50–100 %) on I/O errors, read/write/connect timeouts and
//! the statuses StateFun retries (408, 409, 420, 429, 499, 5xx), until the call
//! timeout would pass. Other statuses, oversized payloads and invalid URLs
//! fail at once: retrying cannot fix them. The jitter is `statefun-retry`'s,
//! the schedule every retrying client of the runtime shares.
//!
//! Two failures are retried at once, without backoff, because they say
//! nothing about the server's health: the first I/O error of a call (most
//! often a pooled keep-alive connection the server closed while it sat idle,
//! as load balancers and aiohttp do, met by the request at the moment of
//! closing), and an attempt abandoned because it stalled (see
//! [`crate::concurrency`]). Both are safe in StateFun's request–reply
//! protocol: the request carries the state, and an answer that is never read
//! is never applied.
//!
//! # Connections
//!
//! Responses that end the connection — HTTP/1.0, `Connection: close`, a body
//! delimited by closing — are read to the end and the connection is dropped,
//! not pooled. How many requests are in flight and how many connections are
//! open at once is bounded per endpoint by an adaptive limit
//! ([`crate::concurrency`]), so that a server that serves one connection at a
//! time is not buried under connections it cannot accept.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message as _;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use statefun_module::{FunctionPattern, HttpEndpoint, TlsFiles};
use statefun_sdk::proto::request_reply::ToFunction;
use statefun_sdk::{Address, TypeName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::concurrency::{Concurrency, ConnectionSlot, RequestSlot};
use crate::protocol::request_target;
use crate::stats::{EndpointSnapshot, EndpointStats};

/// First backoff between attempts.
const BACKOFF_START: Duration = Duration::from_millis(2);
/// Longest backoff between attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// How much of an error response body goes into the error message.
const ERROR_BODY_EXCERPT: usize = 512;
/// Host name of the virtual authority that carries a Unix socket path.
const UNIX_HOST_SUFFIX: &str = ".unix.statefun-rs.invalid";

/// Why a remote invocation failed, for good: the invoker has already retried
/// what can be retried.
///
/// The `Display` text names the function type, the address, the URL, the
/// cause and what to do about it, so that it can be logged or dead-lettered
/// as is.
///
/// The details are boxed so that `Result<_, RemoteError>` stays one pointer
/// wide on the engine's hot path; fields are read through `Deref`
/// (`err.kind`, `err.address`).
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteError(pub Box<RemoteErrorDetails>);

impl std::ops::Deref for RemoteError {
    type Target = RemoteErrorDetails;

    fn deref(&self) -> &RemoteErrorDetails {
        &self.0
    }
}

impl From<RemoteErrorDetails> for RemoteError {
    fn from(details: RemoteErrorDetails) -> Self {
        RemoteError(Box::new(details))
    }
}

/// What a [`RemoteError`] says: where the invocation went and why it failed.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteErrorDetails {
    /// The function type invoked; `None` for endpoint-level setup errors from
    /// [`RemoteInvoker::new`].
    pub function_type: Option<TypeName>,
    /// The functions pattern of the endpoint involved (`example/*`), or empty
    /// when no endpoint serves the function type.
    pub endpoint: String,
    /// The address invoked, when the request named a valid one.
    pub address: Option<Address>,
    /// The URL posted to (or the URL template for setup errors).
    pub url: String,
    /// How many HTTP attempts were made (0 when none could start).
    pub attempts: u32,
    /// What went wrong.
    pub kind: RemoteErrorKind,
}

/// The cause of a [`RemoteError`].
#[derive(Clone, Debug, PartialEq)]
pub enum RemoteErrorKind {
    /// No endpoint in the module serves the function type.
    NoEndpoint,
    /// The endpoint URL cannot be used.
    InvalidUrl(String),
    /// The endpoint's TLS settings cannot be used.
    Tls(String),
    /// The function answered with a status that retrying cannot fix.
    Status {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, lossily as text.
        body: String,
    },
    /// No successful answer within the call timeout; `last_cause` is the
    /// error of the last attempt (connection refused, a retryable status, a
    /// read timeout…), `None` when the first attempt was still running.
    Timeout {
        /// The call timeout of the endpoint.
        call_timeout: Duration,
        /// The last attempt's error.
        last_cause: Option<String>,
    },
    /// The request is larger than the endpoint's `payload_max_bytes`.
    RequestTooLarge {
        /// The request size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The response is larger than the endpoint's `payload_max_bytes`.
    ResponseTooLarge {
        /// The size announced or read so far (at least this many bytes).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The invoker's runtime could not be started or has shut down.
    Runtime(String),
}

impl RemoteErrorDetails {
    /// What an operator should do about this error.
    pub fn hint(&self) -> &'static str {
        match &self.kind {
            RemoteErrorKind::NoEndpoint => {
                "add an `io.statefun.endpoints.v2/http` endpoint whose `functions` pattern matches this function type"
            }
            RemoteErrorKind::InvalidUrl(_) => {
                "fix the endpoint's `urlPathTemplate` (http, https, http+unix or https+unix; a Unix socket path must end in `.sock`)"
            }
            RemoteErrorKind::Tls(_) => {
                "fix the transport's `trust_cacerts` / `client_cert` / `client_key` files (PEM, unencrypted key)"
            }
            RemoteErrorKind::Status { .. } => {
                "check the function server's logs: it rejected the request, and retrying would not help"
            }
            RemoteErrorKind::Timeout { .. } => {
                "check that the function server is running and reachable at this URL and answers in time, or raise the endpoint's `transport.call` timeout"
            }
            RemoteErrorKind::RequestTooLarge { .. } | RemoteErrorKind::ResponseTooLarge { .. } => {
                "raise the endpoint's `transport.payload_max_bytes`, lower `maxNumBatchRequests`, or keep less state per address"
            }
            RemoteErrorKind::Runtime(_) => "the process is shutting down or out of resources; restart it",
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.function_type {
            Some(t) => write!(f, "remote function {t}")?,
            None => write!(f, "remote endpoint `{}`", self.endpoint)?,
        }
        if let Some(a) = &self.address {
            write!(f, " at address {a}")?;
        }
        if !self.url.is_empty() {
            write!(f, " ({})", self.url)?;
        }
        f.write_str(": ")?;
        match &self.kind {
            RemoteErrorKind::NoEndpoint => f.write_str("no endpoint serves this function type")?,
            RemoteErrorKind::InvalidUrl(e) => write!(f, "invalid URL: {e}")?,
            RemoteErrorKind::Tls(e) => write!(f, "TLS setup failed: {e}")?,
            RemoteErrorKind::Status { status, body } => {
                write!(f, "HTTP status {status}")?;
                if !body.is_empty() {
                    write!(f, " with body {body:?}")?;
                }
            }
            RemoteErrorKind::Timeout {
                call_timeout,
                last_cause,
            } => {
                write!(
                    f,
                    "no successful answer within the call timeout of {call_timeout:?}"
                )?;
                match last_cause {
                    Some(c) => write!(f, " (last error: {c})")?,
                    None => f.write_str(" (the function did not answer)")?,
                }
            }
            RemoteErrorKind::RequestTooLarge { size, max } => write!(
                f,
                "request of {size} bytes exceeds payload_max_bytes = {max}"
            )?,
            RemoteErrorKind::ResponseTooLarge { size, max } => write!(
                f,
                "response of at least {size} bytes exceeds payload_max_bytes = {max}"
            )?,
            RemoteErrorKind::Runtime(e) => write!(f, "runtime error: {e}")?,
        }
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        write!(f, "; {}", self.hint())
    }
}

impl std::error::Error for RemoteError {}

/// One finished invocation: the ticket given to [`RemoteInvoker::submit`] and
/// the response body or the final error.
pub type Completion = (u64, Result<Vec<u8>, RemoteError>);

/// What the workers of a process share for remote functions: one HTTP
/// runtime and, per endpoint, one connection pool and one concurrency limit.
///
/// Shared because a server's capacity is the server's, not a worker's: a
/// single-threaded server that serves one keep-alive connection at a time
/// must see one client per process, or the workers' pools starve each other
/// (each worker's own limit would never see the others' answers).
pub struct RemotePool {
    runtime: RuntimeRef,
    endpoints: Vec<Arc<EndpointClient>>,
}

impl fmt::Debug for RemotePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemotePool")
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| e.endpoint.functions.to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RemotePool {
    /// Builds one pooled client per endpoint on a new tokio runtime with one
    /// worker thread per four cores (at least one, at most four).
    ///
    /// HTTP work is I/O-bound and cheap next to the function server's: one
    /// thread handles ~150 k invocations per second of this machine's CPU
    /// (7 µs each at a server's full rate, batched). More threads cost wake-ups instead:
    /// tokio wakes a second worker to steal each task an outside thread
    /// schedules, and on a 2-core machine two threads instead of one took
    /// 6.6 instead of 4.5 context switches and 245 instead of 221 µs of CPU per
    /// record at 1 000 records/s (benchmarks/peers/run-remote.sh --rate).
    ///
    /// Fails when an endpoint's URL template or TLS files are unusable, so
    /// that a bad module stops the job at start-up rather than at the first
    /// message.
    pub fn new(endpoints: &[HttpEndpoint]) -> Result<Arc<Self>, RemoteError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads((cores / 4).clamp(1, 4))
            .thread_name("statefun-remote")
            .enable_all()
            .build()
            .map_err(|e| {
                RemoteError::from(RemoteErrorDetails {
                    function_type: None,
                    endpoint: String::new(),
                    address: None,
                    url: String::new(),
                    attempts: 0,
                    kind: RemoteErrorKind::Runtime(format!("cannot start the HTTP runtime: {e}")),
                })
            })?;
        Self::build(endpoints, RuntimeRef::Owned(Some(runtime)))
    }

    /// Like [`RemotePool::new`], but runs on an existing tokio runtime (for
    /// embedding in an application that already has one). The runtime must
    /// have I/O and time drivers enabled.
    pub fn with_runtime(
        endpoints: &[HttpEndpoint],
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Self>, RemoteError> {
        Self::build(endpoints, RuntimeRef::Shared(runtime))
    }

    fn build(endpoints: &[HttpEndpoint], runtime: RuntimeRef) -> Result<Arc<Self>, RemoteError> {
        let endpoints = endpoints
            .iter()
            .map(|e| EndpointClient::new(e.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(RemotePool { runtime, endpoints }))
    }

    /// The endpoint serving `function_type`: an exact pattern wins over a
    /// namespace pattern, then module order decides (as in StateFun).
    pub fn endpoint_for(&self, function_type: &TypeName) -> Option<&HttpEndpoint> {
        self.client_for(function_type).map(|c| &c.endpoint)
    }

    /// Every endpoint's counters now, in module order (see [`crate::stats`]): read by the
    /// engine's `/metrics` when scraped.
    pub fn stats(&self) -> Vec<EndpointSnapshot> {
        self.endpoints
            .iter()
            .map(|c| c.stats.snapshot(&c.endpoint.functions.to_string()))
            .collect()
    }

    /// The current concurrency limit of the endpoint serving `function_type`
    /// (see [`crate::concurrency`]).
    pub fn concurrency_limit(&self, function_type: &TypeName) -> Option<usize> {
        self.client_for(function_type)
            .map(|c| c.concurrency.limits().limit())
    }

    fn client_for(&self, function_type: &TypeName) -> Option<&Arc<EndpointClient>> {
        let exact = self.endpoints.iter().find(
            |c| matches!(&c.endpoint.functions, FunctionPattern::Exact(t) if t == function_type),
        );
        exact.or_else(|| {
            self.endpoints
                .iter()
                .find(|c| c.endpoint.functions.matches(function_type))
        })
    }
}

impl Drop for RemotePool {
    /// Stops the owned runtime without waiting for invocations in flight
    /// (their results would have nowhere to go), and without blocking if
    /// dropped inside another runtime.
    fn drop(&mut self) {
        if let RuntimeRef::Owned(rt) = &mut self.runtime {
            if let Some(rt) = rt.take() {
                rt.shutdown_background();
            }
        }
    }
}

/// Runs remote invocations for the engine without blocking its worker thread.
///
/// The engine [`submit`](RemoteInvoker::submit)s requests with a ticket of its
/// choosing; when one finishes, its result is queued and the `waker` is called
/// (typically a timely `SyncActivator`), and the engine collects results with
/// [`drain_completed`](RemoteInvoker::drain_completed) on its next activation.
/// Parsing the body ([`crate::parse_response`]) is left to the engine, which
/// knows the registered state specs. The HTTP side is a [`RemotePool`], which
/// the invokers of one process's workers share.
pub struct RemoteInvoker {
    pool: Arc<RemotePool>,
    completed: Arc<Mutex<Vec<Completion>>>,
    pending: Arc<AtomicUsize>,
    waker: Arc<dyn Fn() + Send + Sync>,
}

enum RuntimeRef {
    Owned(Option<tokio::runtime::Runtime>),
    Shared(tokio::runtime::Handle),
}

impl RuntimeRef {
    fn handle(&self) -> Option<tokio::runtime::Handle> {
        match self {
            RuntimeRef::Owned(rt) => rt.as_ref().map(|rt| rt.handle().clone()),
            RuntimeRef::Shared(h) => Some(h.clone()),
        }
    }
}

impl fmt::Debug for RemoteInvoker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteInvoker")
            .field("pool", &self.pool)
            .field("pending", &self.pending())
            .finish()
    }
}

impl RemoteInvoker {
    /// An invoker on a pool of its own (see [`RemotePool::new`]).
    pub fn new(
        endpoints: &[HttpEndpoint],
        waker: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, RemoteError> {
        Ok(Self::on(RemotePool::new(endpoints)?, waker))
    }

    /// An invoker on a pool of its own running on an existing tokio runtime
    /// (see [`RemotePool::with_runtime`]).
    pub fn with_runtime(
        endpoints: &[HttpEndpoint],
        waker: Arc<dyn Fn() + Send + Sync>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, RemoteError> {
        Ok(Self::on(
            RemotePool::with_runtime(endpoints, runtime)?,
            waker,
        ))
    }

    /// An invoker on a shared pool: one per worker, one pool per process.
    pub fn on(pool: Arc<RemotePool>, waker: Arc<dyn Fn() + Send + Sync>) -> Self {
        RemoteInvoker {
            pool,
            completed: Arc::new(Mutex::new(Vec::new())),
            pending: Arc::new(AtomicUsize::new(0)),
            waker,
        }
    }

    /// The endpoint serving `function_type`: an exact pattern wins over a
    /// namespace pattern, then module order decides (as in StateFun).
    pub fn endpoint_for(&self, function_type: &TypeName) -> Option<&HttpEndpoint> {
        self.pool.endpoint_for(function_type)
    }

    /// The pool this invoker sends through.
    pub fn pool(&self) -> &Arc<RemotePool> {
        &self.pool
    }

    fn client_for(&self, function_type: &TypeName) -> Option<&Arc<EndpointClient>> {
        self.pool.client_for(function_type)
    }

    /// Starts invoking `function_type` with `request` and returns at once.
    ///
    /// On completion `(ticket, result)` is queued for
    /// [`drain_completed`](RemoteInvoker::drain_completed) and the waker is
    /// called. Every submitted ticket completes exactly once, errors included
    /// (no endpoint, shut-down runtime), so the engine can hold the
    /// capability of the batch until then.
    pub fn submit(&self, ticket: u64, function_type: &TypeName, request: ToFunction) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let completed = Arc::clone(&self.completed);
        let pending = Arc::clone(&self.pending);
        let waker = Arc::clone(&self.waker);
        let finish = move |result: Result<Vec<u8>, RemoteError>| {
            // The count drops under the queue's lock, so whoever drains this
            // completion also sees it no longer pending (found by CI: a
            // drain between the push and the decrement saw both).
            let mut queue = completed.lock().unwrap_or_else(|e| e.into_inner());
            queue.push((ticket, result));
            pending.fetch_sub(1, Ordering::SeqCst);
            drop(queue);
            waker();
        };
        let Some(client) = self.client_for(function_type).cloned() else {
            finish(Err(RemoteError::from(RemoteErrorDetails {
                function_type: Some(function_type.clone()),
                endpoint: String::new(),
                address: request_target(&request),
                url: String::new(),
                attempts: 0,
                kind: RemoteErrorKind::NoEndpoint,
            })));
            return;
        };
        let Some(handle) = self.pool.runtime.handle() else {
            finish(Err(client.error(
                function_type,
                &request,
                0,
                RemoteErrorKind::Runtime("the HTTP runtime has shut down".into()),
            )));
            return;
        };
        let function_type = function_type.clone();
        handle.spawn(async move {
            finish(client.invoke(&function_type, &request).await);
        });
    }

    /// Moves every finished invocation into `out` (appending), in completion order.
    pub fn drain_completed(&self, out: &mut Vec<Completion>) {
        out.append(&mut self.completed.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// How many submitted invocations have not completed yet (queued results
    /// not yet drained do not count).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Invokes and waits for the result on the calling thread: for tools and
    /// tests. Must not be called from inside an async runtime.
    pub fn invoke_blocking(
        &self,
        function_type: &TypeName,
        request: ToFunction,
    ) -> Result<Vec<u8>, RemoteError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let Some(client) = self.client_for(function_type).cloned() else {
            return Err(RemoteError::from(RemoteErrorDetails {
                function_type: Some(function_type.clone()),
                endpoint: String::new(),
                address: request_target(&request),
                url: String::new(),
                attempts: 0,
                kind: RemoteErrorKind::NoEndpoint,
            }));
        };
        let runtime_gone = |client: &EndpointClient, request: &ToFunction| {
            client.error(
                function_type,
                request,
                0,
                RemoteErrorKind::Runtime("the HTTP runtime has shut down".into()),
            )
        };
        let Some(handle) = self.pool.runtime.handle() else {
            return Err(runtime_gone(&client, &request));
        };
        let (ft, req, c) = (function_type.clone(), request.clone(), Arc::clone(&client));
        handle.spawn(async move {
            let _ = tx.send(c.invoke(&ft, &req).await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(runtime_gone(&client, &request)))
    }
}

/// One endpoint's settings, its pooled client, its concurrency limit and its counters.
struct EndpointClient {
    endpoint: HttpEndpoint,
    client: Client<Connector, Full<Bytes>>,
    concurrency: Arc<Concurrency>,
    stats: EndpointStats,
}

/// A request target: the URI hyper sees, and the `Host` header to send when
/// the URI's authority is the virtual one carrying a Unix socket path.
struct Target {
    uri: Uri,
    host: Option<&'static str>,
}

enum AttemptError {
    Retryable(String),
    /// An I/O error on the connection (not while connecting).
    Io(String),
    /// Abandoned: the server answered many others meanwhile (see `concurrency`).
    Stalled,
    Fatal(RemoteErrorKind),
}

impl EndpointClient {
    fn new(endpoint: HttpEndpoint) -> Result<Self, RemoteError> {
        let setup_error = |kind| {
            RemoteError::from(RemoteErrorDetails {
                function_type: None,
                endpoint: endpoint.functions.to_string(),
                address: None,
                url: endpoint.url_path_template.clone(),
                attempts: 0,
                kind,
            })
        };
        // Validate the template's shape once (with a placeholder name).
        let probe = endpoint
            .url_path_template
            .replace("{function.name}", "function");
        let target =
            parse_target(&probe).map_err(|e| setup_error(RemoteErrorKind::InvalidUrl(e)))?;
        let tls = if target.uri.scheme_str() == Some("https") {
            Some(Arc::new(
                tls_config(&endpoint.transport.tls)
                    .map_err(|e| setup_error(RemoteErrorKind::Tls(e)))?,
            ))
        } else {
            None
        };
        let t = &endpoint.transport;
        let concurrency = Concurrency::new(t.pool_size);
        let connector = Connector {
            tls,
            connect_timeout: t.connect_timeout,
            concurrency: Arc::clone(&concurrency),
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(t.pool_ttl)
            .pool_max_idle_per_host(t.pool_size)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let client = builder.build(connector);
        Ok(EndpointClient {
            endpoint,
            client,
            concurrency,
            stats: EndpointStats::default(),
        })
    }

    fn error(
        &self,
        function_type: &TypeName,
        request: &ToFunction,
        attempts: u32,
        kind: RemoteErrorKind,
    ) -> RemoteError {
        RemoteError::from(RemoteErrorDetails {
            function_type: Some(function_type.clone()),
            endpoint: self.endpoint.functions.to_string(),
            address: request_target(request),
            url: self.endpoint.url_for(function_type),
            attempts,
            kind,
        })
    }

    /// One call (retries included), counted in the endpoint's [`EndpointStats`]: on the
    /// HTTP runtime, so timing it costs the workers nothing.
    async fn invoke(
        &self,
        function_type: &TypeName,
        request: &ToFunction,
    ) -> Result<Vec<u8>, RemoteError> {
        let messages = match &request.request {
            Some(statefun_sdk::proto::request_reply::to_function::Request::Invocation(batch)) => {
                batch.invocations.len()
            }
            None => 0,
        };
        let in_flight = self.stats.start(messages);
        let started = Instant::now();
        let result = self.call(function_type, request).await;
        let (attempts, failure) = match &result {
            // A successful call made at least one attempt; the failed ones say how many.
            Ok((_, attempts)) => (*attempts, None),
            Err(e) => (e.attempts, Some(&e.kind)),
        };
        self.stats.finish(started.elapsed(), attempts, failure);
        drop(in_flight);
        result.map(|(body, _)| body)
    }

    /// [`EndpointClient::invoke`] without the counting: the body and the attempts made.
    async fn call(
        &self,
        function_type: &TypeName,
        request: &ToFunction,
    ) -> Result<(Vec<u8>, u32), RemoteError> {
        let t = &self.endpoint.transport;
        let body = Bytes::from(request.encode_to_vec());
        if body.len() > t.payload_max_bytes {
            return Err(self.error(
                function_type,
                request,
                0,
                RemoteErrorKind::RequestTooLarge {
                    size: body.len(),
                    max: t.payload_max_bytes,
                },
            ));
        }
        let url = self.endpoint.url_for(function_type);
        let target = parse_target(&url)
            .map_err(|e| self.error(function_type, request, 0, RemoteErrorKind::InvalidUrl(e)))?;
        let deadline = Instant::now() + t.call_timeout;
        let mut attempts = 0u32;
        let mut last_cause: Option<String> = None;
        let mut backoff = BACKOFF_START;
        // One stall abandonment and one immediate I/O retry per call.
        let (mut may_abandon, mut may_retry_now) = (true, true);
        let timeout_error = |attempts, last_cause| {
            self.error(
                function_type,
                request,
                attempts,
                RemoteErrorKind::Timeout {
                    call_timeout: t.call_timeout,
                    last_cause,
                },
            )
        };
        loop {
            attempts += 1;
            let attempt =
                tokio::time::timeout_at(deadline, self.attempt(&target, body.clone(), may_abandon));
            let (cause, now) = match attempt.await {
                Err(_elapsed) => return Err(timeout_error(attempts, last_cause)),
                Ok(Ok(body)) => return Ok((body, attempts)),
                Ok(Err(AttemptError::Fatal(kind))) => {
                    return Err(self.error(function_type, request, attempts, kind))
                }
                Ok(Err(AttemptError::Retryable(cause))) => (cause, false),
                Ok(Err(AttemptError::Io(cause))) => (cause, std::mem::take(&mut may_retry_now)),
                Ok(Err(AttemptError::Stalled)) => {
                    may_abandon = false;
                    (
                        "stalled behind other requests; retried on another connection".into(),
                        true,
                    )
                }
            };
            tracing::debug!(
                function = %function_type, url = %url, attempt = attempts, %cause,
                "remote invocation attempt failed; retrying"
            );
            last_cause = Some(cause);
            if now {
                continue;
            }
            let pause = statefun_retry::jitter(backoff, 0.5, 1.0);
            if Instant::now() + pause >= deadline {
                return Err(timeout_error(attempts, last_cause));
            }
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    async fn attempt(
        &self,
        target: &Target,
        body: Bytes,
        may_abandon: bool,
    ) -> Result<Vec<u8>, AttemptError> {
        let t = &self.endpoint.transport;
        // Waiting for a slot is not the server's time: it counts against the
        // call timeout only, not the write + read timeouts.
        let slot = self.concurrency.request().await;
        let mut builder = Request::post(target.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(host) = target.host {
            builder = builder.header(hyper::header::HOST, host);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| AttemptError::Fatal(RemoteErrorKind::InvalidUrl(e.to_string())))?;
        let head_timeout = t.write_timeout.saturating_add(t.read_timeout);
        let head = tokio::time::timeout(head_timeout, self.client.request(request));
        let head = if may_abandon {
            tokio::select! {
                head = head => head,
                () = stalled(&slot) => {
                    slot.stalled_out();
                    return Err(AttemptError::Stalled);
                }
            }
        } else {
            head.await
        };
        let response = match head {
            Err(_) => {
                return Err(AttemptError::Retryable(format!(
                    "no response within the write + read timeouts ({head_timeout:?})"
                )))
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(AttemptError::Retryable(format!(
                    "connect error: {}",
                    chain(&e)
                )));
            }
            Ok(Err(e)) => return Err(AttemptError::Io(format!("I/O error: {}", chain(&e)))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            let mut excerpt = Vec::new();
            // Best effort: an error page's start helps, but must not hang the call.
            let _ = read_body(
                response.into_body(),
                ERROR_BODY_EXCERPT,
                t.read_timeout,
                &mut excerpt,
                true,
            )
            .await;
            let body = String::from_utf8_lossy(&excerpt).trim().to_string();
            return Err(if is_retryable(status) {
                AttemptError::Retryable(format!("HTTP status {}", status.as_u16()))
            } else {
                AttemptError::Fatal(RemoteErrorKind::Status {
                    status: status.as_u16(),
                    body,
                })
            });
        }
        let max = t.payload_max_bytes;
        let announced = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(len) = announced {
            if len > max {
                return Err(AttemptError::Fatal(RemoteErrorKind::ResponseTooLarge {
                    size: len,
                    max,
                }));
            }
        }
        let mut out = Vec::with_capacity(announced.unwrap_or(0));
        read_body(response.into_body(), max, t.read_timeout, &mut out, false).await?;
        slot.succeeded();
        Ok(out)
    }
}

/// Resolves once the attempt holding `slot` is stalled (never, otherwise).
async fn stalled(slot: &RequestSlot) {
    loop {
        tokio::time::sleep(slot.check_every()).await;
        if slot.stalled() {
            return;
        }
    }
}

/// Reads a body into `out`, each chunk within `read_timeout`. With
/// `truncate`, stops quietly at `max` bytes; otherwise going past `max` is a
/// [`RemoteErrorKind::ResponseTooLarge`].
async fn read_body(
    mut body: Incoming,
    max: usize,
    read_timeout: Duration,
    out: &mut Vec<u8>,
    truncate: bool,
) -> Result<(), AttemptError> {
    loop {
        let frame = match tokio::time::timeout(read_timeout, body.frame()).await {
            Err(_) => {
                return Err(AttemptError::Retryable(format!(
                    "response body stalled for the read timeout ({read_timeout:?})"
                )))
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => {
                return Err(AttemptError::Io(format!(
                    "I/O error reading the response body: {}",
                    chain(&e)
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                if truncate {
                    out.extend_from_slice(&data[..max - out.len()]);
                    return Ok(());
                }
                return Err(AttemptError::Fatal(RemoteErrorKind::ResponseTooLarge {
                    size: out.len() + data.len(),
                    max,
                }));
            }
            out.extend_from_slice(&data);
        }
    }
}

/// The statuses StateFun retries: timeouts, conflicts, rate limits and server errors.
fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 420 | 429 | 499) || status.is_server_error()
}

/// An error and its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Parses an endpoint URL into the URI hyper requests.
///
/// `http+unix:///run/fn.sock/path` and `https+unix://…` (StateFun's Unix
/// socket form: the socket is the path up to the first segment ending in
/// `.sock`, the rest is the request path) become `http(s)://<hex of the socket
/// path>.unix.statefun-rs.invalid/path`: the connector decodes the socket path
/// back, and the pool keys connections by socket like by host.
fn parse_target(url: &str) -> Result<Target, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("`{url}` has no scheme (write http://, https://, http+unix:// or https+unix://)")
    })?;
    match scheme {
        "http" | "https" => {
            let uri: Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(format!("`{url}` has no host"));
            }
            Ok(Target { uri, host: None })
        }
        "http+unix" | "https+unix" => {
            let path = rest
                .strip_prefix('/')
                .map(|_| rest)
                .ok_or_else(|| format!("`{url}`: a Unix socket URL needs an absolute path (`{scheme}:///path/to/socket.sock/function`)"))?;
            let mut end = None;
            let mut offset = 0;
            for segment in path.split('/') {
                offset += segment.len();
                if segment.ends_with(".sock") {
                    end = Some(offset);
                    break;
                }
                offset += 1;
            }
            let end = end.ok_or_else(|| {
                format!("`{url}`: no path segment ends in `.sock`, so the socket path is unknown")
            })?;
            let (socket, request_path) = path.split_at(end);
            let request_path = if request_path.is_empty() { "/" } else { request_path };
            let hex: String = socket.bytes().map(|b| format!("{b:02x}")).collect();
            let inner = if scheme == "http+unix" { "http" } else { "https" };
            let uri: Uri = format!("{inner}://{hex}{UNIX_HOST_SUFFIX}{request_path}")
                .parse()
                .map_err(|e| format!("`{url}`: {e}"))?;
            Ok(Target {
                uri,
                host: Some("localhost"),
            })
        }
        other => Err(format!(
            "`{url}` has the unsupported scheme `{other}` (write http, https, http+unix or https+unix)"
        )),
    }
}

/// The socket path carried by a virtual Unix authority, if `host` is one.
fn unix_socket_of(host: &str) -> Option<Result<PathBuf, String>> {
    let hex = host.strip_suffix(UNIX_HOST_SUFFIX)?;
    let bytes: Result<Vec<u8>, String> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad Unix socket authority `{host}`"))
        })
        .collect();
    Some(bytes.and_then(|b| {
        String::from_utf8(b)
            .map(PathBuf::from)
            .map_err(|e| format!("bad Unix socket authority `{host}`: {e}"))
    }))
}

fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, String> {
    let file_path = |p: &str| -> Result<PathBuf, String> {
        if p.starts_with("classpath:") {
            return Err(format!(
                "`{p}`: classpath resources do not exist here; give a file path"
            ));
        }
        Ok(PathBuf::from(p.strip_prefix("file:").unwrap_or(p)))
    };
    let mut roots = rustls::RootCertStore::empty();
    match &files.trust_cacerts {
        Some(ca) => {
            let path = file_path(ca)?;
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("trust_cacerts `{}`: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("trust_cacerts `{}`: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("trust_cacerts `{}`: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "trust_cacerts `{}` holds no certificate",
                    path.display()
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&files.client_cert, &files.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            if files.client_key_password.is_some() {
                return Err(
                    "client_key_password is set, but encrypted keys are not supported; decrypt the key \
                     (`openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-plain.pem`) and drop the password"
                        .into(),
                );
            }
            let cert_path = file_path(cert)?;
            let chain = CertificateDer::pem_file_iter(&cert_path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client_cert `{}`: {e}", cert_path.display()))?;
            let key_path = file_path(key)?;
            let key = PrivateKeyDer::from_pem_file(&key_path)
                .map_err(|e| format!("client_key `{}`: {e}", key_path.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        _ => Err("client_cert and client_key must be given together".into()),
    }
}

/// Opens TCP or Unix connections, with TLS on top for `https`, each holding
/// a connection slot of its endpoint until it closes.
#[derive(Clone)]
struct Connector {
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    concurrency: Arc<Concurrency>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Conn>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // Wait for a slot first (an idle pooled connection may be taken
            // meanwhile): the connect timeout bounds the connecting only.
            let slot = this.concurrency.connection().await;
            let timeout = this.connect_timeout;
            match tokio::time::timeout(timeout, this.connect(uri)).await {
                Ok(r) => r.map(|stream| {
                    TokioIo::new(Conn {
                        stream,
                        _slot: slot,
                    })
                }),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {timeout:?}"),
                )),
            }
        })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> io::Result<Stream> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let host = uri
            .host()
            .ok_or_else(|| invalid(format!("`{uri}` has no host")))?
            .to_string();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(invalid(format!("unsupported scheme {other:?}"))),
        };
        let tls = match (https, &self.tls) {
            (false, _) => None,
            (true, Some(config)) => Some(TlsConnector::from(Arc::clone(config))),
            (true, None) => {
                return Err(invalid(
                    "https URL on an endpoint whose template is not https".into(),
                ))
            }
        };
        if let Some(socket) = unix_socket_of(&host) {
            let socket = socket.map_err(invalid)?;
            let stream = UnixStream::connect(&socket)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
            return match tls {
                None => Ok(Stream::Unix(stream)),
                Some(tls) => {
                    let name =
                        ServerName::try_from("localhost").map_err(|e| invalid(e.to_string()))?;
                    Ok(Stream::TlsUnix(Box::new(tls.connect(name, stream).await?)))
                }
            };
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // IPv6 literals come bracketed from `Uri::host`.
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let stream = TcpStream::connect((bare.as_str(), port)).await?;
        stream.set_nodelay(true)?;
        match tls {
            None => Ok(Stream::Tcp(stream)),
            Some(tls) => {
                let name = ServerName::try_from(bare).map_err(|e| invalid(e.to_string()))?;
                Ok(Stream::TlsTcp(Box::new(tls.connect(name, stream).await?)))
            }
        }
    }
}

/// An open connection and the slot it holds.
struct Conn {
    stream: Stream,
    _slot: ConnectionSlot,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.stream.quickack();
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A connection of any of the four kinds.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    TlsTcp(Box<TlsStream<TcpStream>>),
    TlsUnix(Box<TlsStream<UnixStream>>),
}

impl Stream {
    /// Asks the kernel to acknowledge what arrives next at once (Linux's
    /// `TCP_QUICKACK`, which the kernel turns off again by itself, hence
    /// before every read).
    ///
    /// Why: servers that write a response's head and body in separate
    /// writes with Nagle's algorithm on (Python's `http.server`, many small
    /// frameworks) hold the body until the head is acknowledged, and a
    /// delayed acknowledgement holds that for up to 40 ms: on a keep-alive
    /// connection every request paid it (measured: 75 requests/s against a
    /// single-threaded server, several hundred with this).
    fn quickack(&self) {
        #[cfg(target_os = "linux")]
        {
            let tcp = match self {
                Stream::Tcp(s) => Some(s),
                Stream::TlsTcp(s) => Some(s.get_ref().0),
                Stream::Unix(_) | Stream::TlsUnix(_) => None,
            };
            if let Some(tcp) = tcp {
                let _ = tcp.set_quickack(true);
            }
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::TlsTcp($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Stream::TlsUnix($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_urls_carry_the_socket_path() {
        let t = parse_target("http+unix:///tmp/run/fn.sock/statefun/greeter").unwrap();
        assert_eq!(t.uri.scheme_str(), Some("http"));
        assert_eq!(t.uri.path(), "/statefun/greeter");
        assert_eq!(t.host, Some("localhost"));
        let host = t.uri.host().unwrap();
        assert_eq!(
            unix_socket_of(host).unwrap().unwrap(),
            PathBuf::from("/tmp/run/fn.sock")
        );
        let t = parse_target("https+unix:///fn.sock").unwrap();
        assert_eq!(t.uri.scheme_str(), Some("https"));
        assert_eq!(t.uri.path(), "/");
        assert!(parse_target("http+unix:///tmp/nosock/x").is_err());
        assert!(parse_target("ftp://x/y").is_err());
        assert!(parse_target("no-scheme").is_err());
        assert!(unix_socket_of("example.com").is_none());
    }

    #[test]
    fn tcp_urls_pass_through() {
        let t = parse_target("http://127.0.0.1:8000/statefun").unwrap();
        assert_eq!(t.uri.port_u16(), Some(8000));
        assert_eq!(t.host, None);
    }

    #[test]
    fn retryable_statuses_match_statefun() {
        for s in [408, 409, 420, 429, 499, 500, 503, 599] {
            assert!(is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 302] {
            assert!(!is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn tls_config_defaults_to_webpki_roots_and_rejects_bad_files() {
        assert!(tls_config(&TlsFiles::default()).is_ok());
        let bad = TlsFiles {
            trust_cacerts: Some("file:/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert!(tls_config(&bad)
            .unwrap_err()
            .contains("/nonexistent/ca.pem"));
        let half = TlsFiles {
            client_cert: Some("/x.pem".into()),
            ..Default::default()
        };
        assert!(tls_config(&half).is_err());
    }
}
