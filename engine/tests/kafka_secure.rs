//! Kafka as secured clusters run it, against the test broker of
//! `ci/install-kafka.sh` and its listeners: TLS, mutual TLS (PEM files and a
//! PKCS#12 keystore), SASL_SSL with SCRAM-SHA-512 and SCRAM-SHA-256,
//! SASL_PLAINTEXT with PLAIN, and OAUTHBEARER with OIDC client credentials
//! against a token endpoint this test serves. Each runs ingress → function
//! → exactly-once egress through the secured listener, and a plain
//! read_committed consumer must see every reply exactly once. A wrong
//! password, a wrong OIDC client secret, an untrusted CA and a missing client
//! certificate must fail the job at once with an error that says which. Records compressed with
//! zstd, lz4, snappy and gzip are read, and written with each codec.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use statefun_engine::app::Durability;
use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, FunctionRegistry, RunError, RunOptions, Settings, Shared};
use statefun_sdk::{Context, FunctionError, FunctionSpec, KafkaEgressMessage, Message, TypeName};
use statefun_testkit::kafka::Secure;

/// Echoes every record to the egress topic the value names, keyed by the id.
fn echo(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let text = String::from_utf8(message.value.value.clone())?;
    let (topic, rest) = text.split_once('|').unwrap_or(("none", &text));
    let me = ctx.self_address().id.clone();
    ctx.send_egress(
        KafkaEgressMessage::for_egress(TypeName::parse("secure/out")?)
            .with_topic(topic)
            .with_key(&me)
            .with_utf8_value(&format!("{me}: {rest}"))
            .build()?,
    );
    Ok(())
}

fn registry() -> FunctionRegistry {
    let mut registry = FunctionRegistry::new();
    registry
        .register(
            FunctionSpec::builder(TypeName::parse("secure/echo").expect("type name"))
                .with_function(echo)
                .build()
                .expect("spec"),
        )
        .expect("register");
    registry
}

/// `properties:` lines of module.yaml (indented for an ingress/egress spec).
fn yaml_properties(props: &[(&str, String)]) -> String {
    let mut out = String::from("  properties:\n");
    for (k, v) in props {
        out.push_str(&format!("    - {k}: \"{v}\"\n"));
    }
    out
}

/// Produces `n` records to `input` over PLAINTEXT (compressed with `codec`),
/// each asking the function to answer on `output`; the replies expected.
fn produce(plain: &str, input: &str, output: &str, n: usize, codec: &str) -> Vec<String> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", plain)
        .set("compression.type", codec)
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let mut expected = Vec::new();
    for i in 0..n {
        let key = format!("k{}", i % 5);
        let value = format!("{output}|{codec} record {i}");
        producer
            .send(BaseRecord::to(input).key(&key).payload(&value))
            .expect("produce");
        expected.push(format!("{key}: {codec} record {i}"));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    expected.sort();
    expected
}

/// Runs the job on `address` with `properties` (both ingress and egress)
/// until a read_committed consumer on `plain` saw `expected.len()` replies on
/// `output`; then stops it and checks each reply arrived exactly once.
fn run_through(
    name: &str,
    address: &str,
    properties: &[(&str, String)],
    egress_codec: &str,
    plain: &str,
) {
    let connection = format!("  address: {address}\n");
    run_through_yaml(name, &connection, properties, "", egress_codec, plain);
}

