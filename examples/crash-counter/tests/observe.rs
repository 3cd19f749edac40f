//! `--metrics-addr` on a running job: `/readyz` turns ready once the job is built, the
//! counters of `/metrics` equal the records the job processed, `/healthz` answers, and
//! readiness goes once the job stops.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use example_crash_counter::COUNTER;
use statefun_testkit::http_get;

mod common;
use common::{file_egress, terminate};

/// Polls `path` until `done` holds for its answer (at most a minute).
fn wait_until(addr: &str, path: &str, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((status, body)) = http_get(addr, path) {
            if done(status, &body) {
                return (status, body);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered as expected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_exactly_what_the_job_did_and_probes_follow_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let records = 120u64;
    let input: String = (0..records).map(|i| format!("{}\tv{i}\n", i % 9)).collect();
    std::fs::write(dir.path().join("in.txt"), input).expect("input");
    std::fs::write(
        dir.path().join("module.yaml"),
        format!(
            "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: observe/in\n  path: in.txt\n  \
             valueType: io.statefun.types/string\n  follow: true\n  targets:\n    - {COUNTER}\n---\n{}",
            file_egress()
        ),
    )
    .expect("module.yaml");
    let addr = format!("127.0.0.1:{}", statefun_testkit::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_example-crash-counter"))
        .current_dir(dir.path())
        .args(["run", "module.yaml", "--state-dir", "state", "-w", "2"])
        .args(["--checkpoint-interval", "100ms", "--metrics-addr", &addr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the app");
    // A failed assertion must not leave the job running.
    struct Kill(Option<std::process::Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut guard = Kill(Some(child));
    let (_, body) = wait_until(&addr, "/readyz", |status, _| status == 200);
    assert_eq!(body, "ready\n");
    assert_eq!(http_get(&addr, "/healthz"), Some((200, "ok\n".to_string())));
    assert_eq!(http_get(&addr, "/nothing-here").map(|(s, _)| s), Some(404));
    // Each record: one counter invocation, one audit and one delayed tick (to the counter).
    let (_, metrics) = wait_until(&addr, "/metrics", |_, text| {
        text.contains(&format!(
            "statefun_function_invocations_total{{process=\"0\",function=\"crash/counter\"}} {}",
            2 * records
        )) && text.contains(&format!(
            "statefun_function_invocations_total{{process=\"0\",function=\"crash/audit\"}} {records}"
        ))
    });
    for line in [
        format!("statefun_ingress_records_total{{process=\"0\",ingress=\"observe/in\"}} {records}"),
        "statefun_function_invocation_failures_total{process=\"0\",function=\"crash/counter\"} 0"
            .to_string(),
        "statefun_ready{process=\"0\"} 1".to_string(),
        "# TYPE statefun_epoch_lag_seconds gauge".to_string(),
    ] {
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }
    // Egress records go out once their checkpoint is durable everywhere: all of them.
    wait_until(&addr, "/metrics", |_, text| {
        text.contains(&format!(
            "statefun_egress_records_total{{process=\"0\",egress=\"crash/out\"}} {}",
            3 * records
        )) && text.contains("statefun_checkpoint_age_seconds")
    });
    let status = terminate(guard.0.take().expect("the job"));
    assert!(status.success(), "{status}");
    assert!(
        http_get(&addr, "/healthz").is_none(),
        "the endpoint goes with the process"
    );
}
