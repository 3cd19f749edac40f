//! End-to-end tests of the runtime in one process: file ingress → Rust
//! functions → file egress, checked record by record.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use statefun_engine::app::FunctionErrorPolicy;
use statefun_engine::dataflow::{ClusterConfig, RunReport};
use statefun_engine::{run_module, FunctionRegistry, RunError, RunOptions, Settings, Shared};
use statefun_sdk::{
    Address, Context, EgressMessage, FunctionError, FunctionSpec, IntType, LongType, Message,
    MessageBuilder, SdkError, StringType, TypeName, ValueSpec,
};

fn t(name: &str) -> TypeName {
    TypeName::parse(name).unwrap()
}

fn out(ctx: &mut Context<'_>, text: String) {
    ctx.send_egress(EgressMessage::of(t("test/out"), &StringType, &text));
}

fn register(
    registry: &mut FunctionRegistry,
    name: &str,
    specs: Vec<statefun_sdk::ValueSpecDescriptor>,
    f: impl Fn(&mut Context<'_>, Message) -> Result<(), FunctionError> + Send + Sync + 'static,
) {
    let mut b = FunctionSpec::builder(t(name));
    for s in specs {
        b = b.with_value_spec_descriptor(s);
    }
    registry
        .register(b.with_function(f).build().unwrap())
        .unwrap();
}

/// A module with one file ingress (given lines, value type, targets) and a file egress `test/out`.
struct App {
    dir: tempfile::TempDir,
}

impl App {
    fn new(lines: &[u8], value_type: &str, targets: &[&str]) -> App {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.txt"), lines).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("      - {t}\n")).collect();
        let yaml = format!(
            "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: test/in\n  path: in.txt\n  valueType: {value_type}\n  targets:\n{}---\nkind: io.statefun-rs.file.v1/egress\nspec:\n  id: test/out\n  path: out.jsonl\n",
            targets.concat()
        );
        std::fs::write(dir.path().join("module.yaml"), yaml).unwrap();
        App { dir }
    }

    fn module(&self) -> PathBuf {
        self.dir.path().join("module.yaml")
    }

    fn run(&self, registry: &FunctionRegistry, workers: usize) -> Result<RunReport, RunError> {
        run_with(
            &self.module(),
            registry,
            workers,
            Settings::default(),
            Arc::new(Shared::default()),
        )
    }

    /// The `value` of every egress record, in file order.
    fn output(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("out.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["value"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    fn sorted_output(&self) -> Vec<String> {
        let mut o = self.output();
        o.sort();
        o
    }
}

fn run_with(
    module: &Path,
    registry: &FunctionRegistry,
    workers: usize,
    settings: Settings,
    shared: Arc<Shared>,
) -> Result<RunReport, RunError> {
    let options = RunOptions {
        settings,
        cluster: ClusterConfig {
            workers,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    };
    run_module(module, registry, &options, shared)
}

#[test]
fn per_address_fifo_from_one_sender() {
    // The sender fires N numbered messages at one receiver in one invocation;
    // the receiver checks they arrive in order.
    let mut registry = FunctionRegistry::new();
    register(&mut registry, "test/sender", vec![], |ctx, msg| {
        let n = msg.as_int()?;
        for i in 0..n {
            let target = Address::new(t("test/receiver"), "r");
            ctx.send(MessageBuilder::for_target(target).with_int(i).build()?);
        }
        Ok(())
    });
    let next = ValueSpec::new("next", IntType);
    let spec = next.descriptor();
    register(
        &mut registry,
        "test/receiver",
        vec![spec],
        move |ctx, msg| {
            let i = msg.as_int()?;
            let expected = ctx.get(&next)?.unwrap_or(0);
            if i != expected {
                out(ctx, format!("violation: got {i}, expected {expected}"));
            }
            ctx.set(&next, &(i + 1))?;
            if i == 9_999 {
                out(ctx, format!("done {}", i + 1));
            }
            Ok(())
        },
    );
    // Several senders (different ids, so different workers) each send 10 000.
    let app = App::new(b"s1\t10000\n", "io.statefun.types/int", &["test/sender"]);
    let report = app.run(&registry, 4).unwrap();
    assert_eq!(app.output(), ["done 10000"]);
    assert_eq!(report.invocations, 10_001);
    assert_eq!(report.failed_invocations, 0);
}

#[test]
fn multi_target_routes_reach_every_target() {
    let mut registry = FunctionRegistry::new();
    for name in ["test/a", "test/b", "test/c"] {
        register(&mut registry, name, vec![], |ctx, msg| {
            let text = format!(
                "{} {} {}",
                ctx.self_address().function_type,
                ctx.self_address().id,
                msg.as_string()?
            );
            out(ctx, text);
            Ok(())
        });
    }
    let app = App::new(
        b"k1\tx\nk2\ty\n",
        "io.statefun.types/string",
        &["test/a", "test/b", "test/c"],
    );
    app.run(&registry, 2).unwrap();
    assert_eq!(
        app.sorted_output(),
        [
            "test/a k1 x",
            "test/a k2 y",
            "test/b k1 x",
            "test/b k2 y",
            "test/c k1 x",
            "test/c k2 y"
        ]
    );
}

#[test]
fn namespace_target_pattern_reaches_every_function_of_the_namespace() {
    let mut registry = FunctionRegistry::new();
    for name in ["ns1/a", "ns1/b", "ns2/c"] {
        register(&mut registry, name, vec![], |ctx, _msg| {
            let text = ctx.self_address().to_string();
            out(ctx, text);
            Ok(())
        });
    }
    let app = App::new(b"k\tx\n", "io.statefun.types/string", &["ns1/*"]);
    app.run(&registry, 1).unwrap();
    assert_eq!(app.sorted_output(), ["ns1/a/k", "ns1/b/k"]);
    // With an endpoint serving `ns1` by namespace, the remote types cannot be listed: run
    // refuses (as validate does) instead of reaching the Rust types alone.
    let module = std::fs::read_to_string(app.module()).unwrap();
    std::fs::write(
        app.module(),
        format!("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: ns1/*\n  urlPathTemplate: http://127.0.0.1:9/{{function.name}}\n---\n{module}"),
    )
    .unwrap();
    match app.run(&registry, 1) {
        Err(RunError::Startup(errors)) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains("namespace `ns1` is served by the endpoint at")
                    && errors[0].contains("targets: [ns1/<name>"),
                "{}",
                errors[0]
            );
        }
        other => panic!("expected a startup error, got {other:?}"),
    }
}

#[test]
fn delayed_messages_fire_after_their_delay_and_cancelled_ones_never() {
    let mut registry = FunctionRegistry::new();
    let start = ValueSpec::new("start", LongType);
    let spec = start.descriptor();
    register(&mut registry, "test/delay", vec![spec], move |ctx, msg| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let me = ctx.self_address().clone();
        match msg.as_string()?.as_str() {
            "start" => {
                ctx.set(&start, &now)?;
                let fire = MessageBuilder::for_target(me.clone())
                    .with_string("fire")
                    .build()?;
                ctx.send_after(Duration::from_millis(300), fire);
                let doomed = MessageBuilder::for_target(me.clone())
                    .with_string("cancelled")
                    .build()?;
                ctx.send_after_with_token(Duration::from_millis(100), doomed.clone(), "tok")?;
                // A second send with a live token is an error.
                match ctx.send_after_with_token(Duration::from_millis(100), doomed, "tok") {
                    Err(SdkError::TokenInUse(_)) => out(ctx, "token in use".into()),
                    other => out(ctx, format!("unexpected: {other:?}")),
                }
                ctx.cancel_delayed_message("tok");
                // Cancelling an unknown token is a no-op.
                ctx.cancel_delayed_message("never-sent");
            }
            "fire" => {
                let started = ctx.get(&start)?.unwrap_or(now);
                let waited = now - started;
                out(
                    ctx,
                    if waited >= 300 {
                        "fired after delay".into()
                    } else {
                        format!("fired early: {waited} ms")
                    },
                );
            }
            other => out(ctx, format!("{other} fired")),
        }
        Ok(())
    });
    let app = App::new(
        b"a\tstart\nb\tstart\n",
        "io.statefun.types/string",
        &["test/delay"],
    );
    let report = app.run(&registry, 2).unwrap();
    assert_eq!(
        app.sorted_output(),
        [
            "fired after delay",
            "fired after delay",
            "token in use",
            "token in use"
        ]
    );
    assert_eq!(report.failed_invocations, 0);
}

