//! The key-value store under durable state: one per worker, written only
//! in atomic, synced batches.
//!
//! [`Store`] is the seam between the checkpoint logic and its I/O: RocksDB
//! in production ([`super::RocksStore`]), [`MemoryStore`] in tests, where it
//! can also inject write failures and simulate crashes (dropping everything
//! not written by a completed batch).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A store failure, with the store's location in the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// What failed, naming the store.
    pub message: String,
}

impl StoreError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
        }
    }
}

/// One write in a [`Batch`], borrowing its bytes from the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// Stores a value.
    Put(&'a [u8], &'a [u8]),
    /// Deletes a key.
    Delete(&'a [u8]),
    /// Deletes every key in `[from, to)`.
    DeleteRange(&'a [u8], &'a [u8]),
    /// Applies the staged set ([`Store::stage`]) of this id here, in the batch's order:
    /// its writes win over the batch's earlier ones and lose to its later ones. The set
    /// is gone afterwards.
    ApplyStaged(u64),
    /// Deletes the staged set of this id, unapplied (nothing if there is none).
    DropStaged(u64),
}

/// Where an op's bytes are in the batch's arena: its key is `start..key_end`, its value
/// (or a range's end key) `key_end..end`.
#[derive(Clone, Copy, Debug)]
struct Extent {
    kind: u8,
    start: usize,
    key_end: usize,
    end: usize,
}

const PUT: u8 = 0;
const DELETE: u8 = 1;
const DELETE_RANGE: u8 = 2;
const APPLY_STAGED: u8 = 3;
const DROP_STAGED: u8 = 4;

/// Writes applied together or not at all.
///
/// The bytes of all writes live in one arena, so building a batch of a million
/// changed values costs no allocation per value (a checkpoint's batch, usually built by
/// the background writer). Writes are applied in the order they were added.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    slots: Vec<Extent>,
}

impl Batch {
    /// An empty batch with room for `bytes` of keys and values in `ops` writes.
    pub fn with_capacity(bytes: usize, ops: usize) -> Batch {
        Batch {
            data: Vec::with_capacity(bytes),
            slots: Vec::with_capacity(ops),
        }
    }

    fn push(&mut self, kind: u8, key: &[&[u8]], value: &[&[u8]]) {
        let start = self.data.len();
        for part in key {
            self.data.extend_from_slice(part);
        }
        let key_end = self.data.len();
        for part in value {
            self.data.extend_from_slice(part);
        }
        self.slots.push(Extent {
            kind,
            start,
            key_end,
            end: self.data.len(),
        });
    }

    /// Stores `value` at `key`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.push(PUT, &[&key], &[&value]);
    }

    /// Stores at the key made of `key` parts the value made of `value` parts, without
    /// building either first.
    pub fn put_parts(&mut self, key: &[&[u8]], value: &[&[u8]]) {
        self.push(PUT, key, value);
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.push(DELETE, &[&key], &[]);
    }

    /// Deletes the key made of `key` parts.
    pub fn delete_parts(&mut self, key: &[&[u8]]) {
        self.push(DELETE, key, &[]);
    }

    /// Deletes every key in `[from, to)`.
    pub fn delete_range(&mut self, from: Vec<u8>, to: Vec<u8>) {
        self.push(DELETE_RANGE, &[&from], &[&to]);
    }

    /// Applies staged set `id` at this point of the batch ([`Op::ApplyStaged`]).
    pub fn apply_staged(&mut self, id: u64) {
        self.push(APPLY_STAGED, &[&id.to_be_bytes()], &[]);
    }

    /// Deletes staged set `id` unapplied ([`Op::DropStaged`]).
    pub fn drop_staged(&mut self, id: u64) {
        self.push(DROP_STAGED, &[&id.to_be_bytes()], &[]);
    }

    /// Appends the writes of `other`.
    pub fn append(&mut self, other: &Batch) {
        for op in other.ops() {
            match op {
                Op::Put(k, v) => self.push(PUT, &[k], &[v]),
                Op::Delete(k) => self.push(DELETE, &[k], &[]),
                Op::DeleteRange(from, to) => self.push(DELETE_RANGE, &[from], &[to]),
                Op::ApplyStaged(id) => self.apply_staged(id),
                Op::DropStaged(id) => self.drop_staged(id),
            }
        }
    }

    /// The number of writes so far.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The writes, in order.
    pub fn ops(&self) -> impl Iterator<Item = Op<'_>> + '_ {
        self.ops_in(0..self.slots.len())
    }

    /// The writes at positions `range` (as counted by [`Batch::ops`]), in order.
    pub fn ops_in(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = Op<'_>> + '_ {
        self.slots[range].iter().map(|s| {
            let key = &self.data[s.start..s.key_end];
            let value = &self.data[s.key_end..s.end];
            let id = || key.try_into().map_or(0, u64::from_be_bytes);
            match s.kind {
                PUT => Op::Put(key, value),
                DELETE => Op::Delete(key),
                DELETE_RANGE => Op::DeleteRange(key, value),
                APPLY_STAGED => Op::ApplyStaged(id()),
                _ => Op::DropStaged(id()),
            }
        })
    }

    /// Key and value bytes in the batch.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// [`Store::get_many`] as one [`Store::get_into`] per key.
pub(crate) fn get_each<S: Store + ?Sized>(
    store: &S,
    keys: &[&[u8]],
    found: &mut dyn FnMut(usize, Option<&[u8]>),
) -> Result<(), StoreError> {
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let present = store.get_into(key, &mut out)?;
        found(i, present.then_some(out.as_slice()));
    }
    Ok(())
}

