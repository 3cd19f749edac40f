//! State backends: where the persisted values of function instances live.
//!
//! A backend stores one value per (function type, id, value spec). The
//! function operator reads and writes through it during invocations; the
//! expiry of a value is kept beside it so every backend applies TTL the same
//! way (see [`StoredValue::is_live`]). The in-memory backend serves tests and
//! benchmarks; a RocksDB backend implements the same trait for durable state.

mod table;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use statefun_sdk::TypeName;

pub(crate) use table::{append_bytes, close_hole, prefetch_line, same_bytes};
use table::{hash_id, Table};

/// Value bytes, stored inline up to 16 bytes (every primitive type fits).
pub type ValueBytes = SmallVec<[u8; 16]>;

/// A persisted value and the time (ms since the Unix epoch) it expires.
///
/// `expires_at_ms` is [`StoredValue::NEVER`] for values without TTL (a plain
/// `u64` rather than an `Option` keeps in-memory entries 8 bytes smaller).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    /// The value's wire bytes, as written by the SDK codec.
    pub bytes: ValueBytes,
    /// Expiry time in ms since the Unix epoch, or [`StoredValue::NEVER`].
    pub expires_at_ms: u64,
}

impl StoredValue {
    /// The expiry of values that never expire.
    pub const NEVER: u64 = u64::MAX;

    /// A value that never expires.
    pub fn new(bytes: &[u8]) -> Self {
        StoredValue {
            bytes: ValueBytes::from_slice(bytes),
            expires_at_ms: Self::NEVER,
        }
    }

    /// Whether the value is still readable at `now_ms`.
    ///
    /// ```
    /// use statefun_engine::state::StoredValue;
    /// let v = StoredValue { expires_at_ms: 100, ..StoredValue::new(&[1]) };
    /// assert!(v.is_live(99));
    /// assert!(!v.is_live(100));
    /// assert!(StoredValue::new(&[1]).is_live(u64::MAX - 1));
    /// ```
    #[inline]
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.as_value_ref().is_live(now_ms)
    }

    /// The value as backends lend it.
    #[inline]
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef {
            bytes: &self.bytes,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// A stored value as a backend lends it: its wire bytes and expiry.
///
/// Backends hand out this view rather than a `&StoredValue` so that each can
/// keep values in its own layout (the in-memory table packs small ids and
/// values into its entries).
///
/// ```
/// use statefun_engine::state::StoredValue;
/// let stored = StoredValue { expires_at_ms: 100, ..StoredValue::new(&[7]) };
/// let value = stored.as_value_ref();
/// assert_eq!(value.bytes, &[7]);
/// assert!(value.is_live(99) && !value.is_live(100));
/// assert_eq!(value.to_stored(), stored);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueRef<'a> {
    /// The value's wire bytes.
    pub bytes: &'a [u8],
    /// Expiry time in ms since the Unix epoch, or [`StoredValue::NEVER`].
    pub expires_at_ms: u64,
}

impl ValueRef<'_> {
    /// Whether the value is still readable at `now_ms` (as [`StoredValue::is_live`]).
    #[inline]
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// An owned copy.
    pub fn to_stored(&self) -> StoredValue {
        StoredValue {
            bytes: ValueBytes::from_slice(self.bytes),
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// Names one persisted value.
///
/// `slot` is the index of `spec` in the function type's list of value specs.
/// It is stable for the life of a process (specs are only ever appended), so
/// in-memory backends may match on it instead of the name; durable backends
/// key by name, which is stable across deployments.
#[derive(Clone, Copy, Debug)]
pub struct StateKey<'a> {
    /// The function type.
    pub function: &'a TypeName,
    /// The instance id.
    pub id: &'a str,
    /// The value spec's name.
    pub spec: &'a str,
    /// The value spec's index in the function type's specs.
    pub slot: u16,
}

/// Stored state of one function type on one worker: what [`StateBackend::census`] counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionState {
    /// The function type.
    pub function: String,
    /// Stored values (one per instance and value spec).
    pub values: u64,
    /// Bytes of those values (their wire bytes, without keys or expiry).
    pub bytes: u64,
}

/// A worker's stored state per function type, and when it was counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateCensus {
    /// Per function type, in name order.
    pub by_function: Vec<FunctionState>,
    /// When the count was taken (ms since the Unix epoch): now for in-memory state, the
    /// end of the last background pass over a durable store.
    pub counted_at_ms: u64,
}

