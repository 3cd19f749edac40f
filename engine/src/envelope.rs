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
    ///
    /// Boxed: the Kafka and Kinesis variants are large, and envelopes are
    /// moved several times on their way, so keeping them small pays.
    pub metadata: Option<Box<IngressMetadata>>,
}
