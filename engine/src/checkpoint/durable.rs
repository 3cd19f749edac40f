//! The durable state backend: state kept in an in-memory hot table over a
//! [`Store`], written to it only by checkpoints.
//!
//! Layout of a worker's store (all integers big-endian, so keys sort by them):
//!
//! | key                                   | value                                  |
//! |---------------------------------------|----------------------------------------|
//! | `s` key-group function id spec        | expiry (u64) + value bytes: main state |
//! | `p` checkpoint + (state key without `s`) | 0 = deleted, 1 + state value: a checkpoint's changes not yet merged |
//! | `m` checkpoint                        | [`CheckpointMeta`] (bincode)           |
//! | `r` checkpoint                        | the last checkpoint id it covers (u64) |
//! | `o` checkpoint                        | the checkpoint's egress outbox         |
//! | `x`                                   | [`Manifest`] (bincode)                 |
//!
//! A checkpoint's changes not yet merged are either `p` entries or, when the store takes
//! them ([`Store::stage`]), the staged set of the checkpoint's id (written once, applied
//! by the batch that merges it; see docs/DURABILITY.md, "How a checkpoint is written").
//!
//! State keys start with the key group (then length-prefixed function type,
//! id, and the spec name), so the state of a key group is one key range that
//! a rescale could move.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use statefun_sdk::EgressMessage;

use super::hot::{hot_hash, ChangeLog, HotTable, SortKey};
use super::store::{Batch, Store};
use super::WorkerReport;
use crate::envelope::Envelope;
use crate::keygroup::key_group;
use crate::state::{append_bytes, same_bytes, StateBackend, StateKey, StoredValue, ValueRef};
use crate::timers::Timers;

/// The first byte of every main-state key.
pub(crate) const STATE: u8 = b's';
const PENDING: u8 = b'p';
const META: u8 = b'm';
const RANGE: u8 = b'r';
const OUTBOX: u8 = b'o';
const MANIFEST: &[u8] = b"x";
/// The on-disk format; bumped on incompatible changes.
const FORMAT: u32 = 1;

/// Bytes before the value in a main-state entry: its expiry (u64).
pub(crate) const STATE_VALUE_HEADER: usize = 8;

/// Whether a raw store entry is main state whose TTL has passed at `now_ms`
/// (used by the RocksDB compaction filter).
pub(crate) fn expired_state_entry(key: &[u8], value: &[u8], now_ms: u64) -> bool {
    key.first() == Some(&STATE)
        && value.len() >= STATE_VALUE_HEADER
        && value[..STATE_VALUE_HEADER]
            .try_into()
            .map(u64::from_be_bytes)
            .is_ok_and(|expires| expires <= now_ms)
}

/// Facts about a worker's store, written with every checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The on-disk format version.
    pub format: u32,
    /// The worker that owns the store.
    pub worker: usize,
    /// The job's worker count when it was written.
    pub peers: usize,
    /// The newest checkpoint merged into the main state.
    pub merged_through: Option<u64>,
}

/// Everything of a checkpoint besides state changes and the outbox.
///
/// One written checkpoint can stand for a range of checkpoint ids, `id` to
/// `last`: when a worker's input frontier jumps past several checkpoint
/// epochs at once, it received nothing in between, so its state is the same
/// at all of them (only its sources' positions and in-flight messages
/// differ, and those are kept per epoch). Other workers may have written
/// those checkpoints one by one; agreement ([`super::agree`]) works on ranges.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The first checkpoint id covered.
    pub id: u64,
    /// The last checkpoint id covered (`id` for a single one).
    pub last: u64,
    /// When it was written (ms since the Unix epoch).
    pub written_at_ms: u64,
    /// Each ingress's positions on this worker: (ingress id, [(epoch, position)]),
    /// where the position at `b` covers every record of epochs before `b`.
    pub sources: super::SourcePositions,
    /// Delayed messages pending on this worker, with their tokens.
    pub timers: Timers,
    /// Messages this worker sent into later epochs, with their epoch.
    pub inflight: Vec<(u64, Envelope)>,
    /// State values changed by the checkpoint.
    pub state_changes: u64,
    /// Egress records in the checkpoint's outbox.
    pub outbox_records: u64,
}

/// What writing one checkpoint did.
#[derive(Clone, Debug, Default)]
pub struct CheckpointStats {
    /// The checkpoint id.
    pub id: u64,
    /// State values changed.
    pub changes: u64,
    /// Earlier checkpoints merged into the main state.
    pub merged: usize,
    /// Bytes in the batch.
    pub bytes: usize,
    /// Time to build and write the batch.
    pub duration: Duration,
}

/// A checkpoint restored at startup.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// The checkpoint id.
    pub id: u64,
    /// Where each ingress resumes (ingress id, position).
    pub sources: Vec<(String, Vec<u8>)>,
    /// Delayed messages pending at the checkpoint.
    pub timers: Timers,
    /// Messages in flight at the checkpoint, to send again.
    pub inflight: Vec<Envelope>,
    /// Egress records of checkpoints up to `id` that may not have been
    /// delivered, with their checkpoint id, oldest first.
    pub replay: Vec<(u64, EgressMessage)>,
}

/// One checkpoint as listed by `statefun checkpoints`.
#[derive(Clone, Debug)]
pub struct CheckpointInfo {
    /// The checkpoint id.
    pub id: u64,
    /// Whether it is merged into the main state (the newest globally complete one known).
    pub merged: bool,
    /// Its metadata (without the in-flight messages' bodies being meaningful here).
    pub meta: CheckpointMeta,
    /// Egress records still in its outbox (not yet known delivered).
    pub outbox: usize,
}

/// What a worker's store holds, for listing.
#[derive(Clone, Debug)]
pub struct WorkerCheckpoints {
    /// The manifest, if any checkpoint was ever written.
    pub manifest: Option<Manifest>,
    /// Restorable checkpoints, oldest first.
    pub checkpoints: Vec<CheckpointInfo>,
    /// Approximate number of keys in the store.
    pub keys: u64,
}

/// A closed interval's change log: that checkpoint's changes. Shared with the writer,
/// which encodes it, and (several workers) kept until the checkpoint is merged.
type Frozen = Arc<ChangeLog>;

/// A key [`StateBackend::fetch`] was given: where its encoding is in `fetch_keys`, its hot
/// hash, and the hot table's slot of its entry with the table's generation then (if the
/// fetch found or entered it).
struct Fetched {
    start: usize,
    end: usize,
    hash: u32,
    slot: Option<(usize, u64)>,
}

/// A checkpoint written as pending changes (several workers) and not yet merged into the
/// main state.
struct Pending {
    id: u64,
    log: Frozen,
    changes: usize,
    interval: u32,
}

/// A [`StateBackend`] over a durable [`Store`].
///
/// Values live in a per-worker hot table ([`super::hot`]) for as long as the worker
/// runs and the memory budget allows; a value missing from it is read from the store's
/// main state. Writes change the table and append to the current interval's change log,
/// and reach the store only when a checkpoint writes that log
/// ([`DurableBackend::checkpoint`], or [`DurableBackend::checkpoint_in_background`],
/// which hands it to a writer thread so that the worker goes on). The store therefore
/// only ever holds checkpointed data, and a crash at any moment leaves it at a
/// checkpoint. An entry leaves the table only once its last change is in the store's
/// main state, so the table and the store together always hold the newest values.
pub struct DurableBackend<S: Store> {
    store: Arc<S>,
    worker: usize,
    peers: usize,
    /// The last state key encoded ([`DurableBackend::encode`]), and its hot hash.
    key: Vec<u8>,
    key_hash: u32,
    /// The hot table's slot of `key` and the table's [`HotTable::generation`] when it was
    /// found: an invocation's write finds its value where its read did, without a second
    /// probe, as long as nothing moved in the table since.
    key_slot: Option<(usize, u64)>,
    read: Vec<u8>,
    hot: HotTable,
    /// [`StateBackend::fetch`]'s keys: their encoded bytes one after another, each key
    /// as given (the order in which the batch's invocations read them, see
    /// [`DurableBackend::take_fetched`]), and which of them the hot table missed
    /// (positions in `fetched`).
    fetch_keys: Vec<u8>,
    fetched: Vec<Fetched>,
    fetch_misses: Vec<usize>,
    /// The position in `fetched` of the key the next read is expected to be for.
    fetched_next: usize,
    /// The changes of the current interval.
    log: ChangeLog,
    /// Keys changed in the current interval.
    dirty: usize,
    /// The current interval's number (from 1; an entry's `changed` is 0 if no interval
    /// changed it since it was read from the store).
    interval: u32,
    /// The newest interval whose changes are all in the store's main state: entries last
    /// changed in it or earlier may be evicted.
    safe: u32,
    /// Closed intervals not yet safe, oldest first, with the id of the batch that writes
    /// them into the main state (a single worker's checkpoint, or the checkpoint whose
    /// batch merges them).
    unsafe_intervals: VecDeque<(u64, u32)>,
    /// Checkpoints written as pending changes and not yet merged, oldest first.
    pending: Vec<Pending>,
    merged_through: Option<u64>,
    error: Option<String>,
    /// The background writer, started by the first background checkpoint.
    writer: Option<Writer>,
    /// Checkpoints handed to the writer and not yet reported back, oldest first.
    submitted: VecDeque<u64>,
    /// The hot table's budget in bytes ([`StateMemory::state_cache_bytes`]).
    ///
    /// [`StateMemory::state_cache_bytes`]: super::StateMemory::state_cache_bytes
    cache_limit: usize,
    /// The background count of the stored state, for metrics.
    census: super::census::Census,
}

/// What the writer reports for each batch: `(checkpoint id, how long encoding and
/// writing it took and its size in bytes, or why it failed)`.
pub type Written = (u64, Result<(Duration, usize), String>);