#[test]
fn expired_state_reads_as_absent() {
    let mut registry = FunctionRegistry::new();
    let short = ValueSpec::new("short", IntType).expire_after_write(Duration::from_millis(200));
    let call = ValueSpec::new("call", IntType).expire_after_call(Duration::from_millis(1000));
    let keep = ValueSpec::new("keep", IntType);
    let specs = vec![short.descriptor(), call.descriptor(), keep.descriptor()];
    register(&mut registry, "test/ttl", specs, move |ctx, msg| {
        let me = ctx.self_address().clone();
        let later = |text: &str, ms: u64, ctx: &mut Context<'_>| -> Result<(), SdkError> {
            let m = MessageBuilder::for_target(me.clone())
                .with_string(text)
                .build()?;
            ctx.send_after(Duration::from_millis(ms), m);
            Ok(())
        };
        match msg.as_string()?.as_str() {
            "set" => {
                ctx.set(&short, &1)?;
                ctx.set(&call, &2)?;
                ctx.set(&keep, &3)?;
                // The call at +700 keeps `call` alive until +1700, so it is there
                // at +1400 (without that call it would expire at +1000);
                // `short` (200 ms after its write) is long gone by then.
                later("touch", 700, ctx)?;
                later("check", 1400, ctx)?;
            }
            "touch" => {}
            "check" => {
                let text = format!(
                    "short={:?} call={:?} keep={:?}",
                    ctx.get(&short)?,
                    ctx.get(&call)?,
                    ctx.get(&keep)?
                );
                out(ctx, text);
                later("final", 2000, ctx)?;
            }
            "final" => {
                let text = format!(
                    "final call={:?} keep={:?}",
                    ctx.get(&call)?,
                    ctx.get(&keep)?
                );
                out(ctx, text);
            }
            _ => {}
        }
        Ok(())
    });
    let app = App::new(b"x\tset\n", "io.statefun.types/string", &["test/ttl"]);
    app.run(&registry, 1).unwrap();
    assert_eq!(
        app.output(),
        [
            "short=None call=Some(2) keep=Some(3)",
            "final call=None keep=Some(3)"
        ]
    );
}

