//! The SDK codecs this crate relies on, in one place.
//!
//! Everything the connectors need from the SDK's wire formats (primitive
//! text codecs, the six primitive type names, the egress record protos) is
//! imported through this module, so that a change in where the SDK exposes
//! them touches one file.

pub(crate) use statefun_sdk::proto::egress::{
    KafkaProducerRecord, KinesisEgressRecord, KAFKA_PRODUCER_RECORD_TYPENAME,
    KINESIS_EGRESS_RECORD_TYPENAME,
};
pub(crate) use statefun_sdk::types::{
    decode_primitive_to_text, encode_primitive_from_text, BOOL_TYPENAME, DOUBLE_TYPENAME,
    FLOAT_TYPENAME, INT_TYPENAME, LONG_TYPENAME, STRING_TYPENAME,
};
