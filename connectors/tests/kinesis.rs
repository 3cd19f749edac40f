//! The Kinesis connectors against the `kinesis-local` emulator.
//!
//! Start it with `ci/install-kinesis.sh`; tests read `KINESIS_ENDPOINT` or
//! `$KINESIS_HOME/endpoint` (default `~/.cache/statefun-rs/kinesis/endpoint`).
//! Without an emulator each test prints SKIPPED and passes, except under CI
//! (`CI` set), where a missing emulator fails. Every test creates its own
//! uniquely named streams. Throttling, partial `PutRecords` failures, an
//! expired iterator and refused credentials are tested against a tiny fake
//! endpoint ([`statefun_testkit::kinesis::fake`]), which needs no emulator.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use statefun_connectors::kinesis::{
    content_digest, split_record_id, KinesisSink, KinesisSinkOptions, KinesisSource,
    KinesisSourceOptions, RecordId, SHARD_END,
};
use statefun_connectors::sink::SinkStats;
use statefun_connectors::{Sink, Source, SourceRecord};
use statefun_module::{
    parse_timestamp, AwsCredentials, AwsRegion, KinesisEgress, KinesisIngress,
    KinesisStartupPosition, KinesisStream, Properties, Secret, TypeName,
};
use statefun_sdk::{EgressMessage, IngressMetadata, KinesisEgressMessage, TypedValue};

use statefun_testkit::kinesis::{fake, Emulator, REGION};
use statefun_testkit::unique_name;

mod common;
use common::{read_for, read_n};

/// The emulator's client plus the connector specs the tests open on it.
struct Emu(Emulator);

impl std::ops::Deref for Emu {
    type Target = Emulator;
    fn deref(&self) -> &Emulator {
        &self.0
    }
}

impl Emu {
    fn new() -> Option<Emu> {
        Emulator::connect().map(Emu)
    }

    fn arn(name: &str) -> String {
        statefun_testkit::kinesis::arn(name)
    }

    fn create(&self, name: &str, shards: i32) {
        self.create_stream(name, shards);
    }

    fn region(&self) -> AwsRegion {
        AwsRegion::CustomEndpoint {
            endpoint: self.endpoint.clone(),
            id: REGION.to_string(),
        }
    }

    fn ingress(
        &self,
        streams: &[(&str, bool, &str)],
        start: KinesisStartupPosition,
    ) -> KinesisIngress {
        KinesisIngress {
            aws_region: self.region(),
            aws_credentials: basic(),
            startup_position: start,
            streams: streams
                .iter()
                .map(|(name, by_arn, value_type)| KinesisStream {
                    stream: name.to_string(),
                    arn: by_arn.then(|| Emu::arn(name)),
                    value_type: TypeName::parse(value_type).expect("type"),
                    targets: vec![],
                })
                .collect(),
            client_config_properties: Properties(vec![("SocketTimeout".into(), "5000".into())]),
        }
    }

    fn egress(&self, stream: &str, max_outstanding: usize) -> KinesisEgress {
        KinesisEgress {
            aws_region: self.region(),
            aws_credentials: basic(),
            stream_name: stream.to_string(),
            max_outstanding_records: max_outstanding,
            client_config_properties: Properties::default(),
            record_ids: false,
        }
    }
}

fn basic() -> AwsCredentials {
    AwsCredentials::Basic {
        access_key_id: "test".into(),
        secret_access_key: Secret::new("test"),
    }
}

fn fast() -> KinesisSourceOptions {
    KinesisSourceOptions {
        shard_discovery_interval: Duration::from_millis(500),
        idle_poll_interval: Duration::from_millis(200),
        ..KinesisSourceOptions::default()
    }
}

fn meta(r: &SourceRecord) -> (String, String, String, Option<i64>) {
    match r.metadata.record() {
        Some(IngressMetadata::Kinesis {
            stream,
            shard_id,
            sequence_number,
            approximate_arrival_ms,
            sub_sequence_number,
            explicit_hash_key,
        }) => {
            // Plain records: no KPL sub-record index, no explicit hash key (GetRecords has none).
            assert_eq!((sub_sequence_number, explicit_hash_key), (&None, &None));
            (
                stream.clone(),
                shard_id.clone(),
                sequence_number.clone(),
                *approximate_arrival_ms,
            )
        }
        other => panic!("not Kinesis metadata: {other:?}"),
    }
}

fn value(r: &SourceRecord) -> String {
    String::from_utf8(r.value.clone().unwrap_or_default()).expect("utf8")
}

