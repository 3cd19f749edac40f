//! Crash harness: the counting app (generator → counters that message each
//! other and use delayed messages → exactly-once file egress) is killed with
//! SIGKILL at random moments and at chosen fail points, restarted on the same
//! state dir each time, and finally run to completion. Then every line the
//! state implies must be in the egress file exactly once.
//!
//! CI runs a reduced number of kills; for a soak run:
//! `STATEFUN_CRASH_KILLS=200 cargo test --release -p example-crash-counter --test crash -- --nocapture`
//! (`STATEFUN_CRASH_SEED` replays a run's kill times).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use example_crash_counter::{expected_lines, COUNTER, OUT};

mod common;
use common::{exit_within, kills, seed, Lcg};

const RECORDS: u64 = 3000;
const KEYS: u64 = 40;
const RATE: u64 = 3000;

struct Job {
    dir: PathBuf,
    workers: usize,
    processes: usize,
    hostfile: Option<PathBuf>,
    /// Each process keeps its state in `state<p>` (as on separate machines)
    /// instead of all in `state`.
    separate_state_dirs: bool,
    /// How many records the generator produces (at `RATE` per second).
    records: u64,
    /// Where the exactly-once egress writes.
    output: Output,
    /// Processes started so far: every other one writes its checkpoints' state as
    /// ingested table files (`STATEFUN_INGEST_MIN_WRITES=1`), the others through RocksDB's
    /// log, so crashes hit both ways of writing a checkpoint.
    starts: std::cell::Cell<u64>,
}

/// Where a job's exactly-once egress goes.
enum Output {
    /// The file `out.jsonl` (written by worker 0 alone).
    File,
    /// The same file, at-least-once, for a job without state: no
    /// `--state-dir`, no checkpoints, nothing survives a restart.
    InMemoryFile,
    /// A transactional Kafka egress to `topic`: every worker has its own
    /// producer and transactions, so sink faults hit every process.
    Kafka { bootstrap: String, topic: String },
}

impl Job {
    fn new(dir: &Path, workers: usize, processes: usize) -> Job {
        Job::with_records(dir, workers, processes, RECORDS)
    }

    fn with_records(dir: &Path, workers: usize, processes: usize, records: u64) -> Job {
        Job::writing_to(dir, workers, processes, records, Output::File)
    }

    /// The job with an exactly-once Kafka egress to a new 2-partition topic of
    /// the broker of `ci/install-kafka.sh` (`None`: no broker, test skipped).
    fn on_kafka(dir: &Path, workers: usize, processes: usize) -> Option<Job> {
        let bootstrap = statefun_testkit::kafka_bootstrap()?;
        let run = format!("crash-partial-{}-{}", std::process::id(), seed() % 100_000);
        let topic = format!("{run}-out");
        statefun_testkit::kafka::create_topics(&bootstrap, &[(&topic, 2)]);
        let output = Output::Kafka { bootstrap, topic };
        Some(Job::writing_to(dir, workers, processes, RECORDS, output))
    }

    fn writing_to(
        dir: &Path,
        workers: usize,
        processes: usize,
        records: u64,
        output: Output,
    ) -> Job {
        let egress = match &output {
            Output::File => common::file_egress(),
            Output::InMemoryFile => format!(
                "kind: io.statefun-rs.file.v1/egress\nspec:\n  id: {OUT}\n  path: out.jsonl\n"
            ),
            Output::Kafka { bootstrap, topic } => common::kafka_egress(bootstrap, topic),
        };
        std::fs::write(
            dir.join("module.yaml"),
            format!(
                "kind: io.statefun-rs.generator.v1/ingress\nspec:\n  id: crash/in\n  valueType: io.statefun.types/string\n  \
                 keys: {KEYS}\n  count: {records}\n  rate: {RATE}\n  valueSize: 8\n  targets:\n    - {COUNTER}\n---\n{egress}"
            ),
        )
        .expect("write module.yaml");
        Job {
            dir: dir.to_path_buf(),
            workers,
            processes,
            hostfile: None,
            separate_state_dirs: false,
            records,
            output,
            starts: std::cell::Cell::new(0),
        }
    }

