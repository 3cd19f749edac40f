//! Kinesis Data Streams ingress and egress (`io.statefun.kinesis.v1/*`) on the
//! AWS SDK for Rust.
//!
//! Both are built from the module model ([`statefun_module::KinesisIngress`],
//! [`statefun_module::KinesisEgress`]) and share one client construction
//! ([`SUPPORTED_CLIENT_PROPERTIES`] lists the `clientConfigProperties` that
//! map onto SDK settings). The SDK is async; each source and sink owns a small
//! tokio runtime so the engine's workers stay synchronous.
//!
//! * [`KinesisSource`] reads the shards this worker owns, follows resharding,
//!   splits KPL-aggregated records into their sub-records ([`deaggregate`])
//!   and reports per-shard positions ([`ShardPosition`]) for checkpoints.
//! * [`KinesisSink`] writes `KinesisEgressRecord`s with `PutRecords`,
//!   at-least-once (see its module docs for exactly what may be duplicated).
//!   With `recordIds: true` it frames each record's data with a deterministic
//!   [`RecordId`]; consumers use [`split_record_id`] to drop duplicates.
//!
//! Records with an empty partition key (which Kinesis itself never delivers)
//! reach the engine with `key: None`; the engine's skip policy counts and logs
//! them.

mod aggregate;
mod client;
pub mod lag;
mod record_id;
mod sink;
pub(crate) mod source;

pub use aggregate::{deaggregate, AggregateError, SubRecord, KPL_MAGIC};
pub use client::{unsupported_client_properties, SUPPORTED_CLIENT_PROPERTIES};
pub use record_id::{
    content_digest, frame_record, split_record_id, RecordId, RECORD_ID_PREFIX_LEN,
};
pub use sink::{KinesisSink, KinesisSinkOptions};
pub use source::{KinesisSource, KinesisSourceOptions, ShardPosition, SHARD_END};
