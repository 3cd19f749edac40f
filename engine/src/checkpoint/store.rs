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

/// One write in a [`Batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Stores a value.
    Put(Vec<u8>, Vec<u8>),
    /// Deletes a key.
    Delete(Vec<u8>),
    /// Deletes every key in `[from, to)`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// Writes applied together or not at all.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    ops: Vec<Op>,
    bytes: usize,
}

impl Batch {
    /// Stores `value` at `key`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put(key, value));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.bytes += key.len();
        self.ops.push(Op::Delete(key));
    }

    /// Deletes every key in `[from, to)`.
    pub fn delete_range(&mut self, from: Vec<u8>, to: Vec<u8>) {
        self.bytes += from.len() + to.len();
        self.ops.push(Op::DeleteRange(from, to));
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Key and value bytes in the batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A worker's durable key-value store.
pub trait Store: 'static {
    /// Reads `key` into `out` (replacing its contents); returns whether it was present.
    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// At most `limit` entries whose key starts with `prefix` and sorts after `after`
    /// (from the first when `None`), in key order: a scan in bounded pieces, for moving
    /// state larger than memory (a rescale).
    fn scan_chunk(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// Applies `batch` atomically and durably (synced to disk) before returning.
    fn write(&mut self, batch: Batch) -> Result<(), StoreError>;
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

#[derive(Debug, Default)]
struct Shared {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    faults: Faults,
}

/// An in-memory [`Store`] for tests. Clones share the data, so a test can
/// drop a backend ("crash") and open another on the same store; only
/// completed batches survive, as with a synced RocksDB write.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    shared: Arc<Mutex<Shared>>,
}

impl MemoryStore {
    /// Fails the `n`-th write from now (1 = the next), applying nothing of it.
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

    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        Ok(self
            .lock()
            .data
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
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

    fn write(&mut self, batch: Batch) -> Result<(), StoreError> {
        let mut s = self.lock();
        s.faults.writes += 1;
        if s.faults.fail_write == Some(s.faults.writes) {
            s.faults.fail_write = None;
            return Err(StoreError::new("injected write failure"));
        }
        for op in batch.ops {
            match op {
                Op::Put(k, v) => {
                    s.data.insert(k, v);
                }
                Op::Delete(k) => {
                    s.data.remove(&k);
                }
                Op::DeleteRange(from, to) => {
                    let doomed: Vec<Vec<u8>> =
                        s.data.range(from..to).map(|(k, _)| k.clone()).collect();
                    for k in doomed {
                        s.data.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    fn approximate_len(&self) -> u64 {
        self.lock().data.len() as u64
    }

    fn location(&self) -> String {
        "in-memory store".to_string()
    }
}
