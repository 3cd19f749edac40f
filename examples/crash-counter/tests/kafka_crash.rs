//! Exactly-once through a real Kafka broker under SIGKILL: records in a
//! 2-partition topic → counters (state, function→function messages, delayed
//! messages) → exactly-once (transactional) Kafka egress. The app is killed
//! at random moments and restarted on the same state dir; then it runs until
//! the output is complete and is stopped with SIGTERM. A read_committed
//! consumer must see every expected line exactly once. The same with
//! `at-least-once` must show no loss.
//!
//! Needs the broker of `ci/install-kafka.sh` (skipped without it, unless `CI`
//! is set). Soak: `STATEFUN_CRASH_KILLS=100 cargo test --release -p
//! example-crash-counter --test kafka_crash -- --nocapture`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use example_crash_counter::{expected_lines, COUNTER, OUT};

mod common;
use common::{apply, seed, start_app_with, terminate, Fault, Lcg, Service};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message as _;

const RECORDS: u64 = 4000;
const KEYS: u64 = 40;

/// The last run, which must finish the input: with `--restart on-failure`,
/// as a production job runs, so that a broker hiccup (a transaction that times
/// out while a freshly restarted broker is slow, say) restarts it from its
/// last checkpoint instead of ending the test; exactly-once must hold across
/// those restarts too.
fn start(dir: &Path, output: &str) -> Child {
    start_app_with(
        dir,
        ("CRASH_OUT_TOPIC", output),
        &["--restart", "on-failure:backoff=500ms..5s"],
    )
}

