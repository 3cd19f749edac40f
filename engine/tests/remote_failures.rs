//! What happens when a remote function cannot be reached: the job fails with
//! an error naming the function and address, or — with the dead-letter
//! policy — the messages go to an egress and the job goes on.

use std::path::Path;
use std::sync::Arc;

use statefun_engine::remote::RemoteFailurePolicy;
use statefun_engine::{run_module, FunctionRegistry, RunError, RunOptions, Settings, Shared};
use statefun_sdk::TypeName;

/// A port nothing listens on: bound and released.
fn closed_port() -> u16 {
    statefun_testkit::free_port()
}

fn module(dir: &Path) -> std::path::PathBuf {
    module_with(dir, "")
}

/// The module, with `extra` documents appended.
fn module_with(dir: &Path, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("in.txt"), "a\thello\nb\tworld\n").unwrap();
    let yaml = format!(
        "kind: io.statefun.endpoints.v2/http
spec:
  functions: remote/*
  urlPathTemplate: http://127.0.0.1:{}/{{function.name}}
  transport:
    call: 1s
    connect: 200ms
---
kind: io.statefun-rs.file.v1/ingress
spec:
  id: test/in
  path: in.txt
  valueType: io.statefun.types/string
  targets: [remote/fn]
---
kind: io.statefun-rs.file.v1/egress
spec:
  id: test/dead
  path: dead.jsonl
{extra}",
        closed_port()
    );
    let path = dir.join("module.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn run(
    path: &Path,
    policy: RemoteFailurePolicy,
) -> Result<statefun_engine::dataflow::RunReport, RunError> {
    let options = RunOptions {
        settings: Settings {
            remote_failure: policy,
            ..Settings::default()
        },
        ..RunOptions::default()
    };
    run_module(
        path,
        &FunctionRegistry::new(),
        &options,
        Arc::new(Shared::default()),
    )
}

#[test]
fn unreachable_function_fails_the_job_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = module(dir.path());
    match run(&path, RemoteFailurePolicy::FailJob) {
        Err(RunError::Failed(e)) => {
            assert!(
                e.contains("remote/fn/a") || e.contains("remote/fn/b"),
                "{e}"
            );
            assert!(e.contains("failed for good"), "{e}");
        }
        other => panic!("expected a failed run, got {other:?}"),
    }
}

#[test]
fn unreachable_function_dead_letters_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = module(dir.path());
    let dead = TypeName::parse("test/dead").unwrap();
    let report = run(
        &path,
        RemoteFailurePolicy::DeadLetter {
            egress: dead,
            destination: None,
        },
    )
    .expect("the run goes on");
    assert_eq!(report.records_out, 2);
    let text = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    let mut values: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["value"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    values.sort();
    assert_eq!(values, ["hello", "world"]);
}

#[test]
fn dead_letter_egress_must_be_declared() {
    let dir = tempfile::tempdir().unwrap();
    let path = module(dir.path());
    let missing = TypeName::parse("test/nowhere").unwrap();
    match run(
        &path,
        RemoteFailurePolicy::DeadLetter {
            egress: missing,
            destination: None,
        },
    ) {
        Err(RunError::Startup(errors)) => assert!(errors[0].contains("test/nowhere"), "{errors:?}"),
        other => panic!("expected a startup error, got {other:?}"),
    }
}

#[test]
fn a_kafka_dead_letter_egress_needs_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let extra =
        "---\nkind: io.statefun.kafka.v1/egress\nspec:\n  id: test/kdead\n  address: 127.0.0.1:9\n";
    let path = module_with(dir.path(), extra);
    let policy = RemoteFailurePolicy::DeadLetter {
        egress: TypeName::parse("test/kdead").unwrap(),
        destination: None,
    };
    match run(&path, policy) {
        Err(RunError::Startup(errors)) => assert!(
            errors[0].contains("--on-remote-failure") && errors[0].contains("name the topic"),
            "{errors:?}"
        ),
        other => panic!("expected a startup error, got {other:?}"),
    }
}

/// Dead letters to a Kafka egress (real broker): a record per failed
/// message, keyed by the instance id, with the argument's bytes and headers
/// naming why, the function and the argument's type.
#[test]
fn unreachable_function_dead_letters_to_kafka() {
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    let topic = format!("remote-dead-{}", std::process::id());
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&topic, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "---\nkind: io.statefun.kafka.v1/egress\nspec:\n  id: test/kdead\n  address: {bootstrap}\n"
    );
    let path = module_with(dir.path(), &extra);
    let policy = RemoteFailurePolicy::DeadLetter {
        egress: TypeName::parse("test/kdead").unwrap(),
        destination: Some(topic.clone()),
    };
    let report = run(&path, policy).expect("the run goes on");
    assert_eq!(report.records_out, 2);
    let mut letters: Vec<_> =
        statefun_testkit::kafka::read_committed(&bootstrap, &topic, 2, std::time::Duration::ZERO)
            .iter()
            .map(statefun_testkit::kafka::text)
            .collect();
    letters.sort();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for ((key, value, headers), (id, word)) in letters.iter().zip([("a", "hello"), ("b", "world")])
    {
        assert_eq!(key, id);
        assert!(
            value.ends_with(word),
            "the StringWrapper bytes of {word}: {value:?}"
        );
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            header("statefun.dead-letter.function"),
            Some(format!("remote/fn/{id}").as_str())
        );
        assert_eq!(
            header("statefun.dead-letter.typename"),
            Some("io.statefun.types/string")
        );
        assert!(header("statefun.dead-letter.reason").is_some_and(|r| !r.is_empty()));
    }
}

/// A shutdown request ends a job whose function operator has nothing else to wake it: its
/// one remote request sits at a server that accepted it and never answers (within a 10 min
/// call timeout), the invocation's epoch never completes, and after 200 epochs in flight
/// the source pauses. The operator starts its shutdown grace period when the request comes
/// and then drops the pending invocation; before, it slept until an answer came.
#[test]
fn shutdown_ends_a_job_waiting_for_a_silent_server() {
    use std::time::Duration;

    let (port, requests) = statefun_testkit::silent_server();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "a\thello\n").unwrap();
    let yaml = format!(
        "kind: io.statefun.endpoints.v2/http
spec:
  functions: remote/*
  urlPathTemplate: http://127.0.0.1:{port}/{{function.name}}
  transport:
    call: 10min
---
kind: io.statefun-rs.file.v1/ingress
spec:
  id: test/in
  path: in.txt
  valueType: io.statefun.types/string
  targets: [remote/fn]
  follow: true
"
    );
    let path = dir.path().join("module.yaml");
    std::fs::write(&path, yaml).unwrap();
    let shared = Arc::new(Shared::default());
    let options = RunOptions {
        settings: Settings {
            shutdown_grace: Duration::from_millis(200),
            ..Settings::default()
        },
        cluster: statefun_engine::dataflow::ClusterConfig {
            workers: 2,
            ..Default::default()
        },
        ..RunOptions::default()
    };
    let (done, finished) = std::sync::mpsc::channel();
    let s = shared.clone();
    std::thread::spawn(move || {
        let _ = done.send(run_module(&path, &FunctionRegistry::new(), &options, s));
    });
    requests
        .recv_timeout(Duration::from_secs(60))
        .expect("the remote request reached the server");
    // Wait for the stall (the completed epoch 3 s behind the clock: the source paused and
    // nothing moves any more), then ask to stop.
    let epoch_ms = Settings::default().epoch_interval.as_millis() as u64;
    let stalled = || {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let completed = shared
            .metrics
            .completed_epoch
            .load(std::sync::atomic::Ordering::Relaxed);
        completed > 0 && now_ms.saturating_sub((completed + 1) * epoch_ms) >= 3000
    };
    let wait = std::time::Instant::now();
    while !stalled() && wait.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(stalled(), "the job stalls behind the silent server");
    shared.request_shutdown();
    // A bound on the wait, not a timing assertion: without the wake-up the run never returns.
    let result = finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the run returns after a shutdown request");
    let report = result.expect("a shutdown is a clean end");
    assert_eq!(report.records_in, 1);
}