#[test]
fn runaway_cycles_do_not_stall_epochs() {
    let mut registry = FunctionRegistry::new();
    register(&mut registry, "test/runaway", vec![], |ctx, msg| {
        let me = ctx.self_address().clone();
        ctx.send(
            MessageBuilder::for_target(me)
                .with_typed_value(msg.value)
                .build()?,
        );
        Ok(())
    });
    let app = App::new(b"loop\tgo\n", "io.statefun.types/string", &["test/runaway"]);
    let shared = Arc::new(Shared::default());
    let settings = Settings {
        hop_cap: 16,
        shutdown_grace: Duration::from_millis(50),
        ..Settings::default()
    };
    let (module, s) = (app.module(), shared.clone());
    let runner = std::thread::spawn(move || run_with(&module, &registry, 2, settings, s));
    let metrics = &shared.metrics;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // Wait (bounded) until the cycle is running and the epoch frontier has moved 20 epochs past it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut first_epoch = None;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "epochs stalled behind a runaway cycle"
        );
        let invocations = get(&metrics.invocations);
        let epoch = get(&metrics.completed_epoch);
        if invocations > 1_000 {
            let first = *first_epoch.get_or_insert(epoch);
            if epoch > first + 20 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.request_shutdown();
    let report = runner.join().unwrap().unwrap();
    assert!(report.invocations > 1_000);
}

#[test]
fn bad_lines_are_counted_skips_not_crashes() {
    let mut registry = FunctionRegistry::new();
    register(&mut registry, "test/sum", vec![], |ctx, msg| {
        let text = format!("{} {}", ctx.self_address().id, msg.as_int()?);
        out(ctx, text);
        Ok(())
    });
    // good, no TAB, non-UTF-8 key, not an int, good
    let input = b"a\t1\nno tab here\n\xff\xfe\t2\nb\tnot-a-number\nc\t3\n";
    let app = App::new(input, "io.statefun.types/int", &["test/sum"]);
    let report = app.run(&registry, 1).unwrap();
    assert_eq!(app.sorted_output(), ["a 1", "c 3"]);
    assert_eq!(report.records_skipped, 3);
    assert_eq!(report.invocations, 2);
}

