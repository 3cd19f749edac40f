//! The file and stdin ingress: [`FileSource`] turns `KEY<TAB>VALUE` lines into
//! records.
//!
//! It owns everything on the reading side: opening the file (or starting the
//! thread that reads stdin), following a growing file, decoding lines with the
//! rate-limited log of skipped ones, and the checkpoint position (byte offset
//! and line number) a file is resumed from. It shares nothing with the sink
//! but the buffer size, so it lives apart from it.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use statefun_sdk::{IngressMetadata, SdkError, TypeName};

use super::READ_BUFFER;
use crate::codec::encode_primitive_from_text;
use crate::error::open_hint;
use crate::source::{decode_position, encode_position};
use crate::{
    ConnectorError, RecordKey, RecordMetadata, Source, SourceRecord, SourceStats, SourceStatus,
    Waker,
};

const INGRESS: &str = "file ingress";

/// How long a following source waits at the end of the file before looking
/// again: short enough for interactive use, long enough not to spin.
const FOLLOW_RETRY: Duration = Duration::from_millis(100);
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
///
/// # Resuming
///
/// A file source can resume from a checkpoint: [`Source::position`] is the
/// byte offset just after the last line `poll` has consumed (decoded or
/// skipped; a partial line held in follow mode is not consumed) together with
/// that line's number, and [`Source::seek`] continues from there, so records
/// and their `path:line` metadata come out exactly as in an uninterrupted
/// read. The file must still hold at least those bytes (it may have grown);
/// a shorter file is reported as truncated or replaced. Stdin cannot resume.
pub struct FileSource {
    input: Input,
    decoder: LineDecoder,
    follow: bool,
    /// Bytes of the file consumed so far: the offset just after the last
    /// line handed to the decoder. Only meaningful for [`Input::File`] (and
    /// [`Input::Done`] after it).
    consumed: u64,
}

/// The position of a [`FileSource`], inside the envelope of
/// [`encode_position`] with kind [`FILE_POSITION`].
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePosition {
    /// The byte offset just after the last consumed line.
    pub(crate) offset: u64,
    /// The number of that line (1-based; 0 before the first).
    pub(crate) line: u64,
}

