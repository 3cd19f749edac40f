//! The RocksDB [`Store`]: one database per worker.

use std::path::{Path, PathBuf};

use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB,
};

use super::durable::{expired_state_entry, STATE};
use super::store::{Batch, Entries, Op, Store, StoreError};
use crate::clock::Clock;

/// The memory a worker's durable state may use (see docs/DURABILITY.md, "Memory"; the
/// hot table grows past its budget only to keep changes not yet durable).
///
/// The defaults fit two workers in a 2-core, 4 GB container with room to spare:
/// 64 MiB of block cache, 512 MiB of memtables and 256 MiB of state cache per worker.
///
/// ```
/// let m = statefun_engine::checkpoint::StateMemory::from_mb(256, 128, 64);
/// assert_eq!(m.write_buffer_bytes, 128 << 20);
/// assert_eq!(statefun_engine::checkpoint::StateMemory::default().block_cache_bytes, 64 << 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateMemory {
    /// RocksDB's block cache, in bytes: state read beyond it comes from the file system.
    pub block_cache_bytes: usize,
    /// RocksDB's memtables in all, in bytes: the state's four of 7/32 each (one filling
    /// while the others are flushed) and two of 1/16 for checkpoint metadata. Smaller
    /// means more, smaller files to flush and compact.
    pub write_buffer_bytes: usize,
    /// The worker's hot table of state values, in bytes (entries, keys and values): state
    /// that fits is read and written at memory speed; beyond it the values read least
    /// recently (and already in RocksDB) are evicted.
    pub state_cache_bytes: usize,
}

impl StateMemory {
    /// The default block cache, in MiB.
    pub const DEFAULT_BLOCK_CACHE_MB: usize = 64;
    /// The default memtables in all, in MiB.
    pub const DEFAULT_WRITE_BUFFER_MB: usize = 512;
    /// The default state cache, in MiB.
    pub const DEFAULT_STATE_CACHE_MB: usize = 256;

    /// The three sizes in MiB (each at least 1 MiB; the memtables at least 4).
    pub fn from_mb(block_cache: usize, write_buffer: usize, state_cache: usize) -> Self {
        StateMemory {
            block_cache_bytes: block_cache.max(1) << 20,
            write_buffer_bytes: write_buffer.max(4) << 20,
            state_cache_bytes: state_cache.max(1) << 20,
        }
    }

    /// What a store opened only to read or clean up needs.
    pub fn minimal() -> Self {
        Self::from_mb(1, 4, 1)
    }
}

impl Default for StateMemory {
    fn default() -> Self {
        Self::from_mb(
            Self::DEFAULT_BLOCK_CACHE_MB,
            Self::DEFAULT_WRITE_BUFFER_MB,
            Self::DEFAULT_STATE_CACHE_MB,
        )
    }
}

/// A worker's RocksDB database.
///
/// Every write is one `WriteBatch` with `sync`, so a checkpoint is on disk
/// entirely or not at all, whatever kills the process. A compaction filter
/// drops state entries whose TTL has passed, so expired state leaves the
/// disk, not only the reads.
///
/// Two column families: the main state (keys `s…`, in the default family) and
/// everything else (checkpoint metadata, pending changes, outboxes, the manifest; in
/// `meta`). Checkpoints delete their old metadata and merged pending changes by key
/// ranges, and a memtable holding a range deletion loses its bloom filter for batched
/// reads (`MultiGet`): kept apart, the state's memtables stay free of them (only a fresh
/// start that wipes leftovers deletes a range of state).
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    sync: WriteOptions,
}

/// The column family of everything but the main state.
const META_FAMILY: &str = "meta";

/// The half-open key range of the main state: keys starting with the state byte.
fn state_range() -> ([u8; 1], [u8; 1]) {
    ([STATE], [STATE + 1])
}

