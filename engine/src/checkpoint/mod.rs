//! Checkpoints: durable state, frontier-driven commits and recovery.
//!
//! The protocol (DESIGN.md §3), and where each part lives:
//!
//! * **Schedule** ([`Schedule`]): every `k`-th epoch is a checkpoint epoch.
//!   Workers compute it from the epoch number alone, so they agree on which
//!   epochs are checkpoints without talking.
//! * **Snapshot** (the function operator): for checkpoint epoch `c`, messages
//!   of later epochs are stashed until the operator's input frontier passes
//!   `c`; then the worker's state reflects exactly the epochs `≤ c`, and
//!   [`DurableBackend::checkpoint`] writes the state changes, the messages it
//!   sent into later epochs, its pending delayed messages, its sources'
//!   positions and the egress records of the checkpoint (the outbox) as one
//!   synced, atomic batch.
//! * **Completion needs positive evidence** ([`Evidence`]): once its batch
//!   is durable, each worker sends a token saying which checkpoint epochs it
//!   covers. A sink delivers checkpoint `c` only when it holds a token for `c`
//!   from every worker of every process *and* its input frontier has passed
//!   `c` (every record of `c` has arrived). A frontier alone is not evidence:
//!   a failed worker releases its capabilities without writing. When the
//!   token stream's frontier passes `c` and a token is missing, the job fails.
//! * **Delivery needs positive evidence too**: each sink operator sends a
//!   token once it delivered (and, for exactly-once sinks, committed) a
//!   checkpoint; a worker deletes outbox entries and merges pending state only
//!   behind what every sink operator, and every worker, has confirmed.
//! * **Recovery** ([`agree`], [`DurableBackend::restore`]): workers exchange
//!   the checkpoints they can restore and pick the newest one every worker
//!   has; each worker rolls its store forward or back to it, and re-sends
//!   its in-flight messages and undelivered outbox.
//!
//! A worker writes checkpoint `c`'s state changes beside the main state
//! (as *pending* deltas) and merges them into the main state only once `c`
//! is known to be complete on every worker. That keeps every worker able to
//! return to the newest globally complete checkpoint, which a worker that
//! raced ahead of a crashed peer must do.

mod census;
mod durable;
mod evidence;
mod hot;
pub mod rescale;
mod rocks;
mod store;

use serde::{Deserialize, Serialize};
use statefun_sdk::EgressMessage;

use crate::state::StateBackend;

pub use durable::{
    list, position_at, put_state, seal_rescaled, source_positions, state_chunk, state_key_group,
    CheckpointInfo, CheckpointMeta, CheckpointStats, DurableBackend, Manifest, Recovered,
    WorkerCheckpoints, Written,
};
pub use evidence::{Evidence, Verdict};
pub use rocks::{RocksStore, StateMemory};
pub use store::{Batch, Entries, MemoryStore, Store, StoreError};

/// Makes the creation, renaming and removal of files in `dir` durable (their data is
/// synced separately).
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Source positions kept in a checkpoint: per ingress id, `(epoch, position)`
/// entries (see [`position_at`]).
pub type SourcePositions = Vec<(String, Vec<(u64, Vec<u8>)>)>;

/// A state backend that can write checkpoints (what the function operator needs).
pub trait CheckpointBackend: StateBackend {
    /// Writes checkpoint `meta.id` in the background (see
    /// [`DurableBackend::checkpoint_in_background`]); `waker` is called when a write ends.
    fn checkpoint_in_background(
        &mut self,
        meta: CheckpointMeta,
        outbox: &[EgressMessage],
        complete_through: Option<u64>,
        delivered_through: Option<u64>,
        waker: &std::sync::Arc<dyn Fn() + Send + Sync>,
    ) -> Result<CheckpointStats, String>;
    /// Background writes finished since the last call (see [`DurableBackend::poll_written`]).
    fn poll_written(&mut self) -> Vec<Written>;
    /// Waits for every background write (see [`DurableBackend::wait_written`]).
    fn wait_written(&mut self) -> Vec<Written>;
}

