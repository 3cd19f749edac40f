//! The unit of work that flows between operators: a message for one function instance.

use serde::{Deserialize, Serialize};
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
    /// The compact form of `metadata`.
    pub fn of(metadata: IngressMetadata) -> Self {
        match metadata {
            IngressMetadata::Generator { sequence } => Metadata::Generator(sequence),
            other => Metadata::Record(Box::new(other)),
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
    pub fn get(&self) -> Option<std::borrow::Cow<'_, IngressMetadata>> {
        use std::borrow::Cow;
        match self {
            Metadata::None => None,
            Metadata::Generator(sequence) => Some(Cow::Owned(IngressMetadata::Generator {
                sequence: *sequence,
            })),
            Metadata::Record(record) => Some(Cow::Borrowed(record)),
        }
    }
}

/// Envelopes are kept in checkpoints (in-flight and delayed messages): the
/// metadata is written as the `Option<IngressMetadata>` it always was, so
/// checkpoints of earlier versions restore.
mod metadata_as_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use statefun_sdk::IngressMetadata;

    use super::Metadata;

    pub fn serialize<S: Serializer>(metadata: &Metadata, s: S) -> Result<S::Ok, S::Error> {
        metadata.get().as_deref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
        Ok(Option::<IngressMetadata>::deserialize(d)?.map_or(Metadata::None, Metadata::of))
    }
}
