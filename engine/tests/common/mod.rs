//! What the engine's integration tests share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use statefun_engine::dataflow::{ClusterConfig, RunReport};
use statefun_engine::{run_module, FunctionRegistry, RunError, RunOptions, Shared};
use statefun_sdk::{
    Context, FunctionError, FunctionSpec, IngressMetadata, KafkaEgressMessage, Message, TypeName,
};

/// Runs `module` on `workers` workers until `done()` holds (polled; at most a minute: an
/// unbounded ingress never ends by itself), then asks it to stop and returns how it ended.
pub fn run_until(
    module: PathBuf,
    registry: FunctionRegistry,
    workers: usize,
    done: impl Fn() -> bool,
) -> Result<RunReport, RunError> {
    let shared = Arc::new(Shared::default());
    let options = RunOptions {
        cluster: ClusterConfig {
            workers,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    };
    let s = shared.clone();
    let runner = std::thread::spawn(move || run_module(&module, &registry, &options, s));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() && Instant::now() < deadline && !runner.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.request_shutdown();
    runner.join().expect("the run does not panic")
}

/// Runs the ingress module.yaml document `ingress` (its records going to `test/describe`)
/// on 2 workers, with `test/describe` a Rust function that writes, for each message, the
/// line `describe(its metadata, its value as text)` keyed by its id to a file egress; once
/// as many records as `expected` are out, stops the job and asserts they are `expected`
/// (sorted `key line` strings).
pub fn check_described_metadata(
    ingress: &str,
    describe: impl Fn(Option<&IngressMetadata>, &str) -> String + Send + Sync + 'static,
    expected: &[String],
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.jsonl");
    let module = dir.path().join("module.yaml");
    let yaml = format!(
        "{ingress}---\nkind: io.statefun-rs.file.v1/egress\nspec:\n  id: test/out\n  path: {}\n",
        out.display()
    );
    std::fs::write(&module, yaml).expect("module.yaml");
    let function = move |ctx: &mut Context<'_>, message: Message| -> Result<(), FunctionError> {
        let line = describe(
            ctx.metadata(),
            &String::from_utf8_lossy(&message.value.value),
        );
        let id = ctx.self_address().id.clone();
        ctx.send_egress(
            KafkaEgressMessage::for_egress(TypeName::parse("test/out")?)
                .with_topic("unused")
                .with_key(&id)
                .with_utf8_value(&line)
                .build()?,
        );
        Ok(())
    };
    let mut registry = FunctionRegistry::new();
    registry
        .register(
            FunctionSpec::builder(TypeName::parse("test/describe").expect("type name"))
                .with_function(function)
                .build()
                .expect("spec"),
        )
        .expect("register");
    let mut expected = expected.to_vec();
    expected.sort();
    let lines = || statefun_testkit::egress_lines(&out);
    run_until(module, registry, 2, || lines().len() >= expected.len()).expect("run succeeds");
    assert_eq!(lines(), expected);
}
