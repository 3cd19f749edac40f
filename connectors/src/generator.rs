//! The generator ingress: synthetic records for benchmarks and smoke tests.
//!
//! It is a throughput benchmark source, so the per-record work is kept to one
//! small allocation (the value; keys are inline); everything else is precomputed.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use statefun_module::GeneratorIngress;
use statefun_sdk::TypeName;

use crate::codec::{
    encode_primitive_from_text, BOOL_TYPENAME, DOUBLE_TYPENAME, FLOAT_TYPENAME, INT_TYPENAME,
    LONG_TYPENAME, STRING_TYPENAME,
};
use crate::source::{decode_position, encode_position};
use crate::{
    ConnectorError, RecordKey, RecordMetadata, Source, SourceRecord, SourceStats, SourceStatus,
};

const INGRESS: &str = "generator ingress";
/// The `kind` of generator positions.
pub(crate) const GENERATOR_POSITION: &str = "generator";

/// The configuration of a generator ingress.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    /// The ingress id.
    pub id: TypeName,
    /// The type name of the generated values; decides their content (see
    /// [`GeneratorSource`]).
    pub value_type: String,
    /// The number of distinct keys (function ids `0`..`keys`); `0` is taken as 1.
    pub keys: u64,
    /// Records per second over all workers; `0` means as fast as possible.
    pub rate: f64,
    /// Records over all workers; `0` means unbounded.
    pub count: u64,
    /// The size of string and raw values in characters/bytes (100 is the
    /// usual default).
    pub value_size: usize,
    /// Whether string and raw values begin with the record's due time (see
    /// [`GeneratorSource`]); ignored for number values and for values shorter
    /// than [`GeneratorIngress::STAMP_DIGITS`].
    pub stamp: bool,
    /// Whether record `s` goes to the id at place `s % keys` of a fixed permutation of
    /// the ids ([`key_of`]) rather than to id `s % keys`.
    pub scrambled_keys: bool,
}

/// The multiplier [`key_of`] scrambles keys with: 1 for keys in order; else the first
/// number from 0.618 · `keys` up that shares no factor with `keys`, so that `i ↦ i · m
/// mod keys` is a permutation of `0..keys` and consecutive `i` land far apart.
///
/// ```
/// use statefun_connectors::generator::{key_multiplier, key_of};
/// assert_eq!(key_multiplier(1000, false), 1);
/// let m = key_multiplier(1000, true);
/// let mut seen: Vec<u64> = (0..1000).map(|s| key_of(s, 1000, m)).collect();
/// assert_ne!(seen[..3], [0, 1, 2]);
/// seen.sort();
/// assert_eq!(seen, (0..1000).collect::<Vec<_>>());
/// ```
pub fn key_multiplier(keys: u64, scrambled: bool) -> u64 {
    if !scrambled || keys <= 2 {
        return 1;
    }
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    // keys - 1 shares no factor with keys: the search ends below it.
    let mut m = ((keys as f64 * 0.618_033_988_75) as u64).clamp(1, keys - 1);
    while gcd(m, keys) != 1 {
        m += 1;
    }
    m
}

/// The key (an id in `0..keys`) of sequence number `s`, with `multiplier` from
/// [`key_multiplier`]: every run of `keys` consecutive sequence numbers covers every id
/// once, in order or scrambled.
#[inline]
pub fn key_of(s: u64, keys: u64, multiplier: u64) -> u64 {
    let place = s % keys;
    if multiplier == 1 {
        return place;
    }
    match place.checked_mul(multiplier) {
        Some(p) => p % keys,
        None => (u128::from(place) * u128::from(multiplier) % u128::from(keys)) as u64,
    }
}

