//! `--metrics-addr` on a running job: `/readyz` turns ready once the job is built, the
//! counters of `/metrics` equal the records, bytes, invocations and latency observations
//! the job processed, `/healthz` answers, and readiness goes once the job stops; a Kafka
//! partition's lag equals exactly the records produced beyond what a stalled job read;
//! `statefun top --once` shows both jobs (and an endpoint that is down); `/readyz` goes from
//! 503 to 200 and back to 503 when a remote endpoint fails the job.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use example_crash_counter::{audit_of, expected_lines, COUNTER, OUT};
use statefun_engine::top::{parse, Sample};
use statefun_sdk::{KafkaEgressMessage, TypeName};
use statefun_testkit::http_get;

mod common;
use common::{file_egress, terminate};

/// Kills the job if a failed assertion leaves it running.
struct Kill(Option<std::process::Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sum of the samples `name` whose labels include every one of `labels` (over the
/// workers, as PromQL's `sum`), or `None` without any.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .reduce(|a, b| a + b)
}

/// `statefun top --once` (through the example's binary, which is the `statefun` CLI with
/// the app's functions) against `endpoints`: its exit status and output.
fn top_once(endpoints: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .args(["top", "--once", "--interval", "0.3"])
        .args(endpoints)
        .output()
        .expect("run statefun top");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.contains('\x1b'),
        "no escape codes when not on a terminal:\n{text}"
    );
    (out.status.success(), text)
}

/// The line of `text` that starts with `first` (columns are padded: compare them split).
fn row<'t>(text: &'t str, first: &str) -> Vec<&'t str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row `{first}` in:\n{text}"))
}

/// Writes `input` (`key<TAB>value` lines) to `dir/in.txt` and a module reading it with
/// `follow: true` (ingress `observe/in`) into the counter, whose lines go to the file egress.
fn write_followed_file_job(dir: &std::path::Path, input: &str) {
    std::fs::write(dir.join("in.txt"), input).expect("input");
    std::fs::write(
        dir.join("module.yaml"),
        format!(
            "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: observe/in\n  path: in.txt\n  \
             valueType: io.statefun.types/string\n  follow: true\n  targets:\n    - {COUNTER}\n---\n{}",
            file_egress()
        ),
    )
    .expect("module.yaml");
}

/// Runs `dir/module.yaml` there with 2 workers and `--metrics-addr` on a free port (plus
/// `extra` arguments); returns the address and a guard that kills the job if a failed
/// assertion leaves it running.
fn start_observed(dir: &std::path::Path, extra: &[&str]) -> (String, Kill) {
    let addr = format!("127.0.0.1:{}", statefun_testkit::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir)
        .args(["run", "module.yaml", "-w", "2", "--metrics-addr", &addr])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the app");
    (addr, Kill(Some(child)))
}

