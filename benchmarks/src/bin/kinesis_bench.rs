//! Kinesis → function → Kinesis on the emulator, against plain
//! GetRecords/PutRecords with the same client (aws-sdk-kinesis) (issue #7).
//!
//! `--records` records (partition keys `k0..k<keys>`, `--value-size`-byte
//! data) are put once into a `--shards`-shard input stream (the PutRecords
//! rate of that is printed too). Every run then reads the input from
//! `TRIM_HORIZON` and writes one transformed record per input (the input data
//! plus the per-key count) to a fresh output stream of as many shards:
//!
//! * `raw`: one tokio task per input shard: `GetRecords` (`--get-limit`
//!   records per call, at most 5 calls per second per shard, the service
//!   limit the engine's reader also keeps) → per-key count → `PutRecords` in
//!   batches of up to 500, re-sending failed entries; the clock stops when
//!   every record is acknowledged.
//! * `engine`: `io.statefun.kinesis.v1/ingress` → a Rust counter function
//!   (one int state per key) → `io.statefun.kinesis.v1/egress`; the clock
//!   stops when the job, asked to stop once its sinks wrote every record, has
//!   flushed and returned.
//!
//! Afterwards (untimed) the output stream is read back and counted.
//!
//! The emulator is `--endpoint`, else `KINESIS_ENDPOINT`, else the URL
//! `ci/install-kinesis.sh` leaves in `~/.cache/statefun-rs/kinesis/endpoint`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use aws_sdk_kinesis::Client;
use clap::Parser;
use statefun_benchmarks::{
    counter_registry, human, key_of, load_average, now_micros, record_value, transformed,
};
use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, RunOptions, Shared};
use statefun_sdk::{KinesisEgressMessage, TypeName};
use tokio::runtime::Runtime;

type Result<T> = std::result::Result<T, String>;

/// The service's limit on `GetRecords` calls: 5 per second per shard.
const MIN_CALL_INTERVAL: Duration = Duration::from_millis(200);
/// The service's limit on entries per `PutRecords` call.
const MAX_PUT_BATCH: usize = 500;

#[derive(Parser, Debug)]
#[command(about = "Kinesis → function → Kinesis throughput, engine vs plain GetRecords/PutRecords")]
struct Args {
    /// Records per run (put once, read by every run).
    #[arg(long, default_value_t = 5_000)]
    records: u64,
    /// Distinct partition keys (function instances).
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Bytes per record (at least 16).
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Shards of the input and output streams.
    #[arg(long, default_value_t = 2)]
    shards: i32,
    /// Engine workers (threads).
    #[arg(short, long, default_value_t = 1)]
    workers: usize,
    /// Repetitions of every configuration.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Configurations, comma separated: raw, engine.
    #[arg(long, value_delimiter = ',', default_value = "raw,engine")]
    configs: Vec<String>,
    /// `Limit` of the raw loop's GetRecords calls (the service allows 10 000;
    /// the engine's reader asks for 1 000).
    #[arg(long, default_value_t = 10_000)]
    get_limit: i32,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Emulator URL (default: KINESIS_ENDPOINT or ~/.cache/statefun-rs/kinesis/endpoint).
    #[arg(long)]
    endpoint: Option<String>,
    /// Leave the benchmark's streams in the emulator.
    #[arg(long)]
    keep_streams: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    statefun_benchmarks::main_with(|| run(args))
}

/// An AWS SDK error with its whole chain of causes.
fn sdk_error<E: std::error::Error + 'static>(
    what: &str,
    e: aws_sdk_kinesis::error::SdkError<E>,
) -> String {
    format!("{what}: {}", DisplayErrorContext(e))
}

struct Bench {
    args: Args,
    endpoint: String,
    prefix: String,
    runtime: Runtime,
    client: Client,
    streams: Vec<String>,
}

struct RunResult {
    label: String,
    elapsed: Duration,
    read_back: u64,
}