    /// How much output there is so far: the egress file's size, or the sum of
    /// the Kafka topic's high watermarks (which commit markers move too).
    fn output_size(&self) -> u64 {
        match &self.output {
            Output::File | Output::InMemoryFile => std::fs::metadata(self.dir.join("out.jsonl"))
                .map(|m| m.len())
                .unwrap_or(0),
            Output::Kafka { bootstrap, topic } => {
                statefun_testkit::kafka::high_watermarks(bootstrap, topic)
            }
        }
    }

    /// The values the egress holds (committed records only, for Kafka).
    fn output_values(&self, expected: usize) -> Vec<String> {
        match &self.output {
            Output::File | Output::InMemoryFile => {
                let text = std::fs::read_to_string(self.dir.join("out.jsonl"))
                    .expect("read the egress file");
                text.lines()
                    .map(|line| {
                        let v: serde_json::Value = serde_json::from_str(line)
                            .unwrap_or_else(|e| panic!("egress line is not JSON ({e}): {line:?}"));
                        v["value"].as_str().expect("a text value").to_string()
                    })
                    .collect()
            }
            Output::Kafka { bootstrap, topic } => statefun_testkit::kafka::read_committed(
                bootstrap,
                topic,
                expected,
                Duration::from_secs(3),
            )
            .iter()
            .map(|m| statefun_testkit::kafka::text(m).1)
            .collect(),
        }
    }

    /// The state dir of process `p`, relative to the job's dir.
    fn state_dir(&self, p: usize) -> String {
        if self.separate_state_dirs {
            format!("state{p}")
        } else {
            "state".to_string()
        }
    }

    /// Starts every process of the job (fresh ports each time for 2 processes).
    fn start(&mut self, failpoint: Option<&str>) -> Vec<Child> {
        self.start_each(|_| failpoint.map(str::to_string))
    }

    /// Starts every process, process `p` with fail point `failpoint(p)`.
    fn start_each(&mut self, failpoint: impl Fn(usize) -> Option<String>) -> Vec<Child> {
        self.new_hosts();
        (0..self.processes)
            .map(|p| self.start_process(p, failpoint(p).as_deref(), &[]))
            .collect()
    }

    /// A host list with fresh ports (for several processes).
    fn new_hosts(&mut self) {
        if self.processes > 1 {
            let hosts: Vec<String> = (0..self.processes)
                .map(|_| format!("127.0.0.1:{}", statefun_testkit::free_port()))
                .collect();
            let path = self.dir.join("hosts.txt");
            std::fs::write(&path, hosts.join("\n")).expect("write hostfile");
            self.hostfile = Some(path);
        }
    }