/// A source of synthetic records.
///
/// Worker `w` of `p` produces the global sequence numbers `w, w + p, w + 2p, …`
/// (below `count` unless it is 0), so the workers together produce every
/// sequence number exactly once without coordinating. The key of sequence `s`
/// is the decimal text of `s % keys`, which spreads load evenly over
/// `keys` function instances.
///
/// Values by `value_type`:
/// * `io.statefun.types/string`: a `StringWrapper` of `value_size` ASCII
///   characters (the same for every record);
/// * `io.statefun.types/int` / `long`: the sequence number (truncated to `i32`
///   for `int`); `float`/`double`: the sequence number as a float;
///   `bool`: whether it is odd — so every primitive value decodes;
/// * any other type: `value_size` raw bytes.
///
/// With `rate > 0` this worker is paced at `rate / p` records per second,
/// measured from its first poll. After a stall it catches up (bounded per poll
/// by `max`), so the long-run rate holds and latency measurements include the
/// backlog instead of hiding it (no coordinated omission).
///
/// With `stamp`, the first [`GeneratorIngress::STAMP_DIGITS`] characters of
/// each string or raw value are the record's due time in microseconds since
/// the Unix epoch, zero-padded: with a `rate`, the time its pacing schedule
/// gives it (so a record that waited behind a stall shows the wait); without
/// one, the time of the poll that made it. A function (or a remote function
/// server on the same machine) subtracts it from its own clock for an
/// end-to-end latency.
///
/// It can resume from a checkpoint: the position is the next sequence number
/// (and the record count), so a resumed generator continues the sequence
/// without repeating or skipping a number. Pacing starts afresh at the seek.
pub struct GeneratorSource {
    id: TypeName,
    /// The next sequence number this worker produces.
    next: u64,
    /// The first sequence number of this worker (its index): positions of
    /// this worker are `first + k * stride`.
    first: u64,
    stride: u64,
    /// Exclusive bound on sequence numbers; `u64::MAX` when unbounded.
    end: u64,
    keys: u64,
    /// See [`key_multiplier`].
    key_multiplier: u64,
    value: ValueKind,
    /// Seconds between two records of this worker; `None` = unpaced.
    interval: Option<f64>,
    /// When pacing started (the first poll after opening or seeking).
    started: Option<Instant>,
    /// `started` in microseconds since the Unix epoch, for stamps.
    started_unix_us: u64,
    /// Records produced since `started`: what pacing measures against.
    paced: u64,
    stats: SourceStats,
}

/// The position of a [`GeneratorSource`], inside the envelope of
/// [`encode_position`] with kind [`GENERATOR_POSITION`].
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneratorPosition {
    /// The next sequence number of the worker.
    next: u64,
    /// Records the worker produced before the checkpoint.
    records: u64,
}

/// How values are made.
enum ValueKind {
    /// The same bytes for every record.
    Fixed(Vec<u8>),
    /// These bytes with the due time's digits written from `at` on.
    Stamped { template: Vec<u8>, at: usize },
    /// `IntWrapper` of the sequence number truncated to `i32`.
    Int,
    /// `LongWrapper` of the sequence number.
    Long,
    /// `FloatWrapper` of the sequence number.
    Float,
    /// `DoubleWrapper` of the sequence number.
    Double,
    /// `BooleanWrapper`: odd sequence numbers are `true`.
    Bool,
}

impl ValueKind {
    /// Encodes the value of sequence `s`: proto3 wrappers with field 1, and
    /// like prost, nothing at all for a zero/false value.
    fn make(&self, s: u64, due_us: u64) -> Vec<u8> {
        fn wrap(tag: u8, bytes: &[u8], zero: bool) -> Vec<u8> {
            if zero {
                return Vec::new();
            }
            let mut v = Vec::with_capacity(1 + bytes.len());
            v.push(tag);
            v.extend_from_slice(bytes);
            v
        }
        match self {
            ValueKind::Fixed(bytes) => bytes.clone(),
            ValueKind::Stamped { template, at } => {
                let mut v = template.clone();
                let mut n = due_us;
                for digit in v[*at..*at + GeneratorIngress::STAMP_DIGITS]
                    .iter_mut()
                    .rev()
                {
                    *digit = b'0' + (n % 10) as u8;
                    n /= 10;
                }
                v
            }
            ValueKind::Int => {
                let x = s as i32;
                wrap(0x0d, &x.to_le_bytes(), x == 0)
            }
            ValueKind::Long => {
                let x = s as i64;
                wrap(0x09, &x.to_le_bytes(), x == 0)
            }
            ValueKind::Float => {
                let x = s as f32;
                wrap(0x0d, &x.to_le_bytes(), s == 0)
            }
            ValueKind::Double => {
                let x = s as f64;
                wrap(0x09, &x.to_le_bytes(), s == 0)
            }
            ValueKind::Bool => wrap(0x08, &[1], s.is_multiple_of(2)),
        }
    }
}

