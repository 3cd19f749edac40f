//! Durable state across restarts, in one process: file ingress → a counter
//! with RocksDB state → exactly-once file egress. (Crashes with SIGKILL and
//! fail points are in `examples/crash-counter/tests/crash.rs`.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use statefun_engine::app::Durability;
use statefun_engine::dataflow::{ClusterConfig, RunReport};
use statefun_engine::{run_module, FunctionRegistry, RunError, RunOptions, Settings, Shared};
use statefun_sdk::{
    Context, EgressMessage, FunctionError, FunctionSpec, IntType, Message, StringType, TypeName,
    ValueSpec,
};

fn t(name: &str) -> TypeName {
    TypeName::parse(name).unwrap()
}

/// Counts per id; `ttl` makes the count expire that long after it is written.
fn registry(ttl: Option<Duration>) -> FunctionRegistry {
    let spec = match ttl {
        Some(d) => ValueSpec::new("n", IntType).expire_after_write(d),
        None => ValueSpec::new("n", IntType),
    };
    let descriptor = spec.descriptor();
    let f = move |ctx: &mut Context<'_>, _m: Message| -> Result<(), FunctionError> {
        let n = ctx.get(&spec)?.unwrap_or(0) + 1;
        ctx.set(&spec, &n)?;
        let text = format!("{} {n}", ctx.self_address().id);
        ctx.send_egress(EgressMessage::of(t("test/out"), &StringType, &text));
        Ok(())
    };
    counter_registry(descriptor, f)
}

/// A registry with `f` as `test/counter`, declaring `state`.
fn counter_registry(
    state: statefun_sdk::ValueSpecDescriptor,
    f: impl Fn(&mut Context<'_>, Message) -> Result<(), FunctionError> + Send + Sync + 'static,
) -> FunctionRegistry {
    let mut registry = FunctionRegistry::new();
    registry
        .register(
            FunctionSpec::builder(t("test/counter"))
                .with_value_spec_descriptor(state)
                .with_function(f)
                .build()
                .unwrap(),
        )
        .unwrap();
    registry
}

struct App {
    dir: tempfile::TempDir,
}

impl App {
    fn new(input: &str) -> App {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.txt"), input).unwrap();
        let yaml = "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: test/in\n  path: in.txt\n  valueType: io.statefun.types/string\n  targets:\n    - test/counter\n---\nkind: io.statefun-rs.file.v1/egress\nspec:\n  id: test/out\n  path: out.jsonl\n  deliverySemantic: exactly-once\n";
        std::fs::write(dir.path().join("module.yaml"), yaml).unwrap();
        App { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn append(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path("in.txt"))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn run(&self, registry: &FunctionRegistry, workers: usize) -> Result<RunReport, RunError> {
        self.run_in(registry, workers, &self.path("state"))
    }

    fn run_in(
        &self,
        registry: &FunctionRegistry,
        workers: usize,
        state: &Path,
    ) -> Result<RunReport, RunError> {
        let options = RunOptions {
            settings: Settings {
                durability: Some(Durability {
                    checkpoint_interval: Duration::from_millis(50),
                    ..Durability::new(state)
                }),
                ..Settings::default()
            },
            cluster: ClusterConfig {
                workers,
                ..ClusterConfig::default()
            },
            ..RunOptions::default()
        };
        run_module(
            &self.path("module.yaml"),
            registry,
            &options,
            Arc::new(Shared::default()),
        )
    }

    /// The egress values, sorted.
    fn output(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.path("out.jsonl")).unwrap_or_default();
        let mut values: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["value"].as_str().unwrap().to_string()
            })
            .collect();
        values.sort();
        values
    }
}

fn lines(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("{k}\tx\n")).collect()
}