    /// Starts process `p` alone, in the cluster of the last start (same
    /// host list), with fail point `failpoint` and `more` arguments.
    fn start_process(&self, p: usize, failpoint: Option<&str>, more: &[&str]) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"));
        cmd.current_dir(&self.dir).args(["run", "module.yaml"]);
        if !matches!(self.output, Output::InMemoryFile) {
            cmd.arg("--state-dir")
                .arg(self.state_dir(p))
                .args(["--checkpoint-interval", "50ms"]);
        }
        cmd.args(["-w", &self.workers.to_string()])
            .args(more)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Output::Kafka { topic, .. } = &self.output {
            cmd.env("CRASH_OUT_TOPIC", topic);
        }
        if let Some(h) = &self.hostfile {
            cmd.args([
                "-n",
                &self.processes.to_string(),
                "-p",
                &p.to_string(),
                "-h",
            ])
            .arg(h);
        }
        match failpoint {
            Some(f) => cmd.env("STATEFUN_FAILPOINT", f),
            None => cmd.env_remove("STATEFUN_FAILPOINT"),
        };
        let starts = self.starts.get();
        self.starts.set(starts + 1);
        let ingesting = failpoint.is_some_and(|f| {
            f.starts_with("checkpoint-ingesting") || f.starts_with("checkpoint-staged")
        });
        if ingesting || starts % 2 == 1 {
            cmd.env("STATEFUN_INGEST_MIN_WRITES", "1");
        } else {
            cmd.env_remove("STATEFUN_INGEST_MIN_WRITES");
        }
        cmd.spawn().expect("start the app")
    }

    /// Runs to completion; every process must exit 0 within the limit.
    fn finish(&mut self) {
        let mut children = self.start(None);
        let deadline = Instant::now() + Duration::from_secs(120);
        for child in children.iter_mut() {
            let left = deadline.saturating_duration_since(Instant::now());
            let (status, err) =
                exit_within(child, left).expect("the final run did not finish within 120 s");
            assert!(status.success(), "final run failed: {status}\n{err}");
        }
    }

    /// Waits for processes that were told to abort at a fail point (or exit).
    fn wait_all(children: Vec<Child>, limit: Duration) {
        let deadline = Instant::now() + limit;
        for mut child in children {
            loop {
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn kill_all(children: Vec<Child>) {
        for mut child in children {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// Checks the egress file: exactly the expected lines, each once.
    fn check(&self) {
        let expected = expected_lines((0..self.records).map(|s| (s % KEYS).to_string()));
        let values = self.output_values(expected.len());
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for value in &values {
            *seen.entry(value.clone()).or_default() += 1;
        }
        let missing: Vec<&String> = expected
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .take(10)
            .collect();
        let repeated: Vec<(&String, &u32)> =
            seen.iter().filter(|(_, n)| **n > 1).take(10).collect();
        let unexpected: Vec<&String> = seen
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .take(10)
            .collect();
        assert!(
            missing.is_empty() && repeated.is_empty() && unexpected.is_empty(),
            "egress is not exactly-once: {} lines for {} expected; missing {missing:?}; repeated {repeated:?}; unexpected {unexpected:?}",
            values.len(),
            expected.len()
        );
        assert_eq!(seen.len(), expected.len());
    }
}

/// The tests share two cores; running them one at a time keeps kill times meaningful.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn crash_and_recover(workers: usize, processes: usize, default_kills: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let seed = seed();
    println!("seed {seed} (STATEFUN_CRASH_SEED={seed} replays the kill times)");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut job = Job::new(dir.path(), workers, processes);
    // Fail points first: each aborts the process at a telling moment. The
    // first: right after the job's very first checkpoint write, when with
    // several workers the others usually have not written theirs (the
    // restart must start fresh, discarding it).
    let children = job.start(Some("checkpoint-after-write:1"));
    Job::wait_all(children, Duration::from_secs(20));
    for point in [
        "checkpoint-before-write",
        "checkpoint-writing",
        "checkpoint-staged",
        "checkpoint-ingesting",
        "checkpoint-after-write",
        "sink-before-commit",
        "sink-after-commit",
    ] {
        let at = 2 + rng.below(4);
        let children = job.start(Some(&format!("{point}:{at}")));
        Job::wait_all(children, Duration::from_secs(20));
    }
    // Then SIGKILL at random moments.
    let n = kills(default_kills);
    for _ in 0..n {
        let children = job.start(None);
        std::thread::sleep(Duration::from_millis(40 + rng.below(700)));
        Job::kill_all(children);
    }
    job.finish();
    job.check();
    println!(
        "{workers} worker(s) × {processes} process(es): {n} kills + 7 fail points, output exact"
    );
}

#[test]
fn exactly_once_after_kills_one_worker() {
    crash_and_recover(1, 1, 20);
}

#[test]
fn exactly_once_after_kills_two_workers() {
    crash_and_recover(2, 1, 8);
}

#[test]
fn exactly_once_after_kills_two_processes() {
    crash_and_recover(1, 2, 6);
}

impl Job {
    /// Starts the job and waits until it writes output (the processes are
    /// connected and working), at most 30 s; whether it did.
    fn start_running(&mut self) -> (Vec<Child>, bool) {
        let before = self.output_size();
        let children = self.start(None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.output_size() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        (children, self.output_size() > before)
    }

    /// SIGTERM to process `p` only: the whole job drains to a final
    /// checkpoint, every process exits 0 within 30 s.
    fn sigterm_one(&mut self, p: usize, after: Duration) {
        let mut children = self.start(None);
        std::thread::sleep(after);
        let pid = children[p].id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        for (q, child) in children.iter_mut().enumerate() {
            let (status, err) = exit_within(child, Duration::from_secs(30)).unwrap_or_else(|| {
                panic!(
                    "process {q} still ran 30 s after SIGTERM to process {p}: a half-running job"
                )
            });
            assert!(
                status.success(),
                "process {q} after SIGTERM to process {p}: {status}\n{err}"
            );
        }
    }

    /// SIGKILL of process `p` once the job runs: every other process stops
    /// with one error line, exit 1, within 30 s. `must_run`: the job must
    /// still have input to work on.
    fn sigkill_one(&mut self, p: usize, must_run: bool) {
        let (mut children, running) = self.start_running();
        if !running && must_run {
            // Say why: what each process printed before it was stopped.
            let said: Vec<String> = children
                .iter_mut()
                .enumerate()
                .map(|(q, child)| {
                    let exited = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    let (_, err) = exit_within(child, Duration::from_secs(5)).unwrap_or_default();
                    format!("process {q} (exited by itself: {exited:?}):\n{err}")
                })
                .collect();
            panic!(
                "the restarted job wrote nothing within 30 s\n{}",
                said.join("\n")
            );
        }
        let _ = children[p].kill();
        let _ = children[p].wait();
        for (q, child) in children.iter_mut().enumerate().filter(|(q, _)| *q != p) {
            let (status, err) = exit_within(child, Duration::from_secs(30)).unwrap_or_else(|| {
                panic!("process {q} ran on for 30 s after process {p} was killed")
            });
            if running {
                assert!(
                    !status.success(),
                    "process {q} must fail when process {p} dies:\n{err}"
                );
                assert!(
                    err.contains("lost its connection to another process"),
                    "one error line saying why: {err}"
                );
            }
        }
    }

    /// A fail point reached in process `p` only (it aborts there): every
    /// process ends within 30 s.
    fn failpoint_in_one(&mut self, p: usize, point: &str) {
        let mut children = self.start_each(|q| (q == p).then(|| point.to_string()));
        for (q, child) in children.iter_mut().enumerate() {
            exit_within(child, Duration::from_secs(30)).unwrap_or_else(|| {
                panic!("process {q} ran on for 30 s after `{point}` in process {p}")
            });
        }
    }
}

/// Partial failures of a 2-process job: a SIGTERM to one process, a SIGKILL
/// of one process, and a failed checkpoint write in one process only. The
/// other process must never run on alone: it drains with a stopping peer
/// (both exit 0) or stops with a failed one (exit 1 with one error line, in
/// seconds). After all of it, the output is exactly once.
#[test]
fn one_process_of_two_stops_or_dies_and_the_job_follows() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    partial_failures(Job::new(dir.path(), 1, 2));
}

/// The same partial failures with an exactly-once Kafka egress, where every
/// worker has its own transactional producer: besides the faults above, a
/// sink that dies before and after committing its transaction in one process
/// only. A read_committed consumer sees every line exactly once.
#[test]
fn kafka_egress_one_process_of_two_stops_or_dies_and_the_job_follows() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(job) = Job::on_kafka(dir.path(), 1, 2) else {
        return;
    };
    partial_failures(job);
}

/// SIGTERM of process 1, SIGKILL of process 1 and of process 0, a checkpoint
/// write that fails in process 1 only, and sink fail points in one process
/// (only process 0 runs the file egress); then a run to completion and the
/// exactly-once check.
fn partial_failures(mut job: Job) {
    job.sigterm_one(1, Duration::from_millis(600));
    job.sigkill_one(1, true);
    job.sigkill_one(0, true);
    // A checkpoint write that fails in process 1 only (it aborts there).
    let mut children =
        job.start_each(|p| (p == 1).then(|| "checkpoint-before-write:3".to_string()));
    for (p, child) in children.iter_mut().enumerate() {
        let (status, err) = exit_within(child, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("process {p} ran on for 30 s after process 1 failed"));
        assert!(
            !status.success(),
            "process {p} after process 1's failed write: {err}"
        );
    }
    let sinks_in = if matches!(job.output, Output::Kafka { .. }) {
        1
    } else {
        0
    };
    job.failpoint_in_one(sinks_in, "sink-before-commit:2");
    job.failpoint_in_one(sinks_in, "sink-after-commit:3");
    job.finish();
    job.check();
}

/// A job without state on 2 processes stops as one too: a SIGTERM to one
/// process drains both (exit 0) instead of leaving the other reading on and
/// the stopped one waiting for it; a SIGKILL of one fails the other.
#[test]
fn an_in_memory_job_of_two_processes_stops_together() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    // A minute of input, so that only the stop can end the job in time.
    let mut job = Job::writing_to(dir.path(), 1, 2, RATE * 60, Output::InMemoryFile);
    job.sigterm_one(1, Duration::from_millis(1500));
    job.sigterm_one(0, Duration::from_millis(1500));
    job.sigkill_one(1, true);
}

/// A cluster configured the way an orchestrator starts it: every process gets
/// the same command line (`--hosts` lists the addresses, `{i}` patterns are
/// unit-tested) and takes its index from its host name
/// (`--process-from-hostname`: `statefun-1` → process 1, as StatefulSet pods
/// are named). The job runs to completion on both and the output is whole.
#[test]
fn processes_take_their_index_from_the_host_name() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let job = Job::writing_to(dir.path(), 1, 2, RECORDS, Output::InMemoryFile);
    let hosts = format!(
        "127.0.0.1:{},127.0.0.1:{}",
        statefun_testkit::free_port(),
        statefun_testkit::free_port()
    );
    let mut children: Vec<Child> = (0..2)
        .map(|p| {
            Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
                .current_dir(dir.path())
                .args(["run", "module.yaml", "-n", "2", "--hosts", &hosts])
                .arg("--process-from-hostname")
                .env("HOSTNAME", format!("statefun-{p}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a process")
        })
        .collect();
    for (p, child) in children.iter_mut().enumerate() {
        let (status, err) = exit_within(child, Duration::from_secs(120))
            .unwrap_or_else(|| panic!("process {p} did not finish within 120 s"));
        assert!(status.success(), "process {p}: {status}\n{err}");
    }
    job.check();
    // A host name without an ordinal is an error saying what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir.path())
        .args(["run", "module.yaml", "-n", "2", "--hosts", &hosts])
        .arg("--process-from-hostname")
        .env("HOSTNAME", "worker-node")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`worker-node`") && err.contains("give -p"),
        "{err}"
    );
}

