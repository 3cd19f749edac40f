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
/// Every write is one `WriteBatch` with `sync` — or, for a checkpoint that changes a
/// large part of the state, a synced table file and a synced `WriteBatch` naming it,
/// completed on the next open if a crash comes between ([`Store::write`] below) — so a
/// checkpoint is on disk entirely or not at all, whatever kills the process. A compaction filter
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
    /// A batch with at least this many writes of main state writes them as a table file
    /// ingested into the state's family, not through the log and memtables (see
    /// [`RocksStore::write`]).
    ingest_min: usize,
}

/// The `meta` key naming the table files a batch is ingesting, in order, one per line,
/// each relative to the database's directory (see [`RocksStore::write`]); a name without
/// a directory is in [`STAGING`] (as the first version wrote it, one name).
const INGESTING: &[u8] = b"i";

/// The directory, inside a database's, where a batch's table files are built before
/// ingestion; what is in it when the database is opened belongs to no durable batch.
const STAGING: &str = "staging";

/// The directory, inside a database's, of the staged sets ([`Store::stage`]): one table
/// file each, named by its id ([`staged_name`]).
const STAGED: &str = "staged";

/// The file name of staged set `id`.
fn staged_name(id: u64) -> String {
    format!("{id:020}.sst")
}

/// What [`RocksStore::commit`] leaves to do once a batch is durable: table files to
/// ingest, in order, and staged sets to delete.
struct Committed {
    ingest: Vec<PathBuf>,
    drop: Vec<u64>,
}

/// Batches with fewer writes of main state than this go through the log and memtables:
/// a table file costs a few file-system syncs and compaction work of its own. The
/// environment variable `STATEFUN_INGEST_MIN_WRITES` overrides it (the crash tests set 1,
/// which also skips the size comparison in [`RocksStore::stage`], so every checkpoint
/// with a state change is ingested).
const INGEST_MIN: usize = 4096;

/// The column family of everything but the main state.
const META_FAMILY: &str = "meta";

/// The half-open key range of the main state: keys starting with the state byte.
fn state_range() -> ([u8; 1], [u8; 1]) {
    ([STATE], [STATE + 1])
}

/// Whether `key` is main state (lives in the state's column family).
fn is_state(key: &[u8]) -> bool {
    key.first() == Some(&STATE)
}

