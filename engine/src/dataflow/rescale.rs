//! Carrying out a rescale (the decisions are `checkpoint::rescale`'s): every new worker
//! builds its database from the key groups it now owns, and the databases are swapped in
//! by a commit that survives a crash at any point.
//!
//! **Building.** The old databases are read by the new workers the plan names, each
//! rolled to the agreed checkpoint exactly as an ordinary restore would. Their state
//! entries (in pieces), delayed messages (by sender) and in-flight messages (by target)
//! cross a timely exchange to the workers that own their key groups now, which write
//! them into `rescale/worker-N` beside the old databases; every source position goes to
//! every new worker and is merged per ingress (each source then seeks what it owns).
//! The old workers' undelivered egress records are delivered before anything changes,
//! under the old workers' own identities: a per-worker sink (a Kafka producer) opens as
//! old worker `K`, which for exactly-once Kafka fences the producer old worker `K` left
//! behind and skips what its transactional id already committed; the records of a
//! single-writer sink (a file) go to new worker 0, which writes that file.
//!
//! **Commit** (each step is followed by a barrier: every worker has done it):
//! 1. every new database is complete and synced (sealed with its manifest last);
//! 2. every worker writes its commit marker `rescale/commit-N`, holding the plan;
//! 3. the readers move the old databases into `rescale/retired/`;
//! 4. every worker moves its new database into place (`worker-N`);
//! 5. the retired databases and the markers are deleted.
//!
//! A crash before any marker exists leaves the old databases as they were (rolled to
//! the checkpoint, which a restart does anyway): the next start builds again. Once any
//! marker exists, every new database is complete, so the next start finishes steps 3–5
//! from the plan in the marker (telling old databases from new by their worker count),
//! whatever mixture of old and new it finds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use statefun_sdk::EgressMessage;
use std::cell::RefCell;
use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Probe};
use timely::worker::Worker;

use super::checkpointing::exchange_all;
use super::sink::{flush_all, open_sinks, redeliver, Unconfirmed};
use crate::app::{Application, Durability};
use crate::checkpoint::rescale::{marker_path, read_marker, Found, Inventory, Plan};
use crate::checkpoint::sync_dir;
use crate::checkpoint::{
    put_state, seal_rescaled, state_chunk, state_key_group, CheckpointMeta, DurableBackend,
    Entries, Manifest, Recovered, RocksStore, StateMemory, WorkerReport,
};
use crate::envelope::Envelope;
use crate::keygroup::{worker_for_id, worker_for_key_group};
use crate::shared::Shared;
use crate::timers::{Delayed, Timers};

/// State entries read from an old database per piece.
const CHUNK: usize = 16 * 1024;

/// What crosses the exchange to the worker that owns it now.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Moved {
    /// Main-state entries (raw keys and values) of key groups the receiver owns.
    State(Entries),
    /// A delayed message whose sender the receiver owns.
    Delayed(Delayed),
    /// A message in flight at the checkpoint, for a target the receiver owns.
    InFlight(Envelope),
    /// An undelivered record of a single-writer egress (for worker 0).
    Outbox(u64, EgressMessage),
    /// An old worker's position of an ingress (every new worker gets every one).
    Position(String, Vec<u8>),
}

/// The staging area of a rescale inside a state directory.
fn staging(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::checkpoint::rescale::STAGING)
}

fn staged_db(state_dir: &Path, worker: usize) -> PathBuf {
    staging(state_dir).join(format!("worker-{worker}"))
}

fn retired_db(state_dir: &Path, old: usize) -> PathBuf {
    staging(state_dir)
        .join("retired")
        .join(format!("worker-{old}"))
}

