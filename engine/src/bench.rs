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
    #[arg(long, default_value_t = 64)]
    pub block_cache_mb: usize,
    /// Timely workers (`-w`); bench runs in one process.
    #[command(flatten)]
    pub timely: TimelyArgs,
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
        "kind: io.statefun-rs.generator.v1/ingress\nspec:\n  id: bench/generator\n  valueType: bench/payload\n  targets: [bench/counter]\n  keys: {}\n  count: {}\n  valueSize: {}\n",
        args.keys.max(1),
        args.records,
        args.value_size
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
            block_cache_bytes: args.block_cache_mb.max(1) << 20,
        });
    }
    let app = Application::new(&module, &registry, settings).map_err(|e| e.join("\n"))?;
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let report = dataflow::run(
        Arc::new(app),
        &args.timely.cluster()?,
        shared.clone(),
        dataflow::memory_backend(),
        Duration::from_secs(2),
    )?;
    let elapsed = started.elapsed();
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
