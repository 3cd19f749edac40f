//! The file connectors: `KEY<TAB>VALUE` lines in, JSON lines out.
//!
//! They exist so that a module can be tried, tested and demonstrated without
//! a broker: feed a file (or a pipe on stdin) and read what the functions
//! sent to their egresses from a file (or stdout).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use prost::Message as _;
use serde::Serialize;
use statefun_sdk::{EgressMessage, IngressMetadata, SdkError, TypeName, TypedValue};

use crate::codec::{
    decode_primitive_to_text, encode_primitive_from_text, KafkaProducerRecord, KinesisEgressRecord,
    KAFKA_PRODUCER_RECORD_TYPENAME, KINESIS_EGRESS_RECORD_TYPENAME,
};
use crate::error::open_hint;
use crate::{ConnectorError, Sink, Source, SourceRecord, SourceStats, SourceStatus, Waker};

const INGRESS: &str = "file ingress";
const EGRESS: &str = "file egress";

/// How long a following source waits at the end of the file before looking
/// again: short enough for interactive use, long enough not to spin.
const FOLLOW_RETRY: Duration = Duration::from_millis(100);
/// Read buffer size: large enough that a poll of many short lines makes few
/// system calls.
const READ_BUFFER: usize = 64 * 1024;
/// Lines per message from the stdin thread, so the channel is not crossed
/// once per line.
const STDIN_BATCH: usize = 1024;
/// Batches the stdin thread may read ahead; bounds memory when the job is
/// slower than its input (the thread then blocks, and so does the writer).
const STDIN_CHANNEL: usize = 16;
/// Skipped lines logged one by one before logging switches to every
/// [`SKIP_LOG_EVERY`]th, so a bad file cannot flood the log.
const SKIP_LOG_FIRST: u64 = 10;
/// See [`SKIP_LOG_FIRST`].
const SKIP_LOG_EVERY: u64 = 1000;

/// The configuration of a file (or stdin) ingress.
///
/// The engine builds it from the module.yaml spec; it is plain data so that
/// tests and embedding applications can build it directly.
#[derive(Clone, Debug)]
pub struct FileIngressConfig {
    /// The ingress id, used in errors and logs.
    pub id: TypeName,
    /// The file to read; `-` reads stdin.
    pub path: String,
    /// The type name of the values. For an `io.statefun.types` primitive the
    /// VALUE text is parsed and encoded (so `42` becomes an `IntWrapper`); for
    /// any other type the VALUE bytes are passed on as they are.
    pub value_type: String,
    /// Keep reading as the file grows instead of stopping at its end
    /// (`tail -f`). Ignored for stdin, which ends when its writer closes it.
    pub follow: bool,
}

/// A source that reads `KEY<TAB>VALUE` lines from a file or stdin.
///
/// Only worker 0 reads (a file has no partitions to share); the others are
/// exhausted at once so they never hold the epoch frontier back.
///
/// Each line is one record: KEY (up to the first TAB) is the function id,
/// VALUE the rest, with a trailing `\r` removed. Lines are handled as bytes,
/// so a non-UTF-8 key reaches the engine's router, which skips and counts it
/// like any other bad key. Lines without a TAB and values that do not parse
/// as the configured primitive are skipped, counted in
/// [`SourceStats::skipped`] and logged (rate-limited) with `path:line`.
/// Empty lines are skipped silently.
pub struct FileSource {
    input: Input,
    decoder: LineDecoder,
    follow: bool,
}

/// Where a [`FileSource`] reads from.
enum Input {
    /// Another worker reads; this one has nothing to do.
    Inactive,
    /// A regular file; `partial` holds bytes of a line whose newline has not
    /// been read yet (it survives across polls in follow mode).
    File {
        reader: BufReader<File>,
        partial: Vec<u8>,
    },
    /// Stdin, read on a background thread.
    Stdin(StdinInput),
    /// Everything was read.
    Done,
}

/// The poll side of the stdin thread.
struct StdinInput {
    rx: Receiver<io::Result<Vec<Vec<u8>>>>,
    /// Lines received but not yet decoded.
    lines: std::vec::IntoIter<Vec<u8>>,
    wake: Arc<WakeSlot>,
}

/// How the stdin thread wakes the engine: the waker, plus a flag so that it
/// wakes once per poll cycle rather than once per batch.
#[derive(Default)]
struct WakeSlot {
    waker: Mutex<Option<Waker>>,
    /// Set by the thread when it has sent data the poller has not seen
    /// drained yet; cleared by the poller when it finds the channel empty.
    pending: AtomicBool,
}

