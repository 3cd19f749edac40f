//! The stock `statefun` binary: no Rust functions registered (remote
//! functions only). Apps with Rust functions build their own binary around
//! `statefun_engine::run_from_args`.

// Messages are small, short-lived allocations crossing threads; mimalloc
// handles that pattern far better than glibc's allocator (see docs/BENCHMARKS.md).
// With the crate's `override` feature it serves RocksDB's and librdkafka's
// `malloc` too (see engine/Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    statefun_engine::run_from_args(statefun_engine::FunctionRegistry::new())
}