/// A function that fails once on a given input (a transient error) fails the job under the
/// default `--on-function-error fail`; the restart resumes from the last checkpoint and
/// invokes the message again, so every record is counted, and delivered, exactly once.
#[test]
fn a_function_error_fails_the_job_and_the_restart_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for workers in [1, 2] {
        let failed_once = Arc::new(AtomicBool::new(false));
        let spec = ValueSpec::new("n", IntType);
        let descriptor = spec.descriptor();
        let flag = failed_once.clone();
        let f = move |ctx: &mut Context<'_>, _m: Message| -> Result<(), FunctionError> {
            let n = ctx.get(&spec)?.unwrap_or(0) + 1;
            if ctx.self_address().id == "b" && n == 2 && !flag.swap(true, Ordering::SeqCst) {
                return Err("the lookup service is down".into());
            }
            ctx.set(&spec, &n)?;
            let text = format!("{} {n}", ctx.self_address().id);
            ctx.send_egress(EgressMessage::of(t("test/out"), &StringType, &text));
            Ok(())
        };
        let registry = counter_registry(descriptor, f);
        let keys: Vec<&str> = (0..200).map(|i| ["a", "b", "c", "d"][i % 4]).collect();
        let app = App::new(&lines(&keys));
        let err = app.run(&registry, workers).expect_err("the job fails");
        assert!(
            err.to_string().contains("the lookup service is down"),
            "{err}"
        );
        app.run(&registry, workers).expect("the restart succeeds");
        let mut want: Vec<String> = ["a", "b", "c", "d"]
            .iter()
            .flat_map(|k| (1..=50).map(move |n| format!("{k} {n}")))
            .collect();
        want.sort();
        assert_eq!(
            app.output(),
            want,
            "{workers} worker(s): every record exactly once"
        );
    }
}

/// `statefun run --restart on-failure`: the job that fails on a transient function error
/// restarts itself in the process from the last checkpoint and finishes exact, exit 0.
#[test]
fn restart_on_failure_recovers_in_the_process() {
    use std::sync::Mutex;
    // The worker threads each run failed on: every run has new ones.
    let failed_runs = Arc::new(Mutex::new(Vec::<std::thread::ThreadId>::new()));
    let spec = ValueSpec::new("n", IntType);
    let descriptor = spec.descriptor();
    let runs = failed_runs.clone();
    let f = move |ctx: &mut Context<'_>, _m: Message| -> Result<(), FunctionError> {
        let n = ctx.get(&spec)?.unwrap_or(0) + 1;
        // Fails in two runs in a row, then the cause has gone away.
        if ctx.self_address().id == "c" && n == 3 {
            let mut runs = runs.lock().unwrap();
            let me = std::thread::current().id();
            if runs.contains(&me) || runs.len() < 2 {
                if !runs.contains(&me) {
                    runs.push(me);
                }
                return Err("downstream unavailable".into());
            }
        }
        ctx.set(&spec, &n)?;
        let text = format!("{} {n}", ctx.self_address().id);
        ctx.send_egress(EgressMessage::of(t("test/out"), &StringType, &text));
        Ok(())
    };
    let registry = counter_registry(descriptor, f);
    let keys: Vec<&str> = (0..120).map(|i| ["a", "b", "c"][i % 3]).collect();
    let app = App::new(&lines(&keys));
    let module = app.path("module.yaml");
    let state = app.path("state");
    let code = statefun_engine::cli::run_cli(
        registry,
        [
            "statefun".as_ref(),
            "run".as_ref(),
            module.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--checkpoint-interval".as_ref(),
            "50ms".as_ref(),
            "--restart".as_ref(),
            "on-failure:max=5,backoff=50ms..200ms".as_ref(),
        ]
        .map(std::ffi::OsString::from),
    );
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
    assert_eq!(
        failed_runs.lock().unwrap().len(),
        2,
        "two runs failed, the third ran through"
    );
    let mut want: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|k| (1..=40).map(move |n| format!("{k} {n}")))
        .collect();
    want.sort();
    assert_eq!(
        app.output(),
        want,
        "every record exactly once across the restarts"
    );
}