/// `--restart on-failure` on every process of a cluster: process 1 is killed,
/// process 0 fails with the lost connection and runs the job again by itself,
/// process 1 is started again (as an orchestrator would), they form the cluster
/// anew and finish; every line exactly once.
#[test]
fn processes_restart_themselves_and_form_the_cluster_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut job = Job::new(dir.path(), 1, 2);
    let restart = ["--restart", "on-failure:backoff=200ms..2s"];
    job.new_hosts();
    let out = dir.path().join("out.jsonl");
    let size = || std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let mut p0 = job.start_process(0, None, &restart);
    let mut p1 = job.start_process(1, None, &restart);
    let deadline = Instant::now() + Duration::from_secs(30);
    while size() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(size() > 0, "the job wrote nothing within 30 s");
    let _ = p1.kill();
    let _ = p1.wait();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        p0.try_wait().expect("wait").is_none(),
        "process 0 restarts itself instead of exiting"
    );
    let mut p1 = job.start_process(1, None, &restart);
    for (p, child) in [(0, &mut p0), (1, &mut p1)] {
        let (status, err) = exit_within(child, Duration::from_secs(120))
            .unwrap_or_else(|| panic!("process {p} did not finish within 120 s"));
        assert!(status.success(), "process {p}: {status}\n{err}");
        if p == 0 {
            assert!(err.contains("restarting from the last checkpoint"), "{err}");
        }
    }
    job.check();
}

