//! Rescaling from a checkpoint with real processes: the counting app (a file ingress
//! that grows between runs → counters that message each other and keep delayed messages
//! → an exactly-once file or Kafka egress) stopped with SIGTERM (the rescale procedure)
//! or killed, and started again with another number of workers and processes. At the end
//! every line the input implies must be in the egress exactly once: a key group whose
//! state, delayed messages, in-flight messages or undelivered records were lost or moved
//! twice shows as a gap or a repeat.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use example_crash_counter::{expected_lines, COUNTER};

mod common;
use common::{file_egress, kafka_egress, list_checkpoints, terminate};

const KEYS: u64 = 40;
/// Ticks are due this long after their record: a stop soon after input arrives leaves
/// them pending in the checkpoint the rescale moves.
const TICK_MS: &str = "2500";

/// The tests share two cores and the broker; one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

enum Output {
    File,
    Kafka { bootstrap: String, topic: String },
}

/// Where the records come from.
enum Input {
    /// `in.txt`, appended to between runs (followed while a run runs).
    File,
    /// A 4-partition topic, produced to between runs.
    Kafka { bootstrap: String, topic: String },
}

struct App {
    dir: PathBuf,
    input: Input,
    output: Output,
    records: u64,
}

/// How one run is laid out: processes × workers, and the state dir of each process.
#[derive(Clone, Copy)]
struct Shape {
    processes: usize,
    workers: usize,
}

impl App {
    fn new(dir: &Path, output: Output) -> App {
        App::reading(dir, Input::File, output)
    }

    fn reading(dir: &Path, input: Input, output: Output) -> App {
        let app = App {
            dir: dir.to_path_buf(),
            input,
            output,
            records: 0,
        };
        std::fs::write(app.dir.join("in.txt"), "").expect("create the input");
        app.module(true);
        app
    }

    fn module(&self, follow: bool) {
        let egress = match &self.output {
            Output::File => file_egress(),
            Output::Kafka { bootstrap, topic } => kafka_egress(bootstrap, topic),
        };
        let ingress = match &self.input {
            Input::File => format!(
                "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: rescale/in\n  path: in.txt\n  \
                 valueType: io.statefun.types/string\n  follow: {follow}\n  targets:\n    - {COUNTER}\n"
            ),
            Input::Kafka { bootstrap, topic } => format!(
                "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: rescale/in\n  address: {bootstrap}\n  \
                 consumerGroupId: {topic}\n  startupPosition: {{ type: earliest }}\n  topics:\n    - topic: {topic}\n      \
                 valueType: io.statefun.types/string\n      targets: [{COUNTER}]\n"
            ),
        };
        std::fs::write(
            self.dir.join("module.yaml"),
            format!("{ingress}---\n{egress}"),
        )
        .expect("write module.yaml");
    }

    /// Appends `n` more records (keys round-robin over `KEYS`; over the partitions too).
    fn append(&mut self, n: u64) {
        let records = self.records..self.records + n;
        match &self.input {
            Input::File => {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(self.dir.join("in.txt"))
                    .expect("open the input");
                let mut text = String::new();
                for i in records {
                    text.push_str(&format!("{}\tv{i}\n", i % KEYS));
                }
                f.write_all(text.as_bytes()).expect("append input");
            }
            Input::Kafka { bootstrap, topic } => statefun_testkit::kafka::produce(
                bootstrap,
                topic,
                records.map(|i| ((i % 4) as i32, (i % KEYS).to_string(), format!("v{i}"))),
            ),
        }
        self.records += n;
    }

    /// Starts every process of `shape`, process `p` on `state_dirs[p]` (one shared
    /// directory when there is one entry), with `failpoint` in every process.
    fn start(&self, shape: Shape, state_dirs: &[&str], failpoint: Option<&str>) -> Vec<Child> {
        let hosts = self.dir.join("hosts.txt");
        if shape.processes > 1 {
            let list: Vec<String> = (0..shape.processes)
                .map(|_| format!("127.0.0.1:{}", statefun_testkit::free_port()))
                .collect();
            std::fs::write(&hosts, list.join("\n")).expect("write the host file");
        }
        (0..shape.processes)
            .map(|p| {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"));
                cmd.current_dir(&self.dir)
                    .args(["run", "module.yaml", "--state-dir"])
                    .arg(state_dirs[p.min(state_dirs.len() - 1)])
                    .args(["--checkpoint-interval", "100ms"])
                    .args(["-w", &shape.workers.to_string()])
                    .env("CRASH_TICK_MS", TICK_MS)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                if shape.processes > 1 {
                    cmd.args([
                        "-n",
                        &shape.processes.to_string(),
                        "-p",
                        &p.to_string(),
                        "-h",
                    ])
                    .arg(&hosts);
                }
                if let Output::Kafka { topic, .. } = &self.output {
                    cmd.env("CRASH_OUT_TOPIC", topic);
                }
                match failpoint {
                    Some(f) => cmd.env("STATEFUN_FAILPOINT", f),
                    None => cmd.env_remove("STATEFUN_FAILPOINT"),
                };
                cmd.spawn().expect("start the app")
            })
            .collect()
    }

