//! The Kinesis ingress: shards spread over workers, read on a background runtime.
//!
//! Each worker opens one [`KinesisSource`] per ingress. At open it lists the
//! shards of every stream (so a missing stream, a bad ARN, a wrong region or
//! refused credentials fail the job at start, with a clear message), and on the
//! first [`Source::poll`] it starts a small tokio runtime that
//!
//! * re-lists shards every [`KinesisSourceOptions::shard_discovery_interval`]
//!   (and whenever a shard ends) to pick up shards created by resharding;
//! * reads every shard this worker owns with `GetShardIterator`/`GetRecords`,
//!   at most 5 calls per second per shard (the service limit), backing off
//!   exponentially on `ProvisionedThroughputExceeded` and other transient
//!   errors, and renewing expired iterators after the last record read;
//! * hands records to the worker through a bounded channel (so a slow worker
//!   slows the readers instead of growing memory) and calls the waker.
//!
//! # Which worker reads a shard
//!
//! A shard with no parent in the listing belongs to worker
//! `fnv1a64(stream key, 0, shard id) % peers` (the stream key is the ARN when
//! the entry has one, else the name). A shard whose parent is still listed
//! belongs to its parent's owner, so a split shard's children are read by the
//! worker that read the parent, after it has read the parent to its end: per
//! key order holds across splits. For a merge the child follows its
//! `ParentShardId`; when the `AdjacentParentShardId` is owned by another worker
//! the child waits only until that parent is closed, so order across a merge is
//! only guaranteed for keys of the first parent (a documented limitation, lifted
//! when workers can tell each other that a shard is finished).
//!
//! # KPL aggregates
//!
//! Records written by the Kinesis Producer Library in its aggregated format
//! are split into their sub-records, each handed out as a record of its own
//! with its own partition key (the function id), its index in the aggregate
//! (`sub_sequence_number` in the metadata) and its explicit hash key
//! ([`super::aggregate`] has the format and the rules). A record that starts
//! with the KPL magic but is not a good aggregate (MD5 mismatch, protobuf that
//! does not decode) is a bad record: it is handed out whole, with its
//! partition key and [`SourceRecord::rejected`] saying why (`KPL aggregate:
//! MD5 mismatch …`), so that the engine's router gives it to the ingress's
//! `badRecords` policy — skipped, counted and logged with the reason, stream,
//! shard and sequence number; the job stopped naming them; or written to the
//! dead-letter egress with its data — instead of delivering it to a function.
//!
//! # Positions
//!
//! [`KinesisSource::positions`] reports, per shard, the sequence number of the
//! last record handed out by `poll` ([`SHARD_END`] once a shard has been read
//! to its end) and, while an aggregate is handed out only in part, the
//! sub-sequence number of its last sub-record handed out ([`ShardPosition`]).
//! [`KinesisSource::seek_to`] restores them before reading starts: shards with
//! a sequence number alone are read `AFTER_SEQUENCE_NUMBER` (never `AT`, which
//! would re-read a record); shards stopped inside an aggregate are read
//! `AT_SEQUENCE_NUMBER`, dropping the aggregate's sub-records up to the
//! recorded one; finished shards are skipped, and every other shard starts at
//! `TRIM_HORIZON` so nothing written since the checkpoint is lost. Pass the
//! positions of all workers: ownership is recomputed at restore. The
//! invariant that makes a checkpoint taken in the middle of an aggregate
//! neither repeat nor lose a sub-record is stated in [`super::aggregate`].
//!
//! A shard the job owned from its first start but has not read a record from
//! yet is not new: its position is where the job's startup position put it —
//! [`TRIM_HORIZON_MARK`], or [`AT_TIMESTAMP_MARK`]`<ms>` (for `latest`, the
//! moment the job first opened the stream) — so a restore neither re-reads the
//! retained history of an idle shard nor skips what arrived while it was down.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use aws_sdk_kinesis::Client;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use statefun_module::{KinesisIngress, KinesisStartupPosition};
use statefun_sdk::IngressMetadata;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::aggregate::expand;
use super::client::{backoff, build_client, classify, hint_for, stream_error, Failure, Who};
use crate::hash::fnv1a;
use crate::source::{decode_position, encode_position};
use crate::{
    ConnectorError, RecordKey, RecordMetadata, Source, SourceRecord, SourceStats, SourceStatus,
    Waker,
};

/// The `kind` of Kinesis positions: a list of [`ShardPosition`]s.
pub(crate) const KINESIS_POSITION: &str = "kinesis";

const CONNECTOR: &str = "kinesis ingress";

/// The sequence-number marker of a shard that has been read to its end; such a
/// shard is never read again after a restore.
pub const SHARD_END: &str = "SHARD_END";

/// The position of a shard never read from, that starts at `TRIM_HORIZON`.
pub const TRIM_HORIZON_MARK: &str = "TRIM_HORIZON";
/// The position prefix of a shard never read from, that starts at the
/// timestamp (ms since the Unix epoch) that follows.
pub const AT_TIMESTAMP_MARK: &str = "AT_TIMESTAMP:";