#[test]
fn state_and_positions_survive_a_clean_restart() {
    for workers in [1, 2] {
        let app = App::new(&lines(&["a", "a", "b"]));
        let registry = registry(None);
        let report = app.run(&registry, workers).unwrap();
        assert_eq!(report.records_in, 3);
        assert_eq!(app.output(), ["a 1", "a 2", "b 1"]);
        // The second run reads only the new lines and counts on from the state.
        app.append(&lines(&["a", "b", "c"]));
        let report = app.run(&registry, workers).unwrap();
        assert_eq!(
            report.records_in, 3,
            "the file source resumed after the first run's lines"
        );
        assert_eq!(app.output(), ["a 1", "a 2", "a 3", "b 1", "b 2", "c 1"]);
        // A run with nothing new changes nothing.
        let report = app.run(&registry, workers).unwrap();
        assert_eq!((report.records_in, report.records_out), (0, 0));
        assert_eq!(app.output().len(), 6);
    }
}

#[test]
fn expired_state_is_gone_after_a_restart() {
    let app = App::new(&lines(&["a", "a"]));
    let registry = registry(Some(Duration::from_millis(300)));
    app.run(&registry, 1).unwrap();
    assert_eq!(app.output(), ["a 1", "a 2"]);
    std::thread::sleep(Duration::from_millis(500));
    app.append(&lines(&["a"]));
    app.run(&registry, 1).unwrap();
    assert_eq!(
        app.output(),
        ["a 1", "a 1", "a 2"],
        "the expired count starts over"
    );
}

/// A restart with another worker count rescales: counts go on from the state, whatever
/// worker holds each key now, and the file source resumes after the lines already read.
#[test]
fn the_state_rescales_to_any_worker_count() {
    let keys = ["a", "b", "c", "d", "e", "f", "g"];
    let app = App::new(&lines(&keys));
    let registry = registry(None);
    app.run(&registry, 1).unwrap();
    for (rounds, workers) in (2..).zip([3, 2, 4, 1, 2]) {
        app.append(&lines(&keys));
        let report = app.run(&registry, workers).unwrap();
        assert_eq!(report.records_in, keys.len() as u64, "{workers} workers");
        let mut want: Vec<String> = keys
            .iter()
            .flat_map(|k| (1..=rounds).map(move |n| format!("{k} {n}")))
            .collect();
        want.sort();
        assert_eq!(app.output(), want, "after rescaling to {workers} workers");
    }
}

/// A generator's sequence is split by worker count: its job refuses to rescale, saying
/// so, and leaves the state as it was for the old count.
#[test]
fn a_generator_job_refuses_to_rescale_and_changes_nothing() {
    let app = App::new("");
    std::fs::write(
        app.path("module.yaml"),
        "kind: io.statefun-rs.generator.v1/ingress\nspec:\n  id: test/in\n  valueType: io.statefun.types/string\n  \
         keys: 5\n  count: 50\n  targets:\n    - test/counter\n---\nkind: io.statefun-rs.file.v1/egress\nspec:\n  \
         id: test/out\n  path: out.jsonl\n  deliverySemantic: exactly-once\n",
    )
    .unwrap();
    let registry = registry(None);
    app.run(&registry, 2).unwrap();
    let err = app.run(&registry, 3).unwrap_err().to_string();
    assert!(
        err.contains("cannot rescale a generator") && err.contains("test/in"),
        "{err}"
    );
    assert!(
        !app.path("state/rescale").exists(),
        "nothing half-built is left"
    );
    app.run(&registry, 2).unwrap();
    assert_eq!(
        app.output().len(),
        50,
        "the old count resumes, nothing doubled"
    );
}

