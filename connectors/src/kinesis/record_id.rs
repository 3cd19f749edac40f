//! Deterministic record ids for the Kinesis egress (`recordIds: true`).
//!
//! Kinesis records have no headers (only data, partition key and explicit
//! hash key), so an id has to travel in the data. By default the egress
//! writes exactly the bytes a function produced, as upstream StateFun does.
//! With the statefun-rs extension `recordIds: true` on an
//! `io.statefun.kinesis.v1/egress`, every record's data is framed as follows
//! (format version 1):
//!
//! | bytes   | content                                              |
//! |---------|------------------------------------------------------|
//! | 0       | `0x00`                                               |
//! | 1..3    | `SF` (`0x53 0x46`)                                   |
//! | 3       | format version, `0x01`                               |
//! | 4..20   | the record id, 16 bytes                              |
//! | 20..    | the payload, byte for byte as the function wrote it  |
//!
//! The leading zero byte never starts UTF-8 text or JSON, nor a protobuf
//! message (field number 0 is invalid), so framed data is easy to tell from
//! the payloads StateFun functions usually write. A later format would
//! change the version byte; [`split_record_id`] only accepts version 1.
//!
//! # The id
//!
//! A record is identified by the egress, the worker that produced it, the
//! checkpoint whose outbox holds it, its content, and how many records with
//! the same content that egress received before it in that checkpoint on that
//! worker (its occurrence). A job with durable state (`--state-dir`) replays an
//! undelivered checkpoint's records after a crash — the same records, though
//! not necessarily in the order of the first attempt — so a record that is
//! sent again carries the id of its first attempt, and two different records
//! (equal payloads included) never share one. Consumers drop a record whose id
//! they have already seen.
//!
//! Exactly ([`RecordId::new`], [`content_digest`]), all integers big-endian,
//! strings as a `u32` byte length followed by their UTF-8 bytes, and `H` the
//! 128-bit FNV-1a hash:
//!
//! ```text
//! digest = H(stream, partition key, explicit hash key ("" if none), data as u32 length + bytes)
//! id     = H("statefun-rs kinesis record id v1" 0x00, egress id, worker: u64,
//!            checkpoint id: u64, digest: 16 bytes, occurrence: u64)
//! ```
//!
//! The content, not the position, enters the id because the engine's first
//! delivery of a checkpoint sees its records ordered by epoch, while a replay
//! sees them in the order the worker logged them; both see the same records.
//!
//! Without `--state-dir` nothing is replayed after a crash; ids then combine
//! the egress id with a value unique to the sink's run instead of a
//! checkpoint, and only identify re-sends within the run.

use std::fmt;

/// Bytes in front of the payload of a framed record.
pub const RECORD_ID_PREFIX_LEN: usize = 20;

const MAGIC: [u8; 3] = [0x00, b'S', b'F'];
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"statefun-rs kinesis record id v1\0";

const FNV_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const FNV_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

/// 128-bit FNV-1a.
struct Fnv(u128);

impl Fnv {
    fn new() -> Fnv {
        Fnv(FNV_OFFSET)
    }

    fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// A length-prefixed byte string.
    fn eat_str(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.eat(&len.to_be_bytes());
        self.eat(bytes);
    }