/// The service allows 5 `GetRecords` calls per second per shard.
const MIN_CALL_INTERVAL: Duration = Duration::from_millis(200);

/// Tuning of a [`KinesisSource`]; the defaults suit AWS, tests shorten them.
#[derive(Clone, Debug)]
pub struct KinesisSourceOptions {
    /// How often shards are re-listed to find shards created by resharding
    /// (default 10 s; a shard's end also triggers a listing).
    pub shard_discovery_interval: Duration,
    /// How long a shard reader waits after a `GetRecords` call that returned
    /// nothing (default 500 ms; never less than the 200 ms service limit).
    pub idle_poll_interval: Duration,
    /// `Limit` of each `GetRecords` call (default 1000; the service allows 10 000).
    pub records_per_call: i32,
    /// How many `GetRecords` batches may wait for the worker (default 16 per
    /// source); a full channel pauses the readers.
    pub channel_batches: usize,
}

impl Default for KinesisSourceOptions {
    fn default() -> Self {
        KinesisSourceOptions {
            shard_discovery_interval: Duration::from_secs(10),
            idle_poll_interval: Duration::from_millis(500),
            records_per_call: 1000,
            channel_batches: 16,
        }
    }
}

/// One `streams[]` entry as the reader needs it.
#[derive(Clone, Debug)]
struct StreamRef {
    /// Index in `streams[]`: the record's route.
    route: usize,
    /// The ARN when given, else the name: routing, metadata and positions use it.
    key: String,
    name: String,
    arn: Option<String>,
}

/// Where one shard stands in a checkpoint: what [`KinesisSource::positions`]
/// reports and [`KinesisSource::seek_to`] takes.
///
/// In the checkpoint's position document it is a JSON array
/// `[stream, shard, sequence]`, or `[stream, shard, sequence, sub_sequence]`
/// while a KPL aggregate has been handed out only in part: one format, so the
/// positions of builds that knew no sub-sequence restore unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShardPosition {
    /// The stream key: the ARN when the ingress names the stream by ARN, else its name.
    pub stream: String,
    /// The shard id.
    pub shard: String,
    /// The sequence number of the last record handed out, or a mark:
    /// [`SHARD_END`], [`TRIM_HORIZON_MARK`], [`AT_TIMESTAMP_MARK`]`<ms>`.
    pub sequence: String,
    /// When the record `sequence` is a KPL aggregate handed out only in part:
    /// the sub-sequence number of its last sub-record handed out. `None` when
    /// the record was handed out whole (a plain record, or an aggregate's last
    /// sub-record).
    pub sub_sequence: Option<u64>,
}

impl ShardPosition {
    /// A position of a whole record (or a mark), without a sub-sequence.
    pub fn new(stream: &str, shard: &str, sequence: &str) -> Self {
        ShardPosition {
            stream: stream.to_string(),
            shard: shard.to_string(),
            sequence: sequence.to_string(),
            sub_sequence: None,
        }
    }
}

impl Serialize for ShardPosition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(3 + usize::from(self.sub_sequence.is_some())))?;
        seq.serialize_element(&self.stream)?;
        seq.serialize_element(&self.shard)?;
        seq.serialize_element(&self.sequence)?;
        if let Some(sub) = self.sub_sequence {
            seq.serialize_element(&sub)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ShardPosition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> Visitor<'de> for Entry {
            type Value = ShardPosition;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("[stream, shard, sequence] or [stream, shard, sequence, sub-sequence]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<ShardPosition, A::Error> {
                let stream = a
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let shard = a
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let sequence = a
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                let sub_sequence = a.next_element::<u64>()?;
                if a.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(5, &self));
                }
                Ok(ShardPosition {
                    stream,
                    shard,
                    sequence,
                    sub_sequence,
                })
            }
        }
        d.deserialize_seq(Entry)
    }
}

/// Where a shard reader starts.
#[derive(Clone, Debug)]
enum Start {
    Latest,
    TrimHorizon,
    AtTimestamp(i64),
    After(String),
    /// Inside the KPL aggregate with this sequence number: read
    /// `AT_SEQUENCE_NUMBER` and drop its sub-records up to `through`.
    Inside {
        sequence: String,
        through: u64,
    },
}

/// A record on its way to the worker, with the sub-sequence number of the
/// shard's position once it is handed out (see [`super::aggregate`]).
struct Pending {
    record: SourceRecord,
    resume_sub: Option<u64>,
}

/// What the readers send to the worker, in order per shard.
enum Msg {
    Records(Vec<Pending>),
    ShardEnd { stream: String, shard_id: String },
    Fatal(ConnectorError),
}

/// A Kinesis ingress source for one worker.
pub struct KinesisSource {
    id: String,
    worker_index: usize,
    peers: usize,
    options: KinesisSourceOptions,
    streams: Vec<StreamRef>,
    startup: Start,
    /// The shards listed at open, per stream key: they start at the startup
    /// position; shards found later start at `TRIM_HORIZON`.
    initial: HashSet<(String, String)>,
    restored: Option<HashMap<(String, String), Restored>>,
    client: Client,
    runtime: Option<Runtime>,
    rx: Option<mpsc::Receiver<Msg>>,
    waker: Arc<Mutex<Option<Waker>>>,
    pending: VecDeque<Pending>,
    /// Per `(stream key, shard)`: sequence number (or mark) and sub-sequence.
    positions: BTreeMap<(String, String), Restored>,
    stats: SourceStats,
}

