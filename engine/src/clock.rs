//! The epoch clock: dataflow time derived from the wall clock.
//!
//! Every worker computes `epoch = now / interval` from its own clock, so
//! workers agree on epochs without talking, and a worker that owns no
//! partition still advances time. Epochs are the granularity of progress:
//! egress records of epoch `e` are released once `e` is complete everywhere.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Maps wall-clock time to epochs of a fixed length.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    interval_ms: u64,
}

impl Clock {
    /// A clock with epochs of `interval` (at least 1 ms).
    pub fn new(interval: Duration) -> Self {
        Clock {
            interval_ms: (interval.as_millis() as u64).max(1),
        }
    }

    /// Milliseconds since the Unix epoch.
    #[inline]
    pub fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// The epoch containing `now_ms`.
    ///
    /// ```
    /// use statefun_engine::clock::Clock;
    /// let c = Clock::new(std::time::Duration::from_millis(10));
    /// assert_eq!(c.epoch_at(1_234), 123);
    /// ```
    #[inline]
    pub fn epoch_at(&self, now_ms: u64) -> u64 {
        now_ms / self.interval_ms
    }

    /// The current epoch.
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.epoch_at(Self::now_ms())
    }

    /// Time from `now_ms` until the next epoch begins.
    pub fn until_next_epoch(&self, now_ms: u64) -> Duration {
        let next = (now_ms / self.interval_ms + 1) * self.interval_ms;
        Duration::from_millis(next - now_ms)
    }
}
