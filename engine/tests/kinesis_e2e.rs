//! Kinesis end to end against the emulator (ci/install-kinesis.sh): records put
//! into a 2-shard stream reach the counter function for their partition key,
//! and its replies come out through the Kinesis egress, read back with a
//! plain AWS client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, FunctionRegistry, RunOptions, Shared};
use statefun_sdk::{
    Context, FunctionError, FunctionSpec, IngressMetadata, IntType, KinesisEgressMessage, Message,
    TypeName, ValueSpec,
};
use statefun_testkit::kinesis::Emulator;

mod common;

/// Every record of `name`, as sorted (partition key, text) pairs.
fn read_all(kinesis: &Emulator, name: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = kinesis
        .read_all(name)
        .into_iter()
        .map(|(key, data)| (key, String::from_utf8_lossy(&data).into_owned()))
        .collect();
    out.sort();
    out
}

fn counter(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let count = ValueSpec::new("count", IntType);
    let n = ctx.get(&count)?.unwrap_or(0) + 1;
    ctx.set(&count, &n)?;
    let text = String::from_utf8(message.value.value.clone())?;
    let id = ctx.self_address().id.clone();
    ctx.send_egress(
        KinesisEgressMessage::for_egress(TypeName::parse("test/out")?)
            .with_stream(&format!("{}-out", text.split(':').next().unwrap_or("x")))
            .with_partition_key(&id)
            .with_utf8_value(&format!("{id} #{n}: {text}"))
            .build()?,
    );
    Ok(())
}

#[test]
fn records_flow_from_a_stream_through_functions_to_a_stream() {
    let Some(kinesis) = Emulator::connect() else {
        return;
    };
    let endpoint = kinesis.endpoint.clone();
    let suffix = std::process::id();
    let input = format!("e2e-in-{suffix}");
    let output = format!("e2e-{suffix}-out");
    kinesis.create_stream(&input, 2);
    kinesis.create_stream(&output, 1);
    let mut expected = Vec::new();
    for round in 1..=3 {
        for key in ["alice", "bob", "carol", "dave", "erin"] {
            let data = format!("e2e-{suffix}:{key}-{round}");
            kinesis.put(&input, key, data.as_bytes());
            expected.push((key.to_owned(), format!("{key} #{round}: {data}")));
        }
    }
    expected.sort();

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "kind: io.statefun.kinesis.v1/ingress
spec:
  id: test/in
  awsRegion: {{ type: custom-endpoint, endpoint: \"{endpoint}\", id: us-east-1 }}
  awsCredentials: {{ type: basic, accessKeyId: test, secretAccessKey: test }}
  startupPosition: {{ type: trim-horizon }}
  streams:
    - stream: {input}
      valueType: test/raw
      targets: [test/counter]
---
kind: io.statefun.kinesis.v1/egress
spec:
  id: test/out
  awsRegion: {{ type: custom-endpoint, endpoint: \"{endpoint}\", id: us-east-1 }}
  awsCredentials: {{ type: basic, accessKeyId: test, secretAccessKey: test }}
  streamName: {output}
"
    );
    let module = dir.path().join("module.yaml");
    std::fs::write(&module, yaml).unwrap();
    let mut registry = FunctionRegistry::new();
    registry
        .register(
            FunctionSpec::builder(TypeName::parse("test/counter").unwrap())
                .with_value_spec(&ValueSpec::new("count", IntType))
                .with_function(counter)
                .build()
                .unwrap(),
        )
        .unwrap();
    let shared = Arc::new(Shared::default());
    let options = RunOptions {
        cluster: ClusterConfig {
            workers: 2,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    };
    let s = shared.clone();
    let runner = std::thread::spawn(move || run_module(&module, &registry, &options, s));
    // The ingress is unbounded: wait (bounded) for every reply, then stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got = read_all(&kinesis, &output);
        if got.len() >= expected.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    shared.request_shutdown();
    let report = runner.join().unwrap().expect("run succeeds");
    assert_eq!(report.records_in, 15);
    assert_eq!(got, expected, "every record once, counted in order per key");
}

/// Rust functions read each record's Kinesis metadata through the whole pipeline: the
/// stream, the shard and sequence number the emulator gave the record when it was put, and
/// its arrival time.
#[test]
fn rust_functions_read_the_kinesis_metadata_of_each_record() {
    let Some(kinesis) = Emulator::connect() else {
        return;
    };
    let endpoint = kinesis.endpoint.clone();
    let input = statefun_testkit::unique_name("metadata");
    kinesis.create_stream(&input, 2);
    let expected: Vec<String> = ["alice", "bob", "carol", "dave", "erin", "frank"]
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (shard, sequence) = kinesis.put(&input, key, format!("v{i}").as_bytes());
            format!("{key} v{i} {input}/{shard}/{sequence} arrival=true sub=None")
        })
        .collect();
    let describe = |metadata: Option<&IngressMetadata>, value: &str| match metadata {
        Some(IngressMetadata::Kinesis {
            stream,
            shard_id,
            sequence_number,
            approximate_arrival_ms,
            sub_sequence_number,
            ..
        }) => format!(
            "{value} {stream}/{shard_id}/{sequence_number} arrival={} sub={sub_sequence_number:?}",
            approximate_arrival_ms.is_some_and(|ms| ms > 0),
        ),
        other => format!("unexpected {other:?}"),
    };
    let ingress = format!(
        "kind: io.statefun.kinesis.v1/ingress
spec:
  id: test/in
  awsRegion: {{ type: custom-endpoint, endpoint: \"{endpoint}\", id: us-east-1 }}
  awsCredentials: {{ type: basic, accessKeyId: test, secretAccessKey: test }}
  startupPosition: {{ type: trim-horizon }}
  streams:
    - stream: {input}
      valueType: test/raw
      targets: [test/describe]
"
    );
    common::check_described_metadata(&ingress, describe, &expected);
}