/// A shard's position without the shard's name: sequence number (or mark)
/// and the sub-sequence number inside a partly handed-out aggregate.
type Restored = (String, Option<u64>);

impl KinesisSource {
    /// Opens the ingress `id` for worker `worker_index` of `peers` with default
    /// options; see [`KinesisSource::open_with`].
    pub fn open(
        id: &str,
        spec: &KinesisIngress,
        worker_index: usize,
        peers: usize,
    ) -> Result<Self, ConnectorError> {
        Self::open_with(
            id,
            spec,
            worker_index,
            peers,
            KinesisSourceOptions::default(),
        )
    }

    /// Opens the ingress: builds the client and lists the shards of every
    /// stream, so that configuration and access errors surface here, before
    /// the job runs. Reading starts on the first `poll`.
    pub fn open_with(
        id: &str,
        spec: &KinesisIngress,
        worker_index: usize,
        peers: usize,
        options: KinesisSourceOptions,
    ) -> Result<Self, ConnectorError> {
        let who = Who {
            connector: CONNECTOR,
            id,
        };
        if peers == 0 || worker_index >= peers {
            return Err(who.error(format!(
                "worker index {worker_index} is not below the worker count {peers}"
            )));
        }
        if spec.streams.is_empty() {
            return Err(who.error("`streams` is empty; list at least one stream"));
        }
        let mut streams = Vec::new();
        for (route, s) in spec.streams.iter().enumerate() {
            if let Some(arn) = &s.arn {
                check_arn(who, arn, spec.aws_region.id())?;
            }
            streams.push(StreamRef {
                route,
                key: s.arn.clone().unwrap_or_else(|| s.stream.clone()),
                name: s.stream.clone(),
                arn: s.arn.clone(),
            });
        }
        let startup = match &spec.startup_position {
            KinesisStartupPosition::Latest => Start::Latest,
            KinesisStartupPosition::TrimHorizon => Start::TrimHorizon,
            KinesisStartupPosition::AtTimestamp(t) => Start::AtTimestamp(t.epoch_millis),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("kinesis-{id}-{worker_index}"))
            .enable_all()
            .build()
            .map_err(|e| who.error(format!("cannot start the I/O runtime: {e}")))?;
        let client = runtime.block_on(build_client(
            who,
            &spec.aws_region,
            &spec.aws_credentials,
            &spec.client_config_properties,
        ))?;
        // Where a shard that this worker owns from the start, but has not read
        // from yet, stands: its startup position, made concrete now.
        let opened_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let unread_mark = match &startup {
            Start::TrimHorizon => TRIM_HORIZON_MARK.to_string(),
            Start::Latest => format!("{AT_TIMESTAMP_MARK}{opened_ms}"),
            Start::AtTimestamp(ms) => format!("{AT_TIMESTAMP_MARK}{ms}"),
            // Never a startup position; listed for completeness.
            Start::After(seq) | Start::Inside { sequence: seq, .. } => seq.clone(),
        };
        let mut initial = HashSet::new();
        let mut positions = BTreeMap::new();
        for s in &streams {
            let shards = runtime.block_on(list_shards(&client, s)).map_err(|text| {
                who.error(format!(
                    "cannot list the shards of stream `{}`: {text}; {}",
                    s.key,
                    hint_for(&text)
                ))
            })?;
            let listing: HashMap<String, Shard> = shards
                .into_iter()
                .map(|shard| (shard.shard_id().to_string(), shard))
                .collect();
            for shard_id in listing.keys() {
                initial.insert((s.key.clone(), shard_id.clone()));
                if owner(&s.key, shard_id, &listing, peers) == worker_index {
                    positions.insert(
                        (s.key.clone(), shard_id.clone()),
                        (unread_mark.clone(), None),
                    );
                }
            }
        }
        Ok(KinesisSource {
            id: id.to_string(),
            worker_index,
            peers,
            options,
            streams,
            startup,
            initial,
            restored: None,
            client,
            runtime: Some(runtime),
            rx: None,
            waker: Arc::new(Mutex::new(None)),
            pending: VecDeque::new(),
            positions,
            stats: SourceStats::default(),
        })
    }

    /// Per shard, the sequence number of the last record handed out by `poll`
    /// ([`SHARD_END`] for a shard read to its end), with the sub-sequence
    /// number of the last sub-record handed out while a KPL aggregate is
    /// handed out only in part; sorted. What a checkpoint records for this worker.
    pub fn positions(&self) -> Vec<ShardPosition> {
        self.positions
            .iter()
            .map(|((stream, shard), (sequence, sub))| ShardPosition {
                stream: stream.clone(),
                shard: shard.clone(),
                sequence: sequence.clone(),
                sub_sequence: *sub,
            })
            .collect()
    }

