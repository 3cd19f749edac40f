//! The in-memory state table: one open-addressed array of half-line entries.
//!
//! A keyed function's cost is dominated by finding its instance's value in a
//! table of millions of keys: the access misses every cache, and with a
//! general-purpose hash map it is two dependent misses (control bytes, then the
//! bucket) that the processor cannot overlap with the next record's, because a
//! whole invocation runs in between. This table is laid out so that one
//! 32-byte entry — half a cache line — holds everything a lookup reads (the
//! hash, the value slot, and the id and value inline when together they fit in
//! 23 bytes and the value never expires), and so that the line of a key can be
//! computed from the key alone, before the lookup: [`Table::prefetch`] lets
//! the function operator start the miss of a record several records ahead.
//!
//! Why 32 bytes and not a whole line: the table of a million keys is touched
//! once per page as it grows, and on a virtual machine a first touch costs far
//! more than the zeroing itself (it was a fifth of a one-worker run with
//! 64-byte entries); half the bytes is half of that and half the resident
//! memory, while a lookup still reads one line. Ids and values that do not fit
//! (or values with an expiry) move together to one heap object, read only
//! once the hash and slot have matched.
//!
//! Linear probing with the hash stored in the entry; removal shifts the
//! following entries back (no tombstones), so probes stay short however many
//! values are deleted. The load stays at or below 4/5.

use super::{StoredValue, ValueRef};

/// Bytes of an entry that hold the id and value when they are inline.
const INLINE: usize = 23;

/// One value of one instance: the instance id, which of its function's value
/// specs (`slot`), and the value. Exactly half a cache line.
#[repr(C, align(32))]
struct Entry {
    /// The key's hash; meaningful only when `slot != EMPTY`.
    hash: u32,
    /// The value spec's index, or [`EMPTY`].
    slot: u16,
    /// Inline id length (meaningful for [`Payload::Inline`]).
    id_len: u8,
    /// Inline value length (meaningful for [`Payload::Inline`]).
    value_len: u8,
    payload: Payload,
}

/// The id and value of an entry: side by side in the entry, or on the heap.
enum Payload {
    /// `id_len` bytes of id, then `value_len` bytes of a value that never expires.
    Inline([u8; INLINE]),
    Spilled(Box<Spilled>),
}

struct Spilled {
    id: Box<str>,
    value: StoredValue,
}

const EMPTY: u16 = u16::MAX;

impl Entry {
    fn vacant() -> Self {
        Entry {
            hash: 0,
            slot: EMPTY,
            id_len: 0,
            value_len: 0,
            payload: Payload::Inline([0; INLINE]),
        }
    }

    fn new(hash: u32, slot: u16, id: &str, value: StoredValue) -> Self {
        let (id_len, value_len) = (id.len(), value.bytes.len());
        if id_len + value_len <= INLINE && value.expires_at_ms == StoredValue::NEVER {
            let mut data = [0; INLINE];
            data[..id_len].copy_from_slice(id.as_bytes());
            data[id_len..id_len + value_len].copy_from_slice(&value.bytes);
            Entry {
                hash,
                slot,
                id_len: id_len as u8,
                value_len: value_len as u8,
                payload: Payload::Inline(data),
            }
        } else {
            Entry {
                hash,
                slot,
                id_len: 0,
                value_len: 0,
                payload: Payload::Spilled(Box::new(Spilled {
                    id: id.into(),
                    value,
                })),
            }
        }
    }

    /// Replaces an inline value in place (the usual update: no entry is
    /// rebuilt or dropped); false when either value is not inline.
    #[inline]
    fn replace_inline(&mut self, value: &StoredValue) -> bool {
        let Payload::Inline(data) = &mut self.payload else {
            return false;
        };
        let start = self.id_len as usize;
        let end = start + value.bytes.len();
        if end > INLINE || value.expires_at_ms != StoredValue::NEVER {
            return false;
        }
        data[start..end].copy_from_slice(&value.bytes);
        self.value_len = value.bytes.len() as u8;
        true
    }

    #[inline]
    fn id(&self) -> &[u8] {
        match &self.payload {
            Payload::Inline(data) => &data[..self.id_len as usize],
            Payload::Spilled(s) => s.id.as_bytes(),
        }
    }

