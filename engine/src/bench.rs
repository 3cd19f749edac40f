//! `statefun bench`: the engine's throughput against a hand-written timely
//! pipeline doing the same work, in one process and one run.
//!
//! Both pipelines generate `records` records over `keys` keys with
//! `value_size`-byte values, exchange them by key, and count per key in
//! memory. The engine does it as generator ingress → a keyed counter
//! function with `long` state → no egress; the baseline as a timely source
//! → `Exchange` by key → `HashMap<String, u64>`. The last line printed is
//! `ratio <engine/baseline>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use statefun_sdk::{Context, FunctionError, FunctionSpec, LongType, Message, TypeName, ValueSpec};

use crate::app::{Application, Settings};
use crate::cli::TimelyArgs;
use crate::dataflow::{self, baseline};
use crate::registry::FunctionRegistry;
use crate::shared::Shared;

/// Arguments of `statefun bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Distinct keys (function instances).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Records to push through each pipeline.
    #[arg(long, default_value_t = 10_000_000)]
    pub records: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Give records their keys in a scrambled order (the generator's `keyOrder:
    /// scrambled`; the baseline uses the same one), as records keyed by user ids arrive,
    /// instead of ids 0, 1, 2, … in turn, which read neighbouring state.
    #[arg(long)]
    pub scramble_keys: bool,
    /// Run only the engine pipeline (for profilers and instruction counts).
    #[arg(long)]
    pub skip_baseline: bool,
    /// Keep the engine's state in RocksDB under this (emptied) directory and
    /// checkpoint it; prints the checkpoint pauses. The baseline stays in memory.
    #[arg(long)]
    pub state_dir: Option<std::path::PathBuf>,
    /// Time between checkpoints with --state-dir.
    #[arg(long, default_value = "1s", value_parser = statefun_module::parse_duration)]
    pub checkpoint_interval: Duration,
    /// RocksDB block cache per worker in MiB, with --state-dir.
    #[arg(long, default_value_t = crate::checkpoint::StateMemory::DEFAULT_BLOCK_CACHE_MB)]
    pub block_cache_mb: usize,
    /// RocksDB memtables per worker in MiB, with --state-dir.
    #[arg(long, default_value_t = crate::checkpoint::StateMemory::DEFAULT_WRITE_BUFFER_MB)]
    pub write_buffer_mb: usize,
    /// Values of recent checkpoints kept in memory per worker in MiB, with --state-dir.
    #[arg(long, default_value_t = crate::checkpoint::StateMemory::DEFAULT_STATE_CACHE_MB)]
    pub state_cache_mb: usize,
    /// Measure per-hop latency instead of throughput: messages bounce
    /// between pairs of function instances and every hop's time from send to
    /// invocation goes into a histogram.
    #[arg(long)]
    pub latency: bool,
    /// Hops per rally, with --latency.
    #[arg(long, default_value_t = 100_000)]
    pub hops: u64,
    /// Rallies bouncing at once, each between its own two instances, with --latency.
    #[arg(long, default_value_t = 1)]
    pub rallies: u64,
    /// Serve /metrics (and /healthz, /readyz) on HOST:PORT while the engine runs, as
    /// `statefun run --metrics-addr` does, and scrape it once a second from a background
    /// thread: measures what metrics and their scrapes cost the hot path.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Timely workers (`-w`); bench runs in one process.
    #[command(flatten)]
    pub timely: TimelyArgs,
}

/// The metrics endpoint of a bench run and the thread scraping it once a second; both
/// stop when dropped.
struct Scraped {
    _server: crate::observe::MetricsServer,
    stop: Arc<std::sync::atomic::AtomicBool>,
    scraper: Option<std::thread::JoinHandle<u64>>,
}

