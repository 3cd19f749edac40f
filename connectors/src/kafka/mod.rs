//! Kafka ingress and egress on librdkafka (the `rdkafka` crate).
//!
//! * [`KafkaSource`] reads the partitions of an `io.statefun.kafka.v1/ingress` that belong
//!   to this worker. Partitions are *assigned* (never group-rebalanced), because the
//!   checkpoint, not the consumer group, owns the offsets: each worker takes the partitions
//!   that [`partition_owner`] maps to it, wakes the engine through per-partition queues, and
//!   picks up partitions added to a topic later.
//! * [`KafkaSink`] writes `KafkaProducerRecord`s of an `io.statefun.kafka.v1/egress` with
//!   `at-least-once` or `none` delivery ([`KafkaSink::open`]), or `exactly-once`
//!   ([`KafkaSink::open_exactly_once`]): one transaction per checkpoint and worker, committed
//!   together with a record on a progress topic that tells a restarted job which checkpoints
//!   were delivered (see [`sink`]).
//!
//! `properties` from module.yaml are first made librdkafka's ([`client_properties`]: Java
//! client settings translated or dropped, every key checked against librdkafka), then pass
//! through to librdkafka unchanged, except the few keys
//! the runtime must own; those are named in a warning when set (see [`KafkaSource::open`],
//! [`KafkaSink::open`] and [`KafkaSink::open_exactly_once`]), and `statefun.progress.topic`,
//! which only the exactly-once sink reads.
//!
//! [`lag`] keeps what `/metrics` reports per partition while the job runs: the reader's
//! position, the high watermark and the lag between them.

mod client_properties;
mod config;
pub mod lag;
mod progress;
pub mod sink;
pub mod source;

pub use client_properties::{client_properties, ClientProperties};
pub use config::{effective_property, partition_owner};
pub use sink::{
    progress_key, transactional_id, KafkaSink, DEFAULT_PROGRESS_TOPIC,
    DEFAULT_TRANSACTIONAL_ID_PREFIX, PROGRESS_TOPIC_PROPERTY,
};
pub use source::{
    decode_kafka_positions, KafkaSource, PartitionLag, PositionFrom, PARTITION_DISCOVERY_INTERVAL,
};
