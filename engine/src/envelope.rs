//! The unit of work that flows between operators: a message for one function instance.

use serde::{Deserialize, Serialize};
use statefun_connectors::RecordMetadata;
use statefun_sdk::{Address, IngressMetadata, TypedValue};

/// A message on its way to a function instance.
///
/// Ingress records become envelopes with no caller and with the record's
/// metadata; messages sent by functions carry their caller and no metadata.
/// Envelopes cross workers (and processes) through timely's exchange, so
/// they are serde-serializable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The function instance the message is for.
    pub target: Address,
    /// The sender, when a function sent it (boxed: ingress records, the
    /// bulk of traffic, have none, and envelopes are moved several times).
    pub caller: Option<Box<Address>>,
    /// The payload.
    pub value: TypedValue,
    /// The ingress record behind the message, when it came from an ingress.
    #[serde(with = "metadata_as_option")]
    pub metadata: Metadata,
}

impl Envelope {
    /// Moves the payload out, leaving an empty value of the same type: the
    /// function operator invokes messages where they lie in their batch, and
    /// reading their fields there instead of from a fresh copy of the whole
    /// envelope on the stack spares the copy and the stalls of re-reading
    /// parts of it (store forwarding across its wide stores).
    ///
    /// ```
    /// use statefun_engine::envelope::{Envelope, Metadata};
    /// use statefun_sdk::{Address, TypedValue};
    /// let mut e = Envelope {
    ///     target: Address::new(statefun_sdk::TypeName::parse("ns/f").unwrap(), "a"),
    ///     caller: None,
    ///     value: TypedValue::new("t/v", b"x".to_vec()),
    ///     metadata: Metadata::None,
    /// };
    /// assert_eq!(e.take_value(), TypedValue::new("t/v", b"x".to_vec()));
    /// assert!(e.value.value.is_empty() && e.value.typename == "t/v");
    /// ```
    pub fn take_value(&mut self) -> TypedValue {
        TypedValue {
            typename: self.value.typename.clone(),
            has_value: self.value.has_value,
            value: std::mem::take(&mut self.value.value),
        }
    }

    /// Moves the envelope out, leaving a shell with no payload, caller or
    /// metadata (see [`Envelope::take_value`]).
    pub fn take(&mut self) -> Envelope {
        Envelope {
            target: self.target.clone(),
            caller: self.caller.take(),
            value: self.take_value(),
            metadata: std::mem::take(&mut self.metadata),
        }
    }
}

/// The ingress record behind a message, kept small: envelopes are moved
/// several times on their way and cross workers, so the large Kafka and
/// Kinesis variants are boxed, and the generator's (a sequence number, on
/// every record of a benchmark) is inline instead of a heap object per record.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Metadata {
    /// No ingress record: a message sent by a function.
    #[default]
    None,
    /// A generator record's sequence number.
    Generator(u64),
    /// Any other ingress record.
    Record(Box<IngressMetadata>),
}

impl Metadata {
    /// The compact form of `metadata` (as a source record carries it, see
    /// [`Metadata::of_record`]; generator records come that way, not through here).
    pub fn of(metadata: IngressMetadata) -> Self {
        Metadata::of_record(RecordMetadata::from(metadata))
    }

    /// The metadata a source record carries, taken over as it is (its box, if any, too).
    pub fn of_record(metadata: RecordMetadata) -> Self {
        match metadata {
            RecordMetadata::Generator(sequence) => Metadata::Generator(sequence),
            RecordMetadata::Record(m) => Metadata::Record(m),
        }
    }

    /// Whether the message came from an ingress.
    pub fn is_some(&self) -> bool {
        !matches!(self, Metadata::None)
    }

    /// The ingress record, as functions see it.
    ///
    /// ```
    /// use statefun_engine::envelope::Metadata;
    /// use statefun_sdk::IngressMetadata;
    /// let m = Metadata::of(IngressMetadata::Generator { sequence: 7 });
    /// assert_eq!(m.get().as_deref(), Some(&IngressMetadata::Generator { sequence: 7 }));
    /// assert_eq!(Metadata::None.get(), None);
    /// ```
    pub fn get(&self) -> Option<MetadataRef<'_>> {
        match self {
            Metadata::None => None,
            Metadata::Generator(sequence) => Some(MetadataRef::Generator(
                std::mem::ManuallyDrop::new(IngressMetadata::Generator {
                    sequence: *sequence,
                }),
            )),
            Metadata::Record(record) => Some(MetadataRef::Record(record)),
        }
    }
}

