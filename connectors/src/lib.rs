//! Ingress sources and egress sinks of statefun-rs.
//!
//! Every connector sits behind one small interface, [`Source`] and [`Sink`],
//! that knows nothing about timely dataflow: the engine wraps a source into a
//! timely input operator (stamping records with the current epoch) and feeds
//! sinks from its egress streams. Keeping timely out of this crate means
//! connectors can be tested on their own and a timely upgrade never touches
//! them.
//!
//! This crate has the development connectors:
//!
//! * [`FileSource`] — `KEY<TAB>VALUE` lines from a file or stdin, optionally
//!   following a growing file;
//! * [`GeneratorSource`] — synthetic records at a given rate, for benchmarks;
//! * [`FileSink`] — one JSON object per egress record, to a file or stdout;
//! * [`KinesisSource`] / [`KinesisSink`] — Kinesis Data Streams (see [`kinesis`]).
//!
//! Kafka and Kinesis connectors implement the same traits.

#![warn(missing_docs)]

mod codec;
mod error;
pub mod file;
pub mod generator;
pub mod hash;
pub mod kafka;
pub mod kinesis;
mod live;
pub mod sink;
pub mod source;

pub use error::ConnectorError;
pub use file::{FileEgressConfig, FileIngressConfig, FileSink, FileSource};
pub use generator::{GeneratorConfig, GeneratorSource};
pub use kafka::{KafkaSink, KafkaSource};
pub use kinesis::{KinesisSink, KinesisSinkOptions, KinesisSource, KinesisSourceOptions};
pub use sink::Sink;
pub use source::{
    RecordKey, RecordMetadata, Source, SourceRecord, SourceStats, SourceStatus, Waker,
};
