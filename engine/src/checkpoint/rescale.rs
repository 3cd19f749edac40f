//! Rescaling from a checkpoint: the decisions, kept apart from the I/O that carries them
//! out (`dataflow::rescale`).
//!
//! A job whose state was written by `N` workers in total can start with `M ≠ N`. Every
//! new worker looks into its process's state directory and reports the `worker-K`
//! databases it can read ([`Inventory`]); [`decide`] then picks, the same way on every
//! worker, what happens:
//!
//! * **[`Decision::Keep`]**: the worker count did not change (or there is no state):
//!   the ordinary restore.
//! * **[`Decision::Rescale`]**: every old database `0..N` was found (each read by one new
//!   worker, its own owner if it has it); the checkpoint to move is the newest one
//!   complete on every old worker, by the very rule an ordinary restore applies
//!   ([`super::agree`]). The new workers then build their databases beside the old ones
//!   and commit (see `dataflow::rescale` for the protocol).
//! * **[`Decision::Finish`]**: a rescale's commit had started when the job stopped (a
//!   commit marker exists): it is finished, never redone or undone, because the markers
//!   are written only once every new database is complete.
//!
//! Key groups never change (4096, in contiguous ranges per worker, see
//! [`crate::keygroup`]), so a rescale moves whole key groups and the new owner of each
//! state entry, delayed message and in-flight message follows from its key.

use serde::{Deserialize, Serialize};

use super::{agree, key_groups_of, WorkerReport};

/// One `worker-K` state database a worker found in its process's state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// What the database holds (its `worker` is the `K` of `worker-K`).
    pub report: WorkerReport,
    /// Whether the finder is worker `K` itself (its own database).
    pub own: bool,
}

/// What a worker found at startup; exchanged with every worker before anything is restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The worker (index in the job starting now).
    pub worker: usize,
    /// The databases it can read.
    pub found: Vec<Found>,
    /// The plan of a rescale whose commit had started in this worker's directory.
    pub committing: Option<Plan>,
    /// Why the worker could not look, if it could not.
    pub error: Option<String>,
}

/// A rescale, as every worker carries it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The checkpoint moved (`None`: none was complete on every old worker, so the old
    /// databases are retired and the job starts fresh, as an ordinary restart would).
    pub checkpoint: Option<u64>,
    /// The worker count the state was written with.
    pub from: usize,
    /// The worker count of the job starting now.
    pub to: usize,
    /// `(old worker, new worker that reads its database)`, for every old worker.
    pub readers: Vec<(usize, usize)>,
}

impl Plan {
    /// The old databases new worker `worker` reads.
    pub fn read_by(&self, worker: usize) -> impl Iterator<Item = usize> + '_ {
        self.readers
            .iter()
            .filter(move |(_, r)| *r == worker)
            .map(|(old, _)| *old)
    }
}

/// The staging area of a rescale inside a state directory: new databases
/// (`worker-N`), commit markers (`commit-N`) and retired old databases (`retired/`).
pub const STAGING: &str = "rescale";

/// Where worker `worker`'s commit marker of a rescale lives in `state_dir`.
pub fn marker_path(state_dir: &std::path::Path, worker: usize) -> std::path::PathBuf {
    state_dir.join(STAGING).join(format!("commit-{worker}"))
}

/// The plan in the commit marker at `path`; `None` when there is none, an error naming
/// the file when it cannot be read or is damaged.
pub fn read_marker(path: &std::path::Path) -> Result<Option<Plan>, String> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        format!(
            "{} is not a rescale commit marker ({e}); it was damaged: restore the state \
             directories from a backup",
            path.display()
        )
    })
}

/// The plan of a rescale whose commit had started in `state_dir` (a commit marker is
/// there), for tools: a start with `plan.to` workers finishes it.
pub fn interrupted(state_dir: &std::path::Path) -> Option<Plan> {
    let entries = std::fs::read_dir(state_dir.join(STAGING)).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("commit-"))
        .find_map(|e| read_marker(&e.path()).ok().flatten())
}

