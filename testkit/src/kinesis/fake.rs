//! A tiny fake Kinesis endpoint (the x-amz-json-1.1 protocol over HTTP/1.1)
//! for what the emulator cannot do on demand: throttle reads and writes, fail
//! some entries of a `PutRecords` (throttled, or with `InternalFailure`), expire an iterator, refuse credentials.
//!
//! It serves one stream with one shard ([`SHARD`]), whose records are
//! [`State::records`], and answers `ListShards`, `GetShardIterator`,
//! `GetRecords` and `PutRecords` (any stream name), counting every call so that
//! a test can check how a connector retried. It needs no emulator, so the
//! connectors' failure handling is tested on every machine.
//!
//! ```no_run
//! use statefun_testkit::kinesis::fake::{Fake, State};
//! let fake = Fake::start(State {
//!     throttle_put_records: 2,
//!     ..State::default()
//! });
//! // … point a Kinesis egress at `fake.endpoint` and write …
//! assert_eq!(fake.state().throttled.get("PutRecords"), Some(&2));
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Value};

/// The id of the one shard.
pub const SHARD: &str = "shardId-000000000000";

/// What the fake serves, how it misbehaves, and what it saw; shared with the
/// test through [`Fake::state`].
#[derive(Default)]
pub struct State {
    /// The shard's records: (partition key, data).
    pub records: Vec<(String, Vec<u8>)>,
    /// Calls per operation (`GetRecords`, …), throttled ones included.
    pub calls: BTreeMap<String, u64>,
    /// Calls answered with `ProvisionedThroughputExceededException`, per operation.
    pub throttled: BTreeMap<String, u64>,
    /// How many more `GetRecords` calls to throttle (every other call until used up).
    pub throttle_get_records: u64,
    /// Answer `ExpiredIteratorException` once, after this many records were served.
    pub expire_after: Option<usize>,
    /// How many more `PutRecords` calls to throttle as a whole.
    pub throttle_put_records: u64,
    /// How many more `PutRecords` calls fail every other entry, throttled
    /// (`ProvisionedThroughputExceededException`).
    pub partial_put_records: u64,
    /// How many more `PutRecords` calls (after `partial_put_records` are used up) fail
    /// every other entry with `InternalFailure`: a failure that is not throttling.
    pub partial_put_records_internal: u64,
    /// Entries failed inside otherwise successful `PutRecords` calls.
    pub failed_entries: u64,
    /// Shard iterator types asked for, in order.
    pub iterator_types: Vec<String>,
    /// Requests signed with this access key are refused.
    pub refuse_access_key: Option<String>,
}

/// A running fake endpoint: a thread that accepts connections, and one
/// thread per connection. It runs until the test process exits.
pub struct Fake {
    /// The endpoint URL, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The state the fake serves from and records into.
    pub state: Arc<Mutex<State>>,
}

impl Fake {
    /// Starts a fake on a free port of 127.0.0.1, serving `state`.
    pub fn start(state: State) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(conn, &state));
            }
        });
        Fake { endpoint, state }
    }

    /// The state, locked; a lock poisoned by a panicking thread is taken over
    /// as it is, so a test still sees what happened.
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let target = headers.get("x-amz-target").cloned().unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default().to_string();
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, response) = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let refused = s.refuse_access_key.as_ref().is_some_and(|key| {
                headers
                    .get("authorization")
                    .is_some_and(|a| a.contains(&format!("Credential={key}/")))
            });
            if refused {
                *s.calls.entry(operation.clone()).or_default() += 1;
                (
                    400,
                    json!({"__type": "UnrecognizedClientException",
                           "message": "The security token included in the request is invalid."}),
                )
            } else {
                answer(&mut s, &operation, &request)
            }
        };
        let text = response.to_string();
        let reason = if status == 200 { "OK" } else { "Bad Request" };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\n\
             x-amzn-RequestId: fake\r\nContent-Length: {}\r\n\r\n",
            text.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(text.as_bytes()).is_err()
        {
            return;
        }
    }
}

