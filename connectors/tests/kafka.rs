//! Kafka source and sink against a real broker (Apache Kafka 4.x, started by
//! `ci/install-kafka.sh`). The broker address comes from env `KAFKA_BOOTSTRAP` or from
//! `$KAFKA_HOME/bootstrap` (default `~/.cache/statefun-rs/kafka/bootstrap`). Without a
//! broker the tests print SKIPPED and pass, except under CI (`CI` set), where that fails.
//!
//! Every test uses its own topics and consumer groups, and is bounded in time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use statefun_connectors::kafka::partition_owner;
use statefun_connectors::{KafkaSink, KafkaSource, Sink, Source, SourceRecord};
use statefun_module::{
    AutoOffsetReset, FunctionPattern, KafkaDeliverySemantic, KafkaEgress, KafkaIngress,
    KafkaStartupPosition, KafkaTopic, PartitionOffset, Properties, Timestamp,
};
use statefun_sdk::proto::egress::{kafka_producer_record, KafkaProducerRecord};
use statefun_sdk::{EgressMessage, IngressMetadata, TypeName};
use statefun_testkit::unique_name;

// ---------------------------------------------------------------------------------------
// Broker and helpers

macro_rules! broker_or_skip {
    () => {
        match statefun_testkit::kafka_bootstrap() {
            Some(b) => b,
            None => return,
        }
    };
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn admin(b: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", b)
        .create()
        .expect("admin client")
}

fn create_topic(b: &str, partitions: i32) -> String {
    let name = unique_name("t");
    let admin = admin(b);
    let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let res = futures_executor::block_on(admin.create_topics([&topic], &opts)).expect("create");
    for r in res {
        r.expect("topic created");
    }
    wait_for_partitions(b, &name, partitions);
    name
}

fn add_partitions(b: &str, topic: &str, total: usize) {
    let admin = admin(b);
    let np = NewPartitions::new(topic, total);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let res = futures_executor::block_on(admin.create_partitions([&np], &opts)).expect("add");
    for r in res {
        r.expect("partitions added");
    }
    wait_for_partitions(b, topic, total as i32);
}

/// Waits until metadata shows `n` partitions with leaders, so producing does not race the
/// topic's creation.
fn wait_for_partitions(b: &str, topic: &str, n: i32) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .create()
        .expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let ok = md.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() as i32 == n
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ok {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("topic {topic} did not get {n} partitions");
}

struct Rec<'a> {
    partition: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    timestamp: Option<i64>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

fn rec<'a>(partition: i32, key: &'a str, value: &'a str) -> Rec<'a> {
    Rec {
        partition,
        key: Some(key.as_bytes()),
        value: Some(value.as_bytes()),
        timestamp: None,
        headers: vec![],
    }
}

fn produce(b: &str, topic: &str, records: &[Rec<'_>]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for r in records {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(r.partition);
        if let Some(k) = r.key {
            record = record.key(k);
        }
        if let Some(v) = r.value {
            record = record.payload(v);
        }
        if let Some(ts) = r.timestamp {
            record = record.timestamp(ts);
        }
        if !r.headers.is_empty() {
            let mut hs = OwnedHeaders::new();
            for (k, v) in &r.headers {
                hs = hs.insert(Header { key: k, value: *v });
            }
            record = record.headers(hs);
        }
        p.send(record).map_err(|(e, _)| e).expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn ingress(b: &str, topics: &[&str], start: KafkaStartupPosition) -> KafkaIngress {
    KafkaIngress {
        address: b.to_string(),
        consumer_group_id: unique_name("g"),
        topics: topics
            .iter()
            .enumerate()
            .map(|(i, t)| KafkaTopic {
                topic: t.to_string(),
                value_type: TypeName::parse(&format!("test/v{i}")).expect("typename"),
                targets: vec![FunctionPattern::Exact(
                    TypeName::parse(&format!("test/f{i}")).expect("typename"),
                )],
            })
            .collect(),
        startup_position: start,
        auto_offset_reset: AutoOffsetReset::Latest,
        properties: Properties::default(),
        cluster: None,
        properties_file: None,
    }
}

fn id() -> TypeName {
    TypeName::parse("test/kafka-in").expect("typename")
}

fn open(spec: &KafkaIngress) -> KafkaSource {
    KafkaSource::open(&id(), spec, 0, 1).expect("open source")
}

/// Polls until `n` records arrived (or `limit` passed), then briefly more to catch extras.
fn read(source: &mut KafkaSource, n: usize, limit: Duration) -> Vec<SourceRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    while out.len() < n && Instant::now() < deadline {
        source.poll(&mut out, 100).expect("poll");
        std::thread::sleep(Duration::from_millis(5));
    }
    let extra = Instant::now() + Duration::from_millis(700);
    while Instant::now() < extra {
        source.poll(&mut out, 100).expect("poll");
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

fn meta(r: &SourceRecord) -> (String, i32, i64) {
    match r.metadata.record() {
        Some(IngressMetadata::Kafka {
            topic,
            partition,
            offset,
            ..
        }) => (topic.clone(), *partition, *offset),
        other => panic!("not Kafka metadata: {other:?}"),
    }
}

fn values(records: &[SourceRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"<none>")).into_owned())
        .collect()
}

/// A record's key and value, as the source hands them on.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

const T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Source: startup positions

#[test]
fn earliest_reads_everything_in_order() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let recs: Vec<Rec<'_>> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|v| rec(0, "k", v))
        .collect();
    produce(&b, &t, &recs);
    let mut s = open(&ingress(&b, &[&t], KafkaStartupPosition::Earliest));
    let got = read(&mut s, 5, T);
    assert_eq!(values(&got), ["a", "b", "c", "d", "e"]);
    let offsets: Vec<i64> = got.iter().map(|r| meta(r).2).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4]);
    assert_eq!(s.positions(), vec![(t.clone(), 0, 5)]);
    assert_eq!(s.stats().records, 5);
}

