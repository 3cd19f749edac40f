//! The loader's behaviour beyond error messages: both spellings, defaults, the legacy format,
//! endpoint lookup, target checks, the checkpoint-interval check, summaries and secrets.

use std::time::Duration;

use statefun_module::*;

fn load(text: &str) -> Module {
    match load_str(text, "module.yaml") {
        Ok(m) => m,
        Err(e) => panic!("does not load:\n{e}"),
    }
}

fn tn(s: &str) -> TypeName {
    TypeName::parse(s).expect("type name")
}

const FULL: &str = r#"
# every kind once
kind: io.statefun.endpoints.v2/http
spec:
  functions: example/*
  urlPathTemplate: https://functions.example:8443/statefun/{function.name}
  maxNumBatchRequests: 500
  transport:
    type: io.statefun.transports.v1/async
    call: 2 min
    connect: 5s
    pool_ttl: 30seconds
    pool_size: 64
    payload_max_bytes: 1048576
    trust_cacerts: file:/certs/ca.pem
    client_cert: file:/certs/client.pem
    client_key: file:/certs/client.key
    client_key_password: hunter2
---
kind: io.statefun.endpoints.v1/http
spec:
  functions: audit/log
  urlPathTemplate: http+unix:///run/audit.sock/{function.name}
  timeouts:
    call: 1 min
    connect: 10 sec
    read: 10 sec
    write: 10 sec
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: example/orders
  address: kafka:9092
  consumerGroupId: orders
  startupPosition:
    type: specific-offsets
    offsets:
      - orders/0: 91
      - orders/1: 11
  autoOffsetResetPosition: earliest
  properties:
    - security.protocol: SASL_SSL
    - sasl.password: s3cr3t-kafka
    - max.poll.records: 100
  topics:
    - topic: orders
      valueType: example/Order
      targets: [example/handler, audit/log]
---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: example/clicks
  awsRegion: {type: specific, id: eu-west-1}
  awsCredentials:
    type: basic
    accessKeyId: AKIAEXAMPLE
    secretAccessKey: wJalrXUtnFEMI-secret
  startupPosition: {type: date, date: "2020-02-01 04:15:00.000 +0000"}
  streams:
    - streamArn: arn:aws:kinesis:eu-west-1:123456789012:stream/clicks
      valueType: example/Click
      targets: [rust/clicks]
  clientConfigProperties:
    - SocketTimeout: 9999
---
kind: io.statefun-rs.file.v1/ingress
spec:
  id: example/names
  path: "-"
  valueType: io.statefun.types/string
  targets: [example/greeter]
  follow: true
---
kind: io.statefun-rs.generator.v1/ingress
spec:
  id: example/gen
  valueType: io.statefun.types/string
  targets: [nobody/home]
  rate: 2500.5
  count: 1000000
  stamp: true
---
kind: io.statefun.kafka.v1/egress
spec:
  id: example/out
  address: kafka:9092
  deliverySemantic:
    type: exactly-once
    transactionTimeout: 1min
  properties:
    ssl.key.password: pem-pass
---
kind: io.statefun.kinesis.v1/egress
spec:
  id: example/kout
  streamName: out
  maxOutstandingRecords: 50
---
kind: io.statefun-rs.file.v1/egress
spec:
  id: example/print
  path: "-"
  deliverySemantic: exactly-once
---
"#;

#[test]
fn every_kind_loads_with_its_fields() {
    let m = load(FULL);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(
        (m.endpoints.len(), m.ingresses.len(), m.egresses.len()),
        (2, 4, 3)
    );

    let e = &m.endpoints[0];
    assert_eq!(e.version, EndpointVersion::V2);
    assert_eq!(e.max_num_batch_requests, 500);
    assert_eq!(e.transport.kind, TransportType::Async);
    assert_eq!(e.transport.call_timeout, Duration::from_secs(120));
    assert_eq!(e.transport.connect_timeout, Duration::from_secs(5));
    assert_eq!(e.transport.pool_ttl, Duration::from_secs(30));
    assert_eq!(e.transport.pool_size, 64);
    assert_eq!(e.transport.payload_max_bytes, 1 << 20);
    assert_eq!(
        e.transport
            .tls
            .client_key_password
            .as_ref()
            .map(Secret::expose),
        Some("hunter2")
    );
    assert_eq!(
        e.url_for(&tn("example/greeter")),
        "https://functions.example:8443/statefun/greeter"
    );
    let v1 = &m.endpoints[1];
    assert_eq!(v1.version, EndpointVersion::V1);
    assert_eq!(v1.max_num_batch_requests, 1000);
    assert_eq!(v1.transport.read_timeout, Duration::from_secs(10));

    let IngressSpec::Kafka(k) = &m.ingresses[0].spec else {
        panic!()
    };
    assert_eq!(
        k.startup_position,
        KafkaStartupPosition::SpecificOffsets(vec![
            PartitionOffset {
                topic: "orders".into(),
                partition: 0,
                offset: 91
            },
            PartitionOffset {
                topic: "orders".into(),
                partition: 1,
                offset: 11
            },
        ])
    );
    assert_eq!(k.auto_offset_reset, AutoOffsetReset::Earliest);
    assert_eq!(k.properties.get("sasl.password"), Some("s3cr3t-kafka"));
    assert_eq!(k.properties[0].0, "security.protocol");

    let IngressSpec::Kinesis(k) = &m.ingresses[1].spec else {
        panic!()
    };
    assert_eq!(k.streams[0].stream, "clicks", "name taken from the ARN");
    let KinesisStartupPosition::AtTimestamp(t) = &k.startup_position else {
        panic!()
    };
    assert_eq!(t.epoch_millis, 1_580_530_500_000);
    assert_eq!(
        k.client_config_properties.get("SocketTimeout"),
        Some("9999")
    );

    let IngressSpec::File(f) = &m.ingresses[2].spec else {
        panic!()
    };
    assert!(f.follow);
    let IngressSpec::Generator(g) = &m.ingresses[3].spec else {
        panic!()
    };
    assert_eq!(
        (g.keys, g.rate, g.count, g.value_size, g.stamp),
        (1000, 2500.5, 1_000_000, 100, true)
    );

    let EgressSpec::Kafka(k) = &m.egresses[0].spec else {
        panic!()
    };
    assert_eq!(k.transaction_timeout(), Some(Duration::from_secs(60)));
    let EgressSpec::Kinesis(k) = &m.egresses[1].spec else {
        panic!()
    };
    assert_eq!(
        (k.max_outstanding_records, k.aws_region.clone()),
        (50, AwsRegion::Default)
    );
    let EgressSpec::File(f) = &m.egresses[2].spec else {
        panic!()
    };
    assert_eq!(f.delivery_semantic, FileDeliverySemantic::ExactlyOnce);
}

#[test]
fn routes_follow_topics_in_order() {
    let m = load(FULL);
    let routes = m.ingresses[0].routes();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].value_type, tn("example/Order"));
    assert_eq!(
        routes[0].targets,
        vec![
            FunctionPattern::Exact(tn("example/handler")),
            FunctionPattern::Exact(tn("audit/log"))
        ]
    );
}

#[test]
fn secrets_never_show() {
    let m = load(FULL);
    let shown = [format!("{m:?}"), m.summary(), m.routing_table()];
    for text in &shown {
        for secret in [
            "s3cr3t-kafka",
            "wJalrXUtnFEMI-secret",
            "hunter2",
            "pem-pass",
        ] {
            assert!(!text.contains(secret), "`{secret}` leaked in:\n{text}");
        }
    }
    assert!(m.summary().contains("sasl.password = ***"));
    assert!(m.summary().contains("ssl.key.password = ***"));
    assert!(m.summary().contains("max.poll.records = 100"));
    assert!(is_secret_key("sasl.oauthbearer.client.secret"));
    assert!(!is_secret_key("sasl.username"));
}

#[test]
fn summary_and_routing_table() {
    let m = load(FULL);
    let summary = m.summary();
    let expected_lines = [
        "module.yaml: 4 ingresses, 3 egresses, 2 endpoints",
        "  example/orders (kafka kafka:9092, group orders, startup 2 specific offsets, auto offset reset earliest)",
        "    topic orders → example/Order → example/handler, audit/log",
        "    stream clicks (arn:aws:kinesis:eu-west-1:123456789012:stream/clicks) → example/Click → rust/clicks",
        "    stdin → io.statefun.types/string → example/greeter",
        "  example/out (kafka kafka:9092, exactly-once, transaction timeout 1min)",
        "  example/print (file stdout, exactly-once)",
        "  example/* → https://functions.example:8443/statefun/{function.name} (max batch 500, call timeout 2min, connect timeout 5s, client_key_password ***)",
    ];
    for line in expected_lines {
        assert!(
            summary.lines().any(|l| l == line),
            "missing `{line}` in\n{summary}"
        );
    }
    let table = m.routing_table();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("INGRESS"));
    assert_eq!(lines.len(), 1 + 2 + 1 + 1 + 1);
    assert!(
        lines[1].contains("kafka topic orders")
            && lines[1].ends_with("https://functions.example:8443/statefun/handler")
    );
    assert!(lines[2].ends_with("http+unix:///run/audit.sock/log"));
    assert!(
        lines[3].contains("rust/clicks")
            && lines[3].ends_with("(no endpoint: a Rust function, if registered)")
    );
}

#[test]
fn endpoint_for_prefers_exact_patterns() {
    let m = load(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://ns/{function.name}\n---\nkind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/special\n  urlPathTemplate: http://exact/{function.name}\n",
    );
    assert_eq!(m.warnings.len(), 1, "exact within a namespace is a warning");
    assert_eq!(
        m.endpoint_for(&tn("a/special"))
            .map(|e| e.url_path_template.as_str()),
        Some("http://exact/{function.name}")
    );
    assert_eq!(
        m.endpoint_for(&tn("a/other"))
            .map(|e| e.url_path_template.as_str()),
        Some("http://ns/{function.name}")
    );
    assert!(m.endpoint_for(&tn("b/other")).is_none());
}

#[test]
fn check_targets_names_each_unserved_target() {
    let m = load(FULL);
    let rust: Vec<TypeName> = m
        .ingresses
        .iter()
        .flat_map(|i| i.routes())
        .flat_map(|r| r.targets)
        .filter_map(|t| match t {
            FunctionPattern::Exact(t) if t.namespace() == "rust" => Some(t),
            _ => None,
        })
        .collect();
    let problems: Vec<Diagnostic> = m.check_targets(&rust).into_iter().map(|(d, _)| d).collect();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["module.yaml:78:13: document 6, spec.targets[0]: target `nobody/home` of ingress `example/gen` is served by no endpoint and by no function registered in Rust; its records would be dropped"]
    );
    assert!(problems[0].is_error());
    let as_warning = problems[0].clone().with_severity(Severity::Warning);
    assert!(as_warning
        .to_string()
        .contains(": warning: target `nobody/home`"));
    // Without Rust functions, the Kinesis target is unserved too.
    assert_eq!(m.check_targets(&[]).len(), 2);
}

/// `ns/*` fans out to every type of `ns` the app can name, for `validate` and `run` alike;
/// a namespace a remote endpoint serves by namespace cannot be listed, so it is refused
/// (naming the endpoint) rather than fanned out to the Rust types alone.
#[test]
fn namespace_targets_resolve_to_the_types_the_app_names() {
    let module = |endpoints: &str| {
        load(&format!(
            "{endpoints}kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: a/b\n  path: x\n  valueType: a/t\n  targets: [shop/*]\n"
        ))
    };
    let target = FunctionPattern::parse("shop/*").unwrap();
    let names =
        |types: Vec<TypeName>| -> Vec<String> { types.iter().map(|t| t.to_string()).collect() };
    let rust = [tn("shop/audit"), tn("other/x"), tn("shop/ledger")];

    // Rust functions only.
    let m = module("");
    assert_eq!(
        names(m.resolve_target(&target, &rust).unwrap()),
        ["shop/audit", "shop/ledger"]
    );
    assert_eq!(m.resolve_target(&target, &[]), Err(TargetProblem::Unserved));
    assert_eq!(m.check_targets(&[]).len(), 1);
    assert!(m.check_targets(&rust).is_empty());

    // Endpoints that name their types: mixed with the Rust ones, each once, sorted.
    let exact = "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/cart\n  urlPathTemplate: http://f/{function.name}\n---\nkind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/ledger\n  urlPathTemplate: http://g/{function.name}\n---\n";
    let m = module(exact);
    assert_eq!(
        names(m.resolve_target(&target, &rust).unwrap()),
        ["shop/audit", "shop/cart", "shop/ledger"]
    );
    assert_eq!(
        names(m.resolve_target(&target, &[]).unwrap()),
        ["shop/cart", "shop/ledger"]
    );

    // An endpoint serving the whole namespace: refused with or without Rust types.
    let wildcard = "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: http://f/{function.name}\n---\n";
    let m = module(wildcard);
    assert_eq!(
        m.resolve_target(&target, &rust),
        Err(TargetProblem::ByNamespace { endpoint: 0 })
    );
    let problems = m.check_targets(&[]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].1.is_definite());
    let shown = problems[0].0.to_string();
    assert!(
        shown.contains("module.yaml:11:")
            && shown.contains(
                "namespace `shop` is served by the endpoint at module.yaml:3 (`functions: shop/*`)"
            )
            && shown.contains("targets: [shop/<name>"),
        "{shown}"
    );
    // Exact targets in that namespace are served by the endpoint, as always.
    let exact_target = FunctionPattern::parse("shop/cart").unwrap();
    assert_eq!(
        names(m.resolve_target(&exact_target, &[]).unwrap()),
        ["shop/cart"]
    );
}

#[test]
fn checkpoint_interval_against_transaction_timeout() {
    let m = load(FULL);
    assert!(m
        .check_checkpoint_interval(Duration::from_secs(10))
        .is_empty());
    let problems = m.check_checkpoint_interval(Duration::from_secs(60));
    assert_eq!(
        problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["module.yaml:88:5: document 7, spec.deliverySemantic: egress `example/out`: transaction timeout 1min is not longer than the checkpoint interval 1min; raise it above the interval (and at most 15min)"]
    );
}

#[test]
fn both_spellings_are_accepted() {
    let kinesis = |start: &str| {
        format!("kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: a/b\n  startupPosition: {start}\n  streams:\n    - stream: s\n      valueType: a/t\n      targets: [a/f]\n")
    };
    for start in [
        "{type: trim-horizon}",
        "{type: earliest}",
        "earliest",
        "trim-horizon",
    ] {
        let m = load(&kinesis(start));
        let IngressSpec::Kinesis(k) = &m.ingresses[0].spec else {
            panic!()
        };
        assert_eq!(
            k.startup_position,
            KinesisStartupPosition::TrimHorizon,
            "{start}"
        );
    }
    for start in [
        "{type: at-timestamp, timestamp: \"2026-04-23T00:00:00.000Z\"}",
        "{type: date, date: \"2026-04-23 00:00:00.000 +0000\"}",
        "{type: date, date: \"2026-04-23 00:00:00.00 Z\"}",
        "{type: at-timestamp, timestamp: \"2026-04-23T02:00:00+02:00\"}",
    ] {
        let m = load(&kinesis(start));
        let IngressSpec::Kinesis(k) = &m.ingresses[0].spec else {
            panic!()
        };
        let KinesisStartupPosition::AtTimestamp(t) = &k.startup_position else {
            panic!()
        };
        assert_eq!(t.epoch_millis, 1_776_902_400_000, "{start}");
    }
    let egress = |ds: &str| {
        format!("kind: io.statefun.kafka.v1/egress\nspec:\n  id: a/b\n  address: k:9092\n  deliverySemantic: {ds}\n")
    };
    for (ds, timeout) in [
        (
            "{type: exactly-once, transactionTimeoutMillis: 60000}",
            Some(60),
        ),
        ("{type: exactly-once, transactionTimeout: 1min}", Some(60)),
        (
            "{type: exactly-once, transactionTimeout: 90 seconds}",
            Some(90),
        ),
        (
            "{type: exactly-once, transactionTimeout: 120000}",
            Some(120),
        ),
        ("{type: at-least-once}", None),
        ("{type: none}", None),
        ("at-least-once", None),
    ] {
        let m = load(&egress(ds));
        let EgressSpec::Kafka(k) = &m.egresses[0].spec else {
            panic!()
        };
        assert_eq!(
            k.transaction_timeout(),
            timeout.map(Duration::from_secs),
            "{ds}"
        );
    }
    // Kafka properties as a plain map, and `group.id` in place of `consumerGroupId`.
    let m = load("kind: io.statefun.kafka.v1/ingress\nspec:\n  id: a/b\n  address: k:9092\n  properties:\n    group.id: from-props\n    fetch.min.bytes: 1\n  topics:\n    - {topic: t, valueType: a/t, targets: [a/f]}\n");
    let IngressSpec::Kafka(k) = &m.ingresses[0].spec else {
        panic!()
    };
    assert_eq!(k.consumer_group_id, "from-props");
    assert_eq!(k.properties.len(), 2);
    // AWS profile as `profileName` with `profilePath`.
    let m = load("kind: io.statefun.kinesis.v1/egress\nspec:\n  id: a/b\n  streamName: s\n  awsCredentials: {type: profile, profileName: dev, profilePath: /home/me/.aws/credentials}\n");
    let EgressSpec::Kinesis(k) = &m.egresses[0].spec else {
        panic!()
    };
    assert_eq!(
        k.aws_credentials,
        AwsCredentials::Profile {
            name: "dev".into(),
            path: Some("/home/me/.aws/credentials".into())
        }
    );
}

#[test]
fn legacy_format_with_endpoints_ingresses_and_egresses() {
    let m = load(
        r#"
version: "3.0"
module:
  meta:
    type: remote
  spec:
    endpoints:
      - endpoint:
          meta:
            kind: http
          spec:
            functions: example/*
            urlPathTemplate: http://functions:8000/{function.name}
            timeouts:
              call: 2 min
            maxNumBatchRequests: 10000
    ingresses:
      - ingress:
          meta:
            type: io.statefun.kafka/ingress
            id: example/names
          spec:
            address: kafka-broker:9092
            consumerGroupId: my-group-id
            topics:
              - topic: names
                valueType: io.statefun.types/string
                targets:
                  - example/greeter
      - ingress:
          meta:
            type: io.statefun.kinesis/ingress
            id: example/clicks
          spec:
            streams:
              - stream: clicks
                valueType: example/Click
                targets: [example/greeter]
    egresses:
      - egress:
          meta:
            type: io.statefun.kafka/egress
            id: example/greets
          spec:
            address: kafka-broker:9092
            deliverySemantic:
              type: exactly-once
              transactionTimeoutMillis: 100000
"#,
    );
    assert_eq!(m.endpoints[0].version, EndpointVersion::V1);
    assert_eq!(
        m.endpoints[0].transport.call_timeout,
        Duration::from_secs(120)
    );
    assert_eq!(m.endpoints[0].max_num_batch_requests, 10000);
    assert_eq!(
        m.ingresses
            .iter()
            .map(|i| i.id.to_string())
            .collect::<Vec<_>>(),
        ["example/names", "example/clicks"]
    );
    assert_eq!(m.egresses[0].id, tn("example/greets"));
    assert!(m.check_targets(&[]).is_empty());
}

#[test]
fn empty_documents_are_skipped_and_an_empty_file_warns() {
    let m = load("---\n---\n# nothing\n---\nkind: io.statefun-rs.file.v1/egress\nspec: {id: a/b, path: x}\n---\n");
    assert_eq!(m.egresses.len(), 1);
    let empty = load("# just a comment\n");
    assert_eq!(empty.warnings.len(), 1);
    assert_eq!(empty.warnings[0].to_string(), "module.yaml: warning: the module is empty: it declares no endpoints, ingresses or egresses");
}

#[test]
fn load_file_reads_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("statefun-module-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("module.yaml");
    std::fs::write(
        &path,
        "kind: io.statefun-rs.file.v1/egress\nspec: {id: a/b, path: x, colour: red}\n",
    )
    .expect("write");
    let e = load_file(&path).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(
        e.to_string().starts_with(&format!(
            "{}:2:26: document 1, spec.colour: unknown field `colour`",
            path.display()
        )),
        "{e}"
    );
    let missing = load_file(&dir.join("nope.yaml")).unwrap_err();
    assert!(missing.to_string().contains("cannot read the file"));
    std::fs::write(&path, [0xff, 0xfe, 0x00]).expect("write");
    assert!(load_file(&path)
        .unwrap_err()
        .to_string()
        .contains("not UTF-8"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pattern_display_round_trips() {
    for p in ["a/b", "a.b.c/*", "com.example/greeter"] {
        assert_eq!(
            FunctionPattern::parse(p).map(|p| p.to_string()),
            Ok(p.to_string())
        );
    }
    assert!(FunctionPattern::parse("a/*").unwrap().matches(&tn("a/x")));
    assert!(!FunctionPattern::parse("a/*").unwrap().matches(&tn("ab/x")));
}

#[test]
fn byte_order_mark_and_crlf_line_endings() {
    let text =
        "\u{feff}kind: io.statefun-rs.file.v1/egress\r\nspec:\r\n  id: a/b\r\n  path: out.txt\r\n";
    assert_eq!(load(text).egresses.len(), 1);
    let bad = "kind: io.statefun-rs.file.v1/egress\r\nspec:\r\n  id: a/b\r\n  pth: out.txt\r\n";
    let e = load_str(bad, "module.yaml").unwrap_err().to_string();
    assert!(
        e.starts_with(
            "module.yaml:4:3: document 1, spec.pth: unknown field `pth`; did you mean `path`?"
        ),
        "{e}"
    );
    let tabs = "kind: io.statefun-rs.file.v1/egress\nspec:\n\tid: a/b\n";
    assert!(load_str(tabs, "module.yaml")
        .unwrap_err()
        .to_string()
        .contains("invalid YAML"));
}

const DEAD_LETTERS: &str = r#"
kind: io.statefun.kafka.v1/ingress
spec:
  id: example/names
  address: kafka:9092
  consumerGroupId: g
  topics:
    - topic: names
      valueType: io.statefun.types/string
      targets: [example/greeter]
  badRecords:
    policy: dead-letter
    egress: example/dlq
    topic: names.dead-letters
---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: example/clicks
  streams:
    - stream: clicks
      valueType: io.statefun.types/string
      targets: [example/greeter]
  badRecords: fail
---
kind: io.statefun.kafka.v1/egress
spec:
  id: example/dlq
  address: kafka:9092
"#;

#[test]
fn bad_record_policies_load() {
    let m = load(DEAD_LETTERS);
    assert_eq!(
        m.ingresses[0].bad_records,
        Some(BadRecordPolicy::DeadLetter(DeadLetter {
            egress: tn("example/dlq"),
            topic: Some("names.dead-letters".into()),
            stream: None,
        }))
    );
    assert_eq!(m.ingresses[1].bad_records, Some(BadRecordPolicy::Fail));
    let plain = DEAD_LETTERS.replace("  badRecords: fail\n", "");
    assert_eq!(load(&plain).ingresses[1].bad_records, None);
    let skip = DEAD_LETTERS.replace("badRecords: fail", "badRecords: {policy: skip}");
    assert_eq!(
        load(&skip).ingresses[1].bad_records,
        Some(BadRecordPolicy::Skip)
    );
}

#[test]
fn bad_record_policy_errors_name_the_field() {
    let cases = [
        (
            DEAD_LETTERS.replace("badRecords: fail", "badRecords: drop"),
            "spec.badRecords",
            "unknown bad-record policy `drop`",
        ),
        (
            DEAD_LETTERS.replace(
                "egress: example/dlq\n    topic",
                "egress: example/nope\n    topic",
            ),
            "spec.badRecords",
            "dead-letter egress `example/nope` is not declared",
        ),
        (
            DEAD_LETTERS.replace("    topic: names.dead-letters\n", ""),
            "spec.badRecords",
            "is a Kafka egress: add `topic",
        ),
        (
            DEAD_LETTERS.replace("topic: names.dead-letters", "stream: x\n    topic: y"),
            "spec.badRecords",
            "not both",
        ),
        (
            DEAD_LETTERS.replace(
                "badRecords: fail",
                "badRecords: {policy: fail, egress: example/dlq}",
            ),
            "spec.badRecords.egress",
            "does not apply to the `fail` policy",
        ),
        (
            DEAD_LETTERS.replace("badRecords: fail", "badRecords: dead-letter"),
            "spec.badRecords",
            "needs an egress",
        ),
    ];
    for (text, field, message) in cases {
        let err = load_str(&text, "module.yaml").expect_err(message);
        let found = err
            .0
            .iter()
            .any(|d| d.field == field && d.message.contains(message));
        assert!(found, "want `{field}`: {message}; got:\n{err}");
    }
}

#[test]
fn remote_metadata_is_off_unless_an_ingress_asks_for_it() {
    let m = load(DEAD_LETTERS);
    assert!(m
        .ingresses
        .iter()
        .all(|i| i.remote_metadata == RemoteMetadata::None));
    let wrap = DEAD_LETTERS.replace("  badRecords: fail\n", "  remoteMetadata: wrap\n");
    let m = load(&wrap);
    assert_eq!(m.ingresses[0].remote_metadata, RemoteMetadata::None);
    assert_eq!(m.ingresses[1].remote_metadata, RemoteMetadata::Wrap);
    let none = DEAD_LETTERS.replace("  badRecords: fail\n", "  remoteMetadata: none\n");
    assert_eq!(
        load(&none).ingresses[1].remote_metadata,
        RemoteMetadata::None
    );
    for kind in [
        "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: a/b\n  path: in.txt\n  valueType: a/t\n  targets: [a/f]\n  remoteMetadata: wrap\n",
        "kind: io.statefun-rs.generator.v1/ingress\nspec:\n  id: a/b\n  valueType: a/t\n  targets: [a/f]\n  remoteMetadata: wrap\n",
    ] {
        assert_eq!(load(kind).ingresses[0].remote_metadata, RemoteMetadata::Wrap);
    }
    let err = load_str(
        &DEAD_LETTERS.replace("  badRecords: fail\n", "  remoteMetadata: headers\n"),
        "module.yaml",
    )
    .expect_err("an unknown mode");
    assert!(
        err.0.iter().any(|d| d.field == "spec.remoteMetadata"
            && d.message.contains("headers")
            && d.message.contains("wrap")),
        "{err}"
    );
}

const CLUSTERS: &str = r#"
kind: io.statefun.kafka.v1/ingress
spec:
  id: example/in
  cluster: prod
  consumerGroupId: g
  topics:
    - topic: names
      valueType: io.statefun.types/string
      targets: [example/greeter]
  properties:
    - max.poll.interval.ms: "600000"
    - sasl.username: ingress-user
---
kind: io.statefun-rs.kafka.v1/cluster
spec:
  id: prod
  address: broker-1:9093,broker-2:9093
  propertiesFile: secrets/client.properties
  properties:
    - security.protocol: SASL_SSL
    - sasl.username: shared-user
    - sasl.password: ${KAFKA_PASSWORD}
---
kind: io.statefun.kafka.v1/egress
spec:
  id: example/out
  cluster: prod
"#;

#[test]
fn kafka_clusters_are_declared_once_and_named_by_ingresses_and_egresses() {
    let m = load_str(CLUSTERS, "conf/module.yaml").expect("loads");
    let (IngressSpec::Kafka(i), EgressSpec::Kafka(e)) = (&m.ingresses[0].spec, &m.egresses[0].spec)
    else {
        panic!("Kafka ingress and egress");
    };
    // Declared after its user: resolved once every document is read.
    assert_eq!(i.address, "broker-1:9093,broker-2:9093");
    assert_eq!(e.address, i.address);
    assert_eq!(i.cluster.as_deref(), Some("prod"));
    // The cluster's properties, overridden by the ingress's own.
    assert_eq!(i.properties.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(i.properties.get("sasl.username"), Some("ingress-user"));
    assert_eq!(i.properties.get("max.poll.interval.ms"), Some("600000"));
    assert_eq!(e.properties.get("sasl.username"), Some("shared-user"));
    // `${...}` stays as written in the module: the secret is filled in when a client is made.
    assert_eq!(e.properties.get("sasl.password"), Some("${KAFKA_PASSWORD}"));
    // The properties file is relative to the module file.
    assert_eq!(
        i.properties_file.as_deref(),
        Some("conf/secrets/client.properties")
    );
    assert_eq!(m.kafka_clusters.len(), 1);
}

#[test]
fn kafka_cluster_errors_name_the_field() {
    let cases = [
        (
            CLUSTERS.replace("  cluster: prod\n  consumerGroupId", "  cluster: staging\n  consumerGroupId"),
            "spec.cluster",
            "no Kafka cluster `staging` is declared",
        ),
        (
            CLUSTERS.replace("  id: example/out\n  cluster: prod", "  id: example/out\n  cluster: prod\n  address: x:9092"),
            "spec.address",
            "give either `address` or `cluster`",
        ),
        (
            format!("{CLUSTERS}---\nkind: io.statefun-rs.kafka.v1/cluster\nspec:\n  id: prod\n  address: y:9092\n"),
            "spec.id",
            "Kafka cluster `prod` is declared twice",
        ),
        (
            CLUSTERS.replace("  address: broker-1:9093,broker-2:9093\n", ""),
            "document 2, spec",
            "missing required field `address`",
        ),
    ];
    for (text, field, message) in cases {
        let err = load_str(&text, "module.yaml").expect_err("must not load");
        let shown = err.to_string();
        assert!(
            shown.contains(field) && shown.contains(message),
            "expected `{field}`: `{message}` in:\n{shown}"
        );
    }
}