/// Polls `path` until `done` holds for its answer (at most a minute).
fn wait_until(addr: &str, path: &str, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((status, body)) = http_get(addr, path) {
            if done(status, &body) {
                return (status, body);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered as expected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_exactly_what_the_job_did_and_probes_follow_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let records = 120u64;
    let input: String = (0..records).map(|i| format!("{}\tv{i}\n", i % 9)).collect();
    // Bytes read: the key, and the value in its wire format (a StringWrapper).
    let bytes_in: usize = (0..records)
        .map(|i| {
            let value = statefun_sdk::types::encode_primitive_from_text(
                "io.statefun.types/string",
                &format!("v{i}"),
            )
            .expect("a primitive type")
            .expect("encodes");
            format!("{}", i % 9).len() + value.len()
        })
        .sum();
    // Bytes written: every line's Kafka producer record (the app's egress value), keyed by
    // its instance id, to the default topic.
    let bytes_out: usize = expected_lines((0..records).map(|i| format!("{}", i % 9)))
        .keys()
        .map(|line| {
            let id = line.split(' ').nth(1).expect("`kind id n` lines");
            KafkaEgressMessage::for_egress(TypeName::parse(OUT).expect("egress id"))
                .with_topic("crash-out")
                .with_key(id)
                .with_utf8_value(line)
                .build()
                .expect("record")
                .value
                .value
                .len()
        })
        .sum();
    write_followed_file_job(dir.path(), &input);
    let addr = format!("127.0.0.1:{}", statefun_testkit::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir.path())
        .args(["run", "module.yaml", "--state-dir", "state", "-w", "2"])
        .args(["--checkpoint-interval", "100ms", "--metrics-addr", &addr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the app");
    let mut guard = Kill(Some(child));
    let (_, body) = wait_until(&addr, "/readyz", |status, _| status == 200);
    assert_eq!(body, "ready\n");
    assert_eq!(http_get(&addr, "/healthz"), Some((200, "ok\n".to_string())));
    assert_eq!(http_get(&addr, "/nothing-here").map(|(s, _)| s), Some(404));
    // Each record: one counter invocation, one audit and one delayed tick (to the counter).
    let counter = [("function", COUNTER)];
    let audit = [("function", "crash/audit")];
    let invocations = "statefun_function_invocations_total";
    let (_, metrics) = wait_until(&addr, "/metrics", |_, text| {
        let samples = parse(text);
        value(&samples, invocations, &counter) == Some((2 * records) as f64)
            && value(&samples, invocations, &audit) == Some(records as f64)
    });
    let samples = parse(&metrics);
    let ingress = [("ingress", "observe/in")];
    let error = [("function", COUNTER), ("kind", "error")];
    let remote = [("function", COUNTER), ("kind", "remote")];
    let inf = [("function", "crash/audit"), ("le", "+Inf")];
    let latency = "statefun_function_invocation_seconds";
    for (name, labels, expected) in [
        ("statefun_ingress_records_total", &ingress[..], records),
        ("statefun_ingress_bytes_total", &ingress, bytes_in as u64),
        ("statefun_function_invocation_failures_total", &error, 0),
        ("statefun_function_invocation_failures_total", &remote, 0),
        // Every invocation is one observation of its type's latency histogram.
        (&format!("{latency}_count"), &counter, 2 * records),
        (&format!("{latency}_count"), &audit, records),
        (&format!("{latency}_bucket"), &inf, records),
    ] {
        assert_eq!(
            value(&samples, name, labels),
            Some(expected as f64),
            "{name} {labels:?}:\n{metrics}"
        );
    }
    // Counted per worker: both workers read the file (its lines are split between them by
    // position) and invoke the counter (ids are split by key group).
    for (name, labels) in [
        ("statefun_ingress_records_total", &ingress),
        (invocations, &counter),
    ] {
        for worker in ["0", "1"] {
            let mut with = labels.to_vec();
            with.push(("worker", worker));
            assert!(
                value(&samples, name, &with).is_some(),
                "{name} of worker {worker}:\n{metrics}"
            );
        }
    }
    for line in [
        "statefun_hop_cap_deferrals_total{process=\"0\"} 0".to_string(),
        "statefun_checkpoint_failures_total{process=\"0\"} 0".to_string(),
        "statefun_checkpoint_restores_total{process=\"0\"} 0".to_string(),
        "statefun_ready{process=\"0\"} 1".to_string(),
        "# TYPE statefun_epoch_lag_seconds gauge".to_string(),
    ] {
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }
    // Egress records go out once their checkpoint is durable everywhere: all of them, and
    // every tick has fired. Each durable checkpoint's write was timed once.
    let (_, metrics) = wait_until(&addr, "/metrics", |_, text| {
        let samples = parse(text);
        let checkpoints = value(&samples, "statefun_checkpoints_total", &[]);
        let egress = [("egress", OUT)];
        value(&samples, "statefun_egress_records_total", &egress) == Some((3 * records) as f64)
            && text.contains("statefun_checkpoint_age_seconds")
            && text.contains("statefun_delayed_messages_pending{process=\"0\"} 0")
            && checkpoints.is_some()
            && checkpoints == value(&samples, "statefun_checkpoint_write_seconds_count", &[])
    });
    let samples = parse(&metrics);
    assert_eq!(
        value(&samples, "statefun_egress_bytes_total", &[("egress", OUT)]),
        Some(bytes_out as f64),
        "{metrics}"
    );
    // Through the feedback loop: one audit and one tick per record, all processed.
    for (name, expected) in [
        ("statefun_feedback_messages_sent_total", 2 * records),
        ("statefun_feedback_messages_processed_total", 2 * records),
        ("statefun_feedback_messages_pending", 0),
    ] {
        assert_eq!(
            value(&samples, name, &[]),
            Some(expected as f64),
            "{name}:\n{metrics}"
        );
    }
    // Per function type: the audits went through the loop to crash/audit, the ticks to
    // the counter; nothing is left in it.
    for (function, sent) in [("crash/audit", records), (COUNTER, records)] {
        let f = [("function", function)];
        for (name, expected) in [
            ("statefun_function_loop_messages_sent_total", sent),
            ("statefun_function_loop_messages_processed_total", sent),
            ("statefun_function_loop_messages_pending", 0),
        ] {
            assert_eq!(
                value(&samples, name, &f),
                Some(expected as f64),
                "{name} {function}:\n{metrics}"
            );
        }
    }
    // Delivery latency: one observation per epoch of records the file sink committed.
    // How many epochs the records fall into depends on when they were read, so the count
    // is only bounded: at least one, at most one per record. Each waited for its
    // checkpoint, so the sum is positive.
    let egress = [("egress", OUT)];
    let delivered = value(&samples, "statefun_egress_delivery_seconds_count", &egress);
    assert!(
        delivered.is_some_and(|n| n >= 1.0 && n <= (3 * records) as f64),
        "{metrics}"
    );
    assert!(
        value(&samples, "statefun_egress_delivery_seconds_sum", &egress).is_some_and(|s| s > 0.0),
        "{metrics}"
    );
    // Stored state, counted in the background from the merged checkpoints: the 9 counters
    // keep `count` and `ticks`, each audit id its `count`, every value an IntWrapper of 5
    // bytes (tag and sfixed32).
    let audits: std::collections::BTreeSet<String> =
        (0..9).map(|k| audit_of(&k.to_string())).collect();
    let expected_state = [(COUNTER, 18u64), ("crash/audit", audits.len() as u64)];
    let (_, metrics) = wait_until(&addr, "/metrics", |_, text| {
        let samples = parse(text);
        expected_state.iter().all(|(function, values)| {
            let f = [("function", *function)];
            value(&samples, "statefun_state_values", &f) == Some(*values as f64)
                && value(&samples, "statefun_state_value_bytes", &f) == Some((5 * values) as f64)
        })
    });
    assert!(
        metrics.contains("statefun_state_counted_age_seconds{process=\"0\",worker=\"1\"}"),
        "{metrics}"
    );
    assert!(
        value(&samples, "statefun_checkpoint_bytes_total", &[]).is_some_and(|b| b > 0.0),
        "{metrics}"
    );
    // `statefun top` against the job and a port nothing listens on.
    let dead = format!("127.0.0.1:{}", statefun_testkit::free_port());
    let (ok, shown) = top_once(&[&addr, &dead]);
    assert!(ok, "one endpoint answered:\n{shown}");
    assert!(shown.contains("1 of 2 endpoint(s) up"), "{shown}");
    assert_eq!(&row(&shown, &addr)[1..4], ["0", "up", "ready"], "{shown}");
    assert_eq!(row(&shown, &dead)[2], "down", "{shown}");
    // Totals, then per-second rates (nothing more arrives: 0.0).
    assert_eq!(row(&shown, "observe/in")[1..3], ["0.0", "120"], "{shown}");
    let out_row = row(&shown, OUT);
    assert_eq!(out_row[1..3], ["0.0", "360"], "{shown}");
    assert_eq!(
        out_row.len(),
        4,
        "EGRESS RECORDS/S TOTAL DELIVERY-P99: {shown}"
    );
    assert_eq!(row(&shown, COUNTER)[1..4], ["0.0", "240", "0"], "{shown}");
    assert_eq!(
        row(&shown, "crash/audit")[1..4],
        ["0.0", "120", "0"],
        "{shown}"
    );
    let status = terminate(guard.0.take().expect("the job"));
    assert!(status.success(), "{status}");
    assert!(
        http_get(&addr, "/healthz").is_none(),
        "the endpoint goes with the process"
    );
}

/// Records a restart delivers from its checkpoint's outbox are timed from the end of that
/// checkpoint's epoch, before the crash: their delivery latency shows the time they waited
/// for the restart, not zero and not nothing.
#[test]
fn records_replayed_after_a_crash_show_their_wait_in_the_delivery_latency() {
    let dir = tempfile::tempdir().expect("temp dir");
    let records = 30u64;
    let input: String = (0..records).map(|i| format!("{}\tv{i}\n", i % 5)).collect();
    write_followed_file_job(dir.path(), &input);
    let durable = ["--state-dir", "state", "--checkpoint-interval", "100ms"];
    // The first run aborts once a sink has written the records of a durable checkpoint and
    // not yet committed them: the restart delivers them again from the outbox.
    let status = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir.path())
        .args(["run", "module.yaml", "-w", "2"])
        .args(durable)
        .env("STATEFUN_FAILPOINT", "sink-before-commit:1")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run the app");
    assert!(!status.success(), "the fail point aborts the run");
    let down = Duration::from_secs(3);
    std::thread::sleep(down);
    let (addr, guard) = start_observed(dir.path(), &durable);
    let egress = [("egress", OUT)];
    let (_, metrics) = wait_until(&addr, "/metrics", |_, text| {
        let samples = parse(text);
        value(&samples, "statefun_egress_records_total", &egress).is_some()
            && value(&samples, "statefun_egress_delivery_seconds_count", &egress)
                .is_some_and(|n| n >= 1.0)
    });
    let samples = parse(&metrics);
    let count = value(&samples, "statefun_egress_delivery_seconds_count", &egress);
    let mut within = egress.to_vec();
    within.push(("le", "2.5"));
    let fast = value(&samples, "statefun_egress_delivery_seconds_bucket", &within);
    assert!(
        matches!((count, fast), (Some(n), Some(f)) if n - f >= 1.0),
        "an epoch delivered after waiting out the {down:?} restart:\n{metrics}"
    );
    // And exactly once: every line the state implies, each once.
    let expected = expected_lines((0..records).map(|i| format!("{}", i % 5)));
    let out = dir.path().join("out.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = statefun_testkit::egress_lines(&out);
        if lines.len() >= expected.len() {
            let mut seen = lines.clone();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), lines.len(), "duplicates in {lines:?}");
            assert_eq!(lines.len(), expected.len(), "{lines:?}");
            break;
        }
        assert!(Instant::now() < deadline, "only {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(guard);
}

/// A Kafka ingress whose records go to a remote function that never answers: the first
/// record's invocation stays in flight, its epoch never completes, and after 200 epochs
/// (2 s) the sources stop reading. Records produced after that are exactly the lag, and
/// the remote endpoint shows exactly one request, one message, in flight, and one message
/// waiting behind it.
#[test]
fn kafka_lag_and_remote_requests_are_exact_while_the_job_is_stalled() {
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    let topic = statefun_testkit::unique_name("observe-lag");
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&topic, 1)]);
    statefun_testkit::kafka::produce(
        &bootstrap,
        &topic,
        [
            (0, "k".into(), "first".into()),
            (0, "k".into(), "second".into()),
        ],
    );
    // The function server: accepts connections, answers nothing.
    let (port, _requests) = statefun_testkit::silent_server();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: observe/kafka\n  address: {bootstrap}\n  \
             consumerGroupId: {topic}\n  startupPosition: {{ type: earliest }}\n  topics:\n    \
             - topic: {topic}\n      valueType: io.statefun.types/string\n      targets: [slow/fn]\n---\n\
             kind: io.statefun.endpoints.v2/http\nspec:\n  functions: slow/*\n  \
             urlPathTemplate: http://127.0.0.1:{port}/{{function.name}}\n  transport:\n    \
             timeouts: {{ call: 10min, read: 10min }}\n"
        ),
    )
    .expect("module.yaml");
    let (addr, guard) = start_observed(dir.path(), &[]);
    let ingress = [("ingress", "observe/kafka")];
    let endpoint = [("endpoint", "slow/*")];
    // The first two records are read and the first one's invocation sent (the second waits
    // behind it: same address); the epoch of those messages never completes, so once the
    // epoch lag passes 200 epochs (2 s) the sources read no more.
    wait_until(&addr, "/metrics", |_, text| {
        let samples = parse(text);
        value(&samples, "statefun_ingress_records_total", &ingress) == Some(2.0)
            && value(&samples, "statefun_remote_in_flight_requests", &endpoint) == Some(1.0)
            && value(&samples, "statefun_epoch_lag_seconds", &[]).is_some_and(|lag| lag >= 3.0)
    });
    let more = 5;
    statefun_testkit::kafka::produce(
        &bootstrap,
        &topic,
        (0..more).map(|i| (0, "k".to_string(), format!("later {i}"))),
    );
    let partition = [("topic", topic.as_str()), ("partition", "0")];
    let (_, metrics) = wait_until(&addr, "/metrics", |_, text| {
        value(
            &parse(text),
            "statefun_kafka_partition_lag_records",
            &partition,
        ) == Some(f64::from(more))
    });
    let samples = parse(&metrics);
    for (name, labels, expected) in [
        ("statefun_kafka_partition_position", &partition[..], 2.0),
        (
            "statefun_kafka_partition_high_watermark",
            &partition,
            2.0 + f64::from(more),
        ),
        ("statefun_ingress_records_total", &ingress, 2.0),
        ("statefun_remote_backlog_messages", &endpoint, 1.0),
        ("statefun_remote_requests_total", &endpoint, 1.0),
        ("statefun_remote_in_flight_requests", &endpoint, 1.0),
        ("statefun_remote_retries_total", &endpoint, 0.0),
        ("statefun_remote_batch_messages_count", &endpoint, 1.0),
        ("statefun_remote_request_seconds_count", &endpoint, 0.0),
        (
            "statefun_function_invocations_total",
            &[("function", "slow/fn")],
            0.0,
        ),
    ] {
        let found = value(&samples, name, labels);
        // A function type shows only once invoked: none answered here.
        if name == "statefun_function_invocations_total" {
            assert_eq!(found, None, "{name}:\n{metrics}");
            continue;
        }
        assert_eq!(found, Some(expected), "{name} {labels:?}:\n{metrics}");
    }
    let (ok, shown) = top_once(&[&addr]);
    assert!(ok, "{shown}");
    // The ingress's lag is its partitions' sum; the partition row has its offsets.
    assert_eq!(
        row(&shown, "observe/kafka")[1..4],
        ["0.0", "2", "5"],
        "{shown}"
    );
    let partition_row = shown
        .lines()
        .find(|l| l.contains(&format!("{topic} [0]")))
        .unwrap_or_else(|| panic!("no partition row in:\n{shown}"));
    let cells: Vec<&str> = partition_row.split_whitespace().collect();
    assert_eq!(cells[cells.len() - 3..], ["2", "7", "5"], "{shown}");
    assert_eq!(
        row(&shown, "slow/*")[1..6],
        ["0.0", "1", "1", "0", "-"],
        "{shown}"
    );
    // The guard kills the job: its one remote request never answers.
    drop(guard);
}

/// A Kinesis ingress on a 2-shard stream: once the job has read every record, each shard
/// its readers read shows `MillisBehindLatest` from the reader's last `GetRecords`, labelled
/// with its stream and shard, and 0 once the reader is at the tip; `top` shows the ingress's
/// furthest-behind shard.
#[test]
fn kinesis_shards_report_how_far_behind_their_readers_are() {
    let Some(kinesis) = statefun_testkit::kinesis::Emulator::connect() else {
        return;
    };
    let stream = statefun_testkit::unique_name("observe-behind");
    kinesis.create_stream(&stream, 2);
    let records = 20;
    for i in 0..records {
        kinesis.put(&stream, &format!("k{i}"), format!("v{i}").as_bytes());
    }
    let shards = kinesis.shard_ids(&stream);
    assert_eq!(shards.len(), 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoint = kinesis.endpoint.clone();
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: observe/kinesis\n  \
             awsRegion: {{ type: custom-endpoint, endpoint: \"{endpoint}\", id: us-east-1 }}\n  \
             awsCredentials: {{ type: basic, accessKeyId: test, secretAccessKey: test }}\n  \
             startupPosition: {{ type: trim-horizon }}\n  streams:\n    - stream: {stream}\n      \
             valueType: test/raw\n      targets: [{COUNTER}]\n---\n{}",
            file_egress()
        ),
    )
    .expect("module.yaml");
    let (addr, guard) = start_observed(dir.path(), &[]);
    let ingress = ("ingress", "observe/kinesis");
    let (_, metrics) = wait_until(&addr, "/metrics", |_, text| {
        let samples = parse(text);
        value(&samples, "statefun_ingress_records_total", &[ingress]) == Some(f64::from(records))
            && shards.iter().all(|shard| {
                value(
                    &samples,
                    "statefun_kinesis_shard_behind_latest_seconds",
                    &[ingress, ("stream", stream.as_str()), ("shard", shard)],
                ) == Some(0.0)
            })
    });
    let samples = parse(&metrics);
    let listed: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "statefun_kinesis_shard_behind_latest_seconds")
        .collect();
    assert_eq!(listed.len(), 2, "one sample per shard:\n{metrics}");
    let (ok, text) = top_once(&[&addr]);
    assert!(ok, "{text}");
    let cells = row(&text, "observe/kinesis");
    assert_eq!(
        cells.len(),
        5,
        "INGRESS RECORDS/S TOTAL KAFKA-LAG KINESIS-BEHIND: {text}"
    );
    assert_eq!(cells[2], records.to_string(), "{text}");
    let mut guard = guard;
    if let Some(child) = guard.0.take() {
        assert!(terminate(child).success());
    }
}

/// `/readyz` follows a job through its life: 503 `starting` while a worker cannot open its
/// source (the ingress is a FIFO nobody writes yet: opening it blocks), 200 once it can, and
/// 503 `failed` with the reason once a record reaches a remote function whose endpoint
/// refuses connections (`--on-remote-failure fail`, the default). `--restart` with a long
/// backoff keeps the process, and its endpoint, up while failed.
#[test]
fn readiness_turns_ready_and_back_to_failed_when_a_remote_endpoint_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("in.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    // Nothing listens on this port: every attempt is refused until the call timeout.
    let closed = statefun_testkit::free_port();
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: observe/fifo\n  path: in.fifo\n  \
             valueType: io.statefun.types/string\n  follow: true\n  targets: [gone/fn]\n---\n\
             kind: io.statefun.endpoints.v2/http\nspec:\n  functions: gone/*\n  \
             urlPathTemplate: http://127.0.0.1:{closed}/{{function.name}}\n  transport:\n    \
             timeouts: {{ call: 1s }}\n"
        ),
    )
    .expect("module.yaml");
    let (addr, guard) = start_observed(
        dir.path(),
        &["--restart", "on-failure:max=1,backoff=10min..10min"],
    );
    // Worker 0 is blocked opening the FIFO: the job cannot be ready.
    let (status, body) = wait_until(&addr, "/readyz", |_, _| true);
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("starting: "), "{body}");
    let (_, metrics) = wait_until(&addr, "/metrics", |_, _| true);
    assert_eq!(
        value(&parse(&metrics), "statefun_ready", &[]),
        Some(0.0),
        "{metrics}"
    );
    // Opening the FIFO for writing lets the worker's open return (from a thread: if the
    // job had died, the open would wait for a reader forever).
    let (opened, writer) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = opened.send(std::fs::OpenOptions::new().write(true).open(path));
    });
    let mut writer = writer
        .recv_timeout(Duration::from_secs(60))
        .expect("the job opens its FIFO")
        .expect("open the FIFO for writing");
    let (_, body) = wait_until(&addr, "/readyz", |status, _| status == 200);
    assert_eq!(body, "ready\n");
    // Its endpoint refuses: the job fails.
    // One record for the remote function, then end of file (the worker's read of the FIFO
    // waits for data while a writer has it open; `follow` polls for more after the end).
    std::io::Write::write_all(&mut writer, b"k\tv\n").expect("write a record");
    drop(writer);
    let (status, body) = wait_until(&addr, "/readyz", |status, _| status != 200);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("failed: ") && body.contains("gone/fn"),
        "{body}"
    );
    let (_, metrics) = wait_until(&addr, "/metrics", |_, _| true);
    let samples = parse(&metrics);
    let endpoint = [("endpoint", "gone/*")];
    for (name, labels, expected) in [
        ("statefun_ready", &[][..], 0.0),
        (
            "statefun_ingress_records_total",
            &[("ingress", "observe/fifo")],
            1.0,
        ),
        ("statefun_remote_requests_total", &endpoint, 1.0),
        ("statefun_remote_in_flight_requests", &endpoint, 0.0),
        (
            "statefun_remote_request_failures_total",
            &[("endpoint", "gone/*"), ("kind", "timeout")],
            1.0,
        ),
        (
            "statefun_function_invocation_failures_total",
            &[("function", "gone/fn"), ("kind", "remote")],
            1.0,
        ),
    ] {
        assert_eq!(
            value(&samples, name, labels),
            Some(expected),
            "{name} {labels:?}:\n{metrics}"
        );
    }
    drop(guard);
}