#[test]
fn latest_reads_only_what_comes_after_open() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    produce(&b, &t, &[rec(0, "k", "old1"), rec(0, "k", "old2")]);
    let mut s = open(&ingress(&b, &[&t], KafkaStartupPosition::Latest));
    // The position is concrete from the start, so a checkpoint now would be exact.
    assert_eq!(s.positions(), vec![(t.clone(), 0, 2)]);
    produce(&b, &t, &[rec(0, "k", "new1"), rec(0, "k", "new2")]);
    let got = read(&mut s, 2, T);
    assert_eq!(values(&got), ["new1", "new2"]);
}

#[test]
fn group_offsets_resume_from_commit_and_fall_back_per_partition() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 2);
    let recs: Vec<Rec<'_>> = (0..2)
        .flat_map(|p| {
            ["0", "1", "2", "3", "4"]
                .into_iter()
                .map(move |v| rec(p, "k", v))
        })
        .collect();
    produce(&b, &t, &recs);
    let mut spec = ingress(&b, &[&t], KafkaStartupPosition::Earliest);
    let first = open(&spec);
    // Only partition 0 gets a committed offset.
    first.commit_offsets(&[(t.clone(), 0, 3)]).expect("commit");
    wait_committed(&b, &spec.consumer_group_id, &t, 0, 3, first);

    spec.startup_position = KafkaStartupPosition::GroupOffsets;
    spec.auto_offset_reset = AutoOffsetReset::Earliest;
    let mut s = open(&spec);
    let got = read(&mut s, 7, T);
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in &got {
        let (_, p, o) = meta(r);
        by_partition.entry(p).or_default().push(o);
    }
    assert_eq!(by_partition[&0], [3, 4]);
    assert_eq!(by_partition[&1], [0, 1, 2, 3, 4]);

    // With autoOffsetResetPosition latest, the partition without a commit starts at its end.
    spec.auto_offset_reset = AutoOffsetReset::Latest;
    let mut s = open(&spec);
    let got = read(&mut s, 2, T);
    assert_eq!(
        got.iter().map(meta).map(|m| (m.1, m.2)).collect::<Vec<_>>(),
        [(0, 3), (0, 4)]
    );
}

/// Async commits: keep the committing source alive (it serves the commit) until a separate
/// consumer sees the offset.
fn wait_committed(b: &str, group: &str, topic: &str, p: i32, offset: i64, mut s: KafkaSource) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let mut out = Vec::new();
        s.poll(&mut out, 10).expect("poll");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, p);
        if let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(5)) {
            if got.elements().first().map(|e| e.offset()) == Some(Offset::Offset(offset)) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("offset {offset} of {topic} [{p}] was not committed for {group}");
}

#[test]
fn specific_offsets_with_fallback_for_missing_partitions() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 2);
    let recs: Vec<Rec<'_>> = (0..2)
        .flat_map(|p| {
            ["0", "1", "2", "3"]
                .into_iter()
                .map(move |v| rec(p, "k", v))
        })
        .collect();
    produce(&b, &t, &recs);
    let mut spec = ingress(
        &b,
        &[&t],
        KafkaStartupPosition::SpecificOffsets(vec![PartitionOffset {
            topic: t.clone(),
            partition: 0,
            offset: 2,
        }]),
    );
    spec.auto_offset_reset = AutoOffsetReset::Earliest;
    let mut s = open(&spec);
    let got: BTreeSet<(i32, i64)> = read(&mut s, 6, T)
        .iter()
        .map(|r| (meta(r).1, meta(r).2))
        .collect();
    let want: BTreeSet<(i32, i64)> = [(0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)].into();
    assert_eq!(got, want);

    spec.auto_offset_reset = AutoOffsetReset::Latest;
    let mut s = open(&spec);
    let got: Vec<(i32, i64)> = read(&mut s, 2, T)
        .iter()
        .map(|r| (meta(r).1, meta(r).2))
        .collect();
    assert_eq!(got, [(0, 2), (0, 3)]);
}

