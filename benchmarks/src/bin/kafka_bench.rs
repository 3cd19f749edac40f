//! Kafka → function → Kafka, against a plain rdkafka consume→produce loop on
//! the same broker (issue #6).
//!
//! Throughput: `--records` records (keys `k0..k<keys>`, `--value-size`-byte
//! values) are produced once to a `--partitions`-partition input topic. Every
//! configuration then reads that topic from the beginning and writes one
//! transformed record per input (the input value plus the per-key count) to a
//! fresh output topic; the clock runs from the start of the system until a
//! `read_committed` consumer of the output has seen every record.
//!
//! * `plain`: one rdkafka `BaseConsumer` (partitions assigned, from the
//!   beginning) and one `BaseProducer` (default settings, like the egress),
//!   a `HashMap` of counts; no offset commits, no transactions.
//! * `txn-<interval>`: the same loop with a transactional producer: every
//!   interval it commits the output together with the consumed offsets
//!   (`send_offsets_to_transaction`), first serving delivery reports until
//!   nothing is in flight (see `commit`).
//! * `naive-txn-<interval>`: the same, calling `commit_transaction` with
//!   records in flight, as the engine's exactly-once sink does: rdkafka's
//!   flush then always waits at least 100 ms.
//! * `alo`: the engine, `deliverySemantic: at-least-once`, state in memory.
//! * `alo-<interval>`: the same with RocksDB state checkpointed every interval.
//! * `eo-<interval>`: `exactly-once` (one Kafka transaction per checkpoint per
//!   worker); needs checkpoints, so state is in RocksDB (`--state-dir` in a
//!   temporary directory) checkpointed every interval.
//!
//! Latency: a fresh input topic, the system started and given `--warmup`
//! to start, then a producer paced at `--latency-rate` records/s for
//! `--latency-secs` writes its send time into each value; the output consumer
//! reports receive time − send time (the first second of sending is dropped
//! as warm-up).
//!
//! The broker is `--bootstrap`, else `KAFKA_BOOTSTRAP`, else the address
//! `ci/install-kafka.sh` leaves in `~/.cache/statefun-rs/kafka/bootstrap`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use statefun_benchmarks::{
    counter_registry, human, key_of, load_average, ms, now_micros, parse_duration, record_value,
    send_micros, transformed, Latencies,
};
use statefun_engine::app::Durability;
use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, RunOptions, Shared};
use statefun_sdk::{KafkaEgressMessage, TypeName};

type Result<T> = std::result::Result<T, String>;

#[derive(Parser, Debug)]
#[command(
    about = "Kafka → function → Kafka throughput and latency, engine vs a plain rdkafka loop"
)]
struct Args {
    /// Records per throughput run (produced once, read by every run).
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Distinct keys (function instances).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per input value (at least 16: send time and sequence number).
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 2)]
    partitions: i32,
    /// Engine workers (threads).
    #[arg(short, long, default_value_t = 1)]
    workers: usize,
    /// Repetitions of every configuration.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Configurations, comma separated: plain, alo, alo-<interval>, eo-<interval>.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "plain,alo,eo-100ms,eo-1s"
    )]
    configs: Vec<String>,
    /// Skip the throughput runs.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip the latency runs.
    #[arg(long)]
    skip_latency: bool,
    /// Records per second of the paced latency producer.
    #[arg(long, default_value_t = 2000)]
    latency_rate: u64,
    /// Seconds of paced input per latency run.
    #[arg(long, default_value_t = 5)]
    latency_secs: u64,
    /// Seconds a system gets to start before the paced producer begins.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Broker address (default: KAFKA_BOOTSTRAP or ~/.cache/statefun-rs/kafka/bootstrap).
    #[arg(long)]
    bootstrap: Option<String>,
    /// Leave the benchmark's topics on the broker.
    #[arg(long)]
    keep_topics: bool,
    /// Only delete the `kbench-*` topics that interrupted runs left behind, then exit
    /// (while no other kafka_bench runs on the broker).
    #[arg(long)]
    delete_leftovers: bool,
    /// A librdkafka producer property `key=value` (repeatable), set on the plain
    /// loop's producer and as a `properties` entry of the engine's egress.
    #[arg(long = "producer-property", value_parser = parse_property)]
    producer_properties: Vec<(String, String)>,
}

