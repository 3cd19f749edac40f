//! The Kinesis ingress with KPL-aggregated records, against the `kinesis-local`
//! emulator, with aggregates made by AWS's own aggregator (`kpl/produce.py`,
//! PyPI `aws-kinesis-agg`): sub-records come out one by one with their own
//! partition keys among plain records, a corrupt aggregate comes out whole and
//! keyless (the engine's bad-record policy takes it), and a checkpoint taken
//! inside an aggregate resumes inside it.
//!
//! Needs the emulator (`ci/install-kinesis.sh`) and the venv of
//! `ci/install-python-sdk.sh`; without them each test prints SKIPPED and
//! passes, except under CI (`CI` set), where they fail.

use std::time::Duration;

use statefun_connectors::kinesis::{KinesisSource, KinesisSourceOptions, ShardPosition, KPL_MAGIC};
use statefun_connectors::{Source, SourceRecord};
use statefun_module::{
    AwsCredentials, AwsRegion, KinesisIngress, KinesisStartupPosition, KinesisStream, Properties,
    Secret, TypeName,
};
use statefun_sdk::IngressMetadata;
use statefun_testkit::kinesis::{Emulator, REGION};
use statefun_testkit::unique_name;

mod common;
mod kpl;
use common::{read_for, read_n};
use kpl::{aggregate, UserRecord};

fn ingress(emu: &Emulator, stream: &str) -> KinesisIngress {
    KinesisIngress {
        aws_region: AwsRegion::CustomEndpoint {
            endpoint: emu.endpoint.clone(),
            id: REGION.to_string(),
        },
        aws_credentials: AwsCredentials::Basic {
            access_key_id: "test".into(),
            secret_access_key: Secret::new("test"),
        },
        startup_position: KinesisStartupPosition::TrimHorizon,
        streams: vec![KinesisStream {
            stream: stream.to_string(),
            arn: None,
            value_type: TypeName::parse("example/v").expect("type"),
            targets: vec![],
        }],
        client_config_properties: Properties(vec![("SocketTimeout".into(), "5000".into())]),
    }
}

fn open(emu: &Emulator, stream: &str) -> KinesisSource {
    let options = KinesisSourceOptions {
        shard_discovery_interval: Duration::from_millis(500),
        idle_poll_interval: Duration::from_millis(200),
        ..KinesisSourceOptions::default()
    };
    KinesisSource::open_with("t/kpl", &ingress(emu, stream), 0, 1, options).expect("open")
}

/// What a record says, in one comparable tuple:
/// (key, value, sequence number, sub-sequence number, explicit hash key).
type Seen = (Option<String>, Vec<u8>, String, Option<u64>, Option<String>);

fn seen(r: &SourceRecord) -> Seen {
    let Some(IngressMetadata::Kinesis {
        sequence_number,
        sub_sequence_number,
        explicit_hash_key,
        ..
    }) = r.metadata.record()
    else {
        panic!("not Kinesis metadata: {:?}", r.metadata);
    };
    (
        r.key
            .as_ref()
            .map(|k| String::from_utf8(k.to_vec()).expect("utf8 key")),
        r.value.clone().unwrap_or_default(),
        sequence_number.clone(),
        *sub_sequence_number,
        explicit_hash_key.clone(),
    )
}

fn plain(key: &str, value: &[u8], seq: &str) -> Seen {
    (Some(key.into()), value.to_vec(), seq.into(), None, None)
}

fn sub(key: &str, value: &str, seq: &str, i: u64, ehk: Option<&str>) -> Seen {
    (
        Some(key.into()),
        value.as_bytes().to_vec(),
        seq.into(),
        Some(i),
        ehk.map(Into::into),
    )
}