#[test]
fn two_streams_route_with_metadata() {
    let Some(emu) = Emu::new() else { return };
    let a = unique_name("routes-a");
    let b = unique_name("routes-b");
    emu.create(&a, 2);
    emu.create(&b, 2);
    let mut expected = BTreeMap::new();
    for i in 0..20 {
        let (shard, seq) = emu.put(&a, &format!("ka{i}"), format!("a{i}").as_bytes());
        expected.insert(
            format!("a{i}"),
            (Emu::arn(&a), format!("ka{i}"), shard, seq, 0),
        );
        let (shard, seq) = emu.put(&b, &format!("kb{i}"), format!("b{i}").as_bytes());
        expected.insert(
            format!("b{i}"),
            (b.clone(), format!("kb{i}"), shard, seq, 1),
        );
    }
    let spec = emu.ingress(
        &[
            (&a, true, "example/a"),
            (&b, false, "io.statefun.types/string"),
        ],
        KinesisStartupPosition::TrimHorizon,
    );
    let mut source = KinesisSource::open_with("t/routes", &spec, 0, 1, fast()).expect("open");
    let records = read_n(&mut source, 40, Duration::from_secs(30));
    let extra = read_for(&mut source, Duration::from_millis(800));
    assert!(extra.is_empty(), "unexpected extra records: {extra:?}");
    let mut shards_seen = HashSet::new();
    for r in &records {
        let v = value(r);
        let (stream, key, shard, seq, route) =
            expected.remove(&v).expect("record read twice or unknown");
        let (m_stream, m_shard, m_seq, arrival) = meta(r);
        assert_eq!(r.route, route, "{v}");
        assert_eq!(
            m_stream, stream,
            "{v}: routing key is the ARN when given, else the name"
        );
        assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
        assert_eq!((m_shard.clone(), m_seq), (shard, seq));
        assert!(
            arrival.is_some_and(|ms| ms > 1_600_000_000_000),
            "{arrival:?}"
        );
        shards_seen.insert((m_stream, m_shard));
    }
    assert!(expected.is_empty());
    assert_eq!(
        shards_seen.len(),
        4,
        "both shards of both streams carried records"
    );
    // Positions: the last sequence number handed out per shard.
    let positions = source.positions();
    assert_eq!(positions.len(), 4, "{positions:?}");
    assert_eq!(source.stats().records, 40);
}