fn crash_through_kafka(semantic: &str, fault: Fault) {
    // A restart hits a broker of the test's own (see `PrivateBroker`).
    let private = match fault {
        Fault::ServiceRestart(_) => match statefun_testkit::kafka::PrivateBroker::start() {
            Some(b) => Some(b),
            None => return,
        },
        _ => None,
    };
    let bootstrap = match &private {
        Some(b) => b.bootstrap.clone(),
        None => match statefun_testkit::kafka_bootstrap() {
            Some(b) => b,
            None => return,
        },
    };
    let service = match &private {
        Some(b) => Some(b.pid_file()),
        None => statefun_testkit::kafka_broker_pid_file(),
    };
    let seed = seed();
    println!("seed {seed}");
    let mut rng = Lcg(seed);
    let run = format!(
        "crash-{}-{}-{}",
        semantic,
        std::process::id(),
        seed % 100_000
    );
    let (input, output) = (format!("{run}-in"), format!("{run}-out"));
    statefun_testkit::kafka::create_topics(&bootstrap, &[(&input, 2), (&output, 2)]);
    // Input arrives over about ten seconds, while the app is being killed.
    let producer_bootstrap = bootstrap.clone();
    let producer_topic = input.clone();
    let producing = std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &producer_bootstrap)
            .set("linger.ms", "5")
            // The broker is restarted while this produces: a send it wrote but
            // could not acknowledge before going down is retried, and without
            // idempotence the retry writes the record a second time.
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        for s in 0..RECORDS {
            let key = format!("k{}", s % KEYS);
            let value = format!("v{s}");
            while producer
                .send(BaseRecord::to(&producer_topic).key(&key).payload(&value))
                .is_err()
            {
                if let Some(e) = producer.client().fatal_error() {
                    panic!("the input producer failed: {e:?}");
                }
                producer.poll(Duration::from_millis(10));
            }
            if s % 40 == 39 {
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        producer
            .flush(Duration::from_secs(120))
            .expect("flush input");
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let (eos, properties) = if semantic == "exactly-once" {
        (
            "{ type: exactly-once, transactionTimeout: 60s }".to_string(),
            format!("\n  properties:\n    - transactional.id: {run}\n    - statefun.progress.topic: {run}-progress"),
        )
    } else {
        (format!("{{ type: {semantic} }}"), String::new())
    };
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: crash/in\n  address: {bootstrap}\n  consumerGroupId: {run}\n  \
             startupPosition: {{ type: earliest }}\n  topics:\n    - topic: {input}\n      \
             valueType: io.statefun.types/string\n      targets: [{COUNTER}]\n---\n\
             kind: io.statefun.kafka.v1/egress\nspec:\n  id: {OUT}\n  address: {bootstrap}\n  deliverySemantic: {eos}{properties}\n"
        ),
    )
    .expect("write module.yaml");

    let kills = apply(fault, Service::PidFile(service), &mut rng, |more| {
        start_app_with(dir.path(), ("CRASH_OUT_TOPIC", &output), more)
    });
    producing.join().expect("the producer thread");
    // What the job's exactly-once is measured against is the input topic as
    // the broker holds it: each of the records exactly once (a producer that
    // retried a send the broker had already written would count a record
    // twice and fail the check below for the producer's fault, not the job's).
    let mut written: BTreeMap<String, u32> = BTreeMap::new();
    for m in statefun_testkit::kafka::read_committed(
        &bootstrap,
        &input,
        RECORDS as usize,
        Duration::from_secs(2),
    ) {
        *written
            .entry(statefun_testkit::kafka::text(&m).1)
            .or_default() += 1;
    }
    let twice: Vec<(&String, &u32)> = written.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        written.len() == RECORDS as usize && twice.is_empty(),
        "the input topic holds {} distinct records of {RECORDS}, some more than once: {twice:?}",
        written.len()
    );
    let expected = expected_lines((0..RECORDS).map(|s| format!("k{}", s % KEYS)));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("{run}-check"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&output]).expect("subscribe");
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let read = |seen: &mut BTreeMap<String, u32>, until: Instant, stop_when_complete: bool| {
        while Instant::now() < until {
            if stop_when_complete && expected.keys().all(|k| seen.contains_key(k)) {
                return;
            }
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                *seen.entry(value).or_default() += 1;
            }
        }
    };
    // What the killed runs committed between them (shows the kills hit mid-stream).
    read(&mut seen, Instant::now() + Duration::from_secs(3), false);
    println!(
        "{semantic}: {} of {} lines committed before the last run",
        seen.len(),
        expected.len()
    );
    // The last run goes until every expected line is there, then stops cleanly.
    let child = start(dir.path(), &output);
    read(&mut seen, Instant::now() + Duration::from_secs(180), true);
    // SIGTERM: drain, final checkpoint, commit; then read what is left.
    terminate(child);
    read(&mut seen, Instant::now() + Duration::from_secs(5), false);

    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .take(10)
        .collect();
    let repeated: Vec<(&String, &u32)> = seen.iter().filter(|(_, n)| **n > 1).take(10).collect();
    let unexpected: Vec<&String> = seen
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "{semantic}: lost lines: {missing:?}");
    assert!(
        unexpected.is_empty(),
        "{semantic}: unexpected lines: {unexpected:?}"
    );
    if semantic == "exactly-once" {
        assert!(
            repeated.is_empty(),
            "exactly-once repeated lines: {repeated:?}"
        );
    }
    // Offsets of complete checkpoints were committed to the consumer group (for lag tools).
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &run)
        .create()
        .expect("group consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&input, 0);
    tpl.add_partition(&input, 1);
    let committed: i64 = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum();
    assert!(
        committed > 0 && committed <= RECORDS as i64,
        "{semantic}: the consumer group holds {committed} committed offsets for {RECORDS} records"
    );
    println!("{semantic}: consumer group `{run}` committed {committed} of {RECORDS} offsets");
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    println!(
        "{semantic}: {kills} kills, {} distinct lines, {duplicates} duplicates",
        seen.len()
    );
}

/// The tests share two cores and a broker: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn kafka_exactly_once_survives_kills() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    crash_through_kafka("exactly-once", Fault::Kills(10));
}

/// The broker goes away (paused, so every connection hangs rather than
/// failing fast) for 20 s mid-run: the job rides it out or fails and restarts
/// itself (`--restart on-failure`), and a read_committed consumer still sees
/// every line exactly once.
#[test]
fn kafka_exactly_once_survives_a_broker_away_for_20s() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    crash_through_kafka("exactly-once", Fault::ServicePause(Duration::from_secs(20)));
}

/// The broker (one of the test's own) is stopped (an orderly shutdown:
/// connections are refused, open transactions are left to time out or be
/// fenced) for 30 s mid-run and started again with its data: every line
/// exactly once.
#[test]
fn kafka_exactly_once_survives_a_broker_restart_after_30s() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    crash_through_kafka(
        "exactly-once",
        Fault::ServiceRestart(Duration::from_secs(30)),
    );
}

#[test]
fn kafka_at_least_once_loses_nothing_under_kills() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    crash_through_kafka("at-least-once", Fault::Kills(5));
}
