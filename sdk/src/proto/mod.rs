//! StateFun's protobuf messages, hand-written as `prost` structs.
//!
//! Field numbers and types are transcribed from the official StateFun protos
//! (`types.proto`, `kafka-egress.proto`, `kinesis-egress.proto`,
//! `request-reply.proto`), so bytes produced here are read by the official
//! SDKs and the other way round. [`ingress`] is statefun-rs's own message
//! (`sdk/proto/statefun_rs/v1/ingress_record.proto`) for ingress metadata sent
//! to remote functions.

pub mod egress;
pub mod ingress;
pub mod request_reply;
pub mod types;