#[test]
fn shards_spread_over_three_workers_exactly_once() {
    let Some(emu) = Emu::new() else { return };
    let s = unique_name("spread");
    emu.create(&s, 6);
    for i in 0..90 {
        emu.put(&s, &format!("k{i}"), format!("v{i}").as_bytes());
    }
    let spec = emu.ingress(
        &[(&s, true, "example/v")],
        KinesisStartupPosition::TrimHorizon,
    );
    let mut sources: Vec<KinesisSource> = (0..3)
        .map(|w| KinesisSource::open_with("t/spread", &spec, w, 3, fast()).expect("open"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut per_worker: Vec<Vec<SourceRecord>> = vec![Vec::new(); 3];
    while per_worker.iter().map(Vec::len).sum::<usize>() < 90 {
        assert!(Instant::now() < deadline, "timed out");
        for (w, source) in sources.iter_mut().enumerate() {
            source.poll(&mut per_worker[w], 100).expect("poll");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (w, source) in sources.iter_mut().enumerate() {
        per_worker[w].extend(read_for(source, Duration::from_millis(300)));
    }
    let mut all = BTreeSet::new();
    let mut shard_owner = BTreeMap::new();
    for (w, records) in per_worker.iter().enumerate() {
        for r in records {
            assert!(all.insert(value(r)), "{} read twice", value(r));
            let (_, shard, _, _) = meta(r);
            let prev = shard_owner.insert(shard.clone(), w);
            assert!(
                prev.is_none() || prev == Some(w),
                "shard {shard} read by two workers"
            );
        }
    }
    assert_eq!(all.len(), 90);
    let workers: HashSet<usize> = shard_owner.values().copied().collect();
    assert!(
        workers.len() >= 2,
        "6 shards should spread over workers: {shard_owner:?}"
    );
}

#[test]
fn startup_positions() {
    let Some(emu) = Emu::new() else { return };
    let s = unique_name("startup");
    emu.create(&s, 2);
    for i in 0..5 {
        emu.put(&s, &format!("k{i}"), format!("before{i}").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(1500));
    let between = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1500));

    let open = |start| {
        let spec = emu.ingress(&[(&s, false, "example/v")], start);
        KinesisSource::open_with("t/startup", &spec, 0, 1, fast()).expect("open")
    };
    // latest: start reading, wait until iterators exist, then put.
    let mut latest = open(KinesisStartupPosition::Latest);
    assert!(read_for(&mut latest, Duration::from_millis(1500)).is_empty());
    for i in 0..5 {
        emu.put(&s, &format!("k{i}"), format!("after{i}").as_bytes());
    }
    let values = |rs: Vec<SourceRecord>| -> BTreeSet<String> { rs.iter().map(value).collect() };
    let after: BTreeSet<String> = (0..5).map(|i| format!("after{i}")).collect();
    let before: BTreeSet<String> = (0..5).map(|i| format!("before{i}")).collect();
    let got = values(read_n(&mut latest, 5, Duration::from_secs(20)));
    assert_eq!(got, after, "latest reads only records put after start");

    let mut trim = open(KinesisStartupPosition::TrimHorizon);
    let got = values(read_n(&mut trim, 10, Duration::from_secs(20)));
    assert_eq!(got, before.union(&after).cloned().collect());

    let text = format!("{}", between);
    let ts = parse_timestamp(&chrono_like_iso(between))
        .unwrap_or_else(|e| panic!("timestamp {text}: {e}"));
    assert_eq!(ts.epoch_millis, between);
    let mut at = open(KinesisStartupPosition::AtTimestamp(ts));
    let got = values(read_n(&mut at, 5, Duration::from_secs(20)));
    assert!(read_for(&mut at, Duration::from_millis(800)).is_empty());
    assert_eq!(
        got, after,
        "at-timestamp reads records at or after the timestamp"
    );
}

/// `yyyy-MM-ddTHH:mm:ss.SSSZ` for epoch milliseconds (UTC), without a date crate.
fn chrono_like_iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn restore_reads_after_the_recorded_sequence_number() {
    let Some(emu) = Emu::new() else { return };
    let s = unique_name("restore");
    emu.create(&s, 1);
    for i in 0..10 {
        emu.put(&s, "k", format!("v{i}").as_bytes());
    }
    let spec = emu.ingress(
        &[(&s, false, "example/v")],
        KinesisStartupPosition::TrimHorizon,
    );
    let mut first = KinesisSource::open_with("t/restore", &spec, 0, 1, fast()).expect("open");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 4 {
        assert!(Instant::now() < deadline);
        let want = 4 - got.len();
        first.poll(&mut got, want).expect("poll");
        std::thread::sleep(Duration::from_millis(20));
    }
    let positions = first.positions();
    assert_eq!(positions.len(), 1);
    assert_eq!(
        (positions[0].sequence.clone(), positions[0].sub_sequence),
        (meta(&got[3]).2, None),
        "position = last record handed out"
    );
    drop(first);
    let mut second = KinesisSource::open_with("t/restore", &spec, 0, 1, fast()).expect("open");
    second.seek_to(&positions).expect("seek");
    let rest = read_n(&mut second, 6, Duration::from_secs(20));
    assert!(read_for(&mut second, Duration::from_millis(800)).is_empty());
    let rest: Vec<String> = rest.iter().map(value).collect();
    assert_eq!(rest, (4..10).map(|i| format!("v{i}")).collect::<Vec<_>>());
    // seek_to after reading started is refused.
    let err = second.seek_to(&positions).expect_err("late seek");
    assert!(err.to_string().contains("before the first poll"), "{err}");
}

/// A shard the job owned from its start but never read a record from keeps the job's
/// startup position across a restore: a `latest` job neither re-reads the history it
/// started after (300 records written before its first start) nor skips what arrived
/// while it was down.
#[test]
fn restore_keeps_the_startup_position_of_shards_never_read() {
    let Some(emu) = Emu::new() else { return };
    let s = unique_name("idle");
    emu.create(&s, 2);
    let shards = emu.shard_ids(&s);
    // A key for each shard (the emulator hashes keys as Kinesis does).
    let key_for = |shard: &str| -> String {
        (0..1000)
            .map(|i| format!("key{i}"))
            .find(|k| emu.put(&s, k, b"probe").0 == shard)
            .expect("a key for the shard")
    };
    let (busy, idle) = (key_for(&shards[0]), key_for(&shards[1]));
    let history: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (idle.clone(), format!("old{i}").into_bytes()))
        .collect();
    emu.put_all(&s, &history);
    std::thread::sleep(Duration::from_millis(50));
    let spec = emu.ingress(&[(&s, false, "example/v")], KinesisStartupPosition::Latest);
    let mut first = KinesisSource::open_with("t/idle", &spec, 0, 1, fast()).expect("open");
    // Let the readers start at LATEST before writing what the job must read.
    assert!(read_for(&mut first, Duration::from_millis(800)).is_empty());
    for i in 0..5 {
        emu.put(&s, &busy, format!("new{i}").as_bytes());
    }
    let got: Vec<String> = read_n(&mut first, 5, Duration::from_secs(20))
        .iter()
        .map(value)
        .collect();
    assert_eq!(got, (0..5).map(|i| format!("new{i}")).collect::<Vec<_>>());
    let checkpoint = first.positions();
    assert_eq!(
        checkpoint.len(),
        2,
        "the idle shard has a position too: {checkpoint:?}"
    );
    drop(first);
    // While the job is down, the idle shard gets records.
    for i in 0..3 {
        emu.put(&s, &idle, format!("down{i}").as_bytes());
    }
    let mut second = KinesisSource::open_with("t/idle", &spec, 0, 1, fast()).expect("open");
    second.seek_to(&checkpoint).expect("restore");
    let mut got: Vec<String> = read_n(&mut second, 3, Duration::from_secs(20))
        .iter()
        .map(value)
        .collect();
    got.extend(
        read_for(&mut second, Duration::from_millis(1500))
            .iter()
            .map(value),
    );
    assert_eq!(
        got,
        ["down0", "down1", "down2"],
        "no old record, nothing lost"
    );
}

#[test]
fn split_shard_mid_read_loses_nothing() {
    let Some(emu) = Emu::new() else { return };
    let s = unique_name("split");
    emu.create(&s, 1);
    for i in 0..20 {
        emu.put(&s, &format!("k{i}"), format!("p{i}").as_bytes());
    }
    let spec = emu.ingress(
        &[(&s, true, "example/v")],
        KinesisStartupPosition::TrimHorizon,
    );
    let mut source = KinesisSource::open_with("t/split", &spec, 0, 1, fast()).expect("open");
    let mut got = read_n(&mut source, 20, Duration::from_secs(20));
    let parent = emu.shard_ids(&s).remove(0);
    emu.rt
        .block_on(
            emu.client
                .split_shard()
                .stream_name(&s)
                .shard_to_split(&parent)
                .new_starting_hash_key("170141183460469231731687303715884105728")
                .send(),
        )
        .expect("split");
    emu.wait_active(&s);
    for i in 0..40 {
        emu.put(&s, &format!("k{i}"), format!("c{i}").as_bytes());
    }
    got.extend(read_n(&mut source, 40, Duration::from_secs(30)));
    assert!(read_for(&mut source, Duration::from_millis(800)).is_empty());
    let values: BTreeSet<String> = got.iter().map(value).collect();
    assert_eq!(values.len(), 60, "every record exactly once");
    let shards: BTreeSet<String> = got.iter().map(|r| meta(r).1).collect();
    assert_eq!(shards.len(), 3, "parent and both children: {shards:?}");
    // The parent was read to its end before any child record.
    let last_parent = got
        .iter()
        .rposition(|r| meta(r).1 == parent)
        .expect("parent");
    let first_child = got.iter().position(|r| meta(r).1 != parent).expect("child");
    assert!(last_parent < first_child);
    let positions = source.positions();
    assert!(
        positions
            .iter()
            .any(|p| p.shard == parent && p.sequence == SHARD_END),
        "{positions:?}"
    );
}

fn egress_record(
    egress: &TypeName,
    stream: Option<&str>,
    key: &str,
    value: &str,
    ehk: Option<&str>,
) -> EgressMessage {
    let mut m = KinesisEgressMessage::for_egress(egress.clone())
        .with_stream(stream.unwrap_or("placeholder"))
        .with_partition_key(key)
        .with_utf8_value(value);
    if let Some(h) = ehk {
        m = m.with_explicit_hash_key(h);
    }
    let mut msg = m.build().expect("record");
    if stream.is_none() {
        // A record without a stream: the egress's streamName applies.
        let mut rec =
            statefun_sdk::proto::egress::KinesisEgressRecord::from_typed_value(&msg.value)
                .expect("decode");
        rec.stream.clear();
        msg.value = rec.to_typed_value();
    }
    msg
}

#[test]
fn sink_writes_exactly_the_records_read_back() {
    let Some(emu) = Emu::new() else { return };
    let main = unique_name("sink-main");
    let other = unique_name("sink-other");
    emu.create(&main, 2);
    emu.create(&other, 1);
    let id = TypeName::parse("t/out").expect("id");
    let mut sink = KinesisSink::open_with(
        "t/out",
        &emu.egress(&main, 300),
        KinesisSinkOptions::default(),
    )
    .expect("open sink");
    let mut expected_main = Vec::new();
    let mut expected_other = Vec::new();
    let mut batch = Vec::new();
    for i in 0..1200 {
        let key = format!("k{}", i % 37);
        let v = format!("value-{i}");
        if i % 5 == 0 {
            batch.push(egress_record(&id, Some(&other), &key, &v, None));
            expected_other.push((key, v.into_bytes()));
        } else if i % 7 == 0 {
            batch.push(egress_record(&id, Some(&main), &key, &v, Some("1")));
            expected_main.push((key, v.into_bytes()));
        } else {
            batch.push(egress_record(&id, None, &key, &v, None));
            expected_main.push((key, v.into_bytes()));
        }
        if batch.len() == 100 {
            sink.write(&batch).expect("write");
            batch.clear();
        }
    }
    sink.flush().expect("flush");
    assert_eq!(sink.records_written(), 1200);
    let mut got_main = emu.read_all(&main);
    let mut got_other = emu.read_all(&other);
    got_main.sort();
    got_other.sort();
    expected_main.sort();
    expected_other.sort();
    assert_eq!(got_main, expected_main);
    assert_eq!(got_other, expected_other);

    // A value that is not a KinesisEgressRecord names the egress and the type.
    let wrong = EgressMessage {
        egress: id.clone(),
        value: TypedValue::new("example/Other", vec![1, 2]),
    };
    let err = sink.write(&[wrong]).expect_err("wrong type").to_string();
    assert!(
        err.contains("t/out") && err.contains("example/Other"),
        "{err}"
    );
}

#[test]
fn sink_to_a_missing_stream_fails_clearly() {
    let Some(emu) = Emu::new() else { return };
    let missing = unique_name("sink-missing");
    let id = TypeName::parse("t/out").expect("id");
    let mut sink = KinesisSink::open("t/out", &emu.egress(&missing, 100)).expect("open sink");
    sink.write(&[egress_record(&id, None, "k", "v", None)])
        .expect("write buffers");
    let err = sink.flush().expect_err("missing stream").to_string();
    eprintln!("sink missing stream: {err}");
    assert!(
        err.contains("kinesis egress `t/out`") && err.contains(&missing),
        "{err}"
    );
    assert!(err.contains("ResourceNotFound"), "{err}");
}

#[test]
fn bad_configurations_fail_at_open_with_clear_errors() {
    let Some(emu) = Emu::new() else { return };
    let s = unique_name("errors");
    emu.create(&s, 1);
    let open = |spec: &KinesisIngress| {
        KinesisSource::open_with("t/bad", spec, 0, 1, fast())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };

    // Unknown stream, by name and by ARN.
    let missing = unique_name("nope");
    let err = open(&emu.ingress(
        &[(&missing, false, "example/v")],
        KinesisStartupPosition::Latest,
    ));
    eprintln!("unknown stream: {err}");
    assert!(
        err.contains("kinesis ingress `t/bad`")
            && err.contains(&missing)
            && err.contains("ResourceNotFound"),
        "{err}"
    );
    let err = open(&emu.ingress(
        &[(&missing, true, "example/v")],
        KinesisStartupPosition::Latest,
    ));
    assert!(
        err.contains(&Emu::arn(&missing)) && err.contains("ResourceNotFound"),
        "{err}"
    );

    // A malformed ARN.
    let mut spec = emu.ingress(&[(&s, true, "example/v")], KinesisStartupPosition::Latest);
    spec.streams[0].arn = Some(format!("arn:aws:kinesis:{REGION}:123:stream/{s}"));
    let err = open(&spec);
    assert!(err.contains("is not a Kinesis stream ARN"), "{err}");

    // An ARN of another region than awsRegion.
    let mut spec = emu.ingress(&[(&s, true, "example/v")], KinesisStartupPosition::Latest);
    spec.aws_region = AwsRegion::CustomEndpoint {
        endpoint: emu.endpoint.clone(),
        id: "eu-west-1".into(),
    };
    let err = open(&spec);
    assert!(
        err.contains("region `us-east-1` but awsRegion is `eu-west-1`"),
        "{err}"
    );

    // The wrong region for a stream named without ARN: the stream is not there.
    let mut spec = emu.ingress(&[(&s, false, "example/v")], KinesisStartupPosition::Latest);
    spec.aws_region = AwsRegion::CustomEndpoint {
        endpoint: emu.endpoint.clone(),
        id: "eu-west-1".into(),
    };
    let err = open(&spec);
    eprintln!("wrong region: {err}");
    assert!(
        err.contains(&s) && err.contains("ResourceNotFound") && err.contains("region"),
        "{err}"
    );

    // Credentials that cannot be resolved: a profile missing from its file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        "[other]\naws_access_key_id = a\naws_secret_access_key = b\n",
    )
    .expect("write");
    let mut spec = emu.ingress(&[(&s, false, "example/v")], KinesisStartupPosition::Latest);
    spec.aws_credentials = AwsCredentials::Profile {
        name: "missing-profile".into(),
        path: Some(file.display().to_string()),
    };
    let err = open(&spec);
    eprintln!("refused credentials: {err}");
    assert!(
        err.contains("kinesis ingress `t/bad`") && err.contains("credentials"),
        "{err}"
    );

    // A bad custom endpoint URL and a bad client property value.
    let mut spec = emu.ingress(&[(&s, false, "example/v")], KinesisStartupPosition::Latest);
    spec.aws_region = AwsRegion::CustomEndpoint {
        endpoint: "localhost:1".into(),
        id: REGION.into(),
    };
    assert!(open(&spec).contains("not an http:// or https:// URL"));
    let mut spec = emu.ingress(&[(&s, false, "example/v")], KinesisStartupPosition::Latest);
    spec.client_config_properties = Properties(vec![("SocketTimeout".into(), "soon".into())]);
    assert!(open(&spec).contains("`SocketTimeout: soon`"));
}

// ----- record ids, throttling and refused credentials ------------------------

#[test]
fn record_ids_option_is_validated_in_module_yaml() {
    let doc = |extra: &str| {
        format!(
            "kind: io.statefun.kinesis.v1/egress\nspec:\n  id: t/out\n  awsRegion: {{ type: specific, id: us-east-1 }}\n  streamName: s\n{extra}"
        )
    };
    let kinesis = |m: statefun_module::Module| match &m.egresses[0].spec {
        statefun_module::EgressSpec::Kinesis(k) => k.clone(),
        other => panic!("not a Kinesis egress: {other:?}"),
    };
    let off = statefun_module::load_str(&doc(""), "module.yaml").expect("loads");
    assert!(!kinesis(off).record_ids, "off by default: upstream's bytes");
    let on = statefun_module::load_str(&doc("  recordIds: true\n"), "module.yaml").expect("loads");
    assert!(kinesis(on).record_ids);
    let err = statefun_module::load_str(&doc("  recordIds: sometimes\n"), "module.yaml")
        .expect_err("not a boolean")
        .to_string();
    assert!(
        err.contains("recordIds") && err.contains("`true` or `false`"),
        "{err}"
    );
    let err = statefun_module::load_str(&doc("  recordId: true\n"), "module.yaml")
        .expect_err("a typo")
        .to_string();
    assert!(
        err.contains("recordId") && err.contains("recordIds"),
        "{err}"
    );
}

#[test]
fn sink_frames_records_with_ids_only_when_asked() {
    let Some(emu) = Emu::new() else { return };
    let plain_stream = unique_name("ids-plain");
    let framed_stream = unique_name("ids-framed");
    emu.create(&plain_stream, 1);
    emu.create(&framed_stream, 1);
    let id = TypeName::parse("t/out").expect("id");
    let values = ["a", "b", "a"];
    let records: Vec<EgressMessage> = values
        .iter()
        .map(|v| egress_record(&id, None, "k", v, None))
        .collect();

    let mut plain = KinesisSink::open("t/out", &emu.egress(&plain_stream, 100)).expect("open sink");
    plain.begin_checkpoint(0, 7);
    plain.write(&records).expect("write");
    plain.commit(7).expect("commit");
    let got: Vec<Vec<u8>> = emu
        .read_all(&plain_stream)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        got,
        values.map(|v| v.as_bytes().to_vec()).to_vec(),
        "without recordIds the data is the function's bytes"
    );

    let mut spec = emu.egress(&framed_stream, 100);
    spec.record_ids = true;
    let mut framed = KinesisSink::open("t/out", &spec).expect("open sink");
    framed.begin_checkpoint(1, 7);
    framed.write(&records).expect("write");
    framed.commit(7).expect("commit");
    // A restarted job replays the checkpoint: the same ids again.
    let mut again = KinesisSink::open("t/out", &spec).expect("open sink");
    again.begin_checkpoint(1, 7);
    again.write(&records).expect("write");
    again.commit(7).expect("commit");
    let got: Vec<(RecordId, Vec<u8>)> = emu
        .read_all(&framed_stream)
        .into_iter()
        .map(|(_, d)| {
            let (id, payload) = split_record_id(&d).expect("framed");
            (id, payload.to_vec())
        })
        .collect();
    // Ids derive from (egress, worker, checkpoint, content, occurrence).
    let id = |value: &str, occurrence: u64| {
        let digest = content_digest(&framed_stream, "k", "", value.as_bytes());
        RecordId::new("t/out", 1, 7, digest, occurrence)
    };
    let expected: Vec<(RecordId, Vec<u8>)> = vec![
        (id("a", 0), b"a".to_vec()),
        (id("b", 0), b"b".to_vec()),
        (id("a", 1), b"a".to_vec()),
    ];
    assert_eq!(got.len(), 6);
    assert_eq!(got[..3], expected[..], "first attempt");
    assert_eq!(
        got[3..],
        expected[..],
        "the re-sent copies carry the same ids"
    );
}

