//! The durable backend's hot table: the worker's values in memory, by state key, across
//! checkpoints.
//!
//! Why one table that lives as long as the worker, and not a window per checkpoint
//! interval: at a million keys and a checkpoint a second nearly every key is touched
//! again in the next interval. A fresh window per interval faulted in (and zeroed) a new
//! table of a million entries each second, and each first read of a key in the interval
//! fell through the frozen windows of earlier ones. Here a key's entry stays; what a
//! checkpoint needs — the values changed in its interval, immutable while the worker goes
//! on — is kept beside it in an append-only [`ChangeLog`], and the table only remembers
//! which interval last changed each entry.
//!
//! The table is a cache with a budget ([`HotTable::make_room`]): an entry may leave it
//! only once its last change is in the store's main state (the interval is *safe*), so a
//! key missing from the table is read from the store and is right there. Eviction is a
//! randomized clock: it looks at short runs of slots from random places, clears the
//! `referenced` bit of entries used since it last looked, and removes the safe entries
//! whose bit is clear (a batch of them from each place: `EVICT_BATCH`).
//!
//! Linear probing with the hash kept in the entry; removal shifts the following entries
//! back (no tombstones), as in the in-memory state table. The load stays at or below 4/5.

use crate::state::{same_bytes, StoredValue, ValueRef};

/// The hash of a state key, from its function type and id only: all values of an
/// instance hash alike, so [`HotTable::prefetch`] can start loading their line from the
/// function and id, before the spec of the value read is known.
#[inline]
pub(crate) fn hot_hash(function: &str, id: &str) -> u32 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(function.as_bytes());
    h.write_u8(0xff);
    h.write(id.as_bytes());
    let h = h.finish();
    (h >> 32) as u32 ^ h as u32
}

/// `logged_at` of an entry whose change is not (or can no longer be) overwritten in the
/// log in place.
const NOT_LOGGED: u32 = u32::MAX;

/// Bytes of an entry's heap object besides its key and value: the key's length (u32)
/// and the value's expiry (u64), both little-endian.
const DATA_OVERHEAD: usize = 4 + 8;

/// One state value: 32 bytes, half a cache line. The key and value live in one heap
/// object, `key length (u32) | key | expiry (u64) | value`, which a lookup reads only
/// after the hash matched (it must compare the key there anyway). Half a line instead of
/// a line with the value inline: a million keys' table is 64 MiB instead of 128, and the
/// pages the kernel zeroes as it grows (a tenth of a 1 M-key run's worker time) halve.
pub(crate) struct Entry {
    hash: u32,
    /// The interval that last changed the value; 0 if none did since it was loaded.
    pub(crate) changed: u32,
    /// Where that change is in the current interval's log (when `changed` is the current
    /// interval), to overwrite it in place when the value changes again.
    pub(crate) logged_at: u32,
    /// Whether a value is stored (`false`: absent, or deleted).
    present: bool,
    /// Read or written since eviction last looked at it.
    referenced: bool,
    data: Box<[u8]>,
}

impl Entry {
    /// An entry of `key` holding `value` (`None`: absent).
    fn new(hash: u32, key: &[u8], value: Option<ValueRef<'_>>) -> Entry {
        Entry {
            hash,
            changed: 0,
            logged_at: NOT_LOGGED,
            present: value.is_some(),
            referenced: true,
            data: Self::data(key, value),
        }
    }

    /// The heap object of `key` and `value`.
    fn data(key: &[u8], value: Option<ValueRef<'_>>) -> Box<[u8]> {
        let bytes = value.map_or(&[][..], |v| v.bytes);
        let expires = value.map_or(StoredValue::NEVER, |v| v.expires_at_ms);
        let mut data = Vec::with_capacity(DATA_OVERHEAD + key.len() + bytes.len());
        // A key past 4 GiB cannot be built (the store's keys are far shorter); its length
        // saturates rather than wraps.
        data.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(&expires.to_le_bytes());
        data.extend_from_slice(bytes);
        data.into_boxed_slice()
    }

