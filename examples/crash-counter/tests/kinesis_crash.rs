//! At-least-once through the Kinesis emulator under SIGKILL, with record ids:
//! records put into a 2-shard stream → counters (state, function→function
//! messages, delayed messages) → Kinesis egress with `recordIds: true`. The
//! app (2 workers, `--state-dir`) is killed at random moments while input
//! arrives and restarted on the same state dir; then it runs until the output
//! is complete and is stopped with SIGTERM.
//!
//! Reading the egress stream back over all shards must show every line the
//! state implies (so every input record reached function state exactly once:
//! a lost record leaves a gap, a duplicated one an extra `count KEY n+1`), no
//! other line, and every repeated line carrying the id of its first copy (the
//! duplicates at-least-once may write are the re-sends of one record, which a
//! consumer drops by id).
//!
//! The KPL variant puts the same user records, most of them packed by AWS's
//! own aggregator (`connectors/tests/kpl/produce.py`) into KPL-aggregated
//! records of up to 1100 sub-records, so that the app is killed, and
//! checkpoints are taken, while aggregates are handed out only in part (a poll
//! hands out at most 1024 records); plus one corrupt aggregate, which the
//! ingress's `badRecords: dead-letter` policy writes to the egress stream.
//! The same exact lines must come out, and the dead letter, and nothing else.
//!
//! Needs the emulator of `ci/install-kinesis.sh` (skipped without it, unless
//! `CI` is set), and for the KPL variant the venv of `ci/install-python-sdk.sh`.
//! Soak: `STATEFUN_CRASH_KILLS=50 cargo test --release -p
//! example-crash-counter --test kinesis_crash -- --nocapture`
//! (`STATEFUN_CRASH_SEED` replays the kill times).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::ShardIteratorType;
use example_crash_counter::{expected_lines, COUNTER, OUT};
use statefun_connectors::kinesis::{split_record_id, RecordId};
use statefun_testkit::kinesis::{Emulator, REGION};
use statefun_testkit::proxy::Proxy;

mod common;
use common::{apply, seed, start_app_with, terminate, Fault, Lcg, Service};

#[path = "../../../connectors/tests/kpl/mod.rs"]
mod kpl;

const RECORDS: u64 = 2000;
const KEYS: u64 = 40;

/// Reads a stream's shards from their trim horizon, continuing where the
/// previous `poll` stopped.
struct Reader {
    stream: String,
    iterators: Vec<(String, Option<String>)>,
}

impl Reader {
    fn new(k: &Emulator, stream: &str) -> Reader {
        let shards =
            k.rt.block_on(k.client.list_shards().stream_name(stream).send())
                .expect("list shards");
        let iterators = shards
            .shards()
            .iter()
            .map(|s| (s.shard_id().to_string(), None))
            .collect();
        Reader {
            stream: stream.to_string(),
            iterators,
        }
    }

    /// Appends every record written since the last poll to `out`.
    fn poll(&mut self, k: &Emulator, out: &mut Vec<Vec<u8>>) {
        for (shard, iterator) in &mut self.iterators {
            if iterator.is_none() {
                let it =
                    k.rt.block_on(
                        k.client
                            .get_shard_iterator()
                            .stream_name(&self.stream)
                            .shard_id(shard.as_str())
                            .shard_iterator_type(ShardIteratorType::TrimHorizon)
                            .send(),
                    )
                    .expect("shard iterator");
                *iterator = it.shard_iterator;
            }
            let mut throttled = 0;
            while let Some(it) = iterator.clone() {
                // The emulator enforces the service's 5 reads per second per shard.
                std::thread::sleep(Duration::from_millis(210));
                match k
                    .rt
                    .block_on(k.client.get_records().shard_iterator(it).send())
                {
                    Ok(page) => {
                        let n = page.records.len();
                        out.extend(page.records.into_iter().map(|r| r.data.into_inner()));
                        *iterator = page.next_shard_iterator;
                        if n == 0 {
                            break;
                        }
                    }
                    Err(e) => {
                        throttled += 1;
                        assert!(throttled < 50, "GetRecords keeps failing: {:?}", e.code());
                    }
                }
            }
        }
    }
}

fn start(dir: &Path, output: &str) -> Child {
    // As the Kafka test's last run: a production job's restart policy.
    start_app_with(
        dir,
        ("CRASH_OUT_STREAM", output),
        &["--restart", "on-failure:backoff=500ms..5s"],
    )
}

/// What was read: per line, the id of every copy.
fn tally(records: &[Vec<u8>], seen: &mut BTreeMap<String, Vec<RecordId>>) {
    for data in records {
        let (id, payload) = split_record_id(data).unwrap_or_else(|| {
            panic!(
                "a record without a record id: {:?}",
                String::from_utf8_lossy(data)
            )
        });
        let line = String::from_utf8_lossy(payload).into_owned();
        seen.entry(line).or_default().push(id);
    }
}

#[test]
fn kinesis_at_least_once_with_record_ids_survives_kills() {
    through_kinesis(Fault::Kills(6), Input::Plain);
}