impl RocksStore {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// A database written before the state and the rest had column families of their own
    /// (everything in the default one) is converted on open, in one atomic batch.
    pub fn open(path: &Path, options: &StateMemory) -> Result<Self, StoreError> {
        // RocksDB would create an empty database over one whose CURRENT file
        // is gone; refuse instead of silently starting from nothing.
        let has_files = std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some());
        if has_files && !path.join("CURRENT").exists() {
            return Err(StoreError::new(format!(
                "{} is not a complete state database (its CURRENT file is missing); \
                 restore the directory from a backup, or remove it to start this worker from nothing",
                path.display()
            )));
        }
        let cache = Cache::new_lru_cache(options.block_cache_bytes.max(1 << 20));
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Background threads for flushes and compactions, so a checkpoint rarely waits for
        // a flush (a write stall).
        opts.set_max_background_jobs(2);
        // The `meta` family's memtables fill slowly (one worker writes little there), and a
        // write-ahead log file is kept until every family has flushed what it holds: past
        // this much log RocksDB flushes the laggard, so logs (and the replay after a crash)
        // stay within the memtable budget.
        opts.set_max_total_wal_size(options.write_buffer_bytes as u64);
        let families = [
            ColumnFamilyDescriptor::new(
                rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
                state_options(options, &cache),
            ),
            ColumnFamilyDescriptor::new(META_FAMILY, meta_options(options)),
        ];
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(|e| {
            StoreError::new(format!(
                "cannot open the state database {}: {e}; if another statefun process uses this --state-dir, stop it first",
                path.display()
            ))
        })?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let store = RocksStore {
            db,
            path: path.to_path_buf(),
            sync,
        };
        store.separate_families()?;
        Ok(store)
    }

    /// Opens the database at `path` read-only (for listing checkpoints while a job may run).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let opts = Options::default();
        let families = DB::list_cf(&opts, path).unwrap_or_default();
        let db = DB::open_cf_for_read_only(&opts, path, families, false).map_err(|e| {
            StoreError::new(format!(
                "cannot open the state database {}: {e}",
                path.display()
            ))
        })?;
        Ok(RocksStore {
            db,
            path: path.to_path_buf(),
            sync: WriteOptions::default(),
        })
    }

    /// Moves everything but the main state from the default column family into `meta`
    /// (a database of the earlier single-family layout), in one atomic batch: a crash
    /// during it leaves the old layout, converted on the next open.
    fn separate_families(&self) -> Result<(), StoreError> {
        let (state, meta) = self.families()?;
        if std::ptr::eq(state, meta) {
            return Ok(());
        }
        let (first, end) = state_range();
        let mut wb = WriteBatch::default();
        let mut moved = 0usize;
        let below = self
            .db
            .iterator_cf(state, rocksdb::IteratorMode::Start)
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k[..] < first[..]));
        let above = self.db.iterator_cf(
            state,
            rocksdb::IteratorMode::From(&end, rocksdb::Direction::Forward),
        );
        for item in below.chain(above) {
            let (k, v) = item.map_err(|e| self.error("converting", e))?;
            wb.put_cf(meta, &k, &v);
            wb.delete_cf(state, &k);
            moved += 1;
        }
        if moved > 0 {
            tracing::info!(path = %self.path.display(), entries = moved, "state database: checkpoint metadata moved into its own column family");
            self.db
                .write_opt(wb, &self.sync)
                .map_err(|e| self.error("converting", e))?;
        }
        Ok(())
    }

    /// The state's column family and the `meta` one (the default family again in a
    /// database opened read-only that has only that one).
    fn families(&self) -> Result<(&rocksdb::ColumnFamily, &rocksdb::ColumnFamily), StoreError> {
        let state = self
            .db
            .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .ok_or_else(|| {
                StoreError::new(format!(
                    "{}: the state database has no default column family",
                    self.path.display()
                ))
            })?;
        Ok((state, self.db.cf_handle(META_FAMILY).unwrap_or(state)))
    }

    /// The column family that holds `key` (or the keys starting with it).
    fn family_of(&self, key: &[u8]) -> Result<&rocksdb::ColumnFamily, StoreError> {
        let (state, meta) = self.families()?;
        Ok(if key.first() == Some(&STATE) {
            state
        } else {
            meta
        })
    }

    /// Compacts the whole database (drops expired state and deleted entries now).
    pub fn compact(&self) {
        for name in [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, META_FAMILY] {
            if let Some(cf) = self.db.cf_handle(name) {
                self.db.compact_range_cf::<&[u8], &[u8]>(cf, None, None);
            }
        }
    }

    fn error(&self, what: &str, e: rocksdb::Error) -> StoreError {
        StoreError::new(format!("{what} {} failed: {e}", self.path.display()))
    }
}

