//! Kafka helpers for tests: topics and reading back what a job wrote.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::Message as _;

/// Creates `(topic, partitions)` with replication 1; panics naming the topic if one fails.
pub fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("Kafka admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    for result in futures_executor::block_on(admin.create_topics(&new, &AdminOptions::new()))
        .expect("create topics")
    {
        if let Err((topic, e)) = result {
            panic!("cannot create topic `{topic}`: {e}");
        }
    }
}

/// Produces `(partition, key, value)` records to `topic` and waits until the broker has
/// them all.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: impl IntoIterator<Item = (i32, String, String)>,
) {
    produce_records(
        bootstrap,
        topic,
        records.into_iter().map(|(partition, key, value)| Record {
            partition,
            key,
            value: value.into_bytes(),
            headers: Vec::new(),
            timestamp_ms: None,
        }),
    );
}

/// A record for [`produce_records`].
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// The partition it goes to.
    pub partition: i32,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
    /// Headers in order; `None` is a header with a null value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The create time to give it; `None` lets the producer stamp it.
    pub timestamp_ms: Option<i64>,
}

/// Produces `records` to `topic`, each to its partition in order (so the `n`-th record of
/// a partition gets offset `n` in a new topic), and waits until the broker has them all.
pub fn produce_records(bootstrap: &str, topic: &str, records: impl IntoIterator<Item = Record>) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // Idempotence keeps send order per partition even across retries: offsets follow it.
        .set("enable.idempotence", "true")
        .create()
        .expect("Kafka producer");
    for r in records {
        let mut record = BaseRecord::to(topic)
            .partition(r.partition)
            .key(&r.key)
            .payload(&r.value);
        if !r.headers.is_empty() {
            let headers = r
                .headers
                .iter()
                .fold(OwnedHeaders::new(), |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: value.as_deref(),
                    })
                });
            record = record.headers(headers);
        }
        if let Some(ts) = r.timestamp_ms {
            record = record.timestamp(ts);
        }
        producer.send(record).expect("queue a record");
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("flush the records");
}

/// The sum of `topic`'s high watermarks over its partitions: how much was written to
/// it (records, aborted ones and transaction markers included), to wait for progress.
pub fn high_watermarks(bootstrap: &str, topic: &str) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("Kafka consumer");
    let partitions = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()
        .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
        .unwrap_or(0);
    (0..partitions as i32)
        .filter_map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .ok()
        })
        .map(|(_, high)| high.max(0) as u64)
        .sum()
}

/// Reads `topic` from the beginning as a `read_committed` consumer until `n`
/// records arrived (at most a minute), then keeps reading for `settle` so
/// that a record beyond `n` (a duplicate) would show too.
pub fn read_committed(
    bootstrap: &str,
    topic: &str,
    n: usize,
    settle: Duration,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-check-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("Kafka consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut got = Vec::new();
    let mut deadline = Instant::now() + Duration::from_secs(60);
    let mut settling = false;
    while Instant::now() < deadline {
        if got.len() >= n && !settling {
            deadline = Instant::now() + settle;
            settling = true;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            got.push(m.detach());
        }
    }
    got
}

/// A record's key, value and headers (in order) as text.
pub type TextRecord = (String, String, Vec<(String, String)>);

/// A record's key, value and headers as (lossy) UTF-8 text, for assertions.
pub fn text(m: &OwnedMessage) -> TextRecord {
    use rdkafka::message::Headers as _;
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), text(h.value)))
                .collect()
        })
        .unwrap_or_default();
    (text(m.key()), text(m.payload()), headers)
}

/// The secured listeners of the test broker and what a client needs for them: the
/// `secure.env` that `ci/install-kafka.sh` writes next to `bootstrap` (a throwaway CA,
/// certificates and passwords made for the test broker only).
#[derive(Clone, Debug)]
pub struct Secure {
    /// Every `KEY=value` line of `secure.env`.
    values: std::collections::BTreeMap<String, String>,
}

impl Secure {
    /// The test broker's `secure.env`; `None` means skip (under `CI` a missing file panics).
    pub fn load() -> Option<Secure> {
        let path = crate::service_home("KAFKA_HOME", "kafka")?.join("secure.env");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return crate::unavailable(
                &format!("no {} (the broker's secured listeners)", path.display()),
                "bash ci/install-kafka.sh",
            );
        };
        let values = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(Secure { values })
    }

    /// The value of `key` (e.g. `KAFKA_SSL_BOOTSTRAP`); panics naming it if missing.
    pub fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("secure.env has no {key}; re-run ci/install-kafka.sh"))
    }
}

/// A broker of its own for a test that stops and restarts it: `ci/install-kafka.sh` run
/// with a private `KAFKA_HOME` (the jars are linked from the shared broker's home, so
/// nothing is downloaded), on fresh ports and an empty data dir. Restarting the shared
/// broker would leave the tests after it with a broker that is still loading and
/// re-electing; this one is stopped and deleted when dropped.
pub struct PrivateBroker {
    home: std::path::PathBuf,
    /// Its bootstrap address (the PLAINTEXT listener).
    pub bootstrap: String,
}

impl PrivateBroker {
    /// Starts one (about 10 s); `None` means skip (under `CI` a failure panics).
    pub fn start() -> Option<PrivateBroker> {
        let shared = crate::service_home("KAFKA_HOME", "kafka")?;
        if !shared.join("lib").is_dir() {
            return crate::unavailable(
                &format!("no Kafka jars in {}", shared.join("lib").display()),
                "bash ci/install-kafka.sh",
            );
        }
        let home = std::env::temp_dir().join(format!(
            "statefun-private-kafka-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&home).expect("create the private KAFKA_HOME");
        let linked = std::os::unix::fs::symlink(shared.join("lib"), home.join("lib"))
            .and_then(|()| std::fs::copy(shared.join("version"), home.join("version")));
        if let Err(e) = linked {
            return crate::unavailable(
                &format!(
                    "cannot prepare a private broker from {}: {e}",
                    shared.display()
                ),
                "bash ci/install-kafka.sh",
            );
        }
        let out = std::process::Command::new("bash")
            .arg(install_script())
            .env("KAFKA_HOME", &home)
            // The broker's run dir (data, logs) goes under the home, deleted on drop.
            .env("TMPDIR", &home)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run ci/install-kafka.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let broker = PrivateBroker {
            bootstrap: text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
                .unwrap_or_default()
                .to_string(),
            home,
        };
        if !out.status.success() || broker.bootstrap.is_empty() {
            return crate::unavailable(
                &format!(
                    "a private broker did not start: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                "bash ci/install-kafka.sh",
            );
        }
        Some(broker)
    }

    /// Its pid file (for [`crate::service::Service::from_pid_file`]).
    pub fn pid_file(&self) -> std::path::PathBuf {
        self.home.join("broker.pid")
    }
}

/// `ci/install-kafka.sh` of this checkout.
fn install_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/install-kafka.sh")
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(install_script())
            .env("KAFKA_HOME", &self.home)
            .env("KAFKA_STOP", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
