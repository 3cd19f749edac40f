//! Building egress messages, in particular StateFun's Kafka and Kinesis
//! records.

use crate::proto::egress::{
    kafka_producer_record::Header, KafkaProducerRecord, KinesisEgressRecord,
};
use crate::types::Type;
use crate::{EgressMessage, SdkError, TypeName, TypedValue};

pub use crate::proto::egress::{KAFKA_PRODUCER_RECORD_TYPENAME, KINESIS_EGRESS_RECORD_TYPENAME};

impl EgressMessage {
    /// A message for the egress `egress`.
    pub fn new(egress: TypeName, value: TypedValue) -> Self {
        EgressMessage { egress, value }
    }

    /// A message for the egress `egress` holding a value of type `ty` (for the
    /// file egress, or any egress that takes arbitrary values).
    ///
    /// # Panics
    ///
    /// When `ty` fails to encode the value, which only a [`crate::JsonType`]
    /// can do; build with [`Type::try_encode`] and [`EgressMessage::new`] to get
    /// an error instead.
    pub fn of<T: Type>(egress: TypeName, ty: &T, value: &T::Value) -> Self {
        EgressMessage::new(
            egress,
            TypedValue::new(ty.type_name().as_str(), ty.encode(value)),
        )
    }
}

fn encode_value<T: Type>(ty: &T, value: &T::Value) -> Result<Vec<u8>, SdkError> {
    ty.try_encode(value)
}

/// Builds an [`EgressMessage`] holding a `KafkaProducerRecord`, the record
/// type of Kafka egresses. A topic and a value are required.
///
/// ```
/// use statefun_sdk::{KafkaEgressMessage, TypeName};
/// let message = KafkaEgressMessage::for_egress(TypeName::parse("example/out").unwrap())
///     .with_topic("greetings")
///     .with_key("alice")
///     .with_utf8_value("Hello alice")
///     .with_header("trace", "t-1")
///     .build()
///     .unwrap();
/// assert_eq!(message.value.typename, statefun_sdk::egress::KAFKA_PRODUCER_RECORD_TYPENAME);
/// ```
#[derive(Debug)]
#[must_use]
pub struct KafkaEgressMessage {
    egress: TypeName,
    topic: Option<String>,
    key: String,
    value: Option<Result<Vec<u8>, SdkError>>,
    headers: Vec<Header>,
    partition: Option<i32>,
}

impl KafkaEgressMessage {
    /// Starts a record for the Kafka egress `egress`.
    pub fn for_egress(egress: TypeName) -> Self {
        KafkaEgressMessage {
            egress,
            topic: None,
            key: String::new(),
            value: None,
            headers: Vec::new(),
            partition: None,
        }
    }

    /// The topic to write to (required).
    pub fn with_topic(mut self, topic: &str) -> Self {
        self.topic = Some(topic.to_string());
        self
    }

    /// The record key (UTF-8, as in StateFun); no key when not set.
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = key.to_string();
        self
    }

    /// The record value as raw bytes.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(Ok(value.into()));
        self
    }

    /// The record value as UTF-8 text.
    pub fn with_utf8_value(self, value: &str) -> Self {
        self.with_value(value.as_bytes())
    }

    /// The record value in the encoding of `ty` (for a primitive that is the
    /// StateFun wrapper message, as the official SDKs' `value_type` does).
    pub fn with_value_of<T: Type>(mut self, ty: &T, value: &T::Value) -> Self {
        self.value = Some(encode_value(ty, value));
        self
    }

    /// Adds a record header (statefun-rs extension; repeated keys are kept).
    pub fn with_header(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header {
            key: key.to_string(),
            value: value.into(),
        });
        self
    }

    /// Writes to this partition instead of the partitioner's choice
    /// (statefun-rs extension).
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The egress message; `SdkError::Incomplete` without a topic or a value.
    pub fn build(self) -> Result<EgressMessage, SdkError> {
        let topic = match self.topic {
            Some(t) if !t.is_empty() => t,
            _ => {
                return Err(SdkError::Incomplete(format!(
                    "Kafka egress message for `{}` has no topic; call with_topic",
                    self.egress
                )))
            }
        };
        let value_bytes = self.value.ok_or_else(|| {
            SdkError::Incomplete(format!(
                "Kafka egress message for `{}` has no value; call with_value",
                self.egress
            ))
        })??;
        let record = KafkaProducerRecord {
            key: self.key,
            value_bytes,
            topic,
            headers: self.headers,
            partition: self.partition,
        };
        Ok(EgressMessage::new(self.egress, record.to_typed_value()))
    }
}

