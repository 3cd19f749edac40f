//! [`KafkaSink`]: an `io.statefun.kafka.v1/egress`, with `at-least-once`, `none` or
//! `exactly-once` delivery.
//!
//! **`at-least-once` and `none`** ([`KafkaSink::open`]). Records are produced as they are
//! written; librdkafka batches them and retries what the broker calls retriable (within
//! `message.timeout.ms`). With `at-least-once`, [`Sink::flush`] waits for every delivery
//! report and fails, naming the sink, topic and error, if any record was not acknowledged —
//! so the engine never marks a checkpoint delivered that was not. With `none`, nothing waits
//! and failures are only logged.
//!
//! **`exactly-once`** ([`KafkaSink::open_exactly_once`]). The engine hands the sink a
//! checkpoint's records only once the checkpoint is complete on all workers, then calls
//! [`Sink::commit`]. Each worker's sink writes them in one Kafka transaction together with a
//! *progress record* (key: the producer's `transactional.id`, value the checkpoint id) on a compacted
//! progress topic, and commits. So:
//!
//! * **The progress topic is the source of truth.** A checkpoint's output and its progress
//!   record become visible to read_committed readers atomically. On open the sink reads the
//!   last committed progress value for its key back ([`Sink::delivered`]), and the engine
//!   skips replaying checkpoints up to it; checkpoints after it are written again, and their
//!   earlier attempts were never committed, so read_committed readers see every record once.
//! * **Transactions are short: one per checkpoint per worker**, begun by the first write of
//!   a checkpoint and ended by its commit. A crash therefore never leaves a transaction
//!   that *should* be committed later (a "prepared" transaction, which Flink resumes after a
//!   restart but librdkafka cannot): whatever was open at a crash is aborted — by the
//!   restarted producer's `init_transactions`, which fences the old one by its stable
//!   `transactional.id`, or by the broker after `transaction.timeout.ms` — and the engine
//!   replays those records from the checkpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use statefun_module::{KafkaDeliverySemantic, KafkaEgress};
use statefun_sdk::{EgressMessage, TypeName};

use super::config::{client_config, effective_property, first_contact, LogContext, Owned};
use super::progress::ProgressTopic;
use crate::codec::KafkaProducerRecord;
use crate::{ConnectorError, Sink};

const CONNECTOR: &str = "kafka egress";

/// librdkafka's default `message.timeout.ms`: how long it keeps retrying one record.
const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_millis(300_000);

/// The `properties` key naming the progress topic of an exactly-once egress. The runtime
/// removes it before the other properties reach librdkafka (which does not know it).
pub const PROGRESS_TOPIC_PROPERTY: &str = "statefun.progress.topic";

/// The progress topic when [`PROGRESS_TOPIC_PROPERTY`] is not set.
pub const DEFAULT_PROGRESS_TOPIC: &str = "statefun-progress";

/// The `transactional.id` prefix when the `transactional.id` property is not set.
pub const DEFAULT_TRANSACTIONAL_ID_PREFIX: &str = "statefun";