fn throttle(s: &mut State, operation: &str) -> (u16, Value) {
    *s.throttled.entry(operation.to_string()).or_default() += 1;
    (
        400,
        json!({"__type": "ProvisionedThroughputExceededException",
               "message": "Rate exceeded for shard shardId-000000000000"}),
    )
}

fn sequence(i: usize) -> String {
    format!("4960{i:020}")
}

fn position_after(seq: &str) -> usize {
    seq.strip_prefix("4960")
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |i| i + 1)
}

fn answer(s: &mut State, operation: &str, request: &Value) -> (u16, Value) {
    let calls = {
        let n = s.calls.entry(operation.to_string()).or_default();
        *n += 1;
        *n
    };
    match operation {
        "ListShards" => (
            200,
            json!({"Shards": [{
                "ShardId": SHARD,
                "HashKeyRange": {"StartingHashKey": "0",
                    "EndingHashKey": "340282366920938463463374607431768211455"},
                "SequenceNumberRange": {"StartingSequenceNumber": sequence(0)}
            }]}),
        ),
        "GetShardIterator" => {
            let kind = request["ShardIteratorType"].as_str().unwrap_or_default();
            s.iterator_types.push(kind.to_string());
            let position = match kind {
                "AFTER_SEQUENCE_NUMBER" => {
                    position_after(request["StartingSequenceNumber"].as_str().unwrap_or(""))
                }
                "LATEST" => s.records.len(),
                _ => 0,
            };
            (200, json!({"ShardIterator": format!("it-{position}")}))
        }
        "GetRecords" => {
            if s.throttle_get_records > 0 && calls % 2 == 1 {
                s.throttle_get_records -= 1;
                return throttle(s, operation);
            }
            let position: usize = request["ShardIterator"]
                .as_str()
                .and_then(|i| i.strip_prefix("it-"))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if s.expire_after.is_some_and(|n| position >= n) {
                s.expire_after = None;
                return (
                    400,
                    json!({"__type": "ExpiredIteratorException", "message": "Iterator expired"}),
                );
            }
            let end = (position + 7).min(s.records.len());
            let records: Vec<Value> = s.records[position.min(end)..end]
                .iter()
                .enumerate()
                .map(|(i, (key, data))| {
                    json!({
                        "Data": base64::engine::general_purpose::STANDARD.encode(data),
                        "PartitionKey": key,
                        "SequenceNumber": sequence(position + i),
                        "ApproximateArrivalTimestamp": 1.7e9,
                    })
                })
                .collect();
            (
                200,
                json!({"Records": records, "NextShardIterator": format!("it-{end}"),
                       "MillisBehindLatest": 0}),
            )
        }
        "PutRecords" => {
            if s.throttle_put_records > 0 {
                s.throttle_put_records -= 1;
                return throttle(s, operation);
            }
            let partial = s.partial_put_records > 0 || s.partial_put_records_internal > 0;
            let code = if s.partial_put_records > 0 {
                s.partial_put_records -= 1;
                "ProvisionedThroughputExceededException"
            } else if s.partial_put_records_internal > 0 {
                s.partial_put_records_internal -= 1;
                "InternalFailure"
            } else {
                ""
            };
            let entries = request["Records"].as_array().cloned().unwrap_or_default();
            let mut results = Vec::new();
            let mut failed = 0;
            for (i, entry) in entries.iter().enumerate() {
                if partial && i % 2 == 1 {
                    failed += 1;
                    let message = if code == "InternalFailure" {
                        "Internal service failure"
                    } else {
                        "Rate exceeded for shard"
                    };
                    results.push(json!({"ErrorCode": code, "ErrorMessage": message}));
                    continue;
                }
                let data = base64::engine::general_purpose::STANDARD
                    .decode(entry["Data"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                let key = entry["PartitionKey"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                s.records.push((key, data));
                results.push(json!({"SequenceNumber": sequence(s.records.len() - 1),
                                    "ShardId": SHARD}));
            }
            s.failed_entries += failed;
            (
                200,
                json!({"FailedRecordCount": failed, "Records": results}),
            )
        }
        other => (
            400,
            json!({"__type": "UnknownOperationException", "message": other}),
        ),
    }
}
