//! Key groups: how an address id is placed on a worker.
//!
//! Like Flink and upstream StateFun, ids are hashed into a fixed number of
//! *key groups*, and key groups are assigned to workers in contiguous ranges.
//! State is stored under its key group, so a later rescale moves whole key
//! groups instead of rehashing every key. The hash must never change: it
//! decides where persisted state lives. It is 64-bit FNV-1a over the UTF-8
//! bytes of the id ([`statefun_connectors::hash::fnv1a`], the hash that also
//! places Kafka partitions and Kinesis shards on workers), which is fast for
//! short ids and stable across platforms and Rust versions (unlike `std`'s
//! `DefaultHasher`).
//!
//! Routing uses the id only (not the function type), so all functions with
//! the same id live together and messages between them never cross workers.

pub use statefun_connectors::hash::fnv1a;

/// The number of key groups. Fixed: changing it relocates all persisted state.
pub const KEY_GROUPS: u32 = 4096;

/// The key group of an address id.
///
/// ```
/// use statefun_engine::keygroup::{key_group, KEY_GROUPS};
/// assert!(key_group("alice") < KEY_GROUPS);
/// assert_eq!(key_group("alice"), key_group("alice"));
/// ```
#[inline]
pub fn key_group(id: &str) -> u32 {
    // Mix the high bits in: FNV's low bits are weak for short inputs.
    let h = fnv1a(id.as_bytes());
    ((h ^ (h >> 32)) % u64::from(KEY_GROUPS)) as u32
}

/// The worker (out of `peers`) that owns a key group: contiguous ranges, as in Flink.
///
/// ```
/// use statefun_engine::keygroup::{worker_for_key_group, KEY_GROUPS};
/// assert_eq!(worker_for_key_group(0, 4), 0);
/// assert_eq!(worker_for_key_group(KEY_GROUPS - 1, 4), 3);
/// ```
#[inline]
pub fn worker_for_key_group(key_group: u32, peers: usize) -> usize {
    (key_group as usize * peers) / KEY_GROUPS as usize
}

/// The worker (out of `peers`) that owns an address id.
#[inline]
pub fn worker_for_id(id: &str, peers: usize) -> usize {
    worker_for_key_group(key_group(id), peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_contiguous_and_balanced() {
        for peers in [1usize, 2, 3, 4, 7, 16] {
            let mut counts = vec![0usize; peers];
            let mut last = 0;
            for kg in 0..KEY_GROUPS {
                let w = worker_for_key_group(kg, peers);
                assert!(w >= last, "ranges must be contiguous");
                last = w;
                counts[w] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "peers={peers}: {counts:?}");
        }
    }

    #[test]
    fn ids_spread_over_key_groups() {
        let mut hits = vec![0u32; KEY_GROUPS as usize];
        for i in 0..100_000 {
            hits[key_group(&i.to_string()) as usize] += 1;
        }
        let empty = hits.iter().filter(|&&h| h == 0).count();
        assert_eq!(empty, 0);
        assert!(
            *hits.iter().max().unwrap() < 60,
            "skewed: {}",
            hits.iter().max().unwrap()
        );
    }

    #[test]
    fn hash_is_fixed() {
        // Persisted state depends on these values never changing.
        assert_eq!(key_group("alice"), key_group("alice"));
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }
}