/// A worker's durable key-value store.
pub trait Store: Send + Sync + 'static {
    /// Reads `key` into `out` (replacing its contents); returns whether it was present.
    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError>;
    /// Reads every key of `keys` (sorted, no duplicates) and calls `found` with its index
    /// and its value (`None`: absent), in order; stops at the first error. One call
    /// instead of a read per key lets a store batch its work (RocksDB's `MultiGet` probes
    /// the filters and searches the index blocks of all keys together).
    fn get_many(
        &self,
        keys: &[&[u8]],
        found: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> Result<(), StoreError> {
        get_each(self, keys, found)
    }
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.scan_chunk(prefix, None, usize::MAX)
    }
    /// At most `limit` entries whose key starts with `prefix` and sorts after `after`
    /// (from the first when `None`), in key order: a scan in bounded pieces, for moving
    /// state larger than memory (a rescale).
    fn scan_chunk(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// Applies `batch` atomically and durably (synced to disk) before returning. Takes
    /// `&self`: a background writer writes while the worker reads.
    fn write(&self, batch: Batch) -> Result<(), StoreError>;
    /// Whether [`Store::stage`] takes a set of `writes` writes of main state: a store
    /// that keeps staged sets as files declines sets too small to be worth one. `false`
    /// for a store that keeps none.
    fn stages(&self, writes: usize) -> bool {
        let _ = writes;
        false
    }
    /// Sets aside, durably before returning, the puts and point deletions of main state
    /// in `changes` (any order, the last write of a key winning) as staged set `id`,
    /// replacing any set of that id: invisible to reads until a batch applies it
    /// ([`Batch::apply_staged`]), or deleted by one ([`Batch::drop_staged`]). A set is
    /// written once and applied without being written again (a checkpoint of several
    /// workers, staged when written and applied when every worker has completed it).
    fn stage(&self, id: u64, changes: &Batch) -> Result<(), StoreError> {
        let _ = changes;
        Err(StoreError::new(format!(
            "{}: this store keeps no staged sets (set {id})",
            self.location()
        )))
    }
    /// The ids of the staged sets the store holds, ascending.
    fn staged(&self) -> Result<Vec<u64>, StoreError> {
        Ok(Vec::new())
    }
    /// An estimate of the number of keys.
    fn approximate_len(&self) -> u64;
    /// Where the store lives, for messages.
    fn location(&self) -> String;
}

/// Faults a [`MemoryStore`] injects.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fail the n-th write from now (1 = the next one), applying nothing.
    pub fail_write: Option<u64>,
    writes: u64,
}

/// A staged set's writes of main state, in key order (`None`: a deletion).
type Staged = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Debug, Default)]
struct Shared {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Staged sets by id, when the store stages ([`MemoryStore::stage_sets`]).
    staged: BTreeMap<u64, Staged>,
    /// The fewest writes [`Store::stage`] takes; `None`: the store does not stage.
    stage_min: Option<usize>,
    faults: Faults,
}