    /// Runs `shape` on the input so far and stops it the rescale way: SIGTERM once it
    /// has written output for the records appended (and their ticks are still pending).
    fn run_and_stop(&self, shape: Shape, state_dirs: &[&str]) {
        let children = self.start(shape, state_dirs, None);
        self.wait_for_output(2 * self.records);
        for child in children {
            let status = terminate(child);
            assert!(status.success(), "a SIGTERMed process exited with {status}");
        }
    }

    /// Runs `shape` until every line of the input so far is out (ticks included), then
    /// stops it with SIGTERM: the last run of a job whose input never ends.
    fn run_to_completion(&self, shape: Shape, state_dirs: &[&str]) {
        let children = self.start(shape, state_dirs, None);
        self.wait_for_output(3 * self.records);
        for child in children {
            let status = terminate(child);
            assert!(status.success(), "a SIGTERMed process exited with {status}");
        }
    }

    /// Runs `shape` to the end of the input (`follow: false`); every process exits 0.
    fn finish(&self, shape: Shape, state_dirs: &[&str]) {
        self.module(false);
        for child in self.start(shape, state_dirs, None) {
            let (status, err) = exit_within(child, Duration::from_secs(120));
            assert!(status.success(), "the last run failed: {status}\n{err}");
        }
    }