/// Now, in microseconds since the Unix epoch (0 for a clock set before it).
fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The decimal digits of `n`, without going through `fmt` (or the heap): two digits per
/// division, from a table of the pairs `00` to `99` (a key per record; one digit per
/// division was ~40 instructions of a 3-digit key).
fn decimal(mut n: u64) -> RecordKey {
    const PAIRS: [u8; 200] = {
        let mut pairs = [0u8; 200];
        let mut p = 0;
        while p < 100 {
            pairs[2 * p] = b'0' + (p / 10) as u8;
            pairs[2 * p + 1] = b'0' + (p % 10) as u8;
            p += 1;
        }
        pairs
    };
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    RecordKey::from_slice(&digits[i..])
}

/// `size` ASCII characters of a recognisable pattern.
fn ascii_text(size: usize) -> String {
    const PATTERN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    PATTERN
        .iter()
        .cycle()
        .take(size)
        .map(|&b| b as char)
        .collect()
}

impl GeneratorSource {
    /// Creates the generator of worker `worker_index` of `peers`.
    pub fn new(config: GeneratorConfig, worker_index: usize, peers: usize) -> GeneratorSource {
        let stride = peers.max(1) as u64;
        let value = match config.value_type.as_str() {
            STRING_TYPENAME => {
                match encode_primitive_from_text(STRING_TYPENAME, &ascii_text(config.value_size)) {
                    Some(Ok(bytes)) => ValueKind::Fixed(bytes),
                    // Encoding a string cannot fail; fall back to raw text.
                    _ => ValueKind::Fixed(ascii_text(config.value_size).into_bytes()),
                }
            }
            INT_TYPENAME => ValueKind::Int,
            LONG_TYPENAME => ValueKind::Long,
            FLOAT_TYPENAME => ValueKind::Float,
            DOUBLE_TYPENAME => ValueKind::Double,
            BOOL_TYPENAME => ValueKind::Bool,
            _ => ValueKind::Fixed(ascii_text(config.value_size).into_bytes()),
        };
        let value = match value {
            // The text is the end of the encoding (after a StringWrapper's tag and length).
            ValueKind::Fixed(template)
                if config.stamp && config.value_size >= GeneratorIngress::STAMP_DIGITS =>
            {
                let at = template.len() - config.value_size;
                ValueKind::Stamped { template, at }
            }
            other => other,
        };
        let interval =
            (config.rate > 0.0 && config.rate.is_finite()).then(|| stride as f64 / config.rate);
        GeneratorSource {
            id: config.id,
            next: worker_index as u64,
            first: worker_index as u64,
            stride,
            end: if config.count == 0 {
                u64::MAX
            } else {
                config.count
            },
            keys: config.keys.max(1),
            key_multiplier: key_multiplier(config.keys.max(1), config.scrambled_keys),
            value,
            interval,
            started: None,
            started_unix_us: 0,
            paced: 0,
            stats: SourceStats::default(),
        }
    }
}