    /// Where the expiry starts in `data` (the value follows it).
    #[inline]
    fn value_at(&self) -> usize {
        let mut len = [0; 4];
        len.copy_from_slice(&self.data[..4]);
        4 + u32::from_le_bytes(len) as usize
    }

    /// The state key.
    #[inline]
    fn key(&self) -> &[u8] {
        &self.data[4..self.value_at()]
    }

    /// The value, if one is stored.
    #[inline]
    pub(crate) fn value(&self) -> Option<ValueRef<'_>> {
        if !self.present {
            return None;
        }
        let at = self.value_at();
        let (expires, bytes) = self.data[at..].split_at(8);
        let mut e = [0; 8];
        e.copy_from_slice(expires);
        Some(ValueRef {
            bytes,
            expires_at_ms: u64::from_le_bytes(e),
        })
    }

    /// Replaces the value (`None`: deleted): in place when the length is the same (a
    /// counter's), else in a new heap object.
    fn set(&mut self, value: Option<ValueRef<'_>>) {
        self.present = value.is_some();
        let bytes = value.map_or(&[][..], |v| v.bytes);
        let at = self.value_at();
        if self.data.len() - at - 8 == bytes.len() {
            let expires = value.map_or(StoredValue::NEVER, |v| v.expires_at_ms);
            self.data[at..at + 8].copy_from_slice(&expires.to_le_bytes());
            self.data[at + 8..].copy_from_slice(bytes);
        } else {
            self.data = Self::data(&self.data[4..at], value);
        }
    }

    /// Heap bytes it holds beside its slot.
    fn heap(&self) -> usize {
        self.data.len()
    }
}

/// How many entries [`HotTable::make_room`] evicts at most when it must evict: once
/// over its budget, the table goes a little under it, and the next inserts evict nothing.
const EVICT_BATCH: usize = 32;

/// How many calls of [`HotTable::make_room`] skip eviction after it found nothing to
/// evict, while the safe interval stays the same: a search that fails looks at
/// `8 * 4 * EVICT_BATCH` slots, and when the unwritten changes alone fill the budget
/// (a small state cache, many keys changed per checkpoint) every insert failed it again,
/// 17 500 instructions a record (callgrind, 300 000 keys in a 4 MiB cache: 3.7 k records
/// a second). Waiting bounds the search to 16 slots an insert; in the meantime the table
/// holds at most this many entries more than its budget.
const EVICT_RETRY: u32 = 64;

/// Values by state key (see the module docs).
pub(crate) struct HotTable {
    entries: Vec<Option<Entry>>,
    /// `entries.len() - 1`; `entries.len()` is a power of two (or zero).
    mask: usize,
    len: usize,
    /// Bytes of keys and spilled values the entries hold on the heap.
    heap: usize,
    /// The state of the random choice of where to evict (never zero).
    random: u64,
    /// Changes whenever entries may have moved between slots (a removal, a growth, a
    /// clear; an insert into a free slot moves none): a slot found at one generation
    /// still holds its entry while the generation is the same.
    generation: u64,
    /// After an eviction that found nothing: the safe interval it was given and how many
    /// more calls skip eviction (see [`EVICT_RETRY`]).
    barren: Option<(u32, u32)>,
}

impl Default for HotTable {
    fn default() -> Self {
        HotTable {
            entries: Vec::new(),
            mask: 0,
            len: 0,
            heap: 0,
            random: 0x9e37_79b9_7f4a_7c15,
            generation: 0,
            barren: None,
        }
    }
}

