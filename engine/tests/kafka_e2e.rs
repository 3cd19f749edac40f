//! Kafka end to end against a real broker (ci/install-kafka.sh): records
//! produced to a 2-partition topic reach the three functions their topic fans
//! out to, for their key, and their replies come out through an at-least-once
//! Kafka egress, read back with a plain read_committed consumer; bad records
//! follow each policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message as _;
use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, FunctionRegistry, RunOptions, Shared};
use statefun_sdk::{
    Context, FunctionError, FunctionSpec, IngressMetadata, IntType, KafkaEgressMessage, Message,
    TypeName, ValueSpec,
};

mod common;

fn counter(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let count = ValueSpec::new("count", IntType);
    let n = ctx.get(&count)?.unwrap_or(0) + 1;
    ctx.set(&count, &n)?;
    let text = String::from_utf8(message.value.value.clone())?;
    let me = ctx.self_address().clone();
    let topic = format!("{}-out", text.split(':').next().unwrap_or("x"));
    // `test/counter` answers as before; other function types say who they are.
    let who = match me.function_type.name() {
        "counter" => String::new(),
        other => format!("{other} "),
    };
    ctx.send_egress(
        KafkaEgressMessage::for_egress(TypeName::parse("test/out")?)
            .with_topic(&topic)
            .with_key(&me.id)
            .with_utf8_value(&format!("{who}{} #{n}: {text}", me.id))
            .build()?,
    );
    Ok(())
}

#[test]
fn records_flow_from_a_topic_through_functions_to_a_topic() {
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    let run_id = format!("e2e-{}", std::process::id());
    let (input, output) = (format!("{run_id}-in"), format!("{run_id}-out"));
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&input, 2), (&output, 1)]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    let mut expected = Vec::new();
    for round in 1..=3 {
        for key in ["alice", "bob", "carol", "dave", "erin"] {
            let value = format!("{run_id}:{key}-{round}");
            producer
                .send(BaseRecord::to(&input).key(key).payload(&value))
                .expect("produce");
            expected.push((key.to_owned(), format!("{key} #{round}: {value}")));
            for other in ["audit", "mirror"] {
                expected.push((key.to_owned(), format!("{other} {key} #{round}: {value}")));
            }
        }
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    expected.sort();

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "kind: io.statefun.kafka.v1/ingress
spec:
  id: test/in
  address: {bootstrap}
  consumerGroupId: {run_id}
  startupPosition: {{ type: earliest }}
  topics:
    - topic: {input}
      valueType: test/raw
      targets: [test/counter, test/audit, test/mirror]
---
kind: io.statefun.kafka.v1/egress
spec:
  id: test/out
  address: {bootstrap}
  deliverySemantic: {{ type: at-least-once }}
"
    );
    let module = dir.path().join("module.yaml");
    std::fs::write(&module, yaml).unwrap();
    let mut registry = FunctionRegistry::new();
    for function in ["test/counter", "test/audit", "test/mirror"] {
        registry
            .register(
                FunctionSpec::builder(TypeName::parse(function).unwrap())
                    .with_value_spec(&ValueSpec::new("count", IntType))
                    .with_function(counter)
                    .build()
                    .unwrap(),
            )
            .unwrap();
    }
    let shared = Arc::new(Shared::default());
    let options = RunOptions {
        cluster: ClusterConfig {
            workers: 2,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    };
    let s = shared.clone();
    let runner = std::thread::spawn(move || run_module(&module, &registry, &options, s));

    let mut got: Vec<(String, String)> = statefun_testkit::kafka::read_committed(
        &bootstrap,
        &output,
        expected.len(),
        Duration::ZERO,
    )
    .iter()
    .map(|m| {
        let (key, value, _) = statefun_testkit::kafka::text(m);
        (key, value)
    })
    .collect();
    shared.request_shutdown();
    let report = runner.join().unwrap().expect("run succeeds");
    got.sort();
    assert_eq!(report.records_in, 15);
    assert_eq!(
        got, expected,
        "every record once to each of the three targets, counted per key and function"
    );
}