impl<S: Store> CheckpointBackend for DurableBackend<S> {
    fn checkpoint_in_background(
        &mut self,
        meta: CheckpointMeta,
        outbox: &[EgressMessage],
        complete_through: Option<u64>,
        delivered_through: Option<u64>,
        waker: &std::sync::Arc<dyn Fn() + Send + Sync>,
    ) -> Result<CheckpointStats, String> {
        DurableBackend::checkpoint_in_background(
            self,
            meta,
            outbox,
            complete_through,
            delivered_through,
            waker,
        )
    }

    fn poll_written(&mut self) -> Vec<Written> {
        DurableBackend::poll_written(self)
    }

    fn wait_written(&mut self) -> Vec<Written> {
        DurableBackend::wait_written(self)
    }
}

/// Bits of a checkpoint id that hold the epoch; the rest hold the run generation.
const EPOCH_BITS: u32 = 42;
pub(crate) const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;

/// Which epochs are checkpoints, and the id of each checkpoint.
///
/// Ids must grow across restarts even if the wall clock (and so the epoch
/// numbers) goes back, and the final checkpoint of a run (taken when all
/// input is processed) must get the same id on every worker without
/// agreement. So an id is `generation << 42 | epoch`, where the generation
/// is one more than the restored checkpoint's, and the final checkpoint of a
/// run has the largest epoch value. 42 bits of epoch cover 139 years of 1 ms
/// epochs since 1970; 22 bits of generation allow four million restarts.
///
/// ```
/// use statefun_engine::checkpoint::Schedule;
/// let s = Schedule::new(100, None);
/// assert!(s.is_checkpoint(99) && !s.is_checkpoint(100));
/// assert_eq!(s.next_at_or_after(100), 199);
/// assert_eq!(s.last_before(250), Some(199));
/// assert_eq!(s.last_before(99), None);
/// assert!(s.id(199) > s.id(99) && s.final_id() > s.id(199));
/// // After restoring any checkpoint of this run, ids are larger.
/// assert!(Schedule::new(100, Some(s.final_id())).id(0) > s.final_id());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    every: u64,
    generation: u64,
}

impl Schedule {
    /// Checkpoints every `every` epochs (at least 1), in the run after restoring `restored`.
    pub fn new(every: u64, restored: Option<u64>) -> Self {
        Schedule {
            every: every.max(1),
            generation: restored.map_or(0, |id| (id >> EPOCH_BITS) + 1),
        }
    }

    /// Epochs per checkpoint.
    pub fn every(&self) -> u64 {
        self.every
    }

    /// Whether epoch `e` ends a checkpoint.
    pub fn is_checkpoint(&self, e: u64) -> bool {
        (e + 1).is_multiple_of(self.every)
    }

    /// The first checkpoint epoch at or after `e`.
    pub fn next_at_or_after(&self, e: u64) -> u64 {
        (e / self.every) * self.every + (self.every - 1)
    }

    /// The last checkpoint epoch before `frontier` (the checkpoint a frontier at `frontier` completes).
    pub fn last_before(&self, frontier: u64) -> Option<u64> {
        let k = frontier / self.every;
        (k > 0).then(|| k * self.every - 1)
    }

    /// The id of the checkpoint at epoch `c`.
    pub fn id(&self, c: u64) -> u64 {
        (self.generation << EPOCH_BITS) | (c & EPOCH_MASK).min(EPOCH_MASK - 1)
    }

    /// The id of this run's final checkpoint, taken when all input is processed.
    pub fn final_id(&self) -> u64 {
        (self.generation << EPOCH_BITS) | EPOCH_MASK
    }

    /// The id of checkpoint epoch `c`, where `final_epoch` (the epoch the
    /// final checkpoint is taken at) maps to [`Schedule::final_id`].
    pub fn id_or_final(&self, c: u64, final_epoch: u64) -> u64 {
        if c >= final_epoch {
            self.final_id()
        } else {
            self.id(c)
        }
    }
}

/// Splits a checkpoint id into (generation, epoch) for display; the final
/// checkpoint of a run shows as epoch `None`.
pub fn describe_id(id: u64) -> (u64, Option<u64>) {
    let epoch = id & EPOCH_MASK;
    (id >> EPOCH_BITS, (epoch != EPOCH_MASK).then_some(epoch))
}