/// Whether the range `[from, to)` holds keys of main state.
fn reaches_state(from: &[u8], to: &[u8]) -> bool {
    let (first, end) = state_range();
    from < &end[..] && to > &first[..]
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
        // RocksDB's lock-free clock cache rather than its LRU cache: a point read past the
        // hot table looks up several blocks, and the LRU cache's hash chains and shard
        // mutex were 8.5 % of the worker at 10 M keys, this one 3.6 % (`perf`).
        // Entry size 0: the cache estimates it itself.
        let cache = Cache::new_hyper_clock_cache(options.block_cache_bytes.max(1 << 20), 0);
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
        let ingest_min = std::env::var("STATEFUN_INGEST_MIN_WRITES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(INGEST_MIN);
        let store = RocksStore {
            db,
            path: path.to_path_buf(),
            sync,
            ingest_min,
        };
        store.separate_families()?;
        store.finish_ingestion()?;
        Ok(store)
    }

    /// Opens the database at `path` read-only (for listing checkpoints while a job may run).
    ///
    /// A database whose last checkpoint's state file was not ingested when its process
    /// died (see [`RocksStore::write`]) is first opened for writing to complete it, when
    /// no process holds it: read-only, its metadata would be a checkpoint ahead of its
    /// state.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let store = Self::open_as_is(path)?;
        let (_, meta) = store.families()?;
        if !matches!(store.db.get_cf(meta, INGESTING), Ok(Some(_))) {
            return Ok(store);
        }
        drop(store);
        // Fails when a running job holds the database: it completed this when it opened
        // it, and its own ingestions come and go within a checkpoint write.
        if let Err(e) = RocksStore::open(path, &StateMemory::minimal()) {
            if !e.message.to_lowercase().contains("lock") {
                tracing::warn!(path = %path.display(), error = %e.message, "a checkpoint's state file is not yet ingested and the database cannot be opened to complete it: its state reads one checkpoint behind its metadata until a job opens it");
            }
        }
        Self::open_as_is(path)
    }

    /// Opens the database at `path` read-only, as it is on disk.
    fn open_as_is(path: &Path) -> Result<Self, StoreError> {
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
            ingest_min: usize::MAX,
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

    /// Completes the ingestion a crash interrupted: the batch that named the file is
    /// durable, so the file is part of the state (it is gone if the ingestion completed);
    /// any other staged file belongs to a batch that never became durable.
    fn finish_ingestion(&self) -> Result<(), StoreError> {
        let staging = self.path.join(STAGING);
        let (state, meta) = self.families()?;
        let named = self
            .db
            .get_cf(meta, INGESTING)
            .map_err(|e| self.error("reading", e))?;
        if let Some(names) = named {
            let files: Vec<PathBuf> = String::from_utf8_lossy(&names)
                .split('\n')
                .filter(|name| !name.is_empty())
                .map(|name| {
                    if name.contains('/') {
                        self.path.join(name)
                    } else {
                        staging.join(name)
                    }
                })
                .collect();
            // The files went in one after the other, each removed as it went in: a gone
            // file and every one before it are in. A file still there after the last gone
            // one goes in (again, if the crash came between its ingestion and its removal:
            // nothing newer was ingested after it, so its values are still the newest);
            // one before it must not (it would undo newer ones) and is deleted.
            let done = files.iter().rposition(|f| !f.exists()).map_or(0, |i| i + 1);
            for file in &files[..done] {
                let _ = std::fs::remove_file(file);
            }
            for file in &files[done..] {
                tracing::info!(file = %file.display(), "state database: completing the ingestion of a checkpoint's state that a crash interrupted");
                self.ingest(state, file)?;
            }
            self.db
                .delete_cf_opt(meta, INGESTING, &self.sync)
                .map_err(|e| self.error("writing", e))?;
        }
        if let Ok(entries) = std::fs::read_dir(&staging) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Moves the table file `file` into the state's family (RocksDB links it into the
    /// database, records it in its manifest, syncs both and then removes `file`).
    fn ingest(&self, state: &rocksdb::ColumnFamily, file: &Path) -> Result<(), StoreError> {
        let mut opts = rocksdb::IngestExternalFileOptions::default();
        opts.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(state, &opts, vec![file])
            .map_err(|e| self.error("ingesting a checkpoint's state into", e))
    }

    /// Whether the writes of main state in `batch`'s ops `range` are better written as a
    /// table file than through the log and memtables: at least `ingest_min` of them, a
    /// large part of the state, and no range deletion reaching the state among them.
    fn worth_a_table(
        &self,
        batch: &Batch,
        range: std::ops::Range<usize>,
        state: &rocksdb::ColumnFamily,
    ) -> bool {
        let (mut count, mut changed) = (0usize, 0usize);
        for op in batch.ops_in(range) {
            if let Op::DeleteRange(from, to) = op {
                if reaches_state(from, to) {
                    return false;
                }
            }
            if let Some((k, v)) = state_write(op) {
                count += 1;
                changed += k.len() + v.map_or(0, <[u8]>::len);
            }
        }
        if count < self.ingest_min.max(1) {
            return false;
        }
        // Each ingested file lands in level 0 (its keys overlap everything), and level 0
        // is merged into level 1 whole: cheap when a checkpoint changes a large part of
        // the state (a file per checkpoint is about what is stored), but a state ten
        // times the size of a checkpoint would be rewritten again and again — at 10 M
        // keys the log and memtables, which gather several checkpoints into one flush,
        // cost less (measured: 283 k vs 214 k records/s). Ingest when the changed values
        // are at least half of what the state holds on disk (compressed).
        if self.ingest_min > 1 {
            let stored = self
                .db
                .property_int_value_cf(state, "rocksdb.estimate-live-data-size")
                .ok()
                .flatten()
                .unwrap_or(0);
            if (changed as u64).saturating_mul(2) < stored {
                return false;
            }
        }
        true
    }

    /// Writes the writes of main state (puts and point deletions) among `batch`'s ops
    /// `range` to the table file `file` in `dir` (replacing it), in key order, the last
    /// write of a key winning; syncs the file and then `dir`, so that the file and its name
    /// are durable before a record names it (an open that finds a named file missing
    /// takes it as ingested).
    fn write_table(
        &self,
        dir: &str,
        file: &str,
        batch: &Batch,
        range: std::ops::Range<usize>,
    ) -> Result<PathBuf, StoreError> {
        // Already in strict key order (one log's changes: they are)?
        let mut last: Option<&[u8]> = None;
        let sorted = batch
            .ops_in(range.clone())
            .filter_map(state_write)
            .all(|(k, _)| last.replace(k).is_none_or(|l| l < k));
        let writes: Box<dyn Iterator<Item = StateWrite<'_>>> = if sorted {
            Box::new(batch.ops_in(range).filter_map(state_write))
        } else {
            // Stable: writes of one key stay in batch order, and the last one is kept.
            let mut all: Vec<StateWrite<'_>> =
                batch.ops_in(range).filter_map(state_write).collect();
            all.sort_by(|a, b| a.0.cmp(b.0));
            let mut kept: Vec<StateWrite<'_>> = Vec::with_capacity(all.len());
            for w in all {
                match kept.last_mut() {
                    Some(last) if last.0 == w.0 => *last = w,
                    _ => kept.push(w),
                }
            }
            Box::new(kept.into_iter())
        };
        let dir = self.path.join(dir);
        let io = |what: &str, e: std::io::Error| {
            StoreError::new(format!("cannot {what} {}: {e}", dir.display()))
        };
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| io("create", e))?;
            super::sync_dir(&self.path).map_err(|e| io("sync the directory holding", e))?;
        }
        let file = dir.join(file);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("clear", e)),
            _ => {}
        }
        let opts = table_file_options();
        let mut writer = rocksdb::SstFileWriter::create(&opts);
        let written = (|| {
            writer.open(&file)?;
            for (k, v) in writes {
                match v {
                    Some(v) => writer.put(k, v)?,
                    None => writer.delete(k)?,
                }
            }
            // Syncs the file.
            writer.finish()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&file);
            return Err(self.error("writing a checkpoint's state file in", e));
        }
        super::sync_dir(&dir).map_err(|e| io("sync", e))?;
        Ok(file)
    }

    /// Makes `batch` durable: everything but what goes into table files in one synced
    /// `WriteBatch`, together with the record naming those files ([`INGESTING`]) when
    /// there are any. Returns what is left to do: the files to ingest, in order, and the
    /// staged sets to delete.
    ///
    /// Ingestion gives a file's writes precedence over everything written before, so the
    /// batch's order decides which writes of main state go where: those before its first
    /// [`Op::ApplyStaged`] go into the `WriteBatch` (or, when [`RocksStore::worth_a_table`],
    /// a table file ingested first); each applied set's file follows; writes of main state
    /// after an applied set go into a table file ingested right after it.
    fn commit(&self, batch: &Batch) -> Result<Committed, StoreError> {
        // Looked up once, not per write (a batch holds a million).
        let (state, meta) = self.families()?;
        let n = batch.len();
        let applied: Vec<(usize, u64)> = batch
            .ops()
            .enumerate()
            .filter_map(|(i, op)| match op {
                Op::ApplyStaged(id) => Some((i, id)),
                _ => None,
            })
            .collect();
        let head = applied.first().map_or(n, |a| a.0);
        let mut ingest = Vec::new();
        let seqno = self.db.latest_sequence_number();
        let head_in_table = self.worth_a_table(batch, 0..head, state);
        if head_in_table {
            ingest.push(self.write_table(STAGING, &format!("{seqno:020}.sst"), batch, 0..head)?);
        }
        for (k, &(at, id)) in applied.iter().enumerate() {
            let file = self.path.join(STAGED).join(staged_name(id));
            if !file.exists() {
                return Err(StoreError::new(format!(
                    "{}: staged set {id} ({}) is missing; the state directory was changed under the job: restore it from a backup",
                    self.path.display(),
                    file.display()
                )));
            }
            ingest.push(file);
            let end = applied.get(k + 1).map_or(n, |a| a.0);
            let mut later = false;
            for op in batch.ops_in(at + 1..end) {
                match op {
                    Op::DeleteRange(from, to) if reaches_state(from, to) => {
                        return Err(StoreError::new(format!(
                            "{}: a batch deletes a range of state after applying staged set {id}; such a batch cannot be written",
                            self.path.display()
                        )))
                    }
                    _ => later |= state_write(op).is_some(),
                }
            }
            if later {
                let name = format!("{seqno:020}-{k}.sst");
                ingest.push(self.write_table(STAGING, &name, batch, at + 1..end)?);
            }
        }
        // Room for every key and value and each record's header (type, family, two
        // lengths): a checkpoint's batch is tens of MB, and growing it copies it.
        let room = if ingest.is_empty() {
            batch.bytes() + 16 * n
        } else {
            4096
        };
        let mut wb = WriteBatch::with_capacity_bytes(room + 12);
        let (first, end) = state_range();
        let family = |k: &[u8]| if is_state(k) { state } else { meta };
        let mut drop = Vec::new();
        for (i, op) in batch.ops().enumerate() {
            match op {
                // In a table file.
                _ if (head_in_table || i >= head) && state_write(op).is_some() => {}
                Op::Put(k, v) => wb.put_cf(family(k), k, v),
                Op::Delete(k) => wb.delete_cf(family(k), k),
                // A range goes to each family that holds keys in it, and only to those.
                Op::DeleteRange(from, to) => {
                    if reaches_state(from, to) {
                        wb.delete_range_cf(state, from, to);
                    }
                    if from < &first[..] || to > &end[..] {
                        wb.delete_range_cf(meta, from, to);
                    }
                }
                Op::ApplyStaged(_) => {}
                Op::DropStaged(id) => drop.push(id),
            }
        }
        if !ingest.is_empty() {
            let names: Vec<String> = ingest
                .iter()
                .map(|f| {
                    f.strip_prefix(&self.path)
                        .unwrap_or(f)
                        .display()
                        .to_string()
                })
                .collect();
            wb.put_cf(meta, INGESTING, names.join("\n").as_bytes());
        }
        self.db
            .write_opt(wb, &self.sync)
            .map_err(|e| self.error("writing a checkpoint to", e))?;
        Ok(Committed { ingest, drop })
    }

    /// Finishes a committed batch: ingests its files in order, then forgets the record
    /// naming them and deletes the staged sets it dropped.
    fn complete(&self, committed: Committed) -> Result<(), StoreError> {
        let (state, meta) = self.families()?;
        if !committed.ingest.is_empty() {
            for file in &committed.ingest {
                self.ingest(state, file)?;
            }
            // Not synced: should the deletion be lost, the next open finds the files gone
            // (ingested) and deletes it again.
            self.db
                .delete_cf(meta, INGESTING)
                .map_err(|e| self.error("writing", e))?;
        }
        for id in committed.drop {
            let file = self.path.join(STAGED).join(staged_name(id));
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::new(format!(
                        "cannot delete {}: {e}; it holds a checkpoint's changes that were rolled back",
                        file.display()
                    )))
                }
                _ => {}
            }
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
        Ok(if is_state(key) { state } else { meta })
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

    /// Applies `batch` atomically and durably. A batch with many writes of main state
    /// (a checkpoint) writes them once, as a table file that is then ingested, instead of
    /// through the write-ahead log, the memtables and a flush (each value written twice,
    /// and a skip-list insert per value: most of a checkpoint's cost); so do the staged
    /// sets it applies. The files are staged and synced first; then the rest of the batch
    /// is written, synced, together with a record naming the files ([`INGESTING`]) — the
    /// point at which the batch is durable — and then the files are ingested
    /// ([`RocksStore::commit`], [`RocksStore::complete`]). A crash between the two is
    /// completed when the database is next opened ([`RocksStore::finish_ingestion`]); a
    /// crash before leaves staged files nothing names, removed then.
    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let committed = self.commit(&batch)?;
        if !committed.ingest.is_empty() {
            crate::failpoint::hit("checkpoint-ingesting");
        }
        self.complete(committed)
    }

    fn stages(&self, writes: usize) -> bool {
        writes >= self.ingest_min.max(1)
    }

    fn stage(&self, id: u64, changes: &Batch) -> Result<(), StoreError> {
        if changes.ops().any(|op| state_write(op).is_none()) {
            return Err(StoreError::new(format!(
                "{}: a staged set holds only puts and deletions of state",
                self.path.display()
            )));
        }
        self.write_table(STAGED, &staged_name(id), changes, 0..changes.len())
            .map(|_| ())
    }

    fn staged(&self) -> Result<Vec<u64>, StoreError> {
        let dir = self.path.join(STAGED);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::new(format!(
                    "cannot list {}: {e}",
                    dir.display()
                )))
            }
        };
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let id = name.to_str()?.strip_suffix(".sst")?;
                (id.len() == 20).then(|| id.parse().ok()).flatten()
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
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

