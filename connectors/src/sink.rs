//! The sink side of the connector interface.
//!
//! The engine decides *when* records may leave (after a checkpoint is
//! globally complete, for exactly-once sinks); a [`Sink`] only knows *how*.

use statefun_sdk::EgressMessage;

use crate::ConnectorError;

/// What a sink did since the engine last asked ([`Sink::take_stats`]), for metrics.
///
/// Deltas rather than running totals, so that the engine adds them to its per-egress
/// counters without remembering every sink's previous answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Transactions committed (Kafka `exactly-once`: one per checkpoint and worker).
    pub transactions_committed: u64,
    /// Transactions the sink aborted after a failed write or commit (the records are
    /// written again by the replay after a restart).
    pub transactions_aborted: u64,
}

/// An egress sink.
///
/// `write` may buffer; only after `flush` returns `Ok` are the records handed
/// to the destination (the OS, a broker). The engine calls `flush` at the
/// points where it promises delivery (checkpoints, shutdown), so a sink never
/// has to guess.
pub trait Sink: Send {
    /// Accepts a batch of egress records, in order.
    fn write(&mut self, records: &[EgressMessage]) -> Result<(), ConnectorError>;

    /// Pushes everything written so far to the destination.
    fn flush(&mut self) -> Result<(), ConnectorError>;

    /// Makes everything written so far durable and records checkpoint `checkpoint` as delivered.
    /// The default flushes; exactly-once sinks also persist a delivery marker.
    ///
    /// The engine calls it once checkpoint `checkpoint` is globally complete,
    /// after writing that checkpoint's records. Persisting the marker in the
    /// same step as the data is what lets a restarted job tell delivered output
    /// from output of a checkpoint that never completed.
    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let _ = checkpoint;
        self.flush()
    }

    /// Says that the records passed to `write` from now on, until the next
    /// call, belong to checkpoint `checkpoint` of worker `worker` (its
    /// outbox holds them).
    ///
    /// Only checkpointed runs call it, and only for sinks that every worker
    /// runs for its own records (not for single-writer file sinks). After a
    /// crash the engine replays an undelivered checkpoint's records after the
    /// same call: the same records, though not necessarily in the same order
    /// (the first delivery sees them ordered by epoch and arrival, the replay
    /// in the order the worker logged them). A sink can thus give each record
    /// an identity that is the same on every attempt, derived from (worker,
    /// checkpoint, the record's content and how many equal records came
    /// before it) — the Kinesis egress's record ids. The default ignores it.
    fn begin_checkpoint(&mut self, worker: usize, checkpoint: u64) {
        let _ = (worker, checkpoint);
    }

    /// The last checkpoint this sink durably delivered, for exactly-once sinks (the engine skips
    /// replayed records of checkpoints up to it); `None` for sinks that do not track it.
    ///
    /// Known right after opening, so that a job restored from an older
    /// checkpoint than the sink last delivered does not write those records
    /// a second time.
    fn delivered(&self) -> Option<u64> {
        None
    }

    /// What the sink did since the last call (see [`SinkStats`]). The engine asks after each
    /// commit, off the per-record path; sinks without transactions keep the default (zeros).
    fn take_stats(&mut self) -> SinkStats {
        SinkStats::default()
    }
}
