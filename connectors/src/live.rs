//! Process-wide lists of the gauges live sources keep, for the engine's `/metrics`.
//!
//! The engine opens sources through [`crate::Source`], which knows no metrics; a source that
//! wants a gauge scraped (a Kafka partition's lag, a Kinesis shard's `MillisBehindLatest`)
//! registers an `Arc` of it in a static [`Live`] list and keeps the `Arc` while it reads. The
//! list holds only weak references, so a source that is dropped (the job stopped, a
//! `--restart` replaced it, a shard was read to its end) leaves the list with it: nothing to
//! unregister, nothing stale to scrape.

use std::sync::{Arc, Mutex, Weak};

/// A list of live gauges of type `T`.
pub(crate) struct Live<T> {
    all: Mutex<Vec<Weak<T>>>,
}

impl<T> Live<T> {
    /// An empty list (`const`, for a `static`).
    pub(crate) const fn new() -> Self {
        Live {
            all: Mutex::new(Vec::new()),
        }
    }

    /// Lists `gauge` while an `Arc` of it lives.
    pub(crate) fn add(&self, gauge: &Arc<T>) {
        if let Ok(mut all) = self.all.lock() {
            all.retain(|g| g.strong_count() > 0);
            all.push(Arc::downgrade(gauge));
        }
    }

    /// `read` of every live gauge, in registration order.
    pub(crate) fn read<R>(&self, mut read: impl FnMut(&T) -> R) -> Vec<R> {
        match self.all.lock() {
            Ok(mut all) => {
                all.retain(|g| g.strong_count() > 0);
                all.iter()
                    .filter_map(Weak::upgrade)
                    .map(|g| read(&g))
                    .collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_gauge_leaves_the_list() {
        static LIST: Live<u32> = Live::new();
        let a = Arc::new(1);
        let b = Arc::new(2);
        LIST.add(&a);
        LIST.add(&b);
        assert_eq!(LIST.read(|v| *v), [1, 2]);
        drop(a);
        assert_eq!(LIST.read(|v| *v), [2]);
        drop(b);
        assert!(LIST.read(|v| *v).is_empty());
    }
}