#[test]
fn at_timestamp_starts_at_the_first_record_at_or_after_it() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let base = now_ms() - 60_000;
    let recs: Vec<Rec<'_>> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, v)| Rec {
            timestamp: Some(base + 1000 * i as i64),
            ..rec(0, "k", v)
        })
        .collect();
    produce(&b, &t, &recs);
    let at = |ms: i64| {
        KafkaStartupPosition::AtTimestamp(Timestamp {
            epoch_millis: ms,
            text: format!("{ms} ms"),
        })
    };
    let mut s = open(&ingress(&b, &[&t], at(base + 1500)));
    assert_eq!(values(&read(&mut s, 2, T)), ["c", "d"]);

    // Exactly at a record's timestamp includes it.
    let mut s = open(&ingress(&b, &[&t], at(base + 1000)));
    assert_eq!(values(&read(&mut s, 3, T)), ["b", "c", "d"]);

    // After every record: starts at the end, and reads what comes next.
    let mut s = open(&ingress(&b, &[&t], at(now_ms() + 3_600_000)));
    assert_eq!(s.positions(), vec![(t.clone(), 0, 4)]);
    produce(&b, &t, &[rec(0, "k", "e")]);
    assert_eq!(values(&read(&mut s, 1, T)), ["e"]);
}

#[test]
fn checkpoint_positions_win_over_the_startup_position() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let recs: Vec<Rec<'_>> = ["a", "b", "c", "d"]
        .iter()
        .map(|v| rec(0, "k", v))
        .collect();
    produce(&b, &t, &recs);
    let mut s = open(&ingress(&b, &[&t], KafkaStartupPosition::Latest));
    s.seek_to(&[(t.clone(), 0, 1)]).expect("seek");
    assert_eq!(s.positions(), vec![(t.clone(), 0, 1)]);
    assert_eq!(values(&read(&mut s, 3, T)), ["b", "c", "d"]);
    assert_eq!(s.positions(), vec![(t.clone(), 0, 4)]);
}

/// Partitions created while the job was down are absent from its checkpoint: a restore
/// reads them from their beginning, not from the startup position (`latest` would skip
/// every record written to them meanwhile), and restores the others exactly.
#[test]
fn a_restore_reads_partitions_added_since_the_checkpoint_from_their_beginning() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 3);
    produce(&b, &t, &[rec(0, "k", "old-0"), rec(1, "k", "old-1")]);
    let spec = ingress(&b, &[&t], KafkaStartupPosition::Latest);
    let checkpoint = {
        let mut s = open(&spec);
        produce(&b, &t, &[rec(2, "k", "seen-2")]);
        assert_eq!(values(&read(&mut s, 1, T)), ["seen-2"]);
        s.positions()
    };
    assert_eq!(checkpoint.len(), 3);
    // While the job is down: the topic grows to 5 partitions, records land everywhere.
    add_partitions(&b, &t, 5);
    wait_for_partitions(&b, &t, 5);
    produce(
        &b,
        &t,
        &[
            rec(0, "k", "new-0"),
            rec(3, "k", "new-3a"),
            rec(3, "k", "new-3b"),
            rec(4, "k", "new-4"),
        ],
    );
    let mut s = open(&spec);
    s.seek_to(&checkpoint).expect("restore");
    let mut got = values(&read(&mut s, 4, Duration::from_secs(30)));
    got.sort();
    assert_eq!(got, ["new-0", "new-3a", "new-3b", "new-4"]);
    let positions = s.positions();
    assert_eq!(positions.len(), 5);
    assert!(positions.contains(&(t.clone(), 3, 2)) && positions.contains(&(t.clone(), 4, 1)));
}

// ---------------------------------------------------------------------------------------
// Source: routing, sharing, discovery, metadata

#[test]
fn multi_topic_records_carry_their_route() {
    let b = broker_or_skip!();
    let t0 = create_topic(&b, 1);
    let t1 = create_topic(&b, 1);
    produce(&b, &t0, &[rec(0, "a", "zero")]);
    produce(&b, &t1, &[rec(0, "b", "one"), rec(0, "c", "one")]);
    let mut s = open(&ingress(&b, &[&t0, &t1], KafkaStartupPosition::Earliest));
    let got = read(&mut s, 3, T);
    let mut routes: Vec<(String, usize)> = got.iter().map(|r| (meta(r).0, r.route)).collect();
    routes.sort();
    let mut want = vec![(t0.clone(), 0), (t1.clone(), 1), (t1.clone(), 1)];
    want.sort();
    assert_eq!(routes, want);
}