/// The soak: `STATEFUN_FAULTS` (default 4 in CI) random partial and whole-job
/// faults on a 2-process job — SIGTERM or SIGKILL of one process, a fail point
/// in one process, SIGKILL of every process — then a run to completion: every
/// line exactly once. `STATEFUN_CRASH_SEED` replays a run.
///
/// `STATEFUN_FAULTS=50 cargo test --release -p example-crash-counter --test crash random_faults -- --nocapture`
#[test]
fn random_faults_on_two_processes_lose_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let faults: u64 = std::env::var("STATEFUN_FAULTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4);
    let seed = seed();
    println!("seed {seed} (STATEFUN_CRASH_SEED={seed} replays the faults)");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    // Enough input for every fault to hit a running job (1 s of input each).
    let mut job = Job::with_records(dir.path(), 1, 2, RECORDS * (faults + 1));
    let points = [
        "checkpoint-before-write",
        "checkpoint-after-write",
        "sink-before-commit",
        "sink-after-commit",
    ];
    let mut drawn = Vec::new();
    for _ in 0..faults {
        let p = rng.below(2) as usize;
        match rng.below(4) {
            0 => {
                drawn.push(format!("SIGTERM p{p}"));
                job.sigterm_one(p, Duration::from_millis(200 + rng.below(800)));
            }
            1 => {
                drawn.push(format!("SIGKILL p{p}"));
                job.sigkill_one(p, false);
            }
            2 => {
                let name = points[rng.below(4) as usize];
                // The file egress is written by worker 0 alone: its sink points
                // are reached in process 0 only.
                let p = if name.starts_with("sink") { 0 } else { p };
                let point = format!("{name}:{}", 1 + rng.below(5));
                drawn.push(format!("{point} in p{p}"));
                job.failpoint_in_one(p, &point);
            }
            _ => {
                drawn.push("SIGKILL all".to_string());
                let children = job.start(None);
                std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
                Job::kill_all(children);
            }
        }
    }
    job.finish();
    job.check();
    println!("{faults} faults ({}), output exact", drawn.join(", "));
}