impl WakeSlot {
    fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let waker = match self.waker.lock() {
                Ok(guard) => guard.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            if let Some(waker) = waker {
                waker();
            }
        }
    }

    fn has_waker(&self) -> bool {
        match self.waker.lock() {
            Ok(guard) => guard.is_some(),
            Err(poisoned) => poisoned.into_inner().is_some(),
        }
    }
}

/// Turns raw lines into records; separate from [`Input`] so that the input's
/// buffers can be borrowed while decoding.
struct LineDecoder {
    id: TypeName,
    path: String,
    value_type: String,
    /// Whether `value_type` is one of the six primitives whose text is encoded.
    primitive: bool,
    /// The number of the last line read (1-based).
    line: u64,
    stats: SourceStats,
}

/// Why a line was skipped; formatted only when it is logged.
enum SkipReason {
    NoTab,
    NotUtf8,
    BadValue(SdkError),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoTab => {
                f.write_str("no TAB between key and value; expected KEY<TAB>VALUE")
            }
            SkipReason::NotUtf8 => f.write_str("the value is not UTF-8 text"),
            SkipReason::BadValue(e) => write!(f, "{e}"),
        }
    }
}

impl LineDecoder {
    /// Decodes one line (with or without its `\n`), appending a record or
    /// counting a skip. Advances the line number.
    fn decode(&mut self, raw: &[u8], out: &mut Vec<SourceRecord>) {
        self.line += 1;
        let mut line = raw.strip_suffix(b"\n").unwrap_or(raw);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        let Some(tab) = line.iter().position(|&b| b == b'\t') else {
            self.skip(SkipReason::NoTab);
            return;
        };
        let (key, value) = (&line[..tab], &line[tab + 1..]);
        let value = if self.primitive {
            let Ok(text) = std::str::from_utf8(value) else {
                self.skip(SkipReason::NotUtf8);
                return;
            };
            match encode_primitive_from_text(&self.value_type, text) {
                Some(Ok(bytes)) => bytes,
                Some(Err(e)) => {
                    self.skip(SkipReason::BadValue(e));
                    return;
                }
                None => value.to_vec(),
            }
        } else {
            value.to_vec()
        };
        self.stats.records += 1;
        out.push(SourceRecord {
            key: Some(key.to_vec()),
            value: Some(value),
            route: 0,
            metadata: IngressMetadata::File {
                path: self.path.clone(),
                line: self.line,
            },
        });
    }

    fn skip(&mut self, reason: SkipReason) {
        self.stats.skipped += 1;
        let n = self.stats.skipped;
        if n <= SKIP_LOG_FIRST || n % SKIP_LOG_EVERY == 0 {
            let more = if n == SKIP_LOG_FIRST {
                "; from now on only every 1000th skipped line is logged"
            } else {
                ""
            };
            tracing::warn!(
                ingress = %self.id,
                "{}:{}: {reason}; line skipped ({n} skipped so far{more})",
                self.path,
                self.line,
            );
        }
    }

    fn io_error(&self, e: io::Error) -> ConnectorError {
        ConnectorError::Io {
            connector: INGRESS,
            id: self.id.to_string(),
            path: self.path.clone(),
            source: e,
            hint: format!(
                "reading stopped after line {}; check the file or device, then restart the job",
                self.line
            ),
        }
    }
}

impl FileSource {
    /// Opens the ingress for worker `worker_index` of `peers`.
    ///
    /// Opening happens here, not at the first poll, so that a wrong path is
    /// reported when the job starts, naming the ingress and the path. Workers
    /// other than 0 open nothing. For `-` a background thread starts reading
    /// stdin.
    pub fn open(
        config: FileIngressConfig,
        worker_index: usize,
        peers: usize,
    ) -> Result<FileSource, ConnectorError> {
        let _ = peers;
        let FileIngressConfig {
            id,
            path,
            value_type,
            follow,
        } = config;
        if let Err(e) = TypeName::parse(&value_type) {
            return Err(ConnectorError::Config {
                connector: INGRESS,
                id: id.to_string(),
                message: format!("valueType of `{path}`: {e}; use e.g. `io.statefun.types/string`"),
            });
        }
        let primitive = encode_primitive_from_text(&value_type, "").is_some();
        let input = if worker_index != 0 {
            Input::Inactive
        } else if path == "-" {
            Input::Stdin(spawn_line_reader(Box::new(io::stdin()), &id)?)
        } else {
            let file = File::open(&path).map_err(|e| ConnectorError::Open {
                connector: INGRESS,
                id: id.to_string(),
                path: path.clone(),
                hint: open_hint(e.kind(), false),
                source: e,
            })?;
            Input::File {
                reader: BufReader::with_capacity(READ_BUFFER, file),
                partial: Vec::new(),
            }
        };
        Ok(FileSource {
            input,
            decoder: LineDecoder {
                id,
                path,
                value_type,
                primitive,
                line: 0,
                stats: SourceStats::default(),
            },
            follow,
        })
    }
}