/// A keyless record, a tombstone and a key that is not UTF-8: skipped and
/// counted by default; with `--on-bad-record fail` the job stops with an
/// error naming the ingress and the record; with `badRecords: dead-letter`
/// they are committed, exactly once, to a dead-letter topic with why and where.
#[test]
fn bad_records_are_skipped_or_fail_the_job_by_policy() {
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    let run_id = format!("bad-{}", std::process::id());
    let input = format!("{run_id}-in");
    // The counter replies to `<value prefix>-out`.
    let (output, dlq) = (format!("{run_id}-out"), format!("{run_id}-dlq"));
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&input, 1), (&output, 1), (&dlq, 1)]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    producer
        .send(BaseRecord::<str, str>::to(&input).payload("no key"))
        .expect("produce");
    producer
        .send(BaseRecord::<str, str>::to(&input).key("alice"))
        .expect("produce tombstone");
    producer
        .send(
            BaseRecord::<[u8], str>::to(&input)
                .key(&[0xff, 0xfe][..])
                .payload("bad key"),
        )
        .expect("produce");
    producer
        .send(
            BaseRecord::to(&input)
                .key("bob")
                .payload(&format!("{run_id}:ok")),
        )
        .expect("produce");
    producer.flush(Duration::from_secs(10)).expect("flush");

    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("module.yaml");
    std::fs::write(
        &module,
        format!(
            "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: test/in\n  address: {bootstrap}\n  consumerGroupId: {run_id}\n  \
             startupPosition: {{ type: earliest }}\n  topics:\n    - topic: {input}\n      valueType: test/raw\n      targets: [test/counter]\n---\n\
             kind: io.statefun.kafka.v1/egress\nspec:\n  id: test/out\n  address: {bootstrap}\n"
        ),
    )
    .unwrap();
    let mut registry = FunctionRegistry::new();
    registry
        .register(
            FunctionSpec::builder(TypeName::parse("test/counter").unwrap())
                .with_value_spec(&ValueSpec::new("count", IntType))
                .with_function(counter)
                .build()
                .unwrap(),
        )
        .unwrap();
    let registry = Arc::new(registry);

    // skip (default): both bad records are counted, the good one is processed.
    let shared = Arc::new(Shared::default());
    let (s, m, r) = (shared.clone(), module.clone(), registry.clone());
    let runner = std::thread::spawn(move || run_module(&m, &r, &RunOptions::default(), s));
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared
        .metrics
        .invocations
        .load(std::sync::atomic::Ordering::Relaxed)
        < 1
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    shared.request_shutdown();
    let report = runner.join().unwrap().expect("a skipping run succeeds");
    assert_eq!(
        (
            report.records_in,
            report.records_skipped,
            report.invocations
        ),
        (4, 3, 1)
    );

    // fail: the first bad record stops the job, naming it.
    let mut options = RunOptions::default();
    options.settings.fail_on_bad_records = true;
    let err = run_module(&module, &registry, &options, Arc::new(Shared::default()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ingress `test/in`") && err.contains("no key") && err.contains(&input),
        "{err}"
    );

    // dead-letter, through an exactly-once egress: the three bad records are
    // committed to the dead-letter topic with why and where, the good one is counted.
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        &module,
        format!(
            "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: test/in\n  address: {bootstrap}\n  consumerGroupId: {run_id}\n  \
             startupPosition: {{ type: earliest }}\n  topics:\n    - topic: {input}\n      valueType: test/raw\n      targets: [test/counter]\n  \
             badRecords:\n    policy: dead-letter\n    egress: test/out\n    topic: {run_id}-dlq\n---\n\
             kind: io.statefun.kafka.v1/egress\nspec:\n  id: test/out\n  address: {bootstrap}\n  deliverySemantic:\n    type: exactly-once\n    transactionTimeout: 1min\n"
        ),
    )
    .unwrap();
    let mut options = RunOptions::default();
    options.settings.durability = Some(statefun_engine::app::Durability {
        checkpoint_interval: Duration::from_millis(200),
        ..statefun_engine::app::Durability::new(state.path())
    });
    let shared = Arc::new(Shared::default());
    let (s, m, r) = (shared.clone(), module.clone(), registry.clone());
    let runner = std::thread::spawn(move || run_module(&m, &r, &options, s));
    let letters = statefun_testkit::kafka::read_committed(&bootstrap, &dlq, 3, Duration::ZERO);
    shared.request_shutdown();
    let report = runner
        .join()
        .unwrap()
        .expect("a dead-lettering run succeeds");
    assert_eq!(
        (
            report.records_in,
            report.records_skipped,
            report.records_dead_lettered
        ),
        (4, 0, 3)
    );
    let header = |m: &rdkafka::message::OwnedMessage, name: &str| -> Option<Vec<u8>> {
        use rdkafka::message::Headers as _;
        m.headers()?
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.map(<[u8]>::to_vec))
    };
    // (key, value, reason, source, raw key header)
    type Letter = (Option<Vec<u8>>, Vec<u8>, String, String, Option<Vec<u8>>);
    let summary: Vec<Letter> = letters
        .iter()
        .map(|m| {
            let text = |h| String::from_utf8_lossy(&header(m, h).unwrap_or_default()).into_owned();
            (
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
                text("statefun.dead-letter.reason"),
                text("statefun.dead-letter.source"),
                header(m, "statefun.dead-letter.key"),
            )
        })
        .collect();
    let reason = |s: &str| s.to_owned();
    assert_eq!(
        summary,
        vec![
            (
                None,
                b"no key".to_vec(),
                reason("it has no key, and the key is the function id"),
                format!("kafka:{input}/0@0"),
                None
            ),
            (
                Some(b"alice".to_vec()),
                Vec::new(),
                reason("it has no value (a tombstone)"),
                format!("kafka:{input}/0@1"),
                None
            ),
            (
                None,
                b"bad key".to_vec(),
                reason("its key is not UTF-8 (invalid utf-8 sequence of 1 bytes from index 0), and keys are function ids"),
                format!("kafka:{input}/0@2"),
                Some(vec![0xff, 0xfe])
            ),
        ]
    );
    assert!(letters
        .iter()
        .all(|m| header(m, "statefun.dead-letter.ingress").as_deref() == Some(&b"test/in"[..])));
}