/// What every worker reported at startup: the checkpoints it can restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker's index.
    pub worker: usize,
    /// The number of workers the state was written with (None: empty store).
    pub peers: Option<usize>,
    /// The checkpoints it can restore, ascending: (first, last) id each
    /// written checkpoint covers.
    pub restorable: Vec<(u64, u64)>,
    /// Why the worker could not open its state, if it could not.
    pub error: Option<String>,
    /// Whether the worker ever learned that a checkpoint was complete on
    /// every worker (and merged it). If none did, no checkpoint was ever
    /// complete, nothing of one was delivered, and starting fresh is safe.
    pub merged: bool,
    /// Whether the worker's state directory did not exist before this run
    /// (so it is new and empty). With other workers holding checkpoints that
    /// means it was lost or not copied over: an error, never a fresh start
    /// that would discard the others' state.
    #[serde(default)]
    pub missing: bool,
}

/// Picks the checkpoint every worker restores: the newest one that all of
/// them can restore, or none on a fresh start.
///
/// Errors (never a silent loss of state) when the worker count differs from
/// the one the state was written with, or when some workers have state and
/// others none or nothing in common.
///
/// ```
/// use statefun_engine::checkpoint::{agree, WorkerReport};
/// let r = |worker, ids: &[(u64, u64)]| WorkerReport { worker, peers: Some(2), restorable: ids.to_vec(), error: None, merged: true, missing: false };
/// assert_eq!(agree(&[r(0, &[(5, 5), (6, 6)]), r(1, &[(5, 5)])], 2), Ok(Some(5)));
/// // A worker whose one write covered checkpoints 5..=9 agrees on 8.
/// assert_eq!(agree(&[r(0, &[(5, 9)]), r(1, &[(5, 5), (8, 8)])], 2), Ok(Some(8)));
/// let fresh = |worker| WorkerReport { worker, peers: None, restorable: vec![], error: None, merged: false, missing: false };
/// assert_eq!(agree(&[fresh(0), fresh(1)], 2), Ok(None));
/// assert!(agree(&[r(0, &[(5, 5)]), fresh(1)], 2).is_err());
/// // A first checkpoint that only some workers wrote was never complete: start fresh.
/// let unmerged = WorkerReport { merged: false, ..r(0, &[(5, 9)]) };
/// assert_eq!(agree(&[unmerged, fresh(1)], 2), Ok(None));
/// assert!(agree(&[r(0, &[(5, 5)]), r(1, &[(5, 5)])], 4).unwrap_err().contains("2 workers"));
/// ```
pub fn agree(reports: &[WorkerReport], peers: usize) -> Result<Option<u64>, String> {
    let mut reports = reports.to_vec();
    reports.sort_by_key(|r| r.worker);
    if let Some(e) = reports.iter().find_map(|r| r.error.as_ref()) {
        return Err(e.clone());
    }
    if let Some(r) = reports.iter().find(|r| r.peers.is_some_and(|p| p != peers)) {
        return Err(format!(
            "the state was written by a job with {} workers, but this job has {peers}: \
             restart with {} workers in total (-w threads × -n processes), or start from an empty --state-dir",
            r.peers.unwrap_or(0),
            r.peers.unwrap_or(0)
        ));
    }
    if reports.len() != peers {
        return Err(format!(
            "recovery agreement heard from {} of {peers} workers",
            reports.len()
        ));
    }
    let missing: Vec<String> = reports
        .iter()
        .filter(|r| r.missing)
        .map(|r| format!("worker-{}", r.worker))
        .collect();
    let holding: Vec<usize> = reports
        .iter()
        .filter(|r| !r.missing && (r.peers.is_some() || !r.restorable.is_empty()))
        .map(|r| r.worker)
        .collect();
    if !missing.is_empty() && !holding.is_empty() {
        return Err(format!(
            "the state directories {} are missing while workers {holding:?} hold checkpoints: put them \
             back (copy them from where the job ran), or start from an empty --state-dir; nothing was \
             changed",
            missing.join(", ")
        ));
    }
    if reports.iter().all(|r| r.restorable.is_empty()) {
        return Ok(None);
    }
    // The newest id inside a range of every worker is the end of one of the ranges.
    let covered =
        |r: &WorkerReport, id: u64| r.restorable.iter().any(|(lo, hi)| *lo <= id && id <= *hi);
    let common = reports
        .iter()
        .flat_map(|r| r.restorable.iter().map(|(_, hi)| *hi))
        .filter(|&id| reports.iter().all(|r| covered(r, id)))
        .max();
    match common {
        Some(id) => Ok(Some(id)),
        // Workers crashed before their first checkpoint was complete
        // everywhere: the ones that wrote it discard it.
        None if reports.iter().all(|r| !r.merged) => Ok(None),
        None => {
            let listing: Vec<String> = reports
                .iter()
                .map(|r| format!("worker {}: {:?}", r.worker, r.restorable))
                .collect();
            Err(format!(
                "no checkpoint is restorable on every worker ({}); a worker's state directory is missing or \
                 from another job: restore the missing worker-N directories, or start from an empty --state-dir",
                listing.join("; ")
            ))
        }
    }
}