/// A checkpoint's batch as the worker hands it over: the change logs to encode, and the
/// rest of the batch (metadata, outbox, range deletions) already built.
struct Job {
    id: u64,
    /// This checkpoint's changes: into the main state (one worker) or as pending changes
    /// of `id` (several).
    own: Frozen,
    direct: bool,
    /// Changes of checkpoints merged by this batch, oldest first, with their ids: into
    /// the main state.
    merges: Vec<(u64, Frozen)>,
    /// Keys changed in `own` and `merges` together (to size the batch).
    changed: usize,
    rest: Batch,
}

impl Job {
    /// Writes the checkpoint; returns the bytes of keys and values it wrote.
    ///
    /// Each log's changed values go in key order (RocksDB inserts a batch into its
    /// memtable, a skip list, in batch order: sorted keys reuse the search path of the
    /// previous insert instead of missing the cache on every level). With several
    /// workers, this checkpoint's changes are staged ([`Store::stage`]) when the store
    /// takes them — written once, as a table file, and applied by the batch that merges
    /// them — or else written as pending values (and written again when merged).
    ///
    /// `order` is the writer's to keep from one checkpoint to the next
    /// ([`ChangeLog::sort_into`]).
    fn write<S: Store + ?Sized>(
        &self,
        store: &S,
        order: &mut Vec<SortKey>,
    ) -> Result<usize, String> {
        let changed = self.changed;
        let logged = self.own.bytes() + self.merges.iter().map(|(_, m)| m.bytes()).sum::<usize>();
        let mut batch = Batch::with_capacity(logged + self.rest.bytes(), changed + self.rest.len());
        let id = self.id.to_be_bytes();
        self.own.sort_into(order);
        let own = || self.own.sorted(order);
        // Bytes of keys and values written, staged ones included (a staged set applied
        // later is not written again).
        let mut staged_bytes = 0;
        if !self.direct && !order.is_empty() && store.stages(order.len()) {
            let mut changes = Batch::with_capacity(self.own.bytes(), order.len());
            for (k, value) in own() {
                put_state_value(&mut changes, &[k], value);
            }
            store.stage(self.id, &changes).map_err(|e| e.to_string())?;
            staged_bytes = changes.bytes();
            crate::failpoint::hit("checkpoint-staged");
        } else {
            for (k, value) in own() {
                if self.direct {
                    put_state_value(&mut batch, &[k], value);
                } else {
                    put_pending_value(&mut batch, &[&[PENDING], &id, &k[1..]], value);
                }
            }
        }
        // A later merge's value of a key is written (or applied) after, and so wins over,
        // an earlier one's.
        let staged = if self.merges.is_empty() {
            Vec::new()
        } else {
            store.staged().map_err(|e| e.to_string())?
        };
        for (merged_id, merged) in &self.merges {
            if staged.binary_search(merged_id).is_ok() {
                batch.apply_staged(*merged_id);
            } else {
                merged.sort_into(order);
                for (k, value) in merged.sorted(order) {
                    put_state_value(&mut batch, &[k], value);
                }
            }
        }
        batch.append(&self.rest);
        let bytes = batch.bytes() + staged_bytes;
        store.write(batch).map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    /// The change logs the job holds, to be reused where it held the last reference.
    fn into_logs(self) -> impl Iterator<Item = Frozen> {
        std::iter::once(self.own).chain(self.merges.into_iter().map(|(_, log)| log))
    }
}

/// A thread writing checkpoint batches in the order they were handed over, so that the
/// worker's pause is the time to build a batch, not to make it durable.
struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Written>,
    /// Change logs written and no longer needed, for the worker to fill again: a new
    /// log of a million changes would fault in tens of fresh megabytes on the worker
    /// every interval.
    spare: mpsc::Receiver<ChangeLog>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start<S: Store>(
        store: Arc<S>,
        waker: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Writer, String> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (report, done) = mpsc::channel();
        let (give_back, spare) = mpsc::channel();
        let location = store.location();
        let thread = std::thread::Builder::new()
            .name("statefun-checkpoint-writer".into())
            .spawn(move || {
                // Kept from one checkpoint to the next (see `ChangeLog::sort_into`).
                let mut order = Vec::new();
                for job in queue {
                    crate::failpoint::hit("checkpoint-writing");
                    let started = Instant::now();
                    let id = job.id;
                    let result = job
                        .write(&*store, &mut order)
                        .map(|bytes| (started.elapsed(), bytes));
                    for log in job.into_logs() {
                        if let Ok(log) = Arc::try_unwrap(log) {
                            let _ = give_back.send(log);
                        }
                    }
                    let failed = result.is_err();
                    if report.send((id, result)).is_err() {
                        return;
                    }
                    waker();
                    if failed {
                        // Nothing after a failed batch may be written: it would skip it.
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the checkpoint writer of {location}: {e}"))?;
        Ok(Writer {
            jobs: Some(jobs),
            done,
            spare,
            thread: Some(thread),
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Batches handed over are still written (each atomically): the queue ends, the
        // thread finishes it.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How many of a fetch's keys past the expected one a read looks at (see
/// [`DurableBackend::take_fetched`]).
const FETCHED_AHEAD: usize = 4;

/// Whether `k` is the main-state encoding of `key`: the same function type, id and spec,
/// each with its length (the key group follows from the id).
#[inline(always)]
fn encodes(k: &[u8], key: &StateKey<'_>) -> bool {
    let f = key.function.as_str().as_bytes();
    let (id, spec) = (key.id.as_bytes(), key.spec.as_bytes());
    let at_id = 9 + f.len();
    // The id first: consecutive keys mostly differ there (one comparison, not three).
    k.len() == at_id + id.len() + spec.len()
        && same_bytes(&k[at_id..at_id + id.len()], id)
        && k[3..5] == (f.len() as u16).to_be_bytes()
        && k[5 + f.len()..at_id] == (id.len() as u32).to_be_bytes()
        && same_bytes(&k[5..5 + f.len()], f)
        && same_bytes(&k[at_id + id.len()..], spec)
}

fn u64_key(prefix: u8, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(prefix);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn id_of(key: &[u8]) -> Option<u64> {
    key.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

/// Writes `value` at the key made of `key` as main state (expiry, then the bytes; see
/// [`decode_value`]); `None` deletes it.
fn put_state_value(batch: &mut Batch, key: &[&[u8]], value: Option<ValueRef<'_>>) {
    match value {
        Some(v) => batch.put_parts(key, &[&v.expires_at_ms.to_be_bytes(), v.bytes]),
        None => batch.delete_parts(key),
    }
}

/// Writes `value` at the key made of `key` as a pending change: `0` for a deletion,
/// else `1` and the main-state encoding.
fn put_pending_value(batch: &mut Batch, key: &[&[u8]], value: Option<ValueRef<'_>>) {
    match value {
        Some(v) => batch.put_parts(key, &[&[1], &v.expires_at_ms.to_be_bytes(), v.bytes]),
        None => batch.put_parts(key, &[&[0]]),
    }
}

fn decode_value(bytes: &[u8]) -> Option<StoredValue> {
    let expires = u64::from_be_bytes(bytes.get(..STATE_VALUE_HEADER)?.try_into().ok()?);
    Some(StoredValue {
        bytes: bytes[STATE_VALUE_HEADER..].into(),
        expires_at_ms: expires,
    })
}

impl<S: Store> DurableBackend<S> {
    /// Opens worker `worker`'s (of `peers`) state in `store`, reporting what it can restore.
    pub fn open(store: S, worker: usize, peers: usize) -> Result<(Self, WorkerReport), String> {
        let store = Arc::new(store);
        let manifest = read_manifest(&*store)?;
        if let Some(m) = &manifest {
            if m.worker != worker {
                return Err(format!(
                    "{} holds the state of worker {}, not worker {worker}; do not rename worker-N directories",
                    store.location(),
                    m.worker
                ));
            }
        }
        let restorable = ranges(&*store)?;
        let report = WorkerReport {
            worker,
            peers: manifest.as_ref().map(|m| m.peers),
            restorable,
            error: None,
            merged: manifest
                .as_ref()
                .is_some_and(|m| m.merged_through.is_some()),
            missing: false,
        };
        let backend = DurableBackend {
            store,
            worker,
            peers,
            key: Vec::with_capacity(64),
            key_hash: 0,
            key_slot: None,
            read: Vec::with_capacity(64),
            fetch_keys: Vec::new(),
            fetched: Vec::new(),
            fetch_misses: Vec::new(),
            fetched_next: 0,
            hot: HotTable::default(),
            log: ChangeLog::default(),
            dirty: 0,
            interval: 1,
            safe: 0,
            unsafe_intervals: VecDeque::new(),
            pending: Vec::new(),
            merged_through: manifest.and_then(|m| m.merged_through),
            error: None,
            writer: None,
            submitted: VecDeque::new(),
            cache_limit: super::StateMemory::default().state_cache_bytes,
            census: Default::default(),
        };
        Ok((backend, report))
    }

    /// Keeps the hot table within `bytes` (default: [`StateMemory`]'s), as far as values
    /// already in the store can be evicted.
    ///
    /// [`StateMemory`]: super::StateMemory
    pub fn set_cache_bytes(&mut self, bytes: usize) {
        self.cache_limit = bytes;
    }

    /// Rolls the store to checkpoint `id` (the one every worker agreed on):
    /// merges its unmerged changes and those of earlier checkpoints into the
    /// main state, discards later ones, and returns what to resume from.
    /// `None` is a fresh start.
    pub fn restore(&mut self, id: Option<u64>) -> Result<Option<Recovered>, String> {
        // Whatever memory holds may be newer than the checkpoint restored.
        self.forget_memory();
        // A staged set is a pending checkpoint's changes (see `Job::write`); one whose
        // checkpoint was never written (a crash between the two) or is rolled back goes.
        let staged = self.store.staged().map_err(|e| e.to_string())?;
        let Some(id) = id else {
            // A fresh start: anything here is from checkpoints that never
            // completed everywhere (see `agree`), so it goes.
            if !ranges(&*self.store)?.is_empty() || !staged.is_empty() {
                let mut batch = Batch::default();
                batch.delete_range(vec![0], vec![0xff]);
                for &s in &staged {
                    batch.drop_staged(s);
                }
                self.store.write(batch).map_err(|e| e.to_string())?;
                self.pending.clear();
                self.merged_through = None;
            }
            return Ok(None);
        };
        let location = self.store.location();
        let all = ranges(&*self.store)?;
        let metas: Vec<u64> = all.iter().map(|r| r.0).collect();
        let Some(&(first, _)) = all.iter().rev().find(|(lo, hi)| *lo <= id && id <= *hi) else {
            return Err(format!(
                "{location}: checkpoint {id} is missing (this worker has {all:?}); the state dir is damaged or mixed from several jobs"
            ));
        };
        let mut batch = Batch::default();
        let mut applied = Vec::new();
        for &p in &metas {
            let unmerged = self.merged_through.is_none_or(|m| p > m);
            let prefix = u64_key(PENDING, p);
            if unmerged && p <= id && staged.binary_search(&p).is_ok() {
                batch.apply_staged(p);
                applied.push(p);
            } else if unmerged && p <= id {
                for (k, v) in self.store.scan(&prefix).map_err(|e| e.to_string())? {
                    let mut main = Vec::with_capacity(k.len() - 8);
                    main.push(STATE);
                    main.extend_from_slice(&k[9..]);
                    match v.first() {
                        Some(1) => batch.put(main, v[1..].to_vec()),
                        Some(0) => batch.delete(main),
                        _ => {
                            return Err(format!(
                                "{location}: checkpoint {p} has a corrupt state entry; restore the state dir from a backup or start from an empty one"
                            ))
                        }
                    }
                }
            }
            if unmerged {
                batch.delete_range(prefix, u64_key(PENDING, p + 1));
            }
            if p > id {
                batch.delete(u64_key(META, p));
                batch.delete(u64_key(RANGE, p));
            }
        }
        for s in staged.into_iter().filter(|s| !applied.contains(s)) {
            batch.drop_staged(s);
        }
        batch.delete_range(u64_key(META, 0), u64_key(META, first));
        batch.delete_range(u64_key(RANGE, 0), u64_key(RANGE, first));
        batch.delete_range(u64_key(OUTBOX, id.saturating_add(1)), vec![OUTBOX + 1]);
        self.merged_through = Some(id);
        batch.put(MANIFEST.to_vec(), self.manifest_bytes()?);
        self.store.write(batch).map_err(|e| e.to_string())?;
        let meta = read_meta(&*self.store, first)?;
        let epoch = id & super::EPOCH_MASK;
        let sources = positions_in(&meta, id);
        let inflight = meta
            .inflight
            .into_iter()
            .filter(|(e, _)| *e > epoch)
            .map(|(_, m)| m)
            .collect();
        let mut replay = Vec::new();
        for (k, v) in self.store.scan(&[OUTBOX]).map_err(|e| e.to_string())? {
            let Some(cid) = id_of(&k) else { continue };
            let records: Vec<EgressMessage> = bincode::deserialize(&v).map_err(|e| {
                format!("{location}: the egress outbox of checkpoint {cid} is corrupt ({e}); restore the state dir from a backup")
            })?;
            replay.extend(records.into_iter().map(|r| (cid, r)));
        }
        Ok(Some(Recovered {
            id,
            sources,
            timers: meta.timers,
            inflight,
            replay,
        }))
    }

    /// Writes checkpoint `meta.id`: the state changes since the last one,
    /// `meta`, and `outbox`, as one synced batch.
    ///
    /// Also merges the changes of earlier checkpoints up to `complete_through`
    /// (known complete on every worker) into the main state, and drops the
    /// outboxes of checkpoints up to `delivered_through`. Batches handed to the
    /// background writer before are written first.
    pub fn checkpoint(
        &mut self,
        meta: CheckpointMeta,
        outbox: &[EgressMessage],
        complete_through: Option<u64>,
        delivered_through: Option<u64>,
    ) -> Result<CheckpointStats, String> {
        let started = Instant::now();
        for (_, result) in self.wait_written() {
            result?;
        }
        let (job, mut stats) = self.prepare(meta, outbox, complete_through, delivered_through)?;
        stats.bytes = job.write(&*self.store, &mut Vec::new())?;
        self.acknowledge(stats.id);
        stats.duration = started.elapsed();
        Ok(stats)
    }

    /// [`DurableBackend::checkpoint`], with the batch encoded and written by a background
    /// thread: returns at once (`duration` is the worker's pause: freezing the window
    /// and building the checkpoint's metadata, not proportional to the state changed),
    /// and what the batch holds stays readable from memory until the store has it. The
    /// checkpoint is durable only once [`DurableBackend::poll_written`] or
    /// [`DurableBackend::wait_written`] reports it; batches are written in the order they
    /// were handed over, and `waker` is called after each.
    pub fn checkpoint_in_background(
        &mut self,
        meta: CheckpointMeta,
        outbox: &[EgressMessage],
        complete_through: Option<u64>,
        delivered_through: Option<u64>,
        waker: &Arc<dyn Fn() + Send + Sync>,
    ) -> Result<CheckpointStats, String> {
        let (job, stats) = self.prepare(meta, outbox, complete_through, delivered_through)?;
        if self.writer.is_none() {
            self.writer = Some(Writer::start(self.store.clone(), waker.clone())?);
        }
        let sent = self
            .writer
            .as_ref()
            .and_then(|w| w.jobs.as_ref())
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(format!(
                "{}: the checkpoint writer stopped (an earlier write failed)",
                self.store.location()
            ));
        }
        self.submitted.push_back(stats.id);
        Ok(stats)
    }

    /// Checkpoints the background writer finished since the last call, oldest first:
    /// each one's id and write time and size, or why it failed.
    pub fn poll_written(&mut self) -> Vec<Written> {
        let mut out = Vec::new();
        while let Some(done) = self.writer.as_ref().and_then(|w| w.done.try_recv().ok()) {
            out.push(done);
        }
        self.take(&out);
        out
    }

    /// Waits until every checkpoint handed to the background writer is written (or
    /// failed); what [`DurableBackend::poll_written`] would have reported.
    pub fn wait_written(&mut self) -> Vec<Written> {
        let mut out = Vec::new();
        while !self.submitted.is_empty() {
            match self.writer.as_ref().map(|w| w.done.recv()) {
                Some(Ok(done)) => {
                    self.take(std::slice::from_ref(&done));
                    out.push(done);
                }
                _ => {
                    let id = self.submitted.pop_front().unwrap_or(0);
                    out.push((
                        id,
                        Err(format!(
                            "{}: the checkpoint writer stopped",
                            self.store.location()
                        )),
                    ));
                }
            }
        }
        out
    }

    fn take(&mut self, done: &[Written]) {
        for (id, result) in done {
            self.submitted.retain(|s| s != id);
            if result.is_ok() {
                self.acknowledge(*id);
            }
        }
    }

    /// Checkpoint `id`'s batch is durable: the intervals it wrote into the main state are
    /// safe, and their entries may leave the hot table.
    fn acknowledge(&mut self, id: u64) {
        while let Some(&(batch, interval)) = self.unsafe_intervals.front() {
            if batch > id {
                break;
            }
            self.safe = self.safe.max(interval);
            self.unsafe_intervals.pop_front();
        }
    }

    /// An empty change log from those the writer gave back (the largest; any others are
    /// freed).
    fn spare_log(&mut self) -> Option<ChangeLog> {
        let spare = &self.writer.as_ref()?.spare;
        let mut log = spare.try_recv().ok()?;
        while let Ok(other) = spare.try_recv() {
            if other.capacity() > log.capacity() {
                log = other;
            }
        }
        log.clear();
        Some(log)
    }

    /// Drops the hot table, the current changes and the pending logs.
    fn forget_memory(&mut self) {
        self.hot.clear();
        self.log = ChangeLog::default();
        self.dirty = 0;
        self.pending.clear();
        self.unsafe_intervals.clear();
        self.safe = self.interval;
        self.interval += 1;
    }

    /// Closes the current interval as checkpoint `meta.id` (see
    /// [`DurableBackend::checkpoint`]) and builds the rest of its batch; the changed
    /// values are encoded from the interval's change log later, by [`Job::encode`]. The
    /// hot table keeps the newest values; its entries changed in the interval stay until
    /// the batch writing them into the main state is acknowledged.
    fn prepare(
        &mut self,
        mut meta: CheckpointMeta,
        outbox: &[EgressMessage],
        complete_through: Option<u64>,
        delivered_through: Option<u64>,
    ) -> Result<(Job, CheckpointStats), String> {
        let started = Instant::now();
        let id = meta.id;
        let mut rest = Batch::default();
        // A single worker never has to roll back to an older checkpoint than
        // its newest, so its changes go straight into the main state.
        let direct = self.peers == 1;
        // The next log starts at the size this one reached: no copying as it grows.
        let mut next = self.spare_log().unwrap_or_default();
        next.reserve(self.log.bytes());
        let own: Frozen = Arc::new(std::mem::replace(&mut self.log, next));
        let closed = self.interval;
        self.interval += 1;
        let n = self.dirty as u64;
        self.dirty = 0;
        meta.state_changes = n;
        if direct {
            self.merged_through = Some(id);
            rest.delete_range(u64_key(META, 0), u64_key(META, id));
            rest.delete_range(u64_key(RANGE, 0), u64_key(RANGE, id));
        }
        meta.outbox_records = outbox.len() as u64;
        // Merge checkpoints every worker has completed.
        let mut changed = n as usize;
        let mut merges = Vec::new();
        if let Some(done) = complete_through {
            while self.pending.first().is_some_and(|p| p.id <= done) {
                let p = self.pending.remove(0);
                changed += p.changes;
                rest.delete_range(u64_key(PENDING, p.id), u64_key(PENDING, p.id + 1));
                // In the main state once this batch is in the store.
                self.unsafe_intervals.push_back((id, p.interval));
                merges.push((p.id, p.log));
                self.merged_through = Some(p.id);
            }
            if let Some(m) = self.merged_through.filter(|_| !merges.is_empty()) {
                rest.delete_range(u64_key(META, 0), u64_key(META, m));
                rest.delete_range(u64_key(RANGE, 0), u64_key(RANGE, m));
            }
        }
        if let Some(d) = delivered_through {
            rest.delete_range(u64_key(OUTBOX, 0), u64_key(OUTBOX, d.saturating_add(1)));
        }
        meta.written_at_ms = crate::clock::Clock::now_ms();
        let meta_bytes =
            bincode::serialize(&meta).map_err(|e| format!("cannot encode checkpoint {id}: {e}"))?;
        rest.put(u64_key(META, id), meta_bytes);
        rest.put(u64_key(RANGE, id), meta.last.max(id).to_be_bytes().to_vec());
        if !outbox.is_empty() {
            let bytes = bincode::serialize(outbox)
                .map_err(|e| format!("cannot encode the outbox of checkpoint {id}: {e}"))?;
            rest.put(u64_key(OUTBOX, id), bytes);
        }
        rest.put(MANIFEST.to_vec(), self.manifest_bytes()?);
        if direct {
            self.unsafe_intervals.push_back((id, closed));
        } else {
            self.pending.push(Pending {
                id,
                log: own.clone(),
                changes: n as usize,
                interval: closed,
            });
        }
        let stats = CheckpointStats {
            id,
            changes: n,
            merged: merges.len(),
            bytes: rest.bytes(),
            duration: started.elapsed(),
        };
        let job = Job {
            id,
            own,
            direct,
            merges,
            changed,
            rest,
        };
        Ok((job, stats))
    }

    /// Deletes every outbox of `store`: all egress records were delivered (after the
    /// final checkpoint of a clean run, when the backend itself may be gone; see
    /// [`DurableBackend::shared_store`]).
    pub fn forget_outboxes(store: &S) -> Result<(), String> {
        let mut batch = Batch::default();
        batch.delete_range(vec![OUTBOX], vec![OUTBOX + 1]);
        store.write(batch).map_err(|e| e.to_string())
    }

    /// The store, shared: the worker keeps it open past the dataflow that owns the
    /// backend (reopening a RocksDB database replays its write-ahead log, seconds for a
    /// large one).
    pub fn shared_store(&self) -> Arc<S> {
        self.store.clone()
    }

    /// The newest checkpoint merged into the main state.
    pub fn merged_through(&self) -> Option<u64> {
        self.merged_through
    }

    /// The store (for tests and tools).
    pub fn store(&self) -> &S {
        &self.store
    }

    fn manifest_bytes(&self) -> Result<Vec<u8>, String> {
        bincode::serialize(&Manifest {
            format: FORMAT,
            worker: self.worker,
            peers: self.peers,
            merged_through: self.merged_through,
        })
        .map_err(|e| format!("cannot encode the manifest: {e}"))
    }

    /// Encodes `key` as a main-state key into `self.key`, unless it holds that key
    /// already (an invocation reads a value and then writes it: one encoding and one hash
    /// for both) or the batch's fetch encoded it ([`DurableBackend::take_fetched`]), and
    /// returns its hot hash.
    #[inline]
    fn encode(&mut self, key: &StateKey<'_>) -> u32 {
        if !encodes(&self.key, key) && !self.take_fetched(key) {
            self.encode_new(key);
        }
        self.key_hash
    }

    /// [`DurableBackend::encode`] for a read, which is usually of the fetch's next key
    /// (a write is usually of the key just read).
    #[inline]
    fn encode_read(&mut self, key: &StateKey<'_>) -> u32 {
        if !self.take_fetched(key) && !encodes(&self.key, key) {
            self.encode_new(key);
        }
        self.key_hash
    }

    /// Encodes `key` into `self.key` with its hash; its slot is not known yet.
    fn encode_new(&mut self, key: &StateKey<'_>) {
        self.encode_anew(key);
        self.key_hash = hot_hash(key.function.as_str(), key.id);
        self.key_slot = None;
    }

    /// Takes `key`'s encoding, hash and slot from [`StateBackend::fetch`]'s keys if it is
    /// the next one there, or one of the few after it ([`FETCHED_AHEAD`]: an invocation
    /// reads some of its function's values, not necessarily all and in order). The
    /// invocations of a batch read their keys in the order the batch's fetch was given
    /// them, so a read usually encodes, hashes and finds nothing again.
    #[inline]
    fn take_fetched(&mut self, key: &StateKey<'_>) -> bool {
        let ahead = self.fetched.len().min(self.fetched_next + FETCHED_AHEAD);
        for n in self.fetched_next..ahead {
            let f = &self.fetched[n];
            let bytes = &self.fetch_keys[f.start..f.end];
            if encodes(bytes, key) {
                self.key.clear();
                append_bytes(&mut self.key, bytes);
                self.key_hash = f.hash;
                self.key_slot = f.slot;
                self.fetched_next = n + 1;
                return true;
            }
        }
        false
    }

    /// Writes the encoding of `key` into `self.key`: the state byte, the key group (u16),
    /// the function type and the id, each after its length (u16, u32), and the spec.
    ///
    /// The function type's part stays when the last key had the same type (an operator's
    /// messages are mostly for one type), and the short pieces are stored without calls to
    /// `memcpy` ([`append_bytes`]): a batch's read and each invocation's read encode a key.
    fn encode_anew(&mut self, key: &StateKey<'_>) {
        let f = key.function.as_str().as_bytes();
        let (id, spec) = (key.id.as_bytes(), key.spec.as_bytes());
        let k = &mut self.key;
        let head = 5 + f.len();
        let same_function = k.len() >= head
            && k[0] == STATE
            && k[3..5] == (f.len() as u16).to_be_bytes()
            && same_bytes(&k[5..head], f);
        if same_function {
            k.truncate(head);
        } else {
            k.clear();
            k.reserve(head + 4 + id.len() + spec.len());
            k.extend_from_slice(&[STATE, 0, 0]);
            k.extend_from_slice(&(f.len() as u16).to_be_bytes());
            k.extend_from_slice(f);
        }
        k[1..3].copy_from_slice(&(key_group(key.id) as u16).to_be_bytes());
        k.extend_from_slice(&(id.len() as u32).to_be_bytes());
        append_bytes(k, id);
        append_bytes(k, spec);
    }

    /// The value of `self.key` in the store's main state; `None` if reading failed (the
    /// error is kept for [`StateBackend::take_error`]).
    fn load(&mut self) -> Option<Option<StoredValue>> {
        match self.store.get_into(&self.key, &mut self.read) {
            Ok(true) => match decode_value(&self.read) {
                Some(v) => Some(Some(v)),
                None => {
                    self.error.get_or_insert_with(|| {
                        format!(
                            "{}: a state value is corrupt (shorter than its header)",
                            self.store.location()
                        )
                    });
                    None
                }
            },
            Ok(false) => Some(None),
            Err(e) => {
                self.error.get_or_insert(e.to_string());
                None
            }
        }
    }

    /// The hot table's slot of `self.key`, entered with `value` if it is not there.
    #[inline]
    fn slot(
        &mut self,
        hash: u32,
        value: impl FnOnce(&mut Self) -> Option<Option<StoredValue>>,
    ) -> Option<usize> {
        if let Some((i, generation)) = self.key_slot {
            if generation == self.hot.generation() {
                return Some(i);
            }
        }
        let i = match self.hot.find(hash, &self.key) {
            Some(i) => i,
            None => {
                let value = value(self)?;
                self.hot.make_room(self.cache_limit, self.safe);
                self.hot.insert(hash, &self.key, value)
            }
        };
        self.key_slot = Some((i, self.hot.generation()));
        Some(i)
    }

    /// Sets the value of `self.key` (`None`: deleted) and logs the change.
    fn set(&mut self, hash: u32, value: Option<ValueRef<'_>>) {
        let Some(i) = self.slot(hash, |_| Some(None)) else {
            return;
        };
        let entry = self.hot.set(i, value);
        if entry.changed == self.interval {
            if !self.log.overwrite(entry.logged_at, value) {
                entry.logged_at = self.log.append(&self.key, value);
            }
        } else {
            entry.changed = self.interval;
            entry.logged_at = self.log.append(&self.key, value);
            self.dirty += 1;
        }
    }
}

impl<S: Store> StateBackend for DurableBackend<S> {
    fn get(&mut self, key: &StateKey<'_>) -> Option<ValueRef<'_>> {
        let hash = self.encode_read(key);
        let i = self.slot(hash, Self::load)?;
        self.hot.at(i).value()
    }

    fn put(&mut self, key: &StateKey<'_>, value: StoredValue) {
        let hash = self.encode(key);
        self.set(hash, Some(value.as_value_ref()));
    }

    fn delete(&mut self, key: &StateKey<'_>) {
        let hash = self.encode(key);
        self.set(hash, None);
    }

    fn fetches(&self) -> bool {
        true
    }

    /// Reads the keys the hot table misses with one [`Store::get_many`] (sorted: RocksDB's
    /// batched `MultiGet` then shares filter probes, index searches and block reads among
    /// them) and enters them, as [`StateBackend::get`] would one by one.
    ///
    /// The keys' encodings, hashes and slots stay for the invocations' reads
    /// ([`DurableBackend::take_fetched`]).
    fn fetch(&mut self, keys: &[StateKey<'_>]) {
        self.fetch_keys.clear();
        self.fetched.clear();
        self.fetch_misses.clear();
        self.fetched_next = 0;
        // Encoded and their slots prefetched first, then looked up: the lookups' cache
        // misses overlap.
        for key in keys {
            if !encodes(&self.key, key) {
                self.encode_new(key);
            }
            let hash = self.key_hash;
            self.hot.prefetch(hash);
            let start = self.fetch_keys.len();
            append_bytes(&mut self.fetch_keys, &self.key);
            let end = self.fetch_keys.len();
            self.fetched.push(Fetched {
                start,
                end,
                hash,
                slot: None,
            });
        }
        // Then the keys of the entries those slots hold (a second miss each), again all
        // before any is compared.
        for f in &self.fetched {
            self.hot.prefetch_entry(f.hash);
        }
        let (hot, bytes) = (&self.hot, &self.fetch_keys);
        let generation = hot.generation();
        for (n, f) in self.fetched.iter_mut().enumerate() {
            match hot.find(f.hash, &bytes[f.start..f.end]) {
                Some(i) => f.slot = Some((i, generation)),
                None => self.fetch_misses.push(n),
            }
        }
        if self.fetch_misses.is_empty() {
            return;
        }
        let fetched = &mut self.fetched;
        let range = |n: &usize| fetched[*n].start..fetched[*n].end;
        self.fetch_misses
            .sort_unstable_by(|a, b| bytes[range(a)].cmp(&bytes[range(b)]));
        self.fetch_misses
            .dedup_by(|a, b| bytes[range(a)] == bytes[range(b)]);
        let keys: Vec<&[u8]> = self.fetch_misses.iter().map(|n| &bytes[range(n)]).collect();
        let (hot, misses, limit, safe) = (
            &mut self.hot,
            &self.fetch_misses,
            self.cache_limit,
            self.safe,
        );
        let read = self.store.get_many(&keys, &mut |i, value| {
            let value = match value.map(decode_value) {
                Some(Some(v)) => Some(v),
                // Corrupt: left out, so the invocation's own read reports it.
                Some(None) => return,
                None => None,
            };
            let f = &mut fetched[misses[i]];
            hot.make_room(limit, safe);
            let slot = hot.insert(f.hash, &bytes[f.start..f.end], value);
            f.slot = Some((slot, hot.generation()));
        });
        if let Err(e) = read {
            self.error.get_or_insert(e.to_string());
        }
    }

    fn len(&self) -> usize {
        self.store.approximate_len() as usize
    }

    fn census(&mut self, _now_ms: u64) -> Option<crate::state::StateCensus> {
        self.census.poll(&self.store, self.worker)
    }

    fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }
}

fn read_manifest<S: Store>(store: &S) -> Result<Option<Manifest>, String> {
    let mut buf = Vec::new();
    match store.get_into(MANIFEST, &mut buf) {
        Ok(false) => Ok(None),
        Ok(true) => {
            let m: Manifest = bincode::deserialize(&buf).map_err(|e| {
                format!(
                    "{}: the manifest is corrupt ({e}); restore the state dir from a backup or start from an empty one",
                    store.location()
                )
            })?;
            if m.format != FORMAT {
                return Err(format!(
                    "{}: state format {} is not supported by this version (which reads format {FORMAT})",
                    store.location(),
                    m.format
                ));
            }
            Ok(Some(m))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The restorable checkpoints: (first, last) id covered by each written one.
fn ranges<S: Store>(store: &S) -> Result<Vec<(u64, u64)>, String> {
    Ok(store
        .scan(&[RANGE])
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|(k, v)| {
            let first = id_of(k)?;
            let last = u64::from_be_bytes(v.as_slice().try_into().ok()?);
            Some((first, last))
        })
        .collect())
}

/// Where each ingress of `meta` resumes for checkpoint `id`: (ingress, position).
fn positions_in(meta: &CheckpointMeta, id: u64) -> Vec<(String, Vec<u8>)> {
    let epoch = id & super::EPOCH_MASK;
    meta.sources
        .iter()
        .filter_map(|(ingress, entries)| {
            position_at(entries, epoch).map(|p| (ingress.clone(), p.to_vec()))
        })
        .collect()
}

/// Where each ingress of this worker resumes for checkpoint `id`, read without changing
/// the store (for tools such as `statefun kafka lag`; [`DurableBackend::restore`] returns
/// the same positions as it rolls the store to `id`).
pub fn source_positions<S: Store>(store: &S, id: u64) -> Result<Vec<(String, Vec<u8>)>, String> {
    let all = ranges(store)?;
    let Some(&(first, _)) = all.iter().rev().find(|(lo, hi)| *lo <= id && id <= *hi) else {
        return Err(format!(
            "{}: checkpoint {id} is missing (this worker has {all:?})",
            store.location()
        ));
    };
    Ok(positions_in(&read_meta(store, first)?, id))
}

/// The position that goes with checkpoint epoch `c`: the first entry taken
/// after `c` (all records of epochs `≤ c` read), else the newest.
pub fn position_at(entries: &[(u64, Vec<u8>)], c: u64) -> Option<&[u8]> {
    entries
        .iter()
        .find(|(b, _)| *b > c)
        .or_else(|| entries.last())
        .map(|(_, p)| p.as_slice())
}

fn read_meta<S: Store>(store: &S, id: u64) -> Result<CheckpointMeta, String> {
    let mut buf = Vec::new();
    let present = store
        .get_into(&u64_key(META, id), &mut buf)
        .map_err(|e| e.to_string())?;
    if !present {
        return Err(format!("{}: checkpoint {id} is missing", store.location()));
    }
    bincode::deserialize(&buf).map_err(|e| {
        format!(
            "{}: checkpoint {id} is corrupt ({e}); restore the state dir from a backup or start from an empty one",
            store.location()
        )
    })
}

/// The key group of a raw main-state key (the two bytes after the prefix, see the layout).
pub fn state_key_group(key: &[u8]) -> Option<u32> {
    match key {
        [STATE, hi, lo, ..] => Some(u32::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// The function type of a raw main-state key (after the key group, length-prefixed, see
/// the layout).
pub(crate) fn state_function(key: &[u8]) -> Option<&[u8]> {
    match key {
        [STATE, _, _, hi, lo, rest @ ..] => rest.get(..usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// Up to `limit` main-state entries (raw keys and values) after the key `after`: the
/// state of a store rolled to a checkpoint, read in pieces to move its key groups to
/// the workers that own them after a rescale.
pub fn state_chunk<S: Store>(
    store: &S,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<super::Entries, String> {
    store
        .scan_chunk(&[STATE], after, limit)
        .map_err(|e| e.to_string())
}

/// Writes main-state entries from [`state_chunk`] of other stores into `store` (a new
/// worker's store being built by a rescale); anything else is refused.
pub fn put_state<S: Store>(store: &mut S, entries: super::Entries) -> Result<(), String> {
    let mut batch = Batch::default();
    for (k, v) in entries {
        if state_key_group(&k).is_none() || decode_value(&v).is_none() {
            return Err(format!(
                "{}: a moved state entry is malformed; the source state dir is damaged",
                store.location()
            ));
        }
        batch.put(k, v);
    }
    store.write(batch).map_err(|e| e.to_string())
}

/// Seals a store built by a rescale as holding checkpoint `meta.id` of worker `worker`
/// of `peers`, merged (it was complete on every old worker): the checkpoint's metadata,
/// its range and the manifest, in one synced batch written last, so a store without a
/// manifest is one whose building did not finish.
pub fn seal_rescaled<S: Store>(
    store: &mut S,
    worker: usize,
    peers: usize,
    mut meta: CheckpointMeta,
) -> Result<(), String> {
    let id = meta.id;
    meta.last = id;
    meta.written_at_ms = crate::clock::Clock::now_ms();
    let mut batch = Batch::default();
    let meta_bytes =
        bincode::serialize(&meta).map_err(|e| format!("cannot encode checkpoint {id}: {e}"))?;
    batch.put(u64_key(META, id), meta_bytes);
    batch.put(u64_key(RANGE, id), id.to_be_bytes().to_vec());
    let manifest = bincode::serialize(&Manifest {
        format: FORMAT,
        worker,
        peers,
        merged_through: Some(id),
    })
    .map_err(|e| format!("cannot encode the manifest: {e}"))?;
    batch.put(MANIFEST.to_vec(), manifest);
    store.write(batch).map_err(|e| e.to_string())
}

/// Lists what `store` holds (for `statefun checkpoints`).
pub fn list<S: Store>(store: &S) -> Result<WorkerCheckpoints, String> {
    let manifest = read_manifest(store)?;
    let merged = manifest.as_ref().and_then(|m| m.merged_through);
    let mut outboxes = FxHashMap::default();
    for (k, v) in store.scan(&[OUTBOX]).map_err(|e| e.to_string())? {
        if let Some(id) = id_of(&k) {
            let n = bincode::deserialize::<Vec<EgressMessage>>(&v).map_or(0, |r| r.len());
            outboxes.insert(id, n);
        }
    }
    let mut checkpoints = Vec::new();
    for (id, _) in ranges(store)? {
        checkpoints.push(CheckpointInfo {
            id,
            merged: merged == Some(id),
            meta: read_meta(store, id)?,
            outbox: outboxes.get(&id).copied().unwrap_or(0),
        });
    }
    Ok(WorkerCheckpoints {
        manifest,
        checkpoints,
        keys: store.approximate_len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::store::MemoryStore;
    use statefun_sdk::{TypeName, TypedValue};

    fn f() -> TypeName {
        TypeName::parse("ns/counter").unwrap()
    }

    fn key<'a>(f: &'a TypeName, id: &'a str) -> StateKey<'a> {
        StateKey {
            function: f,
            id,
            spec: "count",
            slot: 0,
        }
    }

    /// Worker 0 of 2: changes go through pending checkpoints.
    fn open(store: &MemoryStore) -> (DurableBackend<MemoryStore>, WorkerReport) {
        DurableBackend::open(store.clone(), 0, 2).unwrap()
    }

    fn waker() -> Arc<dyn Fn() + Send + Sync> {
        Arc::new(|| {})
    }

    /// A change log the writer is done with is filled again by a later interval, for one
    /// worker (after its write) and for several (after the merge that writes it last),
    /// and what the reused log holds is that interval's changes only. A new log starts at
    /// the size the last one reached, so after a large interval and two small ones only
    /// a log given back is large.
    #[test]
    fn written_change_logs_are_filled_again() {
        for peers in [1, 2] {
            let store = MemoryStore::default();
            let (mut b, _) = DurableBackend::open(store.clone(), 0, peers).unwrap();
            for n in 0..1000 {
                put(&mut b, &format!("k{n}"), 1);
            }
            let large = b.log.bytes();
            let mut capacities = Vec::new();
            let mut complete = None;
            for id in [10u64, 20, 30, 40, 50] {
                b.checkpoint_in_background(meta(id), &[], complete, None, &waker())
                    .unwrap();
                for (_, result) in b.wait_written() {
                    result.unwrap();
                }
                complete = Some(id);
                capacities.push(b.log.capacity());
                put(&mut b, "b", id as u8);
            }
            assert!(
                capacities[2..].iter().any(|c| *c >= large),
                "{peers} worker(s): {capacities:?}, the first log {large} bytes"
            );
            b.checkpoint(meta(60), &[], complete, None).unwrap();
            drop(b);
            let (mut b, _) = DurableBackend::open(store.clone(), 0, peers).unwrap();
            b.restore(Some(60)).unwrap();
            assert_eq!((get(&mut b, "k7"), get(&mut b, "b")), (Some(1), Some(50)));
        }
    }

    #[test]
    fn a_background_write_stays_readable_until_the_store_has_it() {
        // One worker: changes go straight into the main state.
        let store = MemoryStore::default();
        let (mut b, _) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        b.cache_limit = 0;
        put(&mut b, "a", 1);
        store.hold_writes();
        let stats = b
            .checkpoint_in_background(meta(10), &[egress(1)], None, None, &waker())
            .unwrap();
        assert_eq!((stats.id, stats.changes), (10, 1));
        assert!(store.is_empty(), "the write is held");
        assert!(b.poll_written().is_empty());
        assert_eq!(
            get(&mut b, "a"),
            Some(1),
            "read from the batch being written"
        );
        store.release_writes();
        let done = b.wait_written();
        assert!(matches!(done.as_slice(), [(10, Ok(_))]), "{done:?}");
        assert_eq!(get(&mut b, "a"), Some(1));
        assert!(!store.is_empty());

        // Two workers: a merge moves a checkpoint's changes out of memory.
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        b.cache_limit = 0;
        put(&mut b, "a", 1);
        b.checkpoint_in_background(meta(10), &[], None, None, &waker())
            .unwrap();
        assert!(matches!(b.wait_written().as_slice(), [(10, Ok(_))]));
        put(&mut b, "b", 2);
        store.hold_writes();
        let stats = b
            .checkpoint_in_background(meta(20), &[], Some(10), None, &waker())
            .unwrap();
        assert_eq!(stats.merged, 1);
        assert_eq!(get(&mut b, "a"), Some(1), "merged, not yet in the store");
        assert_eq!(get(&mut b, "b"), Some(2));
        // Two checkpoints in flight are written in order.
        put(&mut b, "a", 3);
        b.checkpoint_in_background(meta(30), &[], None, None, &waker())
            .unwrap();
        assert_eq!(get(&mut b, "a"), Some(3));
        store.release_writes();
        let done: Vec<u64> = b
            .wait_written()
            .into_iter()
            .map(|(id, r)| {
                assert!(r.is_ok());
                id
            })
            .collect();
        assert_eq!(done, [20, 30]);
        drop(b);
        let (mut b, report) = open(&store);
        assert_eq!(report.restorable, vec![(10, 10), (20, 20), (30, 30)]);
        b.restore(Some(30)).unwrap();
        assert_eq!((get(&mut b, "a"), get(&mut b, "b")), (Some(3), Some(2)));
    }

    #[test]
    fn a_failed_background_write_is_reported_and_stops_the_writer() {
        let store = MemoryStore::default();
        let (mut b, _) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        put(&mut b, "a", 1);
        store.fail_write(1);
        b.checkpoint_in_background(meta(10), &[], None, None, &waker())
            .unwrap();
        let done = b.wait_written();
        assert!(matches!(done.as_slice(), [(10, Err(_))]), "{done:?}");
        put(&mut b, "a", 2);
        // Nothing after a failed batch is written: it would skip it.
        let next = b.checkpoint_in_background(meta(20), &[], None, None, &waker());
        let failed = next.is_err() || b.wait_written().iter().any(|(_, r)| r.is_err());
        assert!(failed);
        assert!(store.is_empty());
    }

    #[test]
    fn a_single_worker_writes_its_state_directly() {
        let store = MemoryStore::default();
        let (mut b, _) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        put(&mut b, "a", 1);
        b.checkpoint(meta(10), &[egress(1)], None, None).unwrap();
        put(&mut b, "a", 2);
        b.checkpoint(meta(20), &[], None, None).unwrap();
        assert_eq!(b.merged_through(), Some(20));
        assert!(
            store.dump().keys().all(|k| k[0] != PENDING),
            "no pending copies for a single worker"
        );
        drop(b);
        let (mut b, report) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        assert_eq!(report.restorable, vec![(20, 20)]);
        let r = b.restore(Some(20)).unwrap().unwrap();
        assert_eq!(r.replay, vec![(10, egress(1))], "undelivered outboxes stay");
        assert_eq!(get(&mut b, "a"), Some(2));
    }

    fn get<S: Store>(b: &mut DurableBackend<S>, id: &str) -> Option<u8> {
        let f = f();
        b.get(&key(&f, id)).map(|v| v.bytes[0])
    }

    fn put<S: Store>(b: &mut DurableBackend<S>, id: &str, n: u8) {
        let f = f();
        b.put(&key(&f, id), StoredValue::new(&[n]));
    }

    fn meta(id: u64) -> CheckpointMeta {
        CheckpointMeta {
            id,
            last: id,
            sources: vec![("in".into(), vec![(id + 1, id.to_be_bytes().to_vec())])],
            ..CheckpointMeta::default()
        }
    }

    fn egress(n: u8) -> EgressMessage {
        EgressMessage {
            egress: TypeName::parse("ns/out").unwrap(),
            value: TypedValue::new("ns/t", vec![n]),
        }
    }

    /// A census pass holds the store open: dropping the backend stops and joins it, so
    /// that a restart in the same process can open the database again at once.
    #[test]
    fn dropping_the_backend_ends_a_running_census_and_frees_the_store() {
        use crate::checkpoint::{RocksStore, StateMemory};
        let dir = tempfile::tempdir().unwrap();
        let open = || RocksStore::open(dir.path(), &StateMemory::minimal()).unwrap();
        let (mut b, _) = DurableBackend::open(open(), 0, 1).unwrap();
        for i in 0..300_000u32 {
            put(&mut b, &format!("id-{i}"), (i % 200) as u8);
        }
        b.checkpoint(meta(10), &[], None, None).unwrap();
        // Starts a pass (hundreds of milliseconds over 300 000 values) and drops at once.
        assert_eq!(b.census(0), None);
        drop(b);
        let (mut again, _) = DurableBackend::open(open(), 0, 1).unwrap();
        assert_eq!(get(&mut again, "id-7"), Some(7));
    }

    #[test]
    fn the_census_counts_the_merged_state_per_function_type() {
        // One worker: a checkpoint writes the main state.
        let store = MemoryStore::default();
        let (mut b, _) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        let other = TypeName::parse("ns/other").unwrap();
        // Enough keys for several chunks of a pass.
        for i in 0..40_000u32 {
            put(&mut b, &format!("id-{i}"), (i % 200) as u8);
        }
        b.put(&key(&other, "x"), StoredValue::new(b"twelve bytes"));
        b.put(
            &key(&other, "gone"),
            StoredValue {
                expires_at_ms: 1,
                ..StoredValue::new(b"expired")
            },
        );
        b.put(&key(&other, "y"), StoredValue::new(b"deleted"));
        b.delete(&key(&other, "y"));
        assert_eq!(
            super::super::census::count(&store, &Default::default()).unwrap(),
            vec![]
        );
        b.checkpoint_in_background(meta(10), &[], None, None, &waker())
            .unwrap();
        assert!(matches!(b.wait_written().as_slice(), [(10, Ok(_))]));
        let row = |function: &str, values, bytes| crate::state::FunctionState {
            function: function.into(),
            values,
            bytes,
        };
        let expected = vec![row("ns/counter", 40_000, 40_000), row("ns/other", 1, 12)];
        assert_eq!(
            super::super::census::count(&store, &Default::default()).unwrap(),
            expected
        );
        // Through the backend: the first call starts a pass, a later one has its count.
        let census = loop {
            if let Some(c) = b.census(0) {
                break c;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(census.by_function, expected);
    }

    #[test]
    fn nothing_reaches_the_store_before_a_checkpoint() {
        let store = MemoryStore::default();
        let (mut b, report) = open(&store);
        assert!(report.restorable.is_empty() && report.peers.is_none());
        put(&mut b, "a", 1);
        assert_eq!(get(&mut b, "a"), Some(1));
        assert!(store.is_empty(), "uncheckpointed writes stay in memory");
        drop(b);
        let (mut b, report) = open(&store);
        assert!(report.restorable.is_empty());
        assert_eq!(b.restore(None).unwrap().map(|r| r.id), None);
        assert_eq!(get(&mut b, "a"), None);
    }

    #[test]
    fn restore_returns_the_checkpointed_state_and_metadata() {
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        put(&mut b, "a", 1);
        put(&mut b, "b", 2);
        b.checkpoint(meta(10), &[egress(1)], None, None).unwrap();
        put(&mut b, "a", 3); // after the checkpoint: lost in a crash
        let f = f();
        b.delete(&key(&f, "b"));
        assert_eq!(get(&mut b, "b"), None);
        drop(b);
        let (mut b, report) = open(&store);
        assert_eq!(report.restorable, vec![(10, 10)]);
        assert_eq!(report.peers, Some(2));
        let r = b.restore(Some(10)).unwrap().unwrap();
        assert_eq!(
            r.sources,
            vec![("in".to_string(), 10u64.to_be_bytes().to_vec())]
        );
        assert_eq!(r.replay, vec![(10, egress(1))]);
        assert_eq!(get(&mut b, "a"), Some(1));
        assert_eq!(get(&mut b, "b"), Some(2));
    }

    #[test]
    fn a_worker_that_raced_ahead_rolls_back_to_the_agreed_checkpoint() {
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        put(&mut b, "a", 1);
        b.checkpoint(meta(10), &[egress(1)], None, None).unwrap();
        put(&mut b, "a", 2);
        put(&mut b, "c", 9);
        // Checkpoint 20 is written here, but a peer crashed before writing it.
        b.checkpoint(meta(20), &[egress(2)], None, None).unwrap();
        drop(b);
        let (mut b, report) = open(&store);
        assert_eq!(report.restorable, vec![(10, 10), (20, 20)]);
        let r = b.restore(Some(10)).unwrap().unwrap();
        assert_eq!(r.id, 10);
        assert_eq!(
            r.replay,
            vec![(10, egress(1))],
            "checkpoint 20's outbox is recomputed, not replayed"
        );
        assert_eq!(get(&mut b, "a"), Some(1));
        assert_eq!(get(&mut b, "c"), None);
        drop(b);
        // The roll-back is durable: another restart sees only 10.
        let (_, report) = open(&store);
        assert_eq!(report.restorable, vec![(10, 10)]);
    }

    #[test]
    fn complete_checkpoints_merge_and_older_ones_are_collected() {
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        put(&mut b, "a", 1);
        b.checkpoint(meta(10), &[], None, None).unwrap();
        put(&mut b, "a", 2);
        b.checkpoint(meta(20), &[], Some(10), None).unwrap();
        assert_eq!(b.merged_through(), Some(10));
        put(&mut b, "a", 3);
        b.checkpoint(meta(30), &[], Some(20), None).unwrap();
        assert_eq!(b.merged_through(), Some(20));
        // Checkpoint 10 is gone; 20 (merged) and 30 (pending) are restorable.
        let (_, report) = open(&store);
        assert_eq!(report.restorable, vec![(20, 20), (30, 30)]);
        // Reads see the newest value through pending changes and merged state.
        assert_eq!(get(&mut b, "a"), Some(3));
        drop(b);
        let (mut b, _) = open(&store);
        b.restore(Some(20)).unwrap();
        assert_eq!(get(&mut b, "a"), Some(2));
    }

    #[test]
    fn one_write_can_cover_a_range_of_checkpoints() {
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        put(&mut b, "a", 1);
        let env = |id: &str| crate::envelope::Envelope {
            target: statefun_sdk::Address::new(f(), id),
            caller: None,
            value: TypedValue::new("ns/t", vec![]),
            metadata: crate::envelope::Metadata::None,
        };
        let m = CheckpointMeta {
            id: 10,
            last: 40,
            sources: vec![(
                "in".into(),
                vec![
                    (11, b"p11".to_vec()),
                    (25, b"p25".to_vec()),
                    (45, b"p45".to_vec()),
                ],
            )],
            inflight: vec![(11, env("x")), (31, env("y"))],
            ..CheckpointMeta::default()
        };
        b.checkpoint(m, &[], None, None).unwrap();
        drop(b);
        let (mut b, report) = open(&store);
        assert_eq!(report.restorable, vec![(10, 40)]);
        // Restoring checkpoint 30 of the range: positions as of 30, messages sent past 30.
        let r = b.restore(Some(30)).unwrap().unwrap();
        assert_eq!(r.sources, vec![("in".to_string(), b"p45".to_vec())]);
        assert_eq!(r.inflight, vec![env("y")]);
        assert_eq!(get(&mut b, "a"), Some(1));
        drop(b);
        let (mut b, _) = open(&store);
        let r = b.restore(Some(10)).unwrap().unwrap();
        assert_eq!(r.sources, vec![("in".to_string(), b"p11".to_vec())]);
        assert_eq!(r.inflight.len(), 2);
    }

    #[test]
    fn fetched_values_are_the_stored_ones_and_unwritten_changes_win() {
        let store = MemoryStore::default();
        let (mut b, _) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        // Nothing kept but what is not yet durable.
        b.set_cache_bytes(0);
        for id in ["a", "b", "c"] {
            put(&mut b, id, 1);
        }
        b.checkpoint(meta(10), &[], None, None).unwrap();
        put(&mut b, "b", 7);
        let f = f();
        let ids = ["c", "a", "b", "new", "a"];
        b.fetch(&ids.iter().map(|id| key(&f, id)).collect::<Vec<_>>());
        assert_eq!(b.take_error(), None);
        assert_eq!(get(&mut b, "a"), Some(1));
        assert_eq!(
            get(&mut b, "b"),
            Some(7),
            "the unwritten change, not the stored value"
        );
        assert_eq!(get(&mut b, "c"), Some(1));
        assert_eq!(get(&mut b, "new"), None);
        b.delete(&key(&f, "a"));
        b.fetch(&[key(&f, "a")]);
        assert_eq!(get(&mut b, "a"), None, "the unwritten delete");
    }

    #[test]
    fn a_fresh_start_discards_checkpoints_that_never_completed() {
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        put(&mut b, "a", 1);
        b.checkpoint(meta(10), &[egress(1)], None, None).unwrap();
        drop(b);
        let (mut b, report) = open(&store);
        assert!(!report.merged, "nothing was known complete");
        assert!(b.restore(None).unwrap().is_none());
        assert_eq!(get(&mut b, "a"), None);
        drop(b);
        let (_, report) = open(&store);
        assert!(report.restorable.is_empty());
    }

    #[test]
    fn delivered_outboxes_are_dropped() {
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        b.checkpoint(meta(10), &[egress(1)], None, None).unwrap();
        b.checkpoint(meta(20), &[egress(2)], Some(10), None)
            .unwrap();
        b.checkpoint(meta(30), &[egress(3)], Some(20), Some(20))
            .unwrap();
        drop(b);
        let (mut b, _) = open(&store);
        let r = b.restore(Some(30)).unwrap().unwrap();
        assert_eq!(r.replay, vec![(30, egress(3))]);
    }

    #[test]
    fn a_failed_write_changes_nothing_on_disk() {
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        put(&mut b, "a", 1);
        b.checkpoint(meta(10), &[egress(1)], None, None).unwrap();
        let before = store.dump();
        put(&mut b, "a", 2);
        store.fail_write(1);
        assert!(b
            .checkpoint(meta(20), &[egress(2)], Some(10), None)
            .is_err());
        assert_eq!(store.dump(), before, "an atomic batch fails as a whole");
        drop(b);
        let (mut b, report) = open(&store);
        assert_eq!(report.restorable, vec![(10, 10)]);
        b.restore(Some(10)).unwrap();
        assert_eq!(get(&mut b, "a"), Some(1));
    }

    #[test]
    fn every_crash_point_of_a_checkpoint_sequence_restores_a_consistent_state() {
        // Fail each write of a sequence in turn ("crash" there), restore the
        // newest checkpoint, and check state equals what that checkpoint saw.
        for crash_at in 1..=6u64 {
            let store = MemoryStore::default();
            let (mut b, _) = open(&store);
            store.fail_write(crash_at);
            let mut written: Vec<(u64, u8)> = Vec::new();
            for (i, id) in [10u64, 20, 30, 40, 50, 60].into_iter().enumerate() {
                put(&mut b, "a", i as u8);
                let complete = written.last().map(|w| w.0);
                match b.checkpoint(meta(id), &[egress(i as u8)], complete, None) {
                    Ok(_) => written.push((id, i as u8)),
                    Err(_) => break,
                }
            }
            drop(b);
            let (mut b, report) = open(&store);
            let newest = report.restorable.last().map(|r| r.1);
            assert_eq!(
                newest,
                written.last().map(|w| w.0),
                "crash at write {crash_at}"
            );
            let r = b.restore(newest).unwrap();
            assert_eq!(
                get(&mut b, "a"),
                written.last().map(|w| w.1),
                "crash at write {crash_at}"
            );
            if let Some(r) = r {
                // Every outbox up to the restored checkpoint is still there (none was delivered).
                let replayed: Vec<u64> = r.replay.iter().map(|(c, _)| *c).collect();
                let expected: Vec<u64> = written.iter().map(|w| w.0).collect();
                assert_eq!(replayed, expected, "crash at write {crash_at}");
            }
        }
    }

    /// Several workers on a store that stages: each checkpoint's changes are staged when
    /// written and applied when merged (`min_writes` 1: all of them; 2: those changing
    /// two keys, the others written as pending values, so merges mix both). A crash at
    /// every write (staging a set counts as one), then a restore of the newest or the
    /// oldest restorable checkpoint, gives exactly that checkpoint's state, and leaves no
    /// staged set behind.
    #[test]
    fn staged_checkpoints_merge_roll_back_and_survive_every_crash_point() {
        for min_writes in [1, 2] {
            for oldest in [false, true] {
                for crash_at in 1..=14u64 {
                    let what = format!("min {min_writes}, oldest {oldest}, crash at {crash_at}");
                    let store = MemoryStore::default();
                    store.stage_sets(min_writes);
                    let (mut b, _) = open(&store);
                    store.fail_write(crash_at);
                    let mut written: Vec<(u64, Option<u8>, Option<u8>)> = Vec::new();
                    let mut value_b = None;
                    for (i, id) in [10u64, 20, 30, 40, 50, 60, 70].into_iter().enumerate() {
                        let i = i as u8;
                        put(&mut b, "a", i);
                        if i % 2 == 1 {
                            put(&mut b, "b", i);
                            value_b = Some(i);
                        }
                        // Every third checkpoint merges all before it: two or three at once.
                        let complete = written.last().filter(|_| i % 3 == 2).map(|w| w.0);
                        match b.checkpoint(meta(id), &[], complete, None) {
                            Ok(_) => written.push((id, Some(i), value_b)),
                            Err(_) => break,
                        }
                    }
                    drop(b);
                    // No fault past the crash.
                    store.fail_write(u64::MAX);
                    let (mut b, report) = open(&store);
                    let target = if oldest {
                        report.restorable.first()
                    } else {
                        report.restorable.last()
                    }
                    .map(|r| r.0);
                    let expected = written
                        .iter()
                        .find(|w| Some(w.0) == target)
                        .map_or((None, None), |w| (w.1, w.2));
                    if target.is_none() {
                        assert!(written.is_empty(), "{what}");
                    }
                    b.restore(target).unwrap();
                    assert_eq!((get(&mut b, "a"), get(&mut b, "b")), expected, "{what}");
                    assert_eq!(store.staged_ids(), Vec::<u64>::new(), "{what}");
                    // And the next checkpoints go on from there.
                    put(&mut b, "a", 100);
                    let next = target.unwrap_or(0) + 1000;
                    b.checkpoint(meta(next), &[], target, None).unwrap();
                    b.checkpoint(meta(next + 10), &[], Some(next), None)
                        .unwrap();
                    drop(b);
                    let (mut b, _) = open(&store);
                    b.restore(Some(next + 10)).unwrap();
                    assert_eq!(get(&mut b, "a"), Some(100), "{what}");
                    assert_eq!(get(&mut b, "b"), expected.1, "{what}");
                }
            }
        }
    }

    /// The encoding of the last key is reused only for that very key: keys whose parts
    /// run across each other's boundaries (same bytes, split differently) are encoded
    /// anew, and every reuse gives the bytes and hash a fresh encoding gives.
    #[test]
    fn a_key_encoding_is_reused_only_for_the_same_key() {
        let (ab, abc, ac) = (
            TypeName::parse("n/ab").unwrap(),
            TypeName::parse("n/abc").unwrap(),
            TypeName::parse("n/ac").unwrap(),
        );
        // Functions of the same length with other bytes, and the same function again:
        // the function's part of the last encoding is kept only for the same function.
        let keys = [
            (&ab, "c1", "x"),
            (&ab, "c", "1x"),
            (&abc, "1", "x"),
            (&ab, "c1x", ""),
            (&ac, "c1x", ""),
            (&ab, "c1", "x"),
            (&abc, "1", "x"),
        ];
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        let (mut fresh, _) = open(&MemoryStore::default());
        for (i, &(function, id, spec)) in keys.iter().enumerate() {
            let key = StateKey {
                function,
                id,
                spec,
                slot: 0,
            };
            let again = encodes(&b.key, &key);
            assert_eq!(again, i > 0 && keys[i - 1] == keys[i], "key {i}");
            let hash = b.encode(&key);
            assert!(encodes(&b.key, &key));
            fresh.key.clear();
            let expected = fresh.encode(&key);
            assert_eq!(
                (b.key.clone(), hash),
                (fresh.key.clone(), expected),
                "key {i}"
            );
            // Reused for the same key.
            assert_eq!(b.encode(&key), hash);
        }
    }

    /// A write after a read of the same key reuses the read's slot only while nothing in
    /// the hot table moved: a restore between them empties the table, and the write then
    /// enters the key anew.
    #[test]
    fn a_write_reuses_the_slot_of_its_read_only_while_the_table_is_unchanged() {
        let store = MemoryStore::default();
        let (mut b, _) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        put(&mut b, "a", 1);
        b.checkpoint(meta(10), &[], None, None).unwrap();
        put(&mut b, "b", 5);
        assert_eq!(get(&mut b, "a"), Some(1));
        b.restore(Some(10)).unwrap();
        put(&mut b, "a", 2);
        assert_eq!((get(&mut b, "a"), get(&mut b, "b")), (Some(2), None));
        // Read, write, read again: one slot throughout.
        assert_eq!(get(&mut b, "a"), Some(2));
        put(&mut b, "a", 3);
        assert_eq!(get(&mut b, "a"), Some(3));
        b.checkpoint(meta(20), &[], Some(10), None).unwrap();
        let (mut reopened, _) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        reopened.restore(Some(20)).unwrap();
        assert_eq!(get(&mut reopened, "a"), Some(3));
    }

    /// A read takes its key's encoding, hash and slot from the batch's fetch when the key
    /// is the fetch's next one or a few after it, and otherwise encodes and finds it as
    /// without a fetch; either way it reads the right value, also when the hot table
    /// changed between the fetch and the read.
    #[test]
    fn reads_take_what_the_fetch_found_and_nothing_stale() {
        let store = MemoryStore::default();
        let (mut b, _) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        for (n, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            put(&mut b, id, n as u8 + 1);
        }
        b.checkpoint(meta(10), &[], None, None).unwrap();
        drop(b);
        let (mut b, _) = DurableBackend::open(store.clone(), 0, 1).unwrap();
        b.restore(Some(10)).unwrap();
        let f = f();
        let fetch = |b: &mut DurableBackend<MemoryStore>, ids: &[&str]| {
            let keys: Vec<_> = ids.iter().map(|id| key(&f, id)).collect();
            b.fetch(&keys);
        };
        fetch(&mut b, &["a", "b", "c", "x", "d"]);
        // Skipping one: taken from the fetch.
        assert_eq!((get(&mut b, "b"), b.fetched_next), (Some(2), 2));
        // Behind the expected key: encoded anew, the same value.
        assert_eq!((get(&mut b, "a"), b.fetched_next), (Some(1), 2));
        // Not fetched at all, then the expected one again.
        put(&mut b, "y", 9);
        assert_eq!((get(&mut b, "c"), b.fetched_next), (Some(3), 3));
        assert_eq!((get(&mut b, "x"), b.fetched_next), (None, 4));
        // Further than the look-ahead: not taken.
        fetch(&mut b, &["a", "b", "c", "x", "y", "d"]);
        assert_eq!((get(&mut b, "d"), b.fetched_next), (Some(4), 0));
        // The table emptied under the fetch's slots: the read finds the key anew.
        fetch(&mut b, &["a", "b"]);
        b.hot.clear();
        assert_eq!((get(&mut b, "a"), b.fetched_next), (Some(1), 1));
        put(&mut b, "b", 7);
        assert_eq!((get(&mut b, "b"), b.fetched_next), (Some(7), 2));
    }

    #[test]
    fn staged_sets_are_used_only_when_the_store_takes_them() {
        let store = MemoryStore::default();
        store.stage_sets(2);
        let (mut b, _) = open(&store);
        put(&mut b, "a", 1);
        b.checkpoint(meta(10), &[], None, None).unwrap();
        // One change: written as pending values.
        assert!(store.staged_ids().is_empty());
        assert!(store.dump().keys().any(|k| k[0] == PENDING));
        put(&mut b, "a", 2);
        put(&mut b, "b", 2);
        b.checkpoint(meta(20), &[], Some(10), None).unwrap();
        assert_eq!(store.staged_ids(), vec![20]);
        assert!(store.dump().keys().all(|k| k[0] != PENDING));
        b.checkpoint(meta(30), &[], Some(20), None).unwrap();
        // Applied: in the main state, no copy left.
        assert!(store.staged_ids().is_empty());
        assert_eq!(
            store.dump().keys().filter(|k| k[0] == STATE).count(),
            2,
            "a and b in the main state"
        );
    }

    #[test]
    fn damaged_stores_give_errors_naming_what_is_wrong() {
        let store = MemoryStore::default();
        let (mut b, _) = open(&store);
        b.checkpoint(meta(10), &[], None, None).unwrap();
        drop(b);
        // Another worker's directory.
        let err = DurableBackend::open(store.clone(), 1, 2).err().unwrap();
        assert!(err.contains("worker 0, not worker 1"), "{err}");
        // A corrupt checkpoint.
        let s = store.clone();
        let mut batch = Batch::default();
        batch.put(u64_key(META, 10), b"garbage".to_vec());
        s.write(batch).unwrap();
        let (mut b, _) = open(&store);
        let err = b.restore(Some(10)).err().unwrap();
        assert!(err.contains("checkpoint 10 is corrupt"), "{err}");
        // A checkpoint that is not there.
        let mut batch = Batch::default();
        batch.put(u64_key(META, 10), bincode::serialize(&meta(10)).unwrap());
        s.write(batch).unwrap();
        let err = b.restore(Some(99)).err().unwrap();
        assert!(err.contains("checkpoint 99 is missing"), "{err}");
        // A corrupt manifest.
        let mut batch = Batch::default();
        batch.put(MANIFEST.to_vec(), vec![1]);
        s.write(batch).unwrap();
        let err = DurableBackend::open(store.clone(), 0, 2).err().unwrap();
        assert!(err.contains("manifest is corrupt"), "{err}");
    }

    #[test]
    fn expired_entries_are_recognised_for_compaction() {
        // The value bytes as the batch encodes them.
        let encoded = |v: StoredValue| -> Vec<u8> {
            let mut batch = Batch::default();
            put_state_value(&mut batch, &[b"s"], Some(v.as_value_ref()));
            let value = match batch.ops().next() {
                Some(crate::checkpoint::store::Op::Put(_, value)) => value.to_vec(),
                other => panic!("{other:?}"),
            };
            value
        };
        let value = encoded(StoredValue {
            bytes: [1u8].as_slice().into(),
            expires_at_ms: 100,
        });
        assert!(expired_state_entry(b"sxx", &value, 100));
        assert!(!expired_state_entry(b"sxx", &value, 99));
        assert!(
            !expired_state_entry(b"pxx", &value, 1000),
            "only main state is filtered"
        );
        let never = encoded(StoredValue::new(&[1]));
        assert!(!expired_state_entry(b"sxx", &never, u64::MAX - 1));
    }
}