impl Scraped {
    /// Serves the metrics of `shared` on `addr` and starts scraping them.
    fn start(addr: &str, shared: &Arc<Shared>, epoch_interval: Duration) -> Result<Self, String> {
        let info = crate::observe::ProcessInfo {
            process: 0,
            epoch_interval,
        };
        let current = Arc::new(std::sync::Mutex::new(shared.clone()));
        let server = crate::observe::serve(addr, current, info)?;
        let authority = server.addr().to_string();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let scraper = std::thread::Builder::new()
            .name("bench-scraper".into())
            .spawn(move || {
                let mut scrapes = 0u64;
                while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    let get = crate::top::http_get(&authority, "/metrics", Duration::from_secs(2));
                    if matches!(get, Ok((200, _))) {
                        scrapes += 1;
                    }
                    // Sleep a second in slices, to stop soon after the run.
                    for _ in 0..20 {
                        if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                scrapes
            })
            .map_err(|e| format!("cannot start the scraper thread: {e}"))?;
        Ok(Scraped {
            _server: server,
            stop,
            scraper: Some(scraper),
        })
    }

    /// Stops scraping; how many scrapes answered 200.
    fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.scraper.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Scraped {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The counter function of the benchmark: counts messages per id.
pub fn counter_function() -> FunctionSpec {
    let count = ValueSpec::new("count", LongType);
    let spec = count.descriptor();
    let function = move |ctx: &mut Context<'_>, _message: Message| -> Result<(), FunctionError> {
        let n = ctx.get(&count)?.unwrap_or(0);
        ctx.set(&count, &(n + 1))?;
        Ok(())
    };
    let mut builder = FunctionSpec::builder(bench_type());
    builder = builder.with_value_spec(&ValueSpec::new(&spec.name, LongType));
    builder
        .with_function(function)
        .build()
        .expect("the benchmark function spec is valid")
}

fn bench_type() -> TypeName {
    TypeName::parse("bench/counter").expect("valid type name")
}

/// Runs the engine pipeline; returns the elapsed time.
pub fn run_engine(args: &BenchArgs) -> Result<Duration, String> {
    let yaml = format!(
        "kind: io.statefun-rs.generator.v1/ingress\nspec:\n  id: bench/generator\n  valueType: bench/payload\n  targets: [bench/counter]\n  keys: {}\n  count: {}\n  valueSize: {}\n  keyOrder: {}\n",
        args.keys.max(1),
        args.records,
        args.value_size,
        if args.scramble_keys { "scrambled" } else { "sequential" }
    );
    let module = statefun_module::load_str(&yaml, "<bench>").map_err(|d| d.to_string())?;
    let mut registry = FunctionRegistry::new();
    registry.register(counter_function())?;
    let mut settings = Settings::default();
    if let Some(dir) = &args.state_dir {
        // A benchmark measures a fresh job, never a restore.
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot empty the bench state dir {}: {e}", dir.display()))?;
        }
        settings.durability = Some(crate::app::Durability {
            state_dir: dir.clone(),
            checkpoint_interval: args.checkpoint_interval,
            memory: crate::checkpoint::StateMemory::from_mb(
                args.block_cache_mb,
                args.write_buffer_mb,
                args.state_cache_mb,
            ),
        });
    }
    let epoch_interval = settings.epoch_interval;
    let app = Application::new(&module, &registry, settings).map_err(|e| e.join("\n"))?;
    let shared = Arc::new(Shared::default());
    let scraped = match &args.metrics_addr {
        Some(addr) => Some(Scraped::start(addr, &shared, epoch_interval)?),
        None => None,
    };
    let started = Instant::now();
    let report = dataflow::run(
        Arc::new(app),
        &args.timely.cluster()?,
        shared.clone(),
        dataflow::memory_backend(),
        Duration::from_secs(2),
    )?;
    let elapsed = started.elapsed();
    if let Some(scraped) = scraped {
        println!("metrics: {} scrapes of /metrics answered", scraped.finish());
    }
    if args.state_dir.is_some() {
        let mut pauses = shared
            .metrics
            .checkpoint_pauses_us
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        pauses.sort_unstable();
        let at = |q: f64| {
            pauses
                .get(((pauses.len() as f64 - 1.0) * q).round().max(0.0) as usize)
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        println!(
            "checkpoints: {} written, pause p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pauses.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
        let written = crate::shared::Metrics::get(&shared.metrics.checkpoint_bytes);
        let per = written as f64 / pauses.len().max(1) as f64;
        println!(
            "checkpoint bytes: {:.1} MiB written, {:.2} MiB per checkpoint",
            written as f64 / f64::from(1 << 20),
            per / f64::from(1 << 20)
        );
    }
    if report.invocations != args.records {
        return Err(format!(
            "engine invoked the counter {} times for {} records",
            report.invocations, args.records
        ));
    }
    Ok(elapsed)
}

/// Runs both pipelines and prints, for each, records/s, CPU time and
/// records per CPU-second, then the ratio (the last line).
///
/// The engine runs first, so the peak RSS printed after it is the engine's
/// own; the baseline's would include the engine's, and is not printed.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.timely.processes > 1 {
        return Err("bench runs in one process: use -w for more workers".into());
    }
    if args.latency {
        return latency::run(args);
    }
    let report = |name: &str, elapsed: Duration, cpu: f64| {
        let secs = elapsed.as_secs_f64();
        println!(
            "{name:<9} {:>12.0} records/s ({secs:.3} s), cpu {cpu:.2} s, {:.0} records per CPU-second",
            args.records as f64 / secs,
            args.records as f64 / cpu.max(0.01),
        );
    };
    eprintln!(
        "bench: {} records, {} keys, {}-byte values, {} worker(s)",
        args.records, args.keys, args.value_size, args.timely.workers
    );
    let cpu = cpu_seconds();
    let engine = run_engine(args)?;
    report("engine:", engine, cpu_seconds() - cpu);
    println!("engine peak RSS: {:.0} MiB", peak_rss_mib());
    if args.skip_baseline {
        return Ok(());
    }
    let cpu = cpu_seconds();
    let base = baseline::run(
        args.timely.workers,
        args.keys.max(1),
        args.records,
        args.value_size,
        args.scramble_keys,
    )?;
    report("baseline:", base, cpu_seconds() - cpu);
    println!("ratio {:.3}", base.as_secs_f64() / engine.as_secs_f64());
    Ok(())
}

/// CPU seconds (user + system, all threads) this process used so far, from
/// `/proc/self/stat` (10 ms resolution; 0 where there is no `/proc`).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may contain spaces; fields after it are plain.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the
    // command name), in clock ticks of 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of this process so far in MiB (`VmHWM`; 0 where
/// there is no `/proc`).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `statefun bench --latency`: the time a message takes from one function to
/// the next.
///
/// Each rally starts with a generator record for id `r` of `bench/ping`,
/// which sends a hop message to id `r~`; every invocation records the time
/// since the hop was sent (a stamp in the message, against a clock shared by
/// the process's workers) and sends the next hop to its partner, until the
/// rally's hops are used up. A hop's time is everything the runtime does
/// between two functions: the sender's effects applied, the message through
/// the timely feedback loop and the exchange (to another worker when the
/// partner's key group lives there), and the receiver's invocation up to the
/// point it reads the clock.
mod latency {
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Instant;

