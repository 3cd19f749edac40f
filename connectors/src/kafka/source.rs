//! [`KafkaSource`]: the partitions of a Kafka ingress that belong to one worker.
//!
//! Why it works the way it does:
//!
//! * **`assign`, not `subscribe`.** The checkpoint owns the offsets, so a consumer-group
//!   rebalance must never move a partition behind the runtime's back. Every worker computes
//!   the same [`partition_owner`] for every partition and assigns itself its share.
//! * **Concrete start offsets.** Logical positions (`latest`, `earliest`, a timestamp, a
//!   missing committed offset) are resolved to numbers when a partition is assigned, so
//!   [`KafkaSource::positions`] is exact from the first moment and a checkpoint taken before
//!   any record arrived still restores to the right place.
//! * **No busy polling.** Each partition gets its own librdkafka queue
//!   (`split_partition_queue`) whose non-empty callback calls the engine's waker; `poll`
//!   only ever uses a zero timeout.
//! * **New partitions.** A background thread re-reads topic metadata every
//!   [`PARTITION_DISCOVERY_INTERVAL`]; partitions that appear later (and topics created
//!   after start) are read from their beginning, because every record in them is newer than
//!   the job's start (Flink's Kafka source does the same). The Kinesis source discovers
//!   shards differently, on its tokio runtime, and that is deliberate: librdkafka's
//!   metadata call is blocking and needs only a plain thread and a channel, while the
//!   Kinesis reader is async end to end (the AWS SDK) and already has a runtime whose
//!   reader tasks must learn of new shards (and of finished parents) directly. One shape
//!   for both would put a tokio runtime under every Kafka source or a blocking thread
//!   beside every Kinesis one, for no gain.
//! * **Values are passed through unchanged.** Like upstream StateFun, the record value is
//!   the message payload as is: producers write the wire format of the topic's `valueType`
//!   (for `io.statefun.types/string` that is StateFun's `StringWrapper` encoding).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use statefun_module::{AutoOffsetReset, KafkaIngress, KafkaStartupPosition};
use statefun_sdk::{IngressMetadata, TypeName};

use super::config::{
    client_config, effective_property, first_contact, partition_owner, LogContext, Owned,
};
use super::lag::{self, PartitionGauge};
use crate::source::{decode_position, encode_position};
use crate::{
    ConnectorError, RecordKey, RecordMetadata, Source, SourceRecord, SourceStats, SourceStatus,
    Waker,
};

/// The `kind` of Kafka positions: `(topic, partition, next offset)` triples.
pub(crate) const KAFKA_POSITION: &str = "kafka";

/// How often each worker re-reads topic metadata to find partitions added after start.
///
/// A few seconds: a metadata request per worker is cheap, and a new partition's records are
/// not lost while waiting (it is read from its beginning once found), only delayed.
pub const PARTITION_DISCOVERY_INTERVAL: Duration = Duration::from_secs(3);

/// How long a blocking broker request (metadata, watermarks, committed offsets, offsets for
/// times) may take while opening the source or assigning a partition.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often to come back when idle even though the waker is set: serves librdkafka's main
/// queue (client errors, commit results) in case nothing wakes the engine.
const IDLE_RECHECK: Duration = Duration::from_millis(500);

const CONNECTOR: &str = "kafka ingress";

/// The consumer's context: librdkafka logs to `tracing`, failed commits are logged.
pub struct SourceContext {
    log: LogContext,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.client_error(error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Commits only feed lag tools and `group-offsets` startup; the checkpoint is the
            // source of truth, so a failed commit is worth a warning, not a failure.
            tracing::warn!(
                "{CONNECTOR} `{}`: committing offsets to the consumer group failed: {e}",
                self.log.id
            );
        }
    }
}

type Consumer_ = BaseConsumer<SourceContext>;

/// One partition this worker reads.
struct Assigned {
    topic: String,
    partition: i32,
    route: usize,
    /// The offset of the next record to hand out.
    next: i64,
    queue: rdkafka::consumer::base_consumer::PartitionQueue<SourceContext>,
    /// `next` for `/metrics`, and the watermark the discovery thread fetches ([`lag`]).
    gauge: Arc<PartitionGauge>,
}

