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

/// A record's key: inline up to 16 bytes, so that short ids (a decimal number, a
/// user name) cost no allocation per record that the engine would free again at
/// once (its ids are inline too). Longer keys spill to the heap as a `Vec` would.
/// 16 and not 24: the record is moved twice on its way to the router, and the
/// larger inline buffer made `statefun bench --keys 1000` 4–6 % slower although
/// it ran fewer instructions; with 16 it is 1–3 % faster and 4.2 % fewer
/// instructions than a `Vec` (docs/BENCHMARKS.md).
///
/// ```
/// use statefun_connectors::RecordKey;
/// let key = RecordKey::from_slice(b"alice");
/// assert!(!key.spilled());
/// assert_eq!(key.as_slice(), b"alice");
/// ```
pub type RecordKey = smallvec::SmallVec<[u8; 16]>;

/// Where a record came from, as a [`SourceRecord`] carries it: the generator's sequence
/// number inline, any other ingress's [`IngressMetadata`] boxed.
///
/// Why not the `IngressMetadata` itself: it is 128 bytes (its Kinesis variant), which made
/// a record 216 bytes, moved twice per record on its way to the router (into the source's
/// buffer and out of it); boxed, a record is 104 bytes. The box costs nothing extra: the
/// engine's messages keep Kafka and Kinesis metadata boxed anyway, and take this one over.
///
/// ```
/// use statefun_connectors::RecordMetadata;
/// use statefun_sdk::IngressMetadata;
/// let m = RecordMetadata::from(IngressMetadata::Generator { sequence: 7 });
/// assert_eq!(m, RecordMetadata::Generator(7));
/// assert_eq!(m.into_ingress(), IngressMetadata::Generator { sequence: 7 });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordMetadata {
    /// A generator record's sequence number.
    Generator(u64),
    /// Any other ingress's record.
    Record(Box<IngressMetadata>),
}

impl RecordMetadata {
    /// The boxed metadata of a record that is not a generator's.
    pub fn record(&self) -> Option<&IngressMetadata> {
        match self {
            RecordMetadata::Generator(_) => None,
            RecordMetadata::Record(m) => Some(m),
        }
    }

    /// The metadata as functions see it.
    pub fn into_ingress(self) -> IngressMetadata {
        match self {
            RecordMetadata::Generator(sequence) => IngressMetadata::Generator { sequence },
            RecordMetadata::Record(m) => *m,
        }
    }
}

impl From<IngressMetadata> for RecordMetadata {
    fn from(metadata: IngressMetadata) -> Self {
        match metadata {
            IngressMetadata::Generator { sequence } => RecordMetadata::Generator(sequence),
            other => RecordMetadata::Record(Box::new(other)),
        }
    }
}

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
    pub key: Option<RecordKey>,
    /// The value, already in its wire encoding (e.g. a `StringWrapper` for
    /// `io.statefun.types/string`); `None` for a record without a value
    /// (a Kafka tombstone).
    pub value: Option<Vec<u8>>,
    /// The index of the routing entry (Kafka topic / Kinesis stream entry of
    /// the ingress spec) this record belongs to; `0` for file and generator.
    pub route: usize,
    /// Where the record came from, handed to Rust functions as metadata.
    pub metadata: RecordMetadata,
    /// Why the connector could not make a message of it (a corrupt KPL
    /// aggregate, say), if it could not: the engine then gives the record to
    /// the ingress's bad-record policy with this reason, whatever its key and
    /// value, so the policy (skip, fail, dead-letter) names the real problem.
    pub rejected: Option<String>,
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
        Err(ConnectorError::config(
            "ingress",
            "(unnamed source)",
            "this ingress cannot resume from a checkpoint (its source does not \
             implement `Source::seek`); start the job without restoring, or use an \
             ingress that can resume",
        ))
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