/// What worker `index` (of `peers`, with `local` workers per process) reports before
/// anything is restored: its own database (`own`, as the restore opened it) and the
/// databases of its process's directory that no worker of this process owns, split
/// among the process's workers; and a rescale commit marker, if one is there.
pub(crate) fn inventory(
    state_dir: &Path,
    index: usize,
    peers: usize,
    local: usize,
    own: WorkerReport,
) -> Inventory {
    let mut inventory = Inventory {
        worker: index,
        found: vec![Found {
            report: own,
            own: true,
        }],
        committing: None,
        error: None,
    };
    let first_local = index - index % local.max(1);
    let locals = first_local..(first_local + local.max(1)).min(peers);
    let result = (|| -> Result<(), String> {
        inventory.committing = read_marker(&marker_path(state_dir, index))?;
        let Ok(dirs) = crate::checkpoint::worker_dirs(state_dir) else {
            return Ok(());
        };
        for (k, path) in dirs {
            if locals.contains(&k) || k % local.max(1) != index % local.max(1) {
                continue;
            }
            if std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none()) {
                continue;
            }
            let opened = crate::checkpoint::open_read_only(k, &path).and_then(|(_, o)| o);
            match opened {
                Ok((_, report)) => inventory.found.push(Found { report, own: false }),
                // Worker `k` of this job reports its own database (in a directory shared
                // by several processes it may be opening it right now): this copy is only
                // needed when worker `k` has none.
                Err(e) if k < peers => {
                    tracing::debug!(worker = index, database = %path.display(), "not read: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        inventory.error = Some(e);
    }
    inventory
}

/// Carries out `plan` on every worker (see the module docs): builds the new databases
/// unless `finish` (a commit had started before), then commits. Every worker passes the
/// same barriers whatever fails locally, so all of them return the same verdict.
/// A failed build leaves no marker, so the next start builds again from the old
/// databases (which were only rolled to the checkpoint, as any restart does).
pub(crate) fn carry_out(
    worker: &mut Worker,
    durability: &Durability,
    app: &Arc<Application>,
    shared: &Shared,
    plan: &Plan,
    finish: bool,
) -> Result<(), String> {
    let index = worker.index();
    let dir = &durability.state_dir;
    let started = Instant::now();
    if index == 0 {
        match (finish, plan.checkpoint) {
            (true, _) => tracing::info!(
                from = plan.from,
                to = plan.to,
                "finishing the commit of an interrupted rescale"
            ),
            (false, Some(c)) => tracing::info!(
                from = plan.from,
                to = plan.to,
                checkpoint = c,
                "rescaling: the state of checkpoint {c} moves from {} to {} workers",
                plan.from,
                plan.to
            ),
            (false, None) => tracing::info!(
                from = plan.from,
                to = plan.to,
                "rescaling: no checkpoint was complete on every old worker, so the job starts fresh"
            ),
        }
    }
    // Every worker meets the same barriers and, as they all see the same verdicts,
    // stops at the same one.
    if !finish {
        let built = build(worker, durability, app, shared, plan);
        if let Err(e) = barrier(worker, built) {
            // Nothing is committed: the old databases stay, the half-built one goes.
            let _ = std::fs::remove_dir_all(staged_db(dir, index));
            let _ = std::fs::remove_dir(staging(dir));
            return Err(e);
        }
        crate::failpoint::hit("rescale-before-commit");
        let marked = write_marker(dir, index, plan);
        barrier(worker, marked)?;
    }
    let retired = retire(dir, index, plan);
    barrier(worker, retired)?;
    crate::failpoint::hit("rescale-mid-commit");
    let installed = install(dir, index);
    barrier(worker, installed)?;
    let cleaned = clean_up(dir, index, plan);
    let status = barrier(worker, cleaned);
    if status.is_ok() && index == 0 {
        tracing::info!(
            from = plan.from,
            to = plan.to,
            elapsed_s = started.elapsed().as_secs_f64(),
            "rescale committed"
        );
    }
    status
}

/// Every worker's status: the first error of any worker fails them all.
fn barrier(worker: &mut Worker, status: Result<(), String>) -> Result<(), String> {
    let index = worker.index();
    let all = exchange_all(worker, status.err().map(|e| (index, e)));
    match all.into_iter().flatten().min() {
        Some((w, e)) if w == index => Err(e),
        Some((w, e)) => Err(format!("worker {w}: {e}")),
        None => Ok(()),
    }
}

/// Builds this worker's new database (see the module docs).
fn build(
    worker: &mut Worker,
    durability: &Durability,
    app: &Arc<Application>,
    shared: &Shared,
    plan: &Plan,
) -> Result<(), String> {
    let index = worker.index();
    let dir = &durability.state_dir;
    let options = &durability.memory;
    let mut status: Result<(), String> = Ok(());
    // The old databases this worker reads, rolled to the checkpoint.
    let mut olds: Vec<(usize, DurableBackend<RocksStore>, Recovered)> = Vec::new();
    for old in plan.read_by(index) {
        let opened = RocksStore::open(&dir.join(format!("worker-{old}")), options)
            .map_err(|e| e.to_string())
            .and_then(|store| DurableBackend::open(store, old, plan.from))
            .and_then(|(mut backend, _)| {
                let recovered = backend.restore(plan.checkpoint)?;
                Ok((backend, recovered))
            });
        match opened {
            Ok((backend, Some(recovered))) => olds.push((old, backend, recovered)),
            Ok((_, None)) => {}
            Err(e) => {
                status = Err(e);
                break;
            }
        }
    }
    // Undelivered records of per-worker sinks, under the old worker's identity.
    let mut single: Vec<(u64, EgressMessage)> = Vec::new();
    if status.is_ok() {
        for (old, _, recovered) in &mut olds {
            let records = std::mem::take(&mut recovered.replay);
            let (own, rest): (Vec<_>, Vec<_>) = records.into_iter().partition(|(_, m)| {
                app.egresses
                    .get(&m.egress)
                    .is_some_and(|p| !p.single_writer())
            });
            single.extend(rest);
            let mut sinks = open_sinks(app, false, *old, true, shared);
            let mut timing = Unconfirmed::new(app.settings.epoch_interval, index);
            redeliver(&mut sinks, own, Some(*old), shared, &mut timing);
            flush_all(&mut sinks, shared, &mut timing);
            if let Some(e) = shared.failure() {
                status = Err(e);
                break;
            }
        }
    }
    // The new database, built from scratch.
    let staged = match &status {
        Ok(()) => match open_staged(&staged_db(dir, index), options) {
            Ok(store) => Some(store),
            Err(e) => {
                status = Err(e);
                None
            }
        },
        Err(_) => None,
    };
    let store = Rc::new(RefCell::new(staged));
    let received = Rc::new(RefCell::new(Received::default()));
    let (mut input, probe) = {
        let received = received.clone();
        let store = store.clone();
        worker.dataflow::<u64, _, _>(move |scope| {
            let (input, stream) = scope.new_input::<Vec<(usize, Moved)>>();
            let (probe, _) = stream
                .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                    Exchange::new(|(to, _): &(usize, Moved)| *to as u64),
                    "Rescale",
                    move |_, _| {
                        move |input, _output| {
                            input.for_each(|_, data| {
                                let mut r = received.borrow_mut();
                                let mut store = store.borrow_mut();
                                for (_, moved) in data.drain(..) {
                                    r.take(moved, store.as_mut());
                                }
                            });
                        }
                    },
                )
                .probe();
            (input, probe)
        })
    };
    // Send what this worker read to the workers that own it now.
    let peers = plan.to;
    let mut batch: Vec<(usize, Moved)> = single
        .into_iter()
        .map(|(c, m)| (0, Moved::Outbox(c, m)))
        .collect();
    let mut sent = 0u64;
    let mut last_log = Instant::now();
    for (old, backend, recovered) in olds {
        let Recovered {
            sources,
            timers,
            inflight,
            ..
        } = recovered;
        for (ingress, position) in sources {
            for to in 0..peers {
                batch.push((to, Moved::Position(ingress.clone(), position.clone())));
            }
        }
        for d in timers.into_delayed() {
            batch.push((worker_for_id(d.holder_id(), peers), Moved::Delayed(d)));
        }
        for e in inflight {
            batch.push((worker_for_id(&e.target.id, peers), Moved::InFlight(e)));
        }
        input.send_batch(&mut batch);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk = match state_chunk(backend.store(), after.as_deref(), CHUNK) {
                Ok(chunk) => chunk,
                Err(e) => {
                    status = status.and(Err(e));
                    break;
                }
            };
            let Some((last, _)) = chunk.last() else {
                break;
            };
            after = Some(last.clone());
            let mut by_owner: BTreeMap<usize, Entries> = BTreeMap::new();
            for (k, v) in chunk {
                let group = state_key_group(&k).unwrap_or(0);
                by_owner
                    .entry(worker_for_key_group(group, peers))
                    .or_default()
                    .push((k, v));
            }
            for (to, entries) in by_owner {
                sent += entries.len() as u64;
                input.send((to, Moved::State(entries)));
            }
            // Let the pieces go before reading more: memory stays bounded.
            worker.step();
            if last_log.elapsed().as_secs() >= 5 {
                tracing::info!(
                    worker = index,
                    old_worker = old,
                    state_entries_sent = sent,
                    "rescaling"
                );
                last_log = Instant::now();
            }
        }
    }
    input.send_batch(&mut batch);
    drop(input);
    while !probe.done() {
        worker.step_or_park(Some(std::time::Duration::from_millis(10)));
    }
    let staged = store.borrow_mut().take();
    let received = std::mem::take(&mut *received.borrow_mut());
    status?;
    let mut staged = staged.ok_or_else(|| "the new state database is not open".to_string())?;
    if let Some(e) = received.error {
        return Err(e);
    }
    // Records of single-writer sinks (files): worker 0 writes them.
    if index == 0 && !received.outbox.is_empty() {
        let mut sinks = open_sinks(app, true, 0, true, shared);
        let mut timing = Unconfirmed::new(app.settings.epoch_interval, index);
        redeliver(&mut sinks, received.outbox, None, shared, &mut timing);
        if let Some(e) = shared.failure() {
            return Err(e);
        }
    }
    let Some(checkpoint) = plan.checkpoint else {
        // Nothing to move: the new database stays empty (a fresh start).
        return Ok(());
    };
    let mut sources = Vec::new();
    let epoch = checkpoint & crate::checkpoint::EPOCH_MASK;
    for (ingress, positions) in &received.positions {
        let merged = statefun_connectors::source::merge_positions(ingress, positions)
            .map_err(|e| e.to_string())?;
        sources.push((ingress.clone(), vec![(epoch + 1, merged)]));
    }
    let mut timers = Timers::default();
    let delayed = received.delayed.len();
    for d in received.delayed {
        timers.insert(d);
    }
    let inflight: Vec<(u64, Envelope)> = received
        .inflight
        .into_iter()
        .map(|e| (epoch + 1, e))
        .collect();
    tracing::debug!(
        worker = index,
        state_entries = received.entries,
        delayed,
        inflight = inflight.len(),
        "new state database built"
    );
    let meta = CheckpointMeta {
        id: checkpoint,
        last: checkpoint,
        sources,
        timers,
        inflight,
        ..CheckpointMeta::default()
    };
    seal_rescaled(&mut staged, index, plan.to, meta)
}

/// What arrives at a worker building its new database.
#[derive(Default)]
struct Received {
    delayed: Vec<Delayed>,
    inflight: Vec<Envelope>,
    outbox: Vec<(u64, EgressMessage)>,
    positions: BTreeMap<String, Vec<Vec<u8>>>,
    entries: u64,
    error: Option<String>,
}

impl Received {
    /// Takes one moved item: state goes straight into `store` (the new database; `None`
    /// when it could not be opened, which the build reports already), the rest waits
    /// for the seal.
    fn take(&mut self, moved: Moved, store: Option<&mut RocksStore>) {
        match moved {
            Moved::State(entries) => {
                self.entries += entries.len() as u64;
                if let (None, Some(store)) = (&self.error, store) {
                    if let Err(e) = put_state(store, entries) {
                        self.error = Some(e);
                    }
                }
            }
            Moved::Delayed(d) => self.delayed.push(d),
            Moved::InFlight(e) => self.inflight.push(e),
            Moved::Outbox(c, m) => self.outbox.push((c, m)),
            Moved::Position(ingress, p) => self.positions.entry(ingress).or_default().push(p),
        }
    }
}

/// Opens a new, empty database at `path` (removing what an earlier attempt left there).
fn open_staged(path: &Path, options: &StateMemory) -> Result<RocksStore, String> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|e| {
            format!(
                "cannot remove {} (left by an earlier rescale attempt): {e}",
                path.display()
            )
        })?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    RocksStore::open(path, options).map_err(|e| e.to_string())
}

