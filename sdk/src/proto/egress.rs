//! StateFun's egress records (package `io.statefun.sdk.egress`).
//!
//! Build them with [`crate::KafkaEgressMessage`] and
//! [`crate::KinesisEgressMessage`]; the connectors decode them with
//! [`KafkaProducerRecord::from_typed_value`] and
//! [`KinesisEgressRecord::from_typed_value`].

use prost::Message as _;

use crate::{SdkError, TypedValue};

/// The type name of a [`KafkaProducerRecord`] inside a [`TypedValue`].
pub const KAFKA_PRODUCER_RECORD_TYPENAME: &str =
    "type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord";

/// The type name of a [`KinesisEgressRecord`] inside a [`TypedValue`].
pub const KINESIS_EGRESS_RECORD_TYPENAME: &str =
    "type.googleapis.com/io.statefun.sdk.egress.KinesisEgressRecord";

/// A record for a Kafka egress.
///
/// Fields 1–3 are StateFun's `KafkaProducerRecord`; `headers` (100) and
/// `partition` (101) are a compatible statefun-rs extension that the official
/// SDKs never set and ignore when reading.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KafkaProducerRecord {
    /// The record key; empty means no key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The record value.
    #[prost(bytes = "vec", tag = "2")]
    pub value_bytes: Vec<u8>,
    /// The topic to write to.
    #[prost(string, tag = "3")]
    pub topic: String,
    /// Record headers, in order (statefun-rs extension).
    #[prost(message, repeated, tag = "100")]
    pub headers: Vec<kafka_producer_record::Header>,
    /// An explicit partition; `None` lets the producer's partitioner choose
    /// (statefun-rs extension).
    #[prost(int32, optional, tag = "101")]
    pub partition: Option<i32>,
}

/// Messages nested in [`KafkaProducerRecord`].
pub mod kafka_producer_record {
    /// A Kafka record header:
    /// `message Header { string key = 1; bytes value = 2; }`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Header {
        /// The header key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// The header value.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
}

/// A record for a Kinesis egress: StateFun's `KinesisEgressRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KinesisEgressRecord {
    /// The partition key.
    #[prost(string, tag = "1")]
    pub partition_key: String,
    /// The record data.
    #[prost(bytes = "vec", tag = "2")]
    pub value_bytes: Vec<u8>,
    /// The stream to write to.
    #[prost(string, tag = "3")]
    pub stream: String,
    /// An explicit hash key; empty means none.
    #[prost(string, tag = "4")]
    pub explicit_hash_key: String,
}

pub(crate) fn decode_typed<M: prost::Message + Default>(
    value: &TypedValue,
    expected: &str,
) -> Result<M, SdkError> {
    if value.typename != expected {
        return Err(SdkError::TypeMismatch {
            expected: expected.to_string(),
            found: value.typename.to_string(),
        });
    }
    M::decode(value.value.as_slice()).map_err(|e| SdkError::Decode {
        typename: expected.to_string(),
        reason: e.to_string(),
    })
}

impl KafkaProducerRecord {
    /// Decodes the record inside an egress value; `TypeMismatch` when the
    /// value is not a `KafkaProducerRecord`.
    pub fn from_typed_value(value: &TypedValue) -> Result<Self, SdkError> {
        decode_typed(value, KAFKA_PRODUCER_RECORD_TYPENAME)
    }

    /// Wraps the record in a [`TypedValue`] of type
    /// [`KAFKA_PRODUCER_RECORD_TYPENAME`].
    pub fn to_typed_value(&self) -> TypedValue {
        TypedValue::new(KAFKA_PRODUCER_RECORD_TYPENAME, self.encode_to_vec())
    }
}

impl KinesisEgressRecord {
    /// Decodes the record inside an egress value; `TypeMismatch` when the
    /// value is not a `KinesisEgressRecord`.
    pub fn from_typed_value(value: &TypedValue) -> Result<Self, SdkError> {
        decode_typed(value, KINESIS_EGRESS_RECORD_TYPENAME)
    }

    /// Wraps the record in a [`TypedValue`] of type
    /// [`KINESIS_EGRESS_RECORD_TYPENAME`].
    pub fn to_typed_value(&self) -> TypedValue {
        TypedValue::new(KINESIS_EGRESS_RECORD_TYPENAME, self.encode_to_vec())
    }
}