/// What the workers do before the ordinary restore (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restore as usual.
    Keep,
    /// Move the state to the new worker count.
    Rescale(Plan),
    /// Finish the commit of an interrupted rescale.
    Finish(Plan),
}

/// Whether a database holds anything of a job (a manifest or a checkpoint).
fn holds(report: &WorkerReport) -> bool {
    report.peers.is_some() || !report.restorable.is_empty()
}

/// Decides what a job of `peers` workers does with the databases its workers found
/// (see the module docs); the same on every worker, since every worker decides from
/// every worker's inventory.
///
/// ```
/// use statefun_engine::checkpoint::rescale::{decide, Decision, Found, Inventory};
/// use statefun_engine::checkpoint::WorkerReport;
/// let db = |worker, peers| WorkerReport { worker, peers: Some(peers), restorable: vec![(7, 7)],
///     error: None, merged: true, missing: false };
/// let inv = |worker, found: Vec<Found>| Inventory { worker, found, committing: None, error: None };
/// // One worker's database, and a job of two now: worker 0 reads it.
/// let d = decide(&[inv(0, vec![Found { report: db(0, 1), own: true }]), inv(1, vec![])], 2).unwrap();
/// let Decision::Rescale(plan) = d else { panic!() };
/// assert_eq!((plan.checkpoint, plan.from, plan.to, plan.readers), (Some(7), 1, 2, vec![(0, 0)]));
/// ```
pub fn decide(inventories: &[Inventory], peers: usize) -> Result<Decision, String> {
    if let Some(e) = inventories.iter().find_map(|i| i.error.as_ref()) {
        return Err(e.clone());
    }
    let mut committing: Vec<&Plan> = inventories
        .iter()
        .filter_map(|i| i.committing.as_ref())
        .collect();
    committing.dedup();
    if let Some(plan) = committing.first() {
        if committing.iter().any(|p| p != plan) {
            return Err(format!(
                "the state directories hold the commits of different rescales ({committing:?}); \
                 they are from different jobs or runs: restore them from one job"
            ));
        }
        if plan.to != peers {
            return Err(format!(
                "a rescale from {} to {} workers was interrupted while it committed; restart \
                 with {} workers in total (-w threads × -n processes) to finish it, then rescale \
                 again if you want another worker count",
                plan.from, plan.to, plan.to
            ));
        }
        return Ok(Decision::Finish((*plan).clone()));
    }
    // Per old worker, the database read: one that holds something before an empty one
    // (a worker that never wrote), its own worker's copy before another finder's, then
    // the lowest finder's. A directory that did not exist is no database at all.
    let rank = |finder: usize, f: &Found| (!holds(&f.report), !f.own, finder);
    let mut chosen: std::collections::BTreeMap<usize, (usize, &Found)> = Default::default();
    for inv in inventories {
        for found in inv.found.iter().filter(|f| !f.report.missing) {
            let k = found.report.worker;
            let better = chosen
                .get(&k)
                .is_none_or(|(finder, f)| rank(inv.worker, found) < rank(*finder, f));
            if better {
                chosen.insert(k, (inv.worker, found));
            }
        }
    }
    let databases: Vec<(usize, usize, &WorkerReport)> = chosen
        .iter()
        .map(|(k, (finder, f))| (*k, *finder, &f.report))
        .collect();
    let holding: Vec<&(usize, usize, &WorkerReport)> =
        databases.iter().filter(|(_, _, r)| holds(r)).collect();
    let mut counts: Vec<usize> = holding.iter().filter_map(|(_, _, r)| r.peers).collect();
    counts.sort_unstable();
    counts.dedup();
    let from = match counts.as_slice() {
        [] => return Ok(Decision::Keep),
        [n] => *n,
        _ => {
            let listing: Vec<String> = holding
                .iter()
                .map(|(k, _, r)| format!("worker-{k}: {:?} workers", r.peers))
                .collect();
            return Err(format!(
                "the state databases were written by jobs of different worker counts ({}); \
                 they are from different jobs: give each process only the directories of one job",
                listing.join(", ")
            ));
        }
    };
    if from == peers {
        return Ok(Decision::Keep);
    }
    let missing: Vec<usize> = (0..from)
        .filter(|k| !databases.iter().any(|(h, _, _)| h == k))
        .collect();
    if !missing.is_empty() {
        let named: Vec<String> = missing
            .iter()
            .map(|k| format!("worker-{k} (key groups {})", key_groups_of(*k, from)))
            .collect();
        return Err(format!(
            "cannot rescale from {from} to {peers} workers: the state of {} is in none of the \
             state directories of this job; copy (or mount) every worker-N directory of the \
             old job into the --state-dir of some process, then start again; nothing was changed",
            named.join(", ")
        ));
    }
    let old: Vec<&(usize, usize, &WorkerReport)> =
        databases.iter().filter(|(k, _, _)| *k < from).collect();
    let reports: Vec<WorkerReport> = old.iter().map(|(_, _, r)| (*r).clone()).collect();
    let checkpoint = agree(&reports, from)?;
    let readers = old.iter().map(|(k, finder, _)| (*k, *finder)).collect();
    Ok(Decision::Rescale(Plan {
        checkpoint,
        from,
        to: peers,
        readers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(worker: usize, peers: usize, ids: &[u64]) -> WorkerReport {
        WorkerReport {
            worker,
            peers: Some(peers),
            restorable: ids.iter().map(|&i| (i, i)).collect(),
            error: None,
            merged: true,
            missing: false,
        }
    }

    fn inv(worker: usize, found: &[(WorkerReport, bool)]) -> Inventory {
        Inventory {
            worker,
            found: found
                .iter()
                .map(|(report, own)| Found {
                    report: report.clone(),
                    own: *own,
                })
                .collect(),
            committing: None,
            error: None,
        }
    }

    #[test]
    fn the_same_count_or_no_state_restores_as_usual() {
        let two = [
            inv(0, &[(db(0, 2, &[5]), true)]),
            inv(1, &[(db(1, 2, &[5]), true)]),
        ];
        assert_eq!(decide(&two, 2), Ok(Decision::Keep));
        assert_eq!(decide(&[inv(0, &[]), inv(1, &[])], 2), Ok(Decision::Keep));
    }

    #[test]
    fn shrinking_reads_orphans_where_they_were_found() {
        // 4 → 2 in one process: workers 2 and 3 are orphans, found by the local workers.
        let d = decide(
            &[
                inv(0, &[(db(0, 4, &[5, 6]), true), (db(2, 4, &[5]), false)]),
                inv(1, &[(db(1, 4, &[5, 6]), true), (db(3, 4, &[5, 6]), false)]),
            ],
            2,
        )
        .unwrap();
        assert_eq!(
            d,
            Decision::Rescale(Plan {
                checkpoint: Some(5),
                from: 4,
                to: 2,
                readers: vec![(0, 0), (1, 1), (2, 0), (3, 1)],
            })
        );
    }

    #[test]
    fn a_database_is_read_by_its_own_worker_before_any_other_finder() {
        // A shared directory: every process sees worker-1; worker 1 reads it.
        let d = decide(
            &[
                inv(0, &[(db(0, 2, &[5]), true), (db(1, 2, &[5]), false)]),
                inv(1, &[(db(1, 2, &[5]), true)]),
                inv(2, &[(db(0, 2, &[5]), false), (db(1, 2, &[5]), false)]),
            ],
            3,
        )
        .unwrap();
        let Decision::Rescale(plan) = d else {
            panic!("{d:?}")
        };
        assert_eq!(plan.readers, vec![(0, 0), (1, 1)]);
        assert_eq!(plan.read_by(1).collect::<Vec<_>>(), vec![1]);
        // Not found by its own worker: the lowest finder reads it.
        let d = decide(
            &[
                inv(0, &[(db(0, 2, &[5]), true)]),
                inv(2, &[(db(1, 2, &[5]), false)]),
                inv(1, &[(db(1, 2, &[5]), false)]),
            ],
            3,
        )
        .unwrap();
        let Decision::Rescale(plan) = d else {
            panic!("{d:?}")
        };
        assert_eq!(plan.readers, vec![(0, 0), (1, 1)]);
    }

    #[test]
    fn a_missing_old_database_is_an_error_naming_its_key_groups() {
        let err = decide(
            &[inv(0, &[(db(0, 2, &[5]), true)]), inv(1, &[]), inv(2, &[])],
            3,
        )
        .unwrap_err();
        assert!(
            err.contains("worker-1 (key groups 2048..=4095)")
                && err.contains("nothing was changed"),
            "{err}"
        );
    }

    #[test]
    fn the_checkpoint_moved_is_the_newest_complete_on_every_old_worker() {
        // Worker 1 crashed before writing checkpoint 6 (a SIGKILL mid-checkpoint).
        let d = decide(
            &[inv(
                0,
                &[(db(0, 2, &[5, 6]), true), (db(1, 2, &[5]), false)],
            )],
            1,
        )
        .unwrap();
        let Decision::Rescale(plan) = d else {
            panic!("{d:?}")
        };
        assert_eq!(plan.checkpoint, Some(5));
        // Nothing ever complete everywhere: the rescale starts fresh, as a restart would.
        let first = |w| WorkerReport {
            merged: false,
            ..db(w, 2, &[9])
        };
        let fresh = WorkerReport {
            restorable: vec![],
            ..first(1)
        };
        let d = decide(&[inv(0, &[(first(0), true), (fresh, false)])], 1).unwrap();
        let Decision::Rescale(plan) = d else {
            panic!("{d:?}")
        };
        assert_eq!(plan.checkpoint, None);
    }

    #[test]
    fn an_old_worker_that_never_wrote_is_no_missing_database() {
        // Worker 1 of 2 crashed before its first checkpoint; worker 0's was never
        // complete everywhere: as a restart would, the rescale starts fresh.
        let wrote = WorkerReport {
            merged: false,
            ..db(0, 2, &[9])
        };
        let empty = WorkerReport {
            peers: None,
            restorable: vec![],
            merged: false,
            ..db(1, 2, &[])
        };
        let d = decide(&[inv(0, &[(wrote, true), (empty.clone(), false)])], 1).unwrap();
        let Decision::Rescale(plan) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            (plan.checkpoint, plan.readers),
            (None, vec![(0, 0), (1, 0)])
        );
        // An own directory created just now (missing before) is not a database.
        let created = WorkerReport {
            missing: true,
            ..empty
        };
        let err = decide(
            &[
                inv(0, &[(db(0, 2, &[5]), true)]),
                inv(1, &[(created, true)]),
            ],
            3,
        )
        .unwrap_err();
        assert!(err.contains("worker-1"), "{err}");
    }

    #[test]
    fn mixed_jobs_and_interrupted_commits() {
        let err = decide(
            &[inv(0, &[(db(0, 2, &[5]), true), (db(1, 3, &[5]), false)])],
            1,
        )
        .unwrap_err();
        assert!(err.contains("different worker counts"), "{err}");
        let plan = Plan {
            checkpoint: Some(5),
            from: 2,
            to: 3,
            readers: vec![(0, 0), (1, 1)],
        };
        let mut committing = inv(1, &[]);
        committing.committing = Some(plan.clone());
        // Whatever the other directories show, a started commit is finished.
        let others = inv(0, &[(db(0, 2, &[5]), true)]);
        assert_eq!(
            decide(&[others.clone(), committing.clone()], 3),
            Ok(Decision::Finish(plan))
        );
        let err = decide(&[others, committing], 4).unwrap_err();
        assert!(err.contains("restart with 3 workers"), "{err}");
    }
}