#[test]
fn partitions_are_spread_over_three_workers_exactly_once() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 6);
    let values_: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
    let recs: Vec<Rec<'_>> = values_
        .iter()
        .enumerate()
        .map(|(i, v)| rec((i % 6) as i32, "k", v))
        .collect();
    produce(&b, &t, &recs);
    let spec = ingress(&b, &[&t], KafkaStartupPosition::Earliest);
    let mut sources: Vec<KafkaSource> = (0..3)
        .map(|w| KafkaSource::open(&id(), &spec, w, 3).expect("open"))
        .collect();
    let mut all = Vec::new();
    let mut owned = BTreeSet::new();
    for (w, s) in sources.iter_mut().enumerate() {
        let mine: Vec<i32> = (0..6).filter(|p| partition_owner(&t, *p, 3) == w).collect();
        let got = read(s, mine.len() * 10, T);
        for r in &got {
            assert_eq!(
                partition_owner(&t, meta(r).1, 3),
                w,
                "worker {w} read a foreign partition"
            );
        }
        for (_, p, _) in s.positions() {
            assert!(owned.insert(p), "partition {p} assigned twice");
        }
        all.extend(got);
    }
    assert_eq!(owned, (0..6).collect::<BTreeSet<_>>());
    let mut got = values(&all);
    got.sort();
    let mut want = values_.clone();
    want.sort();
    assert_eq!(
        got, want,
        "the union of the workers' records is every record exactly once"
    );
}

#[test]
fn a_partition_added_later_is_read_from_its_beginning() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let mut s = open(&ingress(&b, &[&t], KafkaStartupPosition::Latest));
    add_partitions(&b, &t, 2);
    // Produced before the source can have noticed the partition: still read.
    produce(&b, &t, &[rec(1, "k", "p1-a"), rec(1, "k", "p1-b")]);
    let got = read(&mut s, 2, Duration::from_secs(30));
    assert_eq!(values(&got), ["p1-a", "p1-b"]);
    assert_eq!(s.positions(), vec![(t.clone(), 0, 0), (t.clone(), 1, 2)]);
}

#[test]
fn headers_and_timestamp_reach_the_metadata() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let ts = now_ms() - 5_000;
    produce(
        &b,
        &t,
        &[Rec {
            timestamp: Some(ts),
            headers: vec![
                ("trace", Some(b"abc")),
                ("flag", None),
                ("trace", Some(b"2")),
            ],
            ..rec(0, "key-1", "v")
        }],
    );
    let mut s = open(&ingress(&b, &[&t], KafkaStartupPosition::Earliest));
    let got = read(&mut s, 1, T);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key.as_deref(), Some(&b"key-1"[..]));
    assert_eq!(
        got[0].metadata.clone().into_ingress(),
        IngressMetadata::Kafka {
            topic: t.clone(),
            partition: 0,
            offset: 0,
            timestamp_ms: Some(ts),
            headers: vec![
                ("trace".into(), Some(b"abc".to_vec())),
                ("flag".into(), None),
                ("trace".into(), Some(b"2".to_vec())),
            ],
        }
    );
}

#[test]
fn missing_keys_bad_keys_and_tombstones_pass_through_for_the_router() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let bad_key: &[u8] = &[0xff, 0xfe];
    produce(
        &b,
        &t,
        &[
            Rec {
                key: None,
                ..rec(0, "", "no-key")
            },
            Rec {
                key: Some(bad_key),
                ..rec(0, "", "bad-key")
            },
            Rec {
                value: None,
                ..rec(0, "tomb", "")
            },
        ],
    );
    let mut s = open(&ingress(&b, &[&t], KafkaStartupPosition::Earliest));
    let got = read(&mut s, 3, T);
    let kv: Vec<KeyValue> = got
        .iter()
        .map(|r| (r.key.as_ref().map(|k| k.to_vec()), r.value.clone()))
        .collect();
    assert_eq!(
        kv,
        [
            (None, Some(b"no-key".to_vec())),
            (Some(bad_key.to_vec()), Some(b"bad-key".to_vec())),
            (Some(b"tomb".to_vec()), None),
        ]
    );
    assert_eq!(
        s.stats().skipped,
        0,
        "the engine's router applies the skip policy, not the source"
    );
}

