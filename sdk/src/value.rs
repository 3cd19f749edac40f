//! The values that travel through the runtime: typed values, messages,
//! egress messages and the metadata of the ingress record behind a message.

use serde::{Deserialize, Serialize};

use crate::typename::{Address, TypeName};

/// A value with its StateFun type name, as in StateFun's `TypedValue` proto
/// (`typename = 1`, `has_value = 2`, `value = 3`).
///
/// `value` holds the type's wire encoding: for `io.statefun.types/string` that
/// is the protobuf `StringWrapper`, not raw UTF-8.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, prost::Message)]
pub struct TypedValue {
    /// The type name, e.g. `io.statefun.types/string`.
    #[prost(string, tag = "1")]
    pub typename: String,
    /// Whether a value is present (false for an absent state value).
    #[prost(bool, tag = "2")]
    pub has_value: bool,
    /// The encoded bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
}

impl TypedValue {
    /// A present value of the given type.
    pub fn new(typename: impl Into<String>, value: Vec<u8>) -> Self {
        TypedValue {
            typename: typename.into(),
            has_value: true,
            value,
        }
    }
}

/// Where the ingress record behind a message came from.
///
/// Rust functions can read it with `Context::metadata`; messages sent by
/// functions carry none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngressMetadata {
    /// A Kafka record.
    Kafka {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Offset within the partition.
        offset: i64,
        /// Record timestamp in milliseconds since the Unix epoch, if the broker gave one.
        timestamp_ms: Option<i64>,
        /// Record headers in order; a header may have no value.
        headers: Vec<(String, Option<Vec<u8>>)>,
    },
    /// A Kinesis record.
    Kinesis {
        /// The stream name (or ARN when routed by ARN).
        stream: String,
        /// The shard id.
        shard_id: String,
        /// The record's sequence number.
        sequence_number: String,
        /// Approximate arrival time in milliseconds since the Unix epoch.
        approximate_arrival_ms: Option<i64>,
    },
    /// A line of a file ingress.
    File {
        /// The path the line was read from (`-` for stdin).
        path: String,
        /// The 1-based line number.
        line: u64,
    },
    /// A record of the generator ingress.
    Generator {
        /// The record's global sequence number.
        sequence: u64,
    },
}

/// A message addressed to a function instance: the target and a typed value.
///
/// Functions receive `Message`s and send them with `Context::send`; build them
/// with `MessageBuilder`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The function instance this message is for.
    pub target: Address,
    /// The payload.
    pub value: TypedValue,
}

/// A message for an egress: the egress id and a typed value.
///
/// Kafka and Kinesis egresses expect the value to be a `KafkaProducerRecord`
/// or `KinesisEgressRecord` (build those with `KafkaEgressMessage` /
/// `KinesisEgressMessage`); the file egress accepts any value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressMessage {
    /// The egress id, as declared in module.yaml (`spec.id`).
    pub egress: TypeName,
    /// The payload.
    pub value: TypedValue,
}