    use statefun_sdk::{
        Context, FunctionError, FunctionSpec, Message, MessageBuilder, RawType, TypeName,
    };

    use super::BenchArgs;
    use crate::app::{Application, Settings};
    use crate::dataflow;
    use crate::registry::FunctionRegistry;
    use crate::shared::Shared;

    const PING: &str = "bench/ping";
    const HOP: &str = "bench/hop";

    /// Nanoseconds since the first call in this process (every worker's clock).
    fn now_ns() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    /// The partner of an instance: `r` ↔ `r~`.
    fn partner(id: &str) -> String {
        match id.strip_suffix('~') {
            Some(base) => base.to_owned(),
            None => format!("{id}~"),
        }
    }

    fn hop(
        hop: &RawType,
        target: &TypeName,
        id: &str,
        remaining: u64,
    ) -> Result<Message, FunctionError> {
        let mut bytes = now_ns().to_le_bytes().to_vec();
        bytes.extend_from_slice(&remaining.to_le_bytes());
        Ok(MessageBuilder::for_address(target.clone(), partner(id))
            .with_value(hop, &bytes)
            .build()?)
    }

    /// Runs the rallies and prints percentiles and a histogram of hop latency.
    pub fn run(args: &BenchArgs) -> Result<(), String> {
        let hops = args.hops.max(1);
        let rallies = args.rallies.max(1);
        let samples: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::with_capacity(
            (hops * rallies).min(100_000_000) as usize,
        )));
        let recorded = samples.clone();
        let ping = TypeName::parse(PING).map_err(|e| e.to_string())?;
        // The hop message's type, built once rather than per hop.
        let hop_type = RawType::new(TypeName::parse(HOP).map_err(|e| e.to_string())?);
        let function =
            move |ctx: &mut Context<'_>, message: Message| -> Result<(), FunctionError> {
                let me = ctx.self_address().clone();
                if message.value_typename() != HOP {
                    // The generator's record: serve the rally's first hop.
                    ctx.send(hop(&hop_type, &me.function_type, &me.id, hops - 1)?);
                    return Ok(());
                }
                let now = now_ns();
                let bytes = &message.value.value;
                let field = |at: usize| {
                    bytes
                        .get(at..at + 8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes)
                        .ok_or_else(|| FunctionError::from("a hop message is 16 bytes"))
                };
                let (sent, remaining) = (field(0)?, field(8)?);
                if let Ok(mut samples) = recorded.lock() {
                    samples.push(now.saturating_sub(sent));
                }
                if remaining > 0 {
                    ctx.send(hop(&hop_type, &me.function_type, &me.id, remaining - 1)?);
                }
                Ok(())
            };
        let mut registry = FunctionRegistry::new();
        registry.register(
            FunctionSpec::builder(ping)
                .with_function(function)
                .build()
                .map_err(|e| e.to_string())?,
        )?;
        let yaml = format!(
            "kind: io.statefun-rs.generator.v1/ingress\nspec:\n  id: bench/serve\n  valueType: bench/serve\n  targets: [{PING}]\n  keys: {rallies}\n  count: {rallies}\n  valueSize: 1\n"
        );
        let module =
            statefun_module::load_str(&yaml, "<bench --latency>").map_err(|d| d.to_string())?;
        let app =
            Application::new(&module, &registry, Settings::default()).map_err(|e| e.join("\n"))?;
        eprintln!(
            "bench --latency: {rallies} rall{} of {hops} hops, {} worker(s)",
            if rallies == 1 { "y" } else { "ies" },
            args.timely.workers
        );
        let started = Instant::now();
        dataflow::run(
            Arc::new(app),
            &args.timely.cluster()?,
            Arc::new(Shared::default()),
            dataflow::memory_backend(),
            std::time::Duration::from_secs(2),
        )?;
        let elapsed = started.elapsed();
        let mut samples = std::mem::take(&mut *samples.lock().map_err(|e| e.to_string())?);
        if samples.len() as u64 != hops * rallies {
            return Err(format!(
                "recorded {} hops, expected {}",
                samples.len(),
                hops * rallies
            ));
        }
        samples.sort_unstable();
        let at =
            |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        println!(
            "hops: {} in {:.3} s; latency p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.1} µs",
            samples.len(),
            elapsed.as_secs_f64(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(0.999),
            at(1.0)
        );
        for (upper, count) in histogram(&samples) {
            println!("  ≤ {upper:>7} µs {count:>10}");
        }
        Ok(())
    }

    /// Counts per power-of-two bucket of microseconds (`≤ 1`, `≤ 2`, `≤ 4`, …),
    /// up to the bucket of the largest sample.
    pub(super) fn histogram(sorted_ns: &[u64]) -> Vec<(u64, usize)> {
        let mut buckets = Vec::new();
        let mut upper_us = 1u64;
        let mut from = 0;
        while from < sorted_ns.len() {
            let to = sorted_ns.partition_point(|ns| *ns <= upper_us * 1000);
            buckets.push((upper_us, to - from));
            from = to;
            upper_us *= 2;
        }
        buckets
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn histogram_buckets_are_powers_of_two_microseconds() {
            let ns = [10, 900, 1_000, 1_001, 3_000, 9_000];
            assert_eq!(
                super::histogram(&ns),
                vec![(1, 3), (2, 1), (4, 1), (8, 0), (16, 1)]
            );
            assert!(super::histogram(&[]).is_empty());
        }

        #[test]
        fn partners_pair_up() {
            assert_eq!(super::partner("7"), "7~");
            assert_eq!(super::partner("7~"), "7");
        }
    }
}