/// [`run_through`] with the connection given as module.yaml text: `connection`
/// (e.g. `  address: …` or `  cluster: …`) in both the ingress and the egress,
/// `properties` in both, and `documents` (e.g. a cluster definition) appended.
fn run_through_yaml(
    name: &str,
    connection: &str,
    properties: &[(&str, String)],
    documents: &str,
    egress_codec: &str,
    plain: &str,
) {
    let run = format!("secure-{name}-{}", std::process::id());
    let (input, output) = (format!("{run}-in"), format!("{run}-out"));
    statefun_testkit::kafka::create_topics(plain, &[(&input, 2), (&output, 1)]);
    let mut expected = Vec::new();
    for codec in ["zstd", "lz4", "snappy", "gzip", "none"] {
        expected.extend(produce(plain, &input, &output, 6, codec));
    }
    expected.sort();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut egress_properties = properties.to_vec();
    egress_properties.push(("compression.type", egress_codec.to_string()));
    egress_properties.push(("transactional.id", run.clone()));
    egress_properties.push(("statefun.progress.topic", format!("{run}-progress")));
    let yaml = format!(
        "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: secure/in\n{connection}  \
         consumerGroupId: {run}\n  startupPosition: {{ type: earliest }}\n  topics:\n    \
         - topic: {input}\n      valueType: secure/raw\n      targets: [secure/echo]\n{}---\n\
         kind: io.statefun.kafka.v1/egress\nspec:\n  id: secure/out\n{connection}  \
         deliverySemantic: {{ type: exactly-once, transactionTimeout: 60s }}\n{}{documents}",
        yaml_properties(properties),
        yaml_properties(&egress_properties)
    );
    let module = dir.path().join("module.yaml");
    std::fs::write(&module, yaml).expect("write module.yaml");
    let shared = Arc::new(Shared::default());
    let options = options(dir.path());
    let s = shared.clone();
    let runner = std::thread::spawn(move || run_module(&module, &registry(), &options, s));
    let got = statefun_testkit::kafka::read_committed(
        plain,
        &output,
        expected.len(),
        Duration::from_secs(2),
    );
    shared.request_shutdown();
    let result = runner.join().expect("the job thread");
    assert!(result.is_ok(), "{name}: the job failed: {:?}", result.err());
    let mut got: Vec<String> = got
        .iter()
        .map(|m| statefun_testkit::kafka::text(m).1)
        .collect();
    got.sort();
    assert_eq!(
        got, expected,
        "{name}: every record exactly once through the secured listener"
    );
}

fn options(dir: &Path) -> RunOptions {
    RunOptions {
        settings: Settings {
            durability: Some(Durability {
                checkpoint_interval: Duration::from_millis(200),
                ..Durability::new(dir.join("state"))
            }),
            ..Settings::default()
        },
        cluster: ClusterConfig {
            workers: 2,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    }
}

/// The broker's plaintext address and its secured listeners, or skip.
fn broker() -> Option<(String, Secure)> {
    let plain = statefun_testkit::kafka_bootstrap()?;
    Some((plain, Secure::load()?))
}

/// The tests share two cores and a broker: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn tls_and_mutual_tls_with_pem_files_and_a_pkcs12_keystore() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((plain, s)) = broker() else { return };
    let ca = s.get("KAFKA_CA_PEM").to_string();
    run_through(
        "ssl",
        s.get("KAFKA_SSL_BOOTSTRAP"),
        &[
            ("security.protocol", "SSL".into()),
            ("ssl.ca.location", ca.clone()),
        ],
        "zstd",
        &plain,
    );
    run_through(
        "mtls-pem",
        s.get("KAFKA_MTLS_BOOTSTRAP"),
        &[
            ("security.protocol", "SSL".into()),
            ("ssl.ca.location", ca.clone()),
            (
                "ssl.certificate.location",
                s.get("KAFKA_CLIENT_CERT_PEM").into(),
            ),
            ("ssl.key.location", s.get("KAFKA_CLIENT_KEY_PEM").into()),
        ],
        "lz4",
        &plain,
    );
    run_through(
        "mtls-p12",
        s.get("KAFKA_MTLS_BOOTSTRAP"),
        &[
            ("security.protocol", "SSL".into()),
            ("ssl.ca.location", ca),
            ("ssl.keystore.location", s.get("KAFKA_CLIENT_P12").into()),
            (
                "ssl.keystore.password",
                s.get("KAFKA_CLIENT_P12_PASSWORD").into(),
            ),
        ],
        "snappy",
        &plain,
    );
}

#[test]
fn sasl_scram_over_tls_and_plain_over_plaintext() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((plain, s)) = broker() else { return };
    for (mechanism, codec) in [("SCRAM-SHA-512", "gzip"), ("SCRAM-SHA-256", "zstd")] {
        run_through(
            &mechanism.to_ascii_lowercase(),
            s.get("KAFKA_SASL_SSL_BOOTSTRAP"),
            &[
                ("security.protocol", "SASL_SSL".into()),
                ("ssl.ca.location", s.get("KAFKA_CA_PEM").into()),
                ("sasl.mechanism", mechanism.into()),
                ("sasl.username", s.get("KAFKA_SCRAM_USER").into()),
                ("sasl.password", s.get("KAFKA_SCRAM_PASSWORD").into()),
            ],
            codec,
            &plain,
        );
    }
    run_through(
        "plain",
        s.get("KAFKA_SASL_PLAINTEXT_BOOTSTRAP"),
        &[
            ("security.protocol", "SASL_PLAINTEXT".into()),
            ("sasl.mechanism", "PLAIN".into()),
            ("sasl.username", s.get("KAFKA_PLAIN_USER").into()),
            ("sasl.password", s.get("KAFKA_PLAIN_PASSWORD").into()),
        ],
        "none",
        &plain,
    );
}