    /// Restores positions from a checkpoint (those of all workers; each keeps
    /// the shards it owns). Must be called before the first `poll`. Replaces
    /// the startup marks of [`KinesisSource::open`]: the checkpoint says where
    /// every shard the job knew stands. A sub-sequence number beside a mark
    /// rather than a sequence number is a damaged checkpoint, and an error.
    pub fn seek_to(&mut self, positions: &[ShardPosition]) -> Result<(), ConnectorError> {
        if self.rx.is_some() {
            return Err(ConnectorError::config(
                CONNECTOR,
                &self.id,
                "seek_to after reading started; restore positions before the first poll",
            ));
        }
        if let Some(p) = positions
            .iter()
            .find(|p| p.sub_sequence.is_some() && !is_sequence_number(&p.sequence))
        {
            return Err(ConnectorError::config(
                CONNECTOR,
                &self.id,
                format!(
                    "cannot resume: the checkpointed position of shard `{}` of stream `{}` is \
                     `{}` with sub-sequence number {}, but only a sequence number has \
                     sub-sequences; the checkpoint is damaged",
                    p.shard,
                    p.stream,
                    p.sequence,
                    p.sub_sequence.unwrap_or_default()
                ),
            ));
        }
        let mut map = HashMap::new();
        self.positions.clear();
        for p in positions {
            let key = (p.stream.clone(), p.shard.clone());
            let at = (p.sequence.clone(), p.sub_sequence);
            map.insert(key.clone(), at.clone());
            self.positions.insert(key, at);
        }
        self.restored = Some(map);
        Ok(())
    }

    fn start(&mut self) -> Result<(), ConnectorError> {
        let Some(runtime) = &self.runtime else {
            return Err(ConnectorError::config(
                CONNECTOR,
                &self.id,
                "the source was shut down",
            ));
        };
        let (tx, rx) = mpsc::channel(self.options.channel_batches.max(1));
        let ctx = Arc::new(Ctx {
            id: self.id.clone(),
            client: self.client.clone(),
            worker_index: self.worker_index,
            peers: self.peers,
            options: self.options.clone(),
            tx,
            waker: self.waker.clone(),
        });
        let plan = Plan {
            streams: self.streams.clone(),
            startup: self.startup.clone(),
            initial: self.initial.clone(),
            restored: self.restored.clone(),
        };
        runtime.spawn(coordinate(ctx, plan));
        self.rx = Some(rx);
        Ok(())
    }

    /// Hands one record out and moves its shard's position to it: the only
    /// place a position moves forward, one record at a time (the invariant of
    /// [`super::aggregate`]).
    fn hand_out(&mut self, pending: Pending, out: &mut Vec<SourceRecord>) {
        let Pending { record, resume_sub } = pending;
        if let Some(IngressMetadata::Kinesis {
            stream,
            shard_id,
            sequence_number,
            ..
        }) = record.metadata.record()
        {
            self.positions.insert(
                (stream.clone(), shard_id.clone()),
                (sequence_number.clone(), resume_sub),
            );
        }
        self.stats.records += 1;
        out.push(record);
    }
}

impl Source for KinesisSource {
    fn poll(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        if self.rx.is_none() {
            self.start()?;
        }
        let mut taken = 0;
        while taken < max {
            if let Some(record) = self.pending.pop_front() {
                self.hand_out(record, out);
                taken += 1;
                continue;
            }
            let Some(rx) = self.rx.as_mut() else { break };
            match rx.try_recv() {
                Ok(Msg::Records(records)) => self.pending.extend(records),
                Ok(Msg::ShardEnd { stream, shard_id }) => {
                    self.positions
                        .insert((stream, shard_id), (SHARD_END.to_string(), None));
                }
                Ok(Msg::Fatal(err)) => return Err(err),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(ConnectorError::config(
                        CONNECTOR,
                        &self.id,
                        "the shard readers stopped unexpectedly",
                    ))
                }
            }
        }
        if taken >= max || !self.pending.is_empty() {
            Ok(SourceStatus::Ready)
        } else {
            Ok(SourceStatus::Idle {
                retry_after: Some(Duration::from_millis(100)),
            })
        }
    }

    fn set_waker(&mut self, waker: Waker) {
        if let Ok(mut slot) = self.waker.lock() {
            *slot = Some(waker);
        }
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    /// [`KinesisSource::positions`]: per shard, the sequence number of the last record
    /// handed out (reading resumes `AFTER_SEQUENCE_NUMBER`), with a sub-sequence number
    /// inside a partly handed-out KPL aggregate (`AT_SEQUENCE_NUMBER`, dropping the
    /// sub-records up to it), or [`SHARD_END`].
    fn position(&self) -> Option<Vec<u8>> {
        encode_position(KINESIS_POSITION, &self.positions())
    }

    /// [`KinesisSource::seek_to`] with the positions of [`Source::position`].
    fn seek(&mut self, position: &[u8]) -> Result<(), ConnectorError> {
        let positions: Vec<ShardPosition> =
            decode_position(position, KINESIS_POSITION, CONNECTOR, &self.id)?;
        self.seek_to(&positions)
    }
}