#[test]
fn egress_bad_configurations_fail_with_clear_errors() {
    let Some(emu) = Emu::new() else { return };
    let s = unique_name("egress-errors");
    emu.create(&s, 1);
    let id = TypeName::parse("t/out").expect("id");
    let flush_error = |spec: &KinesisEgress, record: EgressMessage| {
        let mut sink = match KinesisSink::open("t/out", spec) {
            Ok(sink) => sink,
            Err(e) => return e.to_string(),
        };
        sink.write(&[record]).expect("write buffers");
        sink.flush()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };

    // The right stream in the wrong region: not found there, with a hint naming the region.
    let mut spec = emu.egress(&s, 10);
    spec.aws_region = AwsRegion::CustomEndpoint {
        endpoint: emu.endpoint.clone(),
        id: "eu-west-1".into(),
    };
    let err = flush_error(&spec, egress_record(&id, None, "k", "v", None));
    eprintln!("egress wrong region: {err}");
    assert!(
        err.contains("kinesis egress `t/out`")
            && err.contains(&s)
            && err.contains("ResourceNotFound")
            && err.contains("region"),
        "{err}"
    );

    // A record naming a stream by an ARN of an unknown stream.
    let arn = Emu::arn(&unique_name("nope"));
    let err = flush_error(
        &emu.egress(&s, 10),
        egress_record(&id, Some(&arn), "k", "v", None),
    );
    eprintln!("egress unknown ARN: {err}");
    assert!(
        err.contains(&arn) && err.contains("ResourceNotFound"),
        "{err}"
    );

    // Credentials that cannot be resolved.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        "[other]\naws_access_key_id = a\naws_secret_access_key = b\n",
    )
    .expect("write");
    let mut spec = emu.egress(&s, 10);
    spec.aws_credentials = AwsCredentials::Profile {
        name: "missing-profile".into(),
        path: Some(file.display().to_string()),
    };
    let err = flush_error(&spec, egress_record(&id, None, "k", "v", None));
    eprintln!("egress unresolvable credentials: {err}");
    assert!(
        err.contains("kinesis egress `t/out`") && err.contains("credentials"),
        "{err}"
    );

    // A record without a partition key names the stream.
    let mut rec = statefun_sdk::proto::egress::KinesisEgressRecord::from_typed_value(
        &egress_record(&id, None, "k", "v", None).value,
    )
    .expect("decode");
    rec.partition_key.clear();
    let message = EgressMessage {
        egress: id.clone(),
        value: rec.to_typed_value(),
    };
    let mut sink = KinesisSink::open("t/out", &emu.egress(&s, 10)).expect("open");
    let err = sink.write(&[message]).expect_err("no key").to_string();
    assert!(
        err.contains("empty partition key") && err.contains(&s),
        "{err}"
    );
}