/// The position a source of a job with a different worker count resumes from: the
/// positions every worker of the old job checkpointed for ingress `id`, merged into one
/// that every new worker is given ([`Source::seek`] picks what it now owns).
///
/// This is what makes a rescale move source positions with their partitions: Kafka
/// partitions and Kinesis shards (with the `SHARD_END` marks of finished parents) are
/// united, and each new worker seeks the ones it owns under the new worker count; a file
/// is read by worker 0 alone, so the one position that moved is kept. Two old workers with
/// different positions for the same partition, shard or file would make some record be read
/// twice or never, so that is an error naming it; so is a generator ingress, whose
/// sequence is split by worker count and cannot be re-split.
///
/// ```
/// use statefun_connectors::source::merge_positions;
/// let a = br#"{"kind":"kafka","version":1,"position":[["t",0,5]]}"#.to_vec();
/// let b = br#"{"kind":"kafka","version":1,"position":[["t",1,7]]}"#.to_vec();
/// let merged = merge_positions("in", &[a, b]).unwrap();
/// assert_eq!(merged, br#"{"kind":"kafka","version":1,"position":[["t",0,5],["t",1,7]]}"#);
/// ```
pub fn merge_positions(id: &str, positions: &[Vec<u8>]) -> Result<Vec<u8>, ConnectorError> {
    const CONNECTOR: &str = "ingress";
    let error = |message: String| ConnectorError::config(CONNECTOR, id, message);
    let kind = match positions.first() {
        Some(first) => serde_json::from_slice::<PositionIn>(first)
            .map(|p| p.kind)
            .map_err(|e| {
                error(format!(
                    "cannot rescale: a checkpointed position is not a position document ({e}); \
                     the checkpoint is corrupt"
                ))
            })?,
        None => {
            return Err(error(
                "cannot rescale: no worker checkpointed a position".into(),
            ))
        }
    };
    /// Unites per-partition entries `(a, b, position)`: the same partition twice with
    /// different positions is an error naming it.
    fn unite<A, B, P>(
        lists: Vec<Vec<(A, B, P)>>,
        what: &str,
        error: impl Fn(String) -> ConnectorError,
    ) -> Result<Vec<(A, B, P)>, ConnectorError>
    where
        A: Ord + Clone + std::fmt::Display,
        B: Ord + Clone + std::fmt::Display,
        P: PartialEq + std::fmt::Debug,
    {
        let mut all: std::collections::BTreeMap<(A, B), P> = std::collections::BTreeMap::new();
        for (a, b, p) in lists.into_iter().flatten() {
            match all.get(&(a.clone(), b.clone())) {
                Some(q) if *q != p => {
                    return Err(error(format!(
                        "cannot rescale: two workers checkpointed different positions for \
                         {what} `{a}` [{b}] ({q:?} and {p:?}); the state directories are from \
                         different checkpoints or jobs"
                    )))
                }
                _ => {
                    all.insert((a, b), p);
                }
            }
        }
        Ok(all.into_iter().map(|((a, b), p)| (a, b, p)).collect())
    }
    if kind == crate::kafka::source::KAFKA_POSITION {
        let lists = positions
            .iter()
            .map(|p| decode_position::<Vec<(String, i32, i64)>>(p, &kind, CONNECTOR, id))
            .collect::<Result<Vec<_>, _>>()?;
        let merged = unite(lists, "Kafka partition", error)?;
        encode_position(&kind, &merged)
            .ok_or_else(|| error("cannot encode the merged position".into()))
    } else if kind == crate::kinesis::source::KINESIS_POSITION {
        use crate::kinesis::ShardPosition;
        let lists = positions
            .iter()
            .map(|p| decode_position::<Vec<ShardPosition>>(p, &kind, CONNECTOR, id))
            .collect::<Result<Vec<_>, _>>()?;
        // A worker given every shard's position (after an earlier rescale) keeps those it
        // does not read in its checkpoints, unchanged: the reader's is the furthest one.
        let mut all: std::collections::BTreeMap<(String, String), ShardPosition> =
            std::collections::BTreeMap::new();
        for position in lists.into_iter().flatten() {
            let key = (position.stream.clone(), position.shard.clone());
            match all.get(&key) {
                Some(slot) if kinesis_progress(slot) >= kinesis_progress(&position) => {}
                _ => {
                    all.insert(key, position);
                }
            }
        }
        let merged: Vec<ShardPosition> = all.into_values().collect();
        encode_position(&kind, &merged)
            .ok_or_else(|| error("cannot encode the merged position".into()))
    } else if kind == crate::file::FILE_POSITION {
        // Worker 0 reads the file; the others checkpoint the empty position.
        let mut read: Option<crate::file::FilePosition> = None;
        for p in positions {
            let p: crate::file::FilePosition = decode_position(p, &kind, CONNECTOR, id)?;
            if p.offset == 0 && p.line == 0 {
                continue;
            }
            if let Some(q) = &read {
                if *q != p {
                    return Err(error(format!(
                        "cannot rescale: two workers checkpointed different file positions \
                         (line {} and line {}); the state directories are from different \
                         checkpoints or jobs",
                        q.line, p.line
                    )));
                }
            }
            read = Some(p);
        }
        let read = read.unwrap_or(crate::file::FilePosition { offset: 0, line: 0 });
        encode_position(&kind, &read)
            .ok_or_else(|| error("cannot encode the merged position".into()))
    } else if kind == crate::generator::GENERATOR_POSITION {
        Err(error(
            "cannot rescale a generator ingress: its sequence is split by worker count; \
             resume with the worker count of the checkpoint, or start from an empty --state-dir"
                .into(),
        ))
    } else {
        Err(error(format!(
            "cannot rescale: the checkpointed position is of an unknown ingress kind `{kind}`"
        )))
    }
}

