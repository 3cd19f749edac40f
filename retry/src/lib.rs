//! The retry schedule of statefun-rs: exponential backoff and jitter.
//!
//! Every client that retries — the Kinesis readers and writers (throttled
//! shards), the remote-function client (timeouts, 5xx answers) — waits
//! between attempts by this schedule. The jitter matters more than the
//! exponent: many callers that failed together (every shard reader of a
//! throttled stream, every address behind a restarting function server)
//! must not retry together, so each pause is scaled by an independent random
//! factor. It is a crate of its own because those clients live in crates that
//! must not depend on each other (the remote client must not pull in Kafka
//! or the AWS SDK), and a retry schedule written twice drifts apart.
//!
//! ```
//! use std::time::Duration;
//! use statefun_retry::{exponential, jitter};
//! let base = exponential(Duration::from_millis(100), Duration::from_secs(2), 3);
//! assert_eq!(base, Duration::from_millis(800));
//! let pause = jitter(base, 0.5, 1.0);
//! assert!(pause >= Duration::from_millis(400) && pause <= Duration::from_millis(800));
//! ```

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `base × 2^attempt`, at most `cap` (attempt 0 is `base`).
pub fn exponential(base: Duration, cap: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16)).min(cap)
}

/// `d` scaled by a random factor in `[low, high]`.
///
/// The factor is drawn from the standard library's randomly keyed hasher
/// over a process-wide counter: independent between calls, threads and
/// processes, and no dependency on a random-number crate.
pub fn jitter(d: Duration, low: f64, high: f64) -> Duration {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let draw = RandomState::new().hash_one(DRAWS.fetch_add(1, Ordering::Relaxed));
    let unit = (draw % 1_000_001) as f64 / 1_000_000.0;
    d.mul_f64(low + (high - low) * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_to_its_cap() {
        let b = |a| exponential(Duration::from_millis(100), Duration::from_secs(2), a);
        assert_eq!(b(0), Duration::from_millis(100));
        assert_eq!(b(1), Duration::from_millis(200));
        assert_eq!(b(4), Duration::from_millis(1600));
        assert_eq!(b(5), Duration::from_secs(2));
        assert_eq!(b(40), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_in_its_range_and_varies() {
        let d = Duration::from_millis(1000);
        let draws: Vec<Duration> = (0..200).map(|_| jitter(d, 0.75, 1.25)).collect();
        assert!(draws
            .iter()
            .all(|p| *p >= Duration::from_millis(750) && *p <= Duration::from_millis(1250)));
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(
            distinct.len() > 100,
            "draws must differ: {}",
            distinct.len()
        );
    }
}