fn run(args: Args) -> Result<()> {
    for c in &args.configs {
        if c != "raw" && c != "engine" {
            return Err(format!("unknown configuration `{c}`: use raw or engine"));
        }
    }
    if args.value_size < 16 {
        return Err("--value-size must be at least 16".into());
    }
    let endpoint = args
        .endpoint
        .clone()
        .or_else(statefun_testkit::kinesis_address)
        .ok_or("no Kinesis emulator: pass --endpoint, set KINESIS_ENDPOINT or run ci/install-kinesis.sh")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let client = runtime.block_on(client(&endpoint));
    let mut bench = Bench {
        prefix: format!(
            "kinbench-{}-{}",
            std::process::id(),
            now_micros() % 1_000_000
        ),
        args,
        endpoint,
        runtime,
        client,
        streams: Vec::new(),
    };
    println!(
        "kinesis_bench: emulator {}, {} records, {} keys, {}-byte values, {} shards, {} worker(s); load average {}",
        bench.endpoint,
        bench.args.records,
        bench.args.keys,
        bench.args.value_size,
        bench.args.shards,
        bench.args.workers,
        load_average()
    );
    let result = bench.run_all();
    if !bench.args.keep_streams {
        bench.delete_streams();
    }
    result
}

async fn client(endpoint: &str) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    Client::new(&config)
}

impl Bench {
    fn run_all(&mut self) -> Result<()> {
        let input = format!("{}-in", self.prefix);
        self.create_stream(&input)?;
        self.put_input(&input)?;
        let mut results = Vec::new();
        for run in 1..=self.args.runs {
            for label in self.args.configs.clone() {
                let output = format!("{}-out-{label}-{run}", self.prefix);
                self.create_stream(&output)?;
                println!("\n[{label}-{run}] {input} → {output}");
                let elapsed = if label == "raw" {
                    self.raw(&input, &output, &label, run)?
                } else {
                    self.engine(&input, &output, &label, run)?
                };
                let read_back = self.runtime.block_on(count_stream(&self.client, &output))?;
                let n = self.args.records;
                println!(
                    "[{label}-{run}] {n} records in {:.2} s: {}/s; {read_back} records in the output stream",
                    elapsed.as_secs_f64(),
                    human(n as f64 / elapsed.as_secs_f64())
                );
                results.push(RunResult {
                    label,
                    elapsed,
                    read_back,
                });
            }
        }
        println!("\nload average at the end: {}", load_average());
        let raw: Vec<f64> = results
            .iter()
            .filter(|r| r.label == "raw")
            .map(|r| self.args.records as f64 / r.elapsed.as_secs_f64())
            .collect();
        let raw_mean = (!raw.is_empty()).then(|| raw.iter().sum::<f64>() / raw.len() as f64);
        println!(
            "\n| configuration | records/s | elapsed | output records | ratio to raw (mean) |"
        );
        println!("| --- | --- | --- | --- | --- |");
        for r in &results {
            let rate = self.args.records as f64 / r.elapsed.as_secs_f64();
            println!(
                "| {} | {} | {:.2} s | {} | {} |",
                r.label,
                human(rate),
                r.elapsed.as_secs_f64(),
                r.read_back,
                raw_mean
                    .map(|m| format!("{:.3}", rate / m))
                    .unwrap_or_else(|| "-".into())
            );
        }
        Ok(())
    }

    fn create_stream(&mut self, name: &str) -> Result<()> {
        let client = &self.client;
        let shards = self.args.shards;
        self.runtime.block_on(async {
            client
                .create_stream()
                .stream_name(name)
                .shard_count(shards)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("create stream {name}"), e))?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let d = client
                    .describe_stream_summary()
                    .stream_name(name)
                    .send()
                    .await
                    .map_err(|e| sdk_error(&format!("describe stream {name}"), e))?;
                let active = d
                    .stream_description_summary()
                    .is_some_and(|s| s.stream_status().as_str() == "ACTIVE");
                if active {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!("stream {name} did not become active within 60 s"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })?;
        self.streams.push(name.to_owned());
        Ok(())
    }