/// An ingress spec on the fake endpoint; `MaxErrorRetry: 0` turns the SDK's
/// own retries off, so every throttled call reaches the connector's backoff.
fn fake_ingress(endpoint: &str, access_key: &str) -> KinesisIngress {
    KinesisIngress {
        aws_region: AwsRegion::CustomEndpoint {
            endpoint: endpoint.to_string(),
            id: REGION.to_string(),
        },
        aws_credentials: AwsCredentials::Basic {
            access_key_id: access_key.into(),
            secret_access_key: Secret::new("test"),
        },
        startup_position: KinesisStartupPosition::TrimHorizon,
        streams: vec![KinesisStream {
            stream: "s".into(),
            arn: None,
            value_type: TypeName::parse("example/v").expect("type"),
            targets: vec![],
        }],
        client_config_properties: Properties(vec![("MaxErrorRetry".into(), "0".into())]),
    }
}

fn fake_egress(endpoint: &str, access_key: &str) -> KinesisEgress {
    KinesisEgress {
        aws_region: AwsRegion::CustomEndpoint {
            endpoint: endpoint.to_string(),
            id: REGION.to_string(),
        },
        aws_credentials: AwsCredentials::Basic {
            access_key_id: access_key.into(),
            secret_access_key: Secret::new("test"),
        },
        stream_name: "s".into(),
        max_outstanding_records: 1000,
        client_config_properties: Properties(vec![("MaxErrorRetry".into(), "0".into())]),
        record_ids: true,
    }
}