/// The listing `statefun checkpoints <state-dir>…` prints: per worker, the key groups it
/// holds and the restorable checkpoints with their age, contents and outbox; then what a
/// restart does. Several directories (one per process of a cluster, copied or mounted
/// together) are read as one job; a worker found in two of them is an error naming both.
pub fn describe_dirs(state_dirs: &[std::path::PathBuf]) -> Result<String, String> {
    use std::fmt::Write;
    if let Some(plan) = state_dirs.iter().find_map(|d| rescale::interrupted(d)) {
        return Ok(format!(
            "a rescale from {} to {} workers was interrupted while it committed: a start with \
             {} workers in total finishes it\n",
            plan.from, plan.to, plan.to
        ));
    }
    let workers = workers_of(state_dirs)?;
    let now = crate::clock::Clock::now_ms();
    let mut out = String::new();
    // What each worker would report to the recovery agreement: the listing
    // says what a restart does by the very rule a restart applies.
    let mut reports: Vec<WorkerReport> = Vec::new();
    let mut job_peers = 0;
    for (n, path) in &workers {
        let (listing, opened) = open_read_only(*n, path)?;
        let peers = listing.manifest.as_ref().map_or(0, |m| m.peers);
        let _ = writeln!(
            out,
            "worker {n} ({}; job of {peers} workers; key groups {}; ~{} keys)",
            path.display(),
            key_groups_of(*n, peers),
            listing.keys
        );
        job_peers = job_peers.max(peers);
        reports.push(match opened {
            Ok((_, report)) => report,
            Err(e) => WorkerReport {
                worker: *n,
                peers: None,
                restorable: Vec::new(),
                error: Some(e),
                merged: false,
                missing: false,
            },
        });
        for c in &listing.checkpoints {
            let last = c.meta.last.max(c.id);
            let (generation, epoch) = describe_id(last);
            let age_s = now.saturating_sub(c.meta.written_at_ms) as f64 / 1000.0;
            let _ = writeln!(
                out,
                "  checkpoint {} (run {generation}, {}): {age_s:.1}s old, {} state changes, {} delayed, {} in flight, {} egress records ({} undelivered){}",
                if last == c.id { c.id.to_string() } else { format!("{}..={last}", c.id) },
                epoch.map_or("final".to_string(), |e| format!("epoch {e}")),
                c.meta.state_changes,
                c.meta.timers.len(),
                c.meta.inflight.len(),
                c.meta.outbox_records,
                c.outbox,
                if c.merged { ", merged" } else { "" },
            );
        }
    }
    let job_peers = job_peers.max(workers.len());
    for w in add_missing(&mut reports, job_peers) {
        let _ = writeln!(
            out,
            "worker {w}: no state directory (worker-{w} is in none of the directories given: \
             its key groups {} are missing)",
            key_groups_of(w, job_peers)
        );
    }
    match agree(&reports, job_peers) {
        Ok(Some(id)) => {
            let _ = writeln!(out, "a restart resumes from checkpoint {id}");
        }
        Ok(None) => {
            let _ = writeln!(
                out,
                "no checkpoint was complete on every worker: a restart starts fresh"
            );
        }
        Err(e) => {
            let _ = writeln!(out, "a restart would fail: {e}");
        }
    }
    Ok(out)
}