/// Starts the thread that reads stdin (or, in tests, any reader) line by line
/// and sends batches of lines.
fn spawn_line_reader(
    input: Box<dyn io::Read + Send>,
    id: &TypeName,
) -> Result<StdinInput, ConnectorError> {
    let (tx, rx) = mpsc::sync_channel(STDIN_CHANNEL);
    let wake = Arc::new(WakeSlot::default());
    let thread_wake = wake.clone();
    std::thread::Builder::new()
        .name(format!("stdin-ingress-{}", id.name()))
        .spawn(move || read_lines(input, tx, &thread_wake))
        .map_err(|e| ConnectorError::Open {
            connector: INGRESS,
            id: id.to_string(),
            path: "-".to_string(),
            source: e,
            hint: "could not start the stdin reader thread; check the process's thread limit"
                .to_string(),
        })?;
    Ok(StdinInput {
        rx,
        lines: Vec::new().into_iter(),
        wake,
    })
}

/// The body of the stdin thread. Sends a batch when it has [`STDIN_BATCH`]
/// lines or when no more input is buffered (so lines typed interactively are
/// not held back); stops at EOF, on an error, or when the source is dropped.
fn read_lines(
    input: Box<dyn io::Read + Send>,
    tx: SyncSender<io::Result<Vec<Vec<u8>>>>,
    wake: &WakeSlot,
) {
    let mut reader = BufReader::with_capacity(READ_BUFFER, input);
    let mut batch = Vec::new();
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                batch.push(line);
                if batch.len() >= STDIN_BATCH || reader.buffer().is_empty() {
                    if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                        return;
                    }
                    wake.notify();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if !batch.is_empty() && tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return;
                }
                let _ = tx.send(Err(e));
                wake.notify();
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
    // Dropping the sender tells the poller that stdin ended.
    drop(tx);
    wake.notify();
}

impl Source for FileSource {
    fn poll(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<SourceStatus, ConnectorError> {
        let start = out.len();
        // `max` bounds the lines examined, not only the records appended, so
        // that a file of bad lines cannot make one poll read it all.
        let mut budget = max;
        match &mut self.input {
            Input::Inactive | Input::Done => return Ok(SourceStatus::Exhausted),
            Input::File { reader, partial } => loop {
                if budget == 0 {
                    return Ok(SourceStatus::Ready);
                }
                match reader.read_until(b'\n', partial) {
                    Ok(0) if self.follow => {
                        return Ok(SourceStatus::Idle {
                            retry_after: Some(FOLLOW_RETRY),
                        })
                    }
                    Ok(0) => {
                        // Without follow, a last line without `\n` is a record.
                        if !partial.is_empty() {
                            self.decoder.decode(partial, out);
                            partial.clear();
                        }
                        break;
                    }
                    Ok(_) if self.follow && partial.last() != Some(&b'\n') => {
                        // Hold the partial line until its newline is written.
                        return Ok(SourceStatus::Idle {
                            retry_after: Some(FOLLOW_RETRY),
                        });
                    }
                    Ok(_) => {
                        budget -= 1;
                        self.decoder.decode(partial, out);
                        partial.clear();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.decoder.io_error(e)),
                }
            },
            Input::Stdin(stdin) => loop {
                if budget == 0 {
                    return Ok(SourceStatus::Ready);
                }
                if let Some(line) = stdin.lines.next() {
                    budget -= 1;
                    self.decoder.decode(&line, out);
                    continue;
                }
                match stdin.rx.try_recv() {
                    Ok(Ok(batch)) => stdin.lines = batch.into_iter(),
                    Ok(Err(e)) => return Err(self.decoder.io_error(e)),
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        // Clear the flag, then look once more: a batch sent
                        // before the clear was seen by no one, one sent after
                        // it wakes us.
                        stdin.wake.pending.store(false, Ordering::Release);
                        match stdin.rx.try_recv() {
                            Ok(Ok(batch)) => stdin.lines = batch.into_iter(),
                            Ok(Err(e)) => return Err(self.decoder.io_error(e)),
                            Err(TryRecvError::Disconnected) => break,
                            Err(TryRecvError::Empty) => {
                                let retry_after = if stdin.wake.has_waker() {
                                    None
                                } else {
                                    Some(Duration::from_millis(10))
                                };
                                return Ok(SourceStatus::Idle { retry_after });
                            }
                        }
                    }
                }
            },
        }
        // Only end of input leaves the loops above.
        self.input = Input::Done;
        // Report exhaustion only from a call that appended nothing, so no
        // engine can lose the last records by dropping an exhausted poll.
        Ok(if out.len() > start {
            SourceStatus::Ready
        } else {
            SourceStatus::Exhausted
        })
    }

