//! The RocksDB [`Store`]: one database per worker.

use std::path::{Path, PathBuf};

use rocksdb::compaction_filter::Decision;
use rocksdb::{BlockBasedOptions, Cache, Options, WriteBatch, WriteOptions, DB};

use super::durable::expired_state_entry;
use super::store::{Batch, Entries, Op, Store, StoreError};
use crate::clock::Clock;

/// The memory a worker's durable state may use, besides the windows of values changed
/// since the last checkpoints (those grow with what the interval changes; see
/// docs/DURABILITY.md, "Memory").
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
    /// RocksDB's memtables in all (four of a quarter each: one filling while the others are
    /// flushed), in bytes. Smaller means more, smaller files to flush and compact.
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
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    sync: WriteOptions,
}

impl RocksStore {
    /// Opens (creating if needed) the database at `path`.
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
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Checkpoints arrive as large batches: room for two in memory while
        // one is flushed, and background threads for flushes and compactions,
        // so a checkpoint rarely waits for a flush (a write stall).
        opts.set_write_buffer_size(options.write_buffer_bytes / 4);
        opts.set_max_write_buffer_number(4);
        opts.set_max_background_jobs(2);
        // A bloom filter over each memtable's whole keys: a read of a key not written in the
        // last memtables (most reads: the worker's windows hold what was written recently)
        // skips their skip lists instead of searching each, a cache miss per level — at 10 M
        // keys that search was a third of the worker's time. 2 % of the write buffer is
        // about 14 bits per entry of a full one.
        opts.set_memtable_whole_key_filtering(true);
        opts.set_memtable_prefix_bloom_ratio(0.02);
        let mut table = BlockBasedOptions::default();
        let cache = Cache::new_lru_cache(options.block_cache_bytes.max(1 << 20));
        table.set_block_cache(&cache);
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
        let db = DB::open(&opts, path).map_err(|e| {
            StoreError::new(format!(
                "cannot open the state database {}: {e}; if another statefun process uses this --state-dir, stop it first",
                path.display()
            ))
        })?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        Ok(RocksStore {
            db,
            path: path.to_path_buf(),
            sync,
        })
    }

    /// Opens the database at `path` read-only (for listing checkpoints while a job may run).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let opts = Options::default();
        let db = DB::open_for_read_only(&opts, path, false).map_err(|e| {
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

    /// Compacts the whole database (drops expired state and deleted entries now).
    pub fn compact(&self) {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
    }

    fn error(&self, what: &str, e: rocksdb::Error) -> StoreError {
        StoreError::new(format!("{what} {} failed: {e}", self.path.display()))
    }
}

impl Store for RocksStore {
    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StoreError> {
        out.clear();
        match self.db.get_pinned(key) {
            Ok(Some(v)) => {
                out.extend_from_slice(&v);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(self.error("reading state from", e)),
        }
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
        for item in self.db.iterator_opt(mode, read) {
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
        let mut wb = WriteBatch::default();
        for op in batch.ops() {
            match op {
                Op::Put(k, v) => wb.put(k, v),
                Op::Delete(k) => wb.delete(k),
                Op::DeleteRange(from, to) => wb.delete_range(from, to),
            }
        }
        self.db
            .write_opt(wb, &self.sync)
            .map_err(|e| self.error("writing a checkpoint to", e))
    }

    fn approximate_len(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_drops_expired_state_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), &StateMemory::default()).unwrap();
        let value = |expires: u64| {
            let mut v = expires.to_be_bytes().to_vec();
            v.push(7);
            v
        };
        let mut batch = Batch::default();
        batch.put(b"s-expired".to_vec(), value(1));
        batch.put(b"s-live".to_vec(), value(u64::MAX));
        batch.put(b"p-pending-is-kept".to_vec(), value(1));
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
        assert_eq!(buf, value(u64::MAX));
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