#[test]
fn kpl_aggregates_come_out_as_their_records_among_plain_ones() {
    let Some(python) = kpl::python() else { return };
    let Some(emu) = Emulator::connect() else {
        return;
    };
    let s = unique_name("kpl-split");
    emu.create_stream(&s, 1);
    let ehk = "170141183460469231731687303715884105728";
    let many: Vec<UserRecord> = (0..50)
        .map(|i| UserRecord::new(&format!("k{}", i % 7), &format!("m{i}")))
        .collect();
    let aggregates = aggregate(
        &python,
        &[
            vec![
                UserRecord::new("alice", "a0"),
                UserRecord {
                    ehk: Some(ehk.into()),
                    ..UserRecord::new("bob", "b0")
                },
                UserRecord::new("alice", "a1"),
            ],
            many.clone(),
            vec![UserRecord::new("x", "bad0"), UserRecord::new("y", "bad1")],
        ],
    );
    let [small, big, to_corrupt] = &aggregates[..] else {
        panic!("three aggregates")
    };
    assert_eq!(
        (
            small.partition_key.as_str(),
            small.explicit_hash_key.as_deref()
        ),
        ("alice", None),
        "the aggregate's own key is its first record's"
    );
    let mut corrupt = to_corrupt.data.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff; // the MD5's last byte
                           // Data that starts like the magic but is no aggregate: a prefix of it, and the
                           // whole magic in data too short to hold an MD5 after it.
    let prefix: Vec<u8> = [&KPL_MAGIC[..3], b" three bytes of the magic, then text"].concat();
    let short: Vec<u8> = [&KPL_MAGIC[..], b"short"].concat();

    let (_, p0) = emu.put(&s, "p", b"plain0");
    let (_, a1) = emu.put(&s, &small.partition_key, &small.data);
    let (_, p1) = emu.put(&s, "p", b"plain1");
    let (_, a2) = emu.put(&s, &big.partition_key, &big.data);
    let (_, bad) = emu.put(&s, &to_corrupt.partition_key, &corrupt);
    let (_, p2) = emu.put(&s, "p", &prefix);
    let (_, p3) = emu.put(&s, "p", &short);
    let (_, p4) = emu.put(&s, "p", b"plain2");

    let mut expected = vec![
        plain("p", b"plain0", &p0),
        sub("alice", "a0", &a1, 0, None),
        sub("bob", "b0", &a1, 1, Some(ehk)),
        sub("alice", "a1", &a1, 2, None),
        plain("p", b"plain1", &p1),
    ];
    expected.extend(
        many.iter()
            .enumerate()
            .map(|(i, r)| sub(&r.pk, &r.data, &a2, i as u64, None)),
    );
    expected.extend([
        // The corrupt aggregate: whole, rejected with its reason (below), for the
        // ingress's bad-record policy.
        plain(&to_corrupt.partition_key, &corrupt, &bad),
        plain("p", &prefix, &p2),
        plain("p", &short, &p3),
        plain("p", b"plain2", &p4),
    ]);

    let mut source = open(&emu, &s);
    let records = read_n(&mut source, expected.len(), Duration::from_secs(30));
    let got: Vec<Seen> = records.iter().map(seen).collect();
    let rejected: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.rejected
                .as_deref()
                .is_some_and(|why| why.starts_with("KPL aggregate: MD5 mismatch"))
        })
        .map(|(i, _)| i)
        .collect();
    let corrupt_at = expected.iter().position(|e| e.2 == bad);
    assert_eq!(
        (rejected.len(), rejected.first().copied()),
        (
            records.iter().filter(|r| r.rejected.is_some()).count(),
            corrupt_at
        ),
        "only the corrupt aggregate is rejected, with its reason"
    );
    assert!(read_for(&mut source, Duration::from_millis(800)).is_empty());
    assert_eq!(got.len(), 59);
    assert_eq!(got, expected);
    assert_eq!(source.stats().records, 59);
    let positions = source.positions();
    assert_eq!(positions.len(), 1);
    assert_eq!(
        (positions[0].sequence.as_str(), positions[0].sub_sequence),
        (p4.as_str(), None)
    );
}

/// A checkpoint after every cut of the input (a plain record, an aggregate of
/// ten, a plain record): a new source seeking to it reads exactly the rest, no
/// sub-record twice, none lost; through `Source::position`/`Source::seek`, the
/// bytes a checkpoint stores.
#[test]
fn a_checkpoint_inside_an_aggregate_resumes_inside_it() {
    let Some(python) = kpl::python() else { return };
    let Some(emu) = Emulator::connect() else {
        return;
    };
    let s = unique_name("kpl-restore");
    emu.create_stream(&s, 1);
    let users: Vec<UserRecord> = (0..10)
        .map(|i| UserRecord::new(&format!("k{i}"), &format!("s{i}")))
        .collect();
    let agg = aggregate(&python, std::slice::from_ref(&users)).remove(0);
    let (_, before) = emu.put(&s, "b", b"before");
    let (_, inside) = emu.put(&s, &agg.partition_key, &agg.data);
    let (_, after) = emu.put(&s, "a", b"after");
    let mut all = vec![plain("b", b"before", &before)];
    all.extend(
        users
            .iter()
            .enumerate()
            .map(|(i, r)| sub(&r.pk, &r.data, &inside, i as u64, None)),
    );
    all.push(plain("a", b"after", &after));
    assert_eq!(all.len(), 12);

    // cut = records handed out before the checkpoint, and the position it records.
    let cuts: [(usize, &str, Option<u64>); 5] = [
        (1, &before, None),
        (2, &inside, Some(0)),
        (6, &inside, Some(4)),
        (10, &inside, Some(8)),
        // The aggregate's last sub-record completes it: a plain position again.
        (11, &inside, None),
    ];
    for (cut, sequence, sub_sequence) in cuts {
        let mut first = open(&emu, &s);
        let head: Vec<Seen> = read_n(&mut first, cut, Duration::from_secs(30))
            .iter()
            .map(seen)
            .collect();
        assert_eq!(head, all[..cut], "cut {cut}");
        let shard = emu.shard_ids(&s).remove(0);
        assert_eq!(
            first.positions(),
            vec![ShardPosition {
                sub_sequence,
                ..ShardPosition::new(&s, &shard, sequence)
            }],
            "cut {cut}"
        );
        let checkpoint = first.position().expect("a position");
        drop(first);

        let mut second = open(&emu, &s);
        second.seek(&checkpoint).expect("seek");
        let rest: Vec<Seen> = read_n(&mut second, all.len() - cut, Duration::from_secs(30))
            .iter()
            .map(seen)
            .collect();
        let extra = read_for(&mut second, Duration::from_millis(800));
        assert!(
            extra.is_empty(),
            "cut {cut}: read again after the rest: {extra:?}"
        );
        assert_eq!(rest, all[cut..], "cut {cut}");
        assert_eq!(
            second.positions()[0],
            ShardPosition::new(&s, &shard, &after),
            "cut {cut}"
        );
    }
}