/// Rust functions read each record's Kafka metadata through the whole pipeline (source →
/// exchange between 2 workers → function): topic, partition, offset, create time and
/// headers in order, a null-valued and a repeated header included.
#[test]
fn rust_functions_read_the_kafka_metadata_of_each_record() {
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    let topic = statefun_testkit::unique_name("metadata");
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&topic, 2)]);
    let headers = |i: i64| -> Vec<(String, Option<Vec<u8>>)> {
        match i % 3 {
            0 => Vec::new(),
            1 => vec![("trace".into(), Some(format!("t{i}").into_bytes()))],
            _ => vec![
                ("a".into(), Some(b"1".to_vec())),
                ("null".into(), None),
                ("a".into(), Some(b"2".to_vec())),
            ],
        }
    };
    statefun_testkit::kafka::produce_records(
        &bootstrap,
        &topic,
        (0..8i64).map(|i| statefun_testkit::kafka::Record {
            partition: (i % 2) as i32,
            key: format!("k{i}"),
            value: format!("v{i}").into_bytes(),
            headers: headers(i),
            timestamp_ms: Some(1_600_000_000_000 + i),
        }),
    );
    let describe = |metadata: Option<&IngressMetadata>, value: &str| match metadata {
        Some(IngressMetadata::Kafka {
            topic,
            partition,
            offset,
            timestamp_ms,
            headers,
        }) => format!(
            "{value} {topic}/{partition}/{offset} ts={timestamp_ms:?} [{}]",
            header_text(headers)
        ),
        other => format!("unexpected {other:?}"),
    };
    let ingress = format!(
        "kind: io.statefun.kafka.v1/ingress
spec:
  id: test/in
  address: {bootstrap}
  consumerGroupId: {topic}
  startupPosition: {{ type: earliest }}
  topics:
    - topic: {topic}
      valueType: test/raw
      targets: [test/describe]
"
    );
    let expected: Vec<String> = (0..8i64)
        .map(|i| {
            format!(
                "k{i} v{i} {topic}/{}/{} ts=Some({}) [{}]",
                i % 2,
                i / 2,
                1_600_000_000_000 + i,
                header_text(&headers(i))
            )
        })
        .collect();
    common::check_described_metadata(&ingress, describe, &expected);
}

/// Kafka headers as `key=value` (`key=<null>` for a null value), comma-separated, in order.
fn header_text(headers: &[(String, Option<Vec<u8>>)]) -> String {
    headers
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={}", String::from_utf8_lossy(v)),
            None => format!("{k}=<null>"),
        })
        .collect::<Vec<_>>()
        .join(",")
}