/// The input mostly in KPL aggregates (and one corrupt aggregate, dead-lettered),
/// the app killed while they are read: every sub-record reaches function state
/// exactly once.
#[test]
fn kinesis_kpl_aggregates_count_exactly_once_across_kills() {
    let Some(python) = kpl::python() else { return };
    through_kinesis(Fault::Kills(6), Input::Kpl(python));
}

/// The emulator goes away (paused, so every call hangs) for 15 s mid-run:
/// the job rides it out or restarts itself (`--restart on-failure`); nothing
/// is lost and every duplicate carries its first copy's record id.
#[test]
fn kinesis_survives_the_service_away_for_15s() {
    through_kinesis(Fault::ServicePause(Duration::from_secs(15)), Input::Plain);
}

/// The emulator's endpoint goes away for 15 s mid-run as in a restart: every
/// open connection is closed and new ones are refused (through a proxy: the
/// emulator itself cannot be restarted with its data, see
/// `statefun_testkit::proxy`). The job rides it out or restarts itself;
/// nothing is lost.
#[test]
fn kinesis_survives_its_endpoint_down_for_15s() {
    through_kinesis(Fault::EndpointDown(Duration::from_secs(15)), Input::Plain);
}

/// The tests share the emulator (one pauses it): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What the producer puts into the input stream.
enum Input {
    /// One Kinesis record per user record.
    Plain,
    /// User records packed into KPL aggregates by the aggregator run with this
    /// interpreter, with plain records between them, and one corrupt aggregate.
    Kpl(std::path::PathBuf),
}

/// Kinesis records (partition key, data) put with one `PutRecords` call.
type Batch = Vec<(String, Vec<u8>)>;

/// The Kinesis records to put, in order, in the batches they are put in; and
/// the data of the corrupt aggregate among them, if any. The user records are
/// `k{s % KEYS}` → `v{s}` for `s` in `0..RECORDS` either way.
fn input_records(input: &Input) -> (Vec<Batch>, Option<Vec<u8>>) {
    let user = |s: u64| (format!("k{}", s % KEYS), format!("v{s}"));
    let python = match input {
        Input::Plain => {
            let records: Vec<(String, Vec<u8>)> = (0..RECORDS)
                .map(|s| {
                    let (k, v) = user(s);
                    (k, v.into_bytes())
                })
                .collect();
            return (records.chunks(20).map(<[_]>::to_vec).collect(), None);
        }
        Input::Kpl(python) => python,
    };
    // Runs of user records, in order: a plain record (a run of 1) or an aggregate of
    // that many. An aggregate of 1100 is more than one poll hands out (1024), so it is
    // always handed out across polls, with checkpoints possibly taken in between.
    const RUNS: [u64; 11] = [1, 30, 1, 1100, 17, 1, 300, 1, 60, 450, 39];
    assert_eq!(RUNS.iter().sum::<u64>(), RECORDS);
    let mut groups: Vec<Vec<kpl::UserRecord>> = Vec::new();
    let mut s = 0;
    for run in RUNS {
        groups.push(
            (s..s + run)
                .map(|s| {
                    let (k, v) = user(s);
                    kpl::UserRecord::new(&k, &v)
                })
                .collect(),
        );
        s += run;
    }
    // The corrupt aggregate: sub-records no counter may see.
    let bad: Vec<kpl::UserRecord> = (0..30)
        .map(|i| kpl::UserRecord::new(&format!("bad{i}"), &format!("bad{i}")))
        .collect();
    let aggregated = kpl::aggregate(python, &[groups.clone(), vec![bad]].concat());
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    let mut corrupt = None;
    for (i, agg) in aggregated.into_iter().enumerate() {
        match groups.get(i) {
            // A run of one goes as a plain record.
            Some(g) if g.len() == 1 => {
                records.push((g[0].pk.clone(), g[0].data.clone().into_bytes()))
            }
            Some(_) => records.push((agg.partition_key, agg.data)),
            None => {
                let mut data = agg.data;
                let last = data.len() - 1;
                data[last] ^= 0xff; // the MD5's last byte
                corrupt = Some(data.clone());
                // In the middle of the input.
                records.insert(records.len() / 2, (agg.partition_key, data));
            }
        }
    }
    // One Kinesis record per put, so that the input arrives over about ten seconds.
    (records.into_iter().map(|r| vec![r]).collect(), corrupt)
}