    fn delete_streams(&mut self) {
        for name in std::mem::take(&mut self.streams) {
            let call = self
                .client
                .delete_stream()
                .stream_name(&name)
                .enforce_consumer_deletion(true)
                .send();
            if let Err(e) = self.runtime.block_on(call) {
                eprintln!(
                    "warning: {}",
                    sdk_error(&format!("delete stream {name}"), e)
                );
            }
        }
    }

    /// Puts the input with PutRecords, one batch of 500 in flight per shard.
    fn put_input(&self, stream: &str) -> Result<()> {
        let n = self.args.records;
        let entries: Vec<PutRecordsRequestEntry> = (0..n)
            .map(|seq| {
                PutRecordsRequestEntry::builder()
                    .partition_key(key_of(seq, self.args.keys))
                    .data(Blob::new(record_value(0, seq, self.args.value_size)))
                    .build()
                    .map_err(|e| format!("input record: {e}"))
            })
            .collect::<Result<_>>()?;
        let started = Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let tasks = self.args.shards.max(1) as usize;
        let chunks: Vec<Vec<PutRecordsRequestEntry>> = entries
            .chunks(MAX_PUT_BATCH)
            .map(<[PutRecordsRequestEntry]>::to_vec)
            .collect();
        let per_task = chunks.len().div_ceil(tasks);
        let mut chunks = chunks.into_iter();
        self.runtime.block_on(async {
            let mut handles = Vec::new();
            for _ in 0..tasks {
                let mine: Vec<_> = chunks.by_ref().take(per_task).collect();
                let (client, stream, done, refused) = (
                    self.client.clone(),
                    stream.to_owned(),
                    done.clone(),
                    refused.clone(),
                );
                handles.push(tokio::spawn(async move {
                    for batch in mine {
                        put_all(&client, &stream, batch, &done, &refused).await?;
                    }
                    Ok::<(), String>(())
                }));
            }
            let progress = progress_printer("input", done.clone(), n, started);
            for h in handles {
                h.await.map_err(|e| format!("put task: {e}"))??;
            }
            progress.abort();
            Ok::<(), String>(())
        })?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "put {n} input records into {stream} in {secs:.2} s ({}/s, PutRecords only; {} entries refused and re-sent)",
            human(n as f64 / secs),
            refused.load(Ordering::Relaxed)
        );
        Ok(())
    }

    fn raw(&self, input: &str, output: &str, label: &str, run: usize) -> Result<Duration> {
        let n = self.args.records;
        let limit = self.args.get_limit;
        let timeout = Duration::from_secs(self.args.timeout);
        self.runtime.block_on(async {
            let shards = self
                .client
                .list_shards()
                .stream_name(input)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("list shards of {input}"), e))?;
            let started = Instant::now();
            let done = Arc::new(AtomicU64::new(0));
            let refused = Arc::new(AtomicU64::new(0));
            let mut handles = Vec::new();
            for shard in shards.shards() {
                let (client, input, output, done, refused) = (
                    self.client.clone(),
                    input.to_owned(),
                    output.to_owned(),
                    done.clone(),
                    refused.clone(),
                );
                let shard_id = shard.shard_id().to_owned();
                handles.push(tokio::spawn(async move {
                    let counters = (&*done, &*refused);
                    raw_shard(&client, (&input, &shard_id), &output, limit, counters, n).await
                }));
            }
            let progress = progress_printer(&format!("{label}-{run}"), done.clone(), n, started);
            let all = async {
                for h in handles {
                    h.await.map_err(|e| format!("raw task: {e}"))??;
                }
                Ok::<(), String>(())
            };
            let result = tokio::time::timeout(timeout, all).await;
            progress.abort();
            match result {
                Ok(r) => r?,
                Err(_) => return Err(format!("raw loop timed out after {timeout:?}")),
            }
            let elapsed = started.elapsed();
            println!(
                "[{label}-{run}] PutRecords entries refused and re-sent: {}",
                refused.load(Ordering::Relaxed)
            );
            Ok(elapsed)
        })
    }

    fn engine(&self, input: &str, output: &str, label: &str, run: usize) -> Result<Duration> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let endpoint = &self.endpoint;
        let yaml = format!(
            "kind: io.statefun.kinesis.v1/ingress
spec:
  id: bench/in
  awsRegion: {{ type: custom-endpoint, endpoint: \"{endpoint}\", id: us-east-1 }}
  awsCredentials: {{ type: basic, accessKeyId: test, secretAccessKey: test }}
  startupPosition: {{ type: trim-horizon }}
  streams:
    - stream: {input}
      valueType: bench/raw
      targets: [bench/counter]
---
kind: io.statefun.kinesis.v1/egress
spec:
  id: bench/out
  awsRegion: {{ type: custom-endpoint, endpoint: \"{endpoint}\", id: us-east-1 }}
  awsCredentials: {{ type: basic, accessKeyId: test, secretAccessKey: test }}
  streamName: {output}
"
        );
        let module = dir.path().join("module.yaml");
        std::fs::write(&module, yaml).map_err(|e| format!("write {}: {e}", module.display()))?;
        let egress = TypeName::parse("bench/out").map_err(|e| e.to_string())?;
        let stream: Arc<str> = output.into();
        let registry = counter_registry(move |id, value| {
            KinesisEgressMessage::for_egress(egress.clone())
                .with_stream(&stream)
                .with_partition_key(id)
                .with_value(value)
                .build()
        })?;
        let options = RunOptions {
            cluster: ClusterConfig {
                workers: self.args.workers,
                ..ClusterConfig::default()
            },
            ..RunOptions::default()
        };
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let n = self.args.records;
        let started = Instant::now();
        let handle = std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || run_module(&module, &registry, &options, s))
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        let deadline = started + Duration::from_secs(self.args.timeout);
        let mut last = (Instant::now(), 0u64);
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let out = shared.metrics.records_out.load(Ordering::Relaxed);
            if out >= n || shared.failed() || handle.is_finished() {
                break;
            }
            if Instant::now() > deadline {
                shared.request_shutdown();
                let _ = handle.join();
                return Err(format!(
                    "engine timed out with {out} of {n} records written"
                ));
            }
            if last.0.elapsed() >= Duration::from_secs(2) {
                println!(
                    "[{label}-{run}] {:5.1} s: in {} out {} ({}/s)",
                    started.elapsed().as_secs_f64(),
                    shared.metrics.records_in.load(Ordering::Relaxed),
                    out,
                    human((out - last.1) as f64 / last.0.elapsed().as_secs_f64())
                );
                last = (Instant::now(), out);
            }
        }
        let written = started.elapsed();
        shared.request_shutdown();
        let report = handle
            .join()
            .map_err(|_| "the engine thread panicked".to_string())?
            .map_err(|e| format!("engine: {e}"))?;
        let elapsed = started.elapsed();
        println!(
            "[{label}-{run}] sinks took all {n} records after {:.2} s; the job had flushed and stopped after {:.2} s ({} in, {} out)",
            written.as_secs_f64(),
            elapsed.as_secs_f64(),
            report.records_in,
            report.records_out
        );
        if report.records_out < n {
            return Err(format!(
                "the engine wrote {} of {n} records",
                report.records_out
            ));
        }
        Ok(elapsed)
    }
}