/// An in-memory [`Store`] for tests. Clones share the data, so a test can
/// drop a backend ("crash") and open another on the same store; only
/// completed batches survive, as with a synced RocksDB write.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    shared: Arc<Mutex<Shared>>,
    /// Held writes wait until released (to see a background write in progress).
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl MemoryStore {
    /// Makes writes wait (before applying anything) until [`MemoryStore::release_writes`].
    pub fn hold_writes(&self) {
        *self.gate.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Lets held and later writes go.
    pub fn release_writes(&self) {
        *self.gate.0.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.gate.1.notify_all();
    }

    /// Makes the store take staged sets ([`Store::stage`]) of at least `min_writes`
    /// writes, as RocksDB's does large ones; off by default.
    pub fn stage_sets(&self, min_writes: usize) {
        self.lock().stage_min = Some(min_writes);
    }

    /// The ids of the staged sets held, ascending.
    pub fn staged_ids(&self) -> Vec<u64> {
        self.lock().staged.keys().copied().collect()
    }

    /// Fails the `n`-th write from now (1 = the next), applying nothing of it. Staging a
    /// set counts as a write.
    pub fn fail_write(&self, n: u64) {
        let mut s = self.lock();
        s.faults.fail_write = Some(n);
        s.faults.writes = 0;
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.lock().data.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every entry (for tests comparing stores).
    pub fn dump(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.lock().data.clone()
    }

    /// Waits while writes are held, then counts a write: an error if it is the one to fail.
    fn begin_write(&self) -> Result<std::sync::MutexGuard<'_, Shared>, StoreError> {
        let mut held = self.gate.0.lock().unwrap_or_else(|e| e.into_inner());
        while *held {
            held = self.gate.1.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        drop(held);
        let mut s = self.lock();
        s.faults.writes += 1;
        if s.faults.fail_write == Some(s.faults.writes) {
            s.faults.fail_write = None;
            return Err(StoreError::new("injected write failure"));
        }
        Ok(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        match self.shared.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Store for MemoryStore {
    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError> {
        out.clear();
        match self.lock().data.get(key) {
            Some(v) => {
                out.extend_from_slice(v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn scan_chunk(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        Ok(self
            .lock()
            .data
            .range((start, Bound::Unbounded))
            .skip_while(|(k, _)| k.as_slice() < prefix)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut s = self.begin_write()?;
        // All or nothing: a staged set the batch applies must exist before anything
        // is applied.
        for op in batch.ops() {
            if let Op::ApplyStaged(id) = op {
                if !s.staged.contains_key(&id) {
                    return Err(StoreError::new(format!(
                        "in-memory store: staged set {id} is missing"
                    )));
                }
            }
        }
        for op in batch.ops() {
            match op {
                Op::Put(k, v) => {
                    s.data.insert(k.to_vec(), v.to_vec());
                }
                Op::Delete(k) => {
                    s.data.remove(k);
                }
                Op::DeleteRange(from, to) => {
                    let doomed: Vec<Vec<u8>> = s
                        .data
                        .range(from.to_vec()..to.to_vec())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        s.data.remove(&k);
                    }
                }
                Op::ApplyStaged(id) => {
                    for (k, v) in s.staged.remove(&id).unwrap_or_default() {
                        match v {
                            Some(v) => s.data.insert(k, v),
                            None => s.data.remove(&k),
                        };
                    }
                }
                Op::DropStaged(id) => {
                    s.staged.remove(&id);
                }
            }
        }
        Ok(())
    }

    fn stages(&self, writes: usize) -> bool {
        self.lock().stage_min.is_some_and(|min| writes >= min)
    }

    fn stage(&self, id: u64, changes: &Batch) -> Result<(), StoreError> {
        let mut s = self.begin_write()?;
        let mut set = Staged::new();
        for op in changes.ops() {
            match op {
                Op::Put(k, v) => set.insert(k.to_vec(), Some(v.to_vec())),
                Op::Delete(k) => set.insert(k.to_vec(), None),
                _ => {
                    return Err(StoreError::new(
                        "in-memory store: a staged set holds only puts and deletions",
                    ))
                }
            };
        }
        s.staged.insert(id, set);
        Ok(())
    }

    fn staged(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.staged_ids())
    }

    fn approximate_len(&self) -> u64 {
        self.lock().data.len() as u64
    }

    fn location(&self) -> String {
        "in-memory store".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_keep_their_order_and_parts_join() {
        let mut batch = Batch::default();
        batch.delete_range(b"a".to_vec(), b"b".to_vec());
        batch.put_parts(&[b"k", b"3"], &[b"x", b"y"]);
        batch.delete_parts(&[b"k1"]);
        batch.put(b"k2".to_vec(), b"z".to_vec());
        batch.put(b"a0".to_vec(), b"last".to_vec());
        assert_eq!(batch.bytes(), 2 + 4 + 2 + 3 + 6);
        let ops: Vec<Op<'_>> = batch.ops().collect();
        assert_eq!(
            ops,
            [
                Op::DeleteRange(b"a", b"b"),
                Op::Put(b"k3", b"xy"),
                Op::Delete(b"k1"),
                Op::Put(b"k2", b"z"),
                Op::Put(b"a0", b"last"),
            ]
        );
        let store = MemoryStore::default();
        store.write(batch).unwrap();
        assert_eq!(store.dump().len(), 3);
    }
}
