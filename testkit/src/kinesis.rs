//! A plain AWS client on the Kinesis emulator, for tests: streams, input, read-back;
//! and, in [`fake`], a fake endpoint for the failures the emulator cannot produce.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::ProvideErrorMetadata as _;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use aws_sdk_kinesis::Client;
use tokio::runtime::Runtime;

pub mod fake;

/// The region the emulator's streams live in.
pub const REGION: &str = "us-east-1";
/// The emulator's account id (in stream ARNs).
pub const ACCOUNT: &str = "000000000000";

/// The ARN of stream `name` on the emulator.
pub fn arn(name: &str) -> String {
    format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}")
}

/// A blocking client on the emulator (its own small tokio runtime).
pub struct Emulator {
    /// The endpoint URL.
    pub endpoint: String,
    /// The runtime the client's calls are blocked on.
    pub rt: Runtime,
    /// The AWS SDK client, with test credentials.
    pub client: Client,
}

impl Emulator {
    /// A client on the emulator of [`crate::kinesis_endpoint`]; `None` means skip the test.
    pub fn connect() -> Option<Emulator> {
        Some(Emulator::at(crate::kinesis_endpoint()?))
    }

    /// A client on the emulator at `endpoint` (e.g. a private copy of the
    /// shared one, see [`crate::service::Service::clone_with`]).
    pub fn at(endpoint: String) -> Emulator {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let config = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(REGION))
                .endpoint_url(&endpoint)
                .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .load(),
        );
        let client = Client::new(&config);
        Emulator {
            endpoint,
            rt,
            client,
        }
    }

    /// Creates stream `name` with `shards` shards and waits until it is active.
    pub fn create_stream(&self, name: &str, shards: i32) {
        self.rt
            .block_on(
                self.client
                    .create_stream()
                    .stream_name(name)
                    .shard_count(shards)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("create stream {name}: {:?}", e.code()));
        self.wait_active(name);
    }

    /// Waits (at most 30 s) until stream `name` is active.
    pub fn wait_active(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .rt
                .block_on(
                    self.client
                        .describe_stream_summary()
                        .stream_name(name)
                        .send(),
                )
                .expect("describe stream");
            let status = out
                .stream_description_summary()
                .map(|s| s.stream_status().clone());
            if status == Some(StreamStatus::Active) {
                return;
            }
            assert!(Instant::now() < deadline, "stream {name} not active");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Puts one record; returns its (shard id, sequence number).
    pub fn put(&self, stream: &str, key: &str, data: &[u8]) -> (String, String) {
        self.put_record(stream, None, key, data)
    }

    /// Puts one record into the shard whose hash key range holds `hash_key`
    /// (a decimal 128-bit number: `"0"` is the first shard's); returns its
    /// (shard id, sequence number).
    pub fn put_at(&self, stream: &str, hash_key: &str, key: &str, data: &[u8]) -> (String, String) {
        self.put_record(stream, Some(hash_key), key, data)
    }

    fn put_record(
        &self,
        stream: &str,
        hash_key: Option<&str>,
        key: &str,
        data: &[u8],
    ) -> (String, String) {
        let out = self
            .rt
            .block_on(
                self.client
                    .put_record()
                    .stream_name(stream)
                    .partition_key(key)
                    .set_explicit_hash_key(hash_key.map(str::to_string))
                    .data(Blob::new(data.to_vec()))
                    .send(),
            )
            .expect("put record");
        (out.shard_id, out.sequence_number)
    }

    /// Puts `(key, data)` records with `PutRecords` (500 per call), re-sending
    /// failed entries until all are in (at most a minute).
    pub fn put_all(&self, stream: &str, records: &[(String, Vec<u8>)]) {
        for chunk in records.chunks(500) {
            let mut entries: Vec<PutRecordsRequestEntry> = chunk
                .iter()
                .map(|(k, v)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(k)
                        .data(Blob::new(v.clone()))
                        .build()
                        .expect("entry")
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !entries.is_empty() {
                assert!(Instant::now() < deadline, "input not accepted");
                let call = self
                    .client
                    .put_records()
                    .stream_name(stream)
                    .set_records(Some(entries.clone()));
                match self.rt.block_on(call.send()) {
                    Ok(out) => {
                        entries = entries
                            .into_iter()
                            .zip(out.records())
                            .filter(|(_, r)| r.error_code().is_some())
                            .map(|(e, _)| e)
                            .collect();
                    }
                    Err(e) => eprintln!("put records: {:?}; retrying", e.code()),
                }
                if !entries.is_empty() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The ids of the stream's shards.
    pub fn shard_ids(&self, stream: &str) -> Vec<String> {
        let out = self
            .rt
            .block_on(self.client.list_shards().stream_name(stream).send())
            .expect("list shards");
        out.shards()
            .iter()
            .map(|s| s.shard_id().to_string())
            .collect()
    }

    /// Every record of every shard, from the trim horizon: (partition key, data).
    pub fn read_all(&self, stream: &str) -> Vec<(String, Vec<u8>)> {
        let mut all = Vec::new();
        for shard in self.shard_ids(stream) {
            let mut it = self
                .rt
                .block_on(
                    self.client
                        .get_shard_iterator()
                        .stream_name(stream)
                        .shard_id(&shard)
                        .shard_iterator_type(ShardIteratorType::TrimHorizon)
                        .send(),
                )
                .expect("shard iterator")
                .shard_iterator;
            while let Some(i) = it {
                let out = self
                    .rt
                    .block_on(self.client.get_records().shard_iterator(i).send())
                    .expect("get records");
                let n = out.records.len();
                for r in out.records {
                    all.push((r.partition_key.unwrap_or_default(), r.data.into_inner()));
                }
                if n == 0 {
                    break;
                }
                it = out.next_shard_iterator;
            }
        }
        all
    }
}