/// A write of main state in a batch: its key and value (`None`: a deletion).
type StateWrite<'a> = (&'a [u8], Option<&'a [u8]>);

/// `op` if it is a put or point deletion of main state.
fn state_write(op: Op<'_>) -> Option<StateWrite<'_>> {
    match op {
        Op::Put(k, v) if is_state(k) => Some((k, Some(v))),
        Op::Delete(k) if is_state(k) => Some((k, None)),
        _ => None,
    }
}

/// The options of the table files a checkpoint's state is ingested from: the state
/// family's compression and bloom filters.
fn table_file_options() -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_block_based_table_factory(&table_options());
    opts
}

/// The table format of the state (its column family's files and the files a checkpoint
/// ingests): bloom filters, so a read of a key that is not there (every first message to
/// an instance) skips files; and a hash index in each data block, so a point read finds
/// its key in the block with one probe instead of a binary search over restart points
/// (at 10 M keys a tenth of the worker's time was that search). The index blocks have
/// a restart point every 16 entries instead of at each: a point read's binary search over
/// a file's index (one entry per data block, thousands, out of the processor's caches)
/// then takes four fewer steps, each a cache miss, and ends in a short sequential scan
/// (10 M keys, `perf` samples of the worker: the search's `GetRestartKey` and comparisons
/// 10.8 % → 3.6 %, the scan's decoding and copies +3 %, about 4 % of the worker saved).
/// Data blocks of 2 KiB instead of 4: with keys in random order most point reads past the
/// hot table miss the block cache, and each miss reads and decompresses a whole block for
/// one value (LZ4 alone 9.5 % of the worker at 10 M keys); half the block, half that work,
/// for an index twice as long (10 M keys scrambled: 120 / 125 k → 150 / 138 k records/s;
/// in order, where blocks are reused, 190 k → 185 k, within the noise).
fn table_options() -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
    table.set_data_block_hash_ratio(0.75);
    table.set_index_block_restart_interval(16);
    table.set_block_size(2048);
    table
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
    let mut table = table_options();
    table.set_block_cache(cache);
    // Index and filter blocks stay in table-reader memory (about 1.5 bytes per key), not
    // in the block cache: in the cache, data blocks evict them, and a state larger than
    // the cache then re-reads megabytes of filter per lookup.
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

    /// Every entry of both families, in key order.
    fn everything(store: &RocksStore) -> Entries {
        let mut all = store.scan(b"s").unwrap();
        all.extend(store.scan(b"").unwrap());
        all.sort();
        all
    }

    /// Entries in the memtables of the state's family.
    fn state_memtable_entries(store: &RocksStore) -> u64 {
        let (state, _) = store.families().unwrap();
        store
            .db
            .property_int_value_cf(state, "rocksdb.num-entries-active-mem-table")
            .unwrap()
            .unwrap()
    }

    fn open_ingesting(path: &Path, ingest_min: usize) -> RocksStore {
        let mut store = RocksStore::open(path, &StateMemory::minimal()).unwrap();
        store.ingest_min = ingest_min;
        store
    }

    /// Batches of main state (out of order, a key written twice, deletions) beside
    /// metadata writes and range deletions of metadata.
    fn mixed_batches() -> Vec<Batch> {
        let mut first = Batch::default();
        for i in 0..100u32 {
            first.put(
                format!("s{i:03}").into_bytes(),
                state_value(u64::MAX, i as u8),
            );
        }
        first.put(b"m1".to_vec(), b"one".to_vec());
        first.put(b"m2".to_vec(), b"two".to_vec());
        let mut second = Batch::default();
        second.put(b"s050".to_vec(), state_value(u64::MAX, 200));
        second.delete(b"s003".to_vec());
        second.put(b"s200".to_vec(), state_value(7, 1));
        second.delete_range(b"m".to_vec(), b"m2".to_vec());
        second.put(b"s050".to_vec(), state_value(u64::MAX, 201));
        second.put(b"m3".to_vec(), b"three".to_vec());
        second.delete(b"s999".to_vec());
        let mut wipe = Batch::default();
        wipe.delete_range(b"s05".to_vec(), b"s06".to_vec());
        wipe.put(b"s055".to_vec(), state_value(u64::MAX, 9));
        vec![first, second, wipe]
    }

    #[test]
    fn ingested_batches_read_like_logged_ones() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ingesting = open_ingesting(a.path(), 1);
        let logging = open_ingesting(b.path(), usize::MAX);
        let batches = mixed_batches();
        for (n, batch) in batches.into_iter().enumerate() {
            ingesting.write(batch.clone()).unwrap();
            logging.write(batch).unwrap();
            assert_eq!(
                everything(&ingesting),
                everything(&logging),
                "after batch {n}"
            );
            if n < 2 {
                // The state went into table files, not the log and memtables.
                assert_eq!(state_memtable_entries(&ingesting), 0, "after batch {n}");
            }
            if n == 1 {
                let mut out = Vec::new();
                assert!(ingesting.get_into(b"s050", &mut out).unwrap());
                assert_eq!(
                    out,
                    state_value(u64::MAX, 201),
                    "the last write of a key wins"
                );
            }
        }
        assert!(state_memtable_entries(&logging) > 0);
        // The range deletion of state (a wipe) went through the log, in batch order.
        assert!(state_memtable_entries(&ingesting) > 0);
        let mut out = Vec::new();
        assert!(ingesting.get_into(b"s049", &mut out).unwrap());
        assert_eq!(out, state_value(u64::MAX, 49));
        assert!(!ingesting.get_into(b"s050", &mut out).unwrap());
        assert!(!ingesting.get_into(b"s003", &mut out).unwrap());
        assert!(ingesting.get_into(b"s055", &mut out).unwrap());
        assert!(!ingesting.get_into(b"s056", &mut out).unwrap());
        assert!(!ingesting.get_into(b"m1", &mut out).unwrap());
        assert!(ingesting.get_into(b"m3", &mut out).unwrap());
        let staging = a.path().join(STAGING);
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        // Reopened, both read the same.
        let expected = everything(&logging);
        drop(ingesting);
        assert_eq!(everything(&open_ingesting(a.path(), 1)), expected);
    }

    #[test]
    fn an_ingestion_a_crash_interrupted_completes_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_ingesting(dir.path(), 1);
        let [first, second, _] = <[Batch; 3]>::try_from(mixed_batches()).ok().unwrap();
        store.write(first).unwrap();
        let before = everything(&store);
        // The process dies after the batch became durable, before its file is ingested...
        let committed = store.commit(&second).unwrap();
        assert_eq!(committed.ingest.len(), 1);
        // ...and a later batch was staged, never committed.
        let mut lost = Batch::default();
        lost.put(b"s300".to_vec(), state_value(u64::MAX, 3));
        store
            .write_table(STAGING, "stray.sst", &lost, 0..1)
            .unwrap();
        drop(store);
        let staging = dir.path().join(STAGING);
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 2);

        // What the same batches give written whole.
        let reference = tempfile::tempdir().unwrap();
        let logging = open_ingesting(reference.path(), usize::MAX);
        let [first, second, _] = <[Batch; 3]>::try_from(mixed_batches()).ok().unwrap();
        logging.write(first).unwrap();
        logging.write(second).unwrap();
        let expected = everything(&logging);
        assert_ne!(before, expected);

        // A read-only open (listing, rescaling) sees the whole batch, as a restart does.
        let read_only = RocksStore::open_read_only(dir.path()).unwrap();
        assert_eq!(everything(&read_only), expected);
        drop(read_only);
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        let store = open_ingesting(dir.path(), 1);
        assert_eq!(everything(&store), expected);
        let mut out = Vec::new();
        assert!(!store.get_into(INGESTING, &mut out).unwrap());
    }

    /// Staged sets, a batch applying them among writes of state before and after, and
    /// what the in-memory store (which applies a batch's writes one after the other)
    /// holds after staging the sets and writing the batch.
    fn staged_sets_and_batches() -> (Vec<(u64, Batch)>, Batch, Entries) {
        let mut five = Batch::default();
        five.put(b"s001".to_vec(), state_value(u64::MAX, 5));
        five.put(b"s002".to_vec(), state_value(u64::MAX, 5));
        five.delete(b"s003".to_vec());
        let mut seven = Batch::default();
        // Out of order, a key twice: the last write wins.
        seven.put(b"s009".to_vec(), state_value(u64::MAX, 7));
        seven.put(b"s002".to_vec(), state_value(u64::MAX, 7));
        seven.put(b"s009".to_vec(), state_value(u64::MAX, 8));
        let mut nine = Batch::default();
        nine.put(b"s001".to_vec(), state_value(u64::MAX, 9));
        let mut batch = Batch::default();
        batch.put(b"s001".to_vec(), state_value(u64::MAX, 1));
        batch.put(b"s003".to_vec(), state_value(u64::MAX, 1));
        batch.put(b"m1".to_vec(), b"one".to_vec());
        batch.apply_staged(5);
        batch.put(b"s002".to_vec(), state_value(u64::MAX, 6));
        batch.put(b"s004".to_vec(), state_value(u64::MAX, 6));
        batch.apply_staged(7);
        batch.delete(b"s009".to_vec());
        batch.delete_range(b"m".to_vec(), b"m1".to_vec());
        batch.drop_staged(9);
        batch.drop_staged(11);
        let sets = vec![(5, five), (7, seven), (9, nine)];
        let memory = crate::checkpoint::store::MemoryStore::default();
        memory.stage_sets(1);
        for (id, set) in &sets {
            memory.stage(*id, set).unwrap();
        }
        memory.write(batch.clone()).unwrap();
        (sets, batch, memory.dump().into_iter().collect())
    }

    #[test]
    fn staged_sets_apply_where_the_batch_puts_them() {
        let (sets, batch, expected) = staged_sets_and_batches();
        for ingest_min in [1, usize::MAX] {
            let dir = tempfile::tempdir().unwrap();
            let store = open_ingesting(dir.path(), ingest_min);
            assert!(store.stages(1) == (ingest_min == 1));
            for (id, set) in &sets {
                store.stage(*id, set).unwrap();
            }
            assert_eq!(store.staged().unwrap(), vec![5, 7, 9]);
            // Invisible until applied.
            let mut out = Vec::new();
            assert!(!store.get_into(b"s001", &mut out).unwrap());
            // A batch applying a set that is not there fails whole.
            let mut missing = Batch::default();
            missing.put(b"m9".to_vec(), b"nine".to_vec());
            missing.apply_staged(6);
            let e = store.write(missing).unwrap_err();
            assert!(e.message.contains("staged set 6"), "{e}");
            assert!(!store.get_into(b"m9", &mut out).unwrap());
            store.write(batch.clone()).unwrap();
            assert_eq!(everything(&store), expected, "ingest_min {ingest_min}");
            assert!(store.staged().unwrap().is_empty());
            assert_eq!(
                std::fs::read_dir(dir.path().join(STAGING)).unwrap().count(),
                0
            );
            drop(store);
            assert_eq!(everything(&open_ingesting(dir.path(), 1)), expected);
        }
    }

    #[test]
    fn applying_staged_sets_a_crash_interrupted_completes_when_opened() {
        let (sets, batch, expected) = staged_sets_and_batches();
        // The process dies after `k` of the batch's files went in; `back` is one of them
        // whose removal the crash undid (the last one in, or the first one while the
        // last one is gone): the result is the batch's, whatever the point.
        for k in 0..=5 {
            for back in [None, Some(k.max(1) - 1), Some(0)] {
                if back.is_some_and(|b| b >= k) {
                    continue;
                }
                let what = format!("{k} files in, {back:?} back");
                let dir = tempfile::tempdir().unwrap();
                let store = open_ingesting(dir.path(), 1);
                for (id, set) in &sets {
                    store.stage(*id, set).unwrap();
                }
                let committed = store.commit(&batch).unwrap();
                assert_eq!(committed.ingest.len(), 5, "head, 5, after 5, 7, after 7");
                let (state, _) = store.families().unwrap();
                let mut copy = None;
                for (i, file) in committed.ingest[..k].iter().enumerate() {
                    if back == Some(i) {
                        copy = Some((file.clone(), std::fs::read(file).unwrap()));
                    }
                    store.ingest(state, file).unwrap();
                }
                if let Some((file, bytes)) = copy {
                    std::fs::write(file, bytes).unwrap();
                }
                drop(store);
                let read_only = RocksStore::open_read_only(dir.path()).unwrap();
                assert_eq!(everything(&read_only), expected, "{what}");
                drop(read_only);
                let store = open_ingesting(dir.path(), 1);
                assert_eq!(everything(&store), expected, "{what}");
                let mut out = Vec::new();
                assert!(!store.get_into(INGESTING, &mut out).unwrap(), "{what}");
                // Set 9 was dropped by the batch but is still on disk: the backend's restore
                // drops what no checkpoint names (see `DurableBackend::restore`).
                assert_eq!(store.staged().unwrap(), vec![9], "{what}");
            }
        }
    }

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
