//! Kinesis end to end against the emulator (ci/install-kinesis.sh): records put
//! into a 2-shard stream reach the counter function for their partition key,
//! and its replies come out through the Kinesis egress, read back with a
//! plain AWS client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, FunctionRegistry, RunOptions, Shared};
use statefun_sdk::{
    Context, FunctionError, FunctionSpec, IntType, KinesisEgressMessage, Message, TypeName,
    ValueSpec,
};

async fn client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&config)
}

async fn create(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .expect("describe");
        let status = d
            .stream_description_summary()
            .map(|s| s.stream_status().as_str().to_owned());
        if status.as_deref() == Some("ACTIVE") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} did not become active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_all(client: &aws_sdk_kinesis::Client, name: &str) -> Vec<(String, String)> {
    let shards = client
        .list_shards()
        .stream_name(name)
        .send()
        .await
        .expect("list shards");
    let mut out = Vec::new();
    for shard in shards.shards() {
        let it = client
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator");
        let mut iterator = it.shard_iterator().map(str::to_owned);
        for _ in 0..5 {
            let Some(i) = iterator.take() else { break };
            let r = client
                .get_records()
                .shard_iterator(i)
                .send()
                .await
                .expect("get records");
            for record in r.records() {
                out.push((
                    record.partition_key().unwrap_or_default().to_owned(),
                    String::from_utf8_lossy(record.data().as_ref()).into_owned(),
                ));
            }
            if r.records().is_empty() {
                break;
            }
            iterator = r.next_shard_iterator().map(str::to_owned);
        }
    }
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
    let Some(endpoint) = statefun_testkit::kinesis_endpoint() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let suffix = std::process::id();
    let input = format!("e2e-in-{suffix}");
    let output = format!("e2e-{suffix}-out");
    let kinesis = runtime.block_on(client(&endpoint));
    runtime.block_on(create(&kinesis, &input, 2));
    runtime.block_on(create(&kinesis, &output, 1));
    let mut expected = Vec::new();
    for round in 1..=3 {
        for key in ["alice", "bob", "carol", "dave", "erin"] {
            let data = format!("e2e-{suffix}:{key}-{round}");
            runtime
                .block_on(
                    kinesis
                        .put_record()
                        .stream_name(&input)
                        .partition_key(key)
                        .data(Blob::new(data.clone()))
                        .send(),
                )
                .expect("put record");
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
        got = runtime.block_on(read_all(&kinesis, &output));
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