fn parse_property(text: &str) -> Result<(String, String)> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not key=value"))
}

/// A system under test.
#[derive(Clone, Debug)]
enum Config {
    /// `txn`: transactional, committing every interval; `naive`: committing
    /// with records in flight (see `commit`).
    Plain { txn: Option<Duration>, naive: bool },
    Engine {
        exactly_once: bool,
        checkpoints: Option<Duration>,
    },
}

fn parse_config(text: &str) -> Result<Config> {
    if let Some(interval) = text.strip_prefix("naive-txn-") {
        return Ok(Config::Plain {
            txn: Some(parse_duration(interval)?),
            naive: true,
        });
    }
    let (kind, interval) = match text.split_once('-') {
        Some((kind, interval)) => (kind, Some(parse_duration(interval)?)),
        None => (text, None),
    };
    match (kind, interval) {
        ("plain", None) => Ok(Config::Plain {
            txn: None,
            naive: false,
        }),
        ("txn", Some(interval)) => Ok(Config::Plain {
            txn: Some(interval),
            naive: false,
        }),
        ("alo", checkpoints) => Ok(Config::Engine {
            exactly_once: false,
            checkpoints,
        }),
        ("eo", Some(interval)) => Ok(Config::Engine {
            exactly_once: true,
            checkpoints: Some(interval),
        }),
        ("eo", None) => Err("`eo` needs a checkpoint interval, e.g. eo-100ms".into()),
        _ => Err(format!(
            "unknown configuration `{text}`: use plain, txn-<interval>, naive-txn-<interval>, alo, alo-<interval> or eo-<interval>"
        )),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    statefun_benchmarks::main_with(|| run(args))
}

struct Bench {
    args: Args,
    bootstrap: String,
    prefix: String,
    admin: AdminClient<DefaultClientContext>,
    topics: Vec<String>,
}

struct Throughput {
    label: String,
    elapsed: Duration,
    first_output: Option<Duration>,
    output_records: u64,
    checkpoints: u64,
}

struct Latency {
    label: String,
    latencies: Latencies,
    received: u64,
    sent: u64,
}

fn run(args: Args) -> Result<()> {
    let configs: Vec<(String, Config)> = args
        .configs
        .iter()
        .map(|c| parse_config(c).map(|p| (c.clone(), p)))
        .collect::<Result<_>>()?;
    if args.value_size < 16 {
        return Err("--value-size must be at least 16 (send time and sequence number)".into());
    }
    let bootstrap = args
        .bootstrap
        .clone()
        .or_else(statefun_testkit::kafka_address)
        .ok_or(
            "no Kafka broker: pass --bootstrap, set KAFKA_BOOTSTRAP or run ci/install-kafka.sh",
        )?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .map_err(|e| format!("admin client for {bootstrap}: {e}"))?;
    if args.delete_leftovers {
        return delete_leftovers(&bootstrap, &admin);
    }
    let prefix = format!("kbench-{}-{}", std::process::id(), now_micros() % 1_000_000);
    let mut bench = Bench {
        args,
        bootstrap,
        prefix,
        admin,
        topics: Vec::new(),
    };
    println!(
        "kafka_bench: broker {}, {} records, {} keys, {}-byte values, {} partitions, {} worker(s); load average {}",
        bench.bootstrap,
        bench.args.records,
        bench.args.keys,
        bench.args.value_size,
        bench.args.partitions,
        bench.args.workers,
        load_average()
    );
    let result = bench.run_all(&configs);
    if !bench.args.keep_topics {
        if let Err(e) = bench.delete_topics() {
            eprintln!("warning: {e}");
        }
    }
    result
}

impl Bench {
    fn run_all(&mut self, configs: &[(String, Config)]) -> Result<()> {
        let mut throughput = Vec::new();
        if !self.args.skip_throughput {
            let input = format!("{}-in", self.prefix);
            self.create_topic(&input)?;
            self.produce_input(&input)?;
            for run in 1..=self.args.runs {
                for (label, config) in configs {
                    let result = self.throughput(&input, label, config, run)?;
                    throughput.push(result);
                }
            }
        }
        let mut latency = Vec::new();
        if !self.args.skip_latency {
            for run in 1..=self.args.runs {
                for (label, config) in configs {
                    latency.push(self.latency(label, config, run)?);
                }
            }
        }
        println!("\nload average at the end: {}", load_average());
        if !throughput.is_empty() {
            let plain: Vec<f64> = throughput
                .iter()
                .filter(|t| t.label == "plain")
                .map(|t| self.args.records as f64 / t.elapsed.as_secs_f64())
                .collect();
            let plain_mean =
                (!plain.is_empty()).then(|| plain.iter().sum::<f64>() / plain.len() as f64);
            println!("\n| configuration | records/s | elapsed | first output after | output records | checkpoints or commits | ratio to plain (mean) |");
            println!("| --- | --- | --- | --- | --- | --- | --- |");
            for t in &throughput {
                let rate = self.args.records as f64 / t.elapsed.as_secs_f64();
                println!(
                    "| {} | {} | {:.2} s | {} | {} | {} | {} |",
                    t.label,
                    human(rate),
                    t.elapsed.as_secs_f64(),
                    t.first_output
                        .map(|d| format!("{:.2} s", d.as_secs_f64()))
                        .unwrap_or_else(|| "-".into()),
                    t.output_records,
                    t.checkpoints,
                    plain_mean
                        .map(|p| format!("{:.3}", rate / p))
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        if !latency.is_empty() {
            println!("\n| configuration | p50 | p99 | max | samples (received / sent) |");
            println!("| --- | --- | --- | --- | --- |");
            for l in &latency {
                println!(
                    "| {} | {} | {} | {} | {} ({} / {}) |",
                    l.label,
                    ms(l.latencies.p50),
                    ms(l.latencies.p99),
                    ms(l.latencies.max),
                    l.latencies.samples,
                    l.received,
                    l.sent
                );
            }
        }
        Ok(())
    }

    fn create_topic(&mut self, name: &str) -> Result<()> {
        let topic = NewTopic::new(name, self.args.partitions, TopicReplication::Fixed(1));
        let results = block_on(self.admin.create_topics([&topic], &AdminOptions::new()))?
            .map_err(|e| format!("create topic {name}: {e}"))?;
        for r in results {
            r.map_err(|(topic, code)| format!("create topic {topic}: {code}"))?;
        }
        self.topics.push(name.to_owned());
        Ok(())
    }

    fn delete_topics(&mut self) -> Result<()> {
        if self.topics.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let results = block_on(self.admin.delete_topics(&names, &AdminOptions::new()))?
            .map_err(|e| format!("delete topics: {e}"))?;
        for r in results {
            if let Err((topic, code)) = r {
                eprintln!("warning: delete topic {topic}: {code}");
            }
        }
        self.topics.clear();
        Ok(())
    }

    /// Produces the throughput input once, as fast as librdkafka batches it.
    fn produce_input(&self, topic: &str) -> Result<()> {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .map_err(|e| format!("input producer: {e}"))?;
        let started = Instant::now();
        let n = self.args.records;
        for seq in 0..n {
            let key = key_of(seq, self.args.keys);
            let value = record_value(0, seq, self.args.value_size);
            send_retrying(&producer, topic, key.as_bytes(), &value)?;
            if seq.is_multiple_of(1024) {
                producer.poll(Duration::ZERO);
            }
        }
        producer
            .flush(Duration::from_secs(120))
            .map_err(|e| format!("flush the input: {e}"))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "produced {n} input records to {topic} in {secs:.2} s ({}/s)",
            human(n as f64 / secs)
        );
        Ok(())
    }

    fn throughput(
        &mut self,
        input: &str,
        label: &str,
        config: &Config,
        run: usize,
    ) -> Result<Throughput> {
        let tag = format!("{label}-{run}");
        let output = format!("{}-out-{tag}", self.prefix);
        self.create_topic(&output)?;
        let n = self.args.records;
        let watch = OutputWatch::start(&self.bootstrap, &output, self.args.partitions, n, false)?;
        println!("\n[{tag}] throughput: {input} → {output}");
        let started = Instant::now();
        let system = self.start_system(config, input, &output, &tag)?;
        let deadline = started + Duration::from_secs(self.args.timeout);
        let mut last = (Instant::now(), 0u64);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let seen = watch.count.load(Ordering::Relaxed);
            if seen >= n {
                break;
            }
            if let Some(e) = system.failure() {
                return Err(format!("[{tag}] {e}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "[{tag}] timed out after {} s with {seen} of {n} output records",
                    self.args.timeout
                ));
            }
            if last.0.elapsed() >= Duration::from_secs(2) {
                let dt = last.0.elapsed().as_secs_f64();
                println!(
                    "[{tag}] {:5.1} s: in {} out {} ({}/s)",
                    started.elapsed().as_secs_f64(),
                    system.records_in(),
                    seen,
                    human((seen - last.1) as f64 / dt)
                );
                last = (Instant::now(), seen);
            }
        }
        let checkpoints = system.checkpoints();
        let mut pauses = system.stop()?;
        let pauses = Latencies::of(&mut pauses);
        // Anything beyond N (duplicates) shows up within a moment.
        std::thread::sleep(Duration::from_secs(1));
        let watched = watch.finish()?;
        let elapsed = watched
            .nth_at
            .map(|t| t.duration_since(started))
            .ok_or_else(|| format!("[{tag}] the output never reached {n} records"))?;
        let result = Throughput {
            label: label.to_owned(),
            elapsed,
            first_output: watched.first_at.map(|t| t.duration_since(started)),
            output_records: watched.count,
            checkpoints,
        };
        println!(
            "[{tag}] {n} records in {:.2} s: {}/s (first output after {:.2} s; {} output records; {} checkpoints/commits)",
            elapsed.as_secs_f64(),
            human(n as f64 / elapsed.as_secs_f64()),
            result.first_output.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN),
            watched.count,
            checkpoints
        );
        if pauses.samples > 0 {
            println!(
                "[{tag}] {} {}: p50 {} p99 {} max {}",
                pauses.samples,
                if matches!(config, Config::Plain { .. }) {
                    "transaction commits"
                } else {
                    "checkpoint pauses (state writes)"
                },
                ms(pauses.p50),
                ms(pauses.p99),
                ms(pauses.max)
            );
        }
        if watched.count != n {
            println!(
                "[{tag}] note: {} output records for {n} inputs",
                watched.count
            );
        }
        Ok(result)
    }

    fn latency(&mut self, label: &str, config: &Config, run: usize) -> Result<Latency> {
        let tag = format!("{label}-lat-{run}");
        let input = format!("{}-in-{tag}", self.prefix);
        let output = format!("{}-out-{tag}", self.prefix);
        self.create_topic(&input)?;
        self.create_topic(&output)?;
        let total = self.args.latency_rate * self.args.latency_secs;
        let watch =
            OutputWatch::start(&self.bootstrap, &output, self.args.partitions, total, true)?;
        println!(
            "\n[{tag}] latency: {} records/s for {} s",
            self.args.latency_rate, self.args.latency_secs
        );
        let system = self.start_system(config, &input, &output, &tag)?;
        std::thread::sleep(Duration::from_secs(self.args.warmup));
        if let Some(e) = system.failure() {
            return Err(format!("[{tag}] {e}"));
        }
        let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
            ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .set("linger.ms", "0")
                .create()
                .map_err(|e| format!("latency producer: {e}"))?;
        let started = Instant::now();
        let measured_from = now_micros() + 1_000_000;
        let mut last_print = Instant::now();
        for seq in 0..total {
            let due = started + Duration::from_secs_f64(seq as f64 / self.args.latency_rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let key = key_of(seq, self.args.keys);
            let value = record_value(now_micros(), seq, self.args.value_size);
            send_retrying(&producer, &input, key.as_bytes(), &value)?;
            if last_print.elapsed() >= Duration::from_secs(2) {
                println!(
                    "[{tag}] {:4.1} s: sent {} received {}",
                    started.elapsed().as_secs_f64(),
                    seq + 1,
                    watch.count.load(Ordering::Relaxed)
                );
                last_print = Instant::now();
            }
        }
        producer
            .flush(Duration::from_secs(30))
            .map_err(|e| format!("flush the latency input: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while watch.count.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            if let Some(e) = system.failure() {
                return Err(format!("[{tag}] {e}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut pauses = system.stop()?;
        let pauses = Latencies::of(&mut pauses);
        if pauses.samples > 0 {
            println!(
                "[{tag}] {} {}: p50 {} p99 {} max {}",
                pauses.samples,
                if matches!(config, Config::Plain { .. }) {
                    "transaction commits"
                } else {
                    "checkpoint pauses (state writes)"
                },
                ms(pauses.p50),
                ms(pauses.p99),
                ms(pauses.max)
            );
        }
        let watched = watch.finish()?;
        let mut samples: Vec<u64> = watched
            .latencies
            .iter()
            .filter(|(sent, _)| *sent >= measured_from)
            .map(|(_, latency)| *latency)
            .collect();
        let latencies = Latencies::of(&mut samples);
        println!(
            "[{tag}] p50 {} p99 {} max {} ({} samples; {} of {} records received)",
            ms(latencies.p50),
            ms(latencies.p99),
            ms(latencies.max),
            latencies.samples,
            watched.count,
            total
        );
        Ok(Latency {
            label: label.to_owned(),
            latencies,
            received: watched.count,
            sent: total,
        })
    }

    fn start_system(
        &mut self,
        config: &Config,
        input: &str,
        output: &str,
        tag: &str,
    ) -> Result<System> {
        match config {
            Config::Plain { txn, naive } => PlainLoop::start(
                &self.bootstrap,
                (input, output),
                self.args.partitions,
                (*txn, *naive),
                &self.args.producer_properties,
            ),
            Config::Engine {
                exactly_once,
                checkpoints,
            } => {
                let group = format!("{}-{tag}", self.prefix);
                if *exactly_once {
                    // The exactly-once egress creates its progress topic; delete it afterwards.
                    self.topics.push(format!("{group}-progress"));
                }
                start_engine(
                    &self.bootstrap,
                    (input, output),
                    &group,
                    (*exactly_once, *checkpoints),
                    self.args.workers,
                    &self.args.producer_properties,
                )
            }
        }
    }
}

/// Deletes every `kbench-*` topic (what runs that were killed left behind).
fn delete_leftovers(bootstrap: &str, admin: &AdminClient<DefaultClientContext>) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("metadata client: {e}"))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| format!("list topics: {e}"))?;
    let names: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|n| n.starts_with("kbench-"))
        .collect();
    if names.is_empty() {
        println!("no kbench-* topics");
        return Ok(());
    }
    for r in block_on(admin.delete_topics(&names, &AdminOptions::new()))?
        .map_err(|e| format!("delete topics: {e}"))?
    {
        match r {
            Ok(topic) => println!("deleted {topic}"),
            Err((topic, code)) => eprintln!("warning: delete topic {topic}: {code}"),
        }
    }
    Ok(())
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    // rdkafka's admin futures complete on librdkafka's own threads: any executor will do.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map(|rt| rt.block_on(future))
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))
}

