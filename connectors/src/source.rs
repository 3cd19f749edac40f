//! The source side of the connector interface.
//!
//! A [`Source`] is polled by the engine's input operator; it appends decoded
//! records to a caller-owned buffer and says whether to poll again at once,
//! later, or never. The interface is deliberately pull-based and free of
//! timely types so that every connector (file, generator, Kafka, Kinesis)
//! can be driven and tested the same way.

use std::sync::Arc;
use std::time::Duration;

use statefun_sdk::IngressMetadata;

use crate::ConnectorError;

/// A callback a source calls when data arrives while the engine is not polling.
///
/// The engine passes one that re-schedules its input operator (a timely
/// activator), so sources fed by background threads (stdin, Kafka) need not be
/// polled in a busy loop. It must be cheap and may be called from any thread.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// One record read by an ingress, before routing.
///
/// The source does the decoding it alone knows how to do (line framing,
/// primitive text to wire bytes); routing to function addresses is the
/// engine's job, which is why the key is still raw bytes here.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRecord {
    /// The function id as bytes. The engine checks that it is UTF-8 and skips
    /// (and counts) the record otherwise, so that the check and its counter
    /// live in one place for every connector.
    pub key: Option<Vec<u8>>,
    /// The value, already in its wire encoding (e.g. a `StringWrapper` for
    /// `io.statefun.types/string`); `None` for a record without a value
    /// (a Kafka tombstone).
    pub value: Option<Vec<u8>>,
    /// The index of the routing entry (Kafka topic / Kinesis stream entry of
    /// the ingress spec) this record belongs to; `0` for file and generator.
    pub route: usize,
    /// Where the record came from, handed to Rust functions as metadata.
    pub metadata: IngressMetadata,
}

/// What a [`Source::poll`] call found out about the source.
///
/// Records appended to `out` by the call must be processed whatever the status.
/// The sources of this crate return `Exhausted` only from a call that appended
/// nothing, so an engine that drops the output of an exhausted poll loses no
/// data either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceStatus {
    /// More records can be read right away: poll again soon.
    Ready,
    /// Nothing to read now. Poll again after `retry_after` if given, or when
    /// the [`Waker`] fires (sources that have a waker may return `None`).
    Idle {
        /// When polling again makes sense.
        retry_after: Option<Duration>,
    },
    /// A finite source is done and will never produce again; the engine can
    /// drop its capability so the epoch frontier is not held back by it.
    Exhausted,
}

/// Counters of a source, for metrics and end-of-run summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records appended to `out` so far.
    pub records: u64,
    /// Input units (lines, Kafka records, …) dropped because they could not be
    /// decoded; each is logged (rate-limited) with the reason.
    pub skipped: u64,
}

/// An ingress source, driven by the engine's input operator.
///
/// Sources are created per worker (they receive the worker index and the
/// number of workers) and split their input among workers themselves.
pub trait Source: Send {
    /// Appends at most `max` records to `out` and reports the source's state.
    ///
    /// `max` bounds the work of one call so that the worker can interleave
    /// other operators; a call must not block on I/O for long. An `Err` is
    /// fatal for this source: the engine reports it and stops the job.
    fn poll(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError>;

    /// Gives the source a callback that wakes the engine when data arrives.
    ///
    /// Sources that only ever need time-based re-polling ignore it, hence the
    /// default.
    fn set_waker(&mut self, _waker: Waker) {}

    /// The counters of this source so far.
    fn stats(&self) -> SourceStats;
}