/// Prints `done` every 2 s until aborted.
fn progress_printer(
    tag: &str,
    done: Arc<AtomicU64>,
    n: u64,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    let tag = tag.to_owned();
    tokio::spawn(async move {
        let mut last = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = done.load(Ordering::Relaxed);
            println!(
                "[{tag}] {:5.1} s: {now} of {n} ({}/s)",
                started.elapsed().as_secs_f64(),
                human((now - last) as f64 / 2.0)
            );
            last = now;
        }
    })
}

/// Puts `entries` until every one is acknowledged, re-sending failed ones.
/// Entries the service refused (throttled) are counted into `refused`.
async fn put_all(
    client: &Client,
    stream: &str,
    mut entries: Vec<PutRecordsRequestEntry>,
    done: &AtomicU64,
    refused: &AtomicU64,
) -> Result<()> {
    let mut attempt = 0u32;
    while !entries.is_empty() {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10)))).await;
        }
        attempt += 1;
        let out = match client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries.clone()))
            .send()
            .await
        {
            Ok(out) => out,
            // Transient failures (throttling, a busy emulator) are retried with backoff.
            Err(_) if attempt < 50 => continue,
            Err(e) => return Err(sdk_error(&format!("PutRecords to {stream}"), e)),
        };
        let results = out.records();
        if results.len() != entries.len() {
            return Err(format!(
                "PutRecords to {stream}: {} results for {} records",
                results.len(),
                entries.len()
            ));
        }
        let failed: Vec<PutRecordsRequestEntry> = entries
            .iter()
            .zip(results)
            .filter(|(_, r)| r.error_code().is_some())
            .map(|(e, _)| e.clone())
            .collect();
        done.fetch_add((entries.len() - failed.len()) as u64, Ordering::Relaxed);
        refused.fetch_add(failed.len() as u64, Ordering::Relaxed);
        if failed.is_empty() {
            attempt = 0;
        }
        entries = failed;
    }
    Ok(())
}

