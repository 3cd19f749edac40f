//! Benchmark harnesses of statefun-rs, and helpers shared by them.
//!
//! * `src/bin/kafka_bench`, `src/bin/kinesis_bench`: each runs the engine next
//!   to a baseline written directly against the same client library, on the
//!   same broker or emulator, and prints the ratio.
//! * `src/bin/rescale_bench`: a checkpoint taken with one worker count,
//!   restored with another; time, CPU and peak RSS of the rescale.
//! * `peers/`: the same workloads on Apache Flink StateFun 3.3.0, side by side
//!   (Maven and shell, not part of the cargo build; see `peers/README.md`).
//!
//! The engine's own throughput against hand-written timely, and its per-hop
//! latency, are `statefun bench` (`engine/src/bench.rs`). Every harness
//! checks its counts, so a faster run that skipped work fails instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (the clock latency records carry).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A benchmark record's value: send time (µs since the epoch, little endian),
/// sequence number, then filler up to `size` bytes (at least 16).
pub fn record_value(send_micros: u64, seq: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(16) + 8);
    v.extend_from_slice(&send_micros.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.resize(size.max(16), b'x');
    v
}

/// The send time carried in the first 8 bytes of a record value (and of the
/// transformed output, which starts with the input value).
pub fn send_micros(value: &[u8]) -> Option<u64> {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// The output record for an input value: the input value followed by the
/// per-key count (little-endian `i32`). Baselines and engine functions emit
/// the same bytes.
pub fn transformed(value: &[u8], count: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 4);
    out.extend_from_slice(value);
    out.extend_from_slice(&count.to_le_bytes());
    out
}

/// The key of record `seq` among `keys` keys.
pub fn key_of(seq: u64, keys: u64) -> String {
    format!("k{}", seq % keys.max(1))
}

/// The `q`-quantile (0..=1) of sorted `values`, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// `12 345 678` → `"12.3 M"`, `45 678` → `"45.7 k"`.
pub fn human(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// Microseconds as milliseconds with one decimal.
pub fn ms(micros: u64) -> String {
    format!("{:.1} ms", micros as f64 / 1000.0)
}

/// The 1-minute load average and the whole `/proc/loadavg` line, for the record.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs a benchmark's `run` with logging to stderr (`RUST_LOG`, default
/// `warn`, so the engine's progress lines do not drown the benchmark's);
/// an error is printed and fails the process.
pub fn main_with(run: impl FnOnce() -> Result<(), String>) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses `100ms`, `1s`, `1 min`: the same syntax as module.yaml durations.
pub use statefun_module::parse_duration;

/// A registry with the benchmark's counter function `bench/counter`: one
/// `int` state per key, and per message one egress record built by `record`
/// from the key and [`transformed`] value.
pub fn counter_registry(
    record: impl Fn(&str, Vec<u8>) -> Result<statefun_sdk::EgressMessage, statefun_sdk::SdkError>
        + Send
        + Sync
        + 'static,
) -> Result<statefun_engine::FunctionRegistry, String> {
    use statefun_sdk::{FunctionSpec, IntType, TypeName, ValueSpec};
    let count = ValueSpec::new("count", IntType);
    let spec = FunctionSpec::builder(TypeName::parse("bench/counter").map_err(|e| e.to_string())?)
        .with_value_spec(&count)
        .with_fn(move |ctx, message| {
            let n = ctx.get(&count)?.unwrap_or(0) + 1;
            ctx.set(&count, &n)?;
            ctx.send_egress(record(
                &ctx.self_address().id,
                transformed(&message.value.value, n),
            )?);
            Ok(())
        })
        .build()
        .map_err(|e| format!("counter function: {e}"))?;
    let mut registry = statefun_engine::FunctionRegistry::new();
    registry.register(spec)?;
    Ok(registry)
}

/// Latency summary of one run.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    /// Samples (µs).
    pub samples: usize,
    /// Median (µs).
    pub p50: u64,
    /// 99th percentile (µs).
    pub p99: u64,
    /// Maximum (µs).
    pub max: u64,
}

impl Latencies {
    /// Summarises `values` (µs; sorted in place).
    pub fn of(values: &mut [u64]) -> Self {
        values.sort_unstable();
        Latencies {
            samples: values.len(),
            p50: quantile(values, 0.5).unwrap_or(0),
            p99: quantile(values, 0.99).unwrap_or(0),
            max: values.last().copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn values_carry_the_send_time_through_the_transformation() {
        let v = record_value(123_456, 7, 64);
        assert_eq!(v.len(), 64);
        let out = transformed(&v, 3);
        assert_eq!(send_micros(&out), Some(123_456));
        assert_eq!(&out[64..], &3i32.to_le_bytes());
    }
}