impl Store for RocksStore {
    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError> {
        out.clear();
        match self.db.get_pinned_cf(self.family_of(key)?, key) {
            Ok(Some(v)) => {
                out.extend_from_slice(&v);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(self.error("reading state from", e)),
        }
    }

    fn get_many(
        &self,
        keys: &[&[u8]],
        found: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> Result<(), StoreError> {
        let Some(first) = keys.first() else {
            return Ok(());
        };
        let family = self.family_of(first)?;
        if keys.iter().any(|k| k.first() != first.first()) {
            return super::store::get_each(self, keys, found);
        }
        let values = self
            .db
            .batched_multi_get_cf(family, keys.iter().copied(), true);
        for (i, value) in values.into_iter().enumerate() {
            match value {
                Ok(v) => found(i, v.as_deref()),
                Err(e) => return Err(self.error("reading state from", e)),
            }
        }
        Ok(())
    }

    fn scan_chunk(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        let from = after.unwrap_or(prefix);
        let mode = rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward);
        // Scans are bulk reads (restores, rescales, the state census): they must not evict
        // the blocks the workers' point reads keep in the cache.
        let mut read = rocksdb::ReadOptions::default();
        read.fill_cache(false);
        for item in self.db.iterator_cf_opt(self.family_of(prefix)?, read, mode) {
            let (k, v) = item.map_err(|e| self.error("scanning", e))?;
            if after.is_some_and(|a| &k[..] <= a) {
                continue;
            }
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        // Room for every key and value and each record's header (type, family, two
        // lengths): a checkpoint's batch is tens of MB, and growing it copies it.
        let mut wb = WriteBatch::with_capacity_bytes(batch.bytes() + 16 * batch.len() + 12);
        let (first, end) = state_range();
        // Looked up once, not per write (a batch holds a million).
        let (state, meta) = self.families()?;
        let family = |k: &[u8]| {
            if k.first() == Some(&STATE) {
                state
            } else {
                meta
            }
        };
        for op in batch.ops() {
            match op {
                Op::Put(k, v) => wb.put_cf(family(k), k, v),
                Op::Delete(k) => wb.delete_cf(family(k), k),
                // A range goes to each family that holds keys in it, and only to those.
                Op::DeleteRange(from, to) => {
                    if from < &end[..] && to > &first[..] {
                        wb.delete_range_cf(state, from, to);
                    }
                    if from < &first[..] || to > &end[..] {
                        wb.delete_range_cf(meta, from, to);
                    }
                }
            }
        }
        self.db
            .write_opt(wb, &self.sync)
            .map_err(|e| self.error("writing a checkpoint to", e))
    }

    fn approximate_len(&self) -> u64 {
        let Ok((state, _)) = self.families() else {
            return 0;
        };
        self.db
            .property_int_value_cf(state, "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// The options of the `meta` column family: checkpoint metadata, outboxes and (with
/// several workers) the changes of checkpoints not yet merged.
fn meta_options(options: &StateMemory) -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // An eighth of the memtable budget (two of a sixteenth); the state has the rest.
    opts.set_write_buffer_size(options.write_buffer_bytes / 16);
    opts.set_max_write_buffer_number(2);
    opts
}

/// The options of the column family holding a worker's state (the default one).
fn state_options(options: &StateMemory, cache: &Cache) -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Checkpoints arrive as large batches: room for two in memory while one is flushed.
    // Four memtables of 7/32 of the budget: the `meta` family has the other eighth.
    opts.set_write_buffer_size(options.write_buffer_bytes / 32 * 7);
    opts.set_max_write_buffer_number(4);
    // A bloom filter over each memtable's whole keys: a read of a key not written in the
    // last memtables (most reads: the worker's hot table holds what was written recently)
    // skips their skip lists instead of searching each, a cache miss per level — at 10 M
    // keys that search was a third of the worker's time. 2 % of the write buffer is
    // about 14 bits per entry of a full one.
    opts.set_memtable_whole_key_filtering(true);
    opts.set_memtable_prefix_bloom_ratio(0.02);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Bloom filters make a read of a key that is not there (every first
    // message to an instance) skip files. Index and filter blocks stay in
    // table-reader memory (about 1.5 bytes per key), not in the block
    // cache: in the cache, data blocks evict them, and a state larger
    // than the cache then re-reads megabytes of filter per lookup.
    table.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&table);
    opts.set_compaction_filter("statefun-ttl", |_level: u32, key: &[u8], value: &[u8]| {
        if expired_state_entry(key, value, Clock::now_ms()) {
            Decision::Remove
        } else {
            Decision::Keep
        }
    });
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_drops_expired_state_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), &StateMemory::default()).unwrap();
        let mut batch = Batch::default();
        batch.put(b"s-expired".to_vec(), state_value(1, 7));
        batch.put(b"s-live".to_vec(), state_value(u64::MAX, 7));
        batch.put(b"p-pending-is-kept".to_vec(), state_value(1, 7));
        store.write(batch).unwrap();
        store.compact();
        let mut buf = Vec::new();
        assert!(
            !store.get_into(b"s-expired", &mut buf).unwrap(),
            "expired state left the disk"
        );
        assert!(store.get_into(b"s-live", &mut buf).unwrap());
        assert!(store.get_into(b"p-pending-is-kept", &mut buf).unwrap());
        drop(store);
        // Reopening sees the same (the data is on disk, synced).
        let store = RocksStore::open(dir.path(), &StateMemory::default()).unwrap();
        assert!(store.get_into(b"s-live", &mut buf).unwrap());
        assert_eq!(buf, state_value(u64::MAX, 7));
    }