/// The lag gauges of the partitions a source reads, shared with its discovery thread,
/// which fetches their high watermarks.
type Gauges = Arc<std::sync::Mutex<Vec<Arc<PartitionGauge>>>>;

/// The shared slot for the engine's waker: librdkafka's callbacks are installed before the
/// engine hands over its waker, so they read it from here.
type WakerSlot = Arc<RwLock<Option<Waker>>>;

fn wake(slot: &WakerSlot) {
    if let Ok(guard) = slot.read() {
        if let Some(w) = guard.as_ref() {
            w();
        }
    }
}

/// The Kafka ingress source of one worker.
///
/// Created with [`KafkaSource::open`] from the module's `KafkaIngress`; see the module
/// documentation for how partitions are shared and positions resolved.
pub struct KafkaSource {
    id: String,
    address: String,
    consumer: Arc<Consumer_>,
    /// Topic name → index in `topics[]` (the record's `route`).
    routes: HashMap<String, usize>,
    assigned: Vec<Assigned>,
    /// Where the round-robin over partitions resumes, so that `max` does not starve any.
    cursor: usize,
    /// Positions restored by [`KafkaSource::seek_to`] for partitions not assigned yet; they
    /// win over the startup position when the partition shows up.
    restored: HashMap<(String, i32), i64>,
    discovered: mpsc::Receiver<Vec<(String, i32, i64)>>,
    /// The gauges of `assigned`, for the discovery thread.
    gauges: Gauges,
    /// Dropping this stops the discovery thread.
    _stop: mpsc::Sender<()>,
    waker: WakerSlot,
    stats: SourceStats,
    worker_index: usize,
    peers: usize,
    last_error_log: Option<Instant>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("positions", &self.positions())
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Opens the source of worker `worker_index` of `peers` (all workers of all processes)
    /// and assigns it its partitions at their startup positions.
    ///
    /// Blocks for broker round trips (metadata, watermarks, committed offsets, offsets for
    /// times), so call it at startup, not on a hot path. Fails when the brokers cannot be
    /// reached or the configuration is refused by librdkafka. A configured topic that does
    /// not exist yet is a warning; it is read from its beginning once created.
    ///
    /// Properties pass through to librdkafka unchanged, except the keys the runtime owns:
    /// `bootstrap.servers` (from `address`), `group.id` (from `consumerGroupId`),
    /// `enable.auto.commit` and `enable.auto.offset.store` (`false`: the checkpoint owns the
    /// offsets); each is named in a warning if set to something else. `isolation.level`
    /// defaults to `read_committed` (a warning if set otherwise, because read_uncommitted
    /// exposes aborted records of transactional producers) and `auto.offset.reset` to
    /// `autoOffsetResetPosition`.
    pub fn open(
        id: &TypeName,
        spec: &KafkaIngress,
        worker_index: usize,
        peers: usize,
    ) -> Result<Self, ConnectorError> {
        let id_text = id.to_string();
        let config_error = |message: String| ConnectorError::config(CONNECTOR, &id_text, message);
        if spec.topics.is_empty() {
            return Err(config_error(
                "`topics` is empty; list at least one topic".into(),
            ));
        }
        if peers == 0 || worker_index >= peers {
            return Err(config_error(format!(
                "worker index {worker_index} is not below the number of workers {peers}"
            )));
        }
        let mut consumer = consumer(&id_text, spec)?;
        let waker: WakerSlot = Arc::new(RwLock::new(None));
        let main_waker = waker.clone();
        consumer.set_nonempty_callback(move || wake(&main_waker));
        let consumer = Arc::new(consumer);

        let mut routes = HashMap::new();
        for (i, t) in spec.topics.iter().enumerate() {
            routes.entry(t.topic.clone()).or_insert(i);
        }
        let topics: Vec<String> = spec.topics.iter().map(|t| t.topic.clone()).collect();

        // All partitions of the configured topics, and this worker's share.
        let mut known: HashSet<(String, i32)> = HashSet::new();
        let mut mine: Vec<(String, i32)> = Vec::new();
        for topic in unique(&topics) {
            let partitions = topic_partitions(&consumer, topic).map_err(|e| {
                config_error(format!(
                    "cannot read metadata of topic `{topic}` from `{}`: {e}; check `address` \
                     and that the brokers are reachable",
                    spec.address
                ))
            })?;
            if partitions.is_empty() {
                tracing::warn!(
                    "{CONNECTOR} `{id_text}`: topic `{topic}` does not exist (yet) at `{}`; it \
                     will be read from its beginning once it is created",
                    spec.address
                );
            }
            for p in partitions {
                known.insert((topic.to_string(), p));
                if partition_owner(topic, p, peers) == worker_index {
                    mine.push((topic.to_string(), p));
                }
            }
        }
        let starts = resolve_startup(&consumer, spec, &mine).map_err(|e| {
            config_error(format!(
                "cannot resolve the startup position at `{}`: {e}",
                spec.address
            ))
        })?;

        let (stop, stop_rx) = mpsc::channel::<()>();
        let (found_tx, discovered) = mpsc::channel();
        let gauges: Gauges = Arc::default();
        {
            let consumer = consumer.clone();
            let waker = waker.clone();
            // Weak: the partitions leave the registry with the source, not with the thread.
            let gauges = Arc::downgrade(&gauges);
            let id = id_text.clone();
            let topics = unique(&topics).into_iter().map(String::from).collect();
            std::thread::Builder::new()
                .name(format!("kafka-discovery-{worker_index}"))
                .spawn(move || {
                    discover(
                        consumer,
                        topics,
                        known,
                        worker_index,
                        peers,
                        id,
                        stop_rx,
                        found_tx,
                        waker,
                        gauges,
                    )
                })
                .map_err(|e| config_error(format!("cannot start the discovery thread: {e}")))?;
        }

        let mut source = KafkaSource {
            id: id_text,
            address: spec.address.clone(),
            consumer,
            routes,
            assigned: Vec::new(),
            cursor: 0,
            restored: HashMap::new(),
            discovered,
            gauges,
            _stop: stop,
            waker,
            stats: SourceStats::default(),
            worker_index,
            peers,
            last_error_log: None,
        };
        source.assign(starts)?;
        Ok(source)
    }

