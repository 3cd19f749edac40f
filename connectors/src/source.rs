//! The source side of the connector interface.
//!
//! A [`Source`] is polled by the engine's input operator; it appends decoded
//! records to a caller-owned buffer and says whether to poll again at once,
//! later, or never. The interface is deliberately pull-based and free of
//! timely types so that every connector (file, generator, Kafka, Kinesis)
//! can be driven and tested the same way.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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

    /// Where this source is in its input, as opaque bytes stored in checkpoints;
    /// `None` if it cannot resume (e.g. stdin). Covers exactly the records returned by `poll` so far.
    ///
    /// The engine takes it at checkpoint time, together with the state the
    /// records so far produced, so that a restore neither repeats nor loses a
    /// record of this source. The bytes are the source's own business (each
    /// connector of this crate writes a small versioned JSON document), which
    /// keeps the engine's checkpoint format independent of connectors. The
    /// default is `None`: a source that cannot resume says so instead of
    /// pretending.
    fn position(&self) -> Option<Vec<u8>> {
        None
    }

    /// Continues after `position` (as returned by `position()` of a source opened with the
    /// same configuration, worker index and peer count). Called right after opening, before any poll.
    ///
    /// Bad bytes (a corrupt checkpoint, or one of another ingress type) are an
    /// `Err` naming the ingress, never a panic. The default fails: a source
    /// that does not override [`Source::position`] has nothing to resume from,
    /// and silently starting from the beginning would duplicate its input.
    fn seek(&mut self, position: &[u8]) -> Result<(), ConnectorError> {
        let _ = position;
        Err(ConnectorError::Config {
            connector: "ingress",
            id: "(unnamed source)".to_string(),
            message: "this ingress cannot resume from a checkpoint (its source does not \
                      implement `Source::seek`); start the job without restoring, or use an \
                      ingress that can resume"
                .to_string(),
        })
    }

    /// Told that a checkpoint covering everything up to `position` is
    /// complete on every worker, so the source may acknowledge it upstream
    /// (Kafka commits the offsets to its consumer group, for lag tools and
    /// `group-offsets` startup). The checkpoint, not this, is the source of
    /// truth; the default does nothing.
    fn checkpoint_complete(&mut self, position: &[u8]) -> Result<(), ConnectorError> {
        let _ = position;
        Ok(())
    }
}

/// The version of the position documents this build writes and reads.
const POSITION_VERSION: u32 = 1;

/// The envelope of every position this crate writes:
/// `{"kind":"file","version":1,"position":{…}}`. `kind` makes a checkpoint of
/// one ingress type restored into another an error rather than a misread;
/// `version` lets a later build tell an old format from a corrupt one.
#[derive(Serialize)]
struct PositionOut<'a, T> {
    kind: &'a str,
    version: u32,
    position: &'a T,
}

/// [`PositionOut`] when reading: the body stays untyped until kind and
/// version are checked, so the error says which of them is wrong.
#[derive(Deserialize)]
struct PositionIn {
    kind: String,
    version: u32,
    position: serde_json::Value,
}

/// Serializes the position `body` of a `kind` source (see [`PositionOut`]).
///
/// Serializing plain structs of numbers and strings cannot fail; should it
/// ever, the source reports no position (it cannot resume) and logs why,
/// rather than panicking in the checkpoint path.
pub(crate) fn encode_position<T: Serialize>(kind: &str, body: &T) -> Option<Vec<u8>> {
    let envelope = PositionOut {
        kind,
        version: POSITION_VERSION,
        position: body,
    };
    match serde_json::to_vec(&envelope) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::error!("cannot serialize the position of a {kind} source: {e}");
            None
        }
    }
}

/// Reads a position written by [`encode_position`] for a `kind` source;
/// `connector` and `id` name the ingress in the error.
pub(crate) fn decode_position<T: DeserializeOwned>(
    bytes: &[u8],
    kind: &str,
    connector: &'static str,
    id: &str,
) -> Result<T, ConnectorError> {
    let error = |message: String| ConnectorError::Config {
        connector,
        id: id.to_string(),
        message,
    };
    const FIX: &str = "the checkpoint is corrupt or was not written for this ingress; \
                       restore an older checkpoint, or delete the state directory to start over";
    let envelope: PositionIn = serde_json::from_slice(bytes).map_err(|e| {
        error(format!(
            "cannot resume: the checkpointed position ({} bytes) is not a position document \
             ({e}); {FIX}",
            bytes.len()
        ))
    })?;
    if envelope.kind != kind {
        return Err(error(format!(
            "cannot resume: the checkpointed position is one of a `{}` ingress, not of a `{kind}` \
             ingress (was the ingress's type changed in module.yaml?); {FIX}",
            envelope.kind
        )));
    }
    if envelope.version != POSITION_VERSION {
        return Err(error(format!(
            "cannot resume: the checkpointed {kind} position has format version {}, this build \
             reads version {POSITION_VERSION}; resume with the build that wrote the checkpoint, \
             or delete the state directory to start over",
            envelope.version
        )));
    }
    serde_json::from_value(envelope.position).map_err(|e| {
        error(format!(
            "cannot resume: the checkpointed {kind} position is malformed ({e}); {FIX}"
        ))
    })
}