/// Sends one record, waiting while librdkafka's queue is full.
fn send_retrying<P: ProducerLike>(
    producer: &P,
    topic: &str,
    key: &[u8],
    value: &[u8],
) -> Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match producer.send_record(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.wait(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(format!("produce to {topic}: {e}")),
        }
    }
}

type Record<'a> = BaseRecord<'a, [u8], [u8]>;

/// `BaseProducer` and `ThreadedProducer` as `send_retrying` needs them.
// The error hands the record back, as rdkafka's own `send` does.
#[allow(clippy::result_large_err)]
trait ProducerLike {
    fn send_record<'a>(
        &self,
        record: Record<'a>,
    ) -> std::result::Result<(), (KafkaError, Record<'a>)>;
    fn wait(&self, timeout: Duration);
}

impl<C: ProducerContext<DeliveryOpaque = ()>> ProducerLike for BaseProducer<C> {
    fn send_record<'a>(
        &self,
        record: Record<'a>,
    ) -> std::result::Result<(), (KafkaError, Record<'a>)> {
        self.send(record)
    }
    fn wait(&self, timeout: Duration) {
        self.poll(timeout);
    }
}

impl<C: ProducerContext<DeliveryOpaque = ()> + 'static> ProducerLike for ThreadedProducer<C> {
    fn send_record<'a>(
        &self,
        record: Record<'a>,
    ) -> std::result::Result<(), (KafkaError, Record<'a>)> {
        self.send(record)
    }
    fn wait(&self, timeout: Duration) {
        // The producer's own thread serves delivery reports.
        std::thread::sleep(timeout);
    }
}

