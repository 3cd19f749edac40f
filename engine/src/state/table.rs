//! The in-memory state table: one open-addressed array of cache-line entries.
//!
//! A keyed function's cost is dominated by finding its instance's value in a
//! table of millions of keys: the access misses every cache, and with a
//! general-purpose hash map it is two dependent misses (control bytes, then the
//! bucket) that the processor cannot overlap with the next record's, because a
//! whole invocation runs in between. This table is laid out so that one
//! 64-byte line holds everything a lookup reads (the hash, the value slot, an
//! inline id and an inline value), and so that the line of a key can be
//! computed from the key alone, before the lookup: [`Table::prefetch`] lets
//! the function operator start the miss of a record several records ahead.
//!
//! Linear probing with the hash stored in the entry; removal shifts the
//! following entries back (no tombstones), so probes stay short however many
//! values are deleted. The load stays at or below 4/5.

use compact_str::CompactString;

use super::StoredValue;

/// One value of one instance: the instance id, which of its function's value
/// specs (`slot`), and the value. Exactly one cache line.
#[repr(C, align(64))]
struct Entry {
    /// The key's hash; meaningful only when `slot != EMPTY`.
    hash: u32,
    /// The value spec's index, or [`EMPTY`].
    slot: u16,
    id: CompactString,
    value: StoredValue,
}

const EMPTY: u16 = u16::MAX;

impl Entry {
    fn vacant() -> Self {
        Entry {
            hash: 0,
            slot: EMPTY,
            id: CompactString::const_new(""),
            value: StoredValue::new(&[]),
        }
    }
}

/// The values of one function type, keyed by `(id, slot)`.
#[derive(Default)]
pub(super) struct Table {
    entries: Vec<Entry>,
    /// `entries.len() - 1`; `entries.len()` is a power of two (or zero).
    mask: usize,
    len: usize,
    /// Bytes of the stored values (for metrics: kept as values change, never counted).
    bytes: usize,
}

/// The hash of an id: every value of an instance hashes alike, so they sit
/// together and one prefetch serves the usual single-value instance.
#[inline]
pub(super) fn hash_id(id: &str) -> u32 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(id.as_bytes());
    let h = h.finish();
    (h >> 32) as u32 ^ h as u32
}

impl Table {
    /// The number of stored values.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the stored values.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Asks the processor to start loading the line where `(id, slot 0)`
    /// would be, so that a lookup a few records later finds it in cache.
    #[inline]
    pub(super) fn prefetch(&self, hash: u32) {
        if let Some(entry) = self.entries.get(hash as usize & self.mask) {
            prefetch_line(entry as *const Entry as *const u8);
        }
    }

