//! What happens to ingress records that cannot become messages, and the
//! dead-letter records the `dead-letter` policy writes.
//!
//! A record needs a non-empty UTF-8 key (the function id) and a value. One
//! that lacks either is *bad*: upstream StateFun throws, and the job restarts
//! into the same record forever. Here each ingress has a [`BadRecords`]
//! policy (module.yaml `badRecords`, else `--on-bad-record`).
//!
//! Dead letters travel like any message, so they get the egress's delivery
//! guarantee: the router addresses them to the built-in function
//! [`DEAD_LETTER_FUNCTION`] (id: the egress id), which hands them to the
//! egress. They therefore sit in the checkpoint outbox with everything else,
//! and an exactly-once Kafka egress commits them exactly once with the
//! checkpoint that consumed the bad record's offset.

use std::sync::Arc;

use statefun_sdk::proto::egress::kafka_producer_record::Header;
use statefun_sdk::proto::egress::{KafkaProducerRecord, KinesisEgressRecord};
use statefun_sdk::{
    Address, Context, EgressMessage, FunctionError, FunctionSpec, IngressMetadata, Message,
    TypeName, TypedValue,
};

use crate::entry::FunctionEntry;

/// The function type of the built-in function that forwards dead letters to
/// their egress; the instance id is the egress id.
pub const DEAD_LETTER_FUNCTION: &str = "statefun-rs/dead-letter";

/// Header naming why a record was dead-lettered (Kafka and file egresses).
pub const REASON_HEADER: &str = "statefun.dead-letter.reason";
/// Header naming the ingress that read the record.
pub const INGRESS_HEADER: &str = "statefun.dead-letter.ingress";
/// Header naming where the record was read: `kafka:<topic>/<partition>@<offset>`
/// or `kinesis:<stream>/<shard>@<sequence number>`.
pub const SOURCE_HEADER: &str = "statefun.dead-letter.source";
/// Header holding the original key's bytes when they are not UTF-8 (a Kafka
/// record key in a `KafkaProducerRecord` is text).
pub const KEY_HEADER: &str = "statefun.dead-letter.key";
/// Header naming the function instance a remote invocation failed for.
pub const FUNCTION_HEADER: &str = "statefun.dead-letter.function";
/// Header holding the type name of a failed remote invocation's argument.
pub const TYPENAME_HEADER: &str = "statefun.dead-letter.typename";

/// An ingress's policy for bad records.
#[derive(Clone, Debug, PartialEq)]
pub enum BadRecords {
    /// Counted, logged (rate-limited) and skipped.
    Skip,
    /// The job stops with an error naming the ingress and the record.
    Fail,
    /// Written to an egress.
    DeadLetter(DeadLetterPlan),
}

/// Where an ingress's dead letters go.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetterPlan {
    /// The egress.
    pub egress: TypeName,
    /// The record kind that egress takes.
    pub destination: Destination,
}

/// The record a dead-letter egress takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Destination {
    /// A `KafkaProducerRecord` for this topic, with the original key, value
    /// and headers plus the `statefun.dead-letter.*` headers.
    Kafka {
        /// The dead-letter topic.
        topic: String,
    },
    /// A `KinesisEgressRecord` for this stream: the original data, the
    /// original key as partition key (the ingress id when the key is
    /// unusable). Kinesis records have no headers: why and where are logged only.
    Kinesis {
        /// The dead-letter stream.
        stream: String,
    },
    /// A file egress: a `KafkaProducerRecord` whose topic is this label; the
    /// file egress writes it as a JSON line with its headers.
    File {
        /// The label written as `topic`.
        label: String,
    },
}

/// A bad record, as the router saw it.
#[derive(Debug)]
pub struct BadRecord<'a> {
    /// The ingress id.
    pub ingress: &'a str,
    /// Why it cannot become a message.
    pub why: &'a str,
    /// Its key bytes, if any.
    pub key: Option<&'a [u8]>,
    /// Its value bytes, if any.
    pub value: Option<&'a [u8]>,
    /// Where it was read.
    pub metadata: &'a IngressMetadata,
}

impl DeadLetterPlan {
    /// The egress value carrying `record` (pure: the router's I/O-free half).
    pub fn record(&self, record: &BadRecord<'_>) -> TypedValue {
        let utf8_key = record.key.and_then(|k| std::str::from_utf8(k).ok());
        match &self.destination {
            Destination::Kafka { topic } => kafka_record(topic, utf8_key, record),
            Destination::File { label } => kafka_record(label, utf8_key, record),
            Destination::Kinesis { stream } => KinesisEgressRecord {
                partition_key: utf8_key
                    .filter(|k| !k.is_empty())
                    .unwrap_or(record.ingress)
                    .to_owned(),
                value_bytes: record.value.unwrap_or_default().to_vec(),
                stream: stream.clone(),
                explicit_hash_key: String::new(),
            }
            .to_typed_value(),
        }
    }
}