/// Storage for function state, one instance per worker.
///
/// Backends need not apply TTL on reads; the function operator checks
/// [`StoredValue::is_live`] and deletes expired values it meets.
pub trait StateBackend: 'static {
    /// The value named by `key`, if stored.
    fn get(&mut self, key: &StateKey<'_>) -> Option<ValueRef<'_>>;
    /// Stores (replaces) the value named by `key`.
    fn put(&mut self, key: &StateKey<'_>, value: StoredValue);
    /// Deletes the value named by `key`; deleting nothing is fine.
    fn delete(&mut self, key: &StateKey<'_>);
    /// A hint that `function`'s instance `id` is about to be invoked: a
    /// backend may start loading its values so the invocation finds them in
    /// cache. The function operator calls it a few messages ahead.
    fn prefetch(&self, _function: &TypeName, _id: &str) {}
    /// Whether [`StateBackend::prefetch`] would do anything now: the function operator
    /// asks once per batch of messages and calls `prefetch` for each only if so (it costs
    /// a hash and a search per message, wasted while the state stays in the caches).
    fn prefetches(&self) -> bool {
        false
    }
    /// Whether [`StateBackend::fetch`] does anything: the function operator builds the
    /// keys only for backends that read them.
    fn fetches(&self) -> bool {
        false
    }
    /// A hint that the values named by `keys` are about to be read (the state of the
    /// next messages of a batch): a durable backend reads those it does not hold in one
    /// batched read, instead of one read per invocation. Given in the order the reads will
    /// come, the keys also spare those reads their lookups (see `DurableBackend`).
    fn fetch(&mut self, _keys: &[StateKey<'_>]) {}
    /// The number of stored values (for metrics and tests).
    fn len(&self) -> usize;
    /// The stored values and their bytes per function type, as far as the backend knows
    /// them at `now_ms` (for metrics, asked about once a second while `/metrics` is
    /// served): exact and current for in-memory state; a durable backend may count in the
    /// background and answer with its last count, or `None` before the first.
    fn census(&mut self, _now_ms: u64) -> Option<StateCensus> {
        None
    }
    /// Whether nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A storage failure met since the last call (reads of a durable
    /// backend can fail; the function operator fails the job with it).
    fn take_error(&mut self) -> Option<String> {
        None
    }
}

/// An in-memory [`StateBackend`]: per function type, a [`table`] of values
/// keyed by `(id, slot)`.
///
/// Laid out for cache behaviour, since state access dominates the cost of a
/// keyed function: an entry is half a 64-byte line holding the hash, the slot,
/// and the id and value (inline when together they fit in 23 bytes), and
/// [`StateBackend::prefetch`] starts loading it records ahead. The outer list
/// has one entry per function type, found by the interned name's pointer.
///
/// ```
/// use statefun_engine::state::{MemoryBackend, StateBackend, StateKey, StoredValue};
/// use statefun_sdk::TypeName;
/// let f = TypeName::parse("ex/counter").unwrap();
/// let key = StateKey { function: &f, id: "alice", spec: "count", slot: 0 };
/// let mut b = MemoryBackend::default();
/// b.put(&key, StoredValue::new(&[1]));
/// assert_eq!(b.get(&key).unwrap().bytes, &[1]);
/// b.delete(&key);
/// assert!(b.get(&key).is_none());
/// ```
#[derive(Default)]
pub struct MemoryBackend {
    by_function: Vec<(TypeName, Table)>,
    len: usize,
    /// Where the last read found its value: the function type's index and the entry's.
    /// The usual write follows a read of the same value and is checked against it first.
    last_read: (usize, usize),
}

impl MemoryBackend {
    /// Where `function`'s table is in `by_function`.
    #[inline]
    fn position(&self, function: &TypeName) -> Option<usize> {
        self.by_function.iter().position(|(f, _)| f == function)
    }

    #[inline]
    fn table(&self, function: &TypeName) -> Option<&Table> {
        self.position(function).map(|at| &self.by_function[at].1)
    }
}

impl StateBackend for MemoryBackend {
    #[inline]
    fn get(&mut self, key: &StateKey<'_>) -> Option<ValueRef<'_>> {
        let at = self.position(key.function)?;
        let (i, value) = self.by_function[at]
            .1
            .get(hash_id(key.id), key.id, key.slot)?;
        self.last_read = (at, i);
        Some(value)
    }

    #[inline]
    fn put(&mut self, key: &StateKey<'_>, value: StoredValue) {
        let (last_function, last_entry) = self.last_read;
        let value = match self.by_function.get_mut(last_function) {
            Some((f, table)) if f == key.function => {
                match table.replace_at(last_entry, key.id, key.slot, value) {
                    None => return,
                    Some(value) => value,
                }
            }
            _ => value,
        };
        let at = match self.position(key.function) {
            Some(at) => at,
            None => {
                self.by_function
                    .push((key.function.clone(), Table::default()));
                self.by_function.len() - 1
            }
        };
        if self.by_function[at]
            .1
            .put(hash_id(key.id), key.id, key.slot, value)
        {
            self.len += 1;
        }
    }

    fn delete(&mut self, key: &StateKey<'_>) {
        let Some((_, table)) = self.by_function.iter_mut().find(|(f, _)| f == key.function) else {
            return;
        };
        if table.remove(hash_id(key.id), key.id, key.slot) {
            self.len -= 1;
        }
    }

    fn prefetches(&self) -> bool {
        self.by_function.iter().any(|(_, t)| !t.stays_in_cache())
    }

    #[inline]
    fn prefetch(&self, function: &TypeName, id: &str) {
        match self.table(function) {
            Some(table) if !table.stays_in_cache() => table.prefetch(hash_id(id)),
            _ => {}
        }
    }

    fn len(&self) -> usize {
        debug_assert_eq!(
            self.len,
            self.by_function.iter().map(|(_, t)| t.len()).sum::<usize>()
        );
        self.len
    }

    fn census(&mut self, now_ms: u64) -> Option<StateCensus> {
        let mut by_function: Vec<FunctionState> = self
            .by_function
            .iter()
            .filter(|(_, t)| t.len() > 0)
            .map(|(f, t)| FunctionState {
                function: f.to_string(),
                values: t.len() as u64,
                bytes: t.bytes() as u64,
            })
            .collect();
        by_function.sort_by(|a, b| a.function.cmp(&b.function));
        Some(StateCensus {
            by_function,
            counted_at_ms: now_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator is told to prefetch once some function type's table outgrows the
    /// caches, whatever other (small) types there are.
    #[test]
    fn prefetches_once_a_table_outgrows_the_caches() {
        let small = TypeName::parse("ns/small").unwrap();
        let large = TypeName::parse("ns/large").unwrap();
        fn key<'a>(function: &'a TypeName, id: &'a str) -> StateKey<'a> {
            StateKey {
                function,
                id,
                spec: "n",
                slot: 0,
            }
        }
        let mut s = MemoryBackend::default();
        assert!(!s.prefetches(), "no state");
        for n in 0..1_000 {
            let id = n.to_string();
            s.put(&key(&small, &id), StoredValue::new(&[1]));
            s.put(&key(&large, &id), StoredValue::new(&[1]));
        }
        assert!(!s.prefetches(), "1 000 values per type stay in the caches");
        for n in 1_000..100_000 {
            let id = n.to_string();
            s.put(&key(&large, &id), StoredValue::new(&[1]));
        }
        assert!(s.prefetches(), "100 000 values of one type do not");
    }

    #[test]
    fn values_are_separate_per_function_id_and_spec() {
        let a = TypeName::parse("ns/a").unwrap();
        let b = TypeName::parse("ns/b").unwrap();
        let k = |function, id, slot| StateKey {
            function,
            id,
            spec: if slot == 0 { "n" } else { "m" },
            slot,
        };
        let v = |b: u8| StoredValue::new(&[b]);
        let mut s = MemoryBackend::default();
        s.put(&k(&a, "x", 0), v(1));
        s.put(&k(&b, "x", 0), v(2));
        s.put(&k(&a, "x", 1), v(3));
        s.put(&k(&a, "y", 0), v(4));
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(&k(&a, "x", 0)).map(|r| r.to_stored()), Some(v(1)));
        assert_eq!(s.get(&k(&b, "x", 0)).map(|r| r.to_stored()), Some(v(2)));
        assert_eq!(s.get(&k(&a, "x", 1)).map(|r| r.to_stored()), Some(v(3)));
        assert_eq!(s.get(&k(&a, "y", 0)).map(|r| r.to_stored()), Some(v(4)));
        s.put(&k(&a, "x", 0), v(9));
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(&k(&a, "x", 0)).map(|r| r.to_stored()), Some(v(9)));
        s.delete(&k(&a, "x", 0));
        s.delete(&k(&a, "x", 0));
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(&k(&a, "x", 0)), None);
        assert_eq!(s.get(&k(&b, "x", 0)).map(|r| r.to_stored()), Some(v(2)));
        // Long ids (not inline) work the same.
        let long = "an-id-that-is-longer-than-twenty-four-bytes";
        s.put(&k(&a, long, 0), v(5));
        assert_eq!(s.get(&k(&a, long, 0)).map(|r| r.to_stored()), Some(v(5)));
        s.put(&k(&b, "z", 0), StoredValue::new(b"twenty bytes, spilt."));
        let census = s.census(7).unwrap();
        let row = |function: &str, values, bytes| FunctionState {
            function: function.into(),
            values,
            bytes,
        };
        assert_eq!(
            census,
            StateCensus {
                by_function: vec![row("ns/a", 3, 3), row("ns/b", 2, 21)],
                counted_at_ms: 7,
            }
        );
    }

    #[test]
    fn equal_type_names_from_different_allocations_match() {
        let a1 = TypeName::parse("ns/a").unwrap();
        let a2 = TypeName::parse("ns/a").unwrap();
        let mut s = MemoryBackend::default();
        let key = |f| StateKey {
            function: f,
            id: "x",
            spec: "n",
            slot: 0,
        };
        s.put(&key(&a1), StoredValue::new(&[7]));
        assert_eq!(
            s.get(&key(&a2)),
            Some(StoredValue::new(&[7]).as_value_ref())
        );
    }
}