/// The ingress record of a [`Metadata`] as functions see it ([`Metadata::get`]): a
/// generator's is made for the call, the others are borrowed.
///
/// Not a `Cow`: dropping one ran `IngressMetadata`'s drop glue on every invocation, which
/// cost more than making the value; a generator's owns nothing, so it is never dropped
/// (`ManuallyDrop`), and this type has no drop glue at all.
#[derive(Debug)]
pub enum MetadataRef<'a> {
    /// A generator record's metadata, made from its sequence number.
    Generator(std::mem::ManuallyDrop<IngressMetadata>),
    /// Any other ingress record's, borrowed from the envelope.
    Record(&'a IngressMetadata),
}

impl std::ops::Deref for MetadataRef<'_> {
    type Target = IngressMetadata;

    fn deref(&self) -> &IngressMetadata {
        match self {
            MetadataRef::Generator(generator) => generator,
            MetadataRef::Record(record) => record,
        }
    }
}

impl PartialEq for MetadataRef<'_> {
    /// Equal when the records are, however each is held.
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// Envelopes are kept in checkpoints (in-flight and delayed messages) and cross workers,
/// both with bincode, which writes an enum as its variant's index and then its fields in
/// order, nothing more: the metadata is written as the `Option<IngressMetadata>` it always
/// was — its four original variants with their original fields, in their original order —
/// so checkpoints of earlier versions restore. Fields added since (a KPL sub-record's
/// sub-sequence number and explicit hash key) travel in a variant appended after them, used
/// only when they are set.
mod metadata_as_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use statefun_sdk::IngressMetadata;

    use super::Metadata;

    /// The written form: `S` is the text type, `H` the headers' (borrowed from the metadata
    /// when writing, no copy per record crossing workers; owned when reading).
    #[derive(Serialize, Deserialize)]
    enum Wire<S, H> {
        Kafka {
            topic: S,
            partition: i32,
            offset: i64,
            timestamp_ms: Option<i64>,
            headers: H,
        },
        Kinesis {
            stream: S,
            shard_id: S,
            sequence_number: S,
            approximate_arrival_ms: Option<i64>,
        },
        File {
            path: S,
            line: u64,
        },
        Generator {
            sequence: u64,
        },
        KinesisSubRecord {
            stream: S,
            shard_id: S,
            sequence_number: S,
            approximate_arrival_ms: Option<i64>,
            sub_sequence_number: Option<u64>,
            explicit_hash_key: Option<S>,
        },
    }

    type Headers = Vec<(String, Option<Vec<u8>>)>;
    type WireRef<'a> = Wire<&'a str, &'a [(String, Option<Vec<u8>>)]>;
    type WireOwned = Wire<String, Headers>;

    fn wire(metadata: &IngressMetadata) -> WireRef<'_> {
        match metadata {
            IngressMetadata::Kafka {
                topic,
                partition,
                offset,
                timestamp_ms,
                headers,
            } => WireRef::Kafka {
                topic,
                partition: *partition,
                offset: *offset,
                timestamp_ms: *timestamp_ms,
                headers,
            },
            IngressMetadata::Kinesis {
                stream,
                shard_id,
                sequence_number,
                approximate_arrival_ms,
                sub_sequence_number: None,
                explicit_hash_key: None,
            } => WireRef::Kinesis {
                stream,
                shard_id,
                sequence_number,
                approximate_arrival_ms: *approximate_arrival_ms,
            },
            IngressMetadata::Kinesis {
                stream,
                shard_id,
                sequence_number,
                approximate_arrival_ms,
                sub_sequence_number,
                explicit_hash_key,
            } => WireRef::KinesisSubRecord {
                stream,
                shard_id,
                sequence_number,
                approximate_arrival_ms: *approximate_arrival_ms,
                sub_sequence_number: *sub_sequence_number,
                explicit_hash_key: explicit_hash_key.as_deref(),
            },
            IngressMetadata::File { path, line } => WireRef::File { path, line: *line },
            IngressMetadata::Generator { sequence } => WireRef::Generator {
                sequence: *sequence,
            },
        }
    }

    impl From<WireOwned> for IngressMetadata {
        fn from(w: WireOwned) -> Self {
            match w {
                Wire::Kafka {
                    topic,
                    partition,
                    offset,
                    timestamp_ms,
                    headers,
                } => IngressMetadata::Kafka {
                    topic,
                    partition,
                    offset,
                    timestamp_ms,
                    headers,
                },
                Wire::Kinesis {
                    stream,
                    shard_id,
                    sequence_number,
                    approximate_arrival_ms,
                } => IngressMetadata::Kinesis {
                    stream,
                    shard_id,
                    sequence_number,
                    approximate_arrival_ms,
                    sub_sequence_number: None,
                    explicit_hash_key: None,
                },
                Wire::KinesisSubRecord {
                    stream,
                    shard_id,
                    sequence_number,
                    approximate_arrival_ms,
                    sub_sequence_number,
                    explicit_hash_key,
                } => IngressMetadata::Kinesis {
                    stream,
                    shard_id,
                    sequence_number,
                    approximate_arrival_ms,
                    sub_sequence_number,
                    explicit_hash_key,
                },
                Wire::File { path, line } => IngressMetadata::File { path, line },
                Wire::Generator { sequence } => IngressMetadata::Generator { sequence },
            }
        }
    }

    pub fn serialize<S: Serializer>(metadata: &Metadata, s: S) -> Result<S::Ok, S::Error> {
        match metadata {
            Metadata::None => None::<WireRef<'_>>.serialize(s),
            Metadata::Generator(sequence) => Some(WireRef::Generator {
                sequence: *sequence,
            })
            .serialize(s),
            Metadata::Record(record) => Some(wire(record)).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
        Ok(Option::<WireOwned>::deserialize(d)?
            .map_or(Metadata::None, |w| Metadata::of(IngressMetadata::from(w))))
    }
}

