//! Kafka end to end against a real broker (ci/install-kafka.sh): records
//! produced to a 2-partition topic reach the counter function for their key,
//! and its replies come out through an at-least-once Kafka egress, read back
//! with a plain read_committed consumer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message as _;
use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, FunctionRegistry, RunOptions, Shared};
use statefun_sdk::{
    Context, FunctionError, FunctionSpec, IntType, KafkaEgressMessage, Message, TypeName, ValueSpec,
};

fn bootstrap() -> Option<String> {
    let from_file = || {
        let home = std::env::var_os("HOME")?;
        let path = std::path::Path::new(&home).join(".cache/statefun-rs/kafka/bootstrap");
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    match std::env::var("KAFKA_BOOTSTRAP").ok().or_else(from_file) {
        Some(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "no Kafka broker: run ci/install-kafka.sh"
            );
            eprintln!("SKIPPED: no Kafka broker; run ci/install-kafka.sh");
            None
        }
    }
}

fn counter(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let count = ValueSpec::new("count", IntType);
    let n = ctx.get(&count)?.unwrap_or(0) + 1;
    ctx.set(&count, &n)?;
    let text = String::from_utf8(message.value.value.clone())?;
    let id = ctx.self_address().id.clone();
    let topic = format!("{}-out", text.split(':').next().unwrap_or("x"));
    ctx.send_egress(
        KafkaEgressMessage::for_egress(TypeName::parse("test/out")?)
            .with_topic(&topic)
            .with_key(&id)
            .with_utf8_value(&format!("{id} #{n}: {text}"))
            .build()?,
    );
    Ok(())
}

#[test]
fn records_flow_from_a_topic_through_functions_to_a_topic() {
    let Some(bootstrap) = bootstrap() else { return };
    let run_id = format!("e2e-{}", std::process::id());
    let (input, output) = (format!("{run_id}-in"), format!("{run_id}-out"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    let topics = [
        NewTopic::new(&input, 2, TopicReplication::Fixed(1)),
        NewTopic::new(&output, 1, TopicReplication::Fixed(1)),
    ];
    for result in futures_executor::block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .expect("create topics")
    {
        result.expect("topic created");
    }
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
      targets: [test/counter]
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
    registry
        .register(
            FunctionSpec::builder(TypeName::parse("test/counter").unwrap())
                .with_value_spec(&ValueSpec::new("count", IntType))
                .with_function(counter)
                .build()
                .unwrap(),
        )
        .unwrap();
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

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("{run_id}-check"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&output]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < expected.len() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            got.push((key, value));
        }
    }
    shared.request_shutdown();
    let report = runner.join().unwrap().expect("run succeeds");
    got.sort();
    assert_eq!(report.records_in, 15);
    assert_eq!(got, expected, "every record once, counted in order per key");
}

/// A keyless record and a tombstone: skipped and counted by default; with
/// `--on-bad-record fail` the job stops with an error naming the ingress and the record.
#[test]
fn bad_records_are_skipped_or_fail_the_job_by_policy() {
    let Some(bootstrap) = bootstrap() else { return };
    let run_id = format!("bad-{}", std::process::id());
    let input = format!("{run_id}-in");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    for r in futures_executor::block_on(admin.create_topics(
        &[
            NewTopic::new(&input, 1, TopicReplication::Fixed(1)),
            // The counter replies to `<value prefix>-out`.
            NewTopic::new(&format!("{run_id}-out"), 1, TopicReplication::Fixed(1)),
        ],
        &AdminOptions::new(),
    ))
    .expect("create topic")
    {
        r.expect("topic created");
    }
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
        (3, 2, 1)
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
}