/// The baseline for one shard: read, count, write the transformed records.
async fn raw_shard(
    client: &Client,
    (input, shard_id): (&str, &str),
    output: &str,
    limit: i32,
    (done, refused): (&AtomicU64, &AtomicU64),
    target: u64,
) -> Result<()> {
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(input)
        .shard_id(shard_id)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .map_err(|e| sdk_error(&format!("shard iterator of {input}/{shard_id}"), e))?
        .shard_iterator
        .ok_or_else(|| format!("no shard iterator for {input}/{shard_id}"))?;
    let mut counts: HashMap<String, i32> = HashMap::new();
    let mut last_call: Option<Instant> = None;
    while done.load(Ordering::Relaxed) < target {
        if let Some(at) = last_call {
            tokio::time::sleep_until((at + MIN_CALL_INTERVAL).into()).await;
        }
        last_call = Some(Instant::now());
        let out = match client
            .get_records()
            .shard_iterator(&iterator)
            .limit(limit)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let throttled = e
                    .as_service_error()
                    .is_some_and(|s| s.is_provisioned_throughput_exceeded_exception());
                if throttled {
                    continue;
                }
                return Err(sdk_error(&format!("GetRecords on {input}/{shard_id}"), e));
            }
        };
        let mut batch = Vec::with_capacity(out.records.len());
        for record in out.records {
            let key = record.partition_key.unwrap_or_default();
            let count = match counts.get_mut(&key) {
                Some(c) => {
                    *c += 1;
                    *c
                }
                None => {
                    counts.insert(key.clone(), 1);
                    1
                }
            };
            let data = transformed(record.data.as_ref(), count);
            batch.push(
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(data))
                    .build()
                    .map_err(|e| format!("output record: {e}"))?,
            );
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(MAX_PUT_BATCH));
            put_all(client, output, batch, done, refused).await?;
            batch = rest;
        }
        match out.next_shard_iterator {
            Some(next) if !next.is_empty() => iterator = next,
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Counts the records in every shard of `stream` (read from TRIM_HORIZON to the tip).
async fn count_stream(client: &Client, stream: &str) -> Result<u64> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| sdk_error(&format!("list shards of {stream}"), e))?;
    let mut total = 0u64;
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("shard iterator of {stream}"), e))?
            .shard_iterator;
        let mut last_call: Option<Instant> = None;
        while let Some(it) = iterator.take() {
            if let Some(at) = last_call {
                tokio::time::sleep_until((at + MIN_CALL_INTERVAL).into()).await;
            }
            last_call = Some(Instant::now());
            let out = match client
                .get_records()
                .shard_iterator(&it)
                .limit(10_000)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_provisioned_throughput_exceeded_exception()) =>
                {
                    iterator = Some(it);
                    continue;
                }
                Err(e) => return Err(sdk_error(&format!("GetRecords on {stream}"), e)),
            };
            total += out.records.len() as u64;
            if out.records.is_empty() && out.millis_behind_latest.unwrap_or(0) == 0 {
                break;
            }
            iterator = out.next_shard_iterator;
        }
    }
    Ok(total)
}
