//! What resuming costs when the worker count changes (issue #20): a job builds `--keys`
//! keys of state in RocksDB (file ingress → a counter keeping `--value-bytes` per key),
//! stops, and is resumed from copies of that state with the same worker count and with
//! others. Each resume reads no new input, so its time is the restore (and the rescale:
//! reading every key group, moving it across the exchange, writing the new databases and
//! committing) plus the final checkpoint.
//!
//! ```sh
//! cargo run --release -p statefun-benchmarks --bin rescale_bench -- --keys 1000000
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use statefun_engine::app::Durability;
use statefun_engine::bench::{cpu_seconds, peak_rss_mib};
use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, FunctionRegistry, RunOptions, Settings, Shared};
use statefun_sdk::{Context, FunctionError, FunctionSpec, Message, RawType, TypeName, ValueSpec};

#[derive(Parser)]
#[command(about = "Resume time with the same and with another worker count")]
struct Args {
    /// Distinct keys (one record each) in the state.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Bytes of state per key.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Where to build the state (a temporary directory by default); states built there
    /// before (`built-N`) are reused.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only this resume, `FROM:TO` workers (so that the process's peak RSS and CPU time,
    /// e.g. from `/usr/bin/time -v`, are the rescale's alone once the state is built).
    #[arg(long)]
    resume: Option<String>,
}

fn registry(value_bytes: usize) -> Result<FunctionRegistry, String> {
    let blob = TypeName::parse("bench/blob").map_err(|e| e.to_string())?;
    let spec = ValueSpec::new("v", RawType::new(blob));
    let descriptor = spec.descriptor();
    let counter = move |ctx: &mut Context<'_>, _m: Message| -> Result<(), FunctionError> {
        // Bytes that do not compress away, as real state does not.
        let fresh = |id: &str| -> Vec<u8> {
            let mut x = id.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            (0..value_bytes)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect()
        };
        let id = ctx.self_address().id.clone();
        let mut v: Vec<u8> = ctx.get(&spec)?.unwrap_or_else(|| fresh(&id));
        v[0] = v[0].wrapping_add(1);
        ctx.set(&spec, &v)?;
        Ok(())
    };
    let mut registry = FunctionRegistry::new();
    let function =
        FunctionSpec::builder(TypeName::parse("bench/counter").map_err(|e| e.to_string())?)
            .with_value_spec_descriptor(descriptor)
            .with_function(counter)
            .build()
            .map_err(|e| e.to_string())?;
    registry.register(function).map_err(|e| e.to_string())?;
    Ok(registry)
}

fn run(
    dir: &Path,
    state: &Path,
    registry: &FunctionRegistry,
    workers: usize,
) -> Result<(Duration, f64), String> {
    let options = RunOptions {
        settings: Settings {
            durability: Some(Durability::new(state)),
            ..Settings::default()
        },
        cluster: ClusterConfig {
            workers,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    };
    let (started, cpu) = (Instant::now(), cpu_seconds());
    run_module(
        &dir.join("module.yaml"),
        registry,
        &options,
        Arc::new(Shared::default()),
    )
    .map_err(|e| e.to_string())?;
    Ok((started.elapsed(), cpu_seconds() - cpu))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn dir_mib(path: &Path) -> f64 {
    fn size(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => size(&e.path()),
                        _ => e.metadata().map_or(0, |m| m.len()),
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    size(path) as f64 / (1024.0 * 1024.0)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("module.yaml"),
        "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: bench/in\n  path: in.txt\n  \
         valueType: io.statefun.types/string\n  targets:\n    - bench/counter\n",
    )
    .map_err(|e| e.to_string())?;
    let registry = registry(args.value_bytes)?;
    println!(
        "keys: {}, {} bytes of state per key",
        args.keys, args.value_bytes
    );
    let only: Option<(usize, usize)> = match &args.resume {
        Some(r) => Some(
            r.split_once(':')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| format!("--resume {r}: expected FROM:TO, e.g. 1:2"))?,
        ),
        None => None,
    };
    let mut built = Vec::new();
    for workers in [1usize, 2, 3] {
        if only.is_some_and(|(from, _)| from != workers) {
            continue;
        }
        let state = dir.join(format!("built-{workers}"));
        if !state.exists() {
            if !dir.join("in.txt").exists() {
                let mut input = String::with_capacity(args.keys as usize * 12);
                for k in 0..args.keys {
                    input.push_str(&format!("k{k}\tx\n"));
                }
                std::fs::write(dir.join("in.txt"), input).map_err(|e| e.to_string())?;
            }
            let (wall, cpu) = run(&dir, &state, &registry, workers)?;
            println!(
                "build with {workers} worker(s): {:.2} s wall, {cpu:.2} s CPU, state {:.0} MiB",
                wall.as_secs_f64(),
                dir_mib(&state)
            );
        }
        built.push((workers, state));
    }
    println!("| from | to | resume wall | resume CPU |");
    println!("|---|---|---|---|");
    for (from, state) in &built {
        for to in [1usize, 2, 3] {
            if only.is_some_and(|(_, t)| t != to) {
                continue;
            }
            let copy = dir.join(format!("resume-{from}-{to}"));
            let _ = std::fs::remove_dir_all(&copy);
            copy_dir(state, &copy).map_err(|e| e.to_string())?;
            let (wall, cpu) = run(&dir, &copy, &registry, to)?;
            println!(
                "| {from} | {to} | {:.2} s | {cpu:.2} s |",
                wall.as_secs_f64()
            );
            let _ = std::fs::remove_dir_all(&copy);
        }
    }
    println!("peak RSS of the whole run: {:.0} MiB", peak_rss_mib());
    Ok(())
}