fn through_kinesis(fault: Fault, kind: Input) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(k) = Emulator::connect() else {
        return;
    };
    // The app reaches the emulator through a proxy when the fault is an outage.
    let proxy = if let Fault::EndpointDown(_) = fault {
        let target = k
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("the emulator's endpoint is http://<ip>:<port>");
        Some(Proxy::start(target).expect("start a proxy"))
    } else {
        None
    };
    let app_endpoint = match &proxy {
        Some(p) => format!("http://{}", p.addr),
        None => k.endpoint.clone(),
    };
    let endpoint = k.endpoint.clone();
    let seed = seed();
    println!("seed {seed}");
    let mut rng = Lcg(seed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let run = format!("crash-{}-{}", std::process::id(), nanos % 1_000_000);
    let (input, output) = (format!("{run}-in"), format!("{run}-out"));
    k.create_stream(&input, 2);
    k.create_stream(&output, 2);

    // Input arrives over about ten seconds, while the app is being killed.
    let (batches, corrupt) = input_records(&kind);
    let pause = Duration::from_millis(if corrupt.is_some() { 800 } else { 100 });
    let producer_stream = input.clone();
    let producer_endpoint = endpoint.clone();
    let producing = std::thread::spawn(move || {
        let k = Emulator::at(producer_endpoint);
        for batch in batches {
            k.put_all(&producer_stream, &batch);
            std::thread::sleep(pause);
        }
    });

    let dir = tempfile::tempdir().expect("temp dir");
    // The corrupt aggregate goes to the egress stream, beside the counters' lines.
    let bad_records = if corrupt.is_some() {
        format!("  badRecords: {{ policy: dead-letter, egress: {OUT}, stream: {output} }}\n")
    } else {
        String::new()
    };
    let aws = format!(
        "  awsRegion: {{ type: custom-endpoint, endpoint: \"{app_endpoint}\", id: {REGION} }}\n  \
         awsCredentials: {{ type: basic, accessKeyId: test, secretAccessKey: test }}\n"
    );
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: crash/in\n{aws}  \
             startupPosition: {{ type: trim-horizon }}\n  streams:\n    - stream: {input}\n      \
             valueType: io.statefun.types/string\n      targets: [{COUNTER}]\n{bad_records}---\n\
             kind: io.statefun.kinesis.v1/egress\nspec:\n  id: {OUT}\n{aws}  streamName: {output}\n  \
             recordIds: true\n"
        ),
    )
    .expect("write module.yaml");

    let service = match &proxy {
        Some(p) => Service::Proxy(p),
        None => Service::PidFile(statefun_testkit::kinesis_emulator_pid_file()),
    };
    let kills = apply(fault, service, &mut rng, |more| {
        start_app_with(dir.path(), ("CRASH_OUT_STREAM", &output), more)
    });
    producing.join().expect("the producer thread");

    let expected = expected_lines((0..RECORDS).map(|s| format!("k{}", s % KEYS)));
    let mut reader = Reader::new(&k, &output);
    let mut seen: BTreeMap<String, Vec<RecordId>> = BTreeMap::new();
    let mut records = Vec::new();
    reader.poll(&k, &mut records);
    tally(&records, &mut seen);
    println!(
        "{} of {} lines written before the last run ({} records)",
        seen.len(),
        expected.len(),
        records.len()
    );

    // The last run goes until every expected line is there, then stops cleanly.
    let child = start(dir.path(), &output);
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline && !expected.keys().all(|l| seen.contains_key(l)) {
        let mut records = Vec::new();
        reader.poll(&k, &mut records);
        tally(&records, &mut seen);
        std::thread::sleep(Duration::from_millis(300));
    }
    // SIGTERM: drain, final checkpoint, deliver; then read what is left.
    let status = terminate(child);
    let mut records = Vec::new();
    reader.poll(&k, &mut records);
    tally(&records, &mut seen);

    let missing: Vec<&String> = expected
        .keys()
        .filter(|l| !seen.contains_key(*l))
        .take(10)
        .collect();
    // The dead letter of the corrupt aggregate: its data, byte for byte (compared
    // as the tally reads lines).
    let dead_letter = corrupt.map(|data| String::from_utf8_lossy(&data).into_owned());
    let unexpected: Vec<&String> = seen
        .keys()
        .filter(|l| !expected.contains_key(*l) && Some(*l) != dead_letter.as_ref())
        .take(10)
        .collect();
    assert!(missing.is_empty(), "lost lines: {missing:?}");
    assert!(
        unexpected.is_empty(),
        "lines the state does not imply (a record counted twice?): {unexpected:?}"
    );
    if let Some(letter) = &dead_letter {
        assert!(
            seen.contains_key(letter),
            "the corrupt KPL aggregate was not dead-lettered to the egress stream"
        );
        assert_eq!(
            seen.len(),
            expected.len() + 1,
            "every line the state implies, and the dead letter"
        );
    } else {
        assert_eq!(seen.len(), expected.len());
    }
    // Every copy of a line carries the id of its first copy, and no two lines share an id.
    let mut owner: HashMap<RecordId, &String> = HashMap::new();
    let mut duplicates = 0usize;
    for (line, ids) in &seen {
        for id in ids {
            assert_eq!(
                *id,
                ids[0],
                "`{line}` was written {} times with different ids: {ids:?}",
                ids.len()
            );
        }
        duplicates += ids.len() - 1;
        if let Some(other) = owner.insert(ids[0], line) {
            panic!("`{line}` and `{other}` share the id {}", ids[0]);
        }
    }
    println!(
        "{kills} kills, {} distinct lines, {duplicates} duplicates (all identified by id), last run {status}",
        seen.len()
    );
}
