//! End to end with the official StateFun SDKs (Python, and Go for the greeter): served over
//! HTTP, the engine running a module.yaml, egress checked record by record.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, FunctionRegistry, RunOptions, Settings, Shared};
use statefun_sdk::{
    Context, EgressMessage, FunctionError, FunctionSpec, Message, MessageBuilder, StringType,
    TypeName,
};
use statefun_testkit::FunctionServer;

/// The venv made by ci/install-python-sdk.sh, if present. In CI a missing venv
/// is a failure (the install step is broken), elsewhere the test is skipped.
fn python() -> Option<PathBuf> {
    statefun_testkit::python_sdk()
}

/// functions.py on a free port; killed on drop.
fn start_python(python: &Path) -> FunctionServer {
    start_python_behind(python, "aiohttp")
}

/// functions.py behind the HTTP server `shape` (see its `--server`).
fn start_python_behind(python: &Path, shape: &str) -> FunctionServer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions.py");
    let mut command = Command::new(python);
    command.arg(script).args(["--port", "0", "--server", shape]);
    spawn_server(command)
}

/// Starts a server that prints `PORT <n>` and `READY` once it listens and serves until its
/// stdin closes (functions.py, the Go greeter).
fn spawn_server(mut command: Command) -> FunctionServer {
    command.stdin(Stdio::piped());
    FunctionServer::spawn(command)
}