impl Drop for KinesisSource {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Whether a position is a sequence number (decimal digits) rather than a mark.
fn is_sequence_number(position: &str) -> bool {
    !position.is_empty() && position.bytes().all(|b| b.is_ascii_digit())
}

/// Checks an ARN's shape and that its region is the configured one (a call
/// for a stream of another region fails with an obscure error otherwise).
fn check_arn(who: Who<'_>, arn: &str, region: Option<&str>) -> Result<(), ConnectorError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "kinesis"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("stream/")
            .is_some_and(|n| !n.is_empty());
    if !ok {
        return Err(who.error(format!(
            "streamArn `{arn}` is not a Kinesis stream ARN \
             (arn:aws:kinesis:<region>:<12-digit account>:stream/<name>)"
        )));
    }
    if let Some(region) = region {
        if parts[3] != region {
            return Err(who.error(format!(
                "streamArn `{arn}` is in region `{}` but awsRegion is `{region}`; \
                 use the stream's region",
                parts[3]
            )));
        }
    }
    Ok(())
}

/// Lists every shard of a stream (all pages). Errors are rendered text.
async fn list_shards(client: &Client, stream: &StreamRef) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    let mut attempt = 0;
    loop {
        let mut call = client.list_shards();
        call = match &token {
            // NextToken excludes the stream name/ARN.
            Some(t) => call.next_token(t),
            None => match &stream.arn {
                Some(arn) => call.stream_arn(arn),
                None => call.stream_name(&stream.name),
            },
        };
        match call.send().await {
            Ok(out) => {
                attempt = 0;
                shards.extend(out.shards.unwrap_or_default());
                match out.next_token {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => return Ok(shards),
                }
            }
            Err(e) => {
                let (failure, text) = classify(&e);
                if failure != Failure::Transient || attempt >= 5 {
                    return Err(format!("ListShards: {text}"));
                }
                tokio::time::sleep(backoff(
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                    attempt,
                ))
                .await;
                attempt += 1;
            }
        }
    }
}

