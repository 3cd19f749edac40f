//! StateFun's protobuf messages, hand-written as `prost` structs.
//!
//! Field numbers and types are transcribed from the official StateFun protos
//! (`types.proto`, `kafka-egress.proto`, `kinesis-egress.proto`,
//! `request-reply.proto`), so bytes produced here are read by the official
//! SDKs and the other way round.

pub mod egress;
pub mod request_reply;
pub mod types;