fn module(dir: &Path, port: u16, targets: &str, input: &str) -> PathBuf {
    std::fs::write(dir.join("in.txt"), input).unwrap();
    let yaml = format!(
        "kind: io.statefun.endpoints.v2/http
spec:
  functions: example/*
  urlPathTemplate: http://127.0.0.1:{port}/statefun/{{function.name}}
  maxNumBatchRequests: 50
---
kind: io.statefun-rs.file.v1/ingress
spec:
  id: test/in
  path: in.txt
  valueType: io.statefun.types/string
  targets: [{targets}]
---
kind: io.statefun-rs.file.v1/egress
spec:
  id: example/greets
  path: out.jsonl
"
    );
    let path = dir.join("module.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn values(dir: &Path) -> Vec<String> {
    statefun_testkit::egress_lines(&dir.join("out.jsonl"))
}

fn run(
    path: &Path,
    registry: &FunctionRegistry,
    workers: usize,
) -> statefun_engine::dataflow::RunReport {
    run_sharing(path, registry, workers, Arc::new(Shared::default()))
}

/// [`run`] with the caller's [`Shared`], to read the run's metrics after.
fn run_sharing(
    path: &Path,
    registry: &FunctionRegistry,
    workers: usize,
    shared: Arc<Shared>,
) -> statefun_engine::dataflow::RunReport {
    let options = RunOptions {
        cluster: ClusterConfig {
            workers,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    };
    run_module(path, registry, &options, shared).expect("run succeeds")
}

/// The Go SDK greeter (examples/go-greeter), built with `go build`. In CI a
/// missing Go toolchain is a failure, elsewhere the test is skipped.
fn go_greeter(dir: &Path, args: &[&str]) -> Option<Command> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../go-greeter");
    let binary = dir.join("go-greeter");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .status();
    match built {
        Ok(status) if status.success() => {
            let mut command = Command::new(binary);
            command.args(["-port", "0"]).args(args);
            Some(command)
        }
        other => statefun_testkit::unavailable(
            &format!("cannot build examples/go-greeter ({other:?})"),
            "bash ci/install-go-sdk.sh",
        ),
    }
}

#[test]
fn greeter_in_python_counts_and_greets() {
    let Some(python) = python() else { return };
    check_greeter(start_python(&python));
}

#[test]
fn greeter_in_go_runs_unchanged() {
    let build_dir = tempfile::tempdir().unwrap();
    let Some(command) = go_greeter(build_dir.path(), &[]) else {
        return;
    };
    check_greeter(spawn_server(command));
}

// ---- server shapes ------------------------------------------------------------------------
//
// The same app behind every HTTP server shape users serve the SDKs from: servers that close
// the connection after each response (HTTP/1.0, `Connection: close`), single-threaded ones
// with a listen backlog of 5, threaded ones, and keep-alive servers that close idle
// connections. Each run pushes 3 000 records over 300 names (so up to 300 requests want to be
// in flight at once) and checks every greeting: the exact count per name, in order.

/// 3 000 records over 300 names, 10 each; returns the module's path.
fn many_names(dir: &Path, port: u16) -> PathBuf {
    let input: String = (0..3000)
        .map(|i| format!("n{}\tn{}\n", i % 300, i % 300))
        .collect();
    module(dir, port, "example/greeter", &input)
}

/// Runs [`many_names`] against `server` with 2 workers and checks every greeting.
fn check_server_shape(shape: &str, server: FunctionServer) {
    let dir = tempfile::tempdir().unwrap();
    let path = many_names(dir.path(), server.port);
    let started = std::time::Instant::now();
    let shared = Arc::new(Shared::default());
    let report = run_sharing(&path, &FunctionRegistry::new(), 2, shared.clone());
    let elapsed = started.elapsed();
    // The greeter declares its `seen` state, which the runtime learns from the first
    // `IncompleteInvocationContext`: once per worker, not once per new name (300).
    let handshakes = shared
        .metrics
        .remote_state_handshakes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=2).contains(&handshakes),
        "{shape}: {handshakes} state handshakes for one function type on 2 workers"
    );
    // Throughput for docs/BENCHMARKS.md (printed, never asserted).
    println!(
        "server shape {shape}: {} invocations in {:.2} s = {:.0} records/s",
        report.invocations,
        elapsed.as_secs_f64(),
        report.invocations as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(report.invocations, 3000, "{shape}");
    let got = values(dir.path());
    assert_eq!(got.len(), 3000, "{shape}: every record greeted once");
    for n in 0..300 {
        for seen in 2..=10 {
            let line = format!("n{n} Hello n{n}! I've seen you {seen} times.");
            assert!(
                got.binary_search(&line).is_ok(),
                "{shape}: missing `{line}`"
            );
        }
        let first = format!("n{n} Hello n{n}!");
        assert!(
            got.binary_search(&first).is_ok(),
            "{shape}: missing `{first}`"
        );
    }
}

fn check_python_shape(shape: &str) {
    let Some(python) = python() else { return };
    check_server_shape(shape, start_python_behind(&python, shape));
}

#[test]
fn server_shape_http_server_http10_closes_after_each_response() {
    check_python_shape("http10");
}

#[test]
fn server_shape_http_server_http11_keep_alive() {
    check_python_shape("http11");
}

#[test]
fn server_shape_flask_on_werkzeug() {
    check_python_shape("flask");
}

#[test]
fn server_shape_gunicorn_sync_workers() {
    check_python_shape("gunicorn");
}

#[test]
fn server_shape_aiohttp() {
    check_python_shape("aiohttp");
}

#[test]
fn server_shape_keep_alive_closing_idle_connections_after_1s() {
    check_python_shape("idle-close");
}

/// The load-balancer case proper: pooled connections sit idle for about the server's 1 s
/// idle timeout and are then reused, so some requests meet a connection the server is closing
/// or has just closed. A Rust pacer greets each of 100 names now and again after 0.95, 1.0
/// and 1.05 s (delayed messages); every greeting must arrive exactly once.
#[test]
fn server_shape_idle_close_reuses_connections_around_the_idle_timeout() {
    let Some(python) = python() else { return };
    let server = start_python_behind(&python, "idle-close");
    let dir = tempfile::tempdir().unwrap();
    let pacer = |ctx: &mut Context<'_>, message: Message| -> Result<(), FunctionError> {
        let name = message.as_string()?;
        let greet = || {
            MessageBuilder::for_address(TypeName::parse("example/greeter")?, name.clone())
                .with_string(&name)
                .build()
        };
        ctx.send(greet()?);
        for ms in [950, 1000, 1050] {
            ctx.send_after(std::time::Duration::from_millis(ms), greet()?);
        }
        Ok(())
    };
    let mut registry = FunctionRegistry::new();
    registry
        .register(
            FunctionSpec::builder(TypeName::parse("rust/pacer").unwrap())
                .with_function(pacer)
                .build()
                .unwrap(),
        )
        .unwrap();
    let input: String = (0..100).map(|i| format!("n{i}\tn{i}\n")).collect();
    let path = module(dir.path(), server.port, "rust/pacer", &input);
    let report = run(&path, &registry, 2);
    assert_eq!(report.invocations, 100 + 400);
    let got = values(dir.path());
    assert_eq!(got.len(), 400, "every greeting exactly once");
    for n in 0..100 {
        assert!(got.binary_search(&format!("n{n} Hello n{n}!")).is_ok());
        for seen in 2..=4 {
            let line = format!("n{n} Hello n{n}! I've seen you {seen} times.");
            assert!(got.binary_search(&line).is_ok(), "missing `{line}`");
        }
    }
}

#[test]
fn server_shape_go_net_http_with_connection_close() {
    let build_dir = tempfile::tempdir().unwrap();
    let Some(command) = go_greeter(build_dir.path(), &["-close"]) else {
        return;
    };
    check_server_shape("go-close", spawn_server(command));
}

/// Runs names through the greeter served by `server` and checks every greeting.
fn check_greeter(server: FunctionServer) {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for round in 1..=3 {
        for name in ["alice", "bob", "carol", "dave"] {
            if round <= 2 || name == "alice" {
                input.push_str(&format!("{name}\t{name}\n"));
            }
        }
    }
    let path = module(dir.path(), server.port, "example/greeter", &input);
    let report = run(&path, &FunctionRegistry::new(), 2);
    assert_eq!(report.invocations, 9);
    let mut expected = vec![
        "alice Hello alice! I've seen you 2 times.",
        "alice Hello alice! I've seen you 3 times.",
        "alice Hello alice!",
        "bob Hello bob! I've seen you 2 times.",
        "bob Hello bob!",
        "carol Hello carol! I've seen you 2 times.",
        "carol Hello carol!",
        "dave Hello dave! I've seen you 2 times.",
        "dave Hello dave!",
    ];
    expected.sort();
    assert_eq!(values(dir.path()), expected);
}

#[test]
fn rust_and_python_functions_message_each_other() {
    let Some(python) = python() else { return };
    let server = start_python(&python);
    let dir = tempfile::tempdir().unwrap();
    // rust/relay forwards ingress text to example/echo (Python), which answers
    // its caller; the relay reports the answer to the egress.
    let relay = |ctx: &mut Context<'_>, message: Message| -> Result<(), FunctionError> {
        let text = message.as_string()?;
        let me = ctx.self_address().clone();
        match ctx.caller().map(|c| c.function_type.to_string()) {
            None => ctx.send(
                MessageBuilder::for_address(TypeName::parse("example/echo")?, me.id.clone())
                    .with_string(&text)
                    .build()?,
            ),
            Some(caller) => ctx.send_egress(EgressMessage::of(
                TypeName::parse("example/greets")?,
                &StringType,
                &format!("{} <- {caller}: {text}", me.id),
            )),
        }
        Ok(())
    };
    let mut registry = FunctionRegistry::new();
    registry
        .register(
            FunctionSpec::builder(TypeName::parse("rust/relay").unwrap())
                .with_function(relay)
                .build()
                .unwrap(),
        )
        .unwrap();
    let path = module(
        dir.path(),
        server.port,
        "rust/relay",
        "k1\thi\nk2\tyo\nk1\tagain\n",
    );
    let report = run(&path, &registry, 2);
    // 3 relay calls from the ingress, 3 echo calls, 3 relay calls with answers.
    assert_eq!(report.invocations, 9);
    assert_eq!(
        values(dir.path()),
        [
            "- k1 <- example/echo: echo 1: hi",
            "- k1 <- example/echo: echo 2: again",
            "- k2 <- example/echo: echo 1: yo",
        ]
    );
}

#[test]
fn slow_remote_functions_bound_the_queue_and_lose_nothing() {
    let Some(python) = python() else { return };
    let server = start_python(&python);
    let dir = tempfile::tempdir().unwrap();
    // 4 000 records over 20 names: at most one request per name in flight, so
    // most records wait in the remote queue unless the sources hold back.
    let input: String = (0..4000)
        .map(|i| format!("n{}\tn{}\n", i % 20, i % 20))
        .collect();
    let path = module(dir.path(), server.port, "example/greeter", &input);
    let settings = Settings {
        max_remote_queued: 100,
        source_batch: 50,
        ..Settings::default()
    };
    let shared = Arc::new(Shared::default());
    let options = RunOptions {
        settings,
        ..RunOptions::default()
    };
    let report = run_module(&path, &FunctionRegistry::new(), &options, shared.clone())
        .expect("run succeeds");
    assert_eq!(report.invocations, 4000);
    assert_eq!(report.records_out, 4000);
    let peak = shared
        .metrics
        .remote_queued_peak
        .load(std::sync::atomic::Ordering::Relaxed);
    // The limit, plus the few source batches (50 each) read before the function
    // operator updates the gauge; without backpressure it would approach 4 000.
    assert!(peak <= 250, "remote queue peaked at {peak}");
    assert!(peak > 0, "the test should have queued messages");
    // Every name was greeted 200 times, in order.
    let last: Vec<String> = values(dir.path())
        .into_iter()
        .filter(|v| v.contains("200 times"))
        .collect();
    assert_eq!(last.len(), 20);
}

#[test]
fn python_delayed_messages_fire_and_cancelled_ones_do_not() {
    let Some(python) = python() else { return };
    let server = start_python(&python);
    let dir = tempfile::tempdir().unwrap();
    let path = module(
        dir.path(),
        server.port,
        "example/reminder",
        "r1\tstart\nr2\tstart\n",
    );
    let started = std::time::Instant::now();
    let report = run(&path, &FunctionRegistry::new(), 2);
    // The run ends only after the delayed messages fired (300 ms after `start`).
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        report.invocations, 4,
        "2 starts + 2 rings; the cancelled messages never arrive"
    );
    assert_eq!(values(dir.path()), ["r1 ring", "r2 ring"]);
}

/// An ingress with `remoteMetadata: wrap` hands its records to Python functions as
/// `statefun_rs.v1.IngressRecord` messages, which the official SDK decodes with its protobuf
/// support: Kafka topic, partition, offset, create time and headers (a null one included)
/// from a real broker, and a file's path and line. A Rust target of the same ingress gets
/// the plain value and reads the metadata from its context; a remote target of an ingress
/// without the option gets the plain value, as upstream.
#[test]
fn python_functions_read_ingress_metadata_when_the_ingress_wraps_it() {
    let Some(python) = python() else { return };
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    let server = start_python(&python);
    let topic = statefun_testkit::unique_name("provenance");
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&topic, 2)]);
    let records: Vec<statefun_testkit::kafka::Record> = (0..6)
        .map(|i| statefun_testkit::kafka::Record {
            partition: i % 2,
            key: format!("k{i}"),
            value: format!("v{i}").into_bytes(),
            headers: if i % 3 == 0 {
                vec![
                    ("trace".into(), Some(format!("t{i}").into_bytes())),
                    ("gone".into(), None),
                ]
            } else {
                Vec::new()
            },
            timestamp_ms: Some(1_700_000_000_000 + i64::from(i)),
        })
        .collect();
    statefun_testkit::kafka::produce_records(&bootstrap, &topic, records);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "alice\tone\nbob\ttwo\n").unwrap();
    std::fs::write(dir.path().join("plain.txt"), "carol\tthree\n").unwrap();
    let port = server.port;
    let yaml = format!(
        "kind: io.statefun.endpoints.v2/http
spec:
  functions: example/*
  urlPathTemplate: http://127.0.0.1:{port}/statefun/{{function.name}}
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: test/kafka
  address: {bootstrap}
  consumerGroupId: {topic}
  startupPosition: {{ type: earliest }}
  remoteMetadata: wrap
  topics:
    - topic: {topic}
      valueType: test/raw
      targets: [example/provenance]
---
kind: io.statefun-rs.file.v1/ingress
spec:
  id: test/lines
  path: in.txt
  valueType: io.statefun.types/string
  targets: [example/provenance, rust/where]
  remoteMetadata: wrap
---
kind: io.statefun-rs.file.v1/ingress
spec:
  id: test/plain
  path: plain.txt
  valueType: io.statefun.types/string
  targets: [example/provenance]
---
kind: io.statefun-rs.file.v1/egress
spec:
  id: example/greets
  path: out.jsonl
"
    );
    let path = dir.path().join("module.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut registry = FunctionRegistry::new();
    registry
        .register(
            FunctionSpec::builder(TypeName::parse("rust/where").unwrap())
                .with_function(|ctx: &mut Context<'_>, message: Message| {
                    let text = message.as_string()?;
                    let line = match ctx.metadata() {
                        Some(statefun_sdk::IngressMetadata::File { path, line }) => {
                            let name = Path::new(path).file_name().unwrap_or_default();
                            format!("rust {text} file {}:{line}", name.to_string_lossy())
                        }
                        other => format!("rust {text} unexpected metadata {other:?}"),
                    };
                    let id = ctx.self_address().id.clone();
                    ctx.send_egress(
                        statefun_sdk::KafkaEgressMessage::for_egress(TypeName::parse(
                            "example/greets",
                        )?)
                        .with_topic("provenance")
                        .with_key(&id)
                        .with_utf8_value(&line)
                        .build()?,
                    );
                    Ok(())
                })
                .build()
                .unwrap(),
        )
        .unwrap();

    let mut expected: Vec<String> = (0..6)
        .map(|i| {
            let headers = if i % 3 == 0 {
                format!("trace=t{i},gone=<null>")
            } else {
                String::new()
            };
            format!(
                "k{i} test/kafka test/raw 'v{i}' kafka {topic}/{}/{} ts={} headers=[{headers}]",
                i % 2,
                i / 2,
                1_700_000_000_000i64 + i
            )
        })
        .collect();
    expected.extend([
        "alice test/lines io.statefun.types/string 'one' file in.txt:1".to_owned(),
        "bob test/lines io.statefun.types/string 'two' file in.txt:2".to_owned(),
        "alice rust one file in.txt:1".to_owned(),
        "bob rust two file in.txt:2".to_owned(),
        "carol plain io.statefun.types/string".to_owned(),
    ]);
    expected.sort();

    // The Kafka ingress never ends: run until every line is out, then stop.
    let shared = Arc::new(Shared::default());
    let s = shared.clone();
    let runner = std::thread::spawn(move || {
        let options = RunOptions {
            cluster: ClusterConfig {
                workers: 2,
                ..ClusterConfig::default()
            },
            ..RunOptions::default()
        };
        run_module(&path, &registry, &options, s)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while values(dir.path()).len() < expected.len()
        && std::time::Instant::now() < deadline
        && !runner.is_finished()
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    shared.request_shutdown();
    runner.join().unwrap().expect("run succeeds");
    assert_eq!(values(dir.path()), expected);
}