/// Builds an [`EgressMessage`] holding a `KinesisEgressRecord`, the record
/// type of Kinesis egresses. A stream, a partition key and a value are
/// required.
///
/// ```
/// use statefun_sdk::{types, KinesisEgressMessage, TypeName};
/// let message = KinesisEgressMessage::for_egress(TypeName::parse("example/out").unwrap())
///     .with_stream("greetings")
///     .with_partition_key("alice")
///     .with_value_of(&types::STRING, &"Hello alice".to_string())
///     .build()
///     .unwrap();
/// assert_eq!(message.value.typename, statefun_sdk::egress::KINESIS_EGRESS_RECORD_TYPENAME);
/// ```
#[derive(Debug)]
#[must_use]
pub struct KinesisEgressMessage {
    egress: TypeName,
    stream: Option<String>,
    partition_key: Option<String>,
    explicit_hash_key: String,
    value: Option<Result<Vec<u8>, SdkError>>,
}

impl KinesisEgressMessage {
    /// Starts a record for the Kinesis egress `egress`.
    pub fn for_egress(egress: TypeName) -> Self {
        KinesisEgressMessage {
            egress,
            stream: None,
            partition_key: None,
            explicit_hash_key: String::new(),
            value: None,
        }
    }

    /// The stream to write to (required).
    pub fn with_stream(mut self, stream: &str) -> Self {
        self.stream = Some(stream.to_string());
        self
    }

    /// The partition key (required).
    pub fn with_partition_key(mut self, key: &str) -> Self {
        self.partition_key = Some(key.to_string());
        self
    }

    /// An explicit hash key, overriding the partition key's hash.
    pub fn with_explicit_hash_key(mut self, key: &str) -> Self {
        self.explicit_hash_key = key.to_string();
        self
    }

