//! Kafka ingress and egress on librdkafka (the `rdkafka` crate).
//!
//! * [`KafkaSource`] reads the partitions of an `io.statefun.kafka.v1/ingress` that belong
//!   to this worker. Partitions are *assigned* (never group-rebalanced), because the
//!   checkpoint, not the consumer group, owns the offsets: each worker takes the partitions
//!   that [`partition_owner`] maps to it, wakes the engine through per-partition queues, and
//!   picks up partitions added to a topic later.
//! * [`KafkaSink`] writes `KafkaProducerRecord`s of an `io.statefun.kafka.v1/egress` with
//!   `at-least-once` or `none` delivery. `exactly-once` needs the checkpoint outbox and is
//!   refused with a configuration error until that exists.
//!
//! `properties` from module.yaml pass through to librdkafka unchanged, except the few keys
//! the runtime must own; those are named in a warning when set (see [`KafkaSource::open`]
//! and [`KafkaSink::open`]).

mod config;
pub mod sink;
pub mod source;

pub use config::{effective_property, partition_owner};
pub use sink::KafkaSink;
pub use source::{KafkaSource, PARTITION_DISCOVERY_INTERVAL};
