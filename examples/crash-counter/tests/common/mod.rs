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
#[allow(dead_code)] // restore.rs draws nothing
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
/// egress destination passed in the environment variable `output.0`, and
/// `more` command-line arguments (e.g. `--restart`).
#[allow(dead_code)] // crash.rs starts its own job shapes
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

/// The exactly-once file egress `out.jsonl` the app's lines go to (module.yaml text).
#[allow(dead_code)]
pub fn file_egress() -> String {
    format!(
        "kind: io.statefun-rs.file.v1/egress\nspec:\n  id: {}\n  path: out.jsonl\n  deliverySemantic: exactly-once\n",
        example_crash_counter::OUT
    )
}

/// An exactly-once Kafka egress for the app's lines to `topic` (module.yaml text), with
/// `topic` as the `transactional.id` prefix and `<topic>-progress` as the progress topic,
/// so that runs of different tests never fence each other.
#[allow(dead_code)]
pub fn kafka_egress(bootstrap: &str, topic: &str) -> String {
    format!(
        "kind: io.statefun.kafka.v1/egress\nspec:\n  id: {}\n  address: {bootstrap}\n  \
         deliverySemantic: {{ type: exactly-once, transactionTimeout: 60s }}\n  properties:\n    \
         - transactional.id: {topic}\n    - statefun.progress.topic: {topic}-progress\n",
        example_crash_counter::OUT
    )
}

/// Waits up to `limit` for `child` to exit: its status and what it wrote to its (piped)
/// stderr; `None`, after killing it, if it did not exit in time.
#[allow(dead_code)]
pub fn exit_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<(std::process::ExitStatus, String)> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return Some((status, err));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What `checkpoints STATE_DIR…` prints in `dir` (the listing a user reads), with its
/// stderr; panics if it fails.
#[allow(dead_code)]
pub fn list_checkpoints(dir: &std::path::Path, state_dirs: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir)
        .arg("checkpoints")
        .args(state_dirs)
        .output()
        .expect("run checkpoints");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "checkpoints failed: {text}");
    text
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

/// What goes wrong while the input is being produced.
#[allow(dead_code)]
#[derive(Clone, Copy, PartialEq)]
pub enum Fault {
    /// The app is SIGKILLed repeatedly (`STATEFUN_CRASH_KILLS`, else the count).
    Kills(u64),
    /// The external service (broker, emulator) is paused with SIGSTOP for this
    /// long, so every connection hangs rather than failing fast; then resumed
    /// with SIGCONT.
    ServicePause(std::time::Duration),
    /// The external service is stopped (SIGTERM, its orderly shutdown), stays
    /// down this long, and is started again as it was (same ports and data):
    /// connections are refused meanwhile.
    ServiceRestart(std::time::Duration),
    /// The proxy in front of the service closes every connection and refuses
    /// new ones for this long (for a service that cannot be restarted with its
    /// data, see `statefun_testkit::proxy`).
    EndpointDown(std::time::Duration),
}

/// What a pause, restart or outage hits.
#[allow(dead_code)]
pub enum Service<'a> {
    /// The service whose pid is in this file (written by its `ci/install-*.sh`).
    PidFile(Option<std::path::PathBuf>),
    /// The proxy the app reaches the service through.
    Proxy(&'a statefun_testkit::proxy::Proxy),
}

/// Applies `fault` to the app `start_with(extra args)` starts; returns how
/// many times it was killed. For a pause, restart or outage of `service`
/// the app runs with `--restart on-failure`, must still run when the service
/// is back (it rides the outage out or restarts itself), and is then stopped
/// with SIGTERM; the caller's last run finishes the input.
#[allow(dead_code)]
pub fn apply(
    fault: Fault,
    service: Service<'_>,
    rng: &mut Lcg,
    start_with: impl Fn(&[&str]) -> std::process::Child,
) -> u64 {
    let outage = match fault {
        Fault::Kills(default_kills) => {
            let n = kills(default_kills);
            kill_repeatedly(n, 1200, rng, || start_with(&[]));
            return n;
        }
        Fault::ServicePause(outage)
        | Fault::ServiceRestart(outage)
        | Fault::EndpointDown(outage) => outage,
    };
    let mut child = start_with(&["--restart", "on-failure:backoff=500ms..5s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let check = |child: &mut std::process::Child| {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "with --restart the app must ride out a service that is away"
        );
    };
    match (fault, service) {
        (Fault::EndpointDown(_), Service::Proxy(proxy)) => {
            /// Brings the proxy back even if the test fails meanwhile.
            struct Up<'a>(&'a statefun_testkit::proxy::Proxy);
            impl Drop for Up<'_> {
                fn drop(&mut self) {
                    if let Err(e) = self.0.up() {
                        eprintln!("could not listen on {} again: {e}", self.0.addr);
                    }
                }
            }
            proxy.down();
            let _up = Up(proxy);
            std::thread::sleep(outage);
            check(&mut child);
        }
        (Fault::ServicePause(_) | Fault::ServiceRestart(_), Service::PidFile(pid_file)) => {
            use statefun_testkit::service::Service;
            let pid_file =
                pid_file.expect("the service's pid file (written by its ci/install-*.sh)");
            let mut service = Service::from_pid_file(&pid_file)
                .unwrap_or_else(|e| panic!("the service of {}: {e}", pid_file.display()));
            let pid = service.pid.to_string();
            let signal = |s: &str| {
                let sent = std::process::Command::new("kill").args([s, &pid]).status();
                assert!(sent.is_ok_and(|st| st.success()), "kill {s} {pid}");
            };
            /// Resumes a paused service even if the test fails meanwhile.
            struct Resume<'a>(&'a dyn Fn(&str));
            impl Drop for Resume<'_> {
                fn drop(&mut self) {
                    (self.0)("-CONT");
                }
            }
            /// Starts a stopped service again even if the test fails meanwhile.
            struct Restart<'a>(&'a mut Service);
            impl Drop for Restart<'_> {
                fn drop(&mut self) {
                    if let Err(e) = self.0.start() {
                        eprintln!("could not start the service again: {e}");
                    }
                }
            }
            if let Fault::ServicePause(_) = fault {
                signal("-STOP");
                let _resume = Resume(&signal);
                std::thread::sleep(outage);
                check(&mut child);
            } else {
                service.stop(std::time::Duration::from_secs(60));
                let _restart = Restart(&mut service);
                std::thread::sleep(outage);
                check(&mut child);
            }
        }
        _ => panic!("a pause or restart needs the pid file, an endpoint outage the proxy"),
    }
    // Time to reconnect (a restarted broker also elects itself and loads its
    // logs) and to work through what arrived meanwhile.
    std::thread::sleep(std::time::Duration::from_secs(5));
    terminate(child);
    0
}
