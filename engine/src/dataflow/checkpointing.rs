//! The dataflow side of checkpoints: what a worker's operators share about
//! the checkpoint in progress, the control records between function
//! operators and sinks, and the startup agreement on what to restore.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use statefun_sdk::EgressMessage;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::worker::Worker;

use crate::checkpoint::{Evidence, Schedule};
use crate::shared::Shared;

/// The outer-scope time at which function operators announce that they finished.
pub(crate) const FINISH_EPOCH: u64 = u64::MAX - 1;

/// What a worker's sources, function operator and sinks share about checkpoints.
pub struct WorkerCheckpoint {
    /// Which epochs are checkpoints, and their ids.
    pub schedule: Schedule,
    /// Where each ingress resumes (from the restored checkpoint), by ingress id.
    pub resume: BTreeMap<String, Vec<u8>>,
    /// Positions of each ingress (by id), keyed by the epoch they were taken
    /// at the start of: the entry at `b` covers every record of epochs `< b`.
    positions: BTreeMap<String, BTreeMap<u64, Vec<u8>>>,
}

/// A worker's checkpoint context, shared by its operators (one thread).
pub type SharedCheckpoint = Rc<RefCell<WorkerCheckpoint>>;

impl WorkerCheckpoint {
    /// A context for a run with `schedule`, resuming sources at `resume`.
    pub fn new(schedule: Schedule, resume: BTreeMap<String, Vec<u8>>) -> Self {
        WorkerCheckpoint {
            schedule,
            resume,
            positions: BTreeMap::new(),
        }
    }

    /// Records that `ingress` is at `position` as epoch `from` begins
    /// (every record it emitted so far is stamped with an earlier epoch).
    pub fn record(&mut self, ingress: &str, from: u64, position: Vec<u8>) {
        match self.positions.get_mut(ingress) {
            Some(p) => {
                p.insert(from, position);
            }
            None => {
                self.positions
                    .insert(ingress.to_owned(), BTreeMap::from([(from, position)]));
            }
        }
    }

    /// The position entries every checkpoint epoch from `lo` to `hi` needs
    /// (see [`crate::checkpoint::position_at`]), dropping entries no later
    /// checkpoint needs.
    pub fn positions_between(&mut self, lo: u64, hi: u64) -> crate::checkpoint::SourcePositions {
        let mut out = Vec::with_capacity(self.positions.len());
        for (ingress, by_epoch) in self.positions.iter_mut() {
            let first = at_or_last(by_epoch, lo);
            let last = at_or_last(by_epoch, hi);
            let (Some(first), Some(last)) = (first, last) else {
                continue;
            };
            let entries = by_epoch
                .range(first..=last)
                .map(|(b, p)| (*b, p.clone()))
                .collect();
            let keep = by_epoch.split_off(&last);
            *by_epoch = keep;
            out.push((ingress.clone(), entries));
        }
        out
    }
}

/// The key of the entry that goes with checkpoint epoch `c`: the first
/// taken after `c`, else the newest.
fn at_or_last(by_epoch: &BTreeMap<u64, Vec<u8>>, c: u64) -> Option<u64> {
    by_epoch
        .range(c.saturating_add(1)..)
        .next()
        .map(|(b, _)| *b)
        .or_else(|| by_epoch.keys().next_back().copied())
}

/// Records from function operators to sinks besides egress records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Control {
    /// An egress record of a restored checkpoint that may not have been delivered.
    Replay {
        /// The worker whose outbox held it.
        worker: usize,
        /// Its checkpoint.
        checkpoint: u64,
        /// The record.
        message: EgressMessage,
    },
    /// A worker durably wrote its checkpoint, standing for every checkpoint
    /// epoch up to `through` ([`FINISH_EPOCH`] for the final one): the
    /// positive evidence sinks and merges wait for (`checkpoint::evidence`).
    Written {
        /// The worker.
        worker: usize,
        /// The last checkpoint epoch its write covers.
        through: u64,
    },
    /// A function operator is done: `clean` if it wrote the final checkpoint
    /// (everything processed), not if it dropped work at shutdown.
    Finished {
        /// The worker.
        worker: usize,
        /// Whether the final checkpoint was written.
        clean: bool,
    },
    /// A worker's process began to stop: a shutdown request (`failure: None`)
    /// or a failure. Every process stops with it, so no part of a job runs on
    /// alone (`Shared` is per process; this record carries it across).
    Stop {
        /// The worker that saw it first in its process.
        worker: usize,
        /// The failure, if the job is failing.
        failure: Option<String>,
    },
}