    /// The offset of the next record of every partition this worker reads, as
    /// `(topic, partition, offset)` sorted by topic and partition: what a checkpoint records.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        let mut out: Vec<(String, i32, i64)> = self
            .assigned
            .iter()
            .map(|a| (a.topic.clone(), a.partition, a.next))
            .collect();
        out.sort();
        out
    }

    /// Restores positions from a checkpoint: they win over the startup position.
    ///
    /// Positions of partitions other workers own are ignored (a checkpoint may hold all
    /// workers' positions); positions of partitions not assigned yet are kept and used when
    /// the partition is assigned. Records read before the call but not yet returned are
    /// dropped by librdkafka.
    ///
    /// A partition this worker reads that the checkpoint has no position for did not exist
    /// when the checkpoint was taken (the checkpoint holds every partition the worker read):
    /// it was created since, perhaps while the job was down, so it is read from its
    /// beginning, as partitions discovered while running are. Its startup position
    /// (`latest` by default) would skip the records written to it meanwhile.
    pub fn seek_to(&mut self, positions: &[(String, i32, i64)]) -> Result<(), ConnectorError> {
        let mut tpl = TopicPartitionList::new();
        let mut seeks = 0;
        let in_checkpoint: HashSet<(&str, i32)> =
            positions.iter().map(|(t, p, _)| (t.as_str(), *p)).collect();
        let new: Vec<(String, i32)> = self
            .assigned
            .iter()
            .filter(|a| !in_checkpoint.contains(&(a.topic.as_str(), a.partition)))
            .map(|a| (a.topic.clone(), a.partition))
            .collect();
        for (topic, partition) in new {
            let earliest = watermark(&self.consumer, &topic, partition, true).map_err(|e| {
                self.kafka_error(&format!("earliest offset of `{topic}` [{partition}]"), e)
            })?;
            tracing::info!(
                "{CONNECTOR} `{}`: partition `{topic}` [{partition}] is not in the restored \
                 checkpoint (created since): read from its beginning (offset {earliest})",
                self.id
            );
            if let Some(a) = self
                .assigned
                .iter_mut()
                .find(|a| a.topic == topic && a.partition == partition)
            {
                a.next = earliest;
                a.gauge.set_position(earliest);
            }
            tpl.add_partition_offset(&topic, partition, Offset::Offset(earliest))
                .map_err(|e| self.kafka_error("seek", e))?;
            seeks += 1;
        }
        for (topic, partition, offset) in positions {
            if partition_owner(topic, *partition, self.peers) != self.worker_index {
                continue;
            }
            match self
                .assigned
                .iter_mut()
                .find(|a| a.topic == *topic && a.partition == *partition)
            {
                Some(a) => {
                    a.next = *offset;
                    a.gauge.set_position(*offset);
                    tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                        .map_err(|e| self.kafka_error("seek", e))?;
                    seeks += 1;
                }
                None => {
                    self.restored.insert((topic.clone(), *partition), *offset);
                }
            }
        }
        if seeks == 0 {
            return Ok(());
        }
        let result = self
            .consumer
            .seek_partitions(tpl, REQUEST_TIMEOUT)
            .map_err(|e| self.kafka_error("seek", e))?;
        for elem in result.elements() {
            if let Err(e) = elem.error() {
                return Err(self.kafka_error(
                    &format!("seek of `{}` [{}]", elem.topic(), elem.partition()),
                    e,
                ));
            }
        }
        // librdkafka drops records of the old position still queued (they carry an outdated
        // fetch version), so the next poll starts at the restored offsets.
        Ok(())
    }

    /// Commits `positions` (next offsets, as from [`KafkaSource::positions`]) to the
    /// consumer group `consumerGroupId`, asynchronously.
    ///
    /// For lag monitoring and `group-offsets` startup only: the runtime calls it after a
    /// checkpoint is complete, never per record. A failed commit is logged as a warning.
    pub fn commit_offsets(&self, positions: &[(String, i32, i64)]) -> Result<(), ConnectorError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in positions {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| self.kafka_error("commit", e))?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| self.kafka_error("commit", e))
    }

    /// The value librdkafka uses for a configuration `key` in this source's consumer: shows
    /// that `properties` passed through (see [`effective_property`]).
    pub fn effective_property(&self, key: &str) -> Option<String> {
        effective_property(self.consumer.client(), key)
    }

    fn kafka_error(&self, what: &str, e: KafkaError) -> ConnectorError {
        ConnectorError::io(
            CONNECTOR,
            &self.id,
            &self.address,
            format!("{what} failed; check that the brokers are reachable"),
            std::io::Error::other(e),
        )
    }

    /// Adds partitions to the assignment at the given offsets (restored positions win) and
    /// gives each its own queue that wakes the engine.
    fn assign(&mut self, parts: Vec<(String, i32, i64)>) -> Result<(), ConnectorError> {
        let parts: Vec<(String, i32, i64)> = parts
            .into_iter()
            .filter(|(t, p, _)| {
                !self
                    .assigned
                    .iter()
                    .any(|a| a.topic == *t && a.partition == *p)
            })
            .map(|(t, p, o)| {
                let o = self.restored.remove(&(t.clone(), p)).unwrap_or(o);
                (t, p, o)
            })
            .collect();
        if parts.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in &parts {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                .map_err(|e| self.kafka_error("assign", e))?;
        }
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| self.kafka_error("assign", e))?;
        for (topic, partition, next) in parts {
            let Some(mut queue) = self.consumer.split_partition_queue(&topic, partition) else {
                return Err(ConnectorError::config(
                    CONNECTOR,
                    &self.id,
                    format!("cannot split a queue for `{topic}` [{partition}]"),
                ));
            };
            let waker = self.waker.clone();
            queue.set_nonempty_callback(move || wake(&waker));
            let route = self.routes.get(&topic).copied().unwrap_or(0);
            tracing::debug!(
                "{CONNECTOR} `{}`: worker {} reads `{topic}` [{partition}] from offset {next}",
                self.id,
                self.worker_index
            );
            let gauge = lag::register(&self.id, self.worker_index, &topic, partition, next);
            if let Ok(mut gauges) = self.gauges.lock() {
                gauges.push(gauge.clone());
            }
            self.assigned.push(Assigned {
                topic,
                partition,
                route,
                next,
                queue,
                gauge,
            });
        }
        // Records may already be waiting: let the engine poll.
        wake(&self.waker);
        Ok(())
    }

    fn log_poll_error(&mut self, e: &KafkaError) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.last_error_log = Some(now);
            tracing::warn!(
                "{CONNECTOR} `{}`: consuming from `{}` reported: {e} (librdkafka retries)",
                self.id,
                self.address
            );
        }
    }
}