    fn finish(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

/// The digest of a record's content that enters its [`RecordId`]: the
/// stream it is written to, its partition key, its explicit hash key (empty
/// if none) and its data (the function's payload).
pub fn content_digest(
    stream: &str,
    partition_key: &str,
    explicit_hash_key: &str,
    data: &[u8],
) -> [u8; 16] {
    let mut h = Fnv::new();
    h.eat_str(stream.as_bytes());
    h.eat_str(partition_key.as_bytes());
    h.eat_str(explicit_hash_key.as_bytes());
    h.eat_str(data);
    h.finish()
}

/// The 16-byte id of an egress record (see the [module docs](self)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub [u8; 16]);

impl RecordId {
    /// The id of the `occurrence`-th record (from 0) with content `digest`
    /// ([`content_digest`]) that egress `egress` received for checkpoint
    /// `checkpoint` on worker `worker`.
    ///
    /// ```
    /// use statefun_connectors::kinesis::{content_digest, RecordId};
    /// let digest = content_digest("stream", "key", "", b"payload");
    /// let a = RecordId::new("example/out", 0, 42, digest, 0);
    /// assert_eq!(a, RecordId::new("example/out", 0, 42, digest, 0));
    /// assert_ne!(a, RecordId::new("example/out", 0, 42, digest, 1));
    /// assert_ne!(a, RecordId::new("example/out", 1, 42, digest, 0));
    /// assert_ne!(a, RecordId::new("example/other", 0, 42, digest, 0));
    /// ```
    pub fn new(
        egress: &str,
        worker: u64,
        checkpoint: u64,
        digest: [u8; 16],
        occurrence: u64,
    ) -> RecordId {
        let mut h = Fnv::new();
        h.eat(DOMAIN);
        h.eat_str(egress.as_bytes());
        h.eat(&worker.to_be_bytes());
        h.eat(&checkpoint.to_be_bytes());
        h.eat(&digest);
        h.eat(&occurrence.to_be_bytes());
        RecordId(h.finish())
    }

    /// The 16 bytes of the id.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for RecordId {
    /// Lower-case hex, 32 digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

/// Frames `payload` with `id` (format version 1): what the egress writes as
/// a record's data when `recordIds` is on.
///
/// ```
/// use statefun_connectors::kinesis::{frame_record, split_record_id, RecordId};
/// let id = RecordId::new("example/out", 0, 1, [0; 16], 0);
/// let data = frame_record(id, b"hello");
/// assert_eq!(split_record_id(&data), Some((id, &b"hello"[..])));
/// ```
pub fn frame_record(id: RecordId, payload: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(RECORD_ID_PREFIX_LEN + payload.len());
    data.extend_from_slice(&MAGIC);
    data.push(VERSION);
    data.extend_from_slice(&id.0);
    data.extend_from_slice(payload);
    data
}

/// Splits the data of a record written with `recordIds: true` into its id and
/// the payload the function wrote; `None` when `data` does not start with a
/// version-1 prefix (e.g. a record written without `recordIds`).
///
/// A consumer that keeps the ids it has seen drops the duplicates an
/// at-least-once delivery may write after a crash:
///
/// ```
/// use std::collections::HashSet;
/// use statefun_connectors::kinesis::split_record_id;
///
/// /// The payloads of `records` (Kinesis record data), each once.
/// fn deduplicate<'a>(records: &[&'a [u8]], seen: &mut HashSet<[u8; 16]>) -> Vec<&'a [u8]> {
///     let mut out = Vec::new();
///     for data in records {
///         match split_record_id(data) {
///             Some((id, payload)) => {
///                 if seen.insert(*id.as_bytes()) {
///                     out.push(payload);
///                 }
///             }
///             None => out.push(*data), // not framed: cannot tell duplicates
///         }
///     }
///     out
/// }
///
/// # use statefun_connectors::kinesis::{frame_record, RecordId};
/// let first = frame_record(RecordId::new("example/out", 0, 7, [1; 16], 0), b"a");
/// let second = frame_record(RecordId::new("example/out", 0, 7, [1; 16], 1), b"a");
/// let mut seen = HashSet::new();
/// let records = [&first[..], &second[..], &first[..]];
/// assert_eq!(deduplicate(&records, &mut seen), vec![&b"a"[..], &b"a"[..]]);
/// ```
pub fn split_record_id(data: &[u8]) -> Option<(RecordId, &[u8])> {
    if data.len() < RECORD_ID_PREFIX_LEN || data[..3] != MAGIC || data[3] != VERSION {
        return None;
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&data[4..RECORD_ID_PREFIX_LEN]);
    Some((RecordId(id), &data[RECORD_ID_PREFIX_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_fixed_by_their_inputs() {
        // Fixed values guard the documented construction: consumers may
        // recompute ids, and ids must survive upgrades of a running job.
        let digest = content_digest("s", "k", "", b"v");
        let id = RecordId::new("example/out", 1, 2, digest, 3);
        assert_eq!(id, RecordId::new("example/out", 1, 2, digest, 3));
        assert_eq!(id.to_string(), "be6523c82fc40fdb082e29a956ccd973");
        // The hash is FNV-1a 128 (published test vector for "a").
        let mut h = Fnv::new();
        h.eat(b"a");
        assert_eq!(
            RecordId(h.finish()).to_string(),
            "d228cb696f1a8caf78912b704e4a8964"
        );
    }

    #[test]
    fn ids_differ_in_every_field() {
        let mut seen = HashSet::new();
        for egress in ["a/b", "a/c", "a/bb"] {
            for worker in 0..4 {
                for checkpoint in [0, 1, 1 << 40, u64::MAX] {
                    for content in 0..50u32 {
                        let digest = content_digest("s", "k", "", &content.to_be_bytes());
                        for occurrence in 0..10 {
                            assert!(
                                seen.insert(RecordId::new(egress, worker, checkpoint, digest, occurrence)),
                                "collision at {egress} {worker} {checkpoint} {content} {occurrence}"
                            );
                        }
                    }
                }
            }
        }
        // Strings are length-prefixed: moving bytes between fields changes the digest.
        assert_ne!(
            content_digest("ab", "c", "", b""),
            content_digest("a", "bc", "", b"")
        );
        assert_ne!(
            content_digest("s", "k", "1", b""),
            content_digest("s", "k", "", b"1")
        );
        let d = content_digest("s", "k", "", b"");
        assert_ne!(
            RecordId::new("a", 0, 0, d, 0),
            RecordId::new("a\0", 0, 0, d, 0)
        );
    }

    #[test]
    fn frames_round_trip_and_foreign_data_is_not_mistaken() {
        let id = RecordId::new("x/y", 3, 9, [7; 16], 27);
        for payload in [&b""[..], b"plain text", &[0u8; 64][..]] {
            let data = frame_record(id, payload);
            assert_eq!(data.len(), RECORD_ID_PREFIX_LEN + payload.len());
            assert_eq!(&data[..4], &[0, b'S', b'F', 1]);
            assert_eq!(split_record_id(&data), Some((id, payload)));
        }
        let framed = frame_record(id, b"p");
        assert_eq!(split_record_id(&framed[..RECORD_ID_PREFIX_LEN - 1]), None);
        let mut v2 = framed.clone();
        v2[3] = 2;
        assert_eq!(split_record_id(&v2), None, "unknown versions are refused");
        for foreign in [
            &b"{\"json\": true, \"padding\": 1234}"[..],
            b"\x0a\x05hello world, protobuf",
        ] {
            assert_eq!(split_record_id(foreign), None);
        }
    }
}
