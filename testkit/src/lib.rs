//! Test support shared by the workspace's integration tests and benchmarks.
//!
//! The tests run against real services and SDKs that `ci/` scripts install
//! and start on 127.0.0.1 (a Kafka broker, the kinesis-local emulator, the
//! official Python SDK's venv, the Go SDK) and record in
//! `~/.cache/statefun-rs/`. Finding them is the same everywhere, and so is
//! the rule when one is missing ([`unavailable`]): under `CI` a test must fail
//! (a skipped test would hide a broken install), elsewhere it says it is
//! skipped and returns. `ci/test.sh` sets `CI=true` itself, so the README's
//! test command behaves the same on a developer's machine.
//!
//! ```no_run
//! let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else { return };
//! statefun_testkit::kafka::create_topics(&bootstrap, &[("my-test-in", 2)]);
//! ```

#![warn(missing_docs)]

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod kafka;
pub mod kinesis;
pub mod proxy;
pub mod service;

/// `$<home_var>` or `~/.cache/statefun-rs/<service>`: where a ci/ script keeps its files.
pub(crate) fn service_home(home_var: &str, service: &str) -> Option<PathBuf> {
    std::env::var_os(home_var).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/statefun-rs").join(service))
    })
}

/// The address `$<env>` names, else the first line of `<home>/<file>`.
fn configured(env: &str, home_var: &str, service: &str, file: &str) -> Option<String> {
    std::env::var(env)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            let text = std::fs::read_to_string(service_home(home_var, service)?.join(file)).ok()?;
            let line = text.lines().next()?.trim().to_owned();
            (!line.is_empty()).then_some(line)
        })
}

/// Whether something answers at `address` (`host:port[,…]`, or a URL).
fn answers(address: &str) -> bool {
    let addr = address
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    addr.split(',').next().is_some_and(|first| {
        first
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}

/// Where the Kafka broker should be: `$KAFKA_BOOTSTRAP`, else the file
/// `ci/install-kafka.sh` writes. Not checked; see [`kafka_bootstrap`].
pub fn kafka_address() -> Option<String> {
    configured("KAFKA_BOOTSTRAP", "KAFKA_HOME", "kafka", "bootstrap")
}

/// The pid file of the broker `ci/install-kafka.sh` started (`broker.pid`),
/// for fault tests that pause or restart it ([`service::Service`]).
pub fn kafka_broker_pid_file() -> Option<PathBuf> {
    Some(service_home("KAFKA_HOME", "kafka")?.join("broker.pid"))
}

/// The pid file of the emulator `ci/install-kinesis.sh` started (`pid`), for
/// fault tests that pause it or start a private copy ([`service::Service`]).
pub fn kinesis_emulator_pid_file() -> Option<PathBuf> {
    Some(service_home("KINESIS_HOME", "kinesis")?.join("pid"))
}

/// Where the Kinesis emulator should be: `$KINESIS_ENDPOINT`, else the file
/// `ci/install-kinesis.sh` writes. Not checked; see [`kinesis_endpoint`].
pub fn kinesis_address() -> Option<String> {
    configured("KINESIS_ENDPOINT", "KINESIS_HOME", "kinesis", "endpoint")
}

/// The one rule for a test whose service or SDK is missing: under `CI` it
/// panics (the install step is broken, and a skipped test would hide that);
/// elsewhere it prints `SKIPPED: <why>; run <fix>` and returns `None`, so a
/// test can write `let Some(x) = found.or_else(|| unavailable(..)) else { return };`.
///
/// ```no_run
/// let venv = std::path::Path::new("/nonexistent/venv/bin/python");
/// let Some(python) = venv
///     .exists()
///     .then(|| venv.to_path_buf())
///     .or_else(|| statefun_testkit::unavailable("no Python SDK venv", "bash ci/install-python-sdk.sh"))
/// else {
///     return;
/// };
/// # let _ = python;
/// ```
pub fn unavailable<T>(why: &str, fix: &str) -> Option<T> {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}; under CI this is a failure: run `{fix}`"
    );
    eprintln!("SKIPPED: {why}; run `{fix}` first");
    None
}