/// Turns a consumed message into a record: key, value and headers copied as they are.
fn to_record(msg: &BorrowedMessage<'_>, route: usize) -> SourceRecord {
    let headers = msg
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    SourceRecord {
        key: msg.key().map(RecordKey::from_slice),
        value: msg.payload().map(<[u8]>::to_vec),
        route,
        metadata: RecordMetadata::Record(Box::new(IngressMetadata::Kafka {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis(),
            headers,
        })),
        rejected: None,
    }
}

impl Source for KafkaSource {
    fn poll(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        // Partitions found by the discovery thread.
        while let Ok(found) = self.discovered.try_recv() {
            self.assign(found)?;
        }
        let start = out.len();
        let limit = start + max;

        // The main queue serves client events and commit results; it also holds records of a
        // partition fetched before its queue was split, which are older than anything in
        // that partition's own queue, so they go out first.
        while out.len() < limit {
            let polled = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => Err(e),
                Some(Ok(msg)) => {
                    let route = self.routes.get(msg.topic()).copied().unwrap_or(0);
                    Ok(to_record(&msg, route))
                }
            };
            match polled {
                Ok(record) => {
                    if let Some(IngressMetadata::Kafka {
                        topic,
                        partition,
                        offset,
                        ..
                    }) = record.metadata.record()
                    {
                        if let Some(a) = self
                            .assigned
                            .iter_mut()
                            .find(|a| a.topic == *topic && a.partition == *partition)
                        {
                            a.next = offset + 1;
                        }
                    }
                    out.push(record);
                }
                Err(e) => self.log_poll_error(&e),
            }
        }

