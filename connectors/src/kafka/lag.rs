//! Kafka lag while the job runs: where each partition's reader is, the partition's high
//! watermark, and the lag between them, for the engine's `/metrics`.
//!
//! Why it works the way it does:
//!
//! * **A process-wide registry.** Every [`crate::kafka::KafkaSource`] registers one gauge
//!   per partition it reads and keeps it alive while it reads; [`partitions`] lists the live
//!   ones (a [`crate::live`] list: a dropped source leaves it with its gauges).
//! * **The position is the reader's.** The source stores the offset of the next record it
//!   hands to the engine once per poll and partition (one relaxed store), so the lag is what
//!   the job has not read yet — not what a checkpoint has not covered yet, which
//!   `statefun kafka lag` reports offline from a state directory.
//! * **The high watermark is asked for off the worker thread.** The source's discovery
//!   thread fetches each of its partitions' watermarks every [`WATERMARK_INTERVAL`] (a
//!   blocking broker request there, never on a worker), and only once something in the
//!   process reads them ([`enable`], which serving `/metrics` calls): a job nobody watches
//!   sends the broker nothing extra. librdkafka's statistics (`hi_offset`) were not used
//!   because they come from fetch responses, which stop while the consumer's queue is full
//!   — exactly when a job falls behind and the lag matters.
//! * **Transactional producers.** With the default `isolation.level = read_committed` the
//!   watermark is the last stable offset, and commit markers occupy offsets: a partition
//!   written transactionally never shows a lag of exactly 0 while markers follow the last
//!   record read, but at most one per transaction.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::live::Live;

/// How often a source's discovery thread asks for its partitions' high watermarks (once
/// [`enable`]d): often enough for a one-second `statefun top`, one small request per
/// partition and interval.
pub const WATERMARK_INTERVAL: Duration = Duration::from_secs(1);

/// Marks a value not known yet.
const UNKNOWN: i64 = i64::MIN;

/// The live gauge of one partition a source reads.
#[derive(Debug)]
pub(crate) struct PartitionGauge {
    pub(crate) ingress: String,
    pub(crate) worker: usize,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    position: AtomicI64,
    high_watermark: AtomicI64,
}

impl PartitionGauge {
    /// The offset of the next record the source hands out.
    #[inline]
    pub(crate) fn set_position(&self, next: i64) {
        self.position.store(next, Ordering::Relaxed);
    }

    /// The partition's high watermark, as the broker last said.
    pub(crate) fn set_high_watermark(&self, high: i64) {
        self.high_watermark.store(high, Ordering::Relaxed);
    }
}

/// One partition as [`partitions`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The ingress id.
    pub ingress: String,
    /// The worker reading it (index over all processes).
    pub worker: usize,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset of the next record the job reads.
    pub position: i64,
    /// The offset after the newest record; `None` until fetched once.
    pub high_watermark: Option<i64>,
}

impl PartitionProgress {
    /// Records written to the partition that the job has not read yet, once the high
    /// watermark is known (see [`lag_between`]).
    pub fn lag(&self) -> Option<i64> {
        self.high_watermark.map(|h| lag_between(self.position, h))
    }
}

/// The lag of a reader at `position` (next offset to read) in a partition whose high
/// watermark is `high_watermark`: never negative (a watermark fetched before the reader
/// moved on is older than the position). `statefun kafka lag` computes it the same way.
///
/// ```
/// use statefun_connectors::kafka::lag::lag_between;
/// assert_eq!(lag_between(4, 10), 6);
/// assert_eq!(lag_between(12, 10), 0);
/// ```
pub fn lag_between(position: i64, high_watermark: i64) -> i64 {
    (high_watermark - position).max(0)
}

/// Every partition gauge of the process.
static LIVE: Live<PartitionGauge> = Live::new();

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Starts fetching high watermarks in every Kafka source of the process (see the module
/// docs); the engine calls it when it serves `/metrics`.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether high watermarks are wanted.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Registers a partition a source starts reading at `position`; it is listed while the
/// returned gauge lives.
pub(crate) fn register(
    ingress: &str,
    worker: usize,
    topic: &str,
    partition: i32,
    position: i64,
) -> Arc<PartitionGauge> {
    let gauge = Arc::new(PartitionGauge {
        ingress: ingress.to_string(),
        worker,
        topic: topic.to_string(),
        partition,
        position: AtomicI64::new(position),
        high_watermark: AtomicI64::new(UNKNOWN),
    });
    LIVE.add(&gauge);
    gauge
}

/// Every partition a live Kafka source of this process reads, sorted by ingress, topic,
/// partition and worker. Enables watermark fetching ([`enable`]) for later calls.
pub fn partitions() -> Vec<PartitionProgress> {
    enable();
    let mut out: Vec<PartitionProgress> = LIVE.read(|g| {
        let high = g.high_watermark.load(Ordering::Relaxed);
        PartitionProgress {
            ingress: g.ingress.clone(),
            worker: g.worker,
            topic: g.topic.clone(),
            partition: g.partition,
            position: g.position.load(Ordering::Relaxed),
            high_watermark: (high != UNKNOWN).then_some(high),
        }
    });
    out.sort_by(|a, b| {
        (&a.ingress, &a.topic, a.partition, a.worker).cmp(&(
            &b.ingress,
            &b.topic,
            b.partition,
            b.worker,
        ))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_gauges_are_listed_and_dropped_ones_leave() {
        let ingress = "lag-test/registry";
        let a = register(ingress, 1, "t", 0, 5);
        let b = register(ingress, 0, "t", 1, 7);
        a.set_high_watermark(9);
        a.set_position(6);
        let mine = |all: Vec<PartitionProgress>| -> Vec<(i32, i64, Option<i64>)> {
            all.into_iter()
                .filter(|p| p.ingress == ingress)
                .map(|p| (p.partition, p.position, p.lag()))
                .collect()
        };
        assert_eq!(mine(partitions()), vec![(0, 6, Some(3)), (1, 7, None)]);
        drop(b);
        assert_eq!(mine(partitions()), vec![(0, 6, Some(3))]);
        drop(a);
        assert!(mine(partitions()).is_empty());
    }
}
