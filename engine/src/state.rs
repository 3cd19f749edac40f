//! State backends: where the persisted values of function instances live.
//!
//! A backend stores one value per (function type, id, value spec name). The
//! function operator reads and writes through it during invocations; the
//! expiry of a value is kept beside it so every backend applies TTL the same
//! way (see [`StoredValue::is_live`]). The in-memory backend serves tests and
//! benchmarks; a RocksDB backend implements the same trait for durable state.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use statefun_sdk::TypeName;

/// A persisted value and the time (ms since the Unix epoch) it expires, if it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    /// The value's wire bytes, as written by the SDK codec.
    pub bytes: Vec<u8>,
    /// Expiry time in ms since the Unix epoch; `None` never expires.
    pub expires_at_ms: Option<u64>,
}

impl StoredValue {
    /// Whether the value is still readable at `now_ms`.
    ///
    /// ```
    /// use statefun_engine::state::StoredValue;
    /// let v = StoredValue { bytes: vec![1], expires_at_ms: Some(100) };
    /// assert!(v.is_live(99));
    /// assert!(!v.is_live(100));
    /// ```
    #[inline]
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }
}

/// Storage for function state, one instance per worker.
///
/// Backends need not apply TTL on reads; the function operator checks
/// [`StoredValue::is_live`] and deletes expired values it meets.
pub trait StateBackend: 'static {
    /// The value of `spec` for the instance `(function, id)`, if stored.
    fn get(&mut self, function: &TypeName, id: &str, spec: &str) -> Option<&StoredValue>;
    /// Stores (replaces) the value of `spec` for `(function, id)`.
    fn put(&mut self, function: &TypeName, id: &str, spec: &str, value: StoredValue);
    /// Deletes the value of `spec` for `(function, id)`; deleting nothing is fine.
    fn delete(&mut self, function: &TypeName, id: &str, spec: &str);
    /// The number of stored values (for metrics and tests).
    fn len(&self) -> usize;
    /// Whether nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Entry {
    function: TypeName,
    spec: Box<str>,
    value: StoredValue,
}

/// An in-memory [`StateBackend`]: a hash map from id to the few values stored under it.
///
/// Ids are the outer key because ingress records and messages are routed by
/// id; the handful of (function type, spec) values under one id are scanned
/// linearly, which beats hashing three strings per access.
///
/// ```
/// use statefun_engine::state::{MemoryBackend, StateBackend, StoredValue};
/// use statefun_sdk::TypeName;
/// let f = TypeName::parse("ex/counter").unwrap();
/// let mut b = MemoryBackend::default();
/// b.put(&f, "alice", "count", StoredValue { bytes: vec![1], expires_at_ms: None });
/// assert_eq!(b.get(&f, "alice", "count").unwrap().bytes, vec![1]);
/// b.delete(&f, "alice", "count");
/// assert!(b.get(&f, "alice", "count").is_none());
/// ```
#[derive(Default)]
pub struct MemoryBackend {
    by_id: FxHashMap<String, Vec<Entry>>,
    len: usize,
}

impl StateBackend for MemoryBackend {
    #[inline]
    fn get(&mut self, function: &TypeName, id: &str, spec: &str) -> Option<&StoredValue> {
        self.by_id
            .get(id)?
            .iter()
            .find(|e| e.function == *function && &*e.spec == spec)
            .map(|e| &e.value)
    }

    #[inline]
    fn put(&mut self, function: &TypeName, id: &str, spec: &str, value: StoredValue) {
        let entries = match self.by_id.get_mut(id) {
            Some(entries) => entries,
            None => self.by_id.entry(id.to_owned()).or_default(),
        };
        match entries
            .iter_mut()
            .find(|e| e.function == *function && &*e.spec == spec)
        {
            Some(e) => e.value = value,
            None => {
                entries.push(Entry {
                    function: function.clone(),
                    spec: spec.into(),
                    value,
                });
                self.len += 1;
            }
        }
    }

    fn delete(&mut self, function: &TypeName, id: &str, spec: &str) {
        if let Some(entries) = self.by_id.get_mut(id) {
            let before = entries.len();
            entries.retain(|e| !(e.function == *function && &*e.spec == spec));
            self.len -= before - entries.len();
            if entries.is_empty() {
                self.by_id.remove(id);
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

    fn v(b: u8) -> StoredValue {
        StoredValue {
            bytes: vec![b],
            expires_at_ms: None,
        }
    }

    #[test]
    fn values_are_separate_per_function_id_and_spec() {
        let a = TypeName::parse("ns/a").unwrap();
        let b = TypeName::parse("ns/b").unwrap();
        let mut s = MemoryBackend::default();
        s.put(&a, "x", "n", v(1));
        s.put(&b, "x", "n", v(2));
        s.put(&a, "x", "m", v(3));
        s.put(&a, "y", "n", v(4));
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(&a, "x", "n"), Some(&v(1)));
        assert_eq!(s.get(&b, "x", "n"), Some(&v(2)));
        assert_eq!(s.get(&a, "x", "m"), Some(&v(3)));
        assert_eq!(s.get(&a, "y", "n"), Some(&v(4)));
        s.put(&a, "x", "n", v(9));
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(&a, "x", "n"), Some(&v(9)));
        s.delete(&a, "x", "n");
        s.delete(&a, "x", "n");
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(&a, "x", "n"), None);
        assert_eq!(s.get(&b, "x", "n"), Some(&v(2)));
    }
}