/// A process whose peers never come (one died before the job formed, or the
/// host list is wrong) does not wait forever in timely's networking: it stops
/// after `--connect-timeout` with an error saying what to check.
#[test]
fn a_process_whose_peers_never_come_stops_after_the_connect_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = Job::new(dir.path(), 1, 2);
    let hosts = format!(
        "127.0.0.1:{}\n127.0.0.1:{}\n",
        statefun_testkit::free_port(),
        statefun_testkit::free_port()
    );
    std::fs::write(dir.path().join("hosts.txt"), hosts).expect("write hostfile");
    let mut alone = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(&job.dir)
        .args([
            "run",
            "module.yaml",
            "--state-dir",
            "state",
            "-n",
            "2",
            "-p",
            "0",
        ])
        .args(["-h", "hosts.txt", "--connect-timeout", "2s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start process 0");
    let (status, err) = exit_within(&mut alone, Duration::from_secs(30))
        .expect("process 0 waited more than 30 s for a peer that never came");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not connect to all 2 processes") && err.contains("--connect-timeout"),
        "{err}"
    );
}

/// A 400 KiB tmpfs mounted at a path, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).expect("create the mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=400k", "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            Some(SmallDisk(path.to_path_buf()))
        } else {
            statefun_testkit::unavailable(
                "cannot mount a 400 KiB tmpfs for the full-disk test (needs root)",
                "run the tests as root (CI does)",
            )
        }
    }
}