/// The properties a StateFun user writes for the Java client: a JAAS login,
/// a PKCS#12 truststore with its password, Java-only deserializers. They are
/// translated for librdkafka and the job runs through SASL_SSL.
#[test]
fn java_client_properties_work_as_statefun_users_write_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((plain, s)) = broker() else { return };
    let jaas = format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\\\"{}\\\" password=\\\"{}\\\";",
        s.get("KAFKA_SCRAM_USER"),
        s.get("KAFKA_SCRAM_PASSWORD")
    );
    run_through(
        "java",
        s.get("KAFKA_SASL_SSL_BOOTSTRAP"),
        &[
            ("security.protocol", "SASL_SSL".into()),
            ("sasl.mechanism", "SCRAM-SHA-512".into()),
            ("sasl.jaas.config", jaas),
            // The test CA is in the client's PKCS#12 file (with its certificate).
            ("ssl.truststore.location", s.get("KAFKA_CLIENT_P12").into()),
            ("ssl.truststore.type", "PKCS12".into()),
            (
                "ssl.truststore.password",
                s.get("KAFKA_CLIENT_P12_PASSWORD").into(),
            ),
            (
                "key.deserializer",
                "org.apache.kafka.common.serialization.StringDeserializer".into(),
            ),
            ("max.poll.records", "500".into()),
        ],
        "zstd",
        &plain,
    );
}

/// A cluster declared once (`io.statefun-rs.kafka.v1/cluster`) with a
/// `propertiesFile` as Confluent Cloud hands it out (Java properties,
/// single-quoted JAAS), named by the ingress and the egress with `cluster:`.
#[test]
fn a_cluster_definition_with_a_client_properties_file() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((plain, s)) = broker() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("client.properties");
    std::fs::write(
        &file,
        format!(
            "# from the cloud console\nbootstrap.servers={}\nsecurity.protocol=SASL_SSL\n\
             sasl.mechanism=SCRAM-SHA-256\nssl.ca.location={}\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n  \
             username='{}' password='{}';\n",
            s.get("KAFKA_SASL_SSL_BOOTSTRAP"),
            s.get("KAFKA_CA_PEM"),
            s.get("KAFKA_SCRAM_USER"),
            s.get("KAFKA_SCRAM_PASSWORD")
        ),
    )
    .expect("write client.properties");
    let cluster = format!(
        "---\nkind: io.statefun-rs.kafka.v1/cluster\nspec:\n  id: secured\n  address: {}\n  \
         propertiesFile: {}\n",
        s.get("KAFKA_SASL_SSL_BOOTSTRAP"),
        file.display()
    );
    run_through_yaml(
        "cluster",
        "  cluster: secured\n",
        &[("client.id", "statefun-cluster-test".into())],
        &cluster,
        "gzip",
        &plain,
    );
}

/// A client-credentials token endpoint (RFC 6749 §4.4) issuing unsigned JWTs,
/// which the test broker's unsecured OAUTHBEARER validator accepts; it checks
/// the client's id and secret (HTTP Basic) and counts the tokens it issued.
struct TokenEndpoint {
    url: String,
    issued: Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenEndpoint {
    fn start(client_id: &'static str, secret: &'static str) -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token endpoint");
        let url = format!(
            "http://{}/oauth2/token",
            listener.local_addr().expect("address")
        );
        let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = issued.clone();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let expected_creds =
            base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut authorized = false;
                let mut length = 0usize;
                let mut line = String::new();
                let _request_line = reader.read_line(&mut line);
                line.clear();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let Some((name, value)) = line.trim().split_once(':') else {
                        break; // the empty line that ends the headers
                    };
                    match name.trim().to_ascii_lowercase().as_str() {
                        "authorization" => {
                            // The scheme is case-insensitive, the credentials are not.
                            authorized =
                                value.trim().split_once(' ').is_some_and(|(scheme, creds)| {
                                    scheme.eq_ignore_ascii_case("basic") && creds == expected_creds
                                });
                        }
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                    line.clear();
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let grant =
                    String::from_utf8_lossy(&body).contains("grant_type=client_credentials");
                let (status, json) = if authorized && grant {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
                    let claims = b64.encode(format!(
                        r#"{{"sub":"{client_id}","iat":{now},"exp":{},"scope":"kafka"}}"#,
                        now + 3600
                    ));
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (
                        "200 OK",
                        format!(
                            r#"{{"access_token":"{header}.{claims}.","token_type":"bearer","expires_in":3600}}"#
                        ),
                    )
                } else {
                    (
                        "401 Unauthorized",
                        r#"{"error":"invalid_client"}"#.to_string(),
                    )
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                    json.len()
                );
            }
        });
        TokenEndpoint { url, issued }
    }
}