        let n = self.assigned.len();
        let mut errors = Vec::new();
        for i in 0..n {
            if out.len() >= limit {
                break;
            }
            let idx = (self.cursor + i) % n;
            let a = &mut self.assigned[idx];
            while out.len() < limit {
                match a.queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(msg)) => {
                        a.next = msg.offset() + 1;
                        out.push(to_record(&msg, a.route));
                    }
                    Some(Err(e)) => {
                        errors.push(e);
                        break;
                    }
                }
            }
        }
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        for e in &errors {
            self.log_poll_error(e);
        }

        let produced = out.len() - start;
        self.stats.records += produced as u64;
        if produced > 0 {
            // One relaxed store per partition and poll: what `/metrics` reads as the position.
            for a in &self.assigned {
                a.gauge.set_position(a.next);
            }
        }
        if out.len() >= limit {
            return Ok(SourceStatus::Ready);
        }
        let has_waker = self.waker.read().map(|w| w.is_some()).unwrap_or(false);
        Ok(SourceStatus::Idle {
            retry_after: Some(if has_waker {
                IDLE_RECHECK
            } else {
                Duration::from_millis(10)
            }),
        })
    }

    fn set_waker(&mut self, waker: Waker) {
        if let Ok(mut slot) = self.waker.write() {
            *slot = Some(waker);
        }
        wake(&self.waker);
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    /// [`KafkaSource::positions`] (the next offset to read per partition), plus restored
    /// positions of partitions not assigned yet, so that a checkpoint taken between a
    /// restore and the partition's discovery does not forget them.
    fn position(&self) -> Option<Vec<u8>> {
        let mut positions = self.positions();
        positions.extend(
            self.restored
                .iter()
                .map(|((topic, partition), offset)| (topic.clone(), *partition, *offset)),
        );
        positions.sort();
        encode_position(KAFKA_POSITION, &positions)
    }

    /// Commits the checkpoint's offsets to `consumerGroupId` (asynchronously).
    fn checkpoint_complete(&mut self, position: &[u8]) -> Result<(), ConnectorError> {
        let positions: Vec<(String, i32, i64)> =
            decode_position(position, KAFKA_POSITION, CONNECTOR, &self.id)?;
        self.commit_offsets(&positions)
    }

    /// [`KafkaSource::seek_to`] with the positions of [`Source::position`].
    fn seek(&mut self, position: &[u8]) -> Result<(), ConnectorError> {
        let positions: Vec<(String, i32, i64)> =
            decode_position(position, KAFKA_POSITION, CONNECTOR, &self.id)?;
        self.seek_to(&positions)
    }
}

