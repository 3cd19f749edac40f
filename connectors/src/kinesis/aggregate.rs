//! KPL-aggregated records: telling them from plain records and splitting them
//! into their sub-records (pure; the shard readers in `source.rs` call it).
//!
//! Producers using the Kinesis Producer Library (KPL) pack many user records
//! into one Kinesis record to save on per-record costs. Such a record's data is
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)
//! ```
//!
//! where `AggregatedRecord` holds a table of partition keys, a table of
//! explicit hash keys and the records, each naming its keys by index into the
//! tables (see [`deaggregate`] for the fields). Flink's Kinesis consumer, which
//! Apache StateFun reads Kinesis with, splits them as the KCL does; so does
//! this ingress:
//!
//! * data that does not start with the magic, or is shorter than magic + MD5
//!   (20 bytes), is a plain record, handed out as it is;
//! * data that starts with the magic is an aggregate, and must be a good one:
//!   its MD5 must match, its protobuf must decode and every key index must be
//!   in its table. Otherwise it is a bad record ([`AggregateError`] says why),
//!   which the source hands to the ingress's `badRecords` policy whole;
//! * a good aggregate becomes its sub-records, in order, each with its own
//!   partition key (the function id) and explicit hash key; an aggregate with
//!   no records becomes nothing.
//!
//! # Positions inside an aggregate
//!
//! A shard's position is a sequence number plus, inside an aggregate, a
//! sub-sequence number: the index of the last sub-record handed out. The
//! invariant the source keeps, which makes a restore repeat and lose nothing:
//!
//! > After handing out sub-record `i` of an aggregate of `n` with sequence
//! > number `s`, the shard's position is `(s, i)` while `i < n - 1`, and `s`
//! > alone once `i = n - 1` — exactly the position of a plain record `s`.
//! > A position is only ever moved by handing out one record, so every
//! > position a checkpoint sees names exactly the sub-records handed out
//! > before it, whatever the batch boundaries.
//!
//! A restore from `(s, i)` reads the shard `AT_SEQUENCE_NUMBER` `s` and drops
//! the sub-records `0..=i` of record `s` ([`expand`]'s `handed_out_through`),
//! so it resumes with sub-record `i + 1`; a restore from `s` alone reads
//! `AFTER_SEQUENCE_NUMBER` `s`, as for plain records. A bad aggregate and an
//! empty one count as one whole record: the first is handed out as one record
//! (position `s`), the second hands out nothing, so the position stays on the
//! record before it and a restore reads it again, to the same nothing.

use std::fmt;

use md5::{Digest, Md5};
use prost::Message as _;

/// The four bytes that open every KPL-aggregated record's data.
pub const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 digest that closes an aggregated record.
const DIGEST_LEN: usize = 16;

/// `AggregatedRecord` of the KPL's `messages.proto` (proto2).
#[derive(Clone, PartialEq, prost::Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<Record>,
}

/// `Record`: `required` fields are `optional` here so that a missing one is
/// told apart from a zero and reported.
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(uint64, optional, tag = "1")]
    partition_key_index: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "3")]
    data: Option<Vec<u8>>,
    /// Decoded (so a malformed tag is a malformed aggregate, as for the KCL)
    /// but not delivered: functions see no per-record tags.
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

/// `Tag`.
#[derive(Clone, PartialEq, prost::Message)]
struct Tag {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// One user record of an aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubRecord {
    /// Its partition key: the function id it is routed to.
    pub partition_key: String,
    /// Its explicit hash key, when the producer gave one.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Vec<u8>,
}

/// Why data that starts with [`KPL_MAGIC`] is not a usable aggregate. Its
/// text starts with `KPL aggregate:` and is the reason a bad record is logged
/// with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AggregateError {
    /// The trailing MD5 is not the digest of the protobuf bytes (a truncated
    /// or corrupted record).
    Md5Mismatch,
    /// The protobuf bytes do not decode as an `AggregatedRecord`.
    Undecodable(String),
    /// A record lacks a field the format requires.
    MissingField {
        /// The record's index in the aggregate.
        record: usize,
        /// The field.
        field: &'static str,
    },
    /// A record names a key past the end of its table.
    KeyIndex {
        /// The record's index in the aggregate.
        record: usize,
        /// `partition key` or `explicit hash key`.
        table: &'static str,
        /// The index it names.
        index: u64,
        /// How many keys the table holds.
        len: usize,
    },
}

