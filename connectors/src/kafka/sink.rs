//! [`KafkaSink`]: an `io.statefun.kafka.v1/egress` with `at-least-once` or `none` delivery.
//!
//! Records are produced as they are written; librdkafka batches them and retries what the
//! broker calls retriable (within `message.timeout.ms`). With `at-least-once`,
//! [`Sink::flush`] waits for every delivery report and fails, naming the sink, topic and
//! error, if any record was not acknowledged — so the engine never marks a checkpoint
//! delivered that was not. With `none`, nothing waits and failures are only logged.
//!
//! `exactly-once` needs the checkpoint outbox (issue #4): records must wait for a globally
//! complete checkpoint and go out in one transaction with a progress record. Until then the
//! sink refuses it rather than pretend.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use statefun_module::{KafkaDeliverySemantic, KafkaEgress};
use statefun_sdk::{EgressMessage, TypeName};

use super::config::{client_config, effective_property, LogContext, Owned};
use crate::codec::KafkaProducerRecord;
use crate::{ConnectorError, Sink};

const CONNECTOR: &str = "kafka egress";

/// librdkafka's default `message.timeout.ms`: how long it keeps retrying one record.
const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_millis(300_000);

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
            Ok(_) => d.acked += 1,
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

/// The Kafka egress sink of one worker.
pub struct KafkaSink {
    id: String,
    address: String,
    producer: BaseProducer<SinkContext>,
    deliveries: Arc<Mutex<Deliveries>>,
    /// `at-least-once`: `flush` waits for and checks every delivery.
    wait: bool,
    flush_timeout: Duration,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Opens the producer of egress `id`.
    ///
    /// Properties pass through to librdkafka unchanged, except `bootstrap.servers` (from
    /// `address`) and `transactional.id` (owned by the exactly-once outbox; removed here),
    /// each named in a warning if set. `exactly-once` is a [`ConnectorError::Config`]:
    /// it needs the checkpoint outbox of issue #4; use `at-least-once` for now.
    pub fn open(id: &TypeName, spec: &KafkaEgress) -> Result<Self, ConnectorError> {
        let id_text = id.to_string();
        let config_error = |message: String| ConnectorError::Config {
            connector: CONNECTOR,
            id: id_text.clone(),
            message,
        };
        let wait = match spec.delivery_semantic {
            KafkaDeliverySemantic::ExactlyOnce { .. } => {
                return Err(config_error(
                    "`deliverySemantic: exactly-once` needs the checkpoint outbox (issue #4), \
                     which is not built yet; use `type: at-least-once` for now"
                        .into(),
                ))
            }
            KafkaDeliverySemantic::AtLeastOnce => true,
            KafkaDeliverySemantic::None => false,
        };
        let mut properties = spec.properties.clone();
        if properties.get("transactional.id").is_some() {
            tracing::warn!(
                "{CONNECTOR} `{id_text}`: property `transactional.id` is ignored: transactions \
                 belong to the exactly-once outbox, not to `properties`"
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
            log: LogContext {
                connector: CONNECTOR,
                id: id_text.clone(),
            },
            deliveries: deliveries.clone(),
            log_failures: !wait,
        };
        let producer: BaseProducer<SinkContext> = config
            .create_with_context(context)
            .map_err(|e| config_error(format!("librdkafka refused the configuration: {e}")))?;
        Ok(KafkaSink {
            id: id_text,
            address: spec.address.clone(),
            producer,
            deliveries,
            wait,
            flush_timeout,
        })
    }

    /// The value librdkafka uses for a configuration `key` in this sink's producer: shows
    /// that `properties` passed through (see [`effective_property`]).
    pub fn effective_property(&self, key: &str) -> Option<String> {
        effective_property(self.producer.client(), key)
    }

    /// Records acknowledged by the brokers so far.
    pub fn acknowledged(&self) -> u64 {
        self.deliveries.lock().map(|d| d.acked).unwrap_or(0)
    }

    /// With `at-least-once`, an error for the records that failed since the last check.
    fn take_failures(&self) -> Result<(), ConnectorError> {
        if !self.wait {
            return Ok(());
        }
        let Ok(mut d) = self.deliveries.lock() else {
            return Ok(());
        };
        if d.failed_count == 0 {
            return Ok(());
        }
        let count = std::mem::take(&mut d.failed_count);
        let failed = std::mem::take(&mut d.failed);
        let detail: Vec<String> = failed
            .iter()
            .map(|(topic, e)| format!("topic `{topic}`: {e}"))
            .collect();
        Err(ConnectorError::Io {
            connector: CONNECTOR,
            id: self.id.clone(),
            path: self.address.clone(),
            source: std::io::Error::other(format!(
                "{count} record(s) not acknowledged ({})",
                detail.join("; ")
            )),
            hint: "check that the topics exist (the broker may not create topics \
                   automatically) and that this client may write to them"
                .to_string(),
        })
    }

    fn record_error(&self, message: &EgressMessage, reason: String) -> ConnectorError {
        ConnectorError::Config {
            connector: CONNECTOR,
            id: self.id.clone(),
            message: format!(
                "cannot write a record of type `{}`: {reason}; a Kafka egress takes \
                 `{}` values (build them with KafkaEgressMessage)",
                message.value.typename,
                crate::codec::KAFKA_PRODUCER_RECORD_TYPENAME
            ),
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
                Err((e, _)) => {
                    return Err(ConnectorError::Io {
                        connector: CONNECTOR,
                        id: self.id.clone(),
                        path: self.address.clone(),
                        source: std::io::Error::other(format!(
                            "producing to topic `{}` failed: {e}",
                            record.topic
                        )),
                        hint: "check the topic, partition and producer properties".into(),
                    })
                }
            }
        }
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, records: &[EgressMessage]) -> Result<(), ConnectorError> {
        for m in records {
            self.send(m)?;
        }
        // Serve delivery reports so that failures surface early and memory stays bounded.
        self.producer.poll(Duration::ZERO);
        self.take_failures()
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        if !self.wait {
            self.producer.poll(Duration::ZERO);
            return Ok(());
        }
        if let Err(e) = self.producer.flush(self.flush_timeout) {
            return Err(ConnectorError::Io {
                connector: CONNECTOR,
                id: self.id.clone(),
                path: self.address.clone(),
                source: std::io::Error::other(format!(
                    "{} record(s) still unacknowledged after {:?}: {e}",
                    self.producer.in_flight_count(),
                    self.flush_timeout
                )),
                hint: "check that the brokers are reachable".into(),
            });
        }
        self.take_failures()
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
        }
    }

    fn id() -> TypeName {
        TypeName::parse("test/out").expect("typename")
    }

    #[test]
    fn exactly_once_is_refused_until_the_outbox_exists() {
        let semantic = KafkaDeliverySemantic::ExactlyOnce {
            transaction_timeout: Duration::from_secs(60),
        };
        let err = KafkaSink::open(&id(), &spec("127.0.0.1:9", semantic)).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("test/out"), "{text}");
        assert!(
            text.contains("issue #4") && text.contains("at-least-once"),
            "{text}"
        );
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