    fn set_waker(&mut self, waker: Waker) {
        if let Input::Stdin(stdin) = &self.input {
            match stdin.wake.waker.lock() {
                Ok(mut guard) => *guard = Some(waker),
                Err(poisoned) => *poisoned.into_inner() = Some(waker),
            }
        }
    }

    fn stats(&self) -> SourceStats {
        self.decoder.stats
    }
}

/// The configuration of a file (or stdout) egress.
#[derive(Clone, Debug)]
pub struct FileEgressConfig {
    /// The egress id, used in errors.
    pub id: TypeName,
    /// The file to append to; `-` writes to stdout.
    pub path: String,
}

/// A sink that writes one JSON object per egress record and line.
///
/// The format is meant for people and for `jq`:
/// `{"egress":"ns/name","typename":"…","topic":…,"key":…,"value":…}`.
/// Kafka and Kinesis records are unpacked (`topic`/`key`, and
/// `explicit_hash_key` when set) so the same module can run with a file egress
/// in place of a broker. `value` is the decoded text of an `io.statefun.types`
/// primitive, otherwise the UTF-8 text of the bytes, otherwise
/// `{"base64":"…"}`. A record that cannot be decoded is written raw with an
/// `"error"` field rather than dropped, because a debugging sink that hides
/// records defeats its purpose.
///
/// The file is opened in append mode so restarts add to it instead of
/// overwriting what earlier runs wrote.
pub struct FileSink {
    id: TypeName,
    path: String,
    output: Output,
    /// The JSON lines of the current batch, reused between batches.
    buf: Vec<u8>,
}

enum Output {
    File(BufWriter<File>),
    Stdout,
}

/// One output line; field order is the order of the JSON keys.
#[derive(Serialize)]
struct JsonLine<'a> {
    egress: &'a str,
    typename: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explicit_hash_key: Option<&'a str>,
    value: JsonValue<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonValue<'a> {
    /// A record without a value (`has_value: false`).
    Null,
    Text(std::borrow::Cow<'a, str>),
    Base64 {
        base64: String,
    },
}

impl<'a> JsonValue<'a> {
    /// UTF-8 text when the bytes are valid UTF-8, base64 otherwise.
    fn raw(bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => JsonValue::Text(text.into()),
            Err(_) => JsonValue::Base64 {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }
}

impl FileSink {
    /// Opens (creating if needed, appending if present) the egress file.
    ///
    /// The parent directory is not created: a missing directory is more often
    /// a typo than an intent, and the error names the path.
    pub fn open(config: FileEgressConfig) -> Result<FileSink, ConnectorError> {
        let FileEgressConfig { id, path } = config;
        let output = if path == "-" {
            Output::Stdout
        } else {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| ConnectorError::Open {
                    connector: EGRESS,
                    id: id.to_string(),
                    path: path.clone(),
                    hint: open_hint(e.kind(), true),
                    source: e,
                })?;
            Output::File(BufWriter::with_capacity(READ_BUFFER, file))
        };
        Ok(FileSink {
            id,
            path,
            output,
            buf: Vec::new(),
        })
    }

    fn io_error(&self, e: io::Error) -> ConnectorError {
        let hint = match (&self.output, e.kind()) {
            (Output::Stdout, io::ErrorKind::BrokenPipe) => {
                "stdout was closed (did the program reading it exit?); keep the reader running \
                 or write to a file instead"
            }
            (Output::Stdout, _) => "check where stdout is redirected to",
            (Output::File(_), _) => {
                "check free space and permissions of the file system, then restart the job"
            }
        };
        ConnectorError::Io {
            connector: EGRESS,
            id: self.id.to_string(),
            path: self.path.clone(),
            source: e,
            hint: hint.to_string(),
        }
    }
}

