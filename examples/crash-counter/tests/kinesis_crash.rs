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
//! Needs the emulator of `ci/install-kinesis.sh` (skipped without it, unless
//! `CI` is set). Soak: `STATEFUN_CRASH_KILLS=50 cargo test --release -p
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
    through_kinesis(Fault::Kills(6));
}

/// The emulator goes away (paused, so every call hangs) for 15 s mid-run:
/// the job rides it out or restarts itself (`--restart on-failure`); nothing
/// is lost and every duplicate carries its first copy's record id.
#[test]
fn kinesis_survives_the_service_away_for_15s() {
    through_kinesis(Fault::ServicePause(Duration::from_secs(15)));
}

/// The emulator's endpoint goes away for 15 s mid-run as in a restart: every
/// open connection is closed and new ones are refused (through a proxy: the
/// emulator itself cannot be restarted with its data, see
/// `statefun_testkit::proxy`). The job rides it out or restarts itself;
/// nothing is lost.
#[test]
fn kinesis_survives_its_endpoint_down_for_15s() {
    through_kinesis(Fault::EndpointDown(Duration::from_secs(15)));
}

/// The tests share the emulator (one pauses it): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn through_kinesis(fault: Fault) {
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
    let producer_stream = input.clone();
    let producer_endpoint = endpoint.clone();
    let producing = std::thread::spawn(move || {
        let k = Emulator::at(producer_endpoint);
        let mut batch = Vec::new();
        for s in 0..RECORDS {
            batch.push((format!("k{}", s % KEYS), format!("v{s}").into_bytes()));
            if batch.len() == 20 {
                k.put_all(&producer_stream, &batch);
                batch.clear();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        k.put_all(&producer_stream, &batch);
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let aws = format!(
        "  awsRegion: {{ type: custom-endpoint, endpoint: \"{app_endpoint}\", id: {REGION} }}\n  \
         awsCredentials: {{ type: basic, accessKeyId: test, secretAccessKey: test }}\n"
    );
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: crash/in\n{aws}  \
             startupPosition: {{ type: trim-horizon }}\n  streams:\n    - stream: {input}\n      \
             valueType: io.statefun.types/string\n      targets: [{COUNTER}]\n---\n\
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
    let unexpected: Vec<&String> = seen
        .keys()
        .filter(|l| !expected.contains_key(*l))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "lost lines: {missing:?}");
    assert!(
        unexpected.is_empty(),
        "lines the state does not imply (a record counted twice?): {unexpected:?}"
    );
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
