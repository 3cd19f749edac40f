//! The command line as users drive it: an unbounded run stops cleanly on
//! SIGTERM with everything written, and startup errors exit non-zero naming
//! the file and field.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_example-greeter");

fn wait_for_lines(path: &std::path::Path, n: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let lines = std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_an_unbounded_run_cleanly_with_all_output_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("names.txt");
    std::fs::write(&input, "alice\talice\nbob\tbob\n").unwrap();
    let yaml = "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: example/names\n  path: names.txt\n  valueType: io.statefun.types/string\n  targets: [example/greeter]\n  follow: true\n---\nkind: io.statefun-rs.file.v1/egress\nspec:\n  id: example/greets\n  path: out.jsonl\n";
    std::fs::write(dir.path().join("module.yaml"), yaml).unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .arg(dir.path().join("module.yaml"))
        .args(["-w", "2"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let out = dir.path().join("out.jsonl");
    assert_eq!(wait_for_lines(&out, 2, Duration::from_secs(30)), 2);
    // The followed file grows while the job runs.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap()
        .write_all(b"alice\talice\n")
        .unwrap();
    assert_eq!(wait_for_lines(&out, 3, Duration::from_secs(30)), 3);
    assert!(
        child.try_wait().unwrap().is_none(),
        "a followed file keeps the job running"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "no clean exit within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "SIGTERM is a clean shutdown: {exit}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.contains("Hello again alice!"), "{text}");
}

#[test]
fn startup_errors_exit_non_zero_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("module.yaml");
    std::fs::write(
        &module,
        "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: example/names\n  path: names.txt\n  valueTyp: io.statefun.types/string\n  targets: [example/greeter]\n",
    )
    .unwrap();
    for command in ["run", "validate"] {
        let output = Command::new(BIN)
            .arg(command)
            .arg(&module)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("module.yaml:5:3"), "{command}: {stderr}");
        assert!(stderr.contains("spec.valueTyp"), "{command}: {stderr}");
        assert!(
            stderr.contains("did you mean `valueType`"),
            "{command}: {stderr}"
        );
    }
    // A missing input file fails the run with its path.
    std::fs::write(
        &module,
        "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: example/names\n  path: nowhere.txt\n  valueType: io.statefun.types/string\n  targets: [example/greeter]\n",
    )
    .unwrap();
    let output = Command::new(BIN).arg("run").arg(&module).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nowhere.txt"));
}

/// `validate` takes the Java Kafka client properties StateFun users write:
/// `sasl.jaas.config` and Java-only settings are translated or named as
/// ignored (warnings, exit 0); a property librdkafka does not know and a JKS
/// truststore fail it (exit 1) naming the file, the ingress and the fix;
/// the password never appears. It opens nothing (the address is unreachable).
#[test]
fn validate_checks_kafka_properties_against_librdkafka_without_opening_anything() {
    let dir = tempfile::tempdir().unwrap();
    let module = |extra: &str| {
        format!(
            "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: example/names\n  address: 127.0.0.1:1\n  \
             consumerGroupId: g\n  topics:\n    - topic: names\n      valueType: io.statefun.types/string\n      \
             targets: [example/greeter]\n  properties:\n    - security.protocol: SASL_SSL\n    \
             - sasl.mechanism: SCRAM-SHA-512\n    \
             - sasl.jaas.config: 'org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"hunter2-secret\";'\n    \
             - key.deserializer: org.apache.kafka.common.serialization.StringDeserializer\n    \
             - max.poll.records: 500\n{extra}"
        )
    };
    let validate = |yaml: String| {
        let path = dir.path().join("module.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(BIN)
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains("hunter2-secret"),
            "a secret was printed: {text}"
        );
        (out.status.code(), text)
    };
    let (code, text) = validate(module(""));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("`sasl.jaas.config` (ScramLoginModule) translated")
            && text.contains("`key.deserializer` is a Java client setting and is ignored")
            && text.contains("`max.poll.records`"),
        "{text}"
    );
    let jks = dir.path().join("truststore.jks");
    std::fs::write(&jks, [0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 2]).unwrap();
    let (code, text) = validate(module(&format!(
        "    - ssl.truststore.location: {}\n    - fetch.max.wait.msec: 100\n",
        jks.display()
    )));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("module.yaml")
            && text.contains("`example/names`")
            && text.contains("keytool -importkeystore")
            && text.contains("`fetch.max.wait.msec` is not one librdkafka takes"),
        "{text}"
    );
}

/// Secrets from the environment: `${NAME}` in a Kafka property is filled in
/// from the environment when the client is made, so module.yaml can be
/// committed without them; `validate` names a variable that is not set, and
/// never prints the value of one that is.
#[test]
fn validate_names_a_missing_environment_variable_and_never_prints_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("module.yaml");
    std::fs::write(
        &path,
        "kind: io.statefun-rs.kafka.v1/cluster\nspec:\n  id: prod\n  address: 127.0.0.1:1\n  properties:\n    \
         - security.protocol: SASL_SSL\n    - sasl.mechanism: PLAIN\n    - sasl.username: app\n    \
         - sasl.password: ${STATEFUN_CLI_TEST_KAFKA_PASSWORD}\n---\n\
         kind: io.statefun.kafka.v1/egress\nspec:\n  id: example/out\n  cluster: prod\n",
    )
    .unwrap();
    let run = |env: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("validate").arg(&path);
        match env {
            Some(v) => cmd.env("STATEFUN_CLI_TEST_KAFKA_PASSWORD", v),
            None => cmd.env_remove("STATEFUN_CLI_TEST_KAFKA_PASSWORD"),
        };
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = run(None);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("`STATEFUN_CLI_TEST_KAFKA_PASSWORD`") && text.contains("`example/out`"),
        "{text}"
    );
    let (code, text) = run(Some("from-the-environment-42"));
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("from-the-environment-42"), "{text}");
}