    #[inline]
    fn find(&self, hash: u32, id: &str, slot: u16) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let mut i = hash as usize & self.mask;
        loop {
            let e = &self.entries[i];
            if e.slot == EMPTY {
                return None;
            }
            if e.hash == hash && e.slot == slot && e.id == id {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value of `(id, slot)`.
    #[inline]
    pub(super) fn get(&self, hash: u32, id: &str, slot: u16) -> Option<&StoredValue> {
        self.find(hash, id, slot).map(|i| &self.entries[i].value)
    }

    /// Stores the value of `(id, slot)`; returns whether it is new.
    #[inline]
    pub(super) fn put(&mut self, hash: u32, id: &str, slot: u16, value: StoredValue) -> bool {
        if let Some(i) = self.find(hash, id, slot) {
            self.bytes = self.bytes + value.bytes.len() - self.entries[i].value.bytes.len();
            self.entries[i].value = value;
            return false;
        }
        // Grow at a load of 4/5: linear probing stays short below that.
        if (self.len + 1) * 5 > self.entries.len() * 4 {
            self.grow();
        }
        let i = self.vacancy(hash);
        self.bytes += value.bytes.len();
        self.entries[i] = Entry {
            hash,
            slot,
            id: CompactString::from(id),
            value,
        };
        self.len += 1;
        true
    }

    /// Removes the value of `(id, slot)`; returns whether there was one.
    pub(super) fn remove(&mut self, hash: u32, id: &str, slot: u16) -> bool {
        let Some(mut hole) = self.find(hash, id, slot) else {
            return false;
        };
        self.bytes -= self.entries[hole].value.bytes.len();
        self.entries[hole] = Entry::vacant();
        self.len -= 1;
        // Backward shift: move each following entry of the run into the hole
        // unless its home lies (cyclically) after the hole, so every entry
        // stays reachable from its home without tombstones.
        let mut i = (hole + 1) & self.mask;
        while self.entries[i].slot != EMPTY {
            let home = self.entries[i].hash as usize & self.mask;
            let distance_now = i.wrapping_sub(home) & self.mask;
            let distance_hole = i.wrapping_sub(hole) & self.mask;
            if distance_hole <= distance_now {
                self.entries.swap(hole, i);
                hole = i;
            }
            i = (i + 1) & self.mask;
        }
        true
    }

    /// The first empty entry in `hash`'s probe sequence.
    fn vacancy(&self, hash: u32) -> usize {
        let mut i = hash as usize & self.mask;
        while self.entries[i].slot != EMPTY {
            i = (i + 1) & self.mask;
        }
        i
    }

    fn grow(&mut self) {
        let capacity = (self.entries.len() * 2).max(16);
        let old = std::mem::replace(&mut self.entries, Vec::with_capacity(capacity));
        self.entries.resize_with(capacity, Entry::vacant);
        self.mask = capacity - 1;
        for entry in old {
            if entry.slot != EMPTY {
                let i = self.vacancy(entry.hash);
                self.entries[i] = entry;
            }
        }
    }
}

/// Starts loading the cache line at `p` (a hint: it never faults).
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; it reads nothing, never
    // faults, and `p` points into a live allocation anyway. SSE is part of
    // the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn an_entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
        assert_eq!(std::mem::align_of::<Entry>(), 64);
    }

    /// Random puts and removes against a `HashMap`, with few distinct ids so
    /// that runs collide, wrap around the end and are shifted by removals.
    #[test]
    fn behaves_like_a_map_under_random_puts_and_removes() {
        let mut table = Table::default();
        let mut model: HashMap<(String, u16), Vec<u8>> = HashMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x % 300;
            let id = format!("id-{n}");
            let slot = ((x >> 20) % 3) as u16;
            let hash = test_hash(n, &id);
            match (x >> 40) % 3 {
                0 => {
                    let removed = table.remove(hash, &id, slot);
                    assert_eq!(
                        removed,
                        model.remove(&(id.clone(), slot)).is_some(),
                        "step {step}"
                    );
                }
                _ => {
                    // Values of 0 to 39 bytes: inline and spilled, growing and shrinking.
                    let v = vec![(step % 251) as u8; (step % 40) as usize];
                    let new = table.put(hash, &id, slot, StoredValue::new(&v));
                    assert_eq!(
                        new,
                        model.insert((id.clone(), slot), v).is_none(),
                        "step {step}"
                    );
                }
            }
            assert_eq!(table.len(), model.len());
            assert_eq!(table.bytes(), model.values().map(Vec::len).sum::<usize>());
        }
        for ((id, slot), v) in &model {
            let n: u64 = id[3..].parse().unwrap();
            let found = table.get(test_hash(n, id), id, *slot);
            assert_eq!(found.map(|s| s.bytes.as_slice()), Some(&v[..]));
        }
    }

    /// A quarter of the ids hash to the last three entries of any table, so
    /// their runs wrap around the end; the rest hash normally.
    fn test_hash(n: u64, id: &str) -> u32 {
        if n.is_multiple_of(4) {
            u32::MAX - (n % 3) as u32
        } else {
            hash_id(id)
        }
    }
}