#[test]
fn reader_backs_off_when_throttled_and_loses_nothing() {
    let records: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("k{}", i % 3), format!("r{i}").into_bytes()))
        .collect();
    let fake = fake::Fake::start(fake::State {
        records,
        throttle_get_records: 6,
        expire_after: Some(14),
        ..fake::State::default()
    });
    let spec = fake_ingress(&fake.endpoint, "test");
    let mut source = KinesisSource::open_with("t/throttled", &spec, 0, 1, fast()).expect("open");
    let got = read_n(&mut source, 40, Duration::from_secs(60));
    let extra = read_for(&mut source, Duration::from_millis(1000));
    assert!(extra.is_empty(), "records read twice: {extra:?}");
    let values: Vec<String> = got.iter().map(value).collect();
    assert_eq!(
        values,
        (0..40).map(|i| format!("r{i}")).collect::<Vec<_>>(),
        "every record once, in shard order"
    );
    let state = fake.state();
    assert_eq!(
        state.throttled.get("GetRecords"),
        Some(&6),
        "every throttled call was answered by a retry"
    );
    assert!(
        state.calls.get("GetRecords").copied().unwrap_or(0) >= 6 + 6,
        "{:?}",
        state.calls
    );
    // The expired iterator was renewed after the last record read, not from the start.
    assert_eq!(
        state.iterator_types.first().map(String::as_str),
        Some("TRIM_HORIZON")
    );
    assert!(
        state
            .iterator_types
            .iter()
            .skip(1)
            .any(|t| t == "AFTER_SEQUENCE_NUMBER"),
        "{:?}",
        state.iterator_types
    );
    assert!(source.positions()[0].sequence.ends_with("39"));
}