/// Appends the JSON line of one egress record to `buf`.
fn render(message: &EgressMessage, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let value: &TypedValue = &message.value;
    let typename = value.typename.as_str();
    let mut line = JsonLine {
        egress: message.egress.as_str(),
        typename,
        topic: None,
        key: None,
        explicit_hash_key: None,
        value: JsonValue::Null,
        error: None,
    };
    // Decoded egress records must outlive `line`, which borrows from them.
    let kafka;
    let kinesis;
    if !value.has_value {
        // Nothing to decode: `value` stays null.
    } else if typename == KAFKA_PRODUCER_RECORD_TYPENAME {
        match KafkaProducerRecord::decode(value.value.as_slice()) {
            Ok(record) => {
                kafka = record;
                line.topic = Some(&kafka.topic);
                line.key = Some(&kafka.key);
                line.value = JsonValue::raw(&kafka.value_bytes);
            }
            Err(e) => {
                line.value = JsonValue::raw(&value.value);
                line.error = Some(format!("cannot decode the KafkaProducerRecord: {e}"));
            }
        }
    } else if typename == KINESIS_EGRESS_RECORD_TYPENAME {
        match KinesisEgressRecord::decode(value.value.as_slice()) {
            Ok(record) => {
                kinesis = record;
                line.topic = Some(&kinesis.stream);
                line.key = Some(&kinesis.partition_key);
                if !kinesis.explicit_hash_key.is_empty() {
                    line.explicit_hash_key = Some(&kinesis.explicit_hash_key);
                }
                line.value = JsonValue::raw(&kinesis.value_bytes);
            }
            Err(e) => {
                line.value = JsonValue::raw(&value.value);
                line.error = Some(format!("cannot decode the KinesisEgressRecord: {e}"));
            }
        }
    } else {
        line.value = match decode_primitive_to_text(typename, &value.value) {
            Some(Ok(text)) => JsonValue::Text(text.into()),
            Some(Err(e)) => {
                line.error = Some(e.to_string());
                JsonValue::raw(&value.value)
            }
            None => JsonValue::raw(&value.value),
        };
    }
    serde_json::to_writer(&mut *buf, &line)?;
    buf.push(b'\n');
    Ok(())
}