/// Writes worker `index`'s commit marker (the plan), synced with its directory.
fn write_marker(dir: &Path, index: usize, plan: &Plan) -> Result<(), String> {
    let path = marker_path(dir, index);
    let text =
        serde_json::to_vec_pretty(plan).map_err(|e| format!("cannot encode the plan: {e}"))?;
    let write = || -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&staging(dir))
    };
    write().map_err(|e| {
        format!(
            "cannot write the rescale commit marker {}: {e}",
            path.display()
        )
    })
}

/// The worker count a database was written with (`None`: no manifest, or not openable).
fn written_with(path: &Path) -> Option<usize> {
    let store = RocksStore::open_read_only(path).ok()?;
    crate::checkpoint::list(&store)
        .ok()?
        .manifest
        .map(|m: Manifest| m.peers)
}

/// Commit step 3: moves the old databases this worker read into `rescale/retired/`.
/// Idempotent: a `worker-K` already written by the new job (by its worker count) stays.
fn retire(dir: &Path, index: usize, plan: &Plan) -> Result<(), String> {
    for old in plan.read_by(index) {
        let live = dir.join(format!("worker-{old}"));
        let retired = retired_db(dir, old);
        if !live.exists() || written_with(&live) == Some(plan.to) {
            continue;
        }
        let move_it = || -> std::io::Result<()> {
            let parent = retired.parent().unwrap_or(dir);
            std::fs::create_dir_all(parent)?;
            if retired.exists() {
                std::fs::remove_dir_all(&retired)?;
            }
            std::fs::rename(&live, &retired)?;
            sync_dir(parent)?;
            sync_dir(dir)
        };
        move_it()
            .map_err(|e| format!("cannot move the old database {} aside: {e}", live.display()))?;
    }
    Ok(())
}