#[test]
fn writer_retries_throttled_calls_and_failed_entries_without_duplicates() {
    let fake = fake::Fake::start(fake::State {
        throttle_put_records: 2,
        partial_put_records: 3,
        ..fake::State::default()
    });
    let id = TypeName::parse("t/out").expect("id");
    let mut sink = KinesisSink::open_with(
        "t/out",
        &fake_egress(&fake.endpoint, "test"),
        KinesisSinkOptions {
            retry_timeout: Duration::from_secs(60),
        },
    )
    .expect("open");
    sink.begin_checkpoint(0, 3);
    let values: Vec<String> = (0..50).map(|i| format!("w{}", i % 45)).collect();
    let batch: Vec<EgressMessage> = values
        .iter()
        .map(|v| egress_record(&id, None, "k", v, None))
        .collect();
    sink.write(&batch).expect("write");
    sink.commit(3).expect("every entry acknowledged in the end");
    assert_eq!(sink.records_written(), 50);

    let state = fake.state();
    assert_eq!(state.throttled.get("PutRecords"), Some(&2));
    // 50 entries: 25 fail, then 12 of those, then 6.
    assert_eq!(state.failed_entries, 25 + 12 + 6);
    assert_eq!(state.calls.get("PutRecords"), Some(&(2 + 3 + 1)));
    // Every record exactly once, with its own id (equal payloads included).
    let mut stored: Vec<(RecordId, String)> = state
        .records
        .iter()
        .map(|(_, data)| {
            let (rid, payload) = split_record_id(data).expect("framed");
            (rid, String::from_utf8_lossy(payload).into_owned())
        })
        .collect();
    stored.sort();
    let mut occurrences: BTreeMap<&String, u64> = BTreeMap::new();
    let mut expected: Vec<(RecordId, String)> = values
        .iter()
        .map(|v| {
            let n = occurrences.entry(v).or_default();
            let digest = content_digest("s", "k", "", v.as_bytes());
            let id = RecordId::new("t/out", 0, 3, digest, *n);
            *n += 1;
            (id, v.clone())
        })
        .collect();
    expected.sort();
    assert_eq!(stored, expected);
}