#[test]
fn damaged_state_dirs_give_errors_naming_them() {
    let app = App::new(&lines(&["a", "b", "c", "d"]));
    let registry = registry(None);
    app.run(&registry, 2).unwrap();
    // A second run, so every worker has merged a checkpoint it knows complete.
    app.append(&lines(&["e"]));
    app.run(&registry, 2).unwrap();
    // A missing worker directory: the others have checkpoints it lacks.
    let moved = app.path("worker-1-moved");
    std::fs::rename(app.path("state/worker-1"), &moved).unwrap();
    let err = app.run(&registry, 2).unwrap_err().to_string();
    assert!(
        err.contains("worker-1 are missing") && err.contains("nothing was changed"),
        "{err}"
    );
    // The listing says so too, by the same rule.
    let listing = statefun_engine::checkpoint::describe_dirs(&[app.path("state")]).unwrap();
    assert!(
        listing.contains("worker-1 is in none of the directories given")
            && listing.contains("key groups 2048..=4095 are missing")
            && listing.contains("a restart would fail"),
        "{listing}"
    );
    // As a cluster's processes keep them: worker-1 in a directory of its own. Given
    // both, the listing reads them as one job; a worker given twice is an error.
    let other = app.path("state-of-process-1");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::rename(&moved, other.join("worker-1")).unwrap();
    let listing =
        statefun_engine::checkpoint::describe_dirs(&[app.path("state"), other.clone()]).unwrap();
    assert!(
        listing.contains("key groups 0..=2047")
            && listing.contains("key groups 2048..=4095")
            && listing.contains("a restart resumes from checkpoint"),
        "{listing}"
    );
    let twice = statefun_engine::checkpoint::describe_dirs(&[app.path("state"), app.path("state")])
        .unwrap_err();
    assert!(twice.contains("worker 0 is in two directories"), "{twice}");
    std::fs::rename(other.join("worker-1"), &moved).unwrap();
    // Nothing changed, not even an empty worker-1 left behind: a second try says the same.
    assert!(!app.path("state/worker-1").exists());
    let again = app.run(&registry, 2).unwrap_err().to_string();
    assert!(again.contains("worker-1 are missing"), "{again}");
    std::fs::rename(&moved, app.path("state/worker-1")).unwrap();
    let listing = statefun_engine::checkpoint::describe_dirs(&[app.path("state")]).unwrap();
    assert!(
        listing.contains("a restart resumes from checkpoint"),
        "{listing}"
    );
    // Put back, the job resumes where it was.
    app.append(&lines(&["a"]));
    app.run(&registry, 2).unwrap();
    assert!(app.output().contains(&"a 2".to_string()));
    // A corrupt database file names the database.
    std::fs::write(app.path("state/worker-0/CURRENT"), b"garbage").unwrap();
    let err = app.run(&registry, 2).unwrap_err().to_string();
    assert!(err.contains("worker-0"), "{err}");
    // A database without its CURRENT file is not silently re-created empty.
    std::fs::remove_file(app.path("state/worker-0/CURRENT")).unwrap();
    let err = app.run(&registry, 2).unwrap_err().to_string();
    assert!(err.contains("worker-0") && err.contains("CURRENT"), "{err}");
}

#[test]
fn a_missing_delivery_marker_is_an_error_not_a_guess() {
    let app = App::new(&lines(&["a"]));
    let registry = registry(None);
    app.run(&registry, 1).unwrap();
    std::fs::remove_file(app.path("out.jsonl.delivered")).unwrap();
    let err = app.run(&registry, 1).unwrap_err().to_string();
    assert!(err.contains("out.jsonl.delivered"), "{err}");
}

#[test]
fn stdin_cannot_be_checkpointed() {
    let app = App::new("");
    let yaml = "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: test/in\n  path: \"-\"\n  valueType: io.statefun.types/string\n  targets:\n    - test/counter\n";
    std::fs::write(app.path("module.yaml"), yaml).unwrap();
    let err = app.run(&registry(None), 1).unwrap_err().to_string();
    assert!(err.contains("stdin cannot be re-read"), "{err}");
}
