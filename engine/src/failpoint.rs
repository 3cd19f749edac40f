//! Fail points for crash tests: `STATEFUN_FAILPOINT=<name>:<n>` makes the
//! process abort (as abruptly as `kill -9`: no destructors, no flushes) the
//! `n`-th time it reaches the named point.
//!
//! The points sit where a crash is most telling for exactly-once delivery:
//!
//! | name                      | where                                               |
//! |---------------------------|-----------------------------------------------------|
//! | `checkpoint-before-write` | a worker is about to hand its checkpoint batch over |
//! | `checkpoint-writing`      | the background writer is about to write a batch (the worker runs on) |
//! | `checkpoint-staged`       | several workers: a checkpoint's changes are a synced staged file; its batch is not written |
//! | `checkpoint-ingesting`    | a batch's metadata is durable and names its state file; the file is not yet ingested |
//! | `checkpoint-after-write`  | the batch is durable; sinks do not know yet         |
//! | `rescale-before-commit`   | every new database of a rescale is built; no commit marker yet |
//! | `rescale-mid-commit`      | a rescale's old databases are moved aside; the new ones not yet in place |
//! | `sink-before-commit`      | a sink wrote (and flushed) records, not its marker  |
//! | `sink-after-commit`       | a sink committed; the outbox is not yet dropped     |
//!
//! Without the variable a check is one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("STATEFUN_FAILPOINT").ok()?;
            let (name, at) = spec.rsplit_once(':').unwrap_or((spec.as_str(), "1"));
            let at = at.parse().unwrap_or(1);
            Some(Armed {
                name: name.to_string(),
                at,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Whether any fail point is armed (callers may prepare, e.g. flush, first).
pub fn enabled() -> bool {
    armed().is_some()
}

/// Aborts the process if `name` is armed and this is its `n`-th hit.
pub fn hit(name: &str) {
    if let Some(a) = armed() {
        if a.name == name && a.hits.fetch_add(1, Ordering::Relaxed) + 1 == a.at {
            eprintln!("fail point `{name}` reached: aborting");
            std::process::abort();
        }
    }
}
