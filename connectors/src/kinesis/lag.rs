//! Kinesis lag while the job runs: each shard reader's `MillisBehindLatest`, for the
//! engine's `/metrics`.
//!
//! `GetRecords` answers with how far the records it returned are behind the newest record
//! of the shard, in milliseconds (0: the reader is at the tip). Every shard reader of a
//! [`crate::kinesis::KinesisSource`] keeps a gauge of the last answer while it reads the
//! shard (a [`crate::live`] list: a reader that ends — the shard closed and read to its
//! end, the source dropped — leaves it). Unlike Kafka's lag it costs the service nothing:
//! it comes with the calls the reader makes anyway. It measures the *reader*: records it
//! handed to the worker's bounded channel and the worker has not taken yet are not in it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::live::Live;

/// Marks a shard no `GetRecords` has answered for yet.
const UNKNOWN: i64 = i64::MIN;

/// The live gauge of one shard a source reads.
#[derive(Debug)]
pub(crate) struct ShardGauge {
    ingress: String,
    worker: usize,
    stream: String,
    shard: String,
    millis_behind_latest: AtomicI64,
}

impl ShardGauge {
    /// The last `MillisBehindLatest` the service answered.
    pub(crate) fn set(&self, millis: i64) {
        self.millis_behind_latest.store(millis, Ordering::Relaxed);
    }
}

/// One shard as [`shards`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardProgress {
    /// The ingress id.
    pub ingress: String,
    /// The worker reading it (index over all processes).
    pub worker: usize,
    /// The stream key (its ARN when the ingress names it by ARN, else its name).
    pub stream: String,
    /// The shard id.
    pub shard: String,
    /// How far the reader is behind the shard's newest record; `None` before the first
    /// answer.
    pub millis_behind_latest: Option<i64>,
}

/// Every shard gauge of the process.
static LIVE: Live<ShardGauge> = Live::new();

/// Registers a shard a reader starts reading; it is listed while the returned gauge lives.
pub(crate) fn register(ingress: &str, worker: usize, stream: &str, shard: &str) -> Arc<ShardGauge> {
    let gauge = Arc::new(ShardGauge {
        ingress: ingress.to_string(),
        worker,
        stream: stream.to_string(),
        shard: shard.to_string(),
        millis_behind_latest: AtomicI64::new(UNKNOWN),
    });
    LIVE.add(&gauge);
    gauge
}

/// Every shard a live Kinesis reader of this process reads, sorted by ingress, stream,
/// shard and worker.
pub fn shards() -> Vec<ShardProgress> {
    let mut out = LIVE.read(|g| {
        let millis = g.millis_behind_latest.load(Ordering::Relaxed);
        ShardProgress {
            ingress: g.ingress.clone(),
            worker: g.worker,
            stream: g.stream.clone(),
            shard: g.shard.clone(),
            millis_behind_latest: (millis != UNKNOWN).then_some(millis),
        }
    });
    out.sort_by(|a, b| {
        (&a.ingress, &a.stream, &a.shard, a.worker)
            .cmp(&(&b.ingress, &b.stream, &b.shard, b.worker))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_listed_while_its_reader_reads() {
        let ingress = "lag-test/kinesis";
        let a = register(ingress, 0, "s", "shardId-000000000001");
        let b = register(ingress, 1, "s", "shardId-000000000000");
        a.set(1500);
        let mine = || -> Vec<(String, Option<i64>)> {
            shards()
                .into_iter()
                .filter(|s| s.ingress == ingress)
                .map(|s| (s.shard, s.millis_behind_latest))
                .collect()
        };
        assert_eq!(
            mine(),
            [
                ("shardId-000000000000".to_string(), None),
                ("shardId-000000000001".to_string(), Some(1500))
            ]
        );
        drop(b);
        assert_eq!(mine(), [("shardId-000000000001".to_string(), Some(1500))]);
        drop(a);
        assert!(mine().is_empty());
    }
}