/// What the sink reports for metrics ([`Sink::take_stats`]) is exactly what the endpoint
/// answered: entries written, throttled (a whole call, and entries of a partial failure) and
/// failed otherwise (`InternalFailure`), and the calls sent again; the next call reports only
/// what happened since.
#[test]
fn writer_reports_throttled_and_failed_entries_and_retries() {
    let fake = fake::Fake::start(fake::State {
        throttle_put_records: 1,
        partial_put_records: 1,
        partial_put_records_internal: 1,
        ..fake::State::default()
    });
    let id = TypeName::parse("t/out").expect("id");
    let mut sink = KinesisSink::open_with(
        "t/out",
        &fake_egress(&fake.endpoint, "test"),
        KinesisSinkOptions {
            retry_timeout: Duration::from_secs(60),
        },
    )
    .expect("open");
    let batch: Vec<EgressMessage> = (0..10)
        .map(|i| egress_record(&id, None, "k", &format!("m{i}"), None))
        .collect();
    sink.write(&batch).expect("write");
    sink.flush().expect("every entry acknowledged in the end");
    // Call 1 throttled as a whole (10 entries), call 2 throttles every other entry (5),
    // call 3 fails every other of the 5 left with InternalFailure (2), call 4 writes 3.
    assert_eq!(
        sink.take_stats(),
        SinkStats {
            entries_written: 10,
            entries_throttled: 10 + 5,
            entries_failed: 2,
            retries: 3,
            ..SinkStats::default()
        }
    );
    assert_eq!(fake.state().calls.get("PutRecords"), Some(&4));
    assert_eq!(fake.state().records.len(), 10);
    // Deltas: nothing new until the next write.
    assert_eq!(sink.take_stats(), SinkStats::default());
    sink.write(&batch[..2]).expect("write");
    sink.flush().expect("flush");
    assert_eq!(
        sink.take_stats(),
        SinkStats {
            entries_written: 2,
            ..SinkStats::default()
        }
    );
}

#[test]
fn refused_credentials_fail_clearly() {
    let fake = fake::Fake::start(fake::State {
        refuse_access_key: Some("refused".into()),
        ..fake::State::default()
    });
    let err = KinesisSource::open_with(
        "t/in",
        &fake_ingress(&fake.endpoint, "refused"),
        0,
        1,
        fast(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    eprintln!("refused credentials (ingress): {err}");
    assert!(
        err.contains("kinesis ingress `t/in`")
            && err.contains("UnrecognizedClientException")
            && err.contains("check awsCredentials"),
        "{err}"
    );
    let id = TypeName::parse("t/out").expect("id");
    let mut sink =
        KinesisSink::open("t/out", &fake_egress(&fake.endpoint, "refused")).expect("open");
    sink.write(&[egress_record(&id, None, "k", "v", None)])
        .expect("buffers");
    let err = sink.flush().expect_err("refused").to_string();
    eprintln!("refused credentials (egress): {err}");
    assert!(
        err.contains("kinesis egress `t/out`")
            && err.contains("UnrecognizedClientException")
            && err.contains("check awsCredentials"),
        "{err}"
    );
    // Nothing was retried: a refusal is not transient.
    assert_eq!(fake.state().calls.get("PutRecords"), Some(&1));
}
