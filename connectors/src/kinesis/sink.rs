//! The Kinesis egress: `KinesisEgressRecord`s written with `PutRecords`.
//!
//! # Delivery guarantee: at-least-once
//!
//! Kinesis has no transactions and no idempotent producer, so at-least-once
//! is the ceiling. [`Sink::flush`] returns `Ok` only when every buffered
//! record has been acknowledged; failed entries of a partially failed
//! `PutRecords` are re-sent (only those) with exponential backoff. A record
//! can therefore be written twice when an acknowledgement is lost (a timeout
//! after the service stored the batch) or when the process dies between a
//! write and the engine marking it delivered; duplicates are limited to the
//! batches in flight at that moment. Re-sent entries may land after records
//! that were written later, so per-partition-key order is not guaranteed
//! across a partial failure.
//!
//! # Record ids (`recordIds: true`)
//!
//! With the statefun-rs extension `recordIds: true` each record's data is
//! framed with a versioned prefix carrying a 16-byte [`RecordId`] derived
//! from (egress id, worker, checkpoint id, the record's content, how many
//! equal records this egress received before it in that checkpoint); the
//! engine announces worker and checkpoint with [`Sink::begin_checkpoint`]
//! and replays an undelivered checkpoint's records (possibly in another
//! order) after a crash, so a record re-sent after a crash carries the id of
//! its first attempt (see [`super::split_record_id`]).
//! By default the data is exactly what the function wrote.
//!
//! # Metrics
//!
//! [`Sink::take_stats`] reports the entries acknowledged, throttled
//! (`ProvisionedThroughputExceededException`) and failed (any other error), and
//! the calls sent again, counted where the answers are read: per call, never
//! per record on the engine's side.
//!
//! # Memory bound
//!
//! At most `maxOutstandingRecords` records are buffered: a `write` that
//! reaches the bound flushes before it returns, so a slow stream slows the
//! engine down instead of growing memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use statefun_module::KinesisEgress;
use statefun_sdk::proto::egress::KinesisEgressRecord;
use statefun_sdk::EgressMessage;
use tokio::runtime::Runtime;

use super::client::{backoff, build_client, classify, stream_error, Failure, Who};
use super::record_id::{content_digest, frame_record, RecordId, RECORD_ID_PREFIX_LEN};
use crate::sink::SinkStats;
use crate::{ConnectorError, Sink};

const CONNECTOR: &str = "kinesis egress";

/// Service limits of one `PutRecords` call.
const MAX_BATCH_RECORDS: usize = 500;
const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Service limit of one record (data plus partition key).
const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Tuning of a [`KinesisSink`].
#[derive(Clone, Debug)]
pub struct KinesisSinkOptions {
    /// How long `flush` keeps retrying throttled or failed entries before it
    /// gives up with an error (default 2 minutes).
    pub retry_timeout: Duration,
}

impl Default for KinesisSinkOptions {
    fn default() -> Self {
        KinesisSinkOptions {
            retry_timeout: Duration::from_secs(120),
        }
    }
}

/// What the ids of the records being written derive from: the worker and
/// checkpoint, and per content digest how many such records came before.
#[derive(Debug)]
struct Label {
    worker: u64,
    checkpoint: u64,
    occurrences: HashMap<[u8; 16], u64>,
}

/// The worker value of ids outside checkpoints (runs without `--state-dir`).
const NO_WORKER: u64 = u64::MAX;

