//! The greeter end to end through a real Kafka broker (ci/install-kafka.sh),
//! run as users run it: the `example-greeter` binary on `kafka.yaml` with a
//! state dir. Names produced to a topic come back as greetings on another
//! topic — exactly once, in order per name — with 1 worker, 2 workers and 2
//! processes; a keyless record goes to the dead-letter topic.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const BIN: &str = env!("CARGO_BIN_EXE_example-greeter");
const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];

struct Topics {
    names: String,
    greetings: String,
    dead_letters: String,
    group: String,
}

impl Topics {
    fn create(bootstrap: &str, run: &str) -> Topics {
        let t = Topics {
            names: format!("{run}-names"),
            greetings: format!("{run}-greetings"),
            dead_letters: format!("{run}-names.dead-letters"),
            group: format!("{run}-greeter"),
        };
        statefun_testkit::kafka::create_topics(
            bootstrap,
            &[(&t.names, 4), (&t.greetings, 1), (&t.dead_letters, 1)],
        );
        t
    }

    /// `examples/greeter/kafka.yaml` pointed at this broker and these topics.
    fn module(&self, bootstrap: &str, dir: &Path) -> std::path::PathBuf {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka.yaml");
        let yaml = std::fs::read_to_string(example)
            .expect("read kafka.yaml")
            .replace("names.dead-letters", &self.dead_letters)
            .replace("- topic: names\n", &format!("- topic: {}\n", self.names))
            .replace(
                "consumerGroupId: greeter",
                &format!("consumerGroupId: {}", self.group),
            )
            .replace(
                "transactional.id: greeter",
                &format!("transactional.id: {}", self.group),
            )
            .replace("localhost:9092", bootstrap);
        let path = dir.join("kafka.yaml");
        std::fs::write(&path, yaml).expect("write module");
        path
    }
}

/// Starts the job: `processes` processes of `workers` workers each.
fn start(
    module: &Path,
    dir: &Path,
    greetings: &str,
    workers: usize,
    processes: usize,
) -> Vec<Child> {
    let hostfile = (processes > 1).then(|| {
        let hosts: Vec<String> = (0..processes)
            .map(|_| format!("127.0.0.1:{}", statefun_testkit::free_port()))
            .collect();
        let path = dir.join("hosts.txt");
        std::fs::write(&path, hosts.join("\n")).expect("write hostfile");
        path
    });
    (0..processes)
        .map(|p| {
            let mut cmd = Command::new(BIN);
            cmd.arg("run")
                .arg(module)
                .arg("--state-dir")
                .arg(dir.join("state"))
                .args(["--checkpoint-interval", "200ms", "-w", &workers.to_string()])
                .env("GREETINGS_TOPIC", greetings)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let Some(h) = &hostfile {
                cmd.args(["-n", &processes.to_string(), "-p", &p.to_string(), "-h"])
                    .arg(h);
            }
            cmd.spawn().expect("start example-greeter")
        })
        .collect()
}

/// SIGTERMs every process and checks that each exits 0.
fn stop(children: Vec<Child>) {
    for child in &children {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
    for mut child in children {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the greeter did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "the greeter failed: {status}\n{err}");
    }
}

/// `(key, value, headers)` of the records in `topic`, read_committed, until
/// `n` arrived, plus anything arriving in the next 2 s (a duplicate would show).
fn read(bootstrap: &str, topic: &str, n: usize) -> Vec<statefun_testkit::kafka::TextRecord> {
    statefun_testkit::kafka::read_committed(bootstrap, topic, n, Duration::from_secs(2))
        .iter()
        .map(statefun_testkit::kafka::text)
        .collect()
}

fn greeter_through_kafka(workers: usize, processes: usize) {
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    let run = format!("greeter-{}-{workers}w{processes}p", std::process::id());
    let topics = Topics::create(&bootstrap, &run);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    for _round in 0..3 {
        for name in NAMES {
            producer
                .send(BaseRecord::to(&topics.names).key(name).payload(name))
                .expect("produce");
        }
    }
    producer
        .send(BaseRecord::<str, str>::to(&topics.names).payload("nobody"))
        .expect("produce a keyless record");
    producer.flush(Duration::from_secs(10)).expect("flush");

    let dir = tempfile::tempdir().expect("temp dir");
    let module = topics.module(&bootstrap, dir.path());
    let children = start(&module, dir.path(), &topics.greetings, workers, processes);
    let greetings = read(&bootstrap, &topics.greetings, NAMES.len() * 3);
    let letters = read(&bootstrap, &topics.dead_letters, 1);
    stop(children);

    for name in NAMES {
        let got: Vec<&str> = greetings
            .iter()
            .filter(|(k, _, _)| k == name)
            .map(|(_, v, _)| v.as_str())
            .collect();
        assert_eq!(
            got,
            [
                format!("Hello {name}! 😎"),
                format!("Hello again {name}! 🤗"),
                format!("Hello {name}! I've seen you 3 times. 👋"),
            ],
            "greetings for {name}, exactly once and in order"
        );
    }
    assert_eq!(greetings.len(), NAMES.len() * 3, "{greetings:?}");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (key, value, headers) = &letters[0];
    assert_eq!((key.as_str(), value.as_str()), ("", "nobody"));
    assert!(
        headers.contains(&(
            "statefun.dead-letter.reason".to_owned(),
            "it has no key, and the key is the function id".to_owned()
        )),
        "{headers:?}"
    );
}

#[test]
fn greeter_through_kafka_one_worker() {
    greeter_through_kafka(1, 1);
}

#[test]
fn greeter_through_kafka_two_workers() {
    greeter_through_kafka(2, 1);
}

#[test]
fn greeter_through_kafka_two_processes() {
    greeter_through_kafka(1, 2);
}