#[test]
fn messages_to_unknown_function_types_and_failing_functions_are_counted() {
    let mut registry = FunctionRegistry::new();
    let seen = ValueSpec::new("seen", IntType);
    let spec = seen.descriptor();
    register(&mut registry, "test/flaky", vec![spec], move |ctx, msg| {
        ctx.set(&seen, &1)?;
        match msg.as_string()?.as_str() {
            "fail" => Err("boom".into()),
            "stray" => {
                ctx.send(
                    MessageBuilder::for_address(t("test/nobody"), "x")
                        .with_int(1)
                        .build()?,
                );
                Ok(())
            }
            _ => {
                // State written by the failed invocation of the same id was not applied.
                out(ctx, "ok".into());
                Ok(())
            }
        }
    });
    let app = App::new(
        b"a\tfail\nb\tstray\nc\tfine\n",
        "io.statefun.types/string",
        &["test/flaky"],
    );
    let skip = Settings {
        function_error: FunctionErrorPolicy::Skip,
        ..Settings::default()
    };
    let report = run_with(
        &app.module(),
        &registry,
        1,
        skip,
        Arc::new(Shared::default()),
    )
    .unwrap();
    assert_eq!(app.output(), ["ok"]);
    // One failing invocation, one message to an unknown type.
    assert_eq!(report.failed_invocations, 2);

    // The default, as upstream: a function error fails the job, naming the cause.
    let app = App::new(b"a\tfail\n", "io.statefun.types/string", &["test/flaky"]);
    let err = app
        .run(&registry, 1)
        .expect_err("a function error fails the job");
    let text = err.to_string();
    assert!(
        text.contains("boom") && text.contains("--on-function-error fail"),
        "{text}"
    );

    // dead-letter: the failed message goes to an egress, and the job goes on.
    let app = App::new(
        b"a\tfail\nc\tfine\n",
        "io.statefun.types/string",
        &["test/flaky"],
    );
    let dead = Settings {
        function_error: FunctionErrorPolicy::DeadLetter {
            egress: t("test/out"),
            destination: Some("function-errors".into()),
        },
        ..Settings::default()
    };
    let report = run_with(
        &app.module(),
        &registry,
        2,
        dead,
        Arc::new(Shared::default()),
    )
    .unwrap();
    assert_eq!(report.failed_invocations, 1);
    let mut out = app.output();
    out.sort();
    // The file egress gets the messages' typed values as they were.
    assert_eq!(out, ["fail", "ok"], "{out:?}");
}

#[test]
fn startup_errors_name_the_problem() {
    let registry = FunctionRegistry::new();
    let app = App::new(b"a\t1\n", "io.statefun.types/int", &["test/missing"]);
    match app.run(&registry, 1) {
        Err(RunError::Startup(errors)) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains("target `test/missing` of ingress")
                    && errors[0].contains("register a Rust function of that type"),
                "{}",
                errors[0]
            );
        }
        other => panic!("expected a startup error, got {other:?}"),
    }
    // A missing input file fails the run with the path in the message.
    let mut registry = FunctionRegistry::new();
    register(&mut registry, "test/missing", vec![], |_, _| Ok(()));
    std::fs::remove_file(app.dir.path().join("in.txt")).unwrap();
    match app.run(&registry, 1) {
        Err(RunError::Failed(e)) => assert!(e.contains("in.txt"), "{e}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    // An unknown kind is a module error.
    std::fs::write(
        app.module(),
        "kind: io.statefun.kafka.v1/ingres\nspec: {}\n",
    )
    .unwrap();
    match app.run(&registry, 1) {
        Err(RunError::Startup(errors)) => {
            assert!(errors.iter().any(|e| e.contains("ingres")), "{errors:?}")
        }
        other => panic!("expected a startup error, got {other:?}"),
    }
}
