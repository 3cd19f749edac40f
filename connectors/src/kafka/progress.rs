//! The progress topic of exactly-once Kafka egresses: creating it, and reading back the last
//! checkpoint a sink committed.
//!
//! Every exactly-once sink (one per egress and worker) writes one progress record into each of
//! its transactions: key `<egress id>/<worker>`, value the checkpoint id as decimal text. The
//! record commits or aborts together with the checkpoint's output, so the last *committed*
//! value for a key is exactly the last checkpoint whose output is visible to read_committed
//! readers. That makes the topic the source of truth for what was delivered: nothing the
//! engine remembers can disagree with it, because nothing else commits the records.
//!
//! The topic has one partition (the records are tiny and a single partition keeps "last value
//! for a key" well defined) and `cleanup.policy=compact` (only the last value per key matters).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use statefun_module::Properties;

use super::config::LogContext;

/// How long one broker request (metadata, watermarks, topic creation) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the progress topic may take to become readable after it was created (leader
/// election, metadata propagation), and how long reading it back may take.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Prefixes of `properties` keys that the helper clients (admin client, progress readers)
/// take over from the egress: how to reach and authenticate with the brokers. Producer
/// settings (`acks`, `linger.ms`, …) stay with the producer, where they belong; passing them
/// to a consumer would only fill the log with librdkafka's "ignored" warnings.
const CONNECTION_PREFIXES: &[&str] = &[
    "security.protocol",
    "sasl.",
    "ssl.",
    "ssl_",
    "enable.ssl.",
    "enable.sasl.",
    "https.",
    "client.id",
    "client.dns.lookup",
    "socket.",
    "broker.",
    "api.version",
    "reconnect.",
    "retry.backoff",
    "metadata.",
    "topic.metadata.",
    "resolve.",
    "connections.max.idle.ms",
    "log.",
    "debug",
];

/// Logs of the helper clients go to `tracing` like the producer's.
pub(crate) struct HelperContext {
    pub(crate) log: LogContext,
}

impl ClientContext for HelperContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.client_error(error, reason);
    }
}

impl ConsumerContext for HelperContext {}

/// Where the progress topic lives and how to reach it.
pub(crate) struct ProgressTopic<'a> {
    /// The connector kind and id, for log lines.
    pub connector: &'static str,
    pub id: &'a str,
    /// Bootstrap servers.
    pub address: &'a str,
    /// The egress `properties` (only the connection settings are used).
    pub properties: &'a Properties,
    /// The topic name.
    pub topic: &'a str,
}