/// How long `init_transactions` may take at open (it waits for the broker to abort a
/// transaction the previous producer with the same id left open).
const INIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates a producer and makes its first contact with the cluster at `address` (an
/// authentication or TLS failure ends the open here, naming the cause). `Err(Err(m))`:
/// librdkafka refused the configuration (`m` says why); `Err(Ok(e))`: no contact.
fn producer(
    config: rdkafka::config::ClientConfig,
    context: SinkContext,
    address: &str,
) -> Result<BaseProducer<SinkContext>, Result<ConnectorError, String>> {
    let producer: BaseProducer<SinkContext> = config
        .create_with_context(context)
        .map_err(|e| Err(format!("librdkafka refused the configuration: {e}")))?;
    first_contact(
        producer.client(),
        &|| {
            producer.poll(Duration::ZERO);
        },
        &producer.context().log,
        address,
    )
    .map_err(Ok)?;
    Ok(producer)
}

/// The longest poll while waiting for acknowledgements (see `KafkaSink::drain`).
const DRAIN_POLL_MAX: Duration = Duration::from_millis(20);

/// One call of `abort_transaction` before delivery reports are served again.
const ABORT_SLICE: Duration = Duration::from_millis(200);

/// How long dropping a sink waits for its open transaction to be aborted.
const DROP_ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What is added to `transaction.timeout.ms` to bound a commit or abort (after that the
/// broker has aborted the transaction anyway) and the wait for other workers' open
/// transactions when reading the progress topic.
const TRANSACTION_SLACK: Duration = Duration::from_secs(30);

/// The hint of errors after a fatal producer error.
const FATAL_HINT: &str = "a producer that fails fatally cannot go on; if it was fenced, another \
     producer with the same transactional.id took over (a newer run of this job, or another \
     job with the same egress id and `transactional.id` prefix, which must differ); restart \
     from the last checkpoint";

/// The `transactional.id` of the exactly-once producer of `worker` for egress `egress`:
/// `<prefix>-<egress id with / replaced by .>-<worker>`.
///
/// It depends only on the configuration and the worker, never on the run, so a restarted
/// job's producer has the same id as the one it replaces: its `init_transactions` fences the
/// old producer (a zombie of a crashed run can no longer commit) and aborts whatever
/// transaction the old one left open. Two jobs writing to the same cluster with the same
/// egress id need different prefixes (the `transactional.id` property), or they fence each
/// other.
pub fn transactional_id(prefix: &str, egress: &TypeName, worker: usize) -> String {
    format!("{prefix}-{}-{worker}", egress.as_str().replace('/', "."))
}

/// The key of the progress records of `worker` for egress `egress`: its
/// [`transactional_id`].
///
/// The same for the same sink and worker across restarts, so the last committed value under
/// it is what the sink delivered last. Being the transactional id, it is unique wherever the
/// producers must be: jobs that share a cluster, a progress topic and an egress id are kept
/// apart by their `transactional.id` prefix alone.
pub fn progress_key(prefix: &str, egress: &TypeName, worker: usize) -> String {
    transactional_id(prefix, egress, worker)
}

/// What the delivery callbacks report back to the sink.
#[derive(Default)]
struct Deliveries {
    acked: u64,
    /// Records that were not acknowledged: (topic, error), the first few kept for the message.
    failed: Vec<(String, String)>,
    failed_count: u64,
}

/// The producer's context: counts acknowledgements and keeps failures for `flush`.
pub struct SinkContext {
    log: LogContext,
    deliveries: Arc<Mutex<Deliveries>>,
    /// `none`: failures are logged here, because nobody waits for them.
    log_failures: bool,
    /// `exactly-once`: the progress topic, whose records are not counted as acknowledged.
    progress_topic: Option<String>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.client_error(error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Ok(mut d) = self.deliveries.lock() else {
            return;
        };
        match result {
            Ok(m) => {
                if self.progress_topic.as_deref() != Some(m.topic()) {
                    d.acked += 1;
                }
            }
            Err((e, msg)) => {
                d.failed_count += 1;
                if self.log_failures {
                    tracing::warn!(
                        "{CONNECTOR} `{}`: record to topic `{}` was not delivered: {e}",
                        self.log.id,
                        msg.topic()
                    );
                }
                if d.failed.len() < 5 {
                    d.failed.push((msg.topic().to_string(), e.to_string()));
                }
            }
        }
    }
}

/// The transaction state of an exactly-once sink.
struct Transactional {
    transactional_id: String,
    progress_topic: String,
    progress_key: String,
    /// Bounds a commit (including flushing the transaction's records) and an abort.
    timeout: Duration,
    /// A transaction is open: begun by the first write (or commit) after open or a commit.
    open: bool,
    /// The last checkpoint whose transaction committed (read back at open, then ours).
    delivered: Option<u64>,
    /// Set after a fatal error (for example: fenced by a newer producer with the same
    /// `transactional.id`); the producer cannot be used again and every call fails with it.
    fatal: Option<String>,
    /// A write into the open transaction failed (a record could not be converted or
    /// produced, or was not acknowledged): the transaction holds part of a checkpoint, so
    /// the next commit aborts it instead of committing, whatever the caller does next.
    poisoned: Option<String>,
    /// Transactions committed and aborted since [`Sink::take_stats`] (for metrics).
    stats: crate::sink::SinkStats,
}

/// How a failed transactional call may go on (librdkafka's classification).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The producer is unusable.
    Fatal,
    /// The transaction must be aborted; the producer can go on after that.
    Abortable,
    /// The same call may be made again.
    Retriable,
    /// Anything else (a local timeout, a bad argument): the transaction stays as it was.
    Other,
}

fn classify(e: &KafkaError) -> Failure {
    match e {
        KafkaError::Transaction(r) if r.is_fatal() => Failure::Fatal,
        KafkaError::Transaction(r) if r.txn_requires_abort() => Failure::Abortable,
        KafkaError::Transaction(r) if r.is_retriable() => Failure::Retriable,
        _ if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) => Failure::Fatal,
        _ => Failure::Other,
    }
}

