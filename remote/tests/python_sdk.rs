//! Interop with the official StateFun Python SDK: real functions
//! (`tests/python/functions.py`) served by the SDK's `RequestReplyHandler`
//! over aiohttp, invoked through `RemoteInvoker` and `protocol`.
//!
//! Needs the venv made by `ci/install-python-sdk.sh`; without it each test
//! prints why it is skipped and passes, except under `CI`, where it fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

use common::{endpoint, tn, Harness};
use statefun_remote::{
    build_request, parse_response, InvocationInput, RemoteEffects, RemoteOutcome,
};
use statefun_sdk::proto::egress::{KafkaProducerRecord, KinesisEgressRecord};
use statefun_sdk::types::{Type, INT, STRING};
use statefun_sdk::{Address, Expiration, TypedValue, ValueSpecDescriptor};

const LIMIT: Duration = Duration::from_secs(20);

/// The Python functions server; killed on drop.
struct PythonServer {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    unix: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl PythonServer {
    /// Starts the server, or returns `None` (printing why) when the venv is missing
    /// (under `CI` that fails instead: `statefun_testkit::unavailable`).
    fn start(test: &str) -> Option<PythonServer> {
        let Some(python) = statefun_testkit::python_sdk() else {
            println!("SKIPPED {test}");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("fn.sock");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/functions.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--unix")
            .arg(&socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python functions server");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = PythonServer {
            child,
            stdin,
            port: 0,
            unix: None,
            _dir: dir,
        };
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the Python server did not report READY within 30 s");
            if let Some(port) = line.strip_prefix("PORT ") {
                server.port = port.trim().parse().expect("port number");
            } else if let Some(path) = line.strip_prefix("UNIX ") {
                server.unix = Some(PathBuf::from(path.trim()));
            } else if line == "READY" {
                return Some(server);
            }
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/statefun/{{function.name}}", self.port)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn address(function: &str, id: &str) -> Address {
    Address::new(tn(function), id)
}

fn string_arg(s: &str) -> TypedValue {
    TypedValue::new(STRING.type_name().as_str(), STRING.encode(&s.to_string()))
}

fn complete(outcome: RemoteOutcome) -> RemoteEffects {
    match outcome {
        RemoteOutcome::Complete(effects) => effects,
        RemoteOutcome::Incomplete { missing } => {
            panic!("unexpected incomplete context: {missing:?}")
        }
    }
}

fn greeting(effects: &RemoteEffects, i: usize) -> (String, String) {
    let (to, value) = &effects.outgoing[i];
    assert_eq!(value.typename, "io.statefun.types/string");
    (
        to.to_string(),
        STRING.decode(&value.value).expect("string greeting"),
    )
}

#[test]
fn greeter_state_handshake_then_counts() {
    let Some(server) = PythonServer::start("greeter_state_handshake_then_counts") else {
        return;
    };
    let h = Harness::new(&[endpoint("example/*", &server.url(), |_| {})]);
    let target = address("example/greeter", "alice");
    let inputs = [InvocationInput {
        caller: None,
        argument: string_arg("alice"),
    }];

    // 1. Nothing registered yet: the SDK asks for its state.
    let body = h
        .call(
            "example/greeter",
            build_request(&target, &inputs, &[]),
            LIMIT,
        )
        .expect("first call");
    let RemoteOutcome::Incomplete { missing } = parse_response(&body, &target, &[]).expect("valid")
    else {
        panic!("expected the missing-state handshake");
    };
    let seen = ValueSpecDescriptor {
        name: "seen".into(),
        typename: tn("io.statefun.types/int"),
        expiration: Expiration::Never,
    };
    assert_eq!(missing, vec![seen.clone()]);

    // 2. Re-send the same batch with the registered (empty) state.
    let registered = [seen.clone()];
    let body = h
        .call(
            "example/greeter",
            build_request(&target, &inputs, &[(seen.clone(), None)]),
            LIMIT,
        )
        .expect("second call");
    let effects = complete(parse_response(&body, &target, &registered).expect("valid"));
    assert_eq!(effects.state.len(), 1);
    let value = effects.state[0].value.clone().expect("MODIFY");
    assert_eq!(value.typename, "io.statefun.types/int");
    assert_eq!(INT.decode(&value.value).expect("int"), 1);
    assert_eq!(
        greeting(&effects, 0),
        (
            "example/out/alice".into(),
            "Hello alice #1 from ingress".into()
        )
    );

    // 3. A batch of two, one with a caller, on top of the stored state.
    let batch = [
        InvocationInput {
            caller: Some(address("example/other", "bob")),
            argument: string_arg("alice"),
        },
        InvocationInput {
            caller: None,
            argument: string_arg("alice"),
        },
    ];
    let body = h
        .call(
            "example/greeter",
            build_request(
                &target,
                &batch,
                &[(seen.clone(), Some(value.value.clone()))],
            ),
            LIMIT,
        )
        .expect("third call");
    let effects = complete(parse_response(&body, &target, &registered).expect("valid"));
    assert_eq!(effects.outgoing.len(), 2);
    assert_eq!(
        greeting(&effects, 0).1,
        "Hello alice #2 from example/other/bob"
    );
    assert_eq!(greeting(&effects, 1).1, "Hello alice #3 from ingress");
    let value = effects.state[0].value.clone().expect("MODIFY");
    assert_eq!(INT.decode(&value.value).expect("int"), 3);

    // 4. DELETE.
    let reset = [InvocationInput {
        caller: None,
        argument: string_arg("reset"),
    }];
    let body = h
        .call(
            "example/greeter",
            build_request(&target, &reset, &[(seen, Some(value.value))]),
            LIMIT,
        )
        .expect("fourth call");
    let effects = complete(parse_response(&body, &target, &registered).expect("valid"));
    assert_eq!(effects.state.len(), 1);
    assert_eq!(effects.state[0].name, "seen");
    assert_eq!(effects.state[0].value, None);
    assert!(effects.outgoing.is_empty());
}

#[test]
fn send_after_and_cancel_delayed_message() {
    let Some(server) = PythonServer::start("send_after_and_cancel_delayed_message") else {
        return;
    };
    let h = Harness::new(&[endpoint("example/*", &server.url(), |_| {})]);
    let target = address("example/delayed", "d1");
    let inputs = [InvocationInput {
        caller: None,
        argument: string_arg("go"),
    }];
    let body = h
        .call(
            "example/delayed",
            build_request(&target, &inputs, &[]),
            LIMIT,
        )
        .expect("call");
    let effects = complete(parse_response(&body, &target, &[]).expect("valid"));
    assert!(effects.outgoing.is_empty());
    assert_eq!(effects.delayed.len(), 3);
    let kept = &effects.delayed[0];
    assert_eq!(kept.delay, Duration::from_millis(1500));
    assert_eq!(kept.target, Some(address("example/out", "later")));
    assert_eq!(kept.cancellation_token, None);
    assert!(!kept.is_cancellation);
    let argument = kept.argument.as_ref().expect("argument");
    assert_eq!(STRING.decode(&argument.value).expect("string"), "kept");
    let cancelled = &effects.delayed[1];
    assert_eq!(cancelled.delay, Duration::from_secs(60));
    assert_eq!(cancelled.cancellation_token.as_deref(), Some("reminder-d1"));
    assert!(!cancelled.is_cancellation);
    let cancel = &effects.delayed[2];
    assert!(cancel.is_cancellation);
    assert_eq!(cancel.cancellation_token.as_deref(), Some("reminder-d1"));
    assert_eq!(cancel.target, None);
    assert_eq!(cancel.argument, None);
}

#[test]
fn expire_after_call_state_spec_in_handshake() {
    let Some(server) = PythonServer::start("expire_after_call_state_spec_in_handshake") else {
        return;
    };
    let h = Harness::new(&[endpoint("example/expiring", &server.url(), |_| {})]);
    let target = address("example/expiring", "e1");
    let inputs = [InvocationInput {
        caller: None,
        argument: string_arg("first"),
    }];
    let body = h
        .call(
            "example/expiring",
            build_request(&target, &inputs, &[]),
            LIMIT,
        )
        .expect("call");
    let RemoteOutcome::Incomplete { missing } = parse_response(&body, &target, &[]).expect("valid")
    else {
        panic!("expected the missing-state handshake");
    };
    let expected = vec![
        ValueSpecDescriptor {
            name: "visits".into(),
            typename: tn("io.statefun.types/int"),
            expiration: Expiration::AfterCall(Duration::from_secs(300)),
        },
        ValueSpecDescriptor {
            name: "last".into(),
            typename: tn("io.statefun.types/string"),
            expiration: Expiration::AfterWrite(Duration::from_secs(30)),
        },
    ];
    assert_eq!(missing, expected);
    let state: Vec<_> = expected.iter().map(|s| (s.clone(), None)).collect();
    let body = h
        .call(
            "example/expiring",
            build_request(&target, &inputs, &state),
            LIMIT,
        )
        .expect("call with state");
    let effects = complete(parse_response(&body, &target, &expected).expect("valid"));
    let mut names: Vec<_> = effects.state.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["last", "visits"]);
}

#[test]
fn kafka_and_kinesis_egress_builders() {
    let Some(server) = PythonServer::start("kafka_and_kinesis_egress_builders") else {
        return;
    };
    let h = Harness::new(&[endpoint("example/*", &server.url(), |_| {})]);
    let target = address("example/egress", "user-7");
    let inputs = [InvocationInput {
        caller: None,
        argument: string_arg("ann"),
    }];
    let body = h
        .call(
            "example/egress",
            build_request(&target, &inputs, &[]),
            LIMIT,
        )
        .expect("call");
    let effects = complete(parse_response(&body, &target, &[]).expect("valid"));
    assert_eq!(effects.egress.len(), 2);
    let kafka = &effects.egress[0];
    assert_eq!(kafka.egress, tn("example/kafka-out"));
    let record =
        KafkaProducerRecord::from_typed_value(&kafka.value).expect("a KafkaProducerRecord");
    assert_eq!(record.topic, "greetings");
    assert_eq!(record.key, "user-7");
    assert_eq!(record.value_bytes, b"hello ann");
    assert!(record.headers.is_empty());
    assert_eq!(record.partition, None);
    let kinesis = &effects.egress[1];
    assert_eq!(kinesis.egress, tn("example/kinesis-out"));
    let record =
        KinesisEgressRecord::from_typed_value(&kinesis.value).expect("a KinesisEgressRecord");
    assert_eq!(record.stream, "greetings-stream");
    assert_eq!(record.partition_key, "user-7");
    assert_eq!(record.value_bytes, b"hi ann");
    assert_eq!(record.explicit_hash_key, "1234");
}

#[test]
fn greeter_over_a_unix_socket() {
    let Some(server) = PythonServer::start("greeter_over_a_unix_socket") else {
        return;
    };
    let socket = server.unix.clone().expect("unix socket");
    let url = format!(
        "http+unix://{}/statefun/{{function.name}}",
        socket.display()
    );
    let h = Harness::new(&[endpoint("example/greeter", &url, |_| {})]);
    let target = address("example/greeter", "carol");
    let seen = ValueSpecDescriptor {
        name: "seen".into(),
        typename: tn("io.statefun.types/int"),
        expiration: Expiration::Never,
    };
    let inputs = [InvocationInput {
        caller: None,
        argument: string_arg("carol"),
    }];
    let body = h
        .call(
            "example/greeter",
            build_request(&target, &inputs, &[(seen.clone(), None)]),
            LIMIT,
        )
        .expect("call over the Unix socket");
    let effects = complete(parse_response(&body, &target, &[seen]).expect("valid"));
    assert_eq!(greeting(&effects, 0).1, "Hello carol #1 from ingress");
}