/// The key groups worker `n` of `peers` holds, as `lo..=hi` (contiguous ranges, see
/// [`crate::keygroup`]).
pub(crate) fn key_groups_of(n: usize, peers: usize) -> String {
    use crate::keygroup::{worker_for_key_group, KEY_GROUPS};
    let mine: Vec<u32> = (0..KEY_GROUPS)
        .filter(|g| worker_for_key_group(*g, peers.max(1)) == n)
        .collect();
    match (mine.first(), mine.last()) {
        (Some(lo), Some(hi)) => format!("{lo}..={hi}"),
        _ => "none".to_string(),
    }
}

/// What recovery's own open makes of a worker's store: the backend and its report.
type Opened = Result<(DurableBackend<RocksStore>, WorkerReport), String>;

/// Worker `n`'s store at `path`, opened read-only: its listing, and the report
/// recovery's own open makes of it (so tools say what a restart does by the rule a
/// restart applies).
pub(crate) fn open_read_only(
    n: usize,
    path: &std::path::Path,
) -> Result<(WorkerCheckpoints, Opened), String> {
    let store = RocksStore::open_read_only(path).map_err(|e| e.to_string())?;
    let listing = list(&store)?;
    let peers = listing.manifest.as_ref().map_or(0, |m| m.peers);
    Ok((listing, DurableBackend::open(store, n, peers)))
}