/// What a worker knows of every worker's checkpoint writes and every sink
/// operator's deliveries, from [`Control::Written`] tokens and the sinks'
/// delivery tokens. Shared by the worker's sinks (which deliver a checkpoint
/// only when `written` covers it) and its function operator (which merges
/// state and deletes outboxes only behind `written` and `delivered`).
pub struct CheckpointEvidence {
    /// Per worker: the newest checkpoint epoch it wrote through.
    pub written: Evidence,
    /// Per sink operator (two per worker, see [`sink_slot`]): the newest
    /// checkpoint epoch it delivered through.
    pub delivered: Evidence,
    /// Whether a missing token was already reported (fail once).
    pub reported: bool,
}

/// A worker's evidence, shared by its operators (one thread).
pub type SharedEvidence = Rc<RefCell<CheckpointEvidence>>;

impl CheckpointEvidence {
    /// Evidence for a job of `peers` workers.
    pub fn new(peers: usize) -> SharedEvidence {
        Rc::new(RefCell::new(CheckpointEvidence {
            written: Evidence::new(peers),
            delivered: Evidence::new(2 * peers),
            reported: false,
        }))
    }
}

/// The delivery-evidence slot of a sink operator: each worker runs one for
/// single-writer sinks and one for the others.
pub fn sink_slot(worker: usize, single_writers: bool) -> usize {
    2 * worker + usize::from(single_writers)
}

/// Takes in the control records every worker broadcasts: checkpoint tokens
/// go into `evidence`, a peer's stop or failure into this process's `shared`.
/// Returns the same stream for the sinks (replayed outboxes, finish marks).
pub(crate) fn observe_control<'s>(
    control: timely::dataflow::Stream<'s, u64, Vec<Control>>,
    evidence: SharedEvidence,
    shared: std::sync::Arc<Shared>,
) -> timely::dataflow::Stream<'s, u64, Vec<Control>> {
    control.broadcast().inspect(move |c: &Control| match c {
        Control::Written { worker, through } => {
            evidence.borrow_mut().written.token(*worker, *through);
        }
        Control::Finished {
            worker,
            clean: true,
        } => {
            evidence.borrow_mut().written.token(*worker, FINISH_EPOCH);
        }
        Control::Stop { worker, failure } => take_peer_stop(&shared, *worker, failure.as_deref()),
        Control::Replay { .. } | Control::Finished { .. } => {}
    })
}

/// A worker's [`Control::Stop`] applied to this process: its failure fails
/// this process too, naming the worker; a shutdown makes it drain as well.
/// (This process's own announcement comes back here and changes nothing.)
pub(crate) fn take_peer_stop(shared: &Shared, worker: usize, failure: Option<&str>) {
    match failure {
        Some(failure) => {
            if !shared.failed() {
                shared.fail(format!("worker {worker} failed: {failure}"));
            }
        }
        None => {
            if !shared.shutting_down() {
                tracing::info!(worker, "a peer is shutting down; draining with it");
                shared.request_shutdown();
            }
        }
    }
}

/// Every worker's `report`, exchanged before the main dataflow is built (every worker
/// must call it the same number of times: it waits for all of them).
pub(crate) fn exchange_all<T: timely::ExchangeData + Clone>(
    worker: &mut Worker,
    report: T,
) -> Vec<T> {
    let heard = Rc::new(RefCell::new(Vec::new()));
    let sink = heard.clone();
    let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
        let (input, stream) = scope.new_input::<Vec<T>>();
        let (probe, _) = stream
            .broadcast()
            .inspect(move |r: &T| sink.borrow_mut().push(r.clone()))
            .probe();
        (input, probe)
    });
    input.send(report);
    drop(input);
    while !probe.done() {
        worker.step();
    }
    let reports = heard.borrow().clone();
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_go_with_the_checkpoints_they_cover() {
        use crate::checkpoint::position_at;
        let mut w = WorkerCheckpoint::new(Schedule::new(10, None), BTreeMap::new());
        // The source moved its capability 5 → 12 → 40 and recorded where it was.
        w.record("in", 5, b"a".to_vec());
        w.record("in", 12, b"b".to_vec());
        w.record("in", 40, b"c".to_vec());
        let got = w.positions_between(9, 9);
        // Records read before "b" were stamped 5: checkpoint 9 resumes at "b".
        assert_eq!(position_at(&got[0].1, 9), Some(&b"b"[..]));
        let got = w.positions_between(19, 39);
        // Records between "b" and "c" were all stamped 12 (≤ 19).
        assert_eq!(position_at(&got[0].1, 19), Some(&b"c"[..]));
        assert_eq!(position_at(&got[0].1, 39), Some(&b"c"[..]));
        // The final checkpoint: the last position, even without a later entry.
        w.record("in", u64::MAX, b"end".to_vec());
        let got = w.positions_between(49, u64::MAX - 1);
        assert_eq!(position_at(&got[0].1, u64::MAX - 1), Some(&b"end"[..]));
    }
}