/// The `kind` of file ingress positions.
pub(crate) const FILE_POSITION: &str = "file";

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
            key: Some(RecordKey::from_slice(key)),
            value: Some(value),
            route: 0,
            metadata: RecordMetadata::Record(Box::new(IngressMetadata::File {
                path: self.path.clone(),
                line: self.line,
            })),
            rejected: None,
        });
    }

    fn skip(&mut self, reason: SkipReason) {
        self.stats.skipped += 1;
        let n = self.stats.skipped;
        if n <= SKIP_LOG_FIRST || n.is_multiple_of(SKIP_LOG_EVERY) {
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
        ConnectorError::io(
            INGRESS,
            &self.id,
            &self.path,
            format!(
                "reading stopped after line {}; check the file or device, then restart the job",
                self.line
            ),
            e,
        )
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
            return Err(ConnectorError::config(
                INGRESS,
                &id,
                format!("valueType of `{path}`: {e}; use e.g. `io.statefun.types/string`"),
            ));
        }
        let primitive = encode_primitive_from_text(&value_type, "").is_some();
        let input = if worker_index != 0 {
            Input::Inactive
        } else if path == "-" {
            Input::Stdin(spawn_line_reader(Box::new(io::stdin()), &id)?)
        } else {
            let file = File::open(&path).map_err(|e| {
                ConnectorError::open(INGRESS, &id, &path, open_hint(e.kind(), false), e)
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
            consumed: 0,
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
        .map_err(|e| {
            ConnectorError::open(
                INGRESS,
                id,
                "-",
                "could not start the stdin reader thread; check the process's thread limit",
                e,
            )
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
                            self.consumed += partial.len() as u64;
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
                        // Skipped lines are consumed too: the offset moves
                        // over every line the decoder has seen.
                        self.consumed += partial.len() as u64;
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

    fn position(&self) -> Option<Vec<u8>> {
        match self.input {
            Input::Stdin(_) => None,
            // Inactive workers report (and later accept) the empty position,
            // so every worker's position is valid.
            Input::Inactive | Input::File { .. } | Input::Done => encode_position(
                FILE_POSITION,
                &FilePosition {
                    offset: self.consumed,
                    line: self.decoder.line,
                },
            ),
        }
    }

    fn seek(&mut self, position: &[u8]) -> Result<(), ConnectorError> {
        let id = self.decoder.id.to_string();
        let FilePosition { offset, line } = decode_position(position, FILE_POSITION, INGRESS, &id)?;
        let path = &self.decoder.path;
        match &mut self.input {
            Input::Inactive => Ok(()),
            Input::Stdin(_) => Err(ConnectorError::config(
                INGRESS,
                id,
                "stdin (`-`) cannot resume from a checkpoint: what was read is gone; \
                 read from a file to resume, or start the job without restoring",
            )),
            Input::Done => Err(ConnectorError::config(
                INGRESS,
                id,
                format!(
                    "cannot seek `{path}` after it was read to its end; restore positions \
                     right after opening, before the first poll"
                ),
            )),
            Input::File { reader, partial } => {
                let io_error = |e: io::Error, what: &str| {
                    ConnectorError::io(
                        INGRESS,
                        &id,
                        path,
                        format!("{what} failed while resuming from a checkpoint; check the file"),
                        e,
                    )
                };
                let length = reader
                    .get_ref()
                    .metadata()
                    .map_err(|e| io_error(e, "reading the file's length"))?
                    .len();
                if length < offset {
                    return Err(ConnectorError::config(
                        INGRESS,
                        id,
                        format!(
                            "cannot resume: `{path}` is {length} bytes long, but the checkpoint \
                             was taken after reading {offset} bytes (line {line}); the file was \
                             truncated or replaced since the checkpoint. Restore the file, or \
                             delete the state directory to start the job over"
                        ),
                    ));
                }
                reader
                    .seek(SeekFrom::Start(offset))
                    .map_err(|e| io_error(e, "seeking"))?;
                partial.clear();
                self.consumed = offset;
                self.decoder.line = line;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::test_support::{enc, INT, STRING};
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

    fn record(path: &std::path::Path, line: u64, key: &[u8], value: Vec<u8>) -> SourceRecord {
        SourceRecord {
            key: Some(RecordKey::from_slice(key)),
            value: Some(value),
            route: 0,
            metadata: IngressMetadata::File {
                path: path.to_str().unwrap().to_string(),
                line,
            }
            .into(),
            rejected: None,
        }
    }

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

    /// An `INT` source reading "stdin" from `rx` on the reader thread, as
    /// [`FileSource::open`] builds it for `-`.
    fn stdin_source(rx: mpsc::Receiver<Vec<u8>>) -> FileSource {
        FileSource {
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
            consumed: 0,
        }
    }

    #[test]
    fn stdin_lines_arrive_through_the_thread_and_wake_the_engine() {
        let (tx, rx) = mpsc::channel();
        let (woken_tx, woken) = mpsc::channel::<()>();
        let woken_tx = Mutex::new(woken_tx);
        let mut s = stdin_source(rx);
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

    // --- resuming the source ---

    /// Reads `first` polls of `max` lines, takes the position, opens a fresh
    /// source, seeks it there and drains it: returns (before, after).
    fn read_split(
        path: &std::path::Path,
        value_type: &str,
        first: usize,
        max: usize,
    ) -> (Vec<SourceRecord>, Vec<SourceRecord>) {
        let mut s = source(path, value_type, false);
        let mut before = Vec::new();
        for _ in 0..first {
            s.poll(&mut before, max).unwrap();
        }
        let position = s.position().expect("a file source can resume");
        drop(s);
        let mut resumed = source(path, value_type, false);
        resumed.seek(&position).unwrap();
        (before, drain(&mut resumed, max))
    }

    #[test]
    fn resumed_file_source_continues_exactly() {
        // Good, empty, bad (no TAB, bad int) lines and a last line without `\n`.
        let f = write_file(b"a\t1\n\nno tab\nb\tx\r\nc\t3\r\nd\t4\n\ne\t5\nf\t6");
        let whole = drain(&mut source(f.path(), INT, false), 100);
        assert_eq!(whole.len(), 5);
        for max in [1, 2, 3] {
            for first in 0..=10 {
                let (mut before, after) = read_split(f.path(), INT, first, max);
                before.extend(after);
                assert_eq!(before, whole, "split after {first} polls of {max}");
            }
        }
    }

    #[test]
    fn position_after_exhaustion_and_of_inactive_workers() {
        let f = write_file(b"a\tx\nb\ty");
        let mut s = source(f.path(), STRING, false);
        let records = drain(&mut s, 100);
        assert_eq!(records.len(), 2);
        let done = s.position().unwrap();
        assert_eq!(
            decode_position::<FilePosition>(&done, FILE_POSITION, INGRESS, "x").unwrap(),
            FilePosition { offset: 7, line: 2 }
        );
        // Seeking to the end: nothing more to read.
        let mut resumed = source(f.path(), STRING, false);
        resumed.seek(&done).unwrap();
        assert!(drain(&mut resumed, 100).is_empty());

        let config = FileIngressConfig {
            id: id(),
            path: f.path().to_str().unwrap().to_string(),
            value_type: STRING.to_string(),
            follow: false,
        };
        let other = FileSource::open(config.clone(), 1, 2).unwrap();
        let position = other.position().expect("inactive workers have a position");
        let mut other = FileSource::open(config, 1, 2).unwrap();
        other.seek(&position).unwrap();
        assert_eq!(
            other.poll(&mut Vec::new(), 10).unwrap(),
            SourceStatus::Exhausted
        );
    }

    #[test]
    fn held_partial_line_is_not_consumed() {
        let mut f = write_file(b"a\t1\nb\t");
        let mut s = source(f.path(), INT, true);
        let mut before = Vec::new();
        s.poll(&mut before, 100).unwrap();
        assert_eq!(before.len(), 1);
        let position = s.position().unwrap();
        drop(s);
        f.write_all(b"2\nc\t3\n").unwrap();
        f.flush().unwrap();
        let mut resumed = source(f.path(), INT, true);
        resumed.seek(&position).unwrap();
        let mut after = Vec::new();
        resumed.poll(&mut after, 100).unwrap();
        let p = f.path();
        assert_eq!(
            after,
            vec![
                record(p, 2, b"b", enc(INT, "2")),
                record(p, 3, b"c", enc(INT, "3")),
            ]
        );
    }

    #[test]
    fn bad_positions_are_errors() {
        let f = write_file(b"a\t1\n");
        let mut s = source(f.path(), INT, false);
        let bad: [&[u8]; 6] = [
            b"",
            b"\xff\x00garbage",
            br#"{"kind":"generator","version":1,"position":{"next":0,"records":0}}"#,
            br#"{"kind":"file","version":99,"position":{"offset":0,"line":0}}"#,
            br#"{"kind":"file","version":1,"position":{"offset":-1,"line":0}}"#,
            br#"{"kind":"file","version":1,"position":{"offset":0}}"#,
        ];
        for bytes in bad {
            let Err(e) = s.seek(bytes) else {
                panic!("{:?} must be rejected", String::from_utf8_lossy(bytes));
            };
            let text = e.to_string();
            assert!(
                text.starts_with("file ingress `example/lines`: cannot resume"),
                "{text}"
            );
        }
        // The source is still usable from where it was.
        assert_eq!(drain(&mut s, 10).len(), 1);
    }

    #[test]
    fn truncated_file_is_an_error() {
        let f = write_file(b"a\t1\nb\t2\nc\t3\n");
        let mut s = source(f.path(), INT, false);
        s.poll(&mut Vec::new(), 2).unwrap();
        let position = s.position().unwrap();
        drop(s);
        f.as_file().set_len(4).unwrap();
        let mut resumed = source(f.path(), INT, false);
        let Err(e) = resumed.seek(&position) else {
            panic!("a truncated file must be rejected");
        };
        let text = e.to_string();
        assert!(text.contains(f.path().to_str().unwrap()), "{text}");
        assert!(text.contains("truncated or replaced"), "{text}");
    }

    #[test]
    fn stdin_cannot_resume() {
        let (_tx, rx) = mpsc::channel();
        let mut s = stdin_source(rx);
        assert_eq!(s.position(), None);
        let position = encode_position(FILE_POSITION, &FilePosition { offset: 0, line: 0 });
        let Err(e) = s.seek(&position.unwrap()) else {
            panic!("stdin must not seek");
        };
        assert!(e.to_string().contains("stdin"), "{e}");
    }
}
