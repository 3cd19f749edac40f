//! What the engine's integration tests share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use statefun_engine::dataflow::{ClusterConfig, RunReport};
use statefun_engine::{run_module, FunctionRegistry, RunError, RunOptions, Shared};

/// Runs `module` on `workers` workers until `done()` holds (polled; at most a minute: an
/// unbounded ingress never ends by itself), then asks it to stop and returns how it ended.
pub fn run_until(
    module: PathBuf,
    registry: FunctionRegistry,
    workers: usize,
    done: impl Fn() -> bool,
) -> Result<RunReport, RunError> {
    let shared = Arc::new(Shared::default());
    let options = RunOptions {
        cluster: ClusterConfig {
            workers,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    };
    let s = shared.clone();
    let runner = std::thread::spawn(move || run_module(&module, &registry, &options, s));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() && Instant::now() < deadline && !runner.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.request_shutdown();
    runner.join().expect("the run does not panic")
}