/// What the output consumer saw.
struct Watched {
    count: u64,
    first_at: Option<Instant>,
    nth_at: Option<Instant>,
    /// (send time µs, latency µs) per record, when collecting.
    latencies: Vec<(u64, u64)>,
}

/// A `read_committed` consumer of the output topic on its own thread.
struct OutputWatch {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Watched>>,
}

/// Assigns `partitions` partitions of `topic` to `consumer`, each read from its beginning.
fn assign_from_beginning(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    who: &str,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| format!("{who}: {e}"))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("assign {topic} to {who}: {e}"))
}

impl OutputWatch {
    fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        target: u64,
        latency: bool,
    ) -> Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{topic}-watch"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(|e| format!("output consumer: {e}"))?;
        assign_from_beginning(&consumer, topic, partitions, "the output consumer")?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, topic) = (count.clone(), stop.clone(), topic.to_owned());
        let handle = std::thread::Builder::new()
            .name("output-watch".into())
            .spawn(move || {
                let mut w = Watched {
                    count: 0,
                    first_at: None,
                    nth_at: None,
                    latencies: Vec::new(),
                };
                while !s.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(50)) {
                        None => {}
                        Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
                        Some(Ok(m)) => {
                            let now = Instant::now();
                            if latency {
                                if let Some(sent) = m.payload().and_then(send_micros) {
                                    w.latencies.push((sent, now_micros().saturating_sub(sent)));
                                }
                            }
                            w.count += 1;
                            w.first_at.get_or_insert(now);
                            if w.count == target {
                                w.nth_at = Some(now);
                            }
                            c.store(w.count, Ordering::Relaxed);
                        }
                    }
                }
                Ok(w)
            })
            .map_err(|e| format!("cannot start the output consumer thread: {e}"))?;
        Ok(OutputWatch {
            count,
            stop,
            handle,
        })
    }

    fn finish(self) -> Result<Watched> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| "the output consumer thread panicked".to_string())?
    }
}

