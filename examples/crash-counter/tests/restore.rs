//! Restores that neither skip nor re-read input, with real processes, a real
//! broker and the emulator: a job with state is stopped with SIGTERM, its
//! input changes while it is down (Kafka partitions added; records put into
//! a Kinesis shard the job never read from), and the restarted job must
//! process exactly the records its startup position and checkpoint imply —
//! every line of the exactly-once file egress once, none missing, none extra.
//!
//! Needs the broker of `ci/install-kafka.sh` and the emulator of
//! `ci/install-kinesis.sh` (skipped without them, unless `CI` is set).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use example_crash_counter::{expected_lines, COUNTER};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

mod common;
use common::{file_egress, list_checkpoints, terminate};

const KEYS: u64 = 40;

/// Starts the app on `dir/module.yaml` (2 workers, RocksDB state in
/// `dir/state`, a checkpoint every 100 ms).
fn start(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir)
        .args(["run", "module.yaml", "--state-dir", "state"])
        .args(["--checkpoint-interval", "100ms", "-w", "2"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the app")
}

/// SIGTERM: the job drains to a final checkpoint and exits 0; then a restart
/// must resume from a checkpoint (not start fresh, which would re-resolve
/// the startup position and hide what this test looks for).
fn stop_with_a_checkpoint(dir: &Path, child: Child) {
    let status = terminate(child);
    assert!(status.success(), "the job's SIGTERM exit: {status}");
    let text = list_checkpoints(dir, &["state"]);
    assert!(
        text.contains("a restart resumes from checkpoint"),
        "the stopped job left no checkpoint to resume from:\n{text}"
    );
}

/// The egress file's lines, counted.
fn lines(dir: &Path) -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap_or_default();
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("egress line is not JSON ({e}): {line:?}"));
        let value = v["value"].as_str().expect("a text value").to_string();
        *seen.entry(value).or_default() += 1;
    }
    seen
}

/// Waits (at most two minutes) until the egress holds every expected line.
fn wait_for(dir: &Path, expected: &BTreeMap<String, u32>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let seen = lines(dir);
        if expected.keys().all(|l| seen.contains_key(l)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The egress holds exactly `expected`, each line once.
fn check_exact(dir: &Path, expected: &BTreeMap<String, u32>, what: &str) {
    let seen = lines(dir);
    let missing: Vec<&String> = expected
        .keys()
        .filter(|l| !seen.contains_key(*l))
        .take(10)
        .collect();
    let extra: Vec<(&String, &u32)> = seen
        .iter()
        .filter(|(l, n)| **n > 1 || !expected.contains_key(*l))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} lines for {} expected; missing {missing:?}; repeated or unexpected {extra:?}",
        seen.values().sum::<u32>(),
        expected.len()
    );
}

/// A `latest` job is stopped; while it is down its topic grows from 2 to 4
/// partitions and records go into all four. The restarted job resumes the
/// two partitions its checkpoint knows and reads the two new ones from their
/// beginning (docs/CONNECTORS.md): every record exactly once. (Resolving
/// the new partitions with the startup position `latest` would skip them.)
#[test]
fn kafka_partitions_added_while_the_job_is_down_are_read_from_the_beginning() {
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    let run = format!("restore-partitions-{}", std::process::id());
    let input = format!("{run}-in");
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&input, 2)]);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: crash/in\n  address: {bootstrap}\n  consumerGroupId: {run}\n  \
             startupPosition: {{ type: latest }}\n  topics:\n    - topic: {input}\n      \
             valueType: io.statefun.types/string\n      targets: [{COUNTER}]\n---\n{}",
            file_egress()
        ),
    )
    .expect("write module.yaml");

    // First run: the topic is empty, the job positions itself and checkpoints.
    let child = start(dir.path());
    std::thread::sleep(Duration::from_secs(3));
    stop_with_a_checkpoint(dir.path(), child);

    // While it is down: two more partitions, and records in all four.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    let grown = futures_executor::block_on(admin.create_partitions(
        &[NewPartitions::new(&input, 4)],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .expect("create partitions");
    assert!(grown.iter().all(|r| r.is_ok()), "grow the topic: {grown:?}");
    let records = 800u64;
    statefun_testkit::kafka::produce(
        &bootstrap,
        &input,
        (0..records).map(|s| ((s % 4) as i32, format!("k{}", s % KEYS), format!("v{s}"))),
    );

    let expected = expected_lines((0..records).map(|s| format!("k{}", s % KEYS)));
    let child = start(dir.path());
    wait_for(dir.path(), &expected);
    stop_with_a_checkpoint(dir.path(), child);
    check_exact(
        dir.path(),
        &expected,
        "records of partitions added while the job was down",
    );
}