/// A value unique to one sink of one run, standing in for the checkpoint id
/// of records written outside checkpoints (nothing replays them).
fn run_nonce() -> u64 {
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ OPENED
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

struct Pending {
    stream: String,
    entry: PutRecordsRequestEntry,
    size: usize,
}

/// A Kinesis egress sink (one per egress, on one worker).
pub struct KinesisSink {
    id: String,
    default_stream: String,
    max_outstanding: usize,
    options: KinesisSinkOptions,
    client: Client,
    runtime: Runtime,
    buffer: Vec<Pending>,
    written: u64,
    /// What `PutRecords` answered since [`Sink::take_stats`] (for metrics).
    stats: SinkStats,
    /// `recordIds`: frame records with their id.
    record_ids: bool,
    label: Label,
}

impl KinesisSink {
    /// Opens the egress `id` with default options.
    pub fn open(id: &str, spec: &KinesisEgress) -> Result<Self, ConnectorError> {
        Self::open_with(id, spec, KinesisSinkOptions::default())
    }

    /// Opens the egress: builds the client (no call is made until the first
    /// flush, since records may name streams other than `streamName`).
    pub fn open_with(
        id: &str,
        spec: &KinesisEgress,
        options: KinesisSinkOptions,
    ) -> Result<Self, ConnectorError> {
        let who = Who {
            connector: CONNECTOR,
            id,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| who.error(format!("cannot start the I/O runtime: {e}")))?;
        let client = runtime.block_on(build_client(
            who,
            &spec.aws_region,
            &spec.aws_credentials,
            &spec.client_config_properties,
        ))?;
        Ok(KinesisSink {
            id: id.to_string(),
            default_stream: spec.stream_name.clone(),
            max_outstanding: spec.max_outstanding_records.max(1),
            options,
            client,
            runtime,
            buffer: Vec::new(),
            written: 0,
            stats: SinkStats::default(),
            record_ids: spec.record_ids,
            label: Label {
                worker: NO_WORKER,
                checkpoint: run_nonce(),
                occurrences: HashMap::new(),
            },
        })
    }

    /// Records acknowledged by Kinesis so far.
    pub fn records_written(&self) -> u64 {
        self.written
    }

    fn error(&self, message: String) -> ConnectorError {
        ConnectorError::config(CONNECTOR, &self.id, message)
    }

    fn io_error(&self, stream: &str, message: String) -> ConnectorError {
        stream_error(CONNECTOR, &self.id, stream, message)
    }

    /// The id of a record with content `digest` (and counts it).
    fn next_id(&mut self, digest: [u8; 16]) -> RecordId {
        let label = &mut self.label;
        let occurrence = if label.worker == NO_WORKER {
            // Outside checkpoints nothing is replayed: a running count keeps
            // ids unique without remembering every content of the run.
            let n = label.occurrences.entry([0; 16]).or_insert(0);
            *n = n.saturating_add(1);
            *n - 1
        } else {
            let seen = label.occurrences.entry(digest).or_insert(0);
            *seen = seen.saturating_add(1);
            *seen - 1
        };
        RecordId::new(&self.id, label.worker, label.checkpoint, digest, occurrence)
    }

    fn decode(&mut self, message: &EgressMessage) -> Result<Pending, ConnectorError> {
        let record = KinesisEgressRecord::from_typed_value(&message.value).map_err(|e| {
            self.error(format!(
                "a record of type `{}` is not a KinesisEgressRecord ({e}); \
                 build egress records with KinesisEgressMessage",
                message.value.typename
            ))
        })?;
        let stream = if record.stream.is_empty() {
            self.default_stream.clone()
        } else {
            record.stream
        };
        if record.partition_key.is_empty() {
            return Err(self.error(format!(
                "a record for stream `{stream}` has an empty partition key; Kinesis requires one"
            )));
        }
        let id = self.record_ids.then(|| {
            let digest = content_digest(
                &stream,
                &record.partition_key,
                &record.explicit_hash_key,
                &record.value_bytes,
            );
            self.next_id(digest)
        });
        let prefix = if self.record_ids {
            RECORD_ID_PREFIX_LEN
        } else {
            0
        };
        let size = prefix + record.value_bytes.len() + record.partition_key.len();
        if size > MAX_RECORD_BYTES {
            return Err(self.error(format!(
                "a record for stream `{stream}` is {size} bytes{}; Kinesis takes at most 1 MiB \
                 (data plus partition key)",
                if self.record_ids {
                    " with its 20-byte record id (recordIds: true)"
                } else {
                    ""
                }
            )));
        }
        let data = match id {
            Some(id) => frame_record(id, &record.value_bytes),
            None => record.value_bytes,
        };
        let mut entry = PutRecordsRequestEntry::builder()
            .data(Blob::new(data))
            .partition_key(record.partition_key);
        if !record.explicit_hash_key.is_empty() {
            entry = entry.explicit_hash_key(record.explicit_hash_key);
        }
        let entry = entry
            .build()
            .map_err(|e| self.error(format!("cannot build a record for `{stream}`: {e}")))?;
        Ok(Pending {
            stream,
            entry,
            size,
        })
    }

    /// Sends one batch of one stream until every entry is acknowledged.
    fn put_batch(
        &mut self,
        stream: &str,
        batch: Vec<PutRecordsRequestEntry>,
    ) -> Result<(), ConnectorError> {
        let deadline = Instant::now() + self.options.retry_timeout;
        let mut entries = batch;
        let mut attempt = 0u32;
        let mut last_problem = String::new();
        while !entries.is_empty() {
            if attempt > 0 {
                if Instant::now() >= deadline {
                    return Err(self.io_error(
                        stream,
                        format!(
                            "{} records not acknowledged after {:?}: {last_problem}",
                            entries.len(),
                            self.options.retry_timeout
                        ),
                    ));
                }
                std::thread::sleep(backoff(
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                    attempt - 1,
                ));
            }
            if attempt > 0 {
                self.stats.retries += 1;
            }
            attempt = attempt.saturating_add(1);
            let mut call = self.client.put_records().set_records(Some(entries.clone()));
            call = if stream.starts_with("arn:") {
                call.stream_arn(stream)
            } else {
                call.stream_name(stream)
            };
            match self.runtime.block_on(call.send()) {
                Ok(out) => {
                    let results = out.records();
                    if results.len() != entries.len() {
                        return Err(self.io_error(
                            stream,
                            format!(
                                "PutRecords answered {} results for {} records",
                                results.len(),
                                entries.len()
                            ),
                        ));
                    }
                    let mut failed = Vec::new();
                    for (entry, result) in entries.iter().zip(results) {
                        match result.error_code() {
                            Some(code) => {
                                if is_throttling(Some(code)) {
                                    self.stats.entries_throttled += 1;
                                } else {
                                    self.stats.entries_failed += 1;
                                }
                                last_problem = format!(
                                    "{code}: {}",
                                    result.error_message().unwrap_or_default()
                                );
                                failed.push(entry.clone());
                            }
                            None => {
                                self.written += 1;
                                self.stats.entries_written += 1;
                            }
                        }
                    }
                    if !failed.is_empty() {
                        tracing::debug!(sink = %self.id, stream, failed = failed.len(), "PutRecords partial failure: {last_problem}; retrying");
                    } else {
                        attempt = 0;
                    }
                    entries = failed;
                }
                Err(e) => {
                    let (failure, text) = classify(&e);
                    if failure == Failure::Fatal {
                        return Err(self.io_error(stream, format!("PutRecords failed: {text}")));
                    }
                    // The whole call was refused: every entry of it is sent again.
                    let code = match &e {
                        SdkError::ServiceError(service) => service.err().code(),
                        _ => None,
                    };
                    let refused = entries.len() as u64;
                    if is_throttling(code) {
                        self.stats.entries_throttled += refused;
                    } else {
                        self.stats.entries_failed += refused;
                    }
                    last_problem = text;
                }
            }
        }
        Ok(())
    }
}

impl Sink for KinesisSink {
    fn write(&mut self, records: &[EgressMessage]) -> Result<(), ConnectorError> {
        for message in records {
            let pending = self.decode(message)?;
            self.buffer.push(pending);
            if self.buffer.len() >= self.max_outstanding {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Entries written, throttled and failed, and calls sent again, since the last call.
    fn take_stats(&mut self) -> SinkStats {
        std::mem::take(&mut self.stats)
    }

    fn begin_checkpoint(&mut self, worker: usize, checkpoint: u64) {
        let worker = worker as u64;
        // The same checkpoint again goes on counting: ids never repeat.
        if (self.label.worker, self.label.checkpoint) != (worker, checkpoint) {
            self.label = Label {
                worker,
                checkpoint,
                occurrences: HashMap::new(),
            };
        }
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Group by stream, keeping first-appearance order and order within a stream.
        let mut order: Vec<String> = Vec::new();
        for p in &self.buffer {
            if !order.contains(&p.stream) {
                order.push(p.stream.clone());
            }
        }
        let buffer = std::mem::take(&mut self.buffer);
        let mut remaining: Vec<Option<Pending>> = buffer.into_iter().map(Some).collect();
        for stream in order {
            let mut batch = Vec::new();
            let mut bytes = 0;
            for slot in remaining.iter_mut() {
                let take = matches!(slot, Some(p) if p.stream == stream);
                if !take {
                    continue;
                }
                let Some(p) = slot.take() else { continue };
                if batch.len() == MAX_BATCH_RECORDS || bytes + p.size > MAX_BATCH_BYTES {
                    let full = std::mem::take(&mut batch);
                    if let Err(e) = self.put_batch(&stream, full) {
                        self.restore(remaining, Some(p));
                        return Err(e);
                    }
                    bytes = 0;
                }
                bytes += p.size;
                batch.push(p.entry);
            }
            if !batch.is_empty() {
                if let Err(e) = self.put_batch(&stream, batch) {
                    self.restore(remaining, None);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Whether an error code (of a `PutRecords` entry or of a whole call) says the stream or
/// its key was throttled, rather than that something failed.
fn is_throttling(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "LimitExceededException"
                | "KMSThrottlingException"
        )
    )
}

impl KinesisSink {
    /// Keeps what was not sent after a failed flush, so a retrying caller does
    /// not lose it (entries of the failed batch itself are not kept).
    fn restore(&mut self, remaining: Vec<Option<Pending>>, current: Option<Pending>) {
        self.buffer = current
            .into_iter()
            .chain(remaining.into_iter().flatten())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinesis::split_record_id;
    use statefun_module::{AwsCredentials, AwsRegion, Properties, Secret, TypeName};
    use statefun_sdk::KinesisEgressMessage;

    /// A sink that is never flushed (no call is made): records stay buffered.
    fn sink(record_ids: bool) -> KinesisSink {
        let spec = KinesisEgress {
            aws_region: AwsRegion::CustomEndpoint {
                endpoint: "http://127.0.0.1:9".into(),
                id: "us-east-1".into(),
            },
            aws_credentials: AwsCredentials::Basic {
                access_key_id: "test".into(),
                secret_access_key: Secret::new("test"),
            },
            stream_name: "s".into(),
            max_outstanding_records: 1000,
            client_config_properties: Properties::default(),
            record_ids,
        };
        KinesisSink::open("t/out", &spec).expect("open")
    }

    fn record(value: &str) -> EgressMessage {
        KinesisEgressMessage::for_egress(TypeName::parse("t/out").expect("id"))
            .with_stream("s")
            .with_partition_key("k")
            .with_utf8_value(value)
            .build()
            .expect("record")
    }

    /// (id, payload) of every buffered record.
    fn buffered(sink: &KinesisSink) -> Vec<(RecordId, Vec<u8>)> {
        sink.buffer
            .iter()
            .map(|p| {
                let data = p.entry.data().as_ref();
                let (id, payload) = split_record_id(data).expect("framed");
                (id, payload.to_vec())
            })
            .collect()
    }

    fn id_of(worker: u64, checkpoint: u64, value: &str, occurrence: u64) -> RecordId {
        let digest = content_digest("s", "k", "", value.as_bytes());
        RecordId::new("t/out", worker, checkpoint, digest, occurrence)
    }

    #[test]
    fn ids_are_the_same_when_a_checkpoint_is_replayed() {
        // First attempt: checkpoints 5 and 6 of worker 1, written in runs.
        let mut first = sink(true);
        first.begin_checkpoint(1, 5);
        first.write(&[record("a"), record("b")]).expect("write");
        first.write(&[record("a")]).expect("write");
        first.begin_checkpoint(1, 6);
        first.write(&[record("c")]).expect("write");
        let sent = buffered(&first);
        // Payloads are the function's bytes; equal payloads still get distinct ids.
        let payloads: Vec<&[u8]> = sent.iter().map(|(_, p)| p.as_slice()).collect();
        assert_eq!(payloads, vec![&b"a"[..], b"b", b"a", b"c"]);
        let expected = [
            id_of(1, 5, "a", 0),
            id_of(1, 5, "b", 0),
            id_of(1, 5, "a", 1),
            id_of(1, 6, "c", 0),
        ];
        assert_eq!(sent.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);
        assert_ne!(sent[0].0, sent[2].0);

        // After a restart: the same checkpoints replayed, in another order
        // and other runs. Every record carries the id of its first attempt.
        let mut again = sink(true);
        again.begin_checkpoint(1, 5);
        again.write(&[record("b")]).expect("write");
        again.write(&[record("a"), record("a")]).expect("write");
        again.begin_checkpoint(1, 6);
        again.write(&[record("c")]).expect("write");
        let mut replayed: Vec<RecordId> = buffered(&again).iter().map(|(id, _)| *id).collect();
        let mut first_ids: Vec<RecordId> = expected.to_vec();
        replayed.sort();
        first_ids.sort();
        assert_eq!(replayed, first_ids);

        // Another worker's records of the same checkpoint have other ids.
        let mut other = sink(true);
        other.begin_checkpoint(0, 5);
        other.write(&[record("a")]).expect("write");
        assert_ne!(buffered(&other)[0].0, sent[0].0);
        // Announcing the same checkpoint again goes on counting.
        first.begin_checkpoint(1, 6);
        first.write(&[record("c")]).expect("write");
        assert_eq!(buffered(&first)[4].0, id_of(1, 6, "c", 1));
    }

    #[test]
    fn records_outside_checkpoints_get_ids_unique_to_the_run() {
        let mut a = sink(true);
        let mut b = sink(true);
        a.write(&[record("x"), record("x")]).expect("write");
        b.write(&[record("x")]).expect("write");
        let (a, b) = (buffered(&a), buffered(&b));
        assert_ne!(a[0].0, a[1].0);
        assert_ne!(a[0].0, b[0].0, "two runs never share ids");
    }

    #[test]
    fn without_record_ids_data_is_the_functions_bytes() {
        let mut s = sink(false);
        s.begin_checkpoint(0, 1);
        s.write(&[record("plain")]).expect("write");
        assert_eq!(s.buffer[0].entry.data().as_ref(), b"plain");
        assert_eq!(s.buffer[0].size, "plain".len() + 1);
        // With ids, the size limit counts the prefix.
        let mut framed = sink(true);
        let big = "x".repeat(MAX_RECORD_BYTES - 1 - RECORD_ID_PREFIX_LEN + 1);
        let err = framed
            .write(&[record(&big)])
            .expect_err("too big")
            .to_string();
        assert!(err.contains("recordIds") && err.contains("1 MiB"), "{err}");
        let mut plain = sink(false);
        plain
            .write(&[record(&big)])
            .expect("fits without the prefix");
    }
}