    /// A main-state value: its expiry, then one byte.
    fn state_value(expires: u64, n: u8) -> Vec<u8> {
        let mut v = expires.to_be_bytes().to_vec();
        v.push(n);
        v
    }

    #[test]
    fn batched_reads_match_single_reads_and_range_deletions_stay_in_their_family() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), &StateMemory::minimal()).unwrap();
        let mut batch = Batch::default();
        for i in (0..200u8).step_by(2) {
            batch.put(vec![STATE, i], state_value(u64::MAX, i));
            batch.put(vec![b'm', i], vec![i]);
        }
        batch.put(b"x".to_vec(), vec![9]);
        store.write(batch).unwrap();
        // Checkpoint housekeeping: a range of metadata goes, the state next to it stays.
        let mut batch = Batch::default();
        batch.delete_range(vec![b'm'], vec![b'm' + 1]);
        store.write(batch).unwrap();
        let keys: Vec<Vec<u8>> = (0..200u8).map(|i| vec![STATE, i]).collect();
        let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let mut batched = Vec::new();
        store
            .get_many(&keys, &mut |i, v| batched.push((i, v.map(<[u8]>::to_vec))))
            .unwrap();
        let mut single = Vec::new();
        super::super::store::get_each(&store, &keys, &mut |i, v| {
            single.push((i, v.map(<[u8]>::to_vec)))
        })
        .unwrap();
        assert_eq!(batched, single);
        assert_eq!(batched.len(), 200);
        assert_eq!(batched[4], (4, Some(state_value(u64::MAX, 4))));
        assert_eq!(batched[5], (5, None));
        assert!(store.scan(b"m").unwrap().is_empty());
        let mut buf = Vec::new();
        assert!(store.get_into(b"x", &mut buf).unwrap());
        // The state family's memtable got the 100 puts and not the range deletion (its
        // filters stay on for batched reads).
        let state = store.families().unwrap().0;
        let entries = |store: &RocksStore| {
            store
                .db
                .property_int_value_cf(state, "rocksdb.num-entries-active-mem-table")
                .unwrap()
        };
        assert_eq!(entries(&store), Some(100));
        // A wipe reaches both.
        let mut batch = Batch::default();
        batch.delete_range(vec![0], vec![0xff]);
        store.write(batch).unwrap();
        assert_eq!(entries(&store), Some(101));
        assert!(!store.get_into(&[STATE, 4], &mut buf).unwrap());
        assert!(!store.get_into(b"x", &mut buf).unwrap());
    }

    #[test]
    fn a_single_family_database_is_converted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            let db = DB::open(&opts, dir.path()).unwrap();
            db.put([STATE, 1], state_value(u64::MAX, 1)).unwrap();
            db.put([b'm', 0, 7], [7]).unwrap();
            db.put([b'r', 0, 7], [8]).unwrap();
            db.put(b"x", [9]).unwrap();
        }
        for _ in 0..2 {
            let store = RocksStore::open(dir.path(), &StateMemory::minimal()).unwrap();
            let mut buf = Vec::new();
            assert!(store.get_into(&[STATE, 1], &mut buf).unwrap());
            assert_eq!(buf, state_value(u64::MAX, 1));
            assert!(store.get_into(b"x", &mut buf).unwrap());
            assert_eq!(store.scan(b"m").unwrap(), vec![(vec![b'm', 0, 7], vec![7])]);
            assert_eq!(store.scan(b"r").unwrap().len(), 1);
            let state = store.families().unwrap().0;
            let left: Vec<_> = store
                .db
                .iterator_cf(state, rocksdb::IteratorMode::Start)
                .map(|item| item.unwrap().0.to_vec())
                .collect();
            assert_eq!(
                left,
                vec![vec![STATE, 1]],
                "only state stays in the default family"
            );
        }
        let read_only = RocksStore::open_read_only(dir.path()).unwrap();
        let mut buf = Vec::new();
        assert!(read_only.get_into(b"x", &mut buf).unwrap());
    }

    #[test]
    fn a_database_in_use_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RocksStore::open(dir.path(), &StateMemory::default()).unwrap();
        let err = RocksStore::open(dir.path(), &StateMemory::default())
            .err()
            .unwrap();
        assert!(
            err.message.contains("another statefun process"),
            "{}",
            err.message
        );
    }
}