/// Commit step 4: moves this worker's new database into place.
fn install(dir: &Path, index: usize) -> Result<(), String> {
    let staged = staged_db(dir, index);
    if !staged.exists() {
        // Moved already (an interrupted commit being finished).
        return Ok(());
    }
    let live = dir.join(format!("worker-{index}"));
    let move_it = || -> std::io::Result<()> {
        if live.exists() {
            // Only an empty directory can be here: the old database went aside in step 3.
            std::fs::remove_dir(&live)?;
        }
        std::fs::rename(&staged, &live)?;
        sync_dir(dir)
    };
    move_it().map_err(|e| {
        format!(
            "cannot move the new database {} into place ({}): {e}",
            staged.display(),
            live.display()
        )
    })
}

/// Commit step 5: deletes the retired databases this worker read, then its marker.
fn clean_up(dir: &Path, index: usize, plan: &Plan) -> Result<(), String> {
    for old in plan.read_by(index) {
        let retired = retired_db(dir, old);
        if retired.exists() {
            std::fs::remove_dir_all(&retired)
                .map_err(|e| format!("cannot delete {}: {e}", retired.display()))?;
        }
    }
    let path = marker_path(dir, index);
    if path.exists() {
        std::fs::remove_file(&path)
            .map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
    }
    // Empty leftovers of the staging area go too; another worker may still use it.
    let _ = std::fs::remove_dir(staging(dir).join("retired"));
    let _ = std::fs::remove_dir(staging(dir));
    Ok(())
}