fn missing(what: &str, candidate: Option<String>, script: &str) -> Option<String> {
    unavailable(
        &format!("no {what} answers (found: {candidate:?})"),
        &format!("bash {script}"),
    )
}

/// The interpreter of the venv `ci/install-python-sdk.sh` makes (the official
/// StateFun Python SDK with aiohttp, Flask and gunicorn): `$STATEFUN_VENV/bin/python`,
/// else `~/.cache/statefun-rs/venv/bin/python`. `None` means skip; under `CI`
/// a missing venv panics instead.
pub fn python_sdk() -> Option<PathBuf> {
    let venv = service_home("STATEFUN_VENV", "venv")?;
    let python = venv.join("bin/python");
    if python.exists() {
        Some(python)
    } else {
        unavailable(
            &format!("no StateFun Python SDK venv at {}", venv.display()),
            "bash ci/install-python-sdk.sh",
        )
    }
}

/// The bootstrap servers of the test Kafka broker (`$KAFKA_BOOTSTRAP`, else
/// the file `ci/install-kafka.sh` writes), if it answers. `None` means skip;
/// under `CI` a missing broker panics instead.
pub fn kafka_bootstrap() -> Option<String> {
    match kafka_address() {
        Some(b) if answers(&b) => Some(b),
        candidate => missing("Kafka broker", candidate, "ci/install-kafka.sh"),
    }
}

/// The endpoint URL of the Kinesis emulator (`$KINESIS_ENDPOINT`, else the
/// file `ci/install-kinesis.sh` writes), if it answers. `None` means skip;
/// under `CI` a missing emulator panics instead.
pub fn kinesis_endpoint() -> Option<String> {
    match kinesis_address() {
        Some(e) if answers(&e) => Some(e),
        candidate => missing("Kinesis emulator", candidate, "ci/install-kinesis.sh"),
    }
}

/// `<prefix>-<pid>-<nanoseconds>-<counter>`: a name no other test, run or
/// concurrent process has used, for the topics, streams and consumer groups a
/// test creates on a shared broker or emulator (which keep them between runs).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The records a file egress wrote to `path` (JSON lines), as sorted `key value` lines: the
/// key (`-` when none) and the value as text (a binary value as its JSON form). Empty while
/// the file does not exist yet, so tests can poll it.
pub fn egress_lines(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {l}", path.display()));
            let value = match &j["value"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{} {value}", j["key"].as_str().unwrap_or("-"))
        })
        .collect();
    lines.sort();
    lines
}

/// A remote-function server the test started (an SDK app run as its own process), on the
/// port it announced; killed on drop.
pub struct FunctionServer {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
}

impl FunctionServer {
    /// Spawns `command` (stdout is taken over) and waits for the two lines such servers
    /// print once they listen: `PORT <n>` and `READY`.
    pub fn spawn(mut command: std::process::Command) -> FunctionServer {
        use std::io::BufRead;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the function server");
        let stdout = child.stdout.take().expect("its stdout");
        let mut port = 0;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("read the function server's output");
            if let Some(p) = line.strip_prefix("PORT ") {
                port = p.trim().parse().expect("a port number");
            }
            if line == "READY" {
                break;
            }
        }
        assert!(port > 0, "the function server did not report its port");
        FunctionServer { child, port }
    }
}

impl Drop for FunctionServer {
    fn drop(&mut self) {
        // Closing its stdin ends a server that serves until then; the kill ends the others.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP server that accepts connections, reads what comes and never answers: a remote
/// function that hangs. Returns its port and a receiver that gets one `()` per connection
/// once its first bytes (a request) arrived. It runs until the test process ends.
pub fn silent_server() -> (u16, std::sync::mpsc::Receiver<()>) {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a silent server");
    let port = listener.local_addr().expect("its address").port();
    let (arrived, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let arrived = arrived.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut told = false;
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if !told {
                        told = true;
                        let _ = arrived.send(());
                    }
                }
            });
        }
    });
    (port, requests)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for timely process addresses).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A plain HTTP/1.1 `GET` of `path` from `addr` (`host:port`): the status code and body,
/// or `None` if nothing answers (for probing endpoints a process serves, e.g. `/metrics`).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}
