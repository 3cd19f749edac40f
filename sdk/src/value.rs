//! The values that travel through the runtime: typed values, messages,
//! egress messages and the metadata of the ingress record behind a message.

use serde::{Deserialize, Serialize};

use crate::typename::{Address, TypeName};
use crate::Symbol;

/// A value with its StateFun type name, as in StateFun's `TypedValue` proto
/// (`typename = 1`, `has_value = 2`, `value = 3`).
///
/// `value` holds the type's wire encoding: for `io.statefun.types/string` that
/// is the protobuf `StringWrapper`, not raw UTF-8. The type name is a
/// [`Symbol`]: every record of an ingress carries the same one, so it is
/// interned rather than allocated per record (the protobuf encoding is
/// written by hand below for that reason; it is byte-for-byte what `prost`
/// derives for the proto).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypedValue {
    /// The type name, e.g. `io.statefun.types/string`.
    pub typename: Symbol,
    /// Whether a value is present (false for an absent state value).
    pub has_value: bool,
    /// The encoded bytes.
    pub value: Vec<u8>,
}

impl TypedValue {
    /// A present value of the given type.
    pub fn new(typename: impl Into<Symbol>, value: Vec<u8>) -> Self {
        TypedValue {
            typename: typename.into(),
            has_value: true,
            value,
        }
    }
}

impl prost::Message for TypedValue {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        use prost::encoding::{encode_key, encode_varint, WireType};
        if !self.typename.is_empty() {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(self.typename.len() as u64, buf);
            buf.put_slice(self.typename.as_bytes());
        }
        if self.has_value {
            prost::encoding::bool::encode(2, &self.has_value, buf);
        }
        if !self.value.is_empty() {
            prost::encoding::bytes::encode(3, &self.value, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let field = |mut e: prost::DecodeError, name| {
            e.push("TypedValue", name);
            e
        };
        match tag {
            1 => {
                let mut text = String::new();
                prost::encoding::string::merge(wire_type, &mut text, buf, ctx)
                    .map_err(|e| field(e, "typename"))?;
                self.typename = Symbol::from(text);
                Ok(())
            }
            2 => prost::encoding::bool::merge(wire_type, &mut self.has_value, buf, ctx)
                .map_err(|e| field(e, "has_value")),
            3 => prost::encoding::bytes::merge(wire_type, &mut self.value, buf, ctx)
                .map_err(|e| field(e, "value")),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{encoded_len_varint, key_len};
        let text = if self.typename.is_empty() {
            0
        } else {
            key_len(1) + encoded_len_varint(self.typename.len() as u64) + self.typename.len()
        };
        let flag = if self.has_value { key_len(2) + 1 } else { 0 };
        let value = if self.value.is_empty() {
            0
        } else {
            prost::encoding::bytes::encoded_len(3, &self.value)
        };
        text + flag + value
    }

    fn clear(&mut self) {
        *self = TypedValue::default();
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
        /// The record's sequence number (for a sub-record of a KPL aggregate,
        /// the aggregate's: all its sub-records share it).
        sequence_number: String,
        /// Approximate arrival time in milliseconds since the Unix epoch.
        approximate_arrival_ms: Option<i64>,
        /// The sub-record's index inside a KPL-aggregated record (0-based, as
        /// the KCL numbers them); `None` for a plain record. With
        /// `sequence_number` it identifies the sub-record, as producers using
        /// the KPL expect.
        #[serde(default)]
        sub_sequence_number: Option<u64>,
        /// The explicit hash key the producer gave a KPL sub-record; `None`
        /// when it gave none, and for plain records (`GetRecords` does not
        /// return one).
        #[serde(default)]
        explicit_hash_key: Option<String>,
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
