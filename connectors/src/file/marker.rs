//! The delivery marker of an exactly-once [`FileSink`](super::FileSink): the
//! file `<path>.delivered` beside the output, `{"checkpoint":C,"length":L}`.
//!
//! It owns the marker's format, its atomic and durable replacement, and what
//! happens when a sink opens: a fresh job writes a new marker, a resumed one
//! reads it back and truncates the file to the delivered length. It is apart
//! from the sink because its correctness rests on crash ordering, which is
//! easier to review without the JSON rendering around it.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use statefun_sdk::TypeName;

use super::EGRESS;
use crate::ConnectorError;

/// What an exactly-once [`FileSink`](super::FileSink) knows about its delivery marker.
pub(super) struct ExactlyOnce {
    /// `<path>.delivered`.
    pub(super) marker: PathBuf,
    /// The last checkpoint the marker records (`None` for checkpoint 0, the
    /// marker of a fresh start).
    pub(super) delivered: Option<u64>,
}

/// The content of the delivery marker `<path>.delivered`.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveryMarker {
    /// The last delivered checkpoint; 0 when none was yet.
    pub(super) checkpoint: u64,
    /// The file's length in bytes when that checkpoint was delivered.
    pub(super) length: u64,
}

/// The delivery marker of the output file `path`.
fn marker_path(path: &str) -> PathBuf {
    PathBuf::from(format!("{path}.delivered"))
}

/// Replaces the marker at `marker` atomically and durably: a reader (after any
/// crash) sees either the old or the new marker, never a partial one.
pub(super) fn write_marker(marker: &Path, content: &DeliveryMarker) -> io::Result<()> {
    let json = serde_json::to_vec(content).map_err(io::Error::other)?;
    let mut tmp = marker.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, marker)?;
    sync_parent_dir(marker)
}