impl Sink for FileSink {
    fn write(&mut self, records: &[EgressMessage]) -> Result<(), ConnectorError> {
        self.buf.clear();
        for record in records {
            if let Err(e) = render(record, &mut self.buf) {
                // Serializing strings to memory cannot fail in practice; if it
                // does, it is a bug here, not bad data.
                return Err(ConnectorError::Config {
                    connector: EGRESS,
                    id: self.id.to_string(),
                    message: format!(
                        "cannot render a record of type `{}` as JSON: {e}; please report this bug",
                        record.value.typename
                    ),
                });
            }
        }
        let result = match &mut self.output {
            Output::File(w) => w.write_all(&self.buf),
            Output::Stdout => io::stdout().lock().write_all(&self.buf),
        };
        result.map_err(|e| self.io_error(e))
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        let result = match &mut self.output {
            Output::File(w) => w.flush(),
            Output::Stdout => io::stdout().lock().flush(),
        };
        result.map_err(|e| self.io_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TypeName {
        TypeName::parse("example/lines").unwrap()
    }

    fn source(path: &std::path::Path, value_type: &str, follow: bool) -> FileSource {
        FileSource::open(
            FileIngressConfig {
                id: id(),
                path: path.to_str().unwrap().to_string(),
                value_type: value_type.to_string(),
                follow,
            },
            0,
            1,
        )
        .unwrap()
    }

    fn write_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f.flush().unwrap();
        f
    }

    /// Polls until exhausted, checking that exhaustion comes from a call that
    /// appended nothing.
    fn drain(source: &mut FileSource, max: usize) -> Vec<SourceRecord> {
        let mut out = Vec::new();
        loop {
            let before = out.len();
            match source.poll(&mut out, max).unwrap() {
                SourceStatus::Ready => {}
                SourceStatus::Exhausted => {
                    assert_eq!(out.len(), before);
                    return out;
                }
                s => panic!("unexpected {s:?}"),
            }
        }
    }

    fn enc(typename: &str, text: &str) -> Vec<u8> {
        encode_primitive_from_text(typename, text).unwrap().unwrap()
    }

    fn record(path: &std::path::Path, line: u64, key: &[u8], value: Vec<u8>) -> SourceRecord {
        SourceRecord {
            key: Some(key.to_vec()),
            value: Some(value),
            route: 0,
            metadata: IngressMetadata::File {
                path: path.to_str().unwrap().to_string(),
                line,
            },
        }
    }

    const STRING: &str = "io.statefun.types/string";
    const INT: &str = "io.statefun.types/int";

    #[test]
    fn good_and_bad_lines() {
        let f = write_file(b"alice\thello\n\nno tab here\nbob\tworld\tand more\r\n\t\ncarol\t\n");
        let mut s = source(f.path(), STRING, false);
        let records = drain(&mut s, 100);
        let p = f.path();
        assert_eq!(
            records,
            vec![
                record(p, 1, b"alice", enc(STRING, "hello")),
                record(p, 4, b"bob", enc(STRING, "world\tand more")),
                record(p, 5, b"", enc(STRING, "")),
                record(p, 6, b"carol", enc(STRING, "")),
            ]
        );
        assert_eq!(
            s.stats(),
            SourceStats {
                records: 4,
                skipped: 1
            }
        );
    }

    #[test]
    fn primitive_values_that_do_not_parse_are_skipped() {
        let f = write_file(b"a\t1\nb\tabc\nc\t 42 \nd\t\xff\n");
        let mut s = source(f.path(), INT, false);
        let records = drain(&mut s, 100);
        let p = f.path();
        assert_eq!(
            records,
            vec![
                record(p, 1, b"a", enc(INT, "1")),
                record(p, 3, b"c", enc(INT, "42"))
            ]
        );
        assert_eq!(s.stats().skipped, 2);
    }

    #[test]
    fn raw_values_and_non_utf8_keys_pass_through() {
        let f = write_file(b"\xff\xfe\tv\xff\r\nk\t{\"a\":1}\n");
        let mut s = source(f.path(), "com.example/Json", false);
        let records = drain(&mut s, 100);
        let p = f.path();
        assert_eq!(
            records,
            vec![
                record(p, 1, b"\xff\xfe", b"v\xff".to_vec()),
                record(p, 2, b"k", b"{\"a\":1}".to_vec()),
            ]
        );
        assert_eq!(s.stats().skipped, 0);
    }

    #[test]
    fn last_line_without_newline_is_a_record() {
        let f = write_file(b"a\tx\r\nb\ty");
        let mut s = source(f.path(), STRING, false);
        let records = drain(&mut s, 100);
        let p = f.path();
        assert_eq!(
            records,
            vec![
                record(p, 1, b"a", enc(STRING, "x")),
                record(p, 2, b"b", enc(STRING, "y"))
            ]
        );
    }

    #[test]
    fn max_bounds_each_poll() {
        let f = write_file(b"a\t1\nb\t2\nc\t3\nd\t4\ne\t5\n");
        let mut s = source(f.path(), INT, false);
        let mut out = Vec::new();
        assert_eq!(s.poll(&mut out, 2).unwrap(), SourceStatus::Ready);
        assert_eq!(out.len(), 2);
        assert_eq!(s.poll(&mut out, 2).unwrap(), SourceStatus::Ready);
        assert_eq!(out.len(), 4);
        assert_eq!(s.poll(&mut out, 2).unwrap(), SourceStatus::Ready);
        assert_eq!(out.len(), 5);
        assert_eq!(s.poll(&mut out, 2).unwrap(), SourceStatus::Exhausted);
        assert_eq!(s.poll(&mut out, 2).unwrap(), SourceStatus::Exhausted);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn follow_picks_up_appended_lines() {
        let mut f = write_file(b"a\t1\nb\t2");
        let mut s = source(f.path(), INT, true);
        let idle = SourceStatus::Idle {
            retry_after: Some(FOLLOW_RETRY),
        };
        let mut out = Vec::new();
        assert_eq!(s.poll(&mut out, 100).unwrap(), idle);
        assert_eq!(out.len(), 1, "the partial line `b\\t2` is held");
        assert_eq!(s.poll(&mut out, 100).unwrap(), idle);
        assert_eq!(out.len(), 1);
        f.write_all(b"0\nc\t3\n").unwrap();
        f.flush().unwrap();
        assert_eq!(s.poll(&mut out, 100).unwrap(), idle);
        let p = f.path();
        assert_eq!(
            out,
            vec![
                record(p, 1, b"a", enc(INT, "1")),
                record(p, 2, b"b", enc(INT, "20")),
                record(p, 3, b"c", enc(INT, "3")),
            ]
        );
    }

    #[test]
    fn missing_file_names_ingress_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.tsv");
        let config = FileIngressConfig {
            id: id(),
            path: path.to_str().unwrap().to_string(),
            value_type: STRING.to_string(),
            follow: false,
        };
        let Err(e) = FileSource::open(config.clone(), 0, 2) else {
            panic!("opening a missing file must fail");
        };
        let text = e.to_string();
        assert!(
            text.starts_with("file ingress `example/lines`: cannot open `"),
            "{text}"
        );
        assert!(text.contains(path.to_str().unwrap()), "{text}");
        assert!(text.contains("check `path` in module.yaml"), "{text}");
        // Other workers do not read, so they do not fail and are done at once.
        let mut other = FileSource::open(config, 1, 2).unwrap();
        assert_eq!(
            other.poll(&mut Vec::new(), 10).unwrap(),
            SourceStatus::Exhausted
        );
    }

    #[test]
    fn bad_value_type_is_a_config_error() {
        let f = write_file(b"");
        let config = FileIngressConfig {
            id: id(),
            path: f.path().to_str().unwrap().to_string(),
            value_type: "string".to_string(),
            follow: false,
        };
        let Err(e) = FileSource::open(config, 0, 1) else {
            panic!("a value type without namespace must be rejected");
        };
        assert!(e.to_string().contains("io.statefun.types/string"), "{e}");
    }

    /// A reader fed through a channel, standing in for a pipe on stdin.
    struct ChannelReader(mpsc::Receiver<Vec<u8>>);

    impl io::Read for ChannelReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.recv() {
                Ok(chunk) => {
                    assert!(chunk.len() <= buf.len());
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    Ok(chunk.len())
                }
                Err(_) => Ok(0),
            }
        }
    }

    #[test]
    fn stdin_lines_arrive_through_the_thread_and_wake_the_engine() {
        let (tx, rx) = mpsc::channel();
        let (woken_tx, woken) = mpsc::channel::<()>();
        let woken_tx = Mutex::new(woken_tx);
        let mut s = FileSource {
            input: Input::Stdin(spawn_line_reader(Box::new(ChannelReader(rx)), &id()).unwrap()),
            decoder: LineDecoder {
                id: id(),
                path: "-".to_string(),
                value_type: INT.to_string(),
                primitive: true,
                line: 0,
                stats: SourceStats::default(),
            },
            follow: false,
        };
        let mut out = Vec::new();
        // Before a waker is set, the source asks to be polled again soon.
        assert!(matches!(
            s.poll(&mut out, 10).unwrap(),
            SourceStatus::Idle {
                retry_after: Some(_)
            }
        ));
        s.set_waker(Arc::new(move || {
            let _ = woken_tx.lock().unwrap().send(());
        }));
        assert_eq!(
            s.poll(&mut out, 10).unwrap(),
            SourceStatus::Idle { retry_after: None }
        );
        tx.send(b"a\t1\nb\t2\n".to_vec()).unwrap();
        woken.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            s.poll(&mut out, 10).unwrap(),
            SourceStatus::Idle { retry_after: None }
        );
        tx.send(b"c\t3".to_vec()).unwrap();
        drop(tx);
        loop {
            match s.poll(&mut out, 10).unwrap() {
                SourceStatus::Ready => {}
                SourceStatus::Idle { retry_after: None } => {
                    woken.recv_timeout(Duration::from_secs(10)).unwrap();
                }
                SourceStatus::Exhausted => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let p = std::path::Path::new("-");
        assert_eq!(
            out,
            vec![
                record(p, 1, b"a", enc(INT, "1")),
                record(p, 2, b"b", enc(INT, "2")),
                record(p, 3, b"c", enc(INT, "3")),
            ]
        );
    }

    // --- sink ---

    fn sink_lines(records: &[EgressMessage]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let config = FileEgressConfig {
            id: TypeName::parse("example/out").unwrap(),
            path: path.to_str().unwrap().to_string(),
        };
        let mut sink = FileSink::open(config.clone()).unwrap();
        sink.write(records).unwrap();
        sink.flush().unwrap();
        drop(sink);
        // Append mode: a second sink adds to the file.
        let mut sink = FileSink::open(config).unwrap();
        sink.write(&records[..1]).unwrap();
        sink.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(lines.pop().as_ref(), lines.first());
        lines
    }

    fn egress(typename: &str, value: Vec<u8>) -> EgressMessage {
        EgressMessage {
            egress: TypeName::parse("example/out").unwrap(),
            value: TypedValue::new(typename, value),
        }
    }

    #[test]
    fn sink_writes_exact_json_lines() {
        let kafka = KafkaProducerRecord {
            key: "k1".into(),
            value_bytes: b"hello".to_vec(),
            topic: "greetings".into(),
            ..Default::default()
        };
        let kinesis = KinesisEgressRecord {
            partition_key: "pk".into(),
            value_bytes: vec![0xff, 0x00],
            stream: "s1".into(),
            explicit_hash_key: "123".into(),
        };
        let kinesis_plain = KinesisEgressRecord {
            partition_key: "pk".into(),
            value_bytes: b"x".to_vec(),
            stream: "s2".into(),
            explicit_hash_key: String::new(),
        };
        let mut absent = egress("com.example/Thing", Vec::new());
        absent.value.has_value = false;
        let lines = sink_lines(&[
            egress(STRING, enc(STRING, "hi \"you\"")),
            egress(INT, enc(INT, "-7")),
            egress(KAFKA_PRODUCER_RECORD_TYPENAME, kafka.encode_to_vec()),
            egress(KINESIS_EGRESS_RECORD_TYPENAME, kinesis.encode_to_vec()),
            egress(
                KINESIS_EGRESS_RECORD_TYPENAME,
                kinesis_plain.encode_to_vec(),
            ),
            egress("com.example/Blob", vec![0xde, 0xad, 0xbe, 0xef]),
            egress("com.example/Json", b"{\"a\":1}".to_vec()),
            egress(KAFKA_PRODUCER_RECORD_TYPENAME, vec![0xff, 0xff]),
            egress(INT, vec![0x0d, 0xff]),
            absent,
        ]);
        let k = KAFKA_PRODUCER_RECORD_TYPENAME;
        let n = KINESIS_EGRESS_RECORD_TYPENAME;
        let expected = [
            r#"{"egress":"example/out","typename":"io.statefun.types/string","value":"hi \"you\""}"#.to_string(),
            r#"{"egress":"example/out","typename":"io.statefun.types/int","value":"-7"}"#.to_string(),
            format!(r#"{{"egress":"example/out","typename":"{k}","topic":"greetings","key":"k1","value":"hello"}}"#),
            format!(r#"{{"egress":"example/out","typename":"{n}","topic":"s1","key":"pk","explicit_hash_key":"123","value":{{"base64":"/wA="}}}}"#),
            format!(r#"{{"egress":"example/out","typename":"{n}","topic":"s2","key":"pk","value":"x"}}"#),
            r#"{"egress":"example/out","typename":"com.example/Blob","value":{"base64":"3q2+7w=="}}"#.to_string(),
            r#"{"egress":"example/out","typename":"com.example/Json","value":"{\"a\":1}"}"#.to_string(),
        ];
        assert_eq!(lines[..expected.len()], expected);
        let bad_kafka: serde_json::Value = serde_json::from_str(&lines[7]).unwrap();
        assert_eq!(bad_kafka["typename"], k);
        assert_eq!(bad_kafka["value"]["base64"], "//8=");
        assert!(bad_kafka["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot decode the KafkaProducerRecord"));
        let bad_int: serde_json::Value = serde_json::from_str(&lines[8]).unwrap();
        assert_eq!(bad_int["value"]["base64"], "Df8=");
        assert!(bad_int["error"].is_string());
        assert_eq!(
            lines[9],
            r#"{"egress":"example/out","typename":"com.example/Thing","value":null}"#
        );
        assert_eq!(lines.len(), 10);
    }

    #[test]
    fn sink_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("out.jsonl");
        let Err(e) = FileSink::open(FileEgressConfig {
            id: TypeName::parse("example/out").unwrap(),
            path: path.to_str().unwrap().to_string(),
        }) else {
            panic!("a missing directory must fail");
        };
        let text = e.to_string();
        assert!(
            text.starts_with("file egress `example/out`: cannot open `"),
            "{text}"
        );
        assert!(text.contains(path.to_str().unwrap()), "{text}");
        assert!(text.contains("create it first"), "{text}");
    }
}