/// A running system under test.
enum System {
    Plain(PlainLoop),
    Engine {
        shared: Arc<Shared>,
        handle: JoinHandle<
            std::result::Result<statefun_engine::dataflow::RunReport, statefun_engine::RunError>,
        >,
        _dir: tempfile::TempDir,
    },
}

impl System {
    fn records_in(&self) -> u64 {
        match self {
            System::Plain(p) => p.consumed.load(Ordering::Relaxed),
            System::Engine { shared, .. } => shared.metrics.records_in.load(Ordering::Relaxed),
        }
    }

    /// Checkpoints (engine) or transaction commits (plain loop) so far.
    fn checkpoints(&self) -> u64 {
        match self {
            System::Plain(p) => p.commits.load(Ordering::Relaxed),
            System::Engine { shared, .. } => shared.metrics.checkpoints.load(Ordering::Relaxed),
        }
    }

    fn failure(&self) -> Option<String> {
        match self {
            System::Plain(p) => p.failure.lock().ok().and_then(|f| f.clone()),
            System::Engine { shared, .. } => shared.failure(),
        }
    }

    /// Stops the system; returns the durations (µs) of its commits: the
    /// checkpoint pauses of the engine, the transaction commits of a plain loop.
    fn stop(self) -> Result<Vec<u64>> {
        match self {
            System::Plain(p) => {
                p.stop.store(true, Ordering::Relaxed);
                p.handle
                    .join()
                    .map_err(|_| "the plain loop panicked".to_string())?
            }
            System::Engine { shared, handle, .. } => {
                shared.request_shutdown();
                handle
                    .join()
                    .map_err(|_| "the engine thread panicked".to_string())?
                    .map_err(|e| format!("engine: {e}"))?;
                let pauses = shared
                    .metrics
                    .checkpoint_pauses_us
                    .lock()
                    .map(|p| p.clone())
                    .unwrap_or_default();
                Ok(pauses)
            }
        }
    }
}