/// How far a Kinesis shard position is: `SHARD_END` beyond every sequence number, sequence
/// numbers (decimal, up to 128 bits) by value, start marks (`TRIM_HORIZON`, `AT_TIMESTAMP:`)
/// before all of them. At one sequence number, a position inside a KPL aggregate (a
/// sub-sequence number: part of the record handed out) is before the record handed out
/// whole, and a later sub-record is further than an earlier one.
fn kinesis_progress(position: &crate::kinesis::ShardPosition) -> (u8, usize, &str, (u8, u64)) {
    let sequence = position.sequence.as_str();
    let within = match position.sub_sequence {
        Some(sub) => (0, sub),
        None => (1, 0),
    };
    if sequence == crate::kinesis::SHARD_END {
        (3, 0, "", (1, 0))
    } else if !sequence.is_empty() && sequence.bytes().all(|b| b.is_ascii_digit()) {
        let digits = sequence.trim_start_matches('0');
        (2, digits.len(), digits, within)
    } else if sequence.is_empty() {
        (0, 0, "", (1, 0))
    } else {
        (1, 0, "", (1, 0))
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
    let error = |message: String| ConnectorError::config(connector, id, message);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(kind: &str, body: &str) -> Vec<u8> {
        format!(r#"{{"kind":"{kind}","version":1,"position":{body}}}"#).into_bytes()
    }

    fn message(e: ConnectorError) -> String {
        e.to_string()
    }

    #[test]
    fn kafka_and_kinesis_positions_are_united_by_partition() {
        let merged = merge_positions(
            "in",
            &[
                doc("kafka", r#"[["b",0,9],["a",1,3]]"#),
                doc("kafka", r#"[["a",0,4]]"#),
                // A worker may list a partition it restored but had not been assigned yet.
                doc("kafka", r#"[["a",1,3]]"#),
            ],
        )
        .unwrap();
        assert_eq!(merged, doc("kafka", r#"[["a",0,4],["a",1,3],["b",0,9]]"#));
        let merged = merge_positions(
            "in",
            &[
                doc("kinesis", r#"[["s","shardId-0","SHARD_END"]]"#),
                doc(
                    "kinesis",
                    r#"[["s","shardId-1","4955"],["s","shardId-0","TRIM_HORIZON"]]"#,
                ),
                // A stale copy of a shard another worker reads (given to it by a rescale).
                doc("kinesis", r#"[["s","shardId-1","955"]]"#),
            ],
        )
        .unwrap();
        assert_eq!(
            merged,
            doc(
                "kinesis",
                r#"[["s","shardId-0","SHARD_END"],["s","shardId-1","4955"]]"#
            )
        );
    }

    #[test]
    fn kinesis_positions_inside_an_aggregate_merge_by_sub_sequence() {
        let merged = merge_positions(
            "in",
            &[
                // The reader's positions, in the format with and without a sub-sequence.
                doc(
                    "kinesis",
                    r#"[["s","shardId-0","4955",2],["s","shardId-1","70"]]"#,
                ),
                // Stale copies: an earlier sub-record of the same aggregate, and a part of
                // an aggregate the reader has since handed out whole.
                doc("kinesis", r#"[["s","shardId-0","4955",1]]"#),
                doc("kinesis", r#"[["s","shardId-1","70",5]]"#),
                // Inside a later record is further than a whole earlier one.
                doc("kinesis", r#"[["s","shardId-2","79"]]"#),
                doc("kinesis", r#"[["s","shardId-2","80",0]]"#),
            ],
        )
        .unwrap();
        assert_eq!(
            merged,
            doc(
                "kinesis",
                r#"[["s","shardId-0","4955",2],["s","shardId-1","70"],["s","shardId-2","80",0]]"#
            )
        );
    }

    #[test]
    fn conflicting_positions_are_an_error_naming_the_partition() {
        let err = message(
            merge_positions(
                "in",
                &[
                    doc("kafka", r#"[["t",0,5]]"#),
                    doc("kafka", r#"[["t",0,6]]"#),
                ],
            )
            .unwrap_err(),
        );
        assert!(
            err.contains("`t` [0]") && err.contains("different"),
            "{err}"
        );
    }

    #[test]
    fn the_file_position_of_the_reading_worker_is_kept() {
        let empty = doc("file", r#"{"offset":0,"line":0}"#);
        let read = doc("file", r#"{"offset":120,"line":10}"#);
        let merged = merge_positions("in", &[empty.clone(), read.clone(), empty.clone()]).unwrap();
        assert_eq!(merged, read);
        assert_eq!(
            merge_positions("in", std::slice::from_ref(&empty)).unwrap(),
            empty
        );
        let other = doc("file", r#"{"offset":60,"line":5}"#);
        assert!(merge_positions("in", &[read, other]).is_err());
    }

    #[test]
    fn generator_mixed_and_corrupt_positions_are_errors() {
        let err = message(
            merge_positions("in", &[doc("generator", r#"{"next":3,"records":1}"#)]).unwrap_err(),
        );
        assert!(
            err.contains("generator") && err.contains("worker count"),
            "{err}"
        );
        let err = message(
            merge_positions(
                "in",
                &[doc("kafka", "[]"), doc("file", r#"{"offset":0,"line":0}"#)],
            )
            .unwrap_err(),
        );
        assert!(err.contains("`file` ingress"), "{err}");
        assert!(merge_positions("in", &[b"garbage".to_vec()]).is_err());
        assert!(merge_positions("in", &[]).is_err());
    }
}
