//! KPL-aggregated Kinesis records made by AWS's own aggregator (`produce.py`
//! beside this file, PyPI `aws-kinesis-agg` in the venv of
//! `ci/install-python-sdk.sh`), for the tests of the Kinesis ingress's
//! de-aggregation. Shared by `connectors/tests/kinesis_kpl.rs` and
//! `examples/crash-counter/tests/kinesis_crash.rs` (which includes this file
//! by path), so both get their aggregates from a producer independent of the
//! decoder under test.

#![allow(dead_code)] // each including test uses part of it

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A user record to aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Its partition key.
    pub pk: String,
    /// Its data (UTF-8 text, so that the test can compare what functions see).
    pub data: String,
    /// Its explicit hash key, if any.
    pub ehk: Option<String>,
}

impl UserRecord {
    /// A user record without an explicit hash key.
    pub fn new(pk: &str, data: &str) -> Self {
        UserRecord {
            pk: pk.to_string(),
            data: data.to_string(),
            ehk: None,
        }
    }
}

/// One aggregated Kinesis record, as the KPL would put it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregated {
    /// The record's partition key (the aggregator takes its first user record's).
    pub partition_key: String,
    /// The record's explicit hash key (its first user record's), if any.
    pub explicit_hash_key: Option<String>,
    /// The record's data: magic, protobuf, MD5.
    pub data: Vec<u8>,
}

/// The producer script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("connectors/tests/kpl/produce.py").exists())
        .map(|d| d.join("connectors/tests/kpl/produce.py"))
        .expect("connectors/tests/kpl/produce.py above the crate directory")
}

/// The venv's interpreter (`None`: skip the test; under CI a missing venv fails).
pub fn python() -> Option<PathBuf> {
    statefun_testkit::python_sdk()
}

/// Aggregates each group of `groups` into one Kinesis record with
/// `aws_kinesis_agg.aggregator.RecordAggregator`; panics with the script's
/// error if it fails (a group too big for one record, a missing module).
pub fn aggregate(python: &Path, groups: &[Vec<UserRecord>]) -> Vec<Aggregated> {
    let input = serde_json::Value::Array(
        groups
            .iter()
            .map(|g| {
                serde_json::Value::Array(
                    g.iter()
                        .map(|r| {
                            let mut o = serde_json::Map::new();
                            o.insert("pk".into(), r.pk.clone().into());
                            o.insert("data".into(), r.data.clone().into());
                            if let Some(e) = &r.ehk {
                                o.insert("ehk".into(), e.clone().into());
                            }
                            serde_json::Value::Object(o)
                        })
                        .collect(),
                )
            })
            .collect(),
    );
    let mut child = Command::new(python)
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {} {}: {e}", python.display(), script().display()));
    let mut stdin = child.stdin.take().expect("stdin");
    let text = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("wait for produce.py");
    writer
        .join()
        .expect("the writer thread")
        .expect("write to produce.py");
    assert!(
        out.status.success(),
        "produce.py failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Aggregated> = String::from_utf8(out.stdout)
        .expect("produce.py prints UTF-8")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            Aggregated {
                partition_key: v["partition_key"].as_str().expect("partition_key").into(),
                explicit_hash_key: v["explicit_hash_key"].as_str().map(Into::into),
                data: unhex(v["data"].as_str().expect("data")),
            }
        })
        .collect();
    assert_eq!(records.len(), groups.len(), "one record per group");
    records
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