impl ProgressTopic<'_> {
    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in self.properties {
            if CONNECTION_PREFIXES.iter().any(|p| k.starts_with(p)) {
                config.set(k.as_str(), v.as_str());
            }
        }
        config.set("bootstrap.servers", self.address);
        config
    }

    fn context(&self) -> HelperContext {
        HelperContext {
            log: LogContext::new(self.connector, self.id),
        }
    }

    /// A consumer that never joins a group: for metadata and watermarks only.
    fn probe(&self, isolation: &str) -> Result<BaseConsumer<HelperContext>, String> {
        self.config()
            .set("isolation.level", isolation)
            .set("allow.auto.create.topics", "false")
            .create_with_context(self.context())
            .map_err(|e| format!("cannot create a Kafka client: {e}"))
    }

    /// Creates the topic (1 partition, compacted) unless it exists; "already exists" from a
    /// concurrent creator (another worker) is success. Returns once partition 0 has a leader.
    ///
    /// The replication factor is 1 when the cluster has a single broker (the broker default
    /// could be higher and the creation would fail) and the broker default otherwise.
    pub(crate) fn ensure(&self) -> Result<(), String> {
        let probe = self.probe("read_committed")?;
        let md = probe
            .fetch_metadata(Some(self.topic), REQUEST_TIMEOUT)
            .map_err(|e| format!("cannot read cluster metadata: {e}"))?;
        let exists = md
            .topics()
            .iter()
            .any(|t| t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            let replication = if md.brokers().len() == 1 { 1 } else { -1 };
            let admin: AdminClient<HelperContext> = self
                .config()
                .create_with_context(self.context())
                .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
            let topic = NewTopic::new(self.topic, 1, TopicReplication::Fixed(replication))
                .set("cleanup.policy", "compact");
            let opts = AdminOptions::new()
                .request_timeout(Some(REQUEST_TIMEOUT))
                .operation_timeout(Some(REQUEST_TIMEOUT));
            let results = block_on(admin.create_topics([&topic], &opts), READY_TIMEOUT)
                .ok_or_else(|| {
                    format!("creating the topic did not finish within {READY_TIMEOUT:?}")
                })?
                .map_err(|e| format!("cannot create the topic: {e}"))?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => return Err(format!("cannot create the topic: {code}")),
                }
            }
            tracing::info!(
                "{} `{}`: created the progress topic `{}` (1 partition, compacted)",
                self.connector,
                self.id,
                self.topic
            );
        }
        // The partition must have a leader before it can be read or written.
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no metadata yet");
        while Instant::now() < deadline {
            match probe.fetch_metadata(Some(self.topic), REQUEST_TIMEOUT) {
                Ok(md) => {
                    let ready = md.topics().iter().any(|t| {
                        t.name() == self.topic
                            && t.error().is_none()
                            && t.partitions()
                                .iter()
                                .any(|p| p.id() == 0 && p.leader() >= 0)
                    });
                    if ready {
                        return Ok(());
                    }
                    last = "partition 0 has no leader yet".into();
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "the topic is not ready after {READY_TIMEOUT:?} ({last})"
        ))
    }

    /// The last committed checkpoint id under `key`, or `None` if there is none.
    ///
    /// Reads partition 0 from the beginning with a read_committed consumer (assigned, no
    /// group commits) up to the end of the log *as it was when reading started*. Because a
    /// read_committed consumer stops at the last stable offset (LSO), and another worker's
    /// transaction that is still open (for example of a worker that crashed and has not
    /// restarted yet) holds the LSO back, it first waits — at most `lso_wait` — until the LSO
    /// reaches that end: otherwise a committed progress record of ours behind the open
    /// transaction would be missed and `delivered` would be too old. The caller has already
    /// fenced its own earlier producer (`init_transactions`), so none of our own transactions
    /// is open.
    pub(crate) fn last_committed(
        &self,
        key: &str,
        group: &str,
        lso_wait: Duration,
    ) -> Result<Option<u64>, String> {
        let topic = self.topic;
        // The end of the log including records of open transactions.
        let uncommitted = self.probe("read_uncommitted")?;
        let (low, end) = retry(READY_TIMEOUT, || {
            uncommitted.fetch_watermarks(topic, 0, REQUEST_TIMEOUT)
        })
        .map_err(|e| format!("cannot read the end of the topic: {e}"))?;
        drop(uncommitted);
        if end <= low.max(0) {
            return Ok(None);
        }

        let reader: BaseConsumer<HelperContext> = self
            .config()
            .set("group.id", group)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false")
            .create_with_context(self.context())
            .map_err(|e| format!("cannot create a Kafka consumer: {e}"))?;

        // Wait for the last stable offset to pass `end`.
        let started = Instant::now();
        let mut logged = false;
        loop {
            let (_, stable) = retry(READY_TIMEOUT, || {
                reader.fetch_watermarks(topic, 0, REQUEST_TIMEOUT)
            })
            .map_err(|e| format!("cannot read the last stable offset: {e}"))?;
            if stable >= end {
                break;
            }
            if started.elapsed() > lso_wait {
                return Err(format!(
                    "a transaction of another producer has been open for more than {lso_wait:?} \
                     (last stable offset {stable}, end of log {end}); it ends when its producer \
                     restarts or the broker aborts it after `transaction.timeout.ms`. Open longer \
                     than that, it is a hanging transaction (a write the broker applied after its \
                     transaction had ended, e.g. around a broker restart; librdkafka has no \
                     KIP-890 defense against it): confirm it with `kafka-transactions.sh \
                     --bootstrap-server <brokers> find-hanging --broker-id <leader of {topic}-0>`, \
                     abort it with `kafka-transactions.sh --bootstrap-server <brokers> abort \
                     --topic {topic} --partition 0 --start-offset {stable}`, then start the job again"
                ));
            }
            if !logged && started.elapsed() > Duration::from_secs(2) {
                logged = true;
                tracing::info!(
                    "{} `{}`: waiting for an open transaction of another worker on the progress \
                     topic `{topic}` to end (last stable offset {stable}, end of log {end})",
                    self.connector,
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| format!("cannot assign partition 0: {e}"))?;
        reader
            .assign(&tpl)
            .map_err(|e| format!("cannot assign partition 0: {e}"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last: Option<u64> = None;
        loop {
            if Instant::now() >= deadline {
                return Err(format!(
                    "reading the topic up to offset {end} did not finish within {READY_TIMEOUT:?}"
                ));
            }
            match reader.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    if m.key() == Some(key.as_bytes()) {
                        last = match m.payload() {
                            // A tombstone deletes the key.
                            None => None,
                            Some(bytes) => Some(parse_checkpoint(bytes).ok_or_else(|| {
                                format!(
                                    "the record at offset {} for key `{key}` is not a \
                                     checkpoint id: `{}`",
                                    m.offset(),
                                    String::from_utf8_lossy(bytes)
                                )
                            })?),
                        };
                    }
                    if m.offset() + 1 >= end {
                        return Ok(last);
                    }
                }
                // The end of what is committed (at or past `end`, which the LSO had reached).
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(last),
                Some(Err(e)) => return Err(format!("cannot read the topic: {e}")),
            }
        }
    }
}

/// A progress record's value: the checkpoint id as decimal text.
pub(crate) fn parse_checkpoint(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Calls `f` until it succeeds or `limit` passed; retries only errors that go away when a
/// topic has just been created (unknown partition, no leader yet) or a request timed out.
fn retry<T>(
    limit: Duration,
    mut f: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => {
                let transient = matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition
                            | RDKafkaErrorCode::UnknownPartition
                            | RDKafkaErrorCode::UnknownTopic
                            | RDKafkaErrorCode::LeaderNotAvailable
                            | RDKafkaErrorCode::NotLeaderForPartition
                            | RDKafkaErrorCode::OperationTimedOut
                            | RDKafkaErrorCode::RequestTimedOut
                            | RDKafkaErrorCode::BrokerTransportFailure
                            | RDKafkaErrorCode::AllBrokersDown
                    )
                );
                if !transient || Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Wakes the thread that waits in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread, for at most `limit`; `None` when it did not finish.
///
/// rdkafka's admin futures are completed by the admin client's own polling thread, so no
/// async runtime is needed (and none is created: the sink may be opened from a thread that is
/// inside one, where blocking on a second runtime would panic).
fn block_on<F: Future>(future: F, limit: Duration) -> Option<F::Output> {
    let deadline = Instant::now() + limit;
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_values_are_decimal_text() {
        assert_eq!(parse_checkpoint(b"42"), Some(42));
        assert_eq!(parse_checkpoint(b" 7\n"), Some(7));
        assert_eq!(parse_checkpoint(b"-1"), None);
        assert_eq!(parse_checkpoint(b"x"), None);
        assert_eq!(parse_checkpoint(&[0xff]), None);
    }

    #[test]
    fn block_on_gives_up_after_its_limit() {
        assert_eq!(block_on(async { 3 }, Duration::from_millis(10)), Some(3));
        let never = std::future::pending::<()>();
        let started = Instant::now();
        assert_eq!(block_on(never, Duration::from_millis(50)), None);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn helper_clients_take_only_connection_settings() {
        let properties = Properties(vec![
            ("security.protocol".into(), "SASL_SSL".into()),
            ("sasl.mechanism".into(), "PLAIN".into()),
            ("linger.ms".into(), "5".into()),
            ("acks".into(), "all".into()),
        ]);
        let topic = ProgressTopic {
            connector: "kafka egress",
            id: "a/b",
            address: "127.0.0.1:9",
            properties: &properties,
            topic: "p",
        };
        let config = topic.config();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(config.get("linger.ms"), None);
        assert_eq!(config.get("acks"), None);
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9"));
    }
}