    /// Waits (up to a minute) until the egress holds at least `lines` lines or records.
    fn wait_for_output(&self, lines: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.output_size() < lines {
            assert!(
                Instant::now() < deadline,
                "no output for the input after 60 s ({} of {lines})",
                self.output_size()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lines in the egress file, or records (and commit markers) in the topic.
    fn output_size(&self) -> u64 {
        match &self.output {
            Output::File => std::fs::read_to_string(self.dir.join("out.jsonl"))
                .map(|t| t.lines().count() as u64)
                .unwrap_or(0),
            Output::Kafka { bootstrap, topic } => {
                statefun_testkit::kafka::high_watermarks(bootstrap, topic)
            }
        }
    }

    /// Delayed messages in the newest checkpoint of each worker in `state_dirs`, from
    /// `checkpoints` (the listing a user reads), with the worker count they were written by.
    fn pending_delayed(&self, state_dirs: &[&str]) -> (u64, usize) {
        let text = list_checkpoints(&self.dir, state_dirs);
        let mut delayed = 0;
        let mut workers = 0;
        for line in text.lines() {
            if let Some(rest) = line.split("job of ").nth(1) {
                workers = rest
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
            if let Some(before) = line
                .split(" delayed,")
                .next()
                .filter(|_| line.contains(" delayed,"))
            {
                delayed += before
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        (delayed, workers)
    }

    /// The egress holds every line the input implies, each once.
    fn check(&self) {
        let expected = expected_lines((0..self.records).map(|i| (i % KEYS).to_string()));
        let values: Vec<String> = match &self.output {
            Output::File => std::fs::read_to_string(self.dir.join("out.jsonl"))
                .expect("read the egress file")
                .lines()
                .map(|line| {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("egress line is not JSON ({e}): {line:?}"));
                    v["value"].as_str().expect("a text value").to_string()
                })
                .collect(),
            Output::Kafka { bootstrap, topic } => statefun_testkit::kafka::read_committed(
                bootstrap,
                topic,
                expected.len(),
                Duration::from_secs(3),
            )
            .iter()
            .map(|m| statefun_testkit::kafka::text(m).1)
            .collect(),
        };
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        for v in &values {
            *seen.entry(v.as_str()).or_default() += 1;
        }
        let missing: Vec<&String> = expected
            .keys()
            .filter(|k| !seen.contains_key(k.as_str()))
            .take(10)
            .collect();
        let repeated: Vec<(&&str, &u32)> = seen.iter().filter(|(_, n)| **n > 1).take(10).collect();
        assert!(
            missing.is_empty() && repeated.is_empty() && seen.len() == expected.len(),
            "egress is not exactly-once after rescaling: {} lines for {} expected; missing \
             {missing:?}; repeated {repeated:?}",
            values.len(),
            expected.len()
        );
    }
}

fn exit_within(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    common::exit_within(&mut child, limit)
        .unwrap_or_else(|| panic!("a run did not finish within {limit:?}"))
}

const ONE: Shape = Shape {
    processes: 1,
    workers: 1,
};

#[test]
fn rescales_from_1_to_4_workers_to_2_processes_sharing_a_dir_to_2_workers() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = App::new(dir.path(), Output::File);
    app.append(300);
    app.run_and_stop(ONE, &["state"]);
    let (delayed, workers) = app.pending_delayed(&["state"]);
    assert!(
        workers == 1 && delayed > 0,
        "{delayed} delayed, {workers} workers"
    );

    app.append(300);
    let four = Shape {
        processes: 1,
        workers: 4,
    };
    app.run_and_stop(four, &["state"]);
    let (delayed, workers) = app.pending_delayed(&["state"]);
    assert!(
        workers == 4 && delayed > 0,
        "{delayed} delayed, {workers} workers"
    );

    // Two processes sharing the one directory (as on a shared volume): 6 workers.
    app.append(300);
    let shared = Shape {
        processes: 2,
        workers: 3,
    };
    app.run_and_stop(shared, &["state"]);
    let (delayed, workers) = app.pending_delayed(&["state"]);
    assert!(
        workers == 6 && delayed > 0,
        "{delayed} delayed, {workers} workers"
    );

    app.append(300);
    app.finish(
        Shape {
            processes: 1,
            workers: 2,
        },
        &["state"],
    );
    app.check();
}

#[test]
fn two_processes_with_their_own_state_dirs_rescale_with_kafka_exactly_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        eprintln!("skipped: no Kafka broker (run ci/install-kafka.sh)");
        return;
    };
    let topic = format!("rescale-{}-out", std::process::id());
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&topic, 2)]);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = App::new(dir.path(), Output::Kafka { bootstrap, topic });
    let two = Shape {
        processes: 1,
        workers: 2,
    };
    app.append(200);
    app.run_and_stop(two, &["state0"]);

    // 1 process × 2 workers → 2 processes × 2 workers, each process its own directory
    // (process 1's starts empty, as on a new machine).
    app.append(200);
    let wide = Shape {
        processes: 2,
        workers: 2,
    };
    app.run_and_stop(wide, &["state0", "state1"]);
    let (delayed, workers) = app.pending_delayed(&["state0", "state1"]);
    assert!(
        workers == 4 && delayed > 0,
        "{delayed} delayed, {workers} workers"
    );

    // → 1 process × 1 worker: without process 1's directory the start fails, naming
    // what is missing, and changes nothing; copied over (the procedure), it rescales.
    app.module(false);
    let child = app.start(ONE, &["state0"], None).remove(0);
    let (status, err) = exit_within(child, Duration::from_secs(60));
    assert!(
        !status.success() && err.contains("worker-2") && err.contains("nothing was changed"),
        "{status}: {err}"
    );
    for k in [2, 3] {
        copy_dir(
            &dir.path().join(format!("state1/worker-{k}")),
            &dir.path().join(format!("state0/worker-{k}")),
        );
    }
    app.append(200);
    app.finish(ONE, &["state0"]);
    app.check();
}