#[cfg(test)]
mod tests {
    use statefun_sdk::{Address, IngressMetadata, TypeName, TypedValue};

    use super::*;

    /// The metadata as versions before KPL sub-records wrote it (their `IngressMetadata`).
    #[derive(Serialize)]
    enum Before {
        Kafka {
            topic: String,
            partition: i32,
            offset: i64,
            timestamp_ms: Option<i64>,
            headers: Vec<(String, Option<Vec<u8>>)>,
        },
        Kinesis {
            stream: String,
            shard_id: String,
            sequence_number: String,
            approximate_arrival_ms: Option<i64>,
        },
        #[allow(dead_code)]
        File { path: String, line: u64 },
        #[allow(dead_code)]
        Generator { sequence: u64 },
    }

    #[derive(Serialize)]
    struct EnvelopeBefore {
        target: Address,
        caller: Option<Box<Address>>,
        value: TypedValue,
        metadata: Option<Before>,
    }

    fn envelope(metadata: Metadata) -> Envelope {
        Envelope {
            target: Address::new(TypeName::parse("a/b").unwrap(), "id".to_string()),
            caller: None,
            value: TypedValue::new("a/t", b"v".to_vec()),
            metadata,
        }
    }

    #[test]
    fn envelopes_written_before_kpl_sub_records_still_read() {
        let kinesis = EnvelopeBefore {
            target: Address::new(TypeName::parse("a/b").unwrap(), "id".to_string()),
            caller: None,
            value: TypedValue::new("a/t", b"v".to_vec()),
            metadata: Some(Before::Kinesis {
                stream: "s".into(),
                shard_id: "shardId-000000000001".into(),
                sequence_number: "42".into(),
                approximate_arrival_ms: Some(7),
            }),
        };
        let bytes = bincode::serialize(&kinesis).unwrap();
        let read: Envelope = bincode::deserialize(&bytes).unwrap();
        let expected = IngressMetadata::Kinesis {
            stream: "s".into(),
            shard_id: "shardId-000000000001".into(),
            sequence_number: "42".into(),
            approximate_arrival_ms: Some(7),
            sub_sequence_number: None,
            explicit_hash_key: None,
        };
        assert_eq!(read, envelope(Metadata::of(expected.clone())));
        // And a plain Kinesis record is written exactly as before.
        assert_eq!(
            bincode::serialize(&envelope(Metadata::of(expected))).unwrap(),
            bytes
        );
        let kafka = EnvelopeBefore {
            metadata: Some(Before::Kafka {
                topic: "t".into(),
                partition: 1,
                offset: 2,
                timestamp_ms: None,
                headers: vec![("h".into(), None)],
            }),
            ..kinesis
        };
        let bytes = bincode::serialize(&kafka).unwrap();
        let read: Envelope = bincode::deserialize(&bytes).unwrap();
        assert_eq!(bincode::serialize(&read).unwrap(), bytes);
    }

    #[test]
    fn every_kind_of_metadata_round_trips() {
        for metadata in [
            Metadata::None,
            Metadata::Generator(9),
            Metadata::of(IngressMetadata::File {
                path: "in.txt".into(),
                line: 3,
            }),
            Metadata::of(IngressMetadata::Kinesis {
                stream: "s".into(),
                shard_id: "x".into(),
                sequence_number: "1".into(),
                approximate_arrival_ms: None,
                sub_sequence_number: Some(4),
                explicit_hash_key: Some("123".into()),
            }),
            Metadata::of(IngressMetadata::Kinesis {
                stream: "s".into(),
                shard_id: "x".into(),
                sequence_number: "1".into(),
                approximate_arrival_ms: None,
                sub_sequence_number: Some(0),
                explicit_hash_key: None,
            }),
        ] {
            let e = envelope(metadata);
            let read: Envelope = bincode::deserialize(&bincode::serialize(&e).unwrap()).unwrap();
            assert_eq!(read, e);
        }
    }
}
