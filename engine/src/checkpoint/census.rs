//! Counting a durable store's state per function type, off the worker.
//!
//! The durable backend cannot count its values as they change: a write does not know
//! whether the key was stored before without a read the function never asked for, and the
//! counts would have to survive restores, rollbacks and rescales. So a thread counts the
//! main state of the store instead — one pass over its state keys, in chunks — and the
//! worker reports the last complete pass.
//!
//! Why the pass is paced the way it is: on a store of 100 M values a pass takes tens of
//! seconds of one core, which must not be taken from the workers. A pass starts only when
//! asked (the function operator asks only while `/metrics` is served), at most one at a time
//! per worker, and the next one waits [`MIN_GAP`] or ten times the last pass's duration,
//! whichever is longer, so counting uses at most a tenth of a core however large the state
//! (1 M values in RocksDB: a pass of 0.2–0.3 s, so one every 2–3 s). The pass reads without
//! filling RocksDB's block cache, so it does not evict what the workers read.
//! What it counts is the state of the last checkpoint merged into the main state: changes
//! since then (in the worker's windows, or a checkpoint not yet complete everywhere) show in
//! the next pass after they are merged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::durable::{state_chunk, state_function, STATE_VALUE_HEADER};
use super::store::Store;
use crate::state::{FunctionState, StateCensus};

/// The least time between the end of a pass and the start of the next.
pub(crate) const MIN_GAP: Duration = Duration::from_secs(1);

/// Entries read per chunk of a pass.
const CHUNK: usize = 16 * 1024;

/// A worker's census: the last complete pass, and whether one is running.
///
/// Dropping it stops a running pass after its current chunk and waits for the thread: the
/// thread holds the store open, and a restart (`--restart`) must be able to open it again.
#[derive(Default)]
pub(crate) struct Census {
    progress: Arc<Mutex<Progress>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Census {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Default)]
struct Progress {
    running: bool,
    /// When the next pass may start (`None`: now).
    next_at: Option<Instant>,
    last: Option<StateCensus>,
    /// A failed pass's error, logged once.
    warned: bool,
}

impl Census {
    /// The last complete count of `store`, starting a pass in the background when one is
    /// due (see the module docs).
    pub(crate) fn poll<S: Store>(&mut self, store: &Arc<S>, worker: usize) -> Option<StateCensus> {
        let Ok(mut progress) = self.progress.lock() else {
            return None;
        };
        let due = progress.next_at.is_none_or(|at| Instant::now() >= at);
        if !progress.running && due {
            progress.running = true;
            let store = store.clone();
            let shared = self.progress.clone();
            let stop = self.stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("state-census-{worker}"))
                .spawn(move || {
                    let started = Instant::now();
                    let counted = count(&*store, &stop);
                    let took = started.elapsed();
                    if let Ok(mut progress) = shared.lock() {
                        progress.running = false;
                        progress.next_at = Some(Instant::now() + MIN_GAP.max(took * 10));
                        match counted {
                            Ok(by_function) => {
                                let values: u64 = by_function.iter().map(|f| f.values).sum();
                                tracing::debug!(worker, values, seconds = took.as_secs_f64(),
                                    "counted the stored state");
                                progress.last = Some(StateCensus {
                                    by_function,
                                    counted_at_ms: crate::clock::Clock::now_ms(),
                                });
                            }
                            Err(e) if !progress.warned && !stop.load(Ordering::Relaxed) => {
                                progress.warned = true;
                                tracing::warn!(worker, error = %e,
                                    "cannot count the stored state for metrics; the state metrics keep their last count");
                            }
                            Err(_) => {}
                        }
                    }
                });
            match spawned {
                Ok(thread) => {
                    // The previous pass's thread has finished (`running` was false).
                    if let Some(done) = self.thread.replace(thread) {
                        let _ = done.join();
                    }
                }
                Err(_) => {
                    progress.running = false;
                    progress.next_at = Some(Instant::now() + MIN_GAP);
                }
            }
        }
        progress.last.clone()
    }
}

/// Values and value bytes per function type in the main state of `store`, in name order;
/// expired values (not yet dropped by compaction) are not counted. Gives up between chunks
/// once `stop` is set.
pub(crate) fn count<S: Store>(store: &S, stop: &AtomicBool) -> Result<Vec<FunctionState>, String> {
    let now_ms = crate::clock::Clock::now_ms();
    let mut by: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err("stopped: the worker's state closed".into());
        }
        let chunk = state_chunk(store, after.as_deref(), CHUNK)?;
        for (key, value) in &chunk {
            let (Some(function), Some(header)) =
                (state_function(key), value.get(..STATE_VALUE_HEADER))
            else {
                continue;
            };
            let expires = header
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            if expires <= now_ms {
                continue;
            }
            let bytes = (value.len() - STATE_VALUE_HEADER) as u64;
            match by.get_mut(function) {
                Some((n, b)) => {
                    *n += 1;
                    *b += bytes;
                }
                None => {
                    by.insert(function.to_vec(), (1, bytes));
                }
            }
        }
        match chunk.last() {
            Some((key, _)) if chunk.len() == CHUNK => after = Some(key.clone()),
            _ => break,
        }
    }
    Ok(by
        .into_iter()
        .map(|(f, (values, bytes))| FunctionState {
            function: String::from_utf8_lossy(&f).into_owned(),
            values,
            bytes,
        })
        .collect())
}