#[test]
fn rescaling_recovers_from_a_crash_and_finishes_an_interrupted_commit() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = App::new(dir.path(), Output::File);
    app.append(300);
    // A crash right after one of 2 workers wrote a checkpoint: the newest checkpoint
    // of one worker is not complete on the other, and the rescale moves the older one.
    let two = Shape {
        processes: 1,
        workers: 2,
    };
    let crashed = app.start(two, &["state"], Some("checkpoint-after-write:7"));
    for child in crashed {
        let (status, _) = exit_within(child, Duration::from_secs(60));
        assert!(!status.success(), "the fail point did not abort the run");
    }

    // Rescale to 3, aborted after every new database was built and the commit had
    // begun (old databases moved aside, new ones not yet in place).
    app.append(300);
    let three = Shape {
        processes: 1,
        workers: 3,
    };
    let child = app
        .start(three, &["state"], Some("rescale-mid-commit:1"))
        .remove(0);
    let (status, _) = exit_within(child, Duration::from_secs(60));
    assert!(
        !status.success(),
        "the fail point did not abort the rescale"
    );
    // The listing says what happened and what a start does...
    let text = list_checkpoints(&app.dir, &["state"]);
    assert!(
        text.contains("a rescale from 2 to 3 workers was interrupted"),
        "{text}"
    );
    // ...another worker count cannot start from a half-committed rescale...
    let child = app.start(two, &["state"], None).remove(0);
    let (status, err) = exit_within(child, Duration::from_secs(60));
    assert!(
        !status.success() && err.contains("restart with 3 workers"),
        "{status}: {err}"
    );
    // ...the count it was going to finishes it.
    app.run_and_stop(three, &["state"]);

    // Rescale to 2, aborted after building and before the commit: built again.
    app.append(300);
    let child = app
        .start(two, &["state"], Some("rescale-before-commit:1"))
        .remove(0);
    let (status, _) = exit_within(child, Duration::from_secs(60));
    assert!(
        !status.success(),
        "the fail point did not abort the rescale"
    );
    app.finish(two, &["state"]);
    app.check();
    assert!(
        !dir.path().join("state/rescale").exists(),
        "the staging area is removed after the commit"
    );
}

/// Copies `from` into `to` with its subdirectories (a database keeps checkpoints of
/// several workers not yet merged in `staged/`), as `cp -a` would.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy a file");
        }
    }
}

/// A cluster of 8 processes × 1 worker on loopback (timely over TCP, each process its own
/// state dir as on 8 machines), stopped and rescaled to 3 processes: the 5 directories of
/// the processes that go are copied into those of the 3 that stay.
#[test]
fn eight_processes_rescale_to_three() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = App::new(dir.path(), Output::File);
    let dirs: Vec<String> = (0..8).map(|p| format!("state{p}")).collect();
    let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    app.append(400);
    let eight = Shape {
        processes: 8,
        workers: 1,
    };
    app.run_and_stop(eight, &dirs);
    let (delayed, workers) = app.pending_delayed(&dirs);
    assert!(
        workers == 8 && delayed > 0,
        "{delayed} delayed, {workers} workers"
    );
    for k in 3..8 {
        copy_dir(
            &dir.path().join(format!("state{k}/worker-{k}")),
            &dir.path().join(format!("state{}/worker-{k}", k % 3)),
        );
    }
    app.append(400);
    let three = Shape {
        processes: 3,
        workers: 1,
    };
    app.finish(three, &dirs[..3]);
    app.check();
}

/// Kafka partitions move with their key groups' owners: a 4-partition topic read by 2
/// workers, then 3, then 2 processes × 1 worker with their own state dirs; `kafka lag` given
/// both directories reads the job as one; every record is counted exactly once.
#[test]
fn kafka_partitions_follow_a_rescale() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        eprintln!("skipped: no Kafka broker (run ci/install-kafka.sh)");
        return;
    };
    let topic = format!("rescale-in-{}", std::process::id());
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&topic, 4)]);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = Input::Kafka {
        bootstrap,
        topic: topic.clone(),
    };
    let mut app = App::reading(dir.path(), input, Output::File);
    let shape = |processes, workers| Shape { processes, workers };
    app.append(200);
    app.run_and_stop(shape(1, 2), &["state0"]);
    app.append(200);
    app.run_and_stop(shape(1, 3), &["state0"]);
    // 3 workers → 2 processes: worker-2's directory goes with process 1's (now empty) one.
    std::fs::create_dir_all(dir.path().join("state1")).expect("state1");
    std::fs::rename(
        dir.path().join("state0/worker-2"),
        dir.path().join("state1/worker-2"),
    )
    .expect("move worker-2");
    app.append(200);
    let lag = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir.path())
        .args(["kafka", "lag", "module.yaml"])
        .args(["--state-dir", "state0", "--state-dir", "state1"])
        .output()
        .expect("kafka lag");
    let text = String::from_utf8_lossy(&lag.stdout);
    assert!(
        lag.status.success() && text.contains("total lag: 200"),
        "{text}{}",
        String::from_utf8_lossy(&lag.stderr)
    );
    app.run_to_completion(shape(2, 1), &["state0", "state1"]);
    app.check();
}
