//! Property tests: the loader never panics, whatever it is given — arbitrary text,
//! arbitrary YAML built from a small grammar, and valid modules with random mutations —
//! and it always reports either a module or at least one error.

use proptest::prelude::*;

const VALID: &str = r#"kind: io.statefun.endpoints.v2/http
spec:
  functions: example/*
  urlPathTemplate: http://functions:8000/{function.name}
  transport: {type: io.statefun.transports.v1/async, call: 2m}
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: example/orders
  address: kafka:9092
  consumerGroupId: orders
  startupPosition: {type: specific-offsets, offsets: [{orders/0: 1}]}
  properties: [{sasl.password: x}]
  topics:
    - topic: orders
      valueType: example/Order
      targets: [example/handler, audit/*]
---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: example/clicks
  awsRegion: {type: custom-endpoint, endpoint: "http://localstack:4566", id: us-east-1}
  awsCredentials: {type: basic, accessKeyId: a, secretAccessKey: b}
  startupPosition: {type: at-timestamp, timestamp: "2026-04-23T00:00:00.000Z"}
  streams:
    - stream: clicks
      streamArn: arn:aws:kinesis:us-east-1:123456789012:stream/clicks
      valueType: example/Click
      targets: [example/handler]
---
kind: io.statefun.kafka.v1/egress
spec:
  id: example/out
  address: kafka:9092
  deliverySemantic: {type: exactly-once, transactionTimeout: 1min}
---
version: "3.0"
module:
  meta: {type: remote}
  spec:
    ingresses:
      - ingress:
          meta: {type: io.statefun.kafka/ingress, id: example/legacy}
          spec: {address: k, consumerGroupId: g, topics: [{topic: t, valueType: a/b, targets: [a/c]}]}
"#;

fn check(text: &str) {
    match statefun_module::load_str(text, "fuzz.yaml") {
        Ok(m) => {
            let _ = (m.summary(), m.routing_table(), m.check_targets(&[]));
            let _ = m.check_checkpoint_interval(std::time::Duration::from_secs(30));
        }
        Err(e) => {
            assert!(e.has_errors(), "Err without an error: {e}");
            let _ = e.to_string();
        }
    }
}

/// Small YAML values built from the words module files use.
fn yaml_value() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "kind",
        "spec",
        "id",
        "type",
        "targets",
        "topics",
        "streams",
        "valueType",
        "address",
        "io.statefun.kafka.v1/ingress",
        "io.statefun-rs.file.v1/egress",
        "example/*",
        "a/b",
        "exactly-once",
        "1min",
        "-1",
        "0",
        "~",
        "\"\"",
        "version",
        "3.0",
        "module",
        "meta",
        "deliverySemantic",
        "startupPosition",
        "offsets",
        "t/0",
        "arn:aws:kinesis:x:1:stream/y",
    ])
    .prop_map(str::to_string);
    words.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((inner.clone(), inner), 0..5).prop_map(|v| {
                let body: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn arbitrary_yaml_never_panics(kind in yaml_value(), spec in yaml_value(), docs in 1usize..4) {
        let doc = format!("kind: {kind}\nspec: {spec}\n");
        check(&vec![doc; docs].join("---\n"));
        check(&format!("{kind}: {spec}\n"));
    }

    #[test]
    fn mutated_valid_modules_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, "[ -~\\n]{0,6}"), 1..6)
    ) {
        let mut text: Vec<char> = VALID.chars().collect();
        for (at, op, insert) in edits {
            let i = at.index(text.len().max(1)).min(text.len());
            match op {
                0 => { text.splice(i..i, insert.chars()); }
                1 => { let end = (i + insert.len() + 1).min(text.len()); text.drain(i..end); }
                2 => { let end = (i + insert.len()).min(text.len()); text.splice(i..end, insert.chars()); }
                _ => {
                    // Duplicate a line somewhere else: repeated keys and documents.
                    let s: String = text.iter().collect();
                    let lines: Vec<&str> = s.lines().collect();
                    let l = lines[i % lines.len()];
                    let mut out = lines.clone();
                    out.insert((i / 7) % lines.len(), l);
                    text = out.join("\n").chars().collect();
                }
            }
        }
        check(&text.into_iter().collect::<String>());
    }
}

#[test]
fn the_valid_module_is_valid() {
    let m = statefun_module::load_str(VALID, "fuzz.yaml").expect("valid");
    assert_eq!(
        (m.endpoints.len(), m.ingresses.len(), m.egresses.len()),
        (1, 3, 1)
    );
}
