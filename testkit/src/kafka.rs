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