    #[inline]
    fn value(&self) -> ValueRef<'_> {
        match &self.payload {
            Payload::Inline(data) => {
                let start = self.id_len as usize;
                ValueRef {
                    bytes: &data[start..start + self.value_len as usize],
                    expires_at_ms: StoredValue::NEVER,
                }
            }
            Payload::Spilled(s) => s.value.as_value_ref(),
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

    /// Whether the entries are few enough to stay in the processor's caches (a
    /// quarter of a 1 MiB L2: the messages and the values use it too), where a
    /// prefetch gains nothing and its hash is wasted work.
    #[inline]
    pub(super) fn stays_in_cache(&self) -> bool {
        self.entries.len() * std::mem::size_of::<Entry>() <= 256 * 1024
    }

    /// Asks the processor to start loading the line where `(id, slot 0)`
    /// would be, so that a lookup a few records later finds it in cache.
    #[inline]
    pub(super) fn prefetch(&self, hash: u32) {
        if let Some(entry) = self.entries.get(hash as usize & self.mask) {
            prefetch_line(entry as *const Entry as *const u8);
        }
    }

    #[inline(always)]
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
            if e.hash == hash && e.slot == slot && same_bytes(e.id(), id.as_bytes()) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value of `(id, slot)` and where it is (for [`Table::replace_at`]).
    #[inline]
    pub(super) fn get(&self, hash: u32, id: &str, slot: u16) -> Option<(usize, ValueRef<'_>)> {
        self.find(hash, id, slot)
            .map(|i| (i, self.entries[i].value()))
    }

    /// Replaces the value of `(id, slot)` if it is at `i` (where [`Table::get`] found it
    /// before; entries move when others are entered or removed, so it is checked) and
    /// returns `None`; else gives `value` back. An invocation's write after its read then
    /// needs no hash and no probe.
    #[inline]
    pub(super) fn replace_at(
        &mut self,
        i: usize,
        id: &str,
        slot: u16,
        value: StoredValue,
    ) -> Option<StoredValue> {
        match self.entries.get(i) {
            Some(e) if e.slot == slot && same_bytes(e.id(), id.as_bytes()) => {
                self.replace(i, id, slot, value);
                None
            }
            _ => Some(value),
        }
    }

    /// Replaces the value of the entry at `i`, which holds `(id, slot)`.
    #[inline]
    fn replace(&mut self, i: usize, id: &str, slot: u16, value: StoredValue) {
        let entry = &mut self.entries[i];
        self.bytes = self.bytes + value.bytes.len() - entry.value().bytes.len();
        if !entry.replace_inline(&value) {
            *entry = Entry::new(entry.hash, slot, id, value);
        }
    }

    /// Stores the value of `(id, slot)`; returns whether it is new.
    #[inline]
    pub(super) fn put(&mut self, hash: u32, id: &str, slot: u16, value: StoredValue) -> bool {
        if let Some(i) = self.find(hash, id, slot) {
            self.replace(i, id, slot, value);
            return false;
        }
        // Grow at a load of 4/5: linear probing stays short below that.
        if (self.len + 1) * 5 > self.entries.len() * 4 {
            self.grow();
        }
        let i = self.vacancy(hash);
        self.bytes += value.bytes.len();
        self.entries[i] = Entry::new(hash, slot, id, value);
        self.len += 1;
        true
    }

    /// Removes the value of `(id, slot)`; returns whether there was one.
    pub(super) fn remove(&mut self, hash: u32, id: &str, slot: u16) -> bool {
        let Some(hole) = self.find(hash, id, slot) else {
            return false;
        };
        self.bytes -= self.entries[hole].value().bytes.len();
        self.entries[hole] = Entry::vacant();
        self.len -= 1;
        close_hole(&mut self.entries, self.mask, hole, |e| {
            (e.slot != EMPTY).then_some(e.hash)
        });
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

/// Closes the hole left at `hole` in a linear-probing table of `mask + 1` entries
/// (`hash` gives an occupied entry's hash, `None` for an empty one): moves each
/// following entry of the run into the hole unless its home lies (cyclically)
/// after the hole, so every entry stays reachable from its home without
/// tombstones (a backward shift).
#[inline]
pub(crate) fn close_hole<T>(
    entries: &mut [T],
    mask: usize,
    mut hole: usize,
    hash: impl Fn(&T) -> Option<u32>,
) {
    let mut i = (hole + 1) & mask;
    while let Some(h) = hash(&entries[i]) {
        let home = h as usize & mask;
        let distance_now = i.wrapping_sub(home) & mask;
        let distance_hole = i.wrapping_sub(hole) & mask;
        if distance_hole <= distance_now {
            entries.swap(hole, i);
            hole = i;
        }
        i = (i + 1) & mask;
    }
}

/// Whether `a` and `b` hold the same bytes, for the short strings a lookup compares (ids,
/// value spec names, function types, encoded state keys): up to 32 bytes by two
/// overlapping loads per side instead of a call to `memcmp`, which for a few bytes costs
/// several times the comparison (four calls per invocation of a keyed counter were 3.6 %
/// of `statefun bench`'s instructions).
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        // Positions 0, n/2 and n-1 cover every byte of 1 to 3.
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => {
            a.first_chunk::<4>() == b.first_chunk::<4>()
                && a.last_chunk::<4>() == b.last_chunk::<4>()
        }
        8..=16 => {
            a.first_chunk::<8>() == b.first_chunk::<8>()
                && a.last_chunk::<8>() == b.last_chunk::<8>()
        }
        17..=32 => {
            a.first_chunk::<16>() == b.first_chunk::<16>()
                && a.last_chunk::<16>() == b.last_chunk::<16>()
        }
        _ => a == b,
    }
}

/// Appends `b` to `v`: up to 32 bytes by two overlapping stores instead of a call to
/// `memcpy` (an encoded state key is put together from a few such pieces per read).
#[inline(always)]
pub(crate) fn append_bytes(v: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n == 0 || n > 32 {
        v.extend_from_slice(b);
        return;
    }
    v.reserve(n);
    let at = v.len();
    let (from, to) = (b.as_ptr(), v.spare_capacity_mut().as_mut_ptr().cast::<u8>());
    // SAFETY: `reserve` made room for `n` bytes past `at`, and `b` holds `n`: every copy
    // below stays within the first `n` bytes of both (each width is at most `n`), and
    // together they write all `n` before the length covers them.
    unsafe {
        match n {
            // Positions 0, n/2 and n-1 cover every byte of 1 to 3.
            1..=3 => {
                to.write(b[0]);
                to.add(n / 2).write(b[n / 2]);
                to.add(n - 1).write(b[n - 1]);
            }
            4..=7 => head_and_tail::<4>(from, to, n),
            8..=16 => head_and_tail::<8>(from, to, n),
            _ => head_and_tail::<16>(from, to, n),
        }
        v.set_len(at + n);
    }
}

/// Copies `n` bytes (`W <= n <= 2 * W`) from `from` to `to` as two fixed-width copies,
/// the first `W` bytes and the last `W` (a fixed width compiles to plain loads and stores).
///
/// # Safety
/// `from` must be readable and `to` writable for `n` bytes, not overlapping.
#[inline(always)]
unsafe fn head_and_tail<const W: usize>(from: *const u8, to: *mut u8, n: usize) {
    std::ptr::copy_nonoverlapping(from, to, W);
    std::ptr::copy_nonoverlapping(from.add(n - W), to.add(n - W), W);
}

/// Starts loading the cache line at `p` (a hint: it never faults).
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
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
    fn an_entry_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        assert_eq!(std::mem::align_of::<Entry>(), 32);
    }

    #[test]
    fn only_a_table_larger_than_the_caches_asks_for_prefetches() {
        let mut table = Table::default();
        let value = || StoredValue::new(&[1]);
        for n in 0..1_000u32 {
            table.put(n.wrapping_mul(0x9e37_79b9), &n.to_string(), 0, value());
        }
        assert!(table.stays_in_cache(), "1 000 values: 64 KiB of entries");
        for n in 1_000..100_000u32 {
            table.put(n.wrapping_mul(0x9e37_79b9), &n.to_string(), 0, value());
        }
        assert!(!table.stays_in_cache(), "100 000 values: several MiB");
    }

    /// Random puts and removes against a `HashMap`, with few distinct ids so
    /// that runs collide, wrap around the end and are shifted by removals, and
    /// with every representation: ids and values inline together, too long
    /// together, ids longer than an entry, and values with an expiry (which
    /// are never inline), each replaced by every other. Half the puts first try
    /// [`Table::replace_at`] where the last read found a value, whatever key that was
    /// and whatever moved since.
    #[test]
    fn behaves_like_a_map_under_random_puts_and_removes() {
        let mut table = Table::default();
        let mut last_read: Option<usize> = None;
        let mut model: HashMap<(String, u16), StoredValue> = HashMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let id_of = |n: u64| {
            if n.is_multiple_of(5) {
                format!("an-id-longer-than-any-entry-{n}")
            } else {
                format!("id-{n}")
            }
        };
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x % 300;
            let id = id_of(n);
            let slot = ((x >> 20) % 3) as u16;
            let hash = test_hash(n, &id);
            match (x >> 40) % 4 {
                1 => {
                    let found = table.get(hash, &id, slot);
                    assert_eq!(
                        found.map(|(_, v)| v),
                        model
                            .get(&(id.clone(), slot))
                            .map(StoredValue::as_value_ref),
                        "step {step}"
                    );
                    last_read = found.map(|(i, _)| i).or(last_read);
                }
                0 => {
                    let removed = table.remove(hash, &id, slot);
                    assert_eq!(
                        removed,
                        model.remove(&(id.clone(), slot)).is_some(),
                        "step {step}"
                    );
                }
                _ => {
                    // Values of 0 to 39 bytes, one in seven with an expiry.
                    let v = vec![(step % 251) as u8; (step % 40) as usize];
                    let expires_at_ms = if (x >> 50).is_multiple_of(7) {
                        u64::from(step)
                    } else {
                        StoredValue::NEVER
                    };
                    let value = StoredValue {
                        expires_at_ms,
                        ..StoredValue::new(&v)
                    };
                    let new = match last_read {
                        Some(i) if (x >> 33).is_multiple_of(2) => {
                            match table.replace_at(i, &id, slot, value.clone()) {
                                None => false,
                                Some(value) => table.put(hash, &id, slot, value),
                            }
                        }
                        _ => table.put(hash, &id, slot, value.clone()),
                    };
                    assert_eq!(
                        new,
                        model.insert((id.clone(), slot), value).is_none(),
                        "step {step}"
                    );
                }
            }
            assert_eq!(table.len(), model.len());
            assert_eq!(
                table.bytes(),
                model.values().map(|v| v.bytes.len()).sum::<usize>()
            );
        }
        for ((id, slot), v) in &model {
            let n: u64 = id.rsplit('-').next().unwrap().parse().unwrap();
            let found = table.get(test_hash(n, id), id, *slot).map(|(_, v)| v);
            assert_eq!(found, Some(v.as_value_ref()));
        }
        for n in 0..300 {
            let id = id_of(n);
            for slot in 0..3 {
                let found = table.get(test_hash(n, &id), &id, slot);
                assert_eq!(found.is_some(), model.contains_key(&(id.clone(), slot)));
            }
        }
    }

    /// Byte strings of every length up to past the 16 the loads cover are equal exactly
    /// when they are, whichever byte differs.
    #[test]
    fn same_bytes_finds_every_difference() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i).collect();
            assert!(same_bytes(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x80;
                assert!(!same_bytes(&a, &b), "length {n}, byte {at}");
            }
            let mut longer = a.clone();
            longer.push(b'a');
            assert!(!same_bytes(&a, &longer), "length {n} against {}", n + 1);
        }
    }

    #[test]
    fn append_bytes_appends_every_length() {
        for n in 0..=40usize {
            let b: Vec<u8> = (0..n as u8).map(|i| b'a' + i).collect();
            for before in [0usize, 1, 7] {
                let mut v = vec![b'x'; before];
                v.shrink_to_fit();
                append_bytes(&mut v, &b);
                assert_eq!(&v[..before], &vec![b'x'; before][..], "length {n}");
                assert_eq!(&v[before..], &b[..], "length {n} after {before}");
            }
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
