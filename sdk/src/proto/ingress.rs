//! Ingress records with their metadata, for remote functions (package
//! `statefun_rs.v1`, a statefun-rs extension).
//!
//! StateFun's remote protocol has no field for where a message came from, so a
//! remote function cannot see a Kafka record's headers or a Kinesis record's
//! shard. An ingress declared with `remoteMetadata: wrap` delivers each record
//! to its *remote* targets as an [`IngressRecord`]: the value as the ingress
//! typed it, plus the record's [`IngressMetadata`]. The message travels as an
//! ordinary protobuf [`TypedValue`] of type [`INGRESS_RECORD_TYPENAME`] — the
//! name the official SDKs give a protobuf message — so the SDKs pass it through
//! untouched and a function reads it with the SDK's protobuf support, compiled
//! from `sdk/proto/statefun_rs/v1/ingress_record.proto`. Nothing changes for
//! ingresses that do not ask, nor for Rust functions (they read metadata with
//! `Context::metadata`).

use prost::Message as _;

use crate::{IngressMetadata, SdkError, TypedValue};

/// The type name of an [`IngressRecord`] inside a [`TypedValue`].
pub const INGRESS_RECORD_TYPENAME: &str = "type.googleapis.com/statefun_rs.v1.IngressRecord";

/// An ingress record with where it came from (`statefun_rs.v1.IngressRecord`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IngressRecord {
    /// The ingress id, `namespace/name`.
    #[prost(string, tag = "1")]
    pub ingress: String,
    /// The `valueType` of the entry the record was routed by.
    #[prost(string, tag = "2")]
    pub value_typename: String,
    /// The record's value, as a function without metadata receives it.
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
    /// Where the record came from.
    #[prost(oneof = "ingress_record::Source", tags = "10, 11, 12, 13")]
    pub source: Option<ingress_record::Source>,
}

/// Messages nested in, and used by, [`IngressRecord`].
pub mod ingress_record {
    /// Where a record came from (`oneof source`).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Source {
        /// A Kafka record.
        #[prost(message, tag = "10")]
        Kafka(KafkaSource),
        /// A Kinesis record.
        #[prost(message, tag = "11")]
        Kinesis(KinesisSource),
        /// A line of a file.
        #[prost(message, tag = "12")]
        File(FileSource),
        /// A generated record.
        #[prost(message, tag = "13")]
        Generator(GeneratorSource),
    }

    /// A Kafka record.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KafkaSource {
        /// Topic name.
        #[prost(string, tag = "1")]
        pub topic: String,
        /// Partition number.
        #[prost(int32, tag = "2")]
        pub partition: i32,
        /// Offset within the partition.
        #[prost(int64, tag = "3")]
        pub offset: i64,
        /// Milliseconds since the Unix epoch, when the broker gave one.
        #[prost(int64, optional, tag = "4")]
        pub timestamp_ms: Option<i64>,
        /// Headers in record order.
        #[prost(message, repeated, tag = "5")]
        pub headers: Vec<Header>,
    }

    /// A Kafka record header.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Header {
        /// The header key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// The value; `None` for a header with a null value.
        #[prost(bytes = "vec", optional, tag = "2")]
        pub value: Option<Vec<u8>>,
    }

    /// A Kinesis record.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KinesisSource {
        /// The stream name, or its ARN when the ingress names it by ARN.
        #[prost(string, tag = "1")]
        pub stream: String,
        /// The shard id.
        #[prost(string, tag = "2")]
        pub shard_id: String,
        /// The record's sequence number.
        #[prost(string, tag = "3")]
        pub sequence_number: String,
        /// Approximate arrival time, milliseconds since the Unix epoch.
        #[prost(int64, optional, tag = "4")]
        pub approximate_arrival_ms: Option<i64>,
        /// The position inside a KPL-aggregated record; `None` for a plain record.
        #[prost(uint64, optional, tag = "5")]
        pub sub_sequence_number: Option<u64>,
        /// The sub-record's explicit hash key, when the producer set one.
        #[prost(string, optional, tag = "6")]
        pub explicit_hash_key: Option<String>,
    }

    /// A line of a file ingress.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileSource {
        /// The path (`-` for stdin).
        #[prost(string, tag = "1")]
        pub path: String,
        /// The 1-based line number.
        #[prost(uint64, tag = "2")]
        pub line: u64,
    }

    /// A record of the generator ingress.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GeneratorSource {
        /// The record's global sequence number.
        #[prost(uint64, tag = "1")]
        pub sequence: u64,
    }
}