impl Source for GeneratorSource {
    fn poll(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        if self.next >= self.end {
            return Ok(SourceStatus::Exhausted);
        }
        let mut budget = max as u64;
        let mut paced = None;
        let stamped = matches!(self.value, ValueKind::Stamped { .. });
        let started = match self.started {
            Some(started) => started,
            None => {
                self.started_unix_us = if stamped { unix_us() } else { 0 };
                *self.started.insert(Instant::now())
            }
        };
        // Unpaced records are due when this poll makes them.
        let poll_us = if stamped && self.interval.is_none() {
            unix_us()
        } else {
            0
        };
        if let Some(interval) = self.interval {
            let elapsed = started.elapsed().as_secs_f64();
            // Record n (0-based, of this worker) is due at n * interval.
            let due = (elapsed / interval).floor() as u64 + 1;
            let allowed = due.saturating_sub(self.paced);
            if allowed == 0 {
                let wait = self.paced as f64 * interval - elapsed;
                return Ok(SourceStatus::Idle {
                    retry_after: Some(Duration::from_secs_f64(wait.max(0.0))),
                });
            }
            if allowed <= budget {
                budget = allowed;
                paced = Some(interval);
            }
        }
        out.reserve(budget.min(self.end.saturating_sub(self.next)) as usize);
        while budget > 0 && self.next < self.end {
            let s = self.next;
            let due_us = match self.interval {
                // Record n of this worker is due at n * interval after the start.
                Some(interval) if stamped => {
                    self.started_unix_us + (self.paced as f64 * interval * 1e6).round() as u64
                }
                _ => poll_us,
            };
            out.push(SourceRecord {
                key: Some(decimal(key_of(s, self.keys, self.key_multiplier))),
                value: Some(self.value.make(s, due_us)),
                route: 0,
                metadata: RecordMetadata::Generator(s),
                rejected: None,
            });
            self.stats.records += 1;
            self.paced += 1;
            budget -= 1;
            self.next = s.saturating_add(self.stride);
        }
        if self.next >= self.end {
            // Exhausted is reported by the next call, which appends nothing.
            return Ok(SourceStatus::Ready);
        }
        Ok(match paced {
            Some(interval) => {
                let elapsed = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
                let wait = self.paced as f64 * interval - elapsed;
                if wait > 0.0 {
                    SourceStatus::Idle {
                        retry_after: Some(Duration::from_secs_f64(wait)),
                    }
                } else {
                    SourceStatus::Ready
                }
            }
            None => SourceStatus::Ready,
        })
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    fn position(&self) -> Option<Vec<u8>> {
        encode_position(
            GENERATOR_POSITION,
            &GeneratorPosition {
                next: self.next,
                records: self.stats.records,
            },
        )
    }

    fn seek(&mut self, position: &[u8]) -> Result<(), ConnectorError> {
        let id = self.id.to_string();
        let GeneratorPosition { next, records } =
            decode_position(position, GENERATOR_POSITION, INGRESS, &id)?;
        // `next` saturates at u64::MAX when an unbounded sequence runs out.
        if next != u64::MAX
            && (next < self.first || !(next - self.first).is_multiple_of(self.stride))
        {
            return Err(ConnectorError::config(
                INGRESS,
                id,
                format!(
                    "cannot resume: the checkpointed sequence number {next} is not one of \
                     worker {} of {} (was the number of workers changed?); resume with the \
                     worker count of the checkpoint, or delete the state directory to start over",
                    self.first, self.stride
                ),
            ));
        }
        self.next = next;
        self.stats.records = records;
        // Pacing measures from here: the time the job was down is not owed.
        self.started = None;
        self.paced = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_primitive_to_text;

    fn config(value_type: &str, count: u64) -> GeneratorConfig {
        GeneratorConfig {
            id: TypeName::parse("bench/gen").unwrap(),
            value_type: value_type.to_string(),
            keys: 4,
            rate: 0.0,
            count,
            value_size: 100,
            stamp: false,
            scrambled_keys: false,
        }
    }

    fn drain(source: &mut GeneratorSource, max: usize) -> Vec<SourceRecord> {
        let mut out = Vec::new();
        loop {
            match source.poll(&mut out, max).unwrap() {
                SourceStatus::Ready => {}
                SourceStatus::Exhausted => return out,
                SourceStatus::Idle { .. } => panic!("an unpaced generator is never idle"),
            }
        }
    }

    #[test]
    fn workers_partition_the_sequence() {
        let mut all = Vec::new();
        for w in 0..3 {
            let mut g = GeneratorSource::new(config("io.statefun.types/long", 100), w, 3);
            let records = drain(&mut g, 7);
            assert_eq!(g.stats().records, records.len() as u64);
            for r in &records {
                let RecordMetadata::Generator(sequence) = r.metadata else {
                    panic!("wrong metadata {:?}", r.metadata);
                };
                assert_eq!(sequence % 3, w as u64);
                assert_eq!(
                    r.key.as_deref(),
                    Some((sequence % 4).to_string().as_bytes())
                );
                assert_eq!(r.route, 0);
                let text = decode_primitive_to_text(LONG_TYPENAME, r.value.as_ref().unwrap());
                assert_eq!(text.unwrap().unwrap(), sequence.to_string());
                all.push(sequence);
            }
        }
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn scrambled_keys_cover_every_id_once_a_round_out_of_order() {
        let mut c = config("io.statefun.types/long", 3 * 1000);
        c.keys = 1000;
        c.scrambled_keys = true;
        let mut keys: Vec<(u64, u64)> = (0..2)
            .flat_map(|w| drain(&mut GeneratorSource::new(c.clone(), w, 2), 64))
            .map(|r| {
                let RecordMetadata::Generator(s) = r.metadata else {
                    panic!("wrong metadata {:?}", r.metadata);
                };
                let key = std::str::from_utf8(r.key.as_deref().unwrap()).unwrap();
                (s, key.parse().unwrap())
            })
            .collect();
        keys.sort_unstable();
        assert_eq!(keys.len(), 3000);
        for round in keys.chunks(1000) {
            let mut ids: Vec<u64> = round.iter().map(|(_, k)| *k).collect();
            // Far apart, not 0, 1, 2, …
            assert!(
                ids.windows(2).all(|w| w[0].abs_diff(w[1]) > 1),
                "{:?}",
                &ids[..8]
            );
            ids.sort_unstable();
            assert_eq!(ids, (0..1000).collect::<Vec<_>>());
        }
        // The same permutation each round.
        assert_eq!(keys[5].1, keys[1005].1);
    }

    #[test]
    fn key_multipliers_share_no_factor_with_the_key_count() {
        for keys in [
            1u64,
            2,
            3,
            4,
            10,
            1000,
            1 << 20,
            10_000_000,
            999_999_937,
            u64::MAX,
        ] {
            let m = key_multiplier(keys, true);
            assert!(m >= 1 && (keys <= 2 || m < keys), "{keys}: {m}");
            let (mut a, mut b) = (m, keys);
            while b != 0 {
                (a, b) = (b, a % b);
            }
            assert_eq!(a, 1, "{keys}: {m}");
        }
        // Past 64 bits the product is taken in 128.
        let m = key_multiplier(u64::MAX, true);
        let expected = (u128::from(u64::MAX - 1) * u128::from(m) % u128::from(u64::MAX)) as u64;
        assert_eq!(key_of(u64::MAX - 1, u64::MAX, m), expected);
    }

    #[test]
    fn values_match_the_sdk_encodings() {
        for (typename, kind) in [
            (INT_TYPENAME, ValueKind::Int),
            (LONG_TYPENAME, ValueKind::Long),
            (FLOAT_TYPENAME, ValueKind::Float),
            (DOUBLE_TYPENAME, ValueKind::Double),
        ] {
            for s in [0u64, 1, 7, 255, 1 << 20] {
                let expected = encode_primitive_from_text(typename, &s.to_string());
                assert_eq!(
                    kind.make(s, 7),
                    expected.unwrap().unwrap(),
                    "{typename} {s}"
                );
            }
        }
        for s in [0u64, 1, 2, 3] {
            let expected = encode_primitive_from_text(BOOL_TYPENAME, &(s % 2 == 1).to_string());
            assert_eq!(ValueKind::Bool.make(s, 7), expected.unwrap().unwrap());
        }
        // int truncates to i32.
        let big = (1u64 << 32) + 5;
        assert_eq!(
            ValueKind::Int.make(big, 7),
            encode_primitive_from_text(INT_TYPENAME, "5")
                .unwrap()
                .unwrap()
        );
    }

    #[test]
    fn value_sizes() {
        let mut cfg = config(STRING_TYPENAME, 3);
        cfg.value_size = 37;
        let records = drain(&mut GeneratorSource::new(cfg, 0, 1), 10);
        assert_eq!(records.len(), 3);
        for r in &records {
            let text = decode_primitive_to_text(STRING_TYPENAME, r.value.as_ref().unwrap());
            let text = text.unwrap().unwrap();
            assert_eq!(text.len(), 37);
            assert!(text.is_ascii());
        }
        let mut cfg = config("com.example/Blob", 2);
        cfg.value_size = 1000;
        let records = drain(&mut GeneratorSource::new(cfg, 0, 1), 10);
        assert!(records
            .iter()
            .all(|r| r.value.as_ref().unwrap().len() == 1000));
        let mut cfg = config("com.example/Blob", 2);
        cfg.value_size = 0;
        let records = drain(&mut GeneratorSource::new(cfg, 0, 1), 10);
        assert!(records.iter().all(|r| r.value.as_ref().unwrap().is_empty()));
    }

    #[test]
    fn max_bounds_a_poll_and_exhaustion_comes_alone() {
        let mut g = GeneratorSource::new(config(LONG_TYPENAME, 5), 0, 1);
        let mut out = Vec::new();
        assert_eq!(g.poll(&mut out, 3).unwrap(), SourceStatus::Ready);
        assert_eq!(out.len(), 3);
        assert_eq!(g.poll(&mut out, 3).unwrap(), SourceStatus::Ready);
        assert_eq!(out.len(), 5);
        assert_eq!(g.poll(&mut out, 3).unwrap(), SourceStatus::Exhausted);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn more_workers_than_records() {
        let mut g = GeneratorSource::new(config(LONG_TYPENAME, 2), 5, 8);
        let mut out = Vec::new();
        assert_eq!(g.poll(&mut out, 10).unwrap(), SourceStatus::Exhausted);
        assert!(out.is_empty());
    }

    #[test]
    fn unbounded_keeps_going() {
        let mut g = GeneratorSource::new(config(LONG_TYPENAME, 0), 0, 1);
        let mut out = Vec::new();
        for _ in 0..10 {
            assert_eq!(g.poll(&mut out, 100).unwrap(), SourceStatus::Ready);
        }
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn rate_paces_the_worker() {
        let mut cfg = config(LONG_TYPENAME, 0);
        cfg.rate = 20.0; // 10/s per worker with 2 workers
        let mut g = GeneratorSource::new(cfg, 1, 2);
        let mut out = Vec::new();
        let status = g.poll(&mut out, 100).unwrap();
        assert_eq!(out.len(), 1, "the first record is due at once");
        let SourceStatus::Idle {
            retry_after: Some(wait),
        } = status
        else {
            panic!("expected Idle, got {status:?}");
        };
        assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100));
        assert!(matches!(
            g.poll(&mut out, 100).unwrap(),
            SourceStatus::Idle { .. }
        ));
        assert_eq!(out.len(), 1);
        std::thread::sleep(wait);
        g.poll(&mut out, 100).unwrap();
        assert_eq!(out.len(), 2);
    }

    /// The stamp of a string value, and the text after it (which must be the pattern's).
    fn stamp_of(record: &SourceRecord) -> (u64, String) {
        let text = decode_primitive_to_text(STRING_TYPENAME, record.value.as_ref().unwrap());
        let text = text.unwrap().unwrap();
        let (digits, rest) = text.split_at(GeneratorIngress::STAMP_DIGITS);
        (digits.parse().expect("16 decimal digits"), rest.to_string())
    }

    #[test]
    fn unpaced_stamps_are_the_poll_time() {
        let mut cfg = config(STRING_TYPENAME, 0);
        cfg.stamp = true;
        cfg.value_size = 40;
        let mut g = GeneratorSource::new(cfg, 0, 1);
        let mut out = Vec::new();
        let before = unix_us();
        g.poll(&mut out, 5).unwrap();
        let after = unix_us();
        assert_eq!(out.len(), 5);
        let pattern = ascii_text(40);
        for r in &out {
            let (due, rest) = stamp_of(r);
            assert!(
                before <= due && due <= after,
                "{before} <= {due} <= {after}"
            );
            assert_eq!(rest, pattern[GeneratorIngress::STAMP_DIGITS..]);
        }
        // Raw values carry the digits from their first byte.
        let mut cfg = config("com.example/Blob", 1);
        cfg.stamp = true;
        cfg.value_size = 20;
        let records = drain(&mut GeneratorSource::new(cfg, 0, 1), 10);
        let value = records[0].value.as_ref().unwrap();
        assert_eq!(value.len(), 20);
        let due: u64 = std::str::from_utf8(&value[..16]).unwrap().parse().unwrap();
        assert!(before <= due && due <= unix_us());
        assert_eq!(&value[16..], &ascii_text(20).as_bytes()[16..]);
    }

    #[test]
    fn paced_stamps_follow_the_schedule_and_show_a_stall() {
        let mut cfg = config(STRING_TYPENAME, 0);
        cfg.stamp = true;
        cfg.rate = 2000.0; // 1 000 per second and worker: one every 1 000 µs
        let mut g = GeneratorSource::new(cfg, 1, 2);
        let mut out = Vec::new();
        let before = unix_us();
        g.poll(&mut out, 100).unwrap();
        let after = unix_us();
        // A stall: the records due meanwhile come in one poll, stamped with when they
        // were due, not when they were made.
        std::thread::sleep(Duration::from_millis(30));
        g.poll(&mut out, 100).unwrap();
        assert!(out.len() >= 30, "{} records", out.len());
        let stamps: Vec<u64> = out.iter().map(|r| stamp_of(r).0).collect();
        // The first record is due when pacing starts, during the first poll.
        assert!(
            before <= stamps[0] && stamps[0] <= after,
            "{before} {} {after}",
            stamps[0]
        );
        for (n, due) in stamps.iter().enumerate() {
            assert_eq!(*due, stamps[0] + n as u64 * 1_000, "record {n}");
        }
        // Numbers have no room for a stamp: the setting is ignored.
        let mut cfg = config(LONG_TYPENAME, 1);
        cfg.stamp = true;
        let records = drain(&mut GeneratorSource::new(cfg, 0, 1), 10);
        let text = decode_primitive_to_text(LONG_TYPENAME, records[0].value.as_ref().unwrap());
        assert_eq!(text.unwrap().unwrap(), "0");
    }

    #[test]
    fn decimal_digits() {
        let mut cases = vec![u64::MAX, u64::MAX - 1];
        cases.extend(0..=1_000u64);
        for digits in 1..20 {
            let p = 10u64.pow(digits);
            cases.extend([p - 1, p, p + 1, p + 9, p + 10, p * 5 + 7]);
        }
        for n in cases {
            assert_eq!(decimal(n).as_slice(), n.to_string().as_bytes(), "{n}");
        }
    }

    fn sequences(records: &[SourceRecord]) -> Vec<u64> {
        records
            .iter()
            .map(|r| match r.metadata {
                RecordMetadata::Generator(sequence) => sequence,
                ref other => panic!("wrong metadata {other:?}"),
            })
            .collect()
    }

    #[test]
    fn resumed_generator_continues_exactly() {
        for (worker, peers) in [(0, 1), (1, 3), (2, 3)] {
            let whole = drain(
                &mut GeneratorSource::new(config(LONG_TYPENAME, 50), worker, peers),
                4,
            );
            for first in 0..6 {
                let mut g = GeneratorSource::new(config(LONG_TYPENAME, 50), worker, peers);
                let mut records = Vec::new();
                for _ in 0..first {
                    g.poll(&mut records, 4).unwrap();
                }
                let position = g.position().expect("a generator can resume");
                let mut resumed = GeneratorSource::new(config(LONG_TYPENAME, 50), worker, peers);
                resumed.seek(&position).unwrap();
                let rest = drain(&mut resumed, 4);
                assert_eq!(resumed.stats().records, whole.len() as u64);
                records.extend(rest);
                assert_eq!(
                    records, whole,
                    "worker {worker}/{peers} after {first} polls"
                );
            }
            assert_eq!(
                sequences(&whole),
                (0..50u64)
                    .filter(|s| s % peers as u64 == worker as u64)
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn resumed_generator_paces_from_the_seek() {
        let mut cfg = config(LONG_TYPENAME, 0);
        cfg.rate = 10.0;
        let mut g = GeneratorSource::new(cfg.clone(), 0, 1);
        let mut out = Vec::new();
        g.poll(&mut out, 100).unwrap();
        assert_eq!(sequences(&out), vec![0]);
        let position = g.position().unwrap();
        let mut resumed = GeneratorSource::new(cfg, 0, 1);
        resumed.seek(&position).unwrap();
        let mut out = Vec::new();
        let status = resumed.poll(&mut out, 100).unwrap();
        assert_eq!(sequences(&out), vec![1], "one record is due at once");
        assert!(matches!(status, SourceStatus::Idle { .. }));
    }

    #[test]
    fn bad_generator_positions_are_errors() {
        let mut g = GeneratorSource::new(config(LONG_TYPENAME, 10), 1, 3);
        let bad: [&[u8]; 5] = [
            b"",
            b"\x00\x01",
            br#"{"kind":"file","version":1,"position":{"offset":0,"line":0}}"#,
            br#"{"kind":"generator","version":2,"position":{"next":4,"records":1}}"#,
            br#"{"kind":"generator","version":1,"position":{"next":5,"records":1}}"#,
        ];
        for bytes in bad {
            let Err(e) = g.seek(bytes) else {
                panic!("{:?} must be rejected", String::from_utf8_lossy(bytes));
            };
            let text = e.to_string();
            assert!(
                text.starts_with("generator ingress `bench/gen`: cannot resume"),
                "{text}"
            );
        }
        assert_eq!(sequences(&drain(&mut g, 10)), vec![1, 4, 7]);
    }
}