fn unique(topics: &[String]) -> Vec<&str> {
    let mut seen = HashSet::new();
    topics
        .iter()
        .filter(|t| seen.insert(t.as_str()))
        .map(String::as_str)
        .collect()
}

/// The consumer of ingress `id_text`: its configuration (defaults, `properties`, the keys
/// the runtime owns), created, and its first contact with the cluster made (an
/// authentication or TLS failure ends the open here, naming the cause).
fn consumer(id_text: &str, spec: &KafkaIngress) -> Result<Consumer_, ConnectorError> {
    let config_error = |message: String| ConnectorError::config(CONNECTOR, id_text, message);
    let reset = match spec.auto_offset_reset {
        AutoOffsetReset::Latest => "latest",
        AutoOffsetReset::Earliest => "earliest",
    };
    if let Some(level) = spec.properties.get("isolation.level") {
        if level != "read_committed" {
            tracing::warn!(
                "{CONNECTOR} `{id_text}`: `isolation.level` = `{level}`: records of aborted \
                 transactions will be read; remove the property to get read_committed"
            );
        }
    }
    let config = client_config(
        CONNECTOR,
        id_text,
        &[
            ("isolation.level", "read_committed".into()),
            ("auto.offset.reset", reset.into()),
        ],
        &spec.properties,
        &[
            Owned {
                key: "bootstrap.servers",
                value: spec.address.clone(),
                why: "from `address`",
            },
            Owned {
                key: "group.id",
                value: spec.consumer_group_id.clone(),
                why: "from `consumerGroupId`",
            },
            Owned {
                key: "enable.auto.commit",
                value: "false".into(),
                why: "checkpoints own the offsets; they are committed after each checkpoint",
            },
            Owned {
                key: "enable.auto.offset.store",
                value: "false".into(),
                why: "checkpoints own the offsets",
            },
            Owned {
                key: "enable.partition.eof",
                value: "false".into(),
                why: "the source never ends",
            },
        ],
    );

    let context = SourceContext {
        log: LogContext::new(CONNECTOR, id_text),
    };
    let consumer: Consumer_ = config
        .create_with_context(context)
        .map_err(|e| config_error(format!("librdkafka refused the configuration: {e}")))?;
    first_contact(
        consumer.client(),
        &|| {
            // Nothing is assigned yet: this serves client errors, it reads no record.
            let _ = consumer.poll(Duration::ZERO);
        },
        &consumer.context().log,
        &spec.address,
    )?;
    Ok(consumer)
}

/// The partition numbers of `topic`; empty when the topic does not exist.
fn topic_partitions(consumer: &Consumer_, topic: &str) -> KafkaResult<Vec<i32>> {
    let md = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let mut out = Vec::new();
    for t in md.topics() {
        if t.name() != topic {
            continue;
        }
        match t.error() {
            None => out.extend(t.partitions().iter().map(|p| p.id())),
            Some(e) => {
                let code = rdkafka::types::RDKafkaErrorCode::from(e);
                if code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
                    return Err(KafkaError::MetadataFetch(code));
                }
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A logical position to a concrete offset: the low or high watermark.
fn watermark(
    consumer: &Consumer_,
    topic: &str,
    partition: i32,
    earliest: bool,
) -> KafkaResult<i64> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
    Ok(if earliest { low } else { high })
}

/// The concrete start offset of each of `parts` for the configured startup position.
fn resolve_startup(
    consumer: &Consumer_,
    spec: &KafkaIngress,
    parts: &[(String, i32)],
) -> KafkaResult<Vec<(String, i32, i64)>> {
    let reset_earliest = spec.auto_offset_reset == AutoOffsetReset::Earliest;
    let mut out = Vec::with_capacity(parts.len());
    if parts.is_empty() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    // For each partition: Some(offset) if the position named one, None → auto reset.
    let found: BTreeMap<(String, i32), Option<i64>> = match &spec.startup_position {
        KafkaStartupPosition::Latest | KafkaStartupPosition::Earliest => {
            let earliest = spec.startup_position == KafkaStartupPosition::Earliest;
            for (t, p) in parts {
                out.push((t.clone(), *p, watermark(consumer, t, *p, earliest)?));
            }
            return Ok(out);
        }
        KafkaStartupPosition::GroupOffsets => consumer
            .committed_offsets(tpl, REQUEST_TIMEOUT)?
            .elements()
            .iter()
            .map(|e| {
                let o = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                };
                ((e.topic().to_string(), e.partition()), o)
            })
            .collect(),
        KafkaStartupPosition::SpecificOffsets(list) => parts
            .iter()
            .map(|(t, p)| {
                let o = list
                    .iter()
                    .find(|po| po.topic == *t && po.partition == *p)
                    .map(|po| po.offset);
                ((t.clone(), *p), o)
            })
            .collect(),
        KafkaStartupPosition::AtTimestamp(ts) => {
            tpl.set_all_offsets(Offset::Offset(ts.epoch_millis))?;
            consumer
                .offsets_for_times(tpl, REQUEST_TIMEOUT)?
                .elements()
                .iter()
                .map(|e| {
                    // No record at or after the time: start at the end (latest).
                    let o = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Some(o),
                        _ => None,
                    };
                    ((e.topic().to_string(), e.partition()), o)
                })
                .collect()
        }
    };
    let at_timestamp = matches!(spec.startup_position, KafkaStartupPosition::AtTimestamp(_));
    for (t, p) in parts {
        let offset = match found.get(&(t.clone(), *p)).copied().flatten() {
            Some(o) => o,
            // Nothing after the timestamp: everything from now on is after it.
            None if at_timestamp => watermark(consumer, t, *p, false)?,
            None => watermark(consumer, t, *p, reset_earliest)?,
        };
        out.push((t.clone(), *p, offset));
    }
    Ok(out)
}

