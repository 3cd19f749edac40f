//! The migration example end to end, as an operator runs it: `functions.py` (official Python
//! SDK) served on a free port, `module.yaml` with the test broker's address, input records
//! produced to a Kafka topic, the stock `statefun` binary as a real process with durable state,
//! and the receipts read back from the egress topic with a `read_committed` consumer, record by
//! record. Then the same with a SIGKILL in the middle of the stream and a restart from the same
//! state directory: every receipt exactly once.
//!
//! Needs the broker of `ci/install-kafka.sh`, the venv of `ci/install-python-sdk.sh` and the
//! `statefun` binary (`cargo test --workspace` builds it; alone: `cargo build --release -p
//! statefun-engine --bin statefun`, or set `STATEFUN_BIN`). Without them the tests are skipped,
//! except under `CI`, where they fail.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use statefun_testkit::FunctionServer;

/// Users (carts) and requests per user.
const USERS: usize = 40;
const REQUESTS_PER_USER: usize = 25;
const PARTITIONS: usize = 4;

/// The example's own directory (module.yaml, functions.py).
fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The stock `statefun` binary: `$STATEFUN_BIN`, else the one next to this test's directory
/// in the target dir (`target/release/statefun`, which `cargo test --workspace` builds).
fn statefun_bin() -> Option<PathBuf> {
    let path = match std::env::var_os("STATEFUN_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("statefun")))?,
    };
    if path.is_file() {
        Some(path)
    } else {
        statefun_testkit::unavailable(
            &format!("no statefun binary at {}", path.display()),
            "cargo build --release -p statefun-engine --bin statefun",
        )
    }
}

/// functions.py on a free port, writing receipts to `receipts_topic`; killed on drop.
fn function_server(python: &Path, receipts_topic: &str) -> FunctionServer {
    let mut command = Command::new(python);
    command
        .arg(example().join("functions.py"))
        .args(["--port", "0"])
        .env("RECEIPTS_TOPIC", receipts_topic)
        .stdin(Stdio::null());
    FunctionServer::spawn(command)
}

/// One run's names on the shared broker, and its directory.
struct Setup {
    dir: tempfile::TempDir,
    bootstrap: String,
    input: String,
    receipts: String,
    module: PathBuf,
}

/// Replaces `from` by `to` in `text`, which must hold it exactly `times` times (so that a
/// change to the example's module.yaml cannot silently leave a default in place).
fn substitute(text: &str, from: &str, to: &str, times: usize) -> String {
    assert_eq!(
        text.matches(from).count(),
        times,
        "examples/migration/module.yaml should contain `{from}` {times} time(s)"
    );
    text.replace(from, to)
}

impl Setup {
    /// Topics of its own, and the example's module.yaml with only the deployment-specific
    /// values replaced: the broker, the function server's port, the topic and the group.
    fn new(bootstrap: &str, name: &str) -> Setup {
        let run = statefun_testkit::unique_name(name);
        let (input, receipts) = (format!("{run}-add-to-cart"), format!("{run}-receipts"));
        statefun_testkit::kafka::create_topics(
            bootstrap,
            &[(&input, PARTITIONS as i32), (&receipts, 2)],
        );
        let dir = tempfile::tempdir().expect("temp dir");
        Setup {
            module: dir.path().join("module.yaml"),
            dir,
            bootstrap: bootstrap.to_string(),
            input,
            receipts,
        }
    }

    fn write_module(&self, port: u16) {
        let text = std::fs::read_to_string(example().join("module.yaml")).expect("module.yaml");
        let text = substitute(&text, "localhost:9092", &self.bootstrap, 2);
        let text = substitute(&text, "localhost:8000", &format!("127.0.0.1:{port}"), 1);
        let text = substitute(
            &text,
            "topic: add-to-cart",
            &format!("topic: {}", self.input),
            1,
        );
        let group = format!("consumerGroupId: {}-group", self.input);
        let text = substitute(&text, "consumerGroupId: shop", &group, 1);
        std::fs::write(&self.module, text).expect("write module.yaml");
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("statefun-{run}.log"))
    }

    /// `statefun run module.yaml --state-dir <dir> -w 2 <args>`, logging to a file.
    fn start(&self, bin: &Path, run: usize, args: &[&str]) -> Runtime {
        let log = std::fs::File::create(self.log(run)).expect("create the log file");
        Command::new(bin)
            .arg("run")
            .arg(&self.module)
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["-w", "2"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Runtime)
            .expect("start statefun")
    }

    /// The last lines of every run's log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for run in 0.. {
            let Ok(text) = std::fs::read_to_string(self.log(run)) else {
                break;
            };
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- statefun run {run}, last lines:\n"));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// A running `statefun` process; killed on drop (so a failing test leaves none behind).
struct Runtime(Child);