/// Counts delivery reports of the plain loop's producer.
#[derive(Default)]
struct Acks {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct AckContext(Arc<Acks>);

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut slot) = self.0.first_error.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// The baseline: consume, count per key, produce the transformed record.
struct PlainLoop {
    consumed: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    handle: JoinHandle<Result<Vec<u64>>>,
}

impl PlainLoop {
    /// With `txn`, the loop is transactional: the output and the consumed
    /// offsets (`send_offsets_to_transaction`) are committed every `txn`.
    fn start(
        bootstrap: &str,
        (input, output): (&str, &str),
        partitions: i32,
        (txn, naive): (Option<Duration>, bool),
        properties: &[(String, String)],
    ) -> Result<System> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{output}-plain"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| format!("plain loop consumer: {e}"))?;
        assign_from_beginning(&consumer, input, partitions, "the plain loop")?;
        let acks = Arc::new(Acks::default());
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        for (k, v) in properties {
            config.set(k, v);
        }
        if txn.is_some() {
            config.set("transactional.id", format!("{output}-plain"));
        }
        let producer: BaseProducer<AckContext> = config
            .create_with_context(AckContext(acks.clone()))
            .map_err(|e| format!("plain loop producer: {e}"))?;
        if txn.is_some() {
            producer
                .init_transactions(Duration::from_secs(30))
                .map_err(|e| format!("plain loop: init_transactions: {e}"))?;
        }
        let consumed = Arc::new(AtomicU64::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let (c, k, s, f, output) = (
            consumed.clone(),
            commits.clone(),
            stop.clone(),
            failure.clone(),
            output.to_owned(),
        );
        let handle = std::thread::Builder::new()
            .name("plain-loop".into())
            .spawn(move || {
                let counters = Counters {
                    consumed: &c,
                    commits: &k,
                    stop: &s,
                    acks: &acks,
                };
                let result = plain_loop(&consumer, &producer, &output, (txn, naive), counters);
                if let Err(e) = &result {
                    if let Ok(mut slot) = f.lock() {
                        *slot = Some(e.clone());
                    }
                }
                result
            })
            .map_err(|e| format!("cannot start the plain loop thread: {e}"))?;
        Ok(System::Plain(PlainLoop {
            consumed,
            commits,
            stop,
            failure,
            handle,
        }))
    }
}

