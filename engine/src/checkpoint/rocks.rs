//! The RocksDB [`Store`]: one database per worker.

use std::path::{Path, PathBuf};

use rocksdb::compaction_filter::Decision;
use rocksdb::{BlockBasedOptions, Cache, Options, WriteBatch, WriteOptions, DB};

use super::durable::expired_state_entry;
use super::store::{Batch, Entries, Op, Store, StoreError};
use crate::clock::Clock;

/// Tuning of the per-worker databases.
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Block cache per worker, in bytes: state beyond it stays on disk.
    pub block_cache_bytes: usize,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            block_cache_bytes: 64 << 20,
        }
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
    pub fn open(path: &Path, options: &RocksOptions) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut table = BlockBasedOptions::default();
        let cache = Cache::new_lru_cache(options.block_cache_bytes.max(1 << 20));
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
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

    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        let mode = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator(mode) {
            let (k, v) = item.map_err(|e| self.error("scanning", e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn write(&mut self, batch: Batch) -> Result<(), StoreError> {
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
