//! Every YAML snippet of the seed documents (`shared/reference/`) loads.
//!
//! Whole documents are loaded as they are. Fragments (a `targets:` list, a
//! `startupPosition:` block, …) are placed where they belong in a minimal module.
//! The legacy snippets of `io-module.txt` have placeholders (`type: # ingress type`);
//! they are tested with a real type and spec filled in, keeping their shape
//! (including `meta`/`spec` written as siblings of `- ingress:`).
//! The Kinesis snippets lost their indentation in the seed text; they are tested
//! with the indentation their structure implies.

use statefun_module::*;

fn load(text: &str) -> Module {
    match load_str(text, "module.yaml") {
        Ok(m) => m,
        Err(e) => panic!("does not load:\n{e}\n--- input ---\n{text}"),
    }
}

fn kafka_ingress_with(topics: &str, extra: &str) -> String {
    format!(
        "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: example/orders\n  address: kafka.svc:9092\n  consumerGroupId: example-orders\n{extra}{topics}"
    )
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

// ---- io-module.txt -------------------------------------------------------

#[test]
fn io_module_legacy_ingress() {
    // As in the document, with the placeholders filled in.
    let text = r#"version: "3.0"

module:
  meta:
    type: remote
  spec:
    ingresses:
      - ingress:
        meta:
          id: example/user-ingress
          type: io.statefun.kafka/ingress
        spec:
          address: kafka:9092
          consumerGroupId: users
          topics:
            - topic: users
              valueType: io.statefun.types/string
              targets:
                - example/user
"#;
    let m = load(text);
    assert_eq!(m.ingresses[0].id.to_string(), "example/user-ingress");
    assert!(matches!(m.ingresses[0].spec, IngressSpec::Kafka(_)));
}

#[test]
fn io_module_legacy_ingress_placeholder_shape_is_reported() {
    // Verbatim: the placeholders leave `type` and `spec` empty, which must be reported, not crash.
    let text = r#"version: "3.0"

module:
  meta:
    type: remote
  spec:
    ingresses:
      - ingress:
        meta:
          id: example/user-ingress
          type: # ingress type
        spec: # ingress specific configurations
"#;
    let e = load_str(text, "module.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "module.yaml:11:11: document 1, module.spec.ingresses[0].meta.type: must not be empty"
    );
}

#[test]
fn io_module_router_targets() {
    let snippet =
        "targets:\n    - example-namespace/my-function-1\n    - example-namespace/my-function-2\n";
    let text = format!(
        "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: example/in\n  path: \"-\"\n  valueType: io.statefun.types/string\n{}",
        indent(snippet, 2)
    );
    let m = load(&text);
    let routes = m.ingresses[0].routes();
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0]
            .targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "example-namespace/my-function-1",
            "example-namespace/my-function-2"
        ]
    );
}

#[test]
fn io_module_legacy_egress() {
    let text = r#"version: "3.0"

module:
  meta:
    type: remote
  spec:
    egresses:
      - egress:
        meta:
          id: example/user-egress
          type: io.statefun.kafka/egress
        spec:
          address: kafka:9092
"#;
    let m = load(text);
    assert_eq!(m.egresses[0].id.to_string(), "example/user-egress");
}

// ---- kafka-io.txt --------------------------------------------------------

const KAFKA_INGRESS: &str = r#"kind: io.statefun.kafka.v1/ingress
spec:
  id: example/orders
  address: kafka.svc:9092
  consumerGroupId: example-orders
  startupPosition:
    type: latest                   # or earliest, group-offsets, specific-offsets
  topics:
    - topic: example.orders
      valueType: example/Order      # registered SDK type
      targets:
        - example/order-handler
"#;

#[test]
fn kafka_ingress_document() {
    let m = load(KAFKA_INGRESS);
    let IngressSpec::Kafka(k) = &m.ingresses[0].spec else {
        panic!("not kafka")
    };
    assert_eq!(k.address, "kafka.svc:9092");
    assert_eq!(k.consumer_group_id, "example-orders");
    assert_eq!(k.startup_position, KafkaStartupPosition::Latest);
    assert_eq!(k.topics[0].topic, "example.orders");
    assert_eq!(k.topics[0].value_type.to_string(), "example/Order");
}

#[test]
fn kafka_startup_at_timestamp() {
    let snippet = "startupPosition:\n  type: at-timestamp\n  timestamp: \"2026-04-23T00:00:00.000Z\"     # ISO-8601\n";
    let text = kafka_ingress_with(
        "  topics:\n    - topic: t\n      valueType: example/Order\n      targets: [example/h]\n",
        &indent(snippet, 2),
    );
    let m = load(&text);
    let IngressSpec::Kafka(k) = &m.ingresses[0].spec else {
        panic!("not kafka")
    };
    let KafkaStartupPosition::AtTimestamp(t) = &k.startup_position else {
        panic!("not at-timestamp")
    };
    assert_eq!(t.epoch_millis, 1_776_902_400_000);
}