struct Counters<'a> {
    consumed: &'a AtomicU64,
    commits: &'a AtomicU64,
    stop: &'a AtomicBool,
    acks: &'a Acks,
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Commits the open transaction with the consumer's positions; returns how long it took
/// (µs). `naive`: call `commit_transaction` with records in flight, as the engine's sink does.
fn commit(
    consumer: &BaseConsumer,
    producer: &BaseProducer<AckContext>,
    naive: bool,
) -> Result<u64> {
    let started = Instant::now();
    let mut offsets = TopicPartitionList::new();
    let positions = consumer
        .position()
        .map_err(|e| format!("plain loop: consumer positions: {e}"))?;
    for e in positions.elements() {
        if let Offset::Offset(o) = e.offset() {
            offsets
                .add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))
                .map_err(|e| format!("plain loop: {e}"))?;
        }
    }
    if offsets.count() > 0 {
        let group = consumer
            .group_metadata()
            .ok_or("plain loop: the consumer has no group metadata")?;
        producer
            .send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)
            .map_err(|e| format!("plain loop: send_offsets_to_transaction: {e}"))?;
    }
    if !naive {
        // `commit_transaction` flushes first, and rdkafka's `BaseProducer::flush` polls in
        // 100 ms slices that always run to their end: serve delivery reports in short
        // slices until nothing is in flight, so that its flush returns at once.
        let deadline = Instant::now() + TXN_TIMEOUT;
        while producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "plain loop: {} records unacknowledged after {TXN_TIMEOUT:?}",
                    producer.in_flight_count()
                ));
            }
            producer.poll(Duration::from_millis(1));
        }
    }
    producer
        .commit_transaction(TXN_TIMEOUT)
        .map_err(|e| format!("plain loop: commit_transaction: {e}"))?;
    Ok(started.elapsed().as_micros() as u64)
}