/// The discovery thread: re-reads metadata every [`PARTITION_DISCOVERY_INTERVAL`] and sends
/// this worker's new partitions, with their earliest offsets, to the source; and, once
/// [`lag::enable`]d, fetches the high watermark of every partition the source reads every
/// [`lag::WATERMARK_INTERVAL`] (blocking broker requests belong here, not on the worker).
#[allow(clippy::too_many_arguments)]
fn discover(
    consumer: Arc<Consumer_>,
    topics: Vec<String>,
    mut known: HashSet<(String, i32)>,
    worker_index: usize,
    peers: usize,
    id: String,
    stop: mpsc::Receiver<()>,
    found: mpsc::Sender<Vec<(String, i32, i64)>>,
    waker: WakerSlot,
    gauges: std::sync::Weak<std::sync::Mutex<Vec<Arc<PartitionGauge>>>>,
) {
    let mut last_discovery = Instant::now();
    loop {
        match stop.recv_timeout(lag::WATERMARK_INTERVAL.min(PARTITION_DISCOVERY_INTERVAL)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if lag::enabled() {
            let reading: Vec<std::sync::Weak<PartitionGauge>> = gauges
                .upgrade()
                .and_then(|g| {
                    g.lock()
                        .ok()
                        .map(|g| g.iter().map(Arc::downgrade).collect())
                })
                .unwrap_or_default();
            for gauge in reading.iter().filter_map(std::sync::Weak::upgrade) {
                match consumer.fetch_watermarks(&gauge.topic, gauge.partition, REQUEST_TIMEOUT) {
                    Ok((_, high)) => gauge.set_high_watermark(high),
                    Err(e) => tracing::debug!(
                        "{CONNECTOR} `{id}`: watermarks of `{}` [{}]: {e}",
                        gauge.topic,
                        gauge.partition
                    ),
                }
            }
        }
        if last_discovery.elapsed() < PARTITION_DISCOVERY_INTERVAL {
            continue;
        }
        last_discovery = Instant::now();
        let mut new = Vec::new();
        for topic in &topics {
            let partitions = match topic_partitions(&consumer, topic) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!("{CONNECTOR} `{id}`: metadata of `{topic}`: {e}");
                    continue;
                }
            };
            for p in partitions {
                if known.contains(&(topic.clone(), p)) {
                    continue;
                }
                if partition_owner(topic, p, peers) != worker_index {
                    known.insert((topic.clone(), p));
                    continue;
                }
                match watermark(&consumer, topic, p, true) {
                    Ok(o) => {
                        tracing::info!(
                            "{CONNECTOR} `{id}`: new partition `{topic}` [{p}], read from \
                             offset {o}"
                        );
                        known.insert((topic.clone(), p));
                        new.push((topic.clone(), p, o));
                    }
                    // Not ready yet (leader election): try again next round.
                    Err(e) => tracing::debug!("{CONNECTOR} `{id}`: `{topic}` [{p}]: {e}"),
                }
            }
        }
        if !new.is_empty() {
            if found.send(new).is_err() {
                return;
            }
            wake(&waker);
        }
    }
}