/// The `worker-N` databases of several state directories (one per process of a cluster,
/// copied or mounted together) as one job, by worker; a worker in two of them is an error
/// naming both, and so is finding none.
fn workers_of(
    state_dirs: &[std::path::PathBuf],
) -> Result<Vec<(usize, std::path::PathBuf)>, String> {
    let mut readable = Vec::new();
    for dir in state_dirs {
        match worker_dirs(dir) {
            Ok(found) => readable.extend(found),
            // Each directory of a cluster need not hold workers, but one must.
            Err(e) if state_dirs.len() == 1 => return Err(e),
            Err(e) => tracing::warn!("{e}"),
        }
    }
    readable.sort();
    let mut workers: Vec<(usize, std::path::PathBuf)> = Vec::new();
    for (n, path) in readable {
        if let Some((_, first)) = workers.iter().find(|(w, _)| *w == n) {
            return Err(format!(
                "worker {n} is in two directories: {} and {}; give each process's state \
                 directory once",
                first.display(),
                path.display()
            ));
        }
        workers.push((n, path));
    }
    if workers.is_empty() {
        return Err(format!(
            "no worker-N state databases in {}",
            state_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(workers)
}

/// The `worker-N` databases of a state directory, by worker.
pub(crate) fn worker_dirs(
    state_dir: &std::path::Path,
) -> Result<Vec<(usize, std::path::PathBuf)>, String> {
    let entries = std::fs::read_dir(state_dir).map_err(|e| {
        format!(
            "cannot read the state directory {}: {e}; give the --state-dir of a run",
            state_dir.display()
        )
    })?;
    let mut workers: Vec<(usize, std::path::PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("worker-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    workers.sort();
    if workers.is_empty() {
        return Err(format!(
            "{} holds no worker-N state databases; is it the --state-dir of a run?",
            state_dir.display()
        ));
    }
    Ok(workers)
}

/// Adds a `missing` report for every worker of `0..peers` without one (its state
/// directory is gone, which makes the agreement fail); returns those workers.
fn add_missing(reports: &mut Vec<WorkerReport>, peers: usize) -> Vec<usize> {
    let missing: Vec<usize> = (0..peers)
        .filter(|w| !reports.iter().any(|r| r.worker == *w))
        .collect();
    reports.extend(missing.iter().map(|&w| WorkerReport {
        worker: w,
        peers: None,
        restorable: Vec::new(),
        error: None,
        merged: false,
        missing: true,
    }));
    missing
}

/// Where a restart resumes every ingress ([`resume_positions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The checkpoint every worker agrees on.
    pub checkpoint: u64,
    /// Every worker's source positions in it: (ingress id, position).
    pub positions: Vec<(String, Vec<u8>)>,
}

/// Where a restart on `state_dirs` (see [`describe_dirs`]) would resume every ingress: the checkpoint every
/// worker agrees on (by the rule recovery applies, [`agree`]) and each worker's source
/// positions in it; `None` when a restart would start fresh. Reads the databases without
/// changing them (safe while a job runs).
pub fn resume_positions(state_dirs: &[std::path::PathBuf]) -> Result<Option<Resume>, String> {
    let mut backends = Vec::new();
    let mut reports = Vec::new();
    let mut job_peers = 0;
    for (n, path) in workers_of(state_dirs)? {
        let (listing, opened) = open_read_only(n, &path)?;
        job_peers = job_peers.max(listing.manifest.as_ref().map_or(0, |m| m.peers));
        let (backend, report) = opened?;
        reports.push(report);
        backends.push(backend);
    }
    let job_peers = job_peers.max(backends.len());
    add_missing(&mut reports, job_peers);
    let Some(checkpoint) = agree(&reports, job_peers)? else {
        return Ok(None);
    };
    let mut positions = Vec::new();
    for backend in &backends {
        positions.extend(source_positions(backend.store(), checkpoint)?);
    }
    Ok(Some(Resume {
        checkpoint,
        positions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_covers_every_epoch_once() {
        let s = Schedule::new(10, None);
        // Every epoch belongs to exactly the checkpoint next_at_or_after names,
        // and a frontier past that checkpoint completes it.
        for e in 0..100u64 {
            let c = s.next_at_or_after(e);
            assert!(c >= e && c < e + 10 && s.is_checkpoint(c));
            assert_eq!(s.last_before(c + 1), Some(c));
            assert!(s.last_before(c).is_none_or(|p| p < e));
        }
    }

    #[test]
    fn ids_increase_across_generations_even_if_the_clock_goes_back() {
        let first = Schedule::new(1, None);
        let late = first.id(1_000_000);
        let second = Schedule::new(1, Some(late));
        assert!(
            second.id(5) > late,
            "a restart with an earlier clock still gets larger ids"
        );
        assert!(second.final_id() > second.id(u64::MAX));
        assert_eq!(describe_id(second.id(7)), (1, Some(7)));
        assert_eq!(describe_id(second.final_id()), (1, None));
    }

    #[test]
    fn agreement_picks_the_newest_common_checkpoint() {
        let r = |worker, ids: &[u64]| WorkerReport {
            worker,
            peers: Some(3),
            restorable: ids.iter().map(|&i| (i, i)).collect(),
            error: None,
            merged: true,
            missing: false,
        };
        assert_eq!(
            agree(&[r(2, &[7, 8]), r(0, &[7, 8]), r(1, &[7, 8])], 3),
            Ok(Some(8))
        );
        // A worker that crashed before writing 8 pulls everyone back to 7.
        assert_eq!(
            agree(&[r(0, &[7, 8]), r(1, &[7]), r(2, &[7, 8])], 3),
            Ok(Some(7))
        );
        let err = agree(&[r(0, &[8]), r(1, &[7]), r(2, &[8])], 3).unwrap_err();
        assert!(err.contains("worker 1: [(7, 7)]"), "{err}");
        assert!(agree(&[r(0, &[8]), r(1, &[8])], 3).is_err());
    }

    #[test]
    fn a_missing_worker_directory_is_an_error_even_before_the_first_merge() {
        let wrote = |worker| WorkerReport {
            worker,
            peers: Some(2),
            restorable: vec![(9, 9)],
            error: None,
            merged: false,
            missing: false,
        };
        let lost = WorkerReport {
            worker: 1,
            peers: None,
            restorable: vec![],
            error: None,
            merged: false,
            missing: true,
        };
        // Without the flag this is the legitimate "first checkpoint never
        // complete everywhere" case, which starts fresh; with it, an error.
        let err = agree(&[wrote(0), lost.clone()], 2).unwrap_err();
        assert!(
            err.contains("worker-1") && err.contains("nothing was changed"),
            "{err}"
        );
        let created_last_run = WorkerReport {
            missing: false,
            ..lost.clone()
        };
        assert_eq!(agree(&[wrote(0), created_last_run], 2), Ok(None));
        // Every directory new: a fresh start.
        let all_new = WorkerReport {
            worker: 0,
            ..lost.clone()
        };
        assert_eq!(agree(&[all_new, lost], 2), Ok(None));
    }
}
