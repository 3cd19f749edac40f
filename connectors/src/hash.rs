//! The one 64-bit hash whose values are part of the runtime's contract.
//!
//! Which worker reads a Kafka partition or a Kinesis shard, and which key group
//! an address id belongs to (in the engine, where persisted state lives), are
//! computed from it independently by every worker of every process, and
//! checkpoints are restored by them. So the hash must give the same value in
//! every process, on every platform and with every Rust version, forever.
//! `std`'s `DefaultHasher` promises none of that (its algorithm and keys may
//! change between releases, and `RandomState` is seeded per process);
//! FNV-1a is fixed by its specification, fast for the short inputs hashed here
//! (topic names, shard ids, address ids), and needs no dependency.
//!
//! It lives in this crate because the engine depends on the connectors, not the
//! other way round. `kinesis::record_id` has a 128-bit FNV-1a of its own: a
//! different function (other offset basis and prime), used incrementally for
//! record ids.

/// 64-bit FNV-1a of `bytes` (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`).
///
/// ```
/// use statefun_connectors::hash::fnv1a;
/// assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
/// assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
/// assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
/// ```
#[inline]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
