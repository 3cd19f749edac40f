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
    /// Kinesis: entries `PutRecords` acknowledged. Reported so that a Kinesis egress's
    /// throttling can be read against what it wrote.
    pub entries_written: u64,
    /// Kinesis: entries refused for throughput (`ProvisionedThroughputExceededException` for
    /// the entry in a `PutRecords` answer, or every entry of a call throttled as a whole), each
    /// sent again: the signal that the stream needs more shards.
    pub entries_throttled: u64,
    /// Kinesis: entries refused for any other reason (another per-entry error code such as
    /// `InternalFailure`, or every entry of a call that failed transiently), each sent again.
    pub entries_failed: u64,
    /// Kinesis: `PutRecords` calls sent again after a throttled or failed call or entries
    /// (attempts beyond the first).
    pub retries: u64,
}

impl SinkStats {
    /// Adds `other`'s counts (the engine's running totals per egress).
    pub fn add(&mut self, other: &SinkStats) {
        self.transactions_committed += other.transactions_committed;
        self.transactions_aborted += other.transactions_aborted;
        self.entries_written += other.entries_written;
        self.entries_throttled += other.entries_throttled;
        self.entries_failed += other.entries_failed;
        self.retries += other.retries;
    }

    /// Whether the sink reported transactions (only transactional sinks do).
    pub fn has_transactions(&self) -> bool {
        self.transactions_committed > 0 || self.transactions_aborted > 0
    }

    /// Whether the sink reported `PutRecords` entries (only Kinesis sinks do).
    pub fn has_entries(&self) -> bool {
        self.entries_written > 0
            || self.entries_throttled > 0
            || self.entries_failed > 0
            || self.retries > 0
    }
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
    /// commit or flush, off the per-record path; sinks with nothing to report keep the
    /// default (zeros).
    fn take_stats(&mut self) -> SinkStats {
        SinkStats::default()
    }
}
