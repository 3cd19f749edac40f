//! What the crash tests share: replayable randomness and the soak knobs.

/// A small deterministic random source (the seed is printed to replay a run).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `STATEFUN_CRASH_SEED`, else the clock.
pub fn seed() -> u64 {
    std::env::var("STATEFUN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// `STATEFUN_CRASH_KILLS`, else `default`.
pub fn kills<T: std::str::FromStr>(default: T) -> T {
    std::env::var("STATEFUN_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Starts the app as the broker crash tests run it: `module.yaml` in `dir`,
/// 2 workers, RocksDB state in `dir/state`, a checkpoint every 100 ms, the
/// egress destination passed in the environment variable `output.0`.
#[allow(dead_code)] // crash.rs starts its own job shapes
pub fn start_app(dir: &std::path::Path, output: (&str, &str)) -> std::process::Child {
    start_app_with(dir, output, &[])
}

/// [`start_app`] with more command-line arguments (e.g. `--restart`).
#[allow(dead_code)]
pub fn start_app_with(
    dir: &std::path::Path,
    output: (&str, &str),
    more: &[&str],
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir)
        .args([
            "run",
            "module.yaml",
            "--state-dir",
            "state",
            "--checkpoint-interval",
            "100ms",
            "-w",
            "2",
        ])
        .args(more)
        .env(output.0, output.1)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start the app")
}

/// Starts the app `kills` times and SIGKILLs it after 300 ms plus up to
/// `spread_ms` more (drawn from `rng`).
#[allow(dead_code)]
pub fn kill_repeatedly(
    kills: u64,
    spread_ms: u64,
    rng: &mut Lcg,
    start: impl Fn() -> std::process::Child,
) {
    for _ in 0..kills {
        let mut child = start();
        std::thread::sleep(std::time::Duration::from_millis(300 + rng.below(spread_ms)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
}

/// SIGTERMs `child` (drain, final checkpoint, delivery) and waits up to a
/// minute for it to exit, killing it after that; its exit status.
#[allow(dead_code)]
pub fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().expect("wait")
}