impl Runtime {
    /// SIGKILL, as a crash would.
    fn kill(mut self) -> ExitStatus {
        self.0.kill().expect("SIGKILL statefun");
        self.0.wait().expect("wait for the killed statefun")
    }

    /// SIGTERM (the runtime stops its ingresses and drains), then waits for the exit.
    fn terminate(mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.0.try_wait().expect("wait for statefun").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        self.0.wait().expect("wait for statefun")
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One add-to-cart request, as a producer writes it.
struct Request {
    user: String,
    request_id: String,
    item: String,
    quantity: u64,
}

/// The input, in production order: user `i`'s `j`-th request asks for a staple (plenty in
/// stock), the user's own limited item (3 in stock: only this user asks for it, so the outcome
/// does not depend on how users interleave) or an unknown item (none in stock).
fn requests() -> Vec<Request> {
    let mut out = Vec::new();
    for j in 0..REQUESTS_PER_USER {
        for i in 0..USERS {
            let user = format!("u{i:02}");
            let item = match (i + j) % 6 {
                0 => "apple".to_string(),
                1 => "bread".to_string(),
                2 => format!("limited-{user}"),
                3 => "coffee".to_string(),
                4 => "milk".to_string(),
                _ => "unicorn".to_string(),
            };
            out.push(Request {
                request_id: format!("{user}-{}", j + 1),
                quantity: 1 + ((i + 2 * j) % 3) as u64,
                user,
                item,
            });
        }
    }
    out
}

/// The Kafka records of `requests`: key = user id (the cart's id), value = the JSON of
/// `shop/AddToCart`, a user's records all on one partition.
fn records(requests: &[Request]) -> Vec<(i32, String, String)> {
    requests
        .iter()
        .map(|r| {
            let index: usize = r.user[1..].parse().expect("user index");
            let value =
                json!({"request_id": r.request_id, "item_id": r.item, "quantity": r.quantity});
            (
                (index % PARTITIONS) as i32,
                r.user.clone(),
                value.to_string(),
            )
        })
        .collect()
}

/// What functions.py must write for `requests`: per user, one receipt per request, in order,
/// keyed by (user, receipt number).
fn expected_receipts(requests: &[Request]) -> BTreeMap<(String, u64), Value> {
    let mut stock: BTreeMap<String, u64> = BTreeMap::new();
    let mut carts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for r in requests {
        let left = stock
            .entry(r.item.clone())
            .or_insert(match r.item.as_str() {
                "apple" | "bread" | "coffee" | "milk" => 1_000_000,
                item if item.starts_with("limited-") => 3,
                _ => 0,
            });
        let reserved = r.quantity <= *left;
        let cart = carts.entry(r.user.clone()).or_default();
        if reserved {
            *left -= r.quantity;
            *cart.entry(r.item.clone()).or_default() += r.quantity;
        }
        let number = out.keys().filter(|(u, _)| *u == r.user).count() as u64 + 1;
        let receipt = json!({
            "user_id": r.user,
            "receipt": number,
            "request_id": r.request_id,
            "item_id": r.item,
            "quantity": r.quantity,
            "status": if reserved { "reserved" } else { "out-of-stock" },
            "cart": cart,
        });
        out.insert((r.user.clone(), number), receipt);
    }
    out
}

/// Reads the receipts topic (read_committed) until `n` records came, then 5 s more (so that a
/// duplicate would show), and checks them against `expected`: each is valid JSON keyed by its
/// user, none is repeated, none is missing, none is unexpected.
fn check_receipts(setup: &Setup, expected: &BTreeMap<(String, u64), Value>) {
    let got = statefun_testkit::kafka::read_committed(
        &setup.bootstrap,
        &setup.receipts,
        expected.len(),
        Duration::from_secs(5),
    );
    let mut seen: BTreeMap<(String, u64), Vec<Value>> = BTreeMap::new();
    for m in &got {
        let (key, value, _headers) = statefun_testkit::kafka::text(m);
        let receipt: Value = serde_json::from_str(&value)
            .unwrap_or_else(|e| panic!("a receipt that is not JSON ({e}): {value}"));
        assert_eq!(
            receipt["user_id"].as_str(),
            Some(key.as_str()),
            "the record key is the user id: {value}"
        );
        let number = receipt["receipt"].as_u64().expect("a receipt number");
        seen.entry((key, number)).or_default().push(receipt);
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, v)| v.len() > 1).take(5).collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .take(5)
        .collect();
    let unexpected: Vec<_> = seen
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(5)
        .collect();
    let logs = setup.logs();
    assert!(
        repeated.is_empty(),
        "receipts written twice: {repeated:?}\n{logs}"
    );
    assert!(
        missing.is_empty(),
        "receipts missing (of {} read): {missing:?}\n{logs}",
        got.len()
    );
    assert!(
        unexpected.is_empty(),
        "unexpected receipts: {unexpected:?}\n{logs}"
    );
    for (key, receipt) in expected {
        assert_eq!(&seen[key][0], receipt, "receipt {key:?}");
    }
    assert_eq!(got.len(), expected.len(), "exactly one record per receipt");
}

/// `statefun validate` on `module`: exit 0, nothing on stderr that warns; returns stdout.
fn validate(bin: &Path, module: &Path) -> String {
    let out = Command::new(bin)
        .arg("validate")
        .arg(module)
        .output()
        .expect("run statefun validate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "statefun validate {} failed:\n{stdout}{stderr}",
        module.display()
    );
    assert!(
        !stderr.to_lowercase().contains("warning"),
        "statefun validate {} warned:\n{stderr}",
        module.display()
    );
    stdout
}

/// The services and binary every test needs; `None` means skip (under `CI`: a panic).
fn prerequisites() -> Option<(String, PathBuf, PathBuf)> {
    let bin = statefun_bin()?;
    let python = statefun_testkit::python_sdk()?;
    let bootstrap = statefun_testkit::kafka_bootstrap()?;
    Some((bootstrap, python, bin))
}

/// Both tests share two cores and a broker: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_shipped_module_validates_without_warnings() {
    let Some(bin) = statefun_bin() else { return };
    let summary = validate(&bin, &example().join("module.yaml"));
    // The summary names what the module declares (its wording is the validator's own).
    for expected in [
        "shop/add-to-cart",
        "shop/AddToCart",
        "shop/receipts",
        "shop/*",
    ] {
        assert!(
            summary.contains(expected),
            "`{expected}` not in:\n{summary}"
        );
    }
}

