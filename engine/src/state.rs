//! State backends: where the persisted values of function instances live.
//!
//! A backend stores one value per (function type, id, value spec). The
//! function operator reads and writes through it during invocations; the
//! expiry of a value is kept beside it so every backend applies TTL the same
//! way (see [`StoredValue::is_live`]). The in-memory backend serves tests and
//! benchmarks; a RocksDB backend implements the same trait for durable state.

use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use statefun_sdk::TypeName;

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
        now_ms < self.expires_at_ms
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

/// Storage for function state, one instance per worker.
///
/// Backends need not apply TTL on reads; the function operator checks
/// [`StoredValue::is_live`] and deletes expired values it meets.
pub trait StateBackend: 'static {
    /// The value named by `key`, if stored.
    fn get(&mut self, key: &StateKey<'_>) -> Option<&StoredValue>;
    /// Stores (replaces) the value named by `key`.
    fn put(&mut self, key: &StateKey<'_>, value: StoredValue);
    /// Deletes the value named by `key`; deleting nothing is fine.
    fn delete(&mut self, key: &StateKey<'_>);
    /// The number of stored values (for metrics and tests).
    fn len(&self) -> usize;
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

/// The values of one instance: (slot, value) pairs, the usual single one inline.
type Instance = SmallVec<[(u16, StoredValue); 1]>;

/// An in-memory [`StateBackend`]: per function type, a hash map from id to
/// the values of that instance.
///
/// Laid out for cache behaviour, since state access dominates the cost of a
/// keyed function: ids up to 24 bytes are stored inline in the key, an
/// instance's usual single value is stored inline in the entry, and small
/// values are stored inline in the slot — so an access touches one bucket of
/// a table whose entries are 72 bytes, instead of chasing four pointers. The
/// outer map has one entry per function type and stays in cache.
///
/// ```
/// use statefun_engine::state::{MemoryBackend, StateBackend, StateKey, StoredValue};
/// use statefun_sdk::TypeName;
/// let f = TypeName::parse("ex/counter").unwrap();
/// let key = StateKey { function: &f, id: "alice", spec: "count", slot: 0 };
/// let mut b = MemoryBackend::default();
/// b.put(&key, StoredValue::new(&[1]));
/// assert_eq!(b.get(&key).unwrap().bytes.as_slice(), &[1]);
/// b.delete(&key);
/// assert!(b.get(&key).is_none());
/// ```
#[derive(Default)]
pub struct MemoryBackend {
    by_function: FxHashMap<TypeName, FxHashMap<CompactString, Instance>>,
    len: usize,
}

impl StateBackend for MemoryBackend {
    #[inline]
    fn get(&mut self, key: &StateKey<'_>) -> Option<&StoredValue> {
        self.by_function
            .get(key.function)?
            .get(key.id)?
            .iter()
            .find(|(slot, _)| *slot == key.slot)
            .map(|(_, v)| v)
    }

    #[inline]
    fn put(&mut self, key: &StateKey<'_>, value: StoredValue) {
        let instances = match self.by_function.get_mut(key.function) {
            Some(instances) => instances,
            None => self.by_function.entry(key.function.clone()).or_default(),
        };
        let slots = match instances.get_mut(key.id) {
            Some(slots) => slots,
            None => instances.entry(CompactString::from(key.id)).or_default(),
        };
        match slots.iter_mut().find(|(slot, _)| *slot == key.slot) {
            Some((_, v)) => *v = value,
            None => {
                slots.push((key.slot, value));
                self.len += 1;
            }
        }
    }

    fn delete(&mut self, key: &StateKey<'_>) {
        let Some(instances) = self.by_function.get_mut(key.function) else {
            return;
        };
        if let Some(slots) = instances.get_mut(key.id) {
            let before = slots.len();
            slots.retain(|(slot, _)| *slot != key.slot);
            self.len -= before - slots.len();
            if slots.is_empty() {
                instances.remove(key.id);
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.get(&k(&a, "x", 0)), Some(&v(1)));
        assert_eq!(s.get(&k(&b, "x", 0)), Some(&v(2)));
        assert_eq!(s.get(&k(&a, "x", 1)), Some(&v(3)));
        assert_eq!(s.get(&k(&a, "y", 0)), Some(&v(4)));
        s.put(&k(&a, "x", 0), v(9));
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(&k(&a, "x", 0)), Some(&v(9)));
        s.delete(&k(&a, "x", 0));
        s.delete(&k(&a, "x", 0));
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(&k(&a, "x", 0)), None);
        assert_eq!(s.get(&k(&b, "x", 0)), Some(&v(2)));
        // Long ids (not inline) work the same.
        let long = "an-id-that-is-longer-than-twenty-four-bytes";
        s.put(&k(&a, long, 0), v(5));
        assert_eq!(s.get(&k(&a, long, 0)), Some(&v(5)));
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
        assert_eq!(s.get(&key(&a2)), Some(&StoredValue::new(&[7])));
    }
}