/// The Kafka egress sink of one worker.
///
/// Opened with [`KafkaSink::open`] for `at-least-once` and `none`, and with
/// [`KafkaSink::open_exactly_once`] for `exactly-once` (see the [module](self) for how the
/// transactions and the progress topic work).
pub struct KafkaSink {
    id: String,
    address: String,
    producer: BaseProducer<SinkContext>,
    deliveries: Arc<Mutex<Deliveries>>,
    /// `at-least-once` and `exactly-once`: delivery failures are errors.
    wait: bool,
    flush_timeout: Duration,
    /// `exactly-once` only.
    txn: Option<Transactional>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("wait", &self.wait)
            .field(
                "transactional_id",
                &self.txn.as_ref().map(|t| t.transactional_id.as_str()),
            )
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Opens the producer of egress `id` with `at-least-once` or `none` delivery.
    ///
    /// Properties pass through to librdkafka unchanged, except `bootstrap.servers` (from
    /// `address`) and `transactional.id` (only the exactly-once path uses it; removed here),
    /// each named in a warning if set. `exactly-once` is a [`ConnectorError::Config`]: it
    /// needs the checkpointed path, [`KafkaSink::open_exactly_once`], which knows the worker
    /// and whether the job resumes.
    pub fn open(id: &TypeName, spec: &KafkaEgress) -> Result<Self, ConnectorError> {
        let id_text = id.to_string();
        let config_error = |message: String| ConnectorError::config(CONNECTOR, &id_text, message);
        let wait = match spec.delivery_semantic {
            KafkaDeliverySemantic::ExactlyOnce { .. } => {
                return Err(config_error(
                    "`deliverySemantic: exactly-once` needs the checkpointed path \
                     (`KafkaSink::open_exactly_once`, which the engine uses when checkpoints \
                     are enabled): records go out in one transaction per checkpoint; use \
                     `type: at-least-once` to write without checkpoints"
                        .into(),
                ))
            }
            KafkaDeliverySemantic::AtLeastOnce => true,
            KafkaDeliverySemantic::None => false,
        };
        let mut properties = spec.properties.clone();
        if properties.get("transactional.id").is_some() {
            tracing::warn!(
                "{CONNECTOR} `{id_text}`: property `transactional.id` is ignored: only \
                 `exactly-once` uses transactions (it takes the property as the prefix of its \
                 transactional ids)"
            );
            properties.0.retain(|(k, _)| k != "transactional.id");
        }
        let config = client_config(
            CONNECTOR,
            &id_text,
            &[],
            &properties,
            &[Owned {
                key: "bootstrap.servers",
                value: spec.address.clone(),
                why: "from `address`",
            }],
        );
        let flush_timeout = properties
            .get("message.timeout.ms")
            .or_else(|| properties.get("delivery.timeout.ms"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_MESSAGE_TIMEOUT)
            + Duration::from_secs(30);
        let deliveries = Arc::new(Mutex::new(Deliveries::default()));
        let context = SinkContext {
            log: LogContext::new(CONNECTOR, &id_text),
            deliveries: deliveries.clone(),
            log_failures: !wait,
            progress_topic: None,
        };
        let producer = producer(config, context, &spec.address)
            .map_err(|e| e.unwrap_or_else(&config_error))?;
        Ok(KafkaSink {
            id: id_text,
            address: spec.address.clone(),
            producer,
            deliveries,
            wait,
            flush_timeout,
            txn: None,
        })
    }

    /// Opens the transactional producer of egress `id` on worker `worker`, for
    /// `deliverySemantic: exactly-once` (any other semantic is a [`ConnectorError::Config`]).
    ///
    /// * `transactional.id` is [`transactional_id`]`(prefix, id, worker)`, the prefix being
    ///   the `transactional.id` property if set, else [`DEFAULT_TRANSACTIONAL_ID_PREFIX`].
    ///   `init_transactions` runs here: it fences any earlier producer with that id (a
    ///   crashed run's) and aborts the transaction it left open.
    /// * `transaction.timeout.ms` comes from `transactionTimeout`, `enable.idempotence` is
    ///   `true` and `bootstrap.servers` comes from `address`; a property setting one of them
    ///   differently is named in a warning. Other properties pass through to librdkafka.
    /// * The progress topic is the property [`PROGRESS_TOPIC_PROPERTY`] (removed from the
    ///   properties) or [`DEFAULT_PROGRESS_TOPIC`]. It is created if missing (1 partition,
    ///   `cleanup.policy=compact`, replication 1 on a one-broker cluster, else the broker
    ///   default); "already exists" from a concurrent creator is fine. The admin client and
    ///   the progress readers take only the connection settings from `properties`
    ///   (`security.protocol`, `sasl.*`, `ssl.*`, `client.id`, `socket.*`, …).
    /// * Then, whether `resume` or not, the progress topic is read back with a
    ///   read_committed consumer, and the last value under [`progress_key`]`(prefix, id, worker)`
    ///   becomes [`Sink::delivered`] (`None` if there is none). That includes waiting,
    ///   at most `transactionTimeout` + 30 s, for transactions of other workers that are still
    ///   open on the topic (a crashed worker's, until it restarts or the broker aborts it).
    ///   `resume` only changes what is logged: a fresh run replays nothing, so the value
    ///   does not matter to it.
    ///
    /// Errors name the egress, the broker address, the topic and the broker's error.
    pub fn open_exactly_once(
        id: &TypeName,
        spec: &KafkaEgress,
        worker: usize,
        resume: bool,
    ) -> Result<Self, ConnectorError> {
        let id_text = id.to_string();
        let config_error = |message: String| ConnectorError::config(CONNECTOR, &id_text, message);
        let KafkaDeliverySemantic::ExactlyOnce {
            transaction_timeout,
        } = spec.delivery_semantic
        else {
            return Err(config_error(
                "opened as exactly-once, but `deliverySemantic` is not `exactly-once`".into(),
            ));
        };
        let timeout_ms = transaction_timeout.as_millis();
        if timeout_ms == 0 || timeout_ms > i32::MAX as u128 {
            return Err(config_error(format!(
                "the transaction timeout {transaction_timeout:?} is out of range \
                 (1 ms to {} ms); fix `deliverySemantic.transactionTimeout`",
                i32::MAX
            )));
        }

        let mut properties = spec.properties.clone();
        let mut take = |key: &str| {
            let value = properties.get(key).map(|v| v.trim().to_string());
            properties.0.retain(|(k, _)| k != key);
            value.filter(|v| !v.is_empty())
        };
        let progress_topic =
            take(PROGRESS_TOPIC_PROPERTY).unwrap_or_else(|| DEFAULT_PROGRESS_TOPIC.to_string());
        let prefix =
            take("transactional.id").unwrap_or_else(|| DEFAULT_TRANSACTIONAL_ID_PREFIX.to_string());
        let txn_id = transactional_id(&prefix, id, worker);
        let key = progress_key(&prefix, id, worker);

        let config = client_config(
            CONNECTOR,
            &id_text,
            &[],
            &properties,
            &[
                Owned {
                    key: "bootstrap.servers",
                    value: spec.address.clone(),
                    why: "from `address`",
                },
                Owned {
                    key: "transactional.id",
                    value: txn_id.clone(),
                    why: "`<transactional.id prefix>-<egress>-<worker>`, stable across restarts",
                },
                Owned {
                    key: "enable.idempotence",
                    value: "true".into(),
                    why: "transactions need the idempotent producer",
                },
                Owned {
                    key: "transaction.timeout.ms",
                    value: timeout_ms.to_string(),
                    why: "from `transactionTimeout`",
                },
            ],
        );
        let timeout = transaction_timeout + TRANSACTION_SLACK;
        let deliveries = Arc::new(Mutex::new(Deliveries::default()));
        let context = SinkContext {
            log: LogContext::new(CONNECTOR, &id_text),
            deliveries: deliveries.clone(),
            log_failures: false,
            progress_topic: Some(progress_topic.clone()),
        };
        let producer = producer(config, context, &spec.address)
            .map_err(|e| e.unwrap_or_else(&config_error))?;

        let progress_error = |e: String| {
            ConnectorError::io(
                CONNECTOR,
                &id_text,
                &spec.address,
                format!(
                    "check that the brokers are reachable and that this client may create, read \
                     and write the topic (property `{PROGRESS_TOPIC_PROPERTY}` names another)"
                ),
                std::io::Error::other(format!("progress topic `{progress_topic}`: {e}")),
            )
        };
        let progress = ProgressTopic {
            connector: CONNECTOR,
            id: &id_text,
            address: &spec.address,
            properties: &properties,
            topic: &progress_topic,
        };
        progress.ensure().map_err(progress_error)?;

        producer.init_transactions(INIT_TIMEOUT).map_err(|e| {
            let detail = match producer.client().fatal_error() {
                Some((code, reason)) => format!("{e} ({code}: {reason})"),
                None => e.to_string(),
            };
            ConnectorError::io(
                CONNECTOR,
                &id_text,
                &spec.address,
                "check that the brokers are reachable, support transactions (a cluster \
                 needs at least `transaction.state.log.min.isr` brokers) and allow this \
                 client to use the transactional id",
                std::io::Error::other(format!(
                    "cannot initialise transactions for transactional.id `{txn_id}`: {detail}"
                )),
            )
        })?;

        let delivered = progress
            .last_committed(&key, &format!("{txn_id}.progress"), timeout)
            .map_err(progress_error)?;
        match (resume, delivered) {
            (true, Some(d)) => tracing::info!(
                "{CONNECTOR} `{id_text}`: worker {worker} (transactional.id `{txn_id}`) \
                 delivered checkpoints through {d}; replayed records up to it are skipped"
            ),
            (true, None) => tracing::info!(
                "{CONNECTOR} `{id_text}`: worker {worker} (transactional.id `{txn_id}`) \
                 has no committed checkpoint in `{progress_topic}`; every replayed record is \
                 written"
            ),
            (false, Some(d)) => tracing::info!(
                "{CONNECTOR} `{id_text}`: worker {worker}: an earlier run delivered through \
                 checkpoint {d} (`{progress_topic}`); this run starts fresh"
            ),
            (false, None) => tracing::debug!(
                "{CONNECTOR} `{id_text}`: worker {worker} opened with transactional.id \
                 `{txn_id}`"
            ),
        }
        Ok(KafkaSink {
            id: id_text,
            address: spec.address.clone(),
            producer,
            deliveries,
            wait: true,
            flush_timeout: timeout,
            txn: Some(Transactional {
                transactional_id: txn_id,
                progress_topic,
                progress_key: key,
                timeout,
                open: false,
                delivered,
                fatal: None,
                poisoned: None,
                stats: crate::sink::SinkStats::default(),
            }),
        })
    }

    /// The value librdkafka uses for a configuration `key` in this sink's producer: shows
    /// that `properties` passed through (see [`effective_property`]).
    pub fn effective_property(&self, key: &str) -> Option<String> {
        effective_property(self.producer.client(), key)
    }

    /// Records acknowledged by the brokers so far (progress records not counted). With
    /// `exactly-once`, acknowledged records become visible to read_committed readers only
    /// when their transaction commits.
    pub fn acknowledged(&self) -> u64 {
        self.deliveries.lock().map(|d| d.acked).unwrap_or(0)
    }

    /// Failed deliveries since the last check: (count, description).
    fn take_failed(&self) -> Option<(u64, String)> {
        let Ok(mut d) = self.deliveries.lock() else {
            return None;
        };
        if d.failed_count == 0 {
            return None;
        }
        let count = std::mem::take(&mut d.failed_count);
        let failed = std::mem::take(&mut d.failed);
        let detail: Vec<String> = failed
            .iter()
            .map(|(topic, e)| format!("topic `{topic}`: {e}"))
            .collect();
        Some((count, detail.join("; ")))
    }

    /// With `at-least-once`, an error for the records that failed since the last check.
    fn take_failures(&self) -> Result<(), ConnectorError> {
        if !self.wait {
            return Ok(());
        }
        let Some((count, detail)) = self.take_failed() else {
            return Ok(());
        };
        Err(ConnectorError::io(
            CONNECTOR,
            &self.id,
            &self.address,
            "check that the topics exist (the broker may not create topics \
             automatically) and that this client may write to them",
            std::io::Error::other(format!("{count} record(s) not acknowledged ({detail})")),
        ))
    }

    fn record_error(&self, message: &EgressMessage, reason: String) -> ConnectorError {
        ConnectorError::config(
            CONNECTOR,
            &self.id,
            format!(
                "cannot write a record of type `{}`: {reason}; a Kafka egress takes \
                 `{}` values (build them with KafkaEgressMessage)",
                message.value.typename,
                crate::codec::KAFKA_PRODUCER_RECORD_TYPENAME
            ),
        )
    }

    /// `e`, with the producer's fatal error if it has one (librdkafka reports only
    /// "Fatal error" where the reason, such as being fenced, matters).
    fn describe(&self, e: &KafkaError) -> String {
        match self.producer.client().fatal_error() {
            Some((code, reason)) => format!("{e} (fatal: {code}: {reason})"),
            None => e.to_string(),
        }
    }

    /// Hands one record to librdkafka; a full local queue is waited out by serving
    /// delivery reports, for at most `flush_timeout`.
    fn produce<K, P>(&self, mut base: BaseRecord<'_, K, P>) -> Result<(), KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let started = Instant::now();
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < self.flush_timeout =>
                {
                    // The local queue is full: serve delivery reports, which frees room.
                    base = back;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    fn send(&self, message: &EgressMessage) -> Result<(), ConnectorError> {
        let record = KafkaProducerRecord::from_typed_value(&message.value)
            .map_err(|e| self.record_error(message, e.to_string()))?;
        if record.topic.is_empty() {
            return Err(self.record_error(message, "the record has no topic".into()));
        }
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for h in &record.headers {
            headers = headers.insert(Header {
                key: h.key.as_str(),
                value: Some(h.value.as_slice()),
            });
        }
        let mut base = BaseRecord::to(&record.topic).payload(&record.value_bytes);
        if !record.key.is_empty() {
            base = base.key(&record.key);
        }
        if !record.headers.is_empty() {
            base = base.headers(headers);
        }
        if let Some(p) = record.partition {
            base = base.partition(p);
        }
        self.produce(base).map_err(|e| {
            ConnectorError::io(
                CONNECTOR,
                &self.id,
                &self.address,
                "check the topic, partition and producer properties",
                std::io::Error::other(format!(
                    "producing to topic `{}` failed: {}",
                    record.topic,
                    self.describe(&e)
                )),
            )
        })
    }

    // -----------------------------------------------------------------------------------
    // exactly-once

    /// An error of the exactly-once path: names the egress, the broker address, the
    /// `transactional.id` and (in `what`) the topic involved.
    fn txn_error(&self, what: String, hint: &str) -> ConnectorError {
        let txn_id = self
            .txn
            .as_ref()
            .map(|t| t.transactional_id.as_str())
            .unwrap_or_default();
        ConnectorError::io(
            CONNECTOR,
            &self.id,
            &self.address,
            hint,
            std::io::Error::other(format!("transactional.id `{txn_id}`: {what}")),
        )
    }

    /// Fails if an earlier fatal error made the producer unusable (also if librdkafka
    /// raised one in the background, for example because a newer producer fenced this one).
    fn check_usable(&mut self) -> Result<(), ConnectorError> {
        if let Some(t) = self.txn.as_mut() {
            if t.fatal.is_none() {
                if let Some((code, reason)) = self.producer.client().fatal_error() {
                    t.fatal = Some(format!("{code}: {reason}"));
                }
            }
        }
        match self.txn.as_ref().and_then(|t| t.fatal.clone()) {
            Some(fatal) => Err(self.txn_error(
                format!("the producer failed fatally and cannot be used again: {fatal}"),
                FATAL_HINT,
            )),
            None => Ok(()),
        }
    }

    /// Aborts the open transaction, serving delivery reports while librdkafka purges and
    /// flushes its records (it waits for their reports, which only polling delivers to this
    /// event-based producer): `abort_transaction` is called in short slices, resuming after
    /// each retriable timeout as librdkafka documents, until `timeout` has passed.
    fn abort(&self, timeout: Duration) -> Result<(), KafkaError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.producer.poll(Duration::ZERO);
            let left = deadline.saturating_duration_since(Instant::now());
            match self.producer.abort_transaction(left.min(ABORT_SLICE)) {
                Ok(()) => return Ok(()),
                Err(e) if classify(&e) == Failure::Retriable && left > ABORT_SLICE => {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves delivery reports until nothing is in flight or `deadline` passes; whether
    /// nothing is in flight.
    ///
    /// Not `BaseProducer::flush`: rdkafka 0.39 polls there in slices of up to 100 ms and
    /// its `poll` serves events until the slice ends, so every flush with a record in
    /// flight takes at least 100 ms — on the worker thread, once per flush or commit.
    /// Polls of 1 ms return within a millisecond of the last acknowledgement; when the
    /// acknowledgements are slow (a broker under load, or away) the polls grow to 20 ms, so
    /// that waiting workers do not spin — on a small machine that would starve the very
    /// broker they wait for. "Nothing in flight" is librdkafka's own test (`rd_kafka_flush`
    /// with a zero timeout, which for this event-based producer counts undelivered
    /// messages only).
    fn drain(&self, deadline: Instant) -> bool {
        let mut wait = Duration::from_millis(1);
        loop {
            if self.producer.flush(Duration::ZERO).is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.producer.poll(wait);
            wait = (wait * 2).min(DRAIN_POLL_MAX);
        }
    }

    /// Begins a transaction unless one is open.
    fn begin(&mut self) -> Result<(), ConnectorError> {
        if self.txn.as_ref().is_none_or(|t| t.open) {
            return Ok(());
        }
        if let Err(e) = self.producer.begin_transaction() {
            return Err(self.failed(None, "cannot begin a transaction: ".into(), e));
        }
        if let Some(t) = self.txn.as_mut() {
            t.open = true;
        }
        Ok(())
    }

    /// The error for a failed transactional call, after doing what librdkafka asks for:
    /// a fatal error marks the producer unusable; an abortable one aborts the transaction
    /// (its records are discarded; the engine's replay writes them again after a restart).
    fn failed(&mut self, checkpoint: Option<u64>, what: String, e: KafkaError) -> ConnectorError {
        let detail = self.describe(&e);
        let lost = match checkpoint {
            Some(c) => format!("checkpoint {c} was not committed; "),
            None => String::new(),
        };
        let deliveries = match self.take_failed() {
            Some((count, d)) => format!("; {count} record(s) not acknowledged ({d})"),
            None => String::new(),
        };
        match classify(&e) {
            Failure::Fatal => {
                if let Some(t) = self.txn.as_mut() {
                    t.fatal = Some(detail.clone());
                }
                self.txn_error(format!("{lost}{what}{detail}{deliveries}"), FATAL_HINT)
            }
            Failure::Abortable => {
                let timeout = self.txn.as_ref().map_or(DROP_ABORT_TIMEOUT, |t| t.timeout);
                let aborted = match self.abort(timeout) {
                    Ok(()) => {
                        if let Some(t) = self.txn.as_mut() {
                            t.open = false;
                            t.poisoned = None;
                            t.stats.transactions_aborted += 1;
                        }
                        "the transaction was aborted".to_string()
                    }
                    Err(abort) => format!("aborting the transaction failed too: {abort}"),
                };
                self.txn_error(
                    format!("{lost}{what}{detail}{deliveries}; {aborted}"),
                    "check that the topics exist and that this client may write to them \
                     transactionally; restart from the last checkpoint",
                )
            }
            Failure::Retriable | Failure::Other => self.txn_error(
                format!("{lost}{what}{detail}{deliveries}"),
                "check that the brokers are reachable; the transaction stays open and is \
                 aborted when the sink is dropped",
            ),
        }
    }

    fn write_transactional(&mut self, records: &[EgressMessage]) -> Result<(), ConnectorError> {
        self.check_usable()?;
        if records.is_empty() {
            return Ok(());
        }
        self.begin()?;
        let result = records
            .iter()
            .try_for_each(|m| self.send(m))
            .and_then(|()| {
                // Serve delivery reports so that failures surface early and memory stays
                // bounded.
                self.producer.poll(Duration::ZERO);
                self.take_failures()
            });
        if let Err(e) = &result {
            // A fatal producer error (fenced) makes every later call fail fast.
            let _ = self.check_usable();
            if let Some(t) = self.txn.as_mut() {
                t.poisoned.get_or_insert_with(|| e.to_string());
            }
        }
        result
    }

    /// Aborts the open transaction because a write into it failed.
    fn abort_poisoned(&mut self, checkpoint: u64, reason: String) -> ConnectorError {
        let timeout = self.txn.as_ref().map_or(DROP_ABORT_TIMEOUT, |t| t.timeout);
        let aborted = match self.abort(timeout) {
            Ok(()) => {
                if let Some(t) = self.txn.as_mut() {
                    t.open = false;
                    t.poisoned = None;
                    t.stats.transactions_aborted += 1;
                }
                "the transaction was aborted".to_string()
            }
            Err(e) => format!("aborting the transaction failed too: {}", self.describe(&e)),
        };
        let _ = self.take_failed();
        self.txn_error(
            format!(
                "checkpoint {checkpoint} was not committed because a write into its \
                 transaction failed ({reason}); {aborted}"
            ),
            "fix the cause of the failed write; a restart from the last checkpoint writes \
             the checkpoint again",
        )
    }

    fn commit_transactional(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        self.check_usable()?;
        if let Some(reason) = self.txn.as_ref().and_then(|t| t.poisoned.clone()) {
            return Err(self.abort_poisoned(checkpoint, reason));
        }
        self.begin()?;
        let Some((topic, key, timeout)) = self
            .txn
            .as_ref()
            .map(|t| (t.progress_topic.clone(), t.progress_key.clone(), t.timeout))
        else {
            return Ok(());
        };
        let value = checkpoint.to_string();
        let progress = BaseRecord::to(&topic)
            .partition(0)
            .key(key.as_str())
            .payload(value.as_str());
        if let Err(e) = self.produce(progress) {
            return Err(self.failed(
                Some(checkpoint),
                format!("producing the progress record to topic `{topic}` failed: "),
                e,
            ));
        }
        let deadline = Instant::now() + timeout;
        // Delivery reports first, in short polls: `commit_transaction` flushes, and
        // rdkafka's flush polls in 100 ms slices, which would stall every commit that
        // has records in flight for at least that long. With nothing in flight the
        // flush inside returns at once (a timeout here is the commit's error to report).
        self.drain(deadline);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.producer.commit_transaction(left) {
                Ok(()) => break,
                Err(e) if classify(&e) == Failure::Retriable && Instant::now() < deadline => {
                    tracing::debug!(
                        "{CONNECTOR} `{}`: committing checkpoint {checkpoint} is retried: {e}",
                        self.id
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(self.failed(
                        Some(checkpoint),
                        format!("committing the transaction (progress topic `{topic}`) failed: "),
                        e,
                    ))
                }
            }
        }
        if let Some(t) = self.txn.as_mut() {
            t.open = false;
            t.delivered = Some(checkpoint);
            t.stats.transactions_committed += 1;
        }
        // A transaction with a failed record cannot commit, so nothing is left to report;
        // start the next transaction with clean counters anyway.
        let _ = self.take_failed();
        Ok(())
    }
}

impl Sink for KafkaSink {
    /// Produces `records`. With `exactly-once` the first write after open or a commit
    /// begins a transaction; the records are visible to read_committed readers only when
    /// [`Sink::commit`] commits it.
    fn write(&mut self, records: &[EgressMessage]) -> Result<(), ConnectorError> {
        if self.txn.is_some() {
            return self.write_transactional(records);
        }
        for m in records {
            self.send(m)?;
        }
        // Serve delivery reports so that failures surface early and memory stays bounded.
        self.producer.poll(Duration::ZERO);
        self.take_failures()
    }

    /// `at-least-once`: waits for every delivery report. `none`: returns at once.
    /// `exactly-once`: returns at once, because the engine calls [`Sink::commit`], which
    /// flushes the transaction as part of committing it; flushing alone would not make the
    /// records visible.
    fn flush(&mut self) -> Result<(), ConnectorError> {
        if !self.wait || self.txn.is_some() {
            self.producer.poll(Duration::ZERO);
            return Ok(());
        }
        if !self.drain(Instant::now() + self.flush_timeout) {
            return Err(ConnectorError::io(
                CONNECTOR,
                &self.id,
                &self.address,
                "check that the brokers are reachable",
                std::io::Error::other(format!(
                    "{} record(s) still unacknowledged after {:?}",
                    self.producer.in_flight_count(),
                    self.flush_timeout
                )),
            ));
        }
        self.take_failures()
    }

    /// `exactly-once`: writes the progress record (`checkpoint` under this worker's key) into
    /// the open transaction (beginning one if this worker wrote nothing for the checkpoint)
    /// and commits it. Only when the commit succeeded is `checkpoint` [`Sink::delivered`].
    /// A failed commit is an error: an abortable failure aborts the transaction first, a
    /// fatal one (fenced) makes every later call fail. If a write into the transaction
    /// failed, the transaction holds only part of the checkpoint: it is aborted, not
    /// committed, and this is an error too. Other semantics: [`Sink::flush`].
    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        if self.txn.is_some() {
            return self.commit_transactional(checkpoint);
        }
        self.flush()
    }

    /// `exactly-once`: the last checkpoint committed, as read back from the progress topic
    /// at open and updated by every successful [`Sink::commit`]. `None` otherwise.
    fn delivered(&self) -> Option<u64> {
        self.txn.as_ref().and_then(|t| t.delivered)
    }

    /// `exactly-once`: the transactions committed, and aborted after a failed write or
    /// commit, since the last call (an open transaction aborted when the sink is dropped is
    /// not counted: nobody asks any more). Zeros otherwise.
    fn take_stats(&mut self) -> crate::sink::SinkStats {
        self.txn
            .as_mut()
            .map(|t| std::mem::take(&mut t.stats))
            .unwrap_or_default()
    }
}

impl Drop for KafkaSink {
    /// Aborts an open transaction, best effort: its records would be discarded anyway
    /// (by the next producer with the same `transactional.id`, or by the broker after
    /// `transaction.timeout.ms`), but aborting now lets read_committed readers (and the
    /// last stable offset) move on at once.
    fn drop(&mut self) {
        let Some(t) = self.txn.as_ref() else {
            return;
        };
        if !t.open || t.fatal.is_some() || self.producer.client().fatal_error().is_some() {
            return;
        }
        match self.abort(DROP_ABORT_TIMEOUT) {
            Ok(()) => tracing::info!(
                "{CONNECTOR} `{}`: aborted the open transaction of `{}`; its records are \
                 discarded (a restart replays them)",
                self.id,
                t.transactional_id
            ),
            Err(e) => tracing::warn!(
                "{CONNECTOR} `{}`: could not abort the open transaction of `{}`: {e}; the \
                 next producer with this id or the broker (after transaction.timeout.ms) \
                 aborts it",
                self.id,
                t.transactional_id
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statefun_module::Properties;
    use statefun_sdk::TypedValue;

    fn spec(address: &str, semantic: KafkaDeliverySemantic) -> KafkaEgress {
        KafkaEgress {
            address: address.to_string(),
            delivery_semantic: semantic,
            properties: Properties::default(),
            cluster: None,
            properties_file: None,
        }
    }

    fn id() -> TypeName {
        TypeName::parse("test/out").expect("typename")
    }

    #[test]
    fn exactly_once_needs_the_checkpointed_path() {
        let semantic = KafkaDeliverySemantic::ExactlyOnce {
            transaction_timeout: Duration::from_secs(60),
        };
        let err = KafkaSink::open(&id(), &spec("127.0.0.1:9", semantic)).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("test/out"), "{text}");
        assert!(
            text.contains("checkpointed path") && text.contains("open_exactly_once"),
            "{text}"
        );
        // And the other way round.
        let err = KafkaSink::open_exactly_once(
            &id(),
            &spec("127.0.0.1:9", KafkaDeliverySemantic::AtLeastOnce),
            0,
            false,
        )
        .expect_err("not exactly-once");
        assert!(err.to_string().contains("test/out"), "{err}");
    }

    #[test]
    fn exactly_once_counts_committed_and_aborted_transactions() {
        let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
            return;
        };
        let topic = statefun_testkit::unique_name("txn-stats");
        let progress = statefun_testkit::unique_name("txn-stats-progress");
        statefun_testkit::kafka::create_topics(&bootstrap, &[(&topic, 1), (&progress, 1)]);
        let mut s = spec(
            &bootstrap,
            KafkaDeliverySemantic::ExactlyOnce {
                transaction_timeout: Duration::from_secs(60),
            },
        );
        s.properties = Properties(vec![
            ("statefun.progress.topic".into(), progress),
            (
                "transactional.id".into(),
                statefun_testkit::unique_name("txn-stats"),
            ),
        ]);
        let mut sink = KafkaSink::open_exactly_once(&id(), &s, 0, false).expect("open");
        let record = |value: &str| {
            statefun_sdk::KafkaEgressMessage::for_egress(id())
                .with_topic(&topic)
                .with_key("k")
                .with_utf8_value(value)
                .build()
                .expect("record")
        };
        sink.write(&[record("a")]).expect("write");
        sink.commit(1).expect("commit 1");
        let stats = |committed, aborted| crate::sink::SinkStats {
            transactions_committed: committed,
            transactions_aborted: aborted,
            ..Default::default()
        };
        assert_eq!(sink.take_stats(), stats(1, 0));
        // A write that fails poisons the transaction: the commit aborts it.
        let not_a_record = EgressMessage {
            egress: id(),
            value: TypedValue::new("io.statefun.types/string", vec![10, 1, b'x']),
        };
        sink.write(&[record("b")]).expect("write");
        sink.write(&[not_a_record])
            .expect_err("not a producer record");
        sink.commit(2).expect_err("aborted");
        sink.write(&[record("c")]).expect("write");
        sink.commit(3).expect("commit 3");
        assert_eq!(sink.take_stats(), stats(1, 1));
        assert_eq!(sink.take_stats(), stats(0, 0), "counts since the last call");
    }

    #[test]
    fn transactional_ids_and_progress_keys_are_stable() {
        let egress = TypeName::parse("com.example/orders-out").expect("typename");
        assert_eq!(
            transactional_id("statefun", &egress, 3),
            "statefun-com.example.orders-out-3"
        );
        assert_eq!(
            progress_key("statefun", &egress, 3),
            "statefun-com.example.orders-out-3"
        );
    }

    #[test]
    fn exactly_once_open_fails_naming_egress_and_address_without_a_broker() {
        let mut s = spec(
            "127.0.0.1:9",
            KafkaDeliverySemantic::ExactlyOnce {
                transaction_timeout: Duration::from_secs(60),
            },
        );
        s.properties = Properties(vec![
            ("statefun.progress.topic".into(), "my-progress".into()),
            ("socket.connection.setup.timeout.ms".into(), "1000".into()),
        ]);
        let started = std::time::Instant::now();
        let text = KafkaSink::open_exactly_once(&id(), &s, 0, true)
            .expect_err("no broker")
            .to_string();
        assert!(text.contains("test/out"), "{text}");
        assert!(text.contains("127.0.0.1:9"), "{text}");
        assert!(text.contains("no broker answered"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn values_that_are_not_producer_records_name_egress_and_type() {
        // librdkafka's in-process mock cluster: no broker semantics are needed here.
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        let mut sink = KafkaSink::open(
            &id(),
            &spec(
                &cluster.bootstrap_servers(),
                KafkaDeliverySemantic::AtLeastOnce,
            ),
        )
        .expect("open");
        let message = EgressMessage {
            egress: id(),
            value: TypedValue::new("io.statefun.types/string", vec![10, 1, b'x']),
        };
        let text = sink
            .write(&[message])
            .expect_err("not a record")
            .to_string();
        assert!(text.contains("test/out"), "{text}");
        assert!(text.contains("io.statefun.types/string"), "{text}");

        let record = KafkaProducerRecord {
            key: "k".into(),
            value_bytes: b"v".to_vec(),
            topic: String::new(),
            headers: vec![],
            partition: None,
        };
        let message = EgressMessage {
            egress: id(),
            value: record.to_typed_value(),
        };
        let text = sink.write(&[message]).expect_err("no topic").to_string();
        assert!(text.contains("no topic"), "{text}");
    }

    #[test]
    fn at_least_once_counts_acknowledgements_on_the_mock_cluster() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("out", 1, 1).expect("topic");
        let mut sink = KafkaSink::open(
            &id(),
            &spec(
                &cluster.bootstrap_servers(),
                KafkaDeliverySemantic::AtLeastOnce,
            ),
        )
        .expect("open");
        let record = KafkaProducerRecord {
            key: "k".into(),
            value_bytes: b"v".to_vec(),
            topic: "out".into(),
            headers: vec![],
            partition: None,
        };
        let message = EgressMessage {
            egress: id(),
            value: record.to_typed_value(),
        };
        sink.write(&[message.clone(), message]).expect("write");
        sink.flush().expect("flush");
        assert_eq!(sink.acknowledged(), 2);
    }
}