/// A 2-shard stream with 300 records in shard 1 before a `latest` job first
/// starts. The job reads new records from shard 0 only, is stopped with
/// SIGTERM, and records are put into shard 1 while it is down. The restarted
/// job must read those (they are after its startup position) and not the 300
/// old ones: shard 1 was never read, so its position is the job's startup
/// position, kept across the restart — not the trim horizon.
#[test]
fn kinesis_shards_never_read_keep_the_startup_position_across_restarts() {
    let Some(k) = statefun_testkit::kinesis::Emulator::connect() else {
        return;
    };
    let stream = format!("restore-idle-{}", std::process::id());
    k.create_stream(&stream, 2);
    // The first shard's hash keys start at 0, the second's at 2^127.
    let (first, second) = ("0", "340282366920938463463374607431768211455");
    for s in 0..300 {
        let (shard, _) = k.put_at(&stream, second, &format!("old{}", s % 7), b"old");
        assert_eq!(shard, "shardId-000000000001");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoint = &k.endpoint;
    let region = statefun_testkit::kinesis::REGION;
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: crash/in\n  \
             awsRegion: {{ type: custom-endpoint, endpoint: \"{endpoint}\", id: {region} }}\n  \
             awsCredentials: {{ type: basic, accessKeyId: test, secretAccessKey: test }}\n  \
             startupPosition: {{ type: latest }}\n  streams:\n    - stream: {stream}\n      \
             valueType: io.statefun.types/string\n      targets: [{COUNTER}]\n---\n{}",
            file_egress()
        ),
    )
    .expect("write module.yaml");

    // First run. Until the job has positioned itself a record put now may or
    // may not be read (that is what `latest` means): put distinct `ready-N`
    // keys into shard 0 until one shows, and count whichever did as input.
    let child = start(dir.path());
    let mut ready = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines(dir.path())
        .keys()
        .any(|l| l.starts_with("count ready-"))
    {
        assert!(
            Instant::now() < deadline,
            "the job read nothing within 60 s"
        );
        k.put_at(&stream, first, &format!("ready-{ready}"), b"ready");
        ready += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut keys: Vec<String> = Vec::new();
    for s in 0..200 {
        let key = format!("k{}", s % KEYS);
        k.put_at(&stream, first, &key, b"new");
        keys.push(key);
    }
    let read_ready = |keys: &[String]| -> Vec<String> {
        let seen = lines(dir.path());
        let mut all = keys.to_vec();
        all.extend(
            (0..ready)
                .map(|r| format!("ready-{r}"))
                .filter(|key| seen.contains_key(&format!("count {key} 1"))),
        );
        all
    };
    wait_for(dir.path(), &expected_lines(keys.iter().cloned()));
    stop_with_a_checkpoint(dir.path(), child);

    // While it is down: new records into the shard the job never read.
    for s in 0..100 {
        let key = format!("k{}", s % KEYS);
        k.put_at(&stream, second, &key, b"while-down");
        keys.push(key);
    }
    let child = start(dir.path());
    let expected = expected_lines(read_ready(&keys).into_iter());
    wait_for(dir.path(), &expected);
    // Give a wrong re-read of the 300 old records time to show.
    std::thread::sleep(Duration::from_secs(3));
    stop_with_a_checkpoint(dir.path(), child);
    check_exact(
        dir.path(),
        &expected,
        "records of a shard the job never read before its restart",
    );
}

/// `kafka lag --state-dir` reports, per partition, where a restart would resume
/// (the checkpoint), the high watermark and the records in between: after a
/// job read everything and stopped, exactly the records produced since.
#[test]
fn kafka_lag_reports_what_a_restart_would_read() {
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    let run = format!("restore-lag-{}", std::process::id());
    let input = format!("{run}-in");
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&input, 2)]);
    let produce = |per_partition: [u64; 2]| {
        let records: Vec<(i32, String, String)> = per_partition
            .iter()
            .enumerate()
            .flat_map(|(p, n)| {
                (0..*n).map(move |s| (p as i32, format!("k{}", s % KEYS), "v".to_string()))
            })
            .collect();
        let keys: Vec<String> = records.iter().map(|(_, k, _)| k.clone()).collect();
        statefun_testkit::kafka::produce(&bootstrap, &input, records);
        keys
    };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: crash/in\n  address: {bootstrap}\n  consumerGroupId: {run}\n  \
             startupPosition: {{ type: earliest }}\n  topics:\n    - topic: {input}\n      \
             valueType: io.statefun.types/string\n      targets: [{COUNTER}]\n---\n{}",
            file_egress()
        ),
    )
    .expect("write module.yaml");
    let keys = produce([100, 100]);
    let child = start(dir.path());
    wait_for(dir.path(), &expected_lines(keys.into_iter()));
    stop_with_a_checkpoint(dir.path(), child);
    produce([30, 20]);

    let out = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir.path())
        .args(["kafka", "lag", "module.yaml", "--state-dir", "state"])
        .output()
        .expect("kafka lag");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    // Rows: topic, partition, position, from, high watermark, lag.
    let row = |partition: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|w| w.len() == 6 && w[0] == input && w[1] == partition)
            .unwrap_or_else(|| panic!("no row for partition {partition}:\n{text}"))
    };
    assert_eq!(row("0")[2..], ["100", "checkpoint", "130", "30"]);
    assert_eq!(row("1")[2..], ["100", "checkpoint", "120", "20"]);
    assert!(text.contains("total lag: 50"), "{text}");
}
