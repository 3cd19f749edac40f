//! The durable backend's windows: state values read or written since a checkpoint, by
//! state key.
//!
//! A window is built for millions of small keys turned over every checkpoint interval
//! (at 1 M keys and a checkpoint a second, nearly every key enters the next window again):
//!
//! * **Keys live in one arena** per window, not one heap object each: entering a key is a
//!   copy into the arena, and a window is freed (or emptied) in two deallocations instead
//!   of a million.
//! * **An entry keeps its key's full hash**, so a probe compares key bytes only when the
//!   hashes match, and the caller computes the hash **once per access** ([`hash_key`]) and
//!   uses it in every window a read falls through (the current one, then the frozen ones,
//!   newest first).
//! * **Emptied windows are reused** ([`Window::clear`] keeps both allocations): a new
//!   interval writes into memory already faulted in, instead of the kernel zeroing fresh
//!   pages for it.

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
    hash: u64,
    /// The key's bytes: `keys[at..at + len]`.
    at: usize,
    len: usize,
    slot: Slot,
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

    /// The slot of `key`, whose [`hash_key`] is `hash`.
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        let keys = &self.keys;
        self.table
            .find(hash, |e| e.hash == hash && &keys[e.at..e.at + e.len] == key)
            .map(|e| &e.slot)
    }

    /// The slot of `key`, mutable.
    #[inline]
    pub(crate) fn get_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut Slot> {
        let keys = &self.keys;
        self.table
            .find_mut(hash, |e| e.hash == hash && &keys[e.at..e.at + e.len] == key)
            .map(|e| &mut e.slot)
    }

    /// Enters `key`, which the window does not hold, with `slot`.
    pub(crate) fn insert(&mut self, hash: u64, key: &[u8], slot: Slot) -> &mut Slot {
        let at = self.keys.len();
        self.keys.extend_from_slice(key);
        let entry = Entry {
            hash,
            at,
            len: key.len(),
            slot,
        };
        &mut self
            .table
            .insert_unique(hash, entry, |e| e.hash)
            .into_mut()
            .slot
    }

    /// Every key and its slot, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &Slot)> {
        self.table
            .iter()
            .map(|e| (&self.keys[e.at..e.at + e.len], &e.slot))
    }

    /// Empties it, keeping its memory for the next interval.
    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.keys.clear();
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
        let mut w = Window::default();
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
    fn a_cleared_window_is_empty_and_keeps_its_memory() {
        let mut w = Window::with_capacity(100, 1000);
        for i in 0..100u32 {
            let key = i.to_be_bytes();
            w.insert(
                hash_key(&key),
                &key,
                Slot {
                    value: value(1),
                    dirty: false,
                },
            );
        }
        let (keys, slots) = (w.keys.capacity(), w.table.capacity());
        w.clear();
        assert_eq!(w.len(), 0);
        assert_eq!(w.iter().count(), 0);
        assert!(w
            .get(hash_key(&3u32.to_be_bytes()), &3u32.to_be_bytes())
            .is_none());
        assert_eq!((w.keys.capacity(), w.table.capacity()), (keys, slots));
    }
}