impl DeadLetterPlan {
    /// The dead letter of a message a remote function failed on for good
    /// (`--on-remote-failure dead-letter=…`): a file egress gets the typed
    /// value as it is (it writes the type name and decoded value); a Kafka
    /// egress a record keyed by the instance id with the argument's bytes and
    /// headers naming why, the function and the argument's type name; a
    /// Kinesis egress a record with the id as partition key and the bytes.
    pub fn remote(&self, address: &Address, why: &str, argument: TypedValue) -> EgressMessage {
        let value = match &self.destination {
            Destination::File { .. } => argument,
            Destination::Kafka { topic } => {
                let header = |key: &str, value: &[u8]| Header {
                    key: key.to_owned(),
                    value: value.to_vec(),
                };
                KafkaProducerRecord {
                    key: address.id.to_string(),
                    topic: topic.clone(),
                    headers: vec![
                        header(REASON_HEADER, why.as_bytes()),
                        header(FUNCTION_HEADER, address.to_string().as_bytes()),
                        header(TYPENAME_HEADER, argument.typename.as_bytes()),
                    ],
                    value_bytes: argument.value,
                    partition: None,
                }
                .to_typed_value()
            }
            Destination::Kinesis { stream } => KinesisEgressRecord {
                partition_key: if address.id.is_empty() {
                    address.function_type.to_string()
                } else {
                    address.id.to_string()
                },
                value_bytes: argument.value,
                stream: stream.clone(),
                explicit_hash_key: String::new(),
            }
            .to_typed_value(),
        };
        EgressMessage::new(self.egress.clone(), value)
    }
}

fn kafka_record(topic: &str, utf8_key: Option<&str>, record: &BadRecord<'_>) -> TypedValue {
    let mut headers = Vec::new();
    if let IngressMetadata::Kafka { headers: h, .. } = record.metadata {
        headers.extend(h.iter().map(|(key, value)| Header {
            key: key.clone(),
            value: value.clone().unwrap_or_default(),
        }));
    }
    let mut header = |key: &str, value: &[u8]| {
        headers.push(Header {
            key: key.to_owned(),
            value: value.to_vec(),
        })
    };
    header(REASON_HEADER, record.why.as_bytes());
    header(INGRESS_HEADER, record.ingress.as_bytes());
    if let Some(source) = source(record.metadata) {
        header(SOURCE_HEADER, source.as_bytes());
    }
    if let (Some(key), None) = (record.key, utf8_key) {
        header(KEY_HEADER, key);
    }
    KafkaProducerRecord {
        key: utf8_key.unwrap_or_default().to_owned(),
        value_bytes: record.value.unwrap_or_default().to_vec(),
        topic: topic.to_owned(),
        headers,
        partition: None,
    }
    .to_typed_value()
}

/// Where a record was read, as one line of text.
fn source(metadata: &IngressMetadata) -> Option<String> {
    match metadata {
        IngressMetadata::Kafka {
            topic,
            partition,
            offset,
            ..
        } => Some(format!("kafka:{topic}/{partition}@{offset}")),
        IngressMetadata::Kinesis {
            stream,
            shard_id,
            sequence_number,
            ..
        } => Some(format!("kinesis:{stream}/{shard_id}@{sequence_number}")),
        IngressMetadata::File { path, line } => Some(format!("file:{path}:{line}")),
        IngressMetadata::Generator { sequence } => Some(format!("generator:{sequence}")),
    }
}

/// The built-in function behind [`DEAD_LETTER_FUNCTION`]: forwards each
/// message's value to the egress named by its id. Stateless.
pub(crate) fn function_entry() -> Result<Arc<FunctionEntry>, String> {
    let function_type = TypeName::parse(DEAD_LETTER_FUNCTION).map_err(|e| e.to_string())?;
    let spec = FunctionSpec::builder(function_type)
        .with_function(forward)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(FunctionEntry::of(&spec)))
}