impl IngressRecord {
    /// The record `value` of ingress `ingress`, with where it came from.
    ///
    /// ```
    /// use statefun_sdk::proto::ingress::{IngressRecord, INGRESS_RECORD_TYPENAME};
    /// use statefun_sdk::{IngressMetadata, TypedValue};
    ///
    /// let value = TypedValue::new("io.statefun.types/string", b"hi".to_vec());
    /// let metadata = IngressMetadata::File { path: "in.txt".into(), line: 3 };
    /// let wrapped = IngressRecord::of("shop/lines", &value, &metadata).to_typed_value();
    /// assert_eq!(wrapped.typename, INGRESS_RECORD_TYPENAME);
    /// let back = IngressRecord::from_typed_value(&wrapped).unwrap();
    /// assert_eq!(back.value, b"hi");
    /// assert_eq!(back.metadata(), Some(metadata));
    /// ```
    pub fn of(ingress: &str, value: &TypedValue, metadata: &IngressMetadata) -> Self {
        use ingress_record::*;
        let source = match metadata {
            IngressMetadata::Kafka {
                topic,
                partition,
                offset,
                timestamp_ms,
                headers,
            } => Source::Kafka(KafkaSource {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                timestamp_ms: *timestamp_ms,
                headers: headers
                    .iter()
                    .map(|(key, value)| Header {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            }),
            IngressMetadata::Kinesis {
                stream,
                shard_id,
                sequence_number,
                approximate_arrival_ms,
                sub_sequence_number,
                explicit_hash_key,
            } => Source::Kinesis(KinesisSource {
                stream: stream.clone(),
                shard_id: shard_id.clone(),
                sequence_number: sequence_number.clone(),
                approximate_arrival_ms: *approximate_arrival_ms,
                sub_sequence_number: *sub_sequence_number,
                explicit_hash_key: explicit_hash_key.clone(),
            }),
            IngressMetadata::File { path, line } => Source::File(FileSource {
                path: path.clone(),
                line: *line,
            }),
            IngressMetadata::Generator { sequence } => Source::Generator(GeneratorSource {
                sequence: *sequence,
            }),
        };
        IngressRecord {
            ingress: ingress.to_owned(),
            value_typename: value.typename.to_string(),
            value: value.value.clone(),
            source: Some(source),
        }
    }

    /// The metadata this record carries, as [`IngressMetadata`]; `None` when
    /// it names no source (a record made by some other producer).
    pub fn metadata(&self) -> Option<IngressMetadata> {
        use ingress_record::Source;
        Some(match self.source.as_ref()? {
            Source::Kafka(k) => IngressMetadata::Kafka {
                topic: k.topic.clone(),
                partition: k.partition,
                offset: k.offset,
                timestamp_ms: k.timestamp_ms,
                headers: k
                    .headers
                    .iter()
                    .map(|h| (h.key.clone(), h.value.clone()))
                    .collect(),
            },
            Source::Kinesis(k) => IngressMetadata::Kinesis {
                stream: k.stream.clone(),
                shard_id: k.shard_id.clone(),
                sequence_number: k.sequence_number.clone(),
                approximate_arrival_ms: k.approximate_arrival_ms,
                sub_sequence_number: k.sub_sequence_number,
                explicit_hash_key: k.explicit_hash_key.clone(),
            },
            Source::File(f) => IngressMetadata::File {
                path: f.path.clone(),
                line: f.line,
            },
            Source::Generator(g) => IngressMetadata::Generator {
                sequence: g.sequence,
            },
        })
    }

    /// Decodes the record inside a message; `TypeMismatch` when the value is
    /// not an `IngressRecord`.
    pub fn from_typed_value(value: &TypedValue) -> Result<Self, SdkError> {
        super::egress::decode_typed(value, INGRESS_RECORD_TYPENAME)
    }

    /// Wraps the record in a [`TypedValue`] of type [`INGRESS_RECORD_TYPENAME`].
    pub fn to_typed_value(&self) -> TypedValue {
        TypedValue::new(INGRESS_RECORD_TYPENAME, self.encode_to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(metadata: IngressMetadata) {
        let value = TypedValue::new("example/Order", vec![0, 1, 2, 255]);
        let wrapped = IngressRecord::of("shop/orders", &value, &metadata).to_typed_value();
        let record = IngressRecord::from_typed_value(&wrapped).unwrap();
        assert_eq!(record.ingress, "shop/orders");
        assert_eq!(record.value_typename, "example/Order");
        assert_eq!(record.value, vec![0, 1, 2, 255]);
        assert_eq!(record.metadata(), Some(metadata));
    }

    #[test]
    fn every_kind_of_metadata_survives_the_wire() {
        round_trip(IngressMetadata::Kafka {
            topic: "orders".into(),
            partition: 3,
            offset: 1 << 40,
            timestamp_ms: Some(1_700_000_000_123),
            headers: vec![
                ("trace".into(), Some(b"abc".to_vec())),
                ("empty".into(), Some(Vec::new())),
                ("null".into(), None),
                ("trace".into(), Some(b"again".to_vec())),
            ],
        });
        round_trip(IngressMetadata::Kafka {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            headers: Vec::new(),
        });
        round_trip(IngressMetadata::Kinesis {
            stream: "arn:aws:kinesis:us-east-1:000000000000:stream/s".into(),
            shard_id: "shardId-000000000001".into(),
            sequence_number: "49590338271490256608559692538361571095921575989136588898".into(),
            approximate_arrival_ms: Some(5),
            sub_sequence_number: None,
            explicit_hash_key: None,
        });
        round_trip(IngressMetadata::Kinesis {
            stream: "s".into(),
            shard_id: "shardId-000000000000".into(),
            sequence_number: "1".into(),
            approximate_arrival_ms: None,
            sub_sequence_number: Some(0),
            explicit_hash_key: Some("340282366920938463463374607431768211455".into()),
        });
        round_trip(IngressMetadata::File {
            path: "-".into(),
            line: 42,
        });
        round_trip(IngressMetadata::Generator { sequence: 7 });
    }

    #[test]
    fn a_header_with_an_empty_value_is_not_a_null_header() {
        // proto3 `optional bytes` keeps presence: an empty value is sent.
        let metadata = IngressMetadata::Kafka {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            headers: vec![("a".into(), Some(Vec::new())), ("b".into(), None)],
        };
        let record = IngressRecord::of("a/b", &TypedValue::new("a/b", Vec::new()), &metadata);
        let back = IngressRecord::decode(record.encode_to_vec().as_slice()).unwrap();
        let Some(ingress_record::Source::Kafka(k)) = back.source else {
            panic!("a Kafka source")
        };
        assert_eq!(k.headers[0].value, Some(Vec::new()));
        assert_eq!(k.headers[1].value, None);
    }

    #[test]
    fn another_type_is_a_type_mismatch() {
        let err = IngressRecord::from_typed_value(&TypedValue::new("a/b", Vec::new()));
        assert!(matches!(err, Err(SdkError::TypeMismatch { .. })));
    }

    /// The `.proto` shipped for users names the same fields with the same
    /// numbers as the structs above, which are what goes on the wire.
    #[test]
    fn the_shipped_proto_matches_the_wire_format() {
        let proto = include_str!("../../proto/statefun_rs/v1/ingress_record.proto");
        let fields: Vec<(String, String, u32)> = {
            let mut message = String::new();
            let mut out = Vec::new();
            for line in proto.lines().map(str::trim) {
                if line.starts_with("//") || line.starts_with("syntax") {
                    continue;
                }
                if let Some(rest) = line.strip_prefix("message ") {
                    message = rest.trim_end_matches(" {").to_owned();
                } else if let Some((decl, number)) = line.split_once(" = ") {
                    let name = decl.split_whitespace().last().unwrap().to_owned();
                    let number = number.trim_end_matches(';').parse().unwrap();
                    out.push((message.clone(), name, number));
                }
            }
            out
        };
        // Every field of every message, found by encoding a message with only
        // that field set and reading the tag back.
        let tag = |bytes: Vec<u8>| -> u32 {
            let mut buf = bytes.as_slice();
            (prost::encoding::decode_varint(&mut buf).unwrap() >> 3) as u32
        };
        use ingress_record::*;
        let expected: Vec<(&str, &str, u32)> = vec![
            (
                "IngressRecord",
                "ingress",
                tag(IngressRecord {
                    ingress: "x".into(),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "IngressRecord",
                "value_typename",
                tag(IngressRecord {
                    value_typename: "x".into(),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "IngressRecord",
                "value",
                tag(IngressRecord {
                    value: vec![1],
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "IngressRecord",
                "kafka",
                tag(IngressRecord {
                    source: Some(Source::Kafka(Default::default())),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "IngressRecord",
                "kinesis",
                tag(IngressRecord {
                    source: Some(Source::Kinesis(Default::default())),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "IngressRecord",
                "file",
                tag(IngressRecord {
                    source: Some(Source::File(Default::default())),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "IngressRecord",
                "generator",
                tag(IngressRecord {
                    source: Some(Source::Generator(Default::default())),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KafkaSource",
                "topic",
                tag(KafkaSource {
                    topic: "x".into(),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KafkaSource",
                "partition",
                tag(KafkaSource {
                    partition: 1,
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KafkaSource",
                "offset",
                tag(KafkaSource {
                    offset: 1,
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KafkaSource",
                "timestamp_ms",
                tag(KafkaSource {
                    timestamp_ms: Some(0),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KafkaSource",
                "headers",
                tag(KafkaSource {
                    headers: vec![Header::default()],
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "Header",
                "key",
                tag(Header {
                    key: "x".into(),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "Header",
                "value",
                tag(Header {
                    value: Some(Vec::new()),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KinesisSource",
                "stream",
                tag(KinesisSource {
                    stream: "x".into(),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KinesisSource",
                "shard_id",
                tag(KinesisSource {
                    shard_id: "x".into(),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KinesisSource",
                "sequence_number",
                tag(KinesisSource {
                    sequence_number: "x".into(),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KinesisSource",
                "approximate_arrival_ms",
                tag(KinesisSource {
                    approximate_arrival_ms: Some(0),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KinesisSource",
                "sub_sequence_number",
                tag(KinesisSource {
                    sub_sequence_number: Some(0),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "KinesisSource",
                "explicit_hash_key",
                tag(KinesisSource {
                    explicit_hash_key: Some(String::new()),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "FileSource",
                "path",
                tag(FileSource {
                    path: "x".into(),
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "FileSource",
                "line",
                tag(FileSource {
                    line: 1,
                    ..Default::default()
                }
                .encode_to_vec()),
            ),
            (
                "GeneratorSource",
                "sequence",
                tag(GeneratorSource { sequence: 1 }.encode_to_vec()),
            ),
        ];
        let expected: Vec<(String, String, u32)> = expected
            .into_iter()
            .map(|(m, f, n)| (m.to_owned(), f.to_owned(), n))
            .collect();
        assert_eq!(fields, expected);
    }
}