impl fmt::Display for AggregateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregateError::Md5Mismatch => write!(
                f,
                "KPL aggregate: MD5 mismatch (the record starts with the KPL magic but its \
                 checksum does not match: truncated or corrupted)"
            ),
            AggregateError::Undecodable(e) => write!(
                f,
                "KPL aggregate: the protobuf AggregatedRecord does not decode ({e})"
            ),
            AggregateError::MissingField { record, field } => {
                write!(f, "KPL aggregate: sub-record {record} has no `{field}`")
            }
            AggregateError::KeyIndex {
                record,
                table,
                index,
                len,
            } => write!(
                f,
                "KPL aggregate: sub-record {record} names {table} {index}, but the {table} \
                 table holds {len}"
            ),
        }
    }
}

impl std::error::Error for AggregateError {}

/// Splits a KPL-aggregated record's data into its sub-records, in order.
///
/// `Ok(None)`: `data` is a plain record (no magic, or shorter than magic +
/// MD5). `Ok(Some(records))`: a good aggregate (possibly with no records).
/// `Err`: it starts with the magic but is not a good aggregate.
///
/// ```
/// use statefun_connectors::kinesis::deaggregate;
/// assert_eq!(deaggregate(b"plain data"), Ok(None));
/// // The magic, an empty AggregatedRecord, and the MD5 of no bytes.
/// let empty = [
///     0xF3, 0x89, 0x9A, 0xC2, 0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80,
///     0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e,
/// ];
/// assert_eq!(deaggregate(&empty), Ok(Some(vec![])));
/// ```
pub fn deaggregate(data: &[u8]) -> Result<Option<Vec<SubRecord>>, AggregateError> {
    if data.len() < KPL_MAGIC.len() + DIGEST_LEN || !data.starts_with(&KPL_MAGIC) {
        return Ok(None);
    }
    let (body, digest) =
        data[KPL_MAGIC.len()..].split_at(data.len() - KPL_MAGIC.len() - DIGEST_LEN);
    if Md5::digest(body).as_slice() != digest {
        return Err(AggregateError::Md5Mismatch);
    }
    let aggregate =
        AggregatedRecord::decode(body).map_err(|e| AggregateError::Undecodable(e.to_string()))?;
    let AggregatedRecord {
        partition_key_table,
        explicit_hash_key_table,
        records,
    } = aggregate;
    let key = |record: usize, table: &'static str, keys: &[String], index: u64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| keys.get(i))
            .cloned()
            .ok_or(AggregateError::KeyIndex {
                record,
                table,
                index,
                len: keys.len(),
            })
    };
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let missing = |field| AggregateError::MissingField { record: i, field };
            let pk_index = r
                .partition_key_index
                .ok_or_else(|| missing("partition_key_index"))?;
            let data = r.data.ok_or_else(|| missing("data"))?;
            Ok(SubRecord {
                partition_key: key(i, "partition key", &partition_key_table, pk_index)?,
                explicit_hash_key: r
                    .explicit_hash_key_index
                    .map(|e| key(i, "explicit hash key", &explicit_hash_key_table, e))
                    .transpose()?,
                data,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// One record for the source to hand out, and where the shard stands once it
/// has been.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    /// The function id: the record's (or sub-record's) partition key; `None`
    /// when it is empty, and for a bad aggregate (so that the engine's
    /// bad-record policy takes it; see the source's module docs).
    pub key: Option<Vec<u8>>,
    /// The data.
    pub data: Vec<u8>,
    /// The sub-record's index in its aggregate; `None` for a plain record and
    /// a bad aggregate.
    pub sub_sequence_number: Option<u64>,
    /// The sub-record's explicit hash key.
    pub explicit_hash_key: Option<String>,
    /// The sub-sequence number of the shard's position after this piece:
    /// `Some(i)` while sub-records of its aggregate are still to come, `None`
    /// once the whole Kinesis record has been handed out (see the module docs).
    pub resume_sub: Option<u64>,
    /// Why the record is a bad aggregate, if it is one.
    pub rejected: Option<AggregateError>,
}

/// What one Kinesis record (partition key and data) becomes: itself, its
/// sub-records, or a bad record.
///
/// `handed_out_through` is the sub-sequence number a restore resumes after,
/// given for the one record whose sequence number the restored position names:
/// sub-records up to it were handed out before the checkpoint and are dropped.
pub(crate) fn expand(
    partition_key: Option<&str>,
    data: Vec<u8>,
    handed_out_through: Option<u64>,
) -> Vec<Piece> {
    let key = |k: Option<&str>| k.filter(|k| !k.is_empty()).map(|k| k.as_bytes().to_vec());
    match deaggregate(&data) {
        Ok(None) => vec![Piece {
            key: key(partition_key),
            data,
            sub_sequence_number: None,
            explicit_hash_key: None,
            resume_sub: None,
            rejected: None,
        }],
        Err(e) => vec![Piece {
            key: key(partition_key),
            data,
            sub_sequence_number: None,
            explicit_hash_key: None,
            resume_sub: None,
            rejected: Some(e),
        }],
        Ok(Some(records)) => {
            let last = records.len().saturating_sub(1);
            records
                .into_iter()
                .enumerate()
                .filter(|(i, _)| handed_out_through.is_none_or(|t| *i as u64 > t))
                .map(|(i, r)| Piece {
                    key: key(Some(&r.partition_key)),
                    data: r.data,
                    sub_sequence_number: Some(i as u64),
                    explicit_hash_key: r.explicit_hash_key,
                    resume_sub: (i < last).then_some(i as u64),
                    rejected: None,
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An encoder independent of the decoder's structs: protobuf written field by
    // field with prost's wire-level helpers, and the MD5 appended.

    fn varint(n: u64, out: &mut Vec<u8>) {
        prost::encoding::encode_varint(n, out);
    }

    fn field_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(tag << 3 | 2), out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn field_varint(tag: u32, n: u64, out: &mut Vec<u8>) {
        varint(u64::from(tag << 3), out);
        varint(n, out);
    }

    /// A sub-record as the test writes it: key indices and data.
    struct R<'a> {
        pk: u64,
        ehk: Option<u64>,
        data: &'a [u8],
    }

    fn body(pks: &[&str], ehks: &[&str], records: &[R<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for k in pks {
            field_bytes(1, k.as_bytes(), &mut out);
        }
        for k in ehks {
            field_bytes(2, k.as_bytes(), &mut out);
        }
        for r in records {
            let mut rec = Vec::new();
            field_varint(1, r.pk, &mut rec);
            if let Some(e) = r.ehk {
                field_varint(2, e, &mut rec);
            }
            field_bytes(3, r.data, &mut rec);
            field_bytes(3, &rec, &mut out);
        }
        out
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = KPL_MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&Md5::digest(body));
        out
    }

    fn sub(pk: &str, ehk: Option<&str>, data: &[u8]) -> SubRecord {
        SubRecord {
            partition_key: pk.into(),
            explicit_hash_key: ehk.map(Into::into),
            data: data.to_vec(),
        }
    }

    #[test]
    fn md5_is_the_standard_one() {
        // RFC 1321's test vector: the encoder above and the decoder agree on MD5 itself.
        assert_eq!(
            Md5::digest(b"abc").as_slice(),
            [
                0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0, 0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1,
                0x7f, 0x72
            ]
        );
    }

    #[test]
    fn an_aggregate_splits_into_its_records_in_order_with_their_keys() {
        let data = framed(&body(
            &["alice", "bob"],
            &[],
            &[
                R {
                    pk: 0,
                    ehk: None,
                    data: b"a1",
                },
                R {
                    pk: 1,
                    ehk: None,
                    data: b"b1",
                },
                R {
                    pk: 0,
                    ehk: None,
                    data: b"",
                },
            ],
        ));
        assert_eq!(
            deaggregate(&data),
            Ok(Some(vec![
                sub("alice", None, b"a1"),
                sub("bob", None, b"b1"),
                sub("alice", None, b""),
            ]))
        );
    }

    #[test]
    fn explicit_hash_keys_are_looked_up_per_record() {
        let big = "170141183460469231731687303715884105728";
        let data = framed(&body(
            &["k"],
            &["7", big],
            &[
                R {
                    pk: 0,
                    ehk: Some(1),
                    data: b"x",
                },
                R {
                    pk: 0,
                    ehk: None,
                    data: b"y",
                },
                R {
                    pk: 0,
                    ehk: Some(0),
                    data: b"z",
                },
            ],
        ));
        assert_eq!(
            deaggregate(&data),
            Ok(Some(vec![
                sub("k", Some(big), b"x"),
                sub("k", None, b"y"),
                sub("k", Some("7"), b"z"),
            ]))
        );
    }

    #[test]
    fn an_empty_aggregate_has_no_records() {
        assert_eq!(deaggregate(&framed(&[])), Ok(Some(vec![])));
        assert_eq!(
            deaggregate(&framed(&body(&["k"], &[], &[]))),
            Ok(Some(vec![]))
        );
        assert_eq!(expand(Some("k"), framed(&[]), None), vec![]);
    }

    #[test]
    fn a_corrupt_md5_is_a_bad_record() {
        let mut data = framed(&body(
            &["k"],
            &[],
            &[R {
                pk: 0,
                ehk: None,
                data: b"v",
            }],
        ));
        let last = data.len() - 1;
        data[last] ^= 1;
        assert_eq!(deaggregate(&data), Err(AggregateError::Md5Mismatch));
        // A flipped payload bit is caught the same way.
        let mut data = framed(&body(
            &["k"],
            &[],
            &[R {
                pk: 0,
                ehk: None,
                data: b"v",
            }],
        ));
        data[6] ^= 0x20;
        assert_eq!(deaggregate(&data), Err(AggregateError::Md5Mismatch));
        assert!(AggregateError::Md5Mismatch
            .to_string()
            .starts_with("KPL aggregate: MD5 mismatch"));
    }

    #[test]
    fn a_truncated_aggregate_is_a_bad_record() {
        let data = framed(&body(
            &["key"],
            &[],
            &[R {
                pk: 0,
                ehk: None,
                data: b"value",
            }],
        ));
        // Cut anywhere from 20 bytes on: the magic is there, the MD5 is not the body's.
        for len in 20..data.len() {
            assert_eq!(
                deaggregate(&data[..len]),
                Err(AggregateError::Md5Mismatch),
                "cut at {len}"
            );
        }
        // Shorter than magic + MD5: a plain record (the KCL's rule).
        for len in 0..20 {
            assert_eq!(deaggregate(&data[..len]), Ok(None), "cut at {len}");
        }
    }

    #[test]
    fn a_good_md5_over_bad_protobuf_is_a_bad_record() {
        // A length-delimited field whose length runs past the end.
        let err = deaggregate(&framed(&[0x0a, 0x05, b'a'])).unwrap_err();
        assert!(matches!(err, AggregateError::Undecodable(_)), "{err:?}");
        assert!(err.to_string().starts_with("KPL aggregate:"), "{err}");
        // A partition key that is not UTF-8.
        let mut bad = Vec::new();
        field_bytes(1, &[0xff, 0xfe], &mut bad);
        assert!(matches!(
            deaggregate(&framed(&bad)),
            Err(AggregateError::Undecodable(_))
        ));
    }

    #[test]
    fn key_indices_out_of_their_tables_and_missing_fields_are_bad_records() {
        let one = |r: R<'_>, ehks: &[&str]| deaggregate(&framed(&body(&["k"], ehks, &[r])));
        assert_eq!(
            one(
                R {
                    pk: 1,
                    ehk: None,
                    data: b"v"
                },
                &[]
            ),
            Err(AggregateError::KeyIndex {
                record: 0,
                table: "partition key",
                index: 1,
                len: 1
            })
        );
        let err = one(
            R {
                pk: 0,
                ehk: Some(0),
                data: b"v",
            },
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "KPL aggregate: sub-record 0 names explicit hash key 0, but the explicit hash key \
             table holds 0"
        );
        // A record without data, and one without a partition key index.
        let mut rec = Vec::new();
        field_varint(1, 0, &mut rec);
        let mut agg = Vec::new();
        field_bytes(1, b"k", &mut agg);
        field_bytes(3, &rec, &mut agg);
        assert_eq!(
            deaggregate(&framed(&agg)),
            Err(AggregateError::MissingField {
                record: 0,
                field: "data"
            })
        );
        let mut rec = Vec::new();
        field_bytes(3, b"v", &mut rec);
        let mut agg = Vec::new();
        field_bytes(1, b"k", &mut agg);
        field_bytes(3, &rec, &mut agg);
        assert_eq!(
            deaggregate(&framed(&agg)),
            Err(AggregateError::MissingField {
                record: 0,
                field: "partition_key_index"
            })
        );
    }

    #[test]
    fn data_that_merely_starts_like_the_magic_is_plain() {
        // A prefix of the magic, then anything: no aggregate.
        for prefix in 0..KPL_MAGIC.len() {
            let mut data = KPL_MAGIC[..prefix].to_vec();
            data.extend_from_slice(&[0u8; 40]);
            assert_eq!(deaggregate(&data), Ok(None), "prefix of {prefix} bytes");
        }
        // The magic's first three bytes and a different fourth.
        let mut data = vec![0xF3, 0x89, 0x9A, 0xC3];
        data.extend_from_slice(&framed(&[])[4..]);
        assert_eq!(deaggregate(&data), Ok(None));
        // Exactly the magic, or the magic and a few bytes: too short to be one.
        assert_eq!(deaggregate(&KPL_MAGIC), Ok(None));
        let plain = expand(Some("k"), KPL_MAGIC.to_vec(), None);
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(plain[0].data, KPL_MAGIC);
        assert_eq!(plain[0].sub_sequence_number, None);
    }

    fn three() -> Vec<u8> {
        framed(&body(
            &["a", "b", ""],
            &["99"],
            &[
                R {
                    pk: 0,
                    ehk: None,
                    data: b"0",
                },
                R {
                    pk: 1,
                    ehk: Some(0),
                    data: b"1",
                },
                R {
                    pk: 2,
                    ehk: None,
                    data: b"2",
                },
            ],
        ))
    }

    #[test]
    fn expand_sets_sub_sequence_numbers_and_the_position_after_each_piece() {
        let pieces = expand(Some("outer"), three(), None);
        let view: Vec<_> = pieces
            .iter()
            .map(|p| {
                (
                    p.key.clone(),
                    p.data.clone(),
                    p.sub_sequence_number,
                    p.explicit_hash_key.clone(),
                    p.resume_sub,
                )
            })
            .collect();
        assert_eq!(
            view,
            vec![
                (Some(b"a".to_vec()), b"0".to_vec(), Some(0), None, Some(0)),
                (
                    Some(b"b".to_vec()),
                    b"1".to_vec(),
                    Some(1),
                    Some("99".into()),
                    Some(1)
                ),
                // An empty sub-record key is no key, as for plain records; the last
                // piece completes the record: the position is the sequence number alone.
                (None, b"2".to_vec(), Some(2), None, None),
            ]
        );
        // A plain record: the outer key, no sub-sequence, the whole record.
        let plain = expand(Some("outer"), b"v".to_vec(), None);
        assert_eq!(
            plain,
            vec![Piece {
                key: Some(b"outer".to_vec()),
                data: b"v".to_vec(),
                sub_sequence_number: None,
                explicit_hash_key: None,
                resume_sub: None,
                rejected: None,
            }]
        );
        assert_eq!(expand(Some(""), b"v".to_vec(), None)[0].key, None);
    }

    #[test]
    fn a_restore_inside_an_aggregate_drops_exactly_what_was_handed_out() {
        let all = expand(Some("k"), three(), None);
        for through in 0..3u64 {
            let rest = expand(Some("k"), three(), Some(through));
            assert_eq!(rest, all[through as usize + 1..], "through {through}");
        }
        // Every cut: what the first read handed out up to and including a
        // piece, then what a restore from the position after it reads.
        for cut in 0..all.len() {
            let position = all[cut].resume_sub;
            let resumed = match position {
                Some(t) => expand(Some("k"), three(), Some(t)),
                None => vec![], // AFTER_SEQUENCE_NUMBER: the record is not read again
            };
            let mut seen: Vec<_> = all[..=cut].to_vec();
            seen.extend(resumed);
            assert_eq!(seen, all, "cut after piece {cut}");
        }
    }

    #[test]
    fn a_bad_aggregate_is_one_piece_with_its_key_data_and_reason() {
        let mut data = three();
        data[10] ^= 1;
        let pieces = expand(Some("k"), data.clone(), None);
        assert_eq!(
            pieces,
            vec![Piece {
                key: Some(b"k".to_vec()),
                data,
                sub_sequence_number: None,
                explicit_hash_key: None,
                resume_sub: None,
                rejected: Some(AggregateError::Md5Mismatch),
            }]
        );
    }
}