impl HotTable {
    /// The number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// See the field: equal generations mean every entry is still in the slot it was in.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The memory it holds: its slots, and the keys and values they point to.
    pub(crate) fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Option<Entry>>() + self.heap
    }

    /// Starts loading the line where the values of `hash` would be.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u32) {
        if let Some(entry) = self.entries.get(hash as usize & self.mask) {
            crate::state::prefetch_line(entry as *const Option<Entry> as *const u8);
        }
    }

    /// Starts loading the key and value of the entry of `hash` (the first few slots of its
    /// run that carry the hash), once [`HotTable::prefetch`] brought their slots in: a
    /// lookup compares the key there, a miss of its own after the slot's.
    #[inline]
    pub(crate) fn prefetch_entry(&self, hash: u32) {
        if self.entries.is_empty() {
            return;
        }
        let mut i = hash as usize & self.mask;
        for _ in 0..4 {
            match &self.entries[i] {
                None => return,
                Some(e) if e.hash == hash => {
                    crate::state::prefetch_line(e.data.as_ptr());
                    return;
                }
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    /// The slot of `key`, whose [`hot_hash`] is `hash`.
    #[inline]
    pub(crate) fn find(&self, hash: u32, key: &[u8]) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let mut i = hash as usize & self.mask;
        loop {
            match &self.entries[i] {
                None => return None,
                Some(e) if e.hash == hash && same_bytes(e.key(), key) => return Some(i),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    /// The entry in slot `i` (from [`HotTable::find`] or [`HotTable::insert`]), marked
    /// as used.
    #[inline]
    pub(crate) fn at(&mut self, i: usize) -> &mut Entry {
        match &mut self.entries[i] {
            Some(e) => {
                e.referenced = true;
                e
            }
            None => unreachable!("slot {i} was just found or filled"),
        }
    }

    /// Replaces the value of the entry in slot `i` (`None`: deleted) and returns the
    /// entry, marked as used.
    #[inline]
    pub(crate) fn set(&mut self, i: usize, value: Option<ValueRef<'_>>) -> &mut Entry {
        let Some(e) = &mut self.entries[i] else {
            unreachable!("slot {i} was just found or filled")
        };
        let before = e.heap();
        e.referenced = true;
        e.set(value);
        self.heap = self.heap + e.heap() - before;
        e
    }

    /// Enters `key`, which the table does not hold, with `value`, and returns its slot.
    /// Call [`HotTable::make_room`] first.
    pub(crate) fn insert(&mut self, hash: u32, key: &[u8], value: Option<StoredValue>) -> usize {
        if (self.len + 1) * 5 > self.entries.len() * 4 {
            self.grow();
        }
        let entry = Entry::new(hash, key, value.as_ref().map(StoredValue::as_value_ref));
        self.heap += entry.heap();
        let mut i = hash as usize & self.mask;
        while self.entries[i].is_some() {
            i = (i + 1) & self.mask;
        }
        self.entries[i] = Some(entry);
        self.len += 1;
        i
    }

    /// Makes room for one more entry within `limit` bytes, evicting entries whose last
    /// change was in interval `safe` or earlier (see the module docs). When none can be
    /// found the table grows past the limit: unwritten changes are never dropped.
    pub(crate) fn make_room(&mut self, limit: usize, safe: u32) {
        let full = (self.len + 1) * 5 > self.entries.len() * 4;
        if !full {
            if self.bytes() > limit && self.may_evict(safe) {
                self.evict(safe);
            }
            return;
        }
        let slot = std::mem::size_of::<Option<Entry>>();
        let grown = (self.entries.len() * 2).max(16) * slot + self.heap;
        if grown > limit && self.may_evict(safe) && self.evict(safe) {
            return;
        }
        self.grow();
    }

    /// Whether to look for entries to evict: not for [`EVICT_RETRY`] calls after a search
    /// found none, unless the safe interval moved since (then entries changed up to it
    /// may go, and the search starts again at once).
    #[inline]
    fn may_evict(&mut self, safe: u32) -> bool {
        match &mut self.barren {
            Some((at, wait)) if *at == safe && *wait > 0 => {
                *wait -= 1;
                false
            }
            _ => true,
        }
    }

    /// Evicts up to [`EVICT_BATCH`] safe entries not referenced since the clock last
    /// looked at them, looking at a few runs of slots from random places and clearing the
    /// `referenced` bits it passes (a randomized clock); true if it evicted any. Random
    /// places, not a hand going round: evicting only where a hand is leaves the slots
    /// ahead of it filling up, and linear probes there grow to thousands of slots. A batch
    /// per place, not one entry: the place is a cache and TLB miss in a table far larger
    /// than the caches, and the slots after it come in order, nearly for free.
    fn evict(&mut self, safe: u32) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        self.barren = None;
        let mut evicted = 0;
        for _ in 0..8 {
            // xorshift64
            let mut x = self.random;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.random = x;
            let mut i = x as usize & self.mask;
            for _ in 0..EVICT_BATCH * 4 {
                match &mut self.entries[i] {
                    Some(e) if e.referenced => e.referenced = false,
                    Some(e) if e.changed <= safe => {
                        // The next entry of the run may move into this slot: look again.
                        self.remove(i);
                        evicted += 1;
                        if evicted == EVICT_BATCH {
                            return true;
                        }
                        continue;
                    }
                    _ => {}
                }
                i = (i + 1) & self.mask;
            }
            if evicted > 0 {
                return true;
            }
        }
        self.barren = Some((safe, EVICT_RETRY));
        false
    }

    /// Removes the entry in slot `hole`, shifting the following entries of its run back
    /// unless their home lies (cyclically) after the hole, so every entry stays reachable
    /// from its home without tombstones.
    fn remove(&mut self, hole: usize) {
        if let Some(e) = self.entries[hole].take() {
            self.heap -= e.heap();
            self.len -= 1;
        }
        self.generation += 1;
        crate::state::close_hole(&mut self.entries, self.mask, hole, |e| {
            e.as_ref().map(|e| e.hash)
        });
    }

    fn grow(&mut self) {
        let capacity = (self.entries.len() * 2).max(16);
        self.generation += 1;
        let old = std::mem::replace(&mut self.entries, Vec::with_capacity(capacity));
        self.entries.resize_with(capacity, || None);
        self.mask = capacity - 1;
        for entry in old.into_iter().flatten() {
            let mut i = entry.hash as usize & self.mask;
            while self.entries[i].is_some() {
                i = (i + 1) & self.mask;
            }
            self.entries[i] = Some(entry);
        }
    }

    /// Forgets every entry (a restore rolled the store back under it).
    pub(crate) fn clear(&mut self) {
        let generation = self.generation + 1;
        *self = HotTable::default();
        self.generation = generation;
    }
}

/// The changes of one checkpoint interval, in the order they were made: what the worker
/// hands the writer at a checkpoint, and keeps (several workers) until the checkpoint is
/// merged into the main state.
///
/// A record is `key length (u32) | key | present (u8) | expiry (u64) | value length (u32)
/// | value`, little-endian. A key changed again in the same interval is overwritten in
/// place when its value has the same length (the usual case: a counter), else appended
/// again; [`ChangeLog::sort_into`] keeps the last record of each key.
#[derive(Default)]
pub(crate) struct ChangeLog {
    data: Vec<u8>,
    /// Records appended.
    records: usize,
}

/// Where a record of a [`ChangeLog`] sorts: two words of its key after what all keys of
/// the log share, and the record's offset in the log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SortKey {
    first: u64,
    second: u64,
    at: usize,
}

/// Bytes of a record besides its key and value.
const RECORD_OVERHEAD: usize = 4 + 1 + 8 + 4;

/// How many records ahead [`ChangeLog::sorted`] requests the lines it will read: a
/// cache miss takes longer than adding several records to a batch, so the request must
/// go out records before the read (16 was not tuned; at 1 M keys it took the batch
/// loop from 9.3 % of the process's samples to 2.8 %, what remains mostly the requests'
/// own page-table walks).
const SORTED_AHEAD: usize = 16;

impl ChangeLog {
    /// Bytes of records.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes it has room for without growing.
    pub(crate) fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Empties it, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.records = 0;
    }

    /// Makes room for at least `bytes` of records in all. An empty log too small gets a
    /// new buffer: growing the old one would copy its whole capacity (tens of MB of
    /// records already written) into the new one, on the worker, as the checkpoint is
    /// handed over.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        if self.data.is_empty() && self.data.capacity() < bytes {
            self.data = Vec::with_capacity(bytes);
        } else {
            self.data.reserve(bytes.saturating_sub(self.data.len()));
        }
    }

    /// Appends a change of `key` to `value` and returns where it is, for
    /// [`ChangeLog::overwrite`] (`u32::MAX` past 4 GiB of records: appended again then).
    pub(crate) fn append(&mut self, key: &[u8], value: Option<ValueRef<'_>>) -> u32 {
        let at = u32::try_from(self.data.len())
            .ok()
            .filter(|at| *at != NOT_LOGGED)
            .unwrap_or(NOT_LOGGED);
        let bytes = value.map_or(&[][..], |v| v.bytes);
        self.records += 1;
        let d = &mut self.data;
        d.reserve(RECORD_OVERHEAD + key.len() + bytes.len());
        d.extend_from_slice(&(key.len() as u32).to_le_bytes());
        d.extend_from_slice(key);
        d.push(value.is_some() as u8);
        d.extend_from_slice(&value.map_or(0, |v| v.expires_at_ms).to_le_bytes());
        d.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        d.extend_from_slice(bytes);
        at
    }

    /// Replaces the value of the record at `at` with `value` if it has the same length;
    /// false (nothing changed) otherwise.
    pub(crate) fn overwrite(&mut self, at: u32, value: Option<ValueRef<'_>>) -> bool {
        if at == NOT_LOGGED {
            return false;
        }
        let at = at as usize;
        let Some(key_len) = read_u32(&self.data, at) else {
            return false;
        };
        let flag = at + 4 + key_len as usize;
        let bytes = value.map_or(&[][..], |v| v.bytes);
        if read_u32(&self.data, flag + 9) != Some(bytes.len() as u32) {
            return false;
        }
        self.data[flag] = value.is_some() as u8;
        let expires = value.map_or(0, |v| v.expires_at_ms).to_le_bytes();
        self.data[flag + 1..flag + 9].copy_from_slice(&expires);
        self.data[flag + 13..flag + 13 + bytes.len()].copy_from_slice(bytes);
        true
    }

    /// The last change of each key, in key order (for the store's batch: RocksDB inserts
    /// sorted keys faster), `None` for a deletion.
    #[cfg(test)]
    pub(crate) fn changes(&self) -> Vec<(&[u8], Option<ValueRef<'_>>)> {
        let mut order = Vec::new();
        self.sort_into(&mut order);
        self.sorted(&order).collect()
    }

    /// The changes `order` ([`ChangeLog::sort_into`]) points to, in its order.
    ///
    /// Each record's lines are requested [`SORTED_AHEAD`] records before it is read: the
    /// order is the keys', the log's the arrival's, so in a log of tens of megabytes each
    /// record is a cache miss of its own. Without the requests, at 1 M keys, the load of
    /// each record's first bytes was 92 % of the samples of the checkpoint writer's
    /// `Job::write`, a quarter of the writer's time (`perf`).
    pub(crate) fn sorted<'a, 'o>(
        &'a self,
        order: &'o [SortKey],
    ) -> impl Iterator<Item = (&'a [u8], Option<ValueRef<'a>>)> + 'o
    where
        'a: 'o,
    {
        order.iter().enumerate().map(move |(i, k)| {
            if let Some(ahead) = order.get(i + SORTED_AHEAD) {
                // A record of a counter (key, flags, value) is about 60 bytes: two lines
                // unless it starts at one's beginning.
                for at in [ahead.at, ahead.at + 63] {
                    if let Some(b) = self.data.get(at) {
                        crate::state::prefetch_line(b);
                    }
                }
            }
            self.change(k)
        })
    }

    /// Fills `order` with where the last change of each key is, in key order (read each
    /// with [`ChangeLog::change`]). The caller keeps `order` from one log to the next: a
    /// checkpoint's million changes then reuse memory already in place, instead of
    /// faulting in tens of fresh megabytes every time.
    pub(crate) fn sort_into(&self, order: &mut Vec<SortKey>) {
        order.clear();
        order.reserve(self.records);
        let d = &self.data;
        let mut at = 0;
        // The keys' common prefix (the state marker, often the key group's first byte
        // and the function type): sorting compares the 8 bytes after it first, a
        // comparison of integers instead of a `memcmp` over the shared bytes.
        let mut common: Option<&[u8]> = None;
        while let Some(key_len) = read_u32(d, at) {
            let key = &d[at + 4..at + 4 + key_len as usize];
            let flag = at + 4 + key_len as usize;
            let value_len = read_u32(d, flag + 9).unwrap_or(0) as usize;
            common = Some(common.map_or(key, |c| shared_prefix(c, key)));
            order.push(SortKey {
                first: 0,
                second: 0,
                at,
            });
            at = flag + 13 + value_len;
        }
        let skip = common.map_or(0, <[u8]>::len);
        // Those 8 bytes are often the key group and the start of the function type, the
        // same for a few hundred keys: a second word, after what all keys share beyond
        // the first (the rest of the function type), usually holds the ids.
        let mut common2: Option<&[u8]> = None;
        for r in order.iter() {
            let tail = self.key_at(r.at).get(skip + 8..).unwrap_or(&[]);
            common2 = Some(common2.map_or(tail, |c| shared_prefix(c, tail)));
        }
        let skip2 = skip + 8 + common2.map_or(0, <[u8]>::len);
        // Zero-padded big-endian words order like the bytes they hold, except that a key
        // and a longer one continuing with zero bytes tie: the full key decides then.
        let word = |key: &[u8], at: usize| {
            let mut next = [0u8; 8];
            let rest = key.get(at..).unwrap_or(&[]);
            let n = rest.len().min(8);
            next[..n].copy_from_slice(&rest[..n]);
            u64::from_be_bytes(next)
        };
        for r in order.iter_mut() {
            let key = self.key_at(r.at);
            r.first = word(key, skip);
            r.second = word(key, skip2);
        }
        let same_key = |a: &SortKey, b: &SortKey| {
            (a.first, a.second) == (b.first, b.second) && self.key_at(a.at) == self.key_at(b.at)
        };
        // Of a key's records, the last one written (the larger offset) sorts last.
        order.sort_unstable_by(|a, b| {
            (a.first, a.second)
                .cmp(&(b.first, b.second))
                .then_with(|| self.key_at(a.at).cmp(self.key_at(b.at)))
                .then(a.at.cmp(&b.at))
        });
        // Keep the last record of each key, in place.
        let mut kept = 0;
        for i in 0..order.len() {
            let r = order[i];
            if kept > 0 && same_key(&order[kept - 1], &r) {
                order[kept - 1] = r;
            } else {
                order[kept] = r;
                kept += 1;
            }
        }
        order.truncate(kept);
    }

    /// The key and value (`None`: deleted) of the record `k` sorted ([`ChangeLog::sort_into`]).
    pub(crate) fn change(&self, k: &SortKey) -> (&[u8], Option<ValueRef<'_>>) {
        let d = &self.data;
        let key = self.key_at(k.at);
        let flag = k.at + 4 + key.len();
        let value = (d.get(flag) == Some(&1)).then(|| {
            let value_len = read_u32(d, flag + 9).unwrap_or(0) as usize;
            ValueRef {
                bytes: d.get(flag + 13..flag + 13 + value_len).unwrap_or(&[]),
                expires_at_ms: d
                    .get(flag + 1..flag + 9)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_le_bytes),
            }
        });
        (key, value)
    }

    /// The key of the record at `at`.
    #[inline]
    fn key_at(&self, at: usize) -> &[u8] {
        let len = read_u32(&self.data, at).unwrap_or(0) as usize;
        self.data.get(at + 4..at + 4 + len).unwrap_or(&[])
    }
}