/// What the background readers share.
struct Ctx {
    id: String,
    client: Client,
    worker_index: usize,
    peers: usize,
    options: KinesisSourceOptions,
    tx: mpsc::Sender<Msg>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl Ctx {
    fn wake(&self) {
        let waker = self.waker.lock().ok().and_then(|w| w.clone());
        if let Some(w) = waker {
            w();
        }
    }

    async fn send(&self, msg: Msg) -> bool {
        let ok = self.tx.send(msg).await.is_ok();
        self.wake();
        ok
    }

    fn error(&self, stream: &str, message: String) -> ConnectorError {
        stream_error(CONNECTOR, &self.id, stream, message)
    }
}

/// The reading plan fixed at start.
struct Plan {
    streams: Vec<StreamRef>,
    startup: Start,
    initial: HashSet<(String, String)>,
    restored: Option<HashMap<(String, String), Restored>>,
}

/// FNV-1a 64 over the stream key, a zero byte and the shard id: fixed, so that
/// every worker of every process computes the same owner.
fn shard_hash(stream: &str, shard: &str) -> u64 {
    fnv1a(&[stream.as_bytes(), &[0], shard.as_bytes()].concat())
}

/// The worker that reads `shard`: its parent's owner while the parent is
/// listed, else by hash.
fn owner(stream: &str, shard: &str, listing: &HashMap<String, Shard>, peers: usize) -> usize {
    let mut current = shard;
    // Follow parents that are still listed; bounded by the listing's size.
    for _ in 0..=listing.len() {
        match listing
            .get(current)
            .and_then(|s| s.parent_shard_id())
            .filter(|p| listing.contains_key(*p))
        {
            Some(parent) => current = parent,
            None => break,
        }
    }
    (shard_hash(stream, current) % peers as u64) as usize
}

/// Who reads each shard, decided once per shard and then kept.
///
/// [`owner`] follows a shard's parents only while `ListShards` lists them, and
/// a closed parent drops out of the listing once the stream's retention has
/// passed. Decided afresh in every discovery round, a child read by its
/// parent's owner would then hash to another worker, which would start it
/// again from `TRIM_HORIZON` while the first kept reading it. Every worker
/// sees a new shard while its parent is still listed (the parent closed
/// moments before), so every worker decides the same owner and keeps it; a
/// new shard whose parent was decided before but is no longer listed follows
/// that decision (and so do its own children). After a restart the decisions are made again from the
/// listing, and the restored positions of all workers go to whoever owns a
/// shard now, so it resumes where it stood.
#[derive(Debug, Default)]
struct Owners(HashMap<(String, String), usize>);

impl Owners {
    /// The owner of `shard` of `stream` (see the type's docs).
    fn of(
        &mut self,
        stream: &str,
        shard: &str,
        listing: &HashMap<String, Shard>,
        peers: usize,
    ) -> usize {
        let key = (stream.to_string(), shard.to_string());
        if let Some(&o) = self.0.get(&key) {
            return o;
        }
        // A decided parent wins, listed or not: the same rule as `owner`
        // while everything is listed, and stable once it is not.
        let decided_parent = listing
            .get(shard)
            .and_then(|s| s.parent_shard_id())
            .and_then(|p| self.0.get(&(stream.to_string(), p.to_string())).copied());
        let o = decided_parent.unwrap_or_else(|| owner(stream, shard, listing, peers));
        self.0.insert(key, o);
        o
    }
}

/// Discovers shards and starts a reader for each owned shard once its owned
/// parents are finished.
async fn coordinate(ctx: Arc<Ctx>, plan: Plan) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, String)>();
    let mut finished: HashSet<(String, String)> = HashSet::new();
    let mut started: HashSet<(String, String)> = HashSet::new();
    let mut owners = Owners::default();
    if let Some(restored) = &plan.restored {
        for (key, (seq, _)) in restored {
            if seq == SHARD_END {
                finished.insert(key.clone());
            }
        }
    }
    loop {
        for stream in &plan.streams {
            let shards = match list_shards(&ctx.client, stream).await {
                Ok(s) => s,
                Err(text) => {
                    let err = ctx.error(
                        &stream.key,
                        format!("cannot list the shards of stream `{}`: {text}", stream.key),
                    );
                    ctx.send(Msg::Fatal(err)).await;
                    return;
                }
            };
            let listing: HashMap<String, Shard> = shards
                .into_iter()
                .map(|s| (s.shard_id().to_string(), s))
                .collect();
            let mut ids: Vec<&String> = listing.keys().collect();
            ids.sort();
            for shard_id in ids {
                let key = (stream.key.clone(), shard_id.clone());
                if started.contains(&key) || finished.contains(&key) {
                    continue;
                }
                if owners.of(&stream.key, shard_id, &listing, ctx.peers) != ctx.worker_index {
                    continue;
                }
                // Parents we own must be read to their end first.
                let shard = &listing[shard_id];
                let blocked = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .filter(|p| listing.contains_key(*p))
                    .any(|p| {
                        owners.of(&stream.key, p, &listing, ctx.peers) == ctx.worker_index
                            && !finished.contains(&(stream.key.clone(), p.to_string()))
                    });
                if blocked {
                    continue;
                }
                let start = match plan.restored.as_ref().and_then(|r| r.get(&key)) {
                    Some((seq, Some(through))) => Start::Inside {
                        sequence: seq.clone(),
                        through: *through,
                    },
                    Some((mark, None)) if mark == TRIM_HORIZON_MARK => Start::TrimHorizon,
                    Some((mark, None)) if mark.starts_with(AT_TIMESTAMP_MARK) => {
                        match mark[AT_TIMESTAMP_MARK.len()..].parse() {
                            Ok(ms) => Start::AtTimestamp(ms),
                            Err(_) => {
                                let err = ctx.error(
                                    &stream.key,
                                    format!("restored position `{mark}` of shard `{shard_id}` is not `{AT_TIMESTAMP_MARK}<ms>`; the checkpoint is damaged"),
                                );
                                ctx.send(Msg::Fatal(err)).await;
                                return;
                            }
                        }
                    }
                    Some((seq, None)) => Start::After(seq.clone()),
                    None if plan.restored.is_none() && plan.initial.contains(&key) => {
                        plan.startup.clone()
                    }
                    None => Start::TrimHorizon,
                };
                started.insert(key.clone());
                let ctx = ctx.clone();
                let stream = stream.clone();
                let done = done_tx.clone();
                let shard_id = shard_id.clone();
                tokio::spawn(async move {
                    match read_shard(&ctx, &stream, &shard_id, start).await {
                        Ok(()) => {
                            let _ = done.send((stream.key.clone(), shard_id));
                        }
                        Err(err) => {
                            ctx.send(Msg::Fatal(err)).await;
                        }
                    }
                });
            }
        }
        // Wait for the next discovery round or a shard's end (children may be ready).
        tokio::select! {
            _ = tokio::time::sleep(ctx.options.shard_discovery_interval) => {}
            Some(key) = done_rx.recv() => {
                finished.insert(key);
                while let Ok(key) = done_rx.try_recv() {
                    finished.insert(key);
                }
            }
        }
        if ctx.tx.is_closed() {
            return;
        }
    }
}

