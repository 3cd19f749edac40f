//! The file and stdout egress: [`FileSink`] writes one JSON line per egress
//! record, unpacking Kafka and Kinesis records so that a module can run with a
//! file egress in place of a broker.
//!
//! It owns the output (an appended file or stdout), the JSON rendering and the
//! [`Sink`] calls. The exactly-once bookkeeping that `open` and `commit` drive
//! is in the sibling `marker` module: it is a durability protocol of its own
//! (atomic replacement, directory syncs, recovery checks), not formatting.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};

use base64::Engine as _;
use prost::Message as _;
use serde::Serialize;
use statefun_sdk::{EgressMessage, TypeName, TypedValue};

use super::marker::{prepare_exactly_once, write_marker, DeliveryMarker, ExactlyOnce};
use super::{EGRESS, READ_BUFFER};
use crate::codec::{
    decode_primitive_to_text, KafkaProducerRecord, KinesisEgressRecord,
    KAFKA_PRODUCER_RECORD_TYPENAME, KINESIS_EGRESS_RECORD_TYPENAME,
};
use crate::error::open_hint;
use crate::{ConnectorError, Sink};

/// The configuration of a file (or stdout) egress.
#[derive(Clone, Debug)]
pub struct FileEgressConfig {
    /// The egress id, used in errors.
    pub id: TypeName,
    /// The file to append to; `-` writes to stdout.
    pub path: String,
    /// Deliver every line exactly once across crashes and restores
    /// (`deliverySemantic: exactly-once`): the sink keeps a delivery marker
    /// beside the file and, on resume, cuts off lines of checkpoints that never
    /// completed. Needs a regular file (not `-`), since it must truncate it.
    pub exactly_once: bool,
    /// The job restarts from a checkpoint: with `exactly_once`, the sink reads
    /// its delivery marker and truncates the file to what was delivered instead
    /// of starting a new marker. Without `exactly_once` it changes nothing.
    pub resume: bool,
}