#[test]
fn properties_pass_through_and_owned_keys_are_kept() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let mut spec = ingress(&b, &[&t], KafkaStartupPosition::Earliest);
    spec.properties = Properties(vec![
        ("client.id".into(), "statefun-test-client".into()),
        ("fetch.wait.max.ms".into(), "77".into()),
        ("enable.auto.commit".into(), "true".into()),
        ("group.id".into(), "not-the-group".into()),
    ]);
    let s = open(&spec);
    assert_eq!(
        s.effective_property("client.id").as_deref(),
        Some("statefun-test-client")
    );
    assert_eq!(
        s.effective_property("fetch.wait.max.ms").as_deref(),
        Some("77")
    );
    assert_eq!(
        s.effective_property("enable.auto.commit").as_deref(),
        Some("false")
    );
    assert_eq!(
        s.effective_property("group.id"),
        Some(spec.consumer_group_id.clone())
    );
    assert_eq!(
        s.effective_property("isolation.level").as_deref(),
        Some("read_committed")
    );
    assert_eq!(s.effective_property("bootstrap.servers"), Some(b.clone()));

    spec.properties = Properties(vec![("isolation.level".into(), "read_uncommitted".into())]);
    let s = open(&spec);
    assert_eq!(
        s.effective_property("isolation.level").as_deref(),
        Some("read_uncommitted")
    );

    spec.properties = Properties(vec![("no.such.property".into(), "1".into())]);
    let err = KafkaSource::open(&id(), &spec, 0, 1).expect_err("unknown property");
    let text = err.to_string();
    assert!(
        text.contains("test/kafka-in") && text.contains("no.such.property"),
        "{text}"
    );
}

#[test]
fn arriving_records_wake_the_engine() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 2);
    let mut s = open(&ingress(&b, &[&t], KafkaStartupPosition::Latest));
    let wakes = Arc::new(AtomicUsize::new(0));
    let w = wakes.clone();
    s.set_waker(Arc::new(move || {
        w.fetch_add(1, Ordering::SeqCst);
    }));
    let mut out = Vec::new();
    s.poll(&mut out, 100).expect("poll");
    let before = wakes.load(Ordering::SeqCst);
    produce(&b, &t, &[rec(1, "k", "wake")]);
    let deadline = Instant::now() + T;
    while wakes.load(Ordering::SeqCst) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        wakes.load(Ordering::SeqCst) > before,
        "no wake-up for an arriving record"
    );
    assert_eq!(values(&read(&mut s, 1, T)), ["wake"]);
}