impl SmallDisk {
    /// Moves what the small disk holds to a larger one, as an operator would:
    /// copies it to `scratch`, unmounts, and puts the copy where the mount was.
    fn move_off(self, scratch: &Path) {
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&self.0)
            .arg(scratch)
            .status();
        assert!(
            copied.is_ok_and(|s| s.success()),
            "copy the state off the small disk"
        );
        let mount = self.0.clone();
        drop(self);
        std::fs::remove_dir(&mount).expect("remove the mount point");
        std::fs::rename(scratch, &mount).expect("move the state back in place");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// One process's disk fills up (its state dir is a 400 KiB tmpfs): its
/// checkpoint write fails, and the whole job stops with an error naming the
/// worker and the cause — the other process must neither run on nor deliver
/// the checkpoint the full disk could not take. Moved to a larger disk, the
/// job resumes and the output is exactly once.
#[test]
fn a_full_disk_on_one_process_stops_the_job_and_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut job = Job::new(dir.path(), 1, 2);
    job.separate_state_dirs = true;
    let small = dir.path().join("state1");
    let Some(disk) = SmallDisk::mount(&small) else {
        return;
    };
    let mut children = job.start(None);
    let mut errors = Vec::new();
    for (p, child) in children.iter_mut().enumerate() {
        let (status, err) = exit_within(child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("process {p} still ran 60 s into a full disk"));
        assert!(!status.success(), "process {p} must fail:\n{err}");
        errors.push(err);
    }
    assert!(
        errors[1].contains("No space left on device")
            && errors[1].contains("worker 1 could not write checkpoint"),
        "process 1 names the cause: {}",
        errors[1]
    );
    assert!(
        errors[0].contains("worker 1 failed") && errors[0].contains("No space left on device"),
        "process 0 names the worker and the cause: {}",
        errors[0]
    );
    // Move process 1's state to a larger disk, as an operator would.
    disk.move_off(&dir.path().join("state1-moved"));
    job.finish();
    job.check();
}

/// One worker's disk fills up in a single process of two workers (its
/// `worker-1` state dir is a 400 KiB tmpfs), with an exactly-once Kafka
/// egress: the process stops with an error naming the worker and the cause,
/// worker 0's transactions for the checkpoint worker 1 could not write are
/// never committed, and after the state moves to a larger disk a
/// read_committed consumer sees every line exactly once.
#[test]
fn a_full_disk_under_one_worker_of_two_stops_the_job_and_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(mut job) = Job::on_kafka(dir.path(), 2, 1) else {
        return;
    };
    let small = dir.path().join("state").join("worker-1");
    let Some(disk) = SmallDisk::mount(&small) else {
        return;
    };
    let mut children = job.start(None);
    let (status, err) = exit_within(&mut children[0], Duration::from_secs(60))
        .expect("the job still ran 60 s into a full disk");
    assert!(!status.success(), "the job must fail:\n{err}");
    assert!(
        err.contains("worker 1") && err.contains("No space left on device"),
        "the error names the worker and the cause: {err}"
    );
    disk.move_off(&dir.path().join("worker-1-moved"));
    job.finish();
    job.check();
}

/// `--config` supplies the state dir and interval; `statefun checkpoints`
/// lists what a restart resumes from; a bad config file is an error naming it.
#[test]
fn config_file_and_checkpoint_listing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let job = Job::new(dir.path(), 1, 1);
    std::fs::write(
        dir.path().join("statefun.yaml"),
        "state-dir: state-from-config\ncheckpoint-interval: 100ms\nblock-cache-mb: 8\n",
    )
    .expect("write config");
    let bin = env!("CARGO_BIN_EXE_example-crash-counter");
    let status = Command::new(bin)
        .current_dir(dir.path())
        .args(["run", "module.yaml", "--config", "statefun.yaml"])
        .env("RUST_LOG", "warn")
        .status()
        .expect("run");
    assert!(status.success());
    job.check();
    let listing = Command::new(bin)
        .current_dir(dir.path())
        .args(["checkpoints", "state-from-config"])
        .output()
        .expect("checkpoints");
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "{text}");
    assert!(
        text.contains("worker 0")
            && text.contains("final")
            && text.contains("a restart resumes from checkpoint"),
        "{text}"
    );
    // Errors name the file and the field.
    std::fs::write(dir.path().join("bad.yaml"), "checkpoint-interval: soon\n").expect("write");
    let out = Command::new(bin)
        .current_dir(dir.path())
        .args(["run", "module.yaml", "--config", "bad.yaml"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("bad.yaml") && err.contains("checkpoint-interval"),
        "{err}"
    );
    let out = Command::new(bin)
        .args(["checkpoints", "/nonexistent/state"])
        .output()
        .expect("checkpoints");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/state"));
}
