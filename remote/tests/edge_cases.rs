//! Protocol and transport edge cases against a tiny local HTTP server (hyper)
//! whose answers each test scripts: retries, timeouts, garbage, closed ports,
//! payload limits, type mismatches.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{endpoint, tn, Harness};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use statefun_remote::{
    build_request, parse_response, InvocationInput, ProtocolError, RemoteErrorKind, RemoteOutcome,
};
use statefun_sdk::proto::request_reply::{from_function, FromFunction, ToFunction};
use statefun_sdk::types::{Type, INT, STRING};
use statefun_sdk::{Address, Expiration, TypedValue, ValueSpecDescriptor};

/// What the scripted server does for one request.
enum Reply {
    Status(u16, &'static str),
    Body(Vec<u8>),
    Hang,
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A scripted HTTP server on 127.0.0.1 on its own runtime; `hits` counts requests.
struct Server {
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        let script: Script = Arc::new(script);
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let counter = Arc::clone(&hits);
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = Arc::clone(&script);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let reply = script(n);
                        async move {
                            let response = match reply {
                                Reply::Status(code, body) => Response::builder()
                                    .status(
                                        StatusCode::from_u16(code)
                                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                                    )
                                    .body(Full::new(Bytes::from_static(body.as_bytes()))),
                                Reply::Body(body) => Response::builder()
                                    .header("content-type", "application/octet-stream")
                                    .body(Full::new(Bytes::from(body))),
                                Reply::Hang => {
                                    std::future::pending::<()>().await;
                                    Response::builder().body(Full::new(Bytes::new()))
                                }
                            };
                            Ok::<_, Infallible>(response.unwrap_or_default())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server {
            _runtime: runtime,
            addr,
            hits,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/statefun/{{function.name}}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn target() -> Address {
    Address::new(tn("example/greeter"), "alice")
}

fn seen() -> ValueSpecDescriptor {
    ValueSpecDescriptor {
        name: "seen".into(),
        typename: tn("io.statefun.types/int"),
        expiration: Expiration::Never,
    }
}

fn request() -> ToFunction {
    build_request(
        &target(),
        &[InvocationInput {
            caller: None,
            argument: TypedValue::new(
                "io.statefun.types/string",
                STRING.encode(&"alice".to_string()),
            ),
        }],
        &[(seen(), None)],
    )
}

fn response(mutation_typename: &str, value: Vec<u8>) -> Vec<u8> {
    FromFunction {
        response: Some(from_function::Response::InvocationResult(
            from_function::InvocationResponse {
                state_mutations: vec![from_function::PersistedValueMutation {
                    mutation_type: 1,
                    state_name: "seen".into(),
                    state_value: Some(TypedValue::new(mutation_typename, value)),
                }],
                ..Default::default()
            },
        )),
    }
    .encode_to_vec()
}

const LIMIT: Duration = Duration::from_secs(15);

#[test]
fn status_500_then_success_is_retried() {
    let server = Server::start(|n| {
        if n == 0 {
            Reply::Status(500, "boom")
        } else {
            Reply::Body(response("io.statefun.types/int", INT.encode(&1)))
        }
    });
    let h = Harness::new(&[endpoint("example/*", &server.url(), |_| {})]);
    let body = h
        .call("example/greeter", request(), LIMIT)
        .expect("retried to success");
    assert_eq!(server.hits(), 2);
    let RemoteOutcome::Complete(effects) =
        parse_response(&body, &target(), &[seen()]).expect("valid")
    else {
        panic!("incomplete");
    };
    assert_eq!(
        effects.state[0]
            .value
            .as_ref()
            .map(|v| INT.decode(&v.value).ok()),
        Some(Some(1))
    );
}

#[test]
fn non_retryable_status_fails_at_once() {
    let server = Server::start(|_| Reply::Status(404, "no such function"));
    let h = Harness::new(&[endpoint("example/*", &server.url(), |_| {})]);
    let err = h
        .call("example/greeter", request(), LIMIT)
        .expect_err("404");
    assert_eq!(server.hits(), 1);
    assert!(
        matches!(&err.kind, RemoteErrorKind::Status { status: 404, body } if body == "no such function"),
        "{err}"
    );
    let text = err.to_string();
    for needle in [
        "example/greeter",
        "example/greeter/alice",
        &server.url().replace("{function.name}", "greeter"),
        "404",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
}

#[test]
fn hanging_endpoint_hits_the_call_timeout() {
    let server = Server::start(|_| Reply::Hang);
    let h = Harness::new(&[endpoint("example/*", &server.url(), |t| {
        t.call_timeout = Duration::from_millis(700);
    })]);
    let started = Instant::now();
    let err = h
        .call("example/greeter", request(), LIMIT)
        .expect_err("timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(matches!(err.kind, RemoteErrorKind::Timeout { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("call timeout") && text.contains("example/greeter/alice"),
        "{text}"
    );
}

#[test]
fn read_timeout_is_retried_within_the_call_timeout() {
    let server = Server::start(|_| Reply::Hang);
    let h = Harness::new(&[endpoint("example/*", &server.url(), |t| {
        t.call_timeout = Duration::from_millis(1500);
        t.read_timeout = Duration::from_millis(200);
        t.write_timeout = Duration::from_millis(100);
    })]);
    let err = h
        .call("example/greeter", request(), LIMIT)
        .expect_err("timeout");
    assert!(err.attempts >= 2, "{err}");
    assert!(server.hits() >= 2);
    match &err.kind {
        RemoteErrorKind::Timeout {
            last_cause: Some(c),
            ..
        } => assert!(c.contains("read timeout"), "{c}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_body_is_a_protocol_error() {
    let server =
        Server::start(|_| Reply::Body(b"<html><body>Internal error</body></html>".to_vec()));
    let h = Harness::new(&[endpoint("example/*", &server.url(), |_| {})]);
    let body = h.call("example/greeter", request(), LIMIT).expect("200");
    let err = parse_response(&body, &target(), &[seen()]).expect_err("garbage");
    assert!(matches!(err, ProtocolError::Decode { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("example/greeter/alice") && text.contains("<html>"),
        "{text}"
    );
}

#[test]
fn closed_port_fails_with_connect_error_after_retries() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/statefun/{{function.name}}");
    let h = Harness::new(&[endpoint("example/*", &url, |t| {
        t.call_timeout = Duration::from_millis(500);
    })]);
    let started = Instant::now();
    let err = h
        .call("example/greeter", request(), LIMIT)
        .expect_err("closed port");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.attempts > 1, "{err}");
    match &err.kind {
        RemoteErrorKind::Timeout {
            last_cause: Some(c),
            ..
        } => {
            assert!(c.contains("connect"), "{c}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn ten_megabyte_response_exceeds_payload_max_bytes() {
    let server = Server::start(|_| Reply::Body(vec![0u8; 10 * 1024 * 1024]));
    let h = Harness::new(&[endpoint("example/*", &server.url(), |t| {
        t.payload_max_bytes = 1024 * 1024;
    })]);
    let err = h
        .call("example/greeter", request(), LIMIT)
        .expect_err("too large");
    assert!(
        matches!(err.kind, RemoteErrorKind::ResponseTooLarge { size, max: 1048576 } if size > 1048576),
        "{err}"
    );
    assert_eq!(server.hits(), 1, "not retried");
    assert!(err.to_string().contains("payload_max_bytes"), "{err}");
}

#[test]
fn oversized_request_is_not_sent() {
    let server = Server::start(|_| Reply::Status(200, ""));
    let h = Harness::new(&[endpoint("example/*", &server.url(), |t| {
        t.payload_max_bytes = 16;
    })]);
    let err = h
        .call("example/greeter", request(), LIMIT)
        .expect_err("too large");
    assert!(
        matches!(err.kind, RemoteErrorKind::RequestTooLarge { max: 16, .. }),
        "{err}"
    );
    assert_eq!(server.hits(), 0);
}

#[test]
fn modify_with_wrong_typename_is_a_type_mismatch() {
    let server = Server::start(|_| {
        Reply::Body(response(
            "io.statefun.types/string",
            STRING.encode(&"x".to_string()),
        ))
    });
    let h = Harness::new(&[endpoint("example/*", &server.url(), |_| {})]);
    let body = h.call("example/greeter", request(), LIMIT).expect("200");
    let err = parse_response(&body, &target(), &[seen()]).expect_err("mismatch");
    match &err {
        ProtocolError::TypeMismatch {
            state,
            expected,
            actual,
            ..
        } => {
            assert_eq!(state, "seen");
            assert_eq!(expected.as_str(), "io.statefun.types/int");
            assert_eq!(actual, "io.statefun.types/string");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn unknown_function_type_completes_with_no_endpoint() {
    let h = Harness::new(&[endpoint("example/greeter", "http://127.0.0.1:9/x", |_| {})]);
    assert!(h.invoker.endpoint_for(&tn("other/fn")).is_none());
    let err = h
        .call("other/fn", request(), LIMIT)
        .expect_err("no endpoint");
    assert_eq!(err.kind, RemoteErrorKind::NoEndpoint);
    assert_eq!(h.invoker.pending(), 0);
}

#[test]
fn concurrent_submissions_all_complete_once() {
    let server = Server::start(|_| Reply::Body(response("io.statefun.types/int", INT.encode(&1))));
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let _ = tx.lock().map(|t| t.send(()));
    });
    let invoker =
        statefun_remote::RemoteInvoker::new(&[endpoint("example/*", &server.url(), |_| {})], waker)
            .expect("invoker");
    for ticket in 0..50 {
        invoker.submit(ticket, &tn("example/greeter"), request());
    }
    let deadline = Instant::now() + LIMIT;
    let mut done = Vec::new();
    while done.len() < 50 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only {} of 50 completed", done.len());
        let _ = rx.recv_timeout(left);
        invoker.drain_completed(&mut done);
    }
    let mut tickets: Vec<u64> = done
        .iter()
        .map(|(t, r)| {
            assert!(r.is_ok(), "{r:?}");
            *t
        })
        .collect();
    tickets.sort_unstable();
    assert_eq!(tickets, (0..50).collect::<Vec<_>>());
    assert_eq!(server.hits(), 50);
    assert_eq!(invoker.pending(), 0);
}

#[test]
fn bad_templates_fail_at_start() {
    let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(|| {});
    for url in [
        "ftp://x/{function.name}",
        "http+unix:///tmp/nosocket/{function.name}",
        "localhost:80/x",
    ] {
        let err = statefun_remote::RemoteInvoker::new(
            &[endpoint("example/*", url, |_| {})],
            Arc::clone(&waker),
        )
        .expect_err(url);
        assert!(matches!(err.kind, RemoteErrorKind::InvalidUrl(_)), "{err}");
        assert!(err.to_string().contains("example/*"), "{err}");
    }
}