/// Runs until stopped; returns the commit durations (µs) of a transactional loop.
fn plain_loop(
    consumer: &BaseConsumer,
    producer: &BaseProducer<AckContext>,
    output: &str,
    (txn, naive): (Option<Duration>, bool),
    counters: Counters<'_>,
) -> Result<Vec<u64>> {
    let mut counts: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut n = 0u64;
    let mut commit_times = Vec::new();
    let mut open = false;
    let mut last_commit = Instant::now();
    while !counters.stop.load(Ordering::Relaxed) {
        if let Some(interval) = txn {
            if open && last_commit.elapsed() >= interval {
                commit_times.push(commit(consumer, producer, naive)?);
                counters.commits.fetch_add(1, Ordering::Relaxed);
                open = false;
                last_commit = Instant::now();
            }
        }
        match consumer.poll(Duration::from_millis(10)) {
            None => {
                producer.poll(Duration::ZERO);
            }
            Some(Err(e)) => return Err(format!("plain loop: consume: {e}")),
            Some(Ok(m)) => {
                if txn.is_some() && !open {
                    producer
                        .begin_transaction()
                        .map_err(|e| format!("plain loop: begin_transaction: {e}"))?;
                    open = true;
                }
                let key = m.key().unwrap_or_default();
                let count = match counts.get_mut(key) {
                    Some(c) => {
                        *c += 1;
                        *c
                    }
                    None => {
                        counts.insert(key.to_vec(), 1);
                        1
                    }
                };
                let value = transformed(m.payload().unwrap_or_default(), count);
                send_retrying(producer, output, key, &value)?;
                n += 1;
                if n.is_multiple_of(256) {
                    producer.poll(Duration::ZERO);
                    counters.consumed.store(n, Ordering::Relaxed);
                }
            }
        }
    }
    counters.consumed.store(n, Ordering::Relaxed);
    if open {
        commit_times.push(commit(consumer, producer, naive)?);
        counters.commits.fetch_add(1, Ordering::Relaxed);
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| format!("plain loop: flush: {e}"))?;
    let failed = counters.acks.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = counters
            .acks
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        return Err(format!(
            "plain loop: {failed} records were not acknowledged (first: {first})"
        ));
    }
    Ok(commit_times)
}

fn start_engine(
    bootstrap: &str,
    (input, output): (&str, &str),
    group: &str,
    (exactly_once, checkpoints): (bool, Option<Duration>),
    workers: usize,
    producer_properties: &[(String, String)],
) -> Result<System> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let mut properties: Vec<(String, String)> = producer_properties.to_vec();
    let semantic = if exactly_once {
        properties.push(("transactional.id".into(), group.into()));
        properties.push((
            "statefun.progress.topic".into(),
            format!("{group}-progress"),
        ));
        "{ type: exactly-once, transactionTimeout: 60s }"
    } else {
        "{ type: at-least-once }"
    };
    let mut semantic = semantic.to_owned();
    if !properties.is_empty() {
        semantic.push_str("\n  properties:");
        for (k, v) in &properties {
            semantic.push_str(&format!("\n    - {k}: \"{v}\""));
        }
    }
    let yaml = format!(
        "kind: io.statefun.kafka.v1/ingress
spec:
  id: bench/in
  address: {bootstrap}
  consumerGroupId: {group}
  startupPosition: {{ type: earliest }}
  topics:
    - topic: {input}
      valueType: bench/raw
      targets: [bench/counter]
---
kind: io.statefun.kafka.v1/egress
spec:
  id: bench/out
  address: {bootstrap}
  deliverySemantic: {semantic}
"
    );
    let module = dir.path().join("module.yaml");
    std::fs::write(&module, yaml).map_err(|e| format!("write {}: {e}", module.display()))?;

    let egress = TypeName::parse("bench/out").map_err(|e| e.to_string())?;
    let topic: Arc<str> = output.into();
    let registry = counter_registry(move |id, value| {
        KafkaEgressMessage::for_egress(egress.clone())
            .with_topic(&topic)
            .with_key(id)
            .with_value(value)
            .build()
    })?;

    let mut options = RunOptions {
        cluster: ClusterConfig {
            workers,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    };
    if let Some(interval) = checkpoints {
        // Durable state is RocksDB, as `statefun run --state-dir` uses it.
        options.settings.durability = Some(Durability {
            checkpoint_interval: interval,
            ..Durability::new(dir.path().join("state"))
        });
    }
    let shared = Arc::new(Shared::default());
    let s = shared.clone();
    let handle = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || run_module(&module, &registry, &options, s))
        .map_err(|e| format!("cannot start the engine thread: {e}"))?;
    Ok(System::Engine {
        shared,
        handle,
        _dir: dir,
    })
}