/// Where a partition's position in a lag report comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionFrom {
    /// The newest checkpoint every worker completed (what a restart resumes from).
    Checkpoint,
    /// The consumer group's committed offset (the runtime commits each complete
    /// checkpoint's offsets there).
    GroupOffset,
    /// Neither knows the partition: a restart starts it by `startupPosition`.
    Unknown,
}

/// One partition of a lag report ([`KafkaSource::lag`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset of the next record the job reads, if known.
    pub position: Option<i64>,
    /// Where `position` comes from.
    pub from: PositionFrom,
    /// The offset after the newest record (the high watermark).
    pub high_watermark: i64,
    /// `high_watermark - position`: records written and not yet covered by a checkpoint.
    pub lag: Option<i64>,
}

/// The positions of a Kafka checkpoint position (what [`Source::position`] records):
/// (topic, partition, next offset).
pub fn decode_kafka_positions(
    id: &str,
    position: &[u8],
) -> Result<Vec<(String, i32, i64)>, ConnectorError> {
    decode_position(position, KAFKA_POSITION, CONNECTOR, id)
}

impl KafkaSource {
    /// Every partition of ingress `id`'s topics: the position in `checkpointed` (the
    /// positions of the checkpoint a restart resumes from, every worker's), else the
    /// consumer group's committed offset; the high watermark; and the lag between them.
    /// Opens a consumer with the ingress's properties but reads no record and commits
    /// nothing.
    pub fn lag(
        id: &TypeName,
        spec: &KafkaIngress,
        checkpointed: &[(String, i32, i64)],
    ) -> Result<Vec<PartitionLag>, ConnectorError> {
        let id_text = id.to_string();
        let io_error = |what: String, e: KafkaError| {
            ConnectorError::io(
                CONNECTOR,
                &id_text,
                &spec.address,
                "check that the brokers are reachable and that this client may describe \
                 the topics and the consumer group",
                std::io::Error::other(format!("{what}: {e}")),
            )
        };
        let consumer = consumer(&id_text, spec)?;
        let topics: Vec<String> = spec.topics.iter().map(|t| t.topic.clone()).collect();
        let mut parts = Vec::new();
        for topic in unique(&topics) {
            let partitions = topic_partitions(&consumer, topic)
                .map_err(|e| io_error(format!("topic `{topic}`"), e))?;
            parts.extend(partitions.into_iter().map(|p| (topic.to_string(), p)));
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &parts {
            tpl.add_partition(t, *p);
        }
        let committed: BTreeMap<(String, i32), i64> = if parts.is_empty() {
            BTreeMap::new()
        } else {
            consumer
                .committed_offsets(tpl, REQUEST_TIMEOUT)
                .map_err(|e| {
                    io_error(
                        format!("committed offsets of group `{}`", spec.consumer_group_id),
                        e,
                    )
                })?
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => {
                        Some(((e.topic().to_string(), e.partition()), o))
                    }
                    _ => None,
                })
                .collect()
        };
        let mut out = Vec::with_capacity(parts.len());
        for (topic, partition) in parts {
            let (_, high) = consumer
                .fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)
                .map_err(|e| io_error(format!("watermarks of {topic}/{partition}"), e))?;
            // A partition not read yet may be recorded with a logical offset (< 0).
            let from_checkpoint = checkpointed
                .iter()
                .find(|(t, p, o)| *t == topic && *p == partition && *o >= 0)
                .map(|(_, _, o)| *o);
            let (position, from) =
                match (from_checkpoint, committed.get(&(topic.clone(), partition))) {
                    (Some(o), _) => (Some(o), PositionFrom::Checkpoint),
                    (None, Some(o)) => (Some(*o), PositionFrom::GroupOffset),
                    (None, None) => (None, PositionFrom::Unknown),
                };
            out.push(PartitionLag {
                lag: position.map(|p| lag::lag_between(p, high)),
                topic,
                partition,
                position,
                from,
                high_watermark: high,
            });
        }
        Ok(out)
    }
}
