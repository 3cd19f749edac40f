//! What happens when a remote function cannot be reached: the job fails with
//! an error naming the function and address, or — with the dead-letter
//! policy — the messages go to an egress and the job goes on.

use std::path::Path;
use std::sync::Arc;

use statefun_engine::remote::RemoteFailurePolicy;
use statefun_engine::{run_module, FunctionRegistry, RunError, RunOptions, Settings, Shared};
use statefun_sdk::TypeName;

fn closed_port() -> u16 {
    // Bind and release: nothing listens there afterwards.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn module(dir: &Path) -> std::path::PathBuf {
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
",
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
    let report = run(&path, RemoteFailurePolicy::DeadLetter(dead)).expect("the run goes on");
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
    match run(&path, RemoteFailurePolicy::DeadLetter(missing)) {
        Err(RunError::Startup(errors)) => assert!(errors[0].contains("test/nowhere"), "{errors:?}"),
        other => panic!("expected a startup error, got {other:?}"),
    }
}
