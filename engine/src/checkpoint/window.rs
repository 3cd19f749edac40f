//! The durable backend's windows: state values read or written since a checkpoint, by
//! state key.
//!
//! A window is built for millions of small keys turned over every checkpoint interval
//! (at 1 M keys and a checkpoint a second, nearly every key enters the next window again):
//!
//! * **Keys live in one arena** per window, not one heap object each: entering a key is a
//!   copy into the arena, and a window is freed (or emptied) in two deallocations instead
//!   of a million.
//! * **The caller hashes a key once per access** ([`hash_key`]) and uses the hash in every
//!   window a read falls through (the current one, then the frozen ones, newest first). An
//!   entry does not keep the hash (8 bytes on each of millions of entries): the table's own
//!   7-bit tags filter probes, and a rehash (rare: windows start at the size the last one
//!   reached) hashes the key again from the arena.
//!
//! (Reusing emptied windows instead of freeing them, to keep their pages faulted in, was
//! measured and dropped: no gain in records per CPU-second, and the retained capacity held
//! memory.)

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::state::StoredValue;

/// A value of a window, and whether the window changed it.
pub(crate) struct Slot {
    /// The value (`None`: deleted, or absent below the window).
    pub(crate) value: Option<StoredValue>,
    /// Whether it was written in this window (its checkpoint's change).
    pub(crate) dirty: bool,
}

struct Entry {
    /// The key's bytes: `keys[at..at + len]`.
    at: u64,
    len: u32,
    slot: Slot,
}

impl Entry {
    #[inline]
    fn key<'k>(&self, keys: &'k [u8]) -> &'k [u8] {
        &keys[self.at as usize..self.at as usize + self.len as usize]
    }
}

/// The hash of a state key, for every [`Window`] lookup of it.
#[inline]
pub(crate) fn hash_key(key: &[u8]) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(key)
}

/// Values by state key (see the module docs).
#[derive(Default)]
pub(crate) struct Window {
    keys: Vec<u8>,
    table: HashTable<Entry>,
}

impl Window {
    /// A window for about `entries` keys of `key_bytes` bytes in all.
    pub(crate) fn with_capacity(entries: usize, key_bytes: usize) -> Self {
        Window {
            keys: Vec::with_capacity(key_bytes),
            table: HashTable::with_capacity(entries),
        }
    }

    /// How many keys it holds.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Bytes of keys it holds (to size the next window).
    pub(crate) fn key_bytes(&self) -> usize {
        self.keys.len()
    }

    /// The memory it holds: its table's entries and control bytes, and its key arena.
    pub(crate) fn bytes(&self) -> usize {
        let buckets = (self.table.capacity() * 8 / 7).next_power_of_two();
        buckets * (std::mem::size_of::<Entry>() + 1) + self.keys.capacity()
    }

    /// The slot of `key`, whose [`hash_key`] is `hash`.
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        let keys = &self.keys;
        self.table
            .find(hash, |e| e.key(keys) == key)
            .map(|e| &e.slot)
    }

    /// The slot of `key`, mutable.
    #[inline]
    pub(crate) fn get_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut Slot> {
        let keys = &self.keys;
        self.table
            .find_mut(hash, |e| e.key(keys) == key)
            .map(|e| &mut e.slot)
    }

    /// Enters `key`, which the window does not hold, with `slot`. State keys are short (a
    /// function type, an id, a spec name: their lengths are encoded as `u32`s already).
    pub(crate) fn insert(&mut self, hash: u64, key: &[u8], slot: Slot) -> &mut Slot {
        let entry = Entry {
            at: self.keys.len() as u64,
            len: u32::try_from(key.len()).unwrap_or(u32::MAX),
            slot,
        };
        self.keys.extend_from_slice(key);
        let keys = &self.keys;
        &mut self
            .table
            .insert_unique(hash, entry, |e| hash_key(e.key(keys)))
            .into_mut()
            .slot
    }

    /// Every key and its slot, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &Slot)> {
        self.table.iter().map(|e| (e.key(&self.keys), &e.slot))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn value(n: u8) -> Option<StoredValue> {
        Some(StoredValue::new(&[n]))
    }

    #[test]
    fn behaves_like_a_map_from_keys_to_slots_even_when_hashes_collide() {
        // Sized so that it never rehashes: a rehash would place the colliding keys by their
        // real hashes, which the forced one below is not.
        let mut w = Window::with_capacity(2000, 20_000);
        let mut model: HashMap<Vec<u8>, u8> = HashMap::new();
        for i in 0..5000u32 {
            let k = i % 1234;
            let key = format!("key-{k}").into_bytes();
            // Every fourth key gets the same hash: probes must compare bytes.
            let hash = if k % 4 == 0 { 7 } else { hash_key(&key) };
            let n = (i % 251) as u8;
            match w.get_mut(hash, &key) {
                Some(slot) => {
                    slot.value = value(n);
                    slot.dirty = true;
                }
                None => {
                    w.insert(
                        hash,
                        &key,
                        Slot {
                            value: value(n),
                            dirty: true,
                        },
                    );
                }
            }
            model.insert(key, n);
        }
        // A key entered under the shared hash is found under it, not under its own.
        assert!(w.get(7, b"key-0").is_some());
        assert_eq!(w.len(), model.len());
        let mut seen: Vec<(Vec<u8>, u8)> = w
            .iter()
            .map(|(k, s)| (k.to_vec(), s.value.as_ref().unwrap().bytes[0]))
            .collect();
        seen.sort();
        let mut expected: Vec<(Vec<u8>, u8)> = model.into_iter().collect();
        expected.sort();
        assert_eq!(seen, expected);
        assert!(w.get(hash_key(b"absent"), b"absent").is_none());
    }

    #[test]
    fn keys_stay_findable_across_rehashes() {
        // Starts empty, so it grows (and rehashes from the arena) many times.
        let mut w = Window::default();
        for i in 0..100_000u32 {
            let key = format!("s-{i}-spec").into_bytes();
            w.insert(
                hash_key(&key),
                &key,
                Slot {
                    value: value((i % 200) as u8),
                    dirty: i % 2 == 0,
                },
            );
        }
        assert_eq!(w.len(), 100_000);
        for i in (0..100_000u32).step_by(7) {
            let key = format!("s-{i}-spec").into_bytes();
            let slot = w.get(hash_key(&key), &key).expect("entered");
            assert_eq!(slot.value.as_ref().unwrap().bytes[0], (i % 200) as u8);
            assert_eq!(slot.dirty, i % 2 == 0);
        }
    }
}