/// A sink that writes one JSON object per egress record and line.
///
/// The format is meant for people and for `jq`:
/// `{"egress":"ns/name","typename":"…","topic":…,"key":…,"value":…}`.
/// Kafka and Kinesis records are unpacked (`topic`/`key`, `headers` as
/// `[key, value]` pairs when a Kafka record has any, and
/// `explicit_hash_key` when set) so the same module can run with a file egress
/// in place of a broker. `value` is the decoded text of an `io.statefun.types`
/// primitive, otherwise the UTF-8 text of the bytes, otherwise
/// `{"base64":"…"}`. A record that cannot be decoded is written raw with an
/// `"error"` field rather than dropped, because a debugging sink that hides
/// records defeats its purpose.
///
/// The file is opened in append mode so restarts add to it instead of
/// overwriting what earlier runs wrote.
///
/// # Exactly-once
///
/// With [`FileEgressConfig::exactly_once`] a marker file `<path>.delivered`
/// beside the output holds `{"checkpoint":C,"length":L}`: the file's first `L`
/// bytes are everything delivered up to checkpoint `C`. [`Sink::commit`]
/// makes the lines written so far durable (`fdatasync`) before it moves the
/// marker, and the marker is always replaced atomically (write
/// `<path>.delivered.tmp`, sync it, rename it over, sync the directory), so a
/// crash at any point leaves a marker that describes durable data. A job
/// resumed from a checkpoint truncates the file to `L`, dropping the lines of
/// checkpoints that never completed, and reports `C` as
/// [`Sink::delivered`] so the engine does not write them again. A fresh job
/// writes the marker `{"checkpoint":0,"length":<current length>}` so that
/// lines of earlier runs are kept.
pub struct FileSink {
    id: TypeName,
    path: String,
    output: Output,
    /// The JSON lines of the current batch, reused between batches.
    buf: Vec<u8>,
    /// The exactly-once bookkeeping; `None` in at-least-once mode.
    exactly_once: Option<ExactlyOnce>,
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
    /// Kafka record headers, in order, as `[key, value]` pairs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(&'a str, JsonValue<'a>)>,
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
    ///
    /// With `exactly_once` it also writes a fresh delivery marker, or with
    /// `resume` reads it and truncates the file to the delivered length; a
    /// missing or corrupt marker, or a file shorter than the marker says, is an
    /// error naming the file (see [`FileSink`]).
    pub fn open(config: FileEgressConfig) -> Result<FileSink, ConnectorError> {
        let FileEgressConfig {
            id,
            path,
            exactly_once,
            resume,
        } = config;
        if path == "-" {
            if exactly_once {
                return Err(ConnectorError::config(
                    EGRESS,
                    &id,
                    "deliverySemantic exactly-once needs a file it can truncate after a \
                     crash, and stdout (`-`) is not one; set `path` to a file, or use \
                     `at-least-once` for stdout",
                ));
            }
            return Ok(FileSink {
                id,
                path,
                output: Output::Stdout,
                buf: Vec::new(),
                exactly_once: None,
            });
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ConnectorError::open(EGRESS, &id, &path, open_hint(e.kind(), true), e))?;
        let exactly_once = if exactly_once {
            Some(prepare_exactly_once(&id, &path, &file, resume)?)
        } else {
            None
        };
        Ok(FileSink {
            id,
            path,
            output: Output::File(BufWriter::with_capacity(READ_BUFFER, file)),
            buf: Vec::new(),
            exactly_once,
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
        ConnectorError::io(EGRESS, &self.id, &self.path, hint, e)
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
        headers: Vec::new(),
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
                line.headers = kafka
                    .headers
                    .iter()
                    .map(|h| (h.key.as_str(), JsonValue::raw(&h.value)))
                    .collect();
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
                return Err(ConnectorError::config(
                    EGRESS,
                    &self.id,
                    format!(
                        "cannot render a record of type `{}` as JSON: {e}; please report this bug",
                        record.value.typename
                    ),
                ));
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

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        // The data first: the marker must never claim bytes a crash can lose.
        let synced = match &mut self.output {
            Output::File(w) if self.exactly_once.is_some() => w
                .flush()
                .and_then(|()| w.get_ref().sync_data())
                .and_then(|()| w.get_ref().metadata())
                .map(|m| m.len()),
            // At-least-once (exactly-once never has stdout): flushing is all.
            _ => return self.flush(),
        };
        let length = synced.map_err(|e| self.io_error(e))?;
        let Some(exactly_once) = &mut self.exactly_once else {
            return Ok(());
        };
        let marker = DeliveryMarker { checkpoint, length };
        if let Err(e) = write_marker(&exactly_once.marker, &marker) {
            return Err(ConnectorError::io(
                EGRESS,
                &self.id,
                exactly_once.marker.display().to_string(),
                format!(
                    "cannot record checkpoint {checkpoint} as delivered; check free space and \
                     write permission on the directory, then restart the job"
                ),
                e,
            ));
        }
        exactly_once.delivered = Some(checkpoint);
        Ok(())
    }

    fn delivered(&self) -> Option<u64> {
        self.exactly_once.as_ref().and_then(|e| e.delivered)
    }
}

#[cfg(test)]
mod tests {
    use statefun_sdk::proto::egress::kafka_producer_record::Header;

    use super::super::test_support::{egress, enc, INT, STRING};
    use super::*;

    fn sink_lines(records: &[EgressMessage]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let config = FileEgressConfig {
            id: TypeName::parse("example/out").unwrap(),
            path: path.to_str().unwrap().to_string(),
            exactly_once: false,
            resume: false,
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

    #[test]
    fn sink_writes_exact_json_lines() {
        let kafka = KafkaProducerRecord {
            key: "k1".into(),
            value_bytes: b"hello".to_vec(),
            topic: "greetings".into(),
            headers: vec![
                Header {
                    key: "trace".into(),
                    value: b"t-1".to_vec(),
                },
                Header {
                    key: "raw".into(),
                    value: vec![0xff],
                },
            ],
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
            format!(r#"{{"egress":"example/out","typename":"{k}","topic":"greetings","key":"k1","value":"hello","headers":[["trace","t-1"],["raw",{{"base64":"/w=="}}]]}}"#),
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
            exactly_once: false,
            resume: false,
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

    #[test]
    fn exactly_once_rejects_stdout() {
        let config = FileEgressConfig {
            id: TypeName::parse("example/out").unwrap(),
            path: "-".to_string(),
            exactly_once: true,
            resume: false,
        };
        let Err(e) = FileSink::open(config) else {
            panic!("stdout cannot be exactly-once");
        };
        assert!(matches!(e, ConnectorError::Config { .. }));
        let text = e.to_string();
        assert!(text.starts_with("file egress `example/out`:"), "{text}");
        assert!(text.contains("exactly-once"), "{text}");
    }
}