#[test]
fn open_fails_with_the_ingress_id_when_brokers_are_unreachable() {
    // No broker needed: port 9 on localhost refuses connections.
    let mut spec = ingress("127.0.0.1:9", &["x"], KafkaStartupPosition::Latest);
    spec.properties = Properties(vec![(
        "socket.connection.setup.timeout.ms".into(),
        "1000".into(),
    )]);
    let err = KafkaSource::open(&id(), &spec, 0, 1).expect_err("unreachable");
    let text = err.to_string();
    assert!(
        text.contains("test/kafka-in") && text.contains("127.0.0.1:9"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Sink

fn egress(b: &str, semantic: KafkaDeliverySemantic, props: &[(&str, &str)]) -> KafkaEgress {
    KafkaEgress {
        address: b.to_string(),
        delivery_semantic: semantic,
        properties: Properties(
            props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        cluster: None,
        properties_file: None,
    }
}

fn sink_id() -> TypeName {
    TypeName::parse("test/kafka-out").expect("typename")
}

fn out_record(topic: &str, key: &str, value: &str, partition: Option<i32>) -> EgressMessage {
    let record = KafkaProducerRecord {
        key: key.to_string(),
        value_bytes: value.as_bytes().to_vec(),
        topic: topic.to_string(),
        headers: vec![kafka_producer_record::Header {
            key: "h".into(),
            value: value.as_bytes().to_vec(),
        }],
        partition,
    };
    EgressMessage {
        egress: sink_id(),
        value: record.to_typed_value(),
    }
}

/// Everything in `topic` read with a plain read_committed consumer: (partition, key, value,
/// header `h`).
fn read_back(
    b: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<(i32, String, String, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("group.id", unique_name("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + T;
    let mut quiet_until = None;
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or(b"")).into_owned();
                let h = m
                    .headers()
                    .and_then(|hs| hs.iter().find(|h| h.key == "h").map(|h| text(h.value)))
                    .unwrap_or_default();
                out.push((m.partition(), text(m.key()), text(m.payload()), h));
            }
            Some(Err(e)) => panic!("read back: {e}"),
            None => {}
        }
        if out.len() >= n {
            let q = *quiet_until.get_or_insert(Instant::now() + Duration::from_millis(700));
            if Instant::now() > q {
                break;
            }
        }
    }
    out
}

#[test]
fn sink_at_least_once_delivers_exactly_what_was_written() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 2);
    let mut sink = KafkaSink::open(
        &sink_id(),
        &egress(
            &b,
            KafkaDeliverySemantic::AtLeastOnce,
            &[("client.id", "sink-test"), ("linger.ms", "5")],
        ),
    )
    .expect("open sink");
    assert_eq!(
        sink.effective_property("client.id").as_deref(),
        Some("sink-test")
    );
    assert_eq!(sink.effective_property("linger.ms").as_deref(), Some("5"));
    let msgs: Vec<EgressMessage> = (0..20)
        .map(|i| out_record(&t, &format!("k{i}"), &format!("v{i}"), Some(i % 2)))
        .collect();
    sink.write(&msgs[..10]).expect("write");
    sink.write(&msgs[10..]).expect("write");
    sink.flush().expect("flush");
    assert_eq!(sink.acknowledged(), 20);
    let mut got = read_back(&b, &t, 2, 20);
    got.sort();
    let mut want: Vec<(i32, String, String, String)> = (0..20)
        .map(|i| (i % 2, format!("k{i}"), format!("v{i}"), format!("v{i}")))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn sink_none_does_not_wait_but_delivers() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let mut sink = KafkaSink::open(&sink_id(), &egress(&b, KafkaDeliverySemantic::None, &[]))
        .expect("open sink");
    sink.write(&[out_record(&t, "k", "fire", None)])
        .expect("write");
    sink.flush().expect("flush");
    let got = read_back(&b, &t, 1, 1);
    assert_eq!(got, [(0, "k".into(), "fire".into(), "fire".into())]);
}

#[test]
fn sink_error_for_an_unknown_topic_names_sink_and_topic() {
    let b = broker_or_skip!();
    let missing = unique_name("missing");
    let mut sink = KafkaSink::open(
        &sink_id(),
        &egress(
            &b,
            KafkaDeliverySemantic::AtLeastOnce,
            &[
                ("topic.metadata.propagation.max.ms", "1000"),
                ("message.timeout.ms", "5000"),
            ],
        ),
    )
    .expect("open sink");
    let started = Instant::now();
    let result = sink
        .write(&[out_record(&missing, "k", "v", None)])
        .and_then(|()| sink.flush());
    let text = result.expect_err("unknown topic must fail").to_string();
    assert!(text.contains("test/kafka-out"), "{text}");
    assert!(text.contains(&missing), "{text}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(sink.acknowledged(), 0);
}

// ---------------------------------------------------------------------------------------
// Sink: exactly-once

/// An exactly-once egress with its own progress topic and `transactional.id` prefix, so
/// that tests running at the same time neither share progress nor fence each other.
struct ExactlyOnce {
    spec: KafkaEgress,
    progress: String,
    prefix: String,
}

fn exactly_once(b: &str) -> ExactlyOnce {
    let progress = unique_name("progress");
    let prefix = unique_name("txn");
    let spec = egress(
        b,
        KafkaDeliverySemantic::ExactlyOnce {
            transaction_timeout: Duration::from_secs(60),
        },
        &[
            ("statefun.progress.topic", progress.as_str()),
            ("transactional.id", prefix.as_str()),
            ("linger.ms", "5"),
        ],
    );
    ExactlyOnce {
        spec,
        progress,
        prefix,
    }
}

impl ExactlyOnce {
    fn open(&self, worker: usize, resume: bool) -> KafkaSink {
        KafkaSink::open_exactly_once(&sink_id(), &self.spec, worker, resume)
            .expect("open exactly-once sink")
    }
}

/// (partition, key, value, header `h`) as `read_back` returns them, for `out_record`s.
fn expected(records: &[(i32, &str, &str)]) -> Vec<(i32, String, String, String)> {
    let mut out: Vec<(i32, String, String, String)> = records
        .iter()
        .map(|(p, k, v)| (*p, k.to_string(), v.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<(i32, String, String, String)>) -> Vec<(i32, String, String, String)> {
    v.sort();
    v
}

#[test]
fn sink_exactly_once_commits_records_with_their_checkpoint() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 2);
    let eo = exactly_once(&b);
    let mut sink = eo.open(0, false);
    assert_eq!(
        sink.delivered(),
        None,
        "a new progress topic has no progress"
    );
    assert_eq!(
        sink.effective_property("transactional.id"),
        Some(format!("{}-test.kafka-out-0", eo.prefix))
    );
    assert_eq!(
        sink.effective_property("enable.idempotence").as_deref(),
        Some("true")
    );
    assert_eq!(
        sink.effective_property("transaction.timeout.ms").as_deref(),
        Some("60000")
    );
    assert_eq!(sink.effective_property("linger.ms").as_deref(), Some("5"));

    let msgs: Vec<EgressMessage> = (0..10)
        .map(|i| out_record(&t, &format!("k{i}"), &format!("v{i}"), Some(i % 2)))
        .collect();
    sink.write(&msgs[..4]).expect("write");
    sink.write(&msgs[4..]).expect("write");
    sink.flush().expect("flush is a no-op for exactly-once");
    sink.commit(5).expect("commit");
    assert_eq!(sink.delivered(), Some(5));
    assert_eq!(sink.acknowledged(), 10);

    let names: Vec<(String, String)> = (0..10)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let want: Vec<(i32, &str, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, (k, v))| ((i % 2) as i32, k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        sorted(read_back(&b, &t, 2, 10)),
        expected(&want),
        "every committed record exactly once"
    );

    // The progress record: key the transactional id, value the checkpoint, committed.
    assert_eq!(
        read_back(&b, &eo.progress, 1, 1),
        [(
            0,
            format!("{}-test.kafka-out-0", eo.prefix),
            "5".into(),
            String::new()
        )]
    );
    // The progress topic was created with one partition and compaction.
    wait_for_partitions(&b, &eo.progress, 1);
    assert_eq!(
        topic_config(&b, &eo.progress, "cleanup.policy").as_deref(),
        Some("compact")
    );

    drop(sink);
    let reopened = eo.open(0, true);
    assert_eq!(reopened.delivered(), Some(5));
}

fn topic_config(b: &str, topic: &str, key: &str) -> Option<String> {
    use rdkafka::admin::ResourceSpecifier;
    let admin = admin(b);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(20)));
    let res = futures_executor::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts),
    )
    .expect("describe configs");
    let resource = res.into_iter().next()?.ok()?;
    resource.get(key).and_then(|e| e.value.clone())
}