    /// The record data as raw bytes.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(Ok(value.into()));
        self
    }

    /// The record data as UTF-8 text.
    pub fn with_utf8_value(self, value: &str) -> Self {
        self.with_value(value.as_bytes())
    }

    /// The record data in the encoding of `ty`.
    pub fn with_value_of<T: Type>(mut self, ty: &T, value: &T::Value) -> Self {
        self.value = Some(encode_value(ty, value));
        self
    }

    /// The egress message; `SdkError::Incomplete` without a stream, a
    /// partition key or a value.
    pub fn build(self) -> Result<EgressMessage, SdkError> {
        let missing = |what: &str, call: &str| {
            SdkError::Incomplete(format!(
                "Kinesis egress message for `{}` has no {what}; call {call}",
                self.egress
            ))
        };
        let stream = match self.stream {
            Some(s) if !s.is_empty() => s,
            _ => return Err(missing("stream", "with_stream")),
        };
        let partition_key = match self.partition_key {
            Some(k) if !k.is_empty() => k,
            _ => return Err(missing("partition key", "with_partition_key")),
        };
        let value_bytes = match self.value {
            Some(v) => v?,
            None => return Err(missing("value", "with_value")),
        };
        let record = KinesisEgressRecord {
            partition_key,
            value_bytes,
            stream,
            explicit_hash_key: self.explicit_hash_key,
        };
        Ok(EgressMessage::new(self.egress, record.to_typed_value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;

    fn egress() -> TypeName {
        TypeName::parse("example/out").unwrap()
    }

    #[test]
    fn kafka_record_bytes_match_statefun() {
        // KafkaProducerRecord(key="k", value_bytes=b"v", topic="t") from the
        // official Python classes.
        let m = KafkaEgressMessage::for_egress(egress())
            .with_topic("t")
            .with_key("k")
            .with_value(b"v".to_vec())
            .build()
            .unwrap();
        assert_eq!(m.egress, egress());
        assert_eq!(m.value.typename, KAFKA_PRODUCER_RECORD_TYPENAME);
        assert!(m.value.has_value);
        assert_eq!(
            m.value.value,
            [0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x1a, 0x01, b't']
        );
    }

    #[test]
    fn kafka_extension_fields() {
        // Headers are field 100, the partition field 101; the official Python
        // classes read these bytes as key="k", value_bytes=b"v", topic="t".
        let m = KafkaEgressMessage::for_egress(egress())
            .with_topic("t")
            .with_key("k")
            .with_utf8_value("v")
            .with_header("h", "x")
            .with_partition(3)
            .build()
            .unwrap();
        assert_eq!(
            m.value.value,
            [
                0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x1a, 0x01, b't', 0xa2, 0x06, 0x06, 0x0a, 0x01,
                b'h', 0x12, 0x01, b'x', 0xa8, 0x06, 0x03
            ]
        );
        let record = KafkaProducerRecord::from_typed_value(&m.value).unwrap();
        assert_eq!(record.headers[0].key, "h");
        assert_eq!(record.headers[0].value, b"x");
        assert_eq!(record.partition, Some(3));
        // Without them the record is StateFun's: no key, no partition.
        let m = KafkaEgressMessage::for_egress(egress())
            .with_topic("t")
            .with_value_of(&types::INT, &7)
            .build()
            .unwrap();
        let record = KafkaProducerRecord::from_typed_value(&m.value).unwrap();
        assert_eq!(record.key, "");
        assert_eq!(record.partition, None);
        assert_eq!(record.value_bytes, [0x0d, 7, 0, 0, 0]);
    }

    #[test]
    fn kafka_requires_topic_and_value() {
        let err = KafkaEgressMessage::for_egress(egress())
            .with_utf8_value("v")
            .build()
            .unwrap_err();
        assert!(matches!(err, SdkError::Incomplete(_)));
        assert!(err.to_string().contains("topic"), "{err}");
        assert!(err.to_string().contains("example/out"), "{err}");
        let err = KafkaEgressMessage::for_egress(egress())
            .with_topic("t")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("value"), "{err}");
        assert!(KafkaEgressMessage::for_egress(egress())
            .with_topic("")
            .with_utf8_value("v")
            .build()
            .is_err());
    }

    #[test]
    fn kinesis_record_bytes_match_statefun() {
        // KinesisEgressRecord(partition_key="p", value_bytes=b"v", stream="s",
        // explicit_hash_key="h") from the official Python classes.
        let m = KinesisEgressMessage::for_egress(egress())
            .with_stream("s")
            .with_partition_key("p")
            .with_explicit_hash_key("h")
            .with_utf8_value("v")
            .build()
            .unwrap();
        assert_eq!(m.value.typename, KINESIS_EGRESS_RECORD_TYPENAME);
        assert_eq!(
            m.value.value,
            [0x0a, 0x01, b'p', 0x12, 0x01, b'v', 0x1a, 0x01, b's', 0x22, 0x01, b'h']
        );
        let record = KinesisEgressRecord::from_typed_value(&m.value).unwrap();
        assert_eq!(record.stream, "s");
        assert!(matches!(
            KafkaProducerRecord::from_typed_value(&m.value),
            Err(SdkError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn kinesis_requires_stream_key_and_value() {
        let full = || {
            KinesisEgressMessage::for_egress(egress())
                .with_stream("s")
                .with_partition_key("p")
                .with_value(vec![1])
        };
        assert!(full().build().is_ok());
        let err = full().with_stream("").build().unwrap_err();
        assert!(err.to_string().contains("stream"), "{err}");
        let err = full().with_partition_key("").build().unwrap_err();
        assert!(err.to_string().contains("partition key"), "{err}");
        let err = KinesisEgressMessage::for_egress(egress())
            .with_stream("s")
            .with_partition_key("p")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("value"), "{err}");
    }

    #[test]
    fn egress_message_of_a_type() {
        let m = EgressMessage::of(egress(), &types::STRING, &"hello".to_string());
        assert_eq!(m.value.typename, types::STRING_TYPENAME);
        assert_eq!(m.value.value, b"\x0a\x05hello");
    }
}