#[test]
fn kafka_egress_document() {
    let text = r#"kind: io.statefun.kafka.v1/egress
spec:
  id: example/notifications
  address: kafka.svc:9092
  deliverySemantic:
    type: exactly-once
    transactionTimeoutMillis: 60000
"#;
    let m = load(text);
    let EgressSpec::Kafka(k) = &m.egresses[0].spec else {
        panic!("not kafka")
    };
    assert_eq!(
        k.transaction_timeout(),
        Some(std::time::Duration::from_secs(60))
    );
    assert!(m.warnings.is_empty());
}

#[test]
fn kafka_routing_to_multiple_namespaces() {
    let snippet = "topics:\n  - topic: orders.events\n    valueType: example/OrderEvent\n    targets:\n      - orders/order-handler\n      - audit/order-audit\n      - billing/order-billing\n";
    let m = load(&kafka_ingress_with(&indent(snippet, 2), ""));
    assert_eq!(m.ingresses[0].routes()[0].targets.len(), 3);
}

#[test]
fn kafka_multi_topic_ingress() {
    let snippet = "topics:\n  - topic: orders.events\n    valueType: example/OrderEvent\n    targets: [orders/handler]\n\n  - topic: shipments.events\n    valueType: example/ShipmentEvent\n    targets: [shipments/handler]\n";
    let m = load(&kafka_ingress_with(&indent(snippet, 2), ""));
    let routes = m.ingresses[0].routes();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[1].value_type.to_string(), "example/ShipmentEvent");
}

#[test]
fn kafka_custom_value_type() {
    let snippet = "valueType: example/Order";
    let text = kafka_ingress_with(
        &format!("  topics:\n    - topic: t\n      {snippet}\n      targets: [example/h]\n"),
        "",
    );
    let m = load(&text);
    assert_eq!(
        m.ingresses[0].routes()[0].value_type.to_string(),
        "example/Order"
    );
}

// ---- kinesis-io.txt ------------------------------------------------------

#[test]
fn kinesis_ingress_document() {
    let text = r#"kind: io.statefun.kinesis.v1/ingress
spec:
  id: example/orders
  awsRegion:
    type: specific
    id: us-east-1
  awsCredentials:
    type: profile
    profile: default
  startupPosition:
    type: at-timestamp
    timestamp: "2026-04-23T00:00:00.000Z"
  streams:
    - stream: orders-stream
      streamArn: arn:aws:kinesis:us-east-1:123456789012:stream/orders-stream
      valueType: example/Order
      targets:
        - example/order-handler
"#;
    let m = load(text);
    let IngressSpec::Kinesis(k) = &m.ingresses[0].spec else {
        panic!("not kinesis")
    };
    assert_eq!(k.aws_region, AwsRegion::Specific("us-east-1".into()));
    assert_eq!(
        k.aws_credentials,
        AwsCredentials::Profile {
            name: "default".into(),
            path: None
        }
    );
    assert_eq!(
        k.streams[0].arn.as_deref(),
        Some("arn:aws:kinesis:us-east-1:123456789012:stream/orders-stream")
    );
}

#[test]
fn kinesis_egress_document() {
    let text = r#"kind: io.statefun.kinesis.v1/egress
spec:
  id: example/notifications
  awsRegion:
    type: specific
    id: us-east-1
  awsCredentials:
    type: profile
    profile: default
  streamName: notifications-stream
"#;
    let m = load(text);
    let EgressSpec::Kinesis(k) = &m.egresses[0].spec else {
        panic!("not kinesis")
    };
    assert_eq!(k.stream_name, "notifications-stream");
    assert_eq!(k.max_outstanding_records, 1000);
}

#[test]
fn kinesis_localstack_region_and_credentials() {
    let snippet = "awsRegion:\n  type: custom-endpoint\n  endpoint: http://localstack.svc:4566\n  id: us-east-1\nawsCredentials:\n  type: basic\n  accessKeyId: test\n  secretAccessKey: test\n";
    let text = format!(
        "kind: io.statefun.kinesis.v1/egress\nspec:\n  id: example/out\n  streamName: s\n{}",
        indent(snippet, 2)
    );
    let m = load(&text);
    let EgressSpec::Kinesis(k) = &m.egresses[0].spec else {
        panic!("not kinesis")
    };
    assert_eq!(
        k.aws_region,
        AwsRegion::CustomEndpoint {
            endpoint: "http://localstack.svc:4566".into(),
            id: "us-east-1".into()
        }
    );
    let AwsCredentials::Basic {
        secret_access_key, ..
    } = &k.aws_credentials
    else {
        panic!("not basic")
    };
    assert_eq!(secret_access_key.expose(), "test");
    assert!(!format!("{m:?}").contains("secretAccessKey: test"));
    assert!(!m.summary().contains("test/test"));
}