#[test]
fn sink_exactly_once_uncommitted_records_are_never_visible() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let eo = exactly_once(&b);

    // Checkpoint 3 commits; the next checkpoint's records are written, then the sink goes
    // away without committing (dropping aborts the transaction).
    let mut sink = eo.open(0, false);
    sink.write(&[out_record(&t, "a", "committed-3", None)])
        .expect("write");
    sink.commit(3).expect("commit 3");
    sink.write(&[
        out_record(&t, "b", "dropped-1", None),
        out_record(&t, "b", "dropped-2", None),
    ])
    .expect("write");
    // Let the broker acknowledge them, so they are in the log (only not committed).
    wait_acknowledged(&mut sink, 3);
    drop(sink);

    let mut sink = eo.open(0, true);
    assert_eq!(
        sink.delivered(),
        Some(3),
        "the uncommitted checkpoint is not delivered"
    );

    // A crash without any abort: the transaction stays open until the restarted producer
    // (same transactional.id) fences the old one and aborts it.
    sink.write(&[out_record(&t, "c", "crashed", None)])
        .expect("write");
    wait_acknowledged(&mut sink, 1);
    let mut restarted = eo.open(0, true);
    assert_eq!(restarted.delivered(), Some(3));
    drop(sink); // fenced: its drop cannot abort (and must not panic)

    restarted
        .write(&[out_record(&t, "d", "committed-4", None)])
        .expect("write");
    restarted.commit(4).expect("commit 4");
    assert_eq!(restarted.delivered(), Some(4));

    // The aborted records lie before `committed-4` in the partition: a read_committed
    // reader that got to it has passed them.
    assert_eq!(
        sorted(read_back(&b, &t, 1, 2)),
        expected(&[(0, "a", "committed-3"), (0, "d", "committed-4")])
    );
    // Raw (read_uncommitted) the aborted records are there: they were written, not lost.
    assert_eq!(read_uncommitted(&b, &t, 5).len(), 5);

    drop(restarted);
    assert_eq!(eo.open(0, true).delivered(), Some(4));
}

/// Serves delivery reports (`flush` does only that for exactly-once) until `n` records are
/// acknowledged by the broker.
fn wait_acknowledged(sink: &mut KafkaSink, n: u64) {
    let deadline = Instant::now() + T;
    while sink.acknowledged() < n && Instant::now() < deadline {
        sink.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sink.acknowledged(), n, "records acknowledged");
}

/// Values of every record in partition 0 of `topic`, including those of aborted
/// transactions (control records are never returned).
fn read_uncommitted(b: &str, topic: &str, n: usize) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("group.id", unique_name("raw"))
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + T;
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or(b"")).into_owned());
        }
    }
    out
}

#[test]
fn sink_exactly_once_a_newer_producer_fences_the_older() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let eo = exactly_once(&b);
    let mut a = eo.open(0, false);
    a.write(&[out_record(&t, "a", "from-a", None)])
        .expect("write");
    // Same egress and worker: same transactional.id.
    let mut b_sink = eo.open(0, true);
    let started = Instant::now();
    let text = a.commit(1).expect_err("A was fenced").to_string();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(text.contains("test/kafka-out"), "{text}");
    assert!(
        text.contains(&format!("{}-test.kafka-out-0", eo.prefix)),
        "{text}"
    );
    assert!(text.contains("checkpoint 1 was not committed"), "{text}");
    assert_eq!(a.delivered(), None);
    // A stays unusable, with an error rather than a panic.
    let text = a
        .write(&[out_record(&t, "a", "again", None)])
        .expect_err("fenced producer")
        .to_string();
    assert!(text.contains("test/kafka-out"), "{text}");
    assert!(a.commit(2).is_err());
    drop(a);

    b_sink
        .write(&[out_record(&t, "b", "from-b", None)])
        .expect("write");
    b_sink.commit(2).expect("commit");
    assert_eq!(b_sink.delivered(), Some(2));
    assert_eq!(
        sorted(read_back(&b, &t, 1, 1)),
        expected(&[(0, "b", "from-b")])
    );
    drop(b_sink);
    assert_eq!(eo.open(0, true).delivered(), Some(2));
}