/// Gets a shard iterator, retrying transient errors.
async fn shard_iterator(
    ctx: &Ctx,
    stream: &StreamRef,
    shard_id: &str,
    start: &Start,
) -> Result<Option<String>, ConnectorError> {
    let mut attempt = 0;
    loop {
        let mut call = ctx.client.get_shard_iterator().shard_id(shard_id);
        call = match &stream.arn {
            Some(arn) => call.stream_arn(arn),
            None => call.stream_name(&stream.name),
        };
        call = match start {
            Start::Latest => call.shard_iterator_type(ShardIteratorType::Latest),
            Start::TrimHorizon => call.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Start::AtTimestamp(ms) => call
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(*ms)),
            Start::After(seq) => call
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            Start::Inside { sequence, .. } => call
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence),
        };
        match call.send().await {
            Ok(out) => return Ok(out.shard_iterator),
            Err(e) => {
                let (failure, text) = classify(&e);
                if failure == Failure::Fatal {
                    return Err(ctx.error(
                        &stream.key,
                        format!("GetShardIterator for shard `{shard_id}` failed: {text}"),
                    ));
                }
                tokio::time::sleep(backoff(
                    Duration::from_millis(500),
                    Duration::from_secs(10),
                    attempt,
                ))
                .await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Reads one shard until its end (Ok) or a fatal error.
async fn read_shard(
    ctx: &Ctx,
    stream: &StreamRef,
    shard_id: &str,
    start: Start,
) -> Result<(), ConnectorError> {
    let mut last_seq: Option<String> = match &start {
        Start::After(seq) => Some(seq.clone()),
        _ => None,
    };
    // Restored inside an aggregate: the first record read is that aggregate,
    // whose sub-records up to `through` were handed out before the checkpoint.
    let mut inside: Option<(String, u64)> = match &start {
        Start::Inside { sequence, through } => Some((sequence.clone(), *through)),
        _ => None,
    };
    let restart = |last: &Option<String>| match last {
        Some(seq) => Start::After(seq.clone()),
        None => start.clone(),
    };
    let Some(mut iterator) = shard_iterator(ctx, stream, shard_id, &start).await? else {
        return finish(ctx, stream, shard_id).await;
    };
    // Listed for `/metrics` while this reader reads the shard.
    let behind = super::lag::register(&ctx.id, ctx.worker_index, &stream.key, shard_id);
    let mut attempt = 0u32;
    let mut last_call: Option<Instant> = None;
    loop {
        if let Some(at) = last_call {
            let next = at + MIN_CALL_INTERVAL;
            tokio::time::sleep_until(next.into()).await;
        }
        last_call = Some(Instant::now());
        let result = ctx
            .client
            .get_records()
            .shard_iterator(&iterator)
            .limit(ctx.options.records_per_call)
            .send()
            .await;
        match result {
            Ok(out) => {
                attempt = 0;
                if let Some(millis) = out.millis_behind_latest {
                    behind.set(millis);
                }
                let records = out.records;
                let empty = records.is_empty();
                if let Some(last) = records.last() {
                    last_seq = Some(last.sequence_number.clone());
                }
                let mut batch = Vec::with_capacity(records.len());
                for r in records {
                    let through = match inside.take() {
                        Some((seq, through)) if seq == r.sequence_number => Some(through),
                        _ => None,
                    };
                    let arrival = r
                        .approximate_arrival_timestamp
                        .and_then(|t| t.to_millis().ok());
                    let pieces = expand(r.partition_key.as_deref(), r.data.into_inner(), through);
                    for piece in pieces {
                        batch.push(Pending {
                            record: SourceRecord {
                                key: piece.key.map(RecordKey::from_vec),
                                value: Some(piece.data),
                                route: stream.route,
                                metadata: RecordMetadata::Record(Box::new(
                                    IngressMetadata::Kinesis {
                                        stream: stream.key.clone(),
                                        shard_id: shard_id.to_string(),
                                        sequence_number: r.sequence_number.clone(),
                                        approximate_arrival_ms: arrival,
                                        sub_sequence_number: piece.sub_sequence_number,
                                        explicit_hash_key: piece.explicit_hash_key,
                                    },
                                )),
                                rejected: piece.rejected.map(|why| why.to_string()),
                            },
                            resume_sub: piece.resume_sub,
                        });
                    }
                }
                if !batch.is_empty() && !ctx.send(Msg::Records(batch)).await {
                    return Ok(()); // the source was dropped
                }
                match out.next_shard_iterator {
                    Some(next) if !next.is_empty() => iterator = next,
                    _ => return finish(ctx, stream, shard_id).await,
                }
                if empty {
                    tokio::time::sleep(ctx.options.idle_poll_interval).await;
                }
            }
            Err(e) => {
                let (failure, text) = classify(&e);
                match failure {
                    Failure::Fatal => {
                        return Err(ctx.error(
                            &stream.key,
                            format!("GetRecords on shard `{shard_id}` failed: {text}"),
                        ))
                    }
                    Failure::ExpiredIterator => {
                        match shard_iterator(ctx, stream, shard_id, &restart(&last_seq)).await? {
                            Some(next) => iterator = next,
                            None => return finish(ctx, stream, shard_id).await,
                        }
                    }
                    Failure::Transient => {
                        tracing::debug!(stream = %stream.key, shard = shard_id, "GetRecords: {text}; backing off");
                        tokio::time::sleep(backoff(
                            Duration::from_millis(500),
                            Duration::from_secs(10),
                            attempt,
                        ))
                        .await;
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        }
    }
}

async fn finish(ctx: &Ctx, stream: &StreamRef, shard_id: &str) -> Result<(), ConnectorError> {
    ctx.send(Msg::ShardEnd {
        stream: stream.key.clone(),
        shard_id: shard_id.to_string(),
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Who<'static> {
        Who {
            connector: CONNECTOR,
            id: "t/in",
        }
    }

    #[test]
    fn arn_shape_and_region_are_checked() {
        let good = "arn:aws:kinesis:us-east-1:000000000000:stream/s";
        assert!(check_arn(who(), good, Some("us-east-1")).is_ok());
        assert!(check_arn(who(), good, None).is_ok());
        let err = check_arn(who(), good, Some("eu-west-1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("region `us-east-1`"), "{err}");
        for bad in [
            "arn:aws:kinesis:us-east-1:0000:stream/s",
            "arn:aws:sqs:us-east-1:000000000000:stream/s",
            "arn:aws:kinesis:us-east-1:000000000000:table/s",
            "not-an-arn",
        ] {
            let err = check_arn(who(), bad, None).unwrap_err().to_string();
            assert!(err.contains("is not a Kinesis stream ARN"), "{err}");
        }
    }

    fn shard(id: &str, parent: Option<&str>) -> Shard {
        let mut b = Shard::builder().shard_id(id);
        if let Some(p) = parent {
            b = b.parent_shard_id(p);
        }
        b.build().expect("shard")
    }

    fn listing(shards: &[Shard]) -> HashMap<String, Shard> {
        shards
            .iter()
            .map(|s| (s.shard_id().to_string(), s.clone()))
            .collect()
    }

    #[test]
    fn a_shard_keeps_its_owner_when_its_parent_ages_out() {
        let peers = 7;
        // Find a parent and child that hash to different workers on their own.
        let (parent, child) = (0..100)
            .map(|i| (format!("p{i}"), format!("c{i}")))
            .find(|(p, c)| shard_hash("s", p) % peers != shard_hash("s", c) % peers)
            .expect("a pair");
        let peers = peers as usize;
        let mut owners = Owners::default();
        let with_parent = listing(&[shard(&parent, None), shard(&child, Some(&parent))]);
        let first = owners.of("s", &child, &with_parent, peers);
        assert_eq!(
            first,
            owners.of("s", &parent, &with_parent, peers),
            "read by the parent's owner"
        );
        // Retention passed: the parent is no longer listed.
        let aged = listing(&[shard(&child, Some(&parent))]);
        assert_ne!(
            owner("s", &child, &aged, peers),
            first,
            "the stateless rule would move it"
        );
        assert_eq!(
            owners.of("s", &child, &aged, peers),
            first,
            "the decision is kept"
        );
        // A grandchild that appears after the parent aged out follows the child.
        let grand = format!("g-{child}");
        let later = listing(&[shard(&child, Some(&parent)), shard(&grand, Some(&child))]);
        assert_eq!(owners.of("s", &grand, &later, peers), first);
        // And one whose listed parent's decision is known but whose own parent is gone.
        let orphan = listing(&[shard(&format!("x-{grand}"), Some(&grand))]);
        assert_eq!(owners.of("s", &format!("x-{grand}"), &orphan, peers), first);
    }

    #[test]
    fn shard_positions_keep_one_format_with_an_optional_sub_sequence() {
        // A position document of a build without sub-sequences restores unchanged and
        // is written back byte for byte.
        let old = br#"{"kind":"kinesis","version":1,"position":[["s","shardId-0","4955"],["s","shardId-1","SHARD_END"]]}"#;
        let positions: Vec<ShardPosition> =
            decode_position(old, KINESIS_POSITION, CONNECTOR, "t/in").expect("old format");
        assert_eq!(
            positions,
            vec![
                ShardPosition::new("s", "shardId-0", "4955"),
                ShardPosition::new("s", "shardId-1", SHARD_END),
            ]
        );
        assert_eq!(
            encode_position(KINESIS_POSITION, &positions).as_deref(),
            Some(&old[..])
        );
        // Inside an aggregate: a fourth element.
        let inside = ShardPosition {
            sub_sequence: Some(7),
            ..ShardPosition::new("s", "shardId-0", "4955")
        };
        let bytes = encode_position(KINESIS_POSITION, &vec![inside.clone()]).expect("encode");
        assert_eq!(
            bytes,
            br#"{"kind":"kinesis","version":1,"position":[["s","shardId-0","4955",7]]}"#
        );
        let back: Vec<ShardPosition> =
            decode_position(&bytes, KINESIS_POSITION, CONNECTOR, "t/in").expect("new format");
        assert_eq!(back, vec![inside]);
        // Anything else is a damaged checkpoint, with an error naming the ingress.
        for bad in [
            r#"[["s","shardId-0"]]"#,
            r#"[["s","shardId-0","1",2,3]]"#,
            r#"[["s","shardId-0","1",-1]]"#,
            r#"[["s","shardId-0","1","2"]]"#,
            r#"[["s","shardId-0",1]]"#,
        ] {
            let doc = format!(r#"{{"kind":"kinesis","version":1,"position":{bad}}}"#);
            let err = decode_position::<Vec<ShardPosition>>(
                doc.as_bytes(),
                KINESIS_POSITION,
                CONNECTOR,
                "t/in",
            )
            .expect_err(bad)
            .to_string();
            assert!(
                err.contains("`t/in`") && err.contains("malformed"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn shard_hash_is_fixed() {
        // FNV-1a 64 of the single zero byte separator; a fixed value guards the function.
        assert_eq!(shard_hash("", ""), 0xaf63_bd4c_8601_b7df);
        assert_ne!(shard_hash("a", "b"), shard_hash("ab", ""));
    }
}