/// Makes a rename in `path`'s directory durable.
#[cfg(unix)]
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing here; the rename is as durable as
/// the platform makes it.
#[cfg(not(unix))]
fn sync_parent_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Sets up exactly-once delivery for the freshly opened `file` at `path`: a
/// new marker for a fresh job, or (with `resume`) the marker read back and the
/// file truncated to the delivered length.
pub(super) fn prepare_exactly_once(
    id: &TypeName,
    path: &str,
    file: &File,
    resume: bool,
) -> Result<ExactlyOnce, ConnectorError> {
    let marker = marker_path(path);
    let shown = marker.display().to_string();
    let io_error =
        |e: io::Error, on: &str, hint: String| ConnectorError::io(EGRESS, id, on, hint, e);
    let config_error = |message: String| ConnectorError::config(EGRESS, id, message);
    const START_OVER: &str = "or delete the state directory to start the job over";
    let length = file
        .metadata()
        .map_err(|e| io_error(e, path, "cannot read the file's length".to_string()))?
        .len();
    if !resume {
        // Remember where this job's lines start, so a later recovery keeps
        // what earlier runs wrote.
        write_marker(
            &marker,
            &DeliveryMarker {
                checkpoint: 0,
                length,
            },
        )
        .map_err(|e| {
            io_error(
                e,
                &shown,
                "cannot write the delivery marker of exactly-once delivery; check free space \
                 and write permission on the directory of the egress file"
                    .to_string(),
            )
        })?;
        return Ok(ExactlyOnce {
            marker,
            delivered: None,
        });
    }
    let bytes = match std::fs::read(&marker) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(config_error(format!(
                "cannot resume exactly-once delivery to `{path}`: its delivery marker `{shown}` \
                 does not exist (it is written beside the file when the job starts); restore \
                 the marker together with the file, {START_OVER}"
            )))
        }
        Err(e) => {
            return Err(io_error(
                e,
                &shown,
                format!(
                "cannot read the delivery marker of `{path}`; check its permissions, {START_OVER}"
            ),
            ))
        }
    };
    let delivered: DeliveryMarker = serde_json::from_slice(&bytes).map_err(|e| {
        config_error(format!(
            "cannot resume exactly-once delivery to `{path}`: its delivery marker `{shown}` is \
             corrupt ({e}; expected {{\"checkpoint\":N,\"length\":N}}); restore the marker \
             together with the file, {START_OVER}"
        ))
    })?;
    if length < delivered.length {
        return Err(config_error(format!(
            "cannot resume exactly-once delivery: `{path}` is {length} bytes long, but \
             checkpoint {} delivered {} bytes to it (marker `{shown}`); the file was truncated \
             or replaced by someone else since. Restore the file, {START_OVER}",
            delivered.checkpoint, delivered.length
        )));
    }
    // Drop the lines of checkpoints that never completed; the engine writes
    // them again from the restored state.
    file.set_len(delivered.length)
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            io_error(
                e,
                path,
                "cannot truncate the file to its delivered length; check permissions".to_string(),
            )
        })?;
    Ok(ExactlyOnce {
        marker,
        delivered: (delivered.checkpoint != 0).then_some(delivered.checkpoint),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{egress, enc, STRING};
    use super::super::{FileEgressConfig, FileSink};
    use super::*;
    use crate::Sink;

    fn eo_config(path: &std::path::Path, resume: bool) -> FileEgressConfig {
        FileEgressConfig {
            id: TypeName::parse("example/out").unwrap(),
            path: path.to_str().unwrap().to_string(),
            exactly_once: true,
            resume,
        }
    }

    fn marker_of(path: &std::path::Path) -> DeliveryMarker {
        let bytes = std::fs::read(marker_path(path.to_str().unwrap())).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn exactly_once_commit_then_resume_reports_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"earlier run\n").unwrap();
        let mut sink = FileSink::open(eo_config(&path, false)).unwrap();
        assert_eq!(sink.delivered(), None);
        assert_eq!(
            marker_of(&path),
            DeliveryMarker {
                checkpoint: 0,
                length: 12
            }
        );
        sink.write(&[egress(STRING, enc(STRING, "one"))]).unwrap();
        sink.commit(3).unwrap();
        assert_eq!(sink.delivered(), Some(3));
        let length = std::fs::metadata(&path).unwrap().len();
        assert_eq!(
            marker_of(&path),
            DeliveryMarker {
                checkpoint: 3,
                length
            }
        );
        assert!(!dir.path().join("out.jsonl.delivered.tmp").exists());
        drop(sink);
        let sink = FileSink::open(eo_config(&path, true)).unwrap();
        assert_eq!(sink.delivered(), Some(3));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), length);
    }

    #[test]
    fn exactly_once_resume_truncates_undelivered_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"earlier run\n").unwrap();
        let mut sink = FileSink::open(eo_config(&path, false)).unwrap();
        // Nothing delivered yet: a crash now keeps only the earlier run.
        sink.write(&[egress(STRING, enc(STRING, "lost"))]).unwrap();
        drop(sink);
        let mut sink = FileSink::open(eo_config(&path, true)).unwrap();
        assert_eq!(sink.delivered(), None, "checkpoint 0 is no delivery");
        assert_eq!(std::fs::read(&path).unwrap(), b"earlier run\n");

        sink.write(&[egress(STRING, enc(STRING, "one"))]).unwrap();
        sink.commit(1).unwrap();
        let committed = std::fs::read(&path).unwrap();
        sink.write(&[egress(STRING, enc(STRING, "two"))]).unwrap();
        sink.flush().unwrap();
        // A "crash": the BufWriter's drop writes the rest, which a resume drops.
        drop(sink);
        assert!(std::fs::read(&path).unwrap().len() > committed.len());
        let mut sink = FileSink::open(eo_config(&path, true)).unwrap();
        assert_eq!(sink.delivered(), Some(1));
        assert_eq!(std::fs::read(&path).unwrap(), committed);
        // Writing continues right after the delivered lines.
        sink.write(&[egress(STRING, enc(STRING, "two"))]).unwrap();
        sink.commit(2).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "earlier run");
        assert!(
            lines[1].contains("\"one\"") && lines[2].contains("\"two\""),
            "{text}"
        );
    }

    #[test]
    fn exactly_once_missing_or_corrupt_marker_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let marker = marker_path(path.to_str().unwrap());
        let Err(e) = FileSink::open(eo_config(&path, true)) else {
            panic!("resuming without a marker must fail");
        };
        let text = e.to_string();
        assert!(text.contains(marker.to_str().unwrap()), "{text}");
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains("delete the state directory"), "{text}");

        for corrupt in [
            &b"{\"checkpoint\":1"[..],
            b"\xff\xfe",
            b"{\"checkpoint\":-1,\"length\":0}",
        ] {
            std::fs::write(&marker, corrupt).unwrap();
            let Err(e) = FileSink::open(eo_config(&path, true)) else {
                panic!("a corrupt marker must fail");
            };
            let text = e.to_string();
            assert!(text.contains(marker.to_str().unwrap()), "{text}");
            assert!(text.contains("corrupt"), "{text}");
        }

        // A file shorter than the marker says was truncated by someone else.
        std::fs::write(&path, b"short\n").unwrap();
        std::fs::write(&marker, br#"{"checkpoint":4,"length":100}"#).unwrap();
        let Err(e) = FileSink::open(eo_config(&path, true)) else {
            panic!("a truncated file must fail");
        };
        let text = e.to_string();
        assert!(text.contains(path.to_str().unwrap()), "{text}");
        assert!(text.contains("truncated or replaced"), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), b"short\n", "left untouched");
    }

    #[test]
    fn at_least_once_commit_flushes_and_tracks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut config = eo_config(&path, true);
        config.exactly_once = false;
        let mut sink = FileSink::open(config).unwrap();
        sink.write(&[egress(STRING, enc(STRING, "x"))]).unwrap();
        sink.commit(7).unwrap();
        assert_eq!(sink.delivered(), None);
        assert!(!std::fs::read(&path).unwrap().is_empty());
        assert!(!marker_path(path.to_str().unwrap()).exists());
    }
}