#[test]
fn sink_exactly_once_workers_keep_separate_progress() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let eo = exactly_once(&b);
    // Both workers open at the same time: both may try to create the progress topic.
    let (mut w0, mut w1) = std::thread::scope(|s| {
        let h0 = s.spawn(|| eo.open(0, false));
        let h1 = s.spawn(|| eo.open(1, false));
        (
            h0.join().expect("worker 0 opens"),
            h1.join().expect("worker 1 opens"),
        )
    });
    assert_eq!(
        w1.effective_property("transactional.id"),
        Some(format!("{}-test.kafka-out-1", eo.prefix))
    );
    w0.write(&[out_record(&t, "w0", "seven", None)])
        .expect("write");
    w0.commit(7).expect("commit 7");
    // Worker 1 wrote nothing for its checkpoint: the commit still records progress.
    w1.commit(9).expect("commit 9");
    w0.write(&[out_record(&t, "w0", "ten", None)])
        .expect("write");
    w0.commit(10).expect("commit 10");
    // Worker 1 has a transaction open while worker 0 reopens.
    w1.write(&[out_record(&t, "w1", "open", None)])
        .expect("write");
    drop(w0);
    assert_eq!(eo.open(0, true).delivered(), Some(10));
    // Dropping aborts the open transaction, without waiting for its record's acknowledgement
    // (librdkafka needs delivery reports served meanwhile) or for the broker's timeout.
    let started = Instant::now();
    drop(w1);
    assert!(started.elapsed() < Duration::from_secs(5), "abort on drop");
    assert_eq!(eo.open(1, true).delivered(), Some(9));
    // The abort ended the transaction: the topic's last stable offset reaches its end.
    let end = |isolation: &str| {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("isolation.level", isolation)
            .create()
            .expect("consumer");
        c.fetch_watermarks(&t, 0, Duration::from_secs(10))
            .expect("watermarks")
            .1
    };
    assert_eq!(end("read_committed"), end("read_uncommitted"));
    assert_eq!(eo.open(2, true).delivered(), None);
    assert_eq!(
        sorted(read_back(&b, &t, 1, 2)),
        expected(&[(0, "w0", "seven"), (0, "w0", "ten")])
    );
}

#[test]
fn sink_exactly_once_reads_progress_behind_another_open_transaction() {
    let b = broker_or_skip!();
    let eo = exactly_once(&b);
    let mut w0 = eo.open(0, false); // creates the progress topic
                                    // Another transactional producer (think: a worker that crashed while committing) has a
                                    // transaction open on the progress topic, in front of worker 0's next progress record.
    let other: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("transactional.id", unique_name("other"))
        .create()
        .expect("producer");
    other.init_transactions(T).expect("init");
    other.begin_transaction().expect("begin");
    other
        .send(
            BaseRecord::to(&eo.progress)
                .partition(0)
                .key("other/0")
                .payload("1"),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    other.flush(T).expect("flush");
    w0.commit(7).expect("commit");
    drop(w0);
    // Until the other transaction ends, the last stable offset stays in front of worker 0's
    // committed record; a reader that stopped there would report no progress.
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        other
            .commit_transaction(T)
            .expect("commit the other transaction");
    });
    let started = Instant::now();
    let reopened = eo.open(0, true);
    assert_eq!(reopened.delivered(), Some(7));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "open waited for the other transaction"
    );
    committer.join().expect("committer");
}

#[test]
fn sink_exactly_once_a_failed_write_aborts_instead_of_committing() {
    let b = broker_or_skip!();
    let t = create_topic(&b, 1);
    let eo = exactly_once(&b);
    let mut sink = eo.open(0, false);
    sink.write(&[out_record(&t, "a", "partial", None)])
        .expect("write");
    let not_a_record = EgressMessage {
        egress: sink_id(),
        value: statefun_sdk::TypedValue::new("io.statefun.types/string", vec![10, 1, b'x']),
    };
    sink.write(&[not_a_record])
        .expect_err("not a producer record");
    // Committing would deliver half a checkpoint: the transaction is aborted instead.
    let text = sink.commit(1).expect_err("partial checkpoint").to_string();
    assert!(text.contains("test/kafka-out"), "{text}");
    assert!(text.contains("checkpoint 1 was not committed"), "{text}");
    assert_eq!(sink.delivered(), None);
    // The sink goes on with the next checkpoint.
    sink.write(&[out_record(&t, "b", "whole", None)])
        .expect("write");
    sink.commit(2).expect("commit 2");
    assert_eq!(sink.delivered(), Some(2));
    assert_eq!(
        sorted(read_back(&b, &t, 1, 1)),
        expected(&[(0, "b", "whole")])
    );
}