#[test]
fn oauthbearer_with_oidc_client_credentials() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((plain, s)) = broker() else { return };
    let endpoint = TokenEndpoint::start("statefun-job", "token-secret");
    run_through(
        "oidc",
        s.get("KAFKA_SASL_PLAINTEXT_BOOTSTRAP"),
        &[
            ("security.protocol", "SASL_PLAINTEXT".into()),
            ("sasl.mechanism", "OAUTHBEARER".into()),
            ("sasl.oauthbearer.method", "oidc".into()),
            ("sasl.oauthbearer.client.id", "statefun-job".into()),
            ("sasl.oauthbearer.client.secret", "token-secret".into()),
            ("sasl.oauthbearer.token.endpoint.url", endpoint.url.clone()),
        ],
        "lz4",
        &plain,
    );
    assert!(
        endpoint.issued.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the clients fetched their tokens from the endpoint"
    );
}

/// Runs a job that cannot connect; its error, and how long it took (printed).
fn failing_job(address: &str, properties: &[(&str, String)]) -> (String, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "kind: io.statefun.kafka.v1/ingress\nspec:\n  id: secure/in\n  address: {address}\n  \
         consumerGroupId: never\n  topics:\n    - topic: never-read\n      valueType: secure/raw\n      \
         targets: [secure/echo]\n{}",
        yaml_properties(properties)
    );
    let module = dir.path().join("module.yaml");
    std::fs::write(&module, yaml).expect("write module.yaml");
    let started = Instant::now();
    let result = run_module(
        &module,
        &registry(),
        &options(dir.path()),
        Arc::new(Shared::default()),
    );
    let error = match result {
        Err(RunError::Failed(e)) => e,
        other => panic!("the job must fail: {other:?}"),
    };
    (error, started.elapsed())
}

#[test]
fn wrong_credentials_untrusted_ca_and_missing_client_certificate_fail_fast_naming_the_cause() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((_plain, s)) = broker() else { return };
    let ca = s.get("KAFKA_CA_PEM").to_string();
    let endpoint = TokenEndpoint::start("statefun-job", "token-secret");
    // (case, address, properties, what the error must say)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "wrong SCRAM password",
            s.get("KAFKA_SASL_SSL_BOOTSTRAP"),
            vec![
                ("security.protocol", "SASL_SSL".into()),
                ("ssl.ca.location", ca.clone()),
                ("sasl.mechanism", "SCRAM-SHA-512".into()),
                ("sasl.username", s.get("KAFKA_SCRAM_USER").into()),
                ("sasl.password", "not-the-password".into()),
            ],
            "authentication failed",
        ),
        (
            "untrusted CA",
            s.get("KAFKA_SSL_BOOTSTRAP"),
            vec![
                ("security.protocol", "SSL".into()),
                ("ssl.ca.location", s.get("KAFKA_UNTRUSTED_CA_PEM").into()),
            ],
            "TLS certificate could not be verified",
        ),
        (
            "no client certificate",
            s.get("KAFKA_MTLS_BOOTSTRAP"),
            vec![("security.protocol", "SSL".into()), ("ssl.ca.location", ca)],
            "rejected the client certificate",
        ),
        (
            "wrong OIDC client secret",
            s.get("KAFKA_SASL_PLAINTEXT_BOOTSTRAP"),
            vec![
                ("security.protocol", "SASL_PLAINTEXT".into()),
                ("sasl.mechanism", "OAUTHBEARER".into()),
                ("sasl.oauthbearer.method", "oidc".into()),
                ("sasl.oauthbearer.client.id", "statefun-job".into()),
                ("sasl.oauthbearer.client.secret", "not-the-password".into()),
                ("sasl.oauthbearer.token.endpoint.url", endpoint.url.clone()),
            ],
            "no OAUTHBEARER token",
        ),
    ];
    for (case, address, properties, says) in cases {
        let (error, took) = failing_job(address, &properties);
        println!("{case}: failed in {took:?}: {error}");
        assert!(
            error.contains(says) && error.contains("secure/in"),
            "{case}: the error names the ingress and the cause `{says}`: {error}"
        );
        assert!(
            !error.contains("not-the-password"),
            "{case}: a secret reached the error: {error}"
        );
        // Failing at once shows in the words: after the request timeout the
        // error would say that no broker answered.
        assert!(
            !error.contains("no broker answered"),
            "{case}: the cause was not recognised: {error}"
        );
    }
}
