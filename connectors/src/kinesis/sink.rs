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
//! # Memory bound
//!
//! At most `maxOutstandingRecords` records are buffered: a `write` that
//! reaches the bound flushes before it returns, so a slow stream slows the
//! engine down instead of growing memory.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use statefun_module::KinesisEgress;
use statefun_sdk::proto::egress::KinesisEgressRecord;
use statefun_sdk::EgressMessage;
use tokio::runtime::Runtime;

use super::client::{backoff, build_client, classify, hint_for, Failure, Who};
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
        })
    }

    /// Records acknowledged by Kinesis so far.
    pub fn records_written(&self) -> u64 {
        self.written
    }

    fn error(&self, message: String) -> ConnectorError {
        ConnectorError::Config {
            connector: CONNECTOR,
            id: self.id.clone(),
            message,
        }
    }

    fn io_error(&self, stream: &str, message: String) -> ConnectorError {
        ConnectorError::Io {
            connector: CONNECTOR,
            id: self.id.clone(),
            path: stream.to_string(),
            hint: hint_for(&message).to_string(),
            source: std::io::Error::other(message),
        }
    }

    fn decode(&self, message: &EgressMessage) -> Result<Pending, ConnectorError> {
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
        let size = record.value_bytes.len() + record.partition_key.len();
        if size > MAX_RECORD_BYTES {
            return Err(self.error(format!(
                "a record for stream `{stream}` is {size} bytes; Kinesis takes at most 1 MiB \
                 (data plus partition key)"
            )));
        }
        let mut entry = PutRecordsRequestEntry::builder()
            .data(Blob::new(record.value_bytes))
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
                                last_problem = format!(
                                    "{code}: {}",
                                    result.error_message().unwrap_or_default()
                                );
                                failed.push(entry.clone());
                            }
                            None => self.written += 1,
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