fn forward(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let egress = TypeName::parse(&ctx.self_address().id)?;
    ctx.send_egress(EgressMessage::new(egress, message.value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka_meta() -> IngressMetadata {
        IngressMetadata::Kafka {
            topic: "names".into(),
            partition: 2,
            offset: 41,
            timestamp_ms: Some(7),
            headers: vec![
                ("trace".into(), Some(b"t-1".to_vec())),
                ("empty".into(), None),
            ],
        }
    }

    fn plan(destination: Destination) -> DeadLetterPlan {
        DeadLetterPlan {
            egress: TypeName::parse("example/dlq").unwrap(),
            destination,
        }
    }

    fn header<'r>(record: &'r KafkaProducerRecord, key: &str) -> Option<&'r [u8]> {
        record
            .headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_slice())
    }

    #[test]
    fn kafka_dead_letter_keeps_the_record_and_says_why_and_where() {
        let meta = kafka_meta();
        let value = plan(Destination::Kafka {
            topic: "names.dlq".into(),
        })
        .record(&BadRecord {
            ingress: "example/names",
            why: "it has no value (a tombstone)",
            key: Some(b"alice"),
            value: None,
            metadata: &meta,
        });
        let r = KafkaProducerRecord::from_typed_value(&value).unwrap();
        assert_eq!(r.topic, "names.dlq");
        assert_eq!(r.key, "alice");
        assert!(r.value_bytes.is_empty());
        assert_eq!(header(&r, "trace"), Some(&b"t-1"[..]));
        assert_eq!(header(&r, "empty"), Some(&b""[..]));
        assert_eq!(
            header(&r, REASON_HEADER),
            Some(&b"it has no value (a tombstone)"[..])
        );
        assert_eq!(header(&r, INGRESS_HEADER), Some(&b"example/names"[..]));
        assert_eq!(header(&r, SOURCE_HEADER), Some(&b"kafka:names/2@41"[..]));
        assert_eq!(header(&r, KEY_HEADER), None);
    }

    #[test]
    fn a_key_that_is_not_utf8_survives_in_a_header() {
        let meta = kafka_meta();
        let value = plan(Destination::File {
            label: "bad".into(),
        })
        .record(&BadRecord {
            ingress: "example/names",
            why: "its key is not UTF-8",
            key: Some(&[0xff, 0x00]),
            value: Some(b"v"),
            metadata: &meta,
        });
        let r = KafkaProducerRecord::from_typed_value(&value).unwrap();
        assert_eq!((r.topic.as_str(), r.key.as_str()), ("bad", ""));
        assert_eq!(r.value_bytes, b"v");
        assert_eq!(header(&r, KEY_HEADER), Some(&[0xff, 0x00][..]));
    }

    #[test]
    fn kinesis_dead_letter_keeps_the_data_and_a_usable_partition_key() {
        let meta = IngressMetadata::Kinesis {
            stream: "s".into(),
            shard_id: "shardId-0".into(),
            sequence_number: "9".into(),
            approximate_arrival_ms: None,
            sub_sequence_number: None,
            explicit_hash_key: None,
        };
        let p = plan(Destination::Kinesis {
            stream: "dlq".into(),
        });
        let bad = |key: Option<&'static [u8]>| {
            let v = p.record(&BadRecord {
                ingress: "example/in",
                why: "its key is empty",
                key,
                value: Some(b"data"),
                metadata: &meta,
            });
            KinesisEgressRecord::from_typed_value(&v).unwrap()
        };
        let r = bad(Some(b""));
        assert_eq!(
            (r.stream.as_str(), r.partition_key.as_str()),
            ("dlq", "example/in")
        );
        assert_eq!(r.value_bytes, b"data");
        assert_eq!(bad(Some(b"k")).partition_key, "k");
    }

    #[test]
    fn remote_dead_letters_fit_their_egress() {
        let address = Address::new(TypeName::parse("remote/fn").unwrap(), "a");
        let argument = TypedValue::new("io.statefun.types/string", b"\n\x05hello".to_vec());
        let to = |destination| plan(destination).remote(&address, "timed out", argument.clone());
        let file = to(Destination::File { label: "x".into() });
        assert_eq!(file.value, argument);
        let kafka = to(Destination::Kafka {
            topic: "dead".into(),
        });
        assert_eq!(kafka.egress.as_str(), "example/dlq");
        let r = KafkaProducerRecord::from_typed_value(&kafka.value).unwrap();
        assert_eq!(
            (r.topic.as_str(), r.key.as_str(), r.value_bytes.as_slice()),
            ("dead", "a", &argument.value[..])
        );
        assert_eq!(header(&r, REASON_HEADER), Some(&b"timed out"[..]));
        assert_eq!(header(&r, FUNCTION_HEADER), Some(&b"remote/fn/a"[..]));
        assert_eq!(
            header(&r, TYPENAME_HEADER),
            Some(&b"io.statefun.types/string"[..])
        );
        let kinesis = to(Destination::Kinesis {
            stream: "dead".into(),
        });
        let r = KinesisEgressRecord::from_typed_value(&kinesis.value).unwrap();
        assert_eq!((r.stream.as_str(), r.partition_key.as_str()), ("dead", "a"));
    }

    #[test]
    fn the_forwarding_function_exists() {
        let entry = function_entry().unwrap();
        assert_eq!(entry.function_type.as_str(), DEAD_LETTER_FUNCTION);
        assert!(entry.specs.is_empty());
    }
}