#[test]
fn an_upstream_app_runs_unchanged_with_exact_receipts() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((bootstrap, python, bin)) = prerequisites() else {
        return;
    };
    let setup = Setup::new(&bootstrap, "migration");
    let server = function_server(&python, &setup.receipts);
    setup.write_module(server.port);
    validate(&bin, &setup.module);

    let requests = requests();
    statefun_testkit::kafka::produce(&bootstrap, &setup.input, records(&requests));
    let expected = expected_receipts(&requests);
    assert_eq!(expected.len(), USERS * REQUESTS_PER_USER);

    // The run settings of the example's statefun.yaml (its `state-dir` overridden by the flag).
    let config = example().join("statefun.yaml");
    let child = setup.start(
        &bin,
        0,
        &["--config", config.to_str().expect("a UTF-8 path")],
    );
    check_receipts(&setup, &expected);
    let status = child.terminate();
    assert!(
        status.success(),
        "statefun did not exit cleanly on SIGTERM: {status}\n{}",
        setup.logs()
    );
    drop(server);
}

#[test]
fn receipts_stay_exactly_once_across_a_sigkill() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((bootstrap, python, bin)) = prerequisites() else {
        return;
    };
    let setup = Setup::new(&bootstrap, "migration-kill");
    let server = function_server(&python, &setup.receipts);
    setup.write_module(server.port);
    let requests = requests();
    let expected = expected_receipts(&requests);

    // The input arrives in 20 batches while the job runs, so the kill falls mid-stream.
    let records = records(&requests);
    let (producer_bootstrap, input) = (bootstrap.clone(), setup.input.clone());
    let producing = std::thread::spawn(move || {
        for batch in records.chunks(records.len() / 20) {
            statefun_testkit::kafka::produce(&producer_bootstrap, &input, batch.to_vec());
            std::thread::sleep(Duration::from_millis(150));
        }
    });

    let first = setup.start(&bin, 0, &["--checkpoint-interval", "500ms"]);
    // Kill once some receipts are committed (or after a minute without them: the restart
    // must then produce every receipt on its own).
    let committed = statefun_testkit::kafka::read_committed(
        &bootstrap,
        &setup.receipts,
        expected.len() / 8,
        Duration::ZERO,
    )
    .len();
    let status = first.kill();
    println!(
        "killed ({status}) with {committed} of {} receipts committed",
        expected.len()
    );

    // Receipts were committed, so a checkpoint was complete: the restart resumes from it
    // (`statefun checkpoints` says so by the rule the restart applies).
    if committed > 0 {
        let listing = Command::new(&bin)
            .arg("checkpoints")
            .arg(setup.state_dir())
            .output()
            .expect("run statefun checkpoints");
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(
            listing.status.success() && text.contains("a restart resumes from checkpoint"),
            "statefun checkpoints after the kill:\n{text}{}",
            String::from_utf8_lossy(&listing.stderr)
        );
    }
    let second = setup.start(&bin, 1, &["--checkpoint-interval", "500ms"]);
    producing.join().expect("the producer thread");
    check_receipts(&setup, &expected);
    let status = second.terminate();
    assert!(
        status.success(),
        "the restarted statefun did not exit cleanly on SIGTERM: {status}\n{}",
        setup.logs()
    );
    drop(server);
}