/// The longest prefix of `a` that `b` starts with too.
fn shared_prefix<'a>(a: &'a [u8], b: &[u8]) -> &'a [u8] {
    &a[..a.iter().zip(b).take_while(|(x, y)| x == y).count()]
}

#[inline]
fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn an_entry_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 32);
    }

    fn key(n: u64) -> Vec<u8> {
        if n.is_multiple_of(5) {
            format!("a-key-longer-than-most-{n}").into_bytes()
        } else {
            format!("k{n}").into_bytes()
        }
    }

    /// A quarter of the keys hash to the last slots of any table, so runs wrap around
    /// the end; the rest hash normally.
    fn hash(n: u64) -> u32 {
        if n.is_multiple_of(4) {
            u32::MAX - (n % 3) as u32
        } else {
            hot_hash("f", &n.to_string())
        }
    }

    /// Random inserts, updates and evictions against a map: every entry the table keeps
    /// has the model's value, and no entry changed after the safe interval is evicted.
    #[test]
    fn behaves_like_a_map_and_evicts_only_safe_entries() {
        let mut table = HotTable::default();
        /// A value's bytes and expiry.
        type Value = (Vec<u8>, u64);
        let mut model: HashMap<u64, (Option<Value>, u32)> = HashMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut interval = 1u32;
        let mut safe = 0u32;
        for step in 0..100_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x % 2_000;
            // Each interval changes at most 400 keys; the one before is safe.
            if step % 400 == 0 {
                interval += 1;
                safe = interval - 1;
            }
            // A small budget: the table must evict to stay near it.
            let limit = 16 * 1024;
            // Lengths vary (in place or a new heap object), some values expire.
            let expires = if step % 3 == 0 {
                u64::from(step)
            } else {
                StoredValue::NEVER
            };
            let value = (!(x >> 30).is_multiple_of(6))
                .then(|| (vec![step as u8; (step % 30) as usize], expires));
            let i = match table.find(hash(n), &key(n)) {
                Some(i) => i,
                None => {
                    table.make_room(limit, safe);
                    table.insert(hash(n), &key(n), None)
                }
            };
            let value_ref = value.as_ref().map(|(bytes, expires_at_ms)| ValueRef {
                bytes,
                expires_at_ms: *expires_at_ms,
            });
            table.set(i, value_ref).changed = interval;
            model.insert(n, (value, interval));
            if step % 97 != 0 {
                continue;
            }
            for (n, (v, changed)) in &model {
                if *changed > safe {
                    let i = table.find(hash(*n), &key(*n));
                    let i = i.unwrap_or_else(|| panic!("step {step}: unsafe key {n} evicted"));
                    let got = table
                        .at(i)
                        .value()
                        .map(|v| (v.bytes.to_vec(), v.expires_at_ms));
                    assert_eq!(&got, v, "step {step}, key {n}");
                }
            }
            {
                let kept = model
                    .iter()
                    .filter(|(n, _)| table.find(hash(**n), &key(**n)).is_some())
                    .count();
                assert_eq!(kept, table.len(), "step {step}");
            }
        }
        // Room for the unsafe keys (at most 800: two intervals' worth) was all it grew.
        assert!(table.len() <= 820, "evicted too little: {}", table.len());
        assert!(table.bytes() <= 1024 * 64 + 800 * 40, "{}", table.bytes());
    }

    /// When the unwritten changes alone fill the budget, the table holds them all (it
    /// never drops one), stops searching for a while after a search found nothing, and
    /// evicts again as soon as a checkpoint makes them safe.
    #[test]
    fn a_budget_full_of_unwritten_changes_waits_for_them_to_be_safe() {
        let key = |n: u32| format!("key-{n:08}").into_bytes();
        let hash = |n: u32| n.wrapping_mul(0x9e37_79b9);
        let mut table = HotTable::default();
        let limit = 16 * 1024;
        // Key `n` changed in interval `changed` while interval `safe` is written.
        let enter = |table: &mut HotTable, n: u32, safe: u32, changed: u32| {
            table.make_room(limit, safe);
            let i = table.insert(hash(n), &key(n), None);
            let value = ValueRef {
                bytes: b"v",
                expires_at_ms: StoredValue::NEVER,
            };
            table.set(i, Some(value)).changed = changed;
        };
        // Interval 2 changes 2 000 keys, far over the budget; interval 1 is safe.
        for n in 0..2_000 {
            enter(&mut table, n, 1, 2);
        }
        assert_eq!(table.len(), 2_000, "an unwritten change was dropped");
        assert!(
            matches!(table.barren, Some((1, _))),
            "no search failed: {:?}",
            table.barren
        );
        // Interval 2 is written: the next insert evicts at once, and the ones after it
        // evict (nearly) all of interval 2's keys to make room for interval 3's.
        table.make_room(limit, 2);
        assert!(
            table.len() < 2_000,
            "nothing evicted once interval 2 was safe"
        );
        for n in 2_000..4_000 {
            enter(&mut table, n, 2, 3);
        }
        let kept = (0..2_000)
            .filter(|&n| table.find(hash(n), &key(n)).is_some())
            .count();
        assert!(kept < 100, "{kept} of interval 2's keys still held");
        for n in 2_000..4_000 {
            assert!(
                table.find(hash(n), &key(n)).is_some(),
                "unwritten key {n} evicted"
            );
        }
    }

    #[test]
    fn a_log_keeps_the_last_change_of_each_key_in_key_order() {
        let mut log = ChangeLog::default();
        let v = |b: &'static [u8], e| {
            Some(ValueRef {
                bytes: b,
                expires_at_ms: e,
            })
        };
        let b = log.append(b"b", v(b"1", 7));
        let a = log.append(b"a", v(b"22", StoredValue::NEVER));
        assert!(log.overwrite(b, v(b"3", 9)), "same length: in place");
        assert!(!log.overwrite(a, v(b"333", 1)), "longer: appended instead");
        log.append(b"a", v(b"333", 1));
        let c = log.append(b"c", v(b"x", 1));
        assert!(!log.overwrite(c, None), "a deletion is shorter");
        log.append(b"c", None);
        let d = log.append(b"d", None);
        assert!(log.overwrite(d, v(b"", 5)));
        let got: BTreeMap<Vec<u8>, Option<(Vec<u8>, u64)>> = log
            .changes()
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.map(|v| (v.bytes.to_vec(), v.expires_at_ms))))
            .collect();
        let want: BTreeMap<Vec<u8>, Option<(Vec<u8>, u64)>> = [
            (b"a".to_vec(), Some((b"333".to_vec(), 1))),
            (b"b".to_vec(), Some((b"3".to_vec(), 9))),
            (b"c".to_vec(), None),
            (b"d".to_vec(), Some((vec![], 5))),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
        let keys: Vec<&[u8]> = log.changes().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"c", b"d"]);
    }

    /// Keys sharing a long prefix, of every length around the 8 bytes the sort compares
    /// first (one is the prefix itself, some continue with zero bytes), changed in
    /// random order and repeatedly: the log gives each key's last value, in key order.
    #[test]
    fn keys_with_a_common_prefix_sort_like_bytes() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let values: Vec<Vec<u8>> = (0..=255u8).map(|n| vec![n; (n % 3) as usize]).collect();
        // All keys in one key group (the first word is in the ids), then keys over a few
        // key groups (the first word holds the group and the type's start, the second the
        // ids, after the rest of the type).
        for groups in [1u64, 3] {
            let mut log = ChangeLog::default();
            let mut want: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for _ in 0..5000 {
                let group = (next() % groups) as u8;
                let mut key = [b"s\x00".as_slice(), &[group], b"bench/counter\x00"].concat();
                for _ in 0..next() % 12 {
                    key.push([0u8, 1, 0xff, b'7'][(next() % 4) as usize]);
                }
                let value = &values[(next() % 256) as usize];
                log.append(
                    &key,
                    Some(ValueRef {
                        bytes: value,
                        expires_at_ms: 0,
                    }),
                );
                want.insert(key, value.clone());
            }
            let got: Vec<(Vec<u8>, Vec<u8>)> = log
                .changes()
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.map(|v| v.bytes.to_vec()).unwrap_or_default()))
                .collect();
            assert_eq!(
                got,
                want.into_iter().collect::<Vec<_>>(),
                "{groups} key groups"
            );
        }
    }
}
