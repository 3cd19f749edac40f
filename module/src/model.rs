//! The validated module: endpoints, ingresses, egresses and their settings.

use std::fmt;
use std::time::Duration;

use statefun_sdk::TypeName;

use crate::diag::{Diagnostic, Location};
use crate::time::Timestamp;

/// A whole module — one file or several loaded as one — validated.
#[derive(Clone, Debug, Default)]
pub struct Module {
    /// The module's name in messages: the file name as given to the loader, or, for a
    /// module loaded from several files ([`crate::load_files`]), their names joined
    /// with `, `.
    pub file: String,
    /// Every file the module was loaded from, in load order (one for [`crate::load_file`]
    /// and [`crate::load_str`]); each ingress and egress names its own in `file`.
    pub files: Vec<String>,
    /// Remote function endpoints, in file order.
    pub endpoints: Vec<HttpEndpoint>,
    /// Ingresses, in file order.
    pub ingresses: Vec<Ingress>,
    /// Egresses, in file order.
    pub egresses: Vec<Egress>,
    /// Kafka cluster definitions (`io.statefun-rs.kafka.v1/cluster`), in file order; the
    /// ingresses and egresses that name one already carry its address and properties.
    pub kafka_clusters: Vec<KafkaCluster>,
    /// Warnings found while loading (the module is usable).
    pub warnings: Vec<Diagnostic>,
    /// Where each item was declared, for diagnostics found later (empty for hand-built modules).
    pub locations: SourceMap,
}

/// Where the items of a [`Module`] were declared; indexes follow the module's vectors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceMap {
    /// One per ingress.
    pub ingresses: Vec<IngressLocation>,
    /// One per egress.
    pub egresses: Vec<EgressLocation>,
    /// One per endpoint (its `spec.functions` field).
    pub endpoints: Vec<Location>,
}

/// Where an ingress and its targets were declared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressLocation {
    /// The ingress `spec`.
    pub spec: Location,
    /// Per route (topic/stream), per target: the target's entry.
    pub targets: Vec<Vec<Location>>,
    /// Its `badRecords`, when given.
    pub bad_records: Option<Location>,
}

/// Where an egress was declared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EgressLocation {
    /// The egress `spec`.
    pub spec: Location,
    /// Its `deliverySemantic`, when given.
    pub delivery_semantic: Option<Location>,
}

/// A set of function types: one type (`ns/name`) or a whole namespace (`ns/*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FunctionPattern {
    /// Exactly this function type.
    Exact(TypeName),
    /// Every function type in this namespace.
    Namespace(String),
}

impl FunctionPattern {
    /// Parses `<namespace>/<name>` or `<namespace>/*`, explaining what is wrong otherwise.
    ///
    /// ```
    /// use statefun_module::FunctionPattern;
    /// assert!(FunctionPattern::parse("example/*").is_ok());
    /// assert!(FunctionPattern::parse("*/greeter").is_err());
    /// assert!(FunctionPattern::parse("a/b,c/d").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<FunctionPattern, String> {
        if text.is_empty() {
            return Err("empty target; write `<namespace>/<name>` or `<namespace>/*`".into());
        }
        if text.contains(',') {
            return Err(format!(
                "`{text}` is a comma-separated list, which is not supported; write one entry per target"
            ));
        }
        if text.chars().any(char::is_whitespace) {
            return Err(format!(
                "`{text}` contains white space; write `<namespace>/<name>` or `<namespace>/*`"
            ));
        }
        let Some(split) = text.rfind('/') else {
            return Err(format!(
                "`{text}` has no namespace; write `<namespace>/<name>` or `<namespace>/*`"
            ));
        };
        let (namespace, name) = (&text[..split], &text[split + 1..]);
        if namespace.is_empty() {
            return Err(format!(
                "`{text}` has an empty namespace; write `<namespace>/<name>` or `<namespace>/*`"
            ));
        }
        if name.is_empty() {
            return Err(format!(
                "`{text}` has an empty name; write `<namespace>/<name>`, or `<namespace>/*` for the whole namespace"
            ));
        }
        if namespace.contains('*') {
            return Err(format!(
                "`{text}` has a wildcard namespace, which is not supported; write one entry per namespace"
            ));
        }
        if name == "*" {
            return Ok(FunctionPattern::Namespace(namespace.to_string()));
        }
        if name.contains('*') {
            return Err(format!(
                "`{text}` has a partial wildcard; only a whole name `*` is supported (`{namespace}/*`)"
            ));
        }
        TypeName::parse(text)
            .map(FunctionPattern::Exact)
            .map_err(|e| e.to_string())
    }

    /// Whether `t` belongs to this pattern.
    pub fn matches(&self, t: &TypeName) -> bool {
        match self {
            FunctionPattern::Exact(e) => e == t,
            FunctionPattern::Namespace(ns) => t.namespace() == ns,
        }
    }

    /// The namespace the pattern lies in.
    pub fn namespace(&self) -> &str {
        match self {
            FunctionPattern::Exact(t) => t.namespace(),
            FunctionPattern::Namespace(ns) => ns,
        }
    }
}

impl fmt::Display for FunctionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FunctionPattern::Exact(t) => write!(f, "{t}"),
            FunctionPattern::Namespace(ns) => write!(f, "{ns}/*"),
        }
    }
}

/// A value that must not be shown: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Whether a property or field of this name holds a secret: anything named
/// `*password*`, `*secret*`, `*passphrase*`, `*credential*` or `*sessiontoken*`
/// (case-insensitive, dots ignored); a private key given inline (`ssl.key.pem`, librdkafka's
/// `ssl_key`, `*private.key*`); and the settings that embed secrets
/// (`sasl.jaas.config`, `sasl.oauthbearer.config`).
///
/// ```
/// use statefun_module::is_secret_key;
/// assert!(is_secret_key("ssl.keystore.password") && is_secret_key("ssl.key.pem"));
/// assert!(is_secret_key("sasl.oauthbearer.client.secret") && is_secret_key("sasl.jaas.config"));
/// assert!(!is_secret_key("ssl.ca.location") && !is_secret_key("sasl.mechanism"));
/// assert!(!is_secret_key("sasl.oauthbearer.token.endpoint.url"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let undotted = k.replace(['.', '_', '-'], "");
    [
        "password",
        "secret",
        "passphrase",
        "credential",
        "sessiontoken",
        "privatekey",
    ]
    .iter()
    .any(|word| undotted.contains(word))
        || [
            "sasl.jaas.config",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
            "ssl_key",
        ]
        .contains(&k.as_str())
}

/// Client properties (Kafka `properties`, Kinesis `clientConfigProperties`), in file order.
///
/// Derefs to a slice of `(key, value)` pairs. `Debug` redacts secret values (see [`is_secret_key`]).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Properties(pub Vec<(String, String)>);

impl Properties {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pairs with secret values replaced by `***`, for display.
    pub fn redacted(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_key(k) {
                    "***".to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

impl std::ops::Deref for Properties {
    type Target = [(String, String)];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

/// Which `kind` an endpoint was declared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointVersion {
    /// `io.statefun.endpoints.v1/http` (and the legacy `version: "3.0"` endpoints).
    V1,
    /// `io.statefun.endpoints.v2/http`.
    V2,
}

/// An HTTP endpoint serving remote functions.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpEndpoint {
    /// The function types it serves.
    pub functions: FunctionPattern,
    /// The URL, possibly with a `{function.name}` placeholder.
    pub url_path_template: String,
    /// Most messages batched into one invocation of an address (default 1000).
    pub max_num_batch_requests: usize,
    /// The kind it was declared with.
    pub version: EndpointVersion,
    /// The HTTP client settings.
    pub transport: HttpTransport,
}

impl HttpEndpoint {
    /// The URL for `function_type` (`{function.name}` replaced by its name).
    pub fn url_for(&self, function_type: &TypeName) -> String {
        self.url_path_template
            .replace("{function.name}", function_type.name())
    }
}

/// Which HTTP client upstream StateFun would use; both map to our one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportType {
    /// The default client (`io.statefun.transports.v1/okhttp`, or no `type`).
    Default,
    /// `io.statefun.transports.v1/async`.
    Async,
}

/// HTTP client settings of an endpoint, with upstream's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpTransport {
    /// The transport type.
    pub kind: TransportType,
    /// Whole-call timeout (default 1 min; 2 min for `async`).
    pub call_timeout: Duration,
    /// Connect timeout (default 10 s; 20 s for `async`).
    pub connect_timeout: Duration,
    /// Read timeout (default 10 s).
    pub read_timeout: Duration,
    /// Write timeout (default 10 s).
    pub write_timeout: Duration,
    /// How long idle pooled connections live (`pool_ttl`, default 15 s).
    pub pool_ttl: Duration,
    /// Most pooled connections (`pool_size`, default 1024).
    pub pool_size: usize,
    /// Largest response accepted (`payload_max_bytes`, default 32 MiB).
    pub payload_max_bytes: usize,
    /// TLS files.
    pub tls: TlsFiles,
}

impl Default for HttpTransport {
    fn default() -> Self {
        HttpTransport {
            kind: TransportType::Default,
            call_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            pool_ttl: Duration::from_secs(15),
            pool_size: 1024,
            payload_max_bytes: 32 * 1024 * 1024,
            tls: TlsFiles::default(),
        }
    }
}

/// TLS files of the `async` transport (paths, optionally with a `file:`/`classpath:` prefix as written).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TlsFiles {
    /// `trust_cacerts`: CA certificates to trust.
    pub trust_cacerts: Option<String>,
    /// `client_cert`: the client certificate.
    pub client_cert: Option<String>,
    /// `client_key`: the client private key.
    pub client_key: Option<String>,
    /// `client_key_password`: the key's password.
    pub client_key_password: Option<Secret>,
}

/// An ingress: where messages enter.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingress {
    /// Its id.
    pub id: TypeName,
    /// The module file that declares it, as given to the loader: relative paths in its
    /// spec (a file ingress's `path`) start at this file's directory, whichever other
    /// files the module is loaded with.
    pub file: String,
    /// What it reads and where it routes.
    pub spec: IngressSpec,
    /// `badRecords` (statefun-rs extension, Kafka and Kinesis ingresses):
    /// what happens to a record that cannot become a message. `None` leaves
    /// it to the runtime's default (`--on-bad-record`).
    pub bad_records: Option<BadRecordPolicy>,
    /// `remoteMetadata` (statefun-rs extension): whether its remote targets
    /// receive each record with its metadata.
    pub remote_metadata: RemoteMetadata,
}

/// What remote functions receive from an ingress (`remoteMetadata`, a
/// statefun-rs extension).
///
/// StateFun's remote protocol carries a message's value and caller, nothing
/// about the record it came from, so by default a remote function sees only
/// the value, as upstream. With `remoteMetadata: wrap` every record reaches the
/// ingress's remote targets as a `statefun_rs.v1.IngressRecord` protobuf
/// message (`sdk/proto/statefun_rs/v1/ingress_record.proto`): the value, its
/// `valueType`, the ingress id and the Kafka/Kinesis/file metadata. Rust
/// functions always get the plain value and read the metadata from their
/// context.
///
/// ```yaml
/// kind: io.statefun.kafka.v1/ingress
/// spec:
///   id: shop/orders
///   remoteMetadata: wrap        # default: none
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RemoteMetadata {
    /// Remote functions get the plain value (upstream's behaviour).
    #[default]
    None,
    /// Remote functions get a `statefun_rs.v1.IngressRecord`.
    Wrap,
}

/// What happens to an ingress record that cannot become a message: no key,
/// an empty key or one that is not UTF-8 (keys are function ids), or no value
/// (a Kafka tombstone).
///
/// ```yaml
/// badRecords: skip            # or: fail
/// badRecords:
///   policy: dead-letter
///   egress: example/dead-letters
///   topic: names.dead-letters # for a Kafka egress; `stream:` for a Kinesis egress
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum BadRecordPolicy {
    /// Counted, logged (rate-limited) and skipped.
    Skip,
    /// The job stops with an error naming the ingress and the record.
    Fail,
    /// Written to an egress, with why and where it came from.
    DeadLetter(DeadLetter),
}

/// Where dead letters go.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The egress (declared in the same module).
    pub egress: TypeName,
    /// `topic`: required for a Kafka egress.
    pub topic: Option<String>,
    /// `stream`: required for a Kinesis egress.
    pub stream: Option<String>,
}

/// The ingress kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum IngressSpec {
    /// `io.statefun.kafka.v1/ingress`.
    Kafka(KafkaIngress),
    /// `io.statefun.kinesis.v1/ingress`.
    Kinesis(KinesisIngress),
    /// `io.statefun-rs.file.v1/ingress`.
    File(FileIngress),
    /// `io.statefun-rs.generator.v1/ingress`.
    Generator(GeneratorIngress),
}

/// One routing rule: records of this source decode as `value_type` and go to `targets`.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// How record values are typed.
    pub value_type: TypeName,
    /// Which functions receive them (the record key is the id).
    pub targets: Vec<FunctionPattern>,
}

impl Ingress {
    /// One route per `topics[]`/`streams[]` entry, in order (the index is the connector's route
    /// number); file and generator ingresses have exactly one.
    pub fn routes(&self) -> Vec<Route> {
        match &self.spec {
            IngressSpec::Kafka(k) => k
                .topics
                .iter()
                .map(|t| Route {
                    value_type: t.value_type.clone(),
                    targets: t.targets.clone(),
                })
                .collect(),
            IngressSpec::Kinesis(k) => k
                .streams
                .iter()
                .map(|s| Route {
                    value_type: s.value_type.clone(),
                    targets: s.targets.clone(),
                })
                .collect(),
            IngressSpec::File(f) => vec![Route {
                value_type: f.value_type.clone(),
                targets: f.targets.clone(),
            }],
            IngressSpec::Generator(g) => vec![Route {
                value_type: g.value_type.clone(),
                targets: g.targets.clone(),
            }],
        }
    }

    /// A short name of the kind: `kafka`, `kinesis`, `file`, `generator`.
    pub fn kind_name(&self) -> &'static str {
        match self.spec {
            IngressSpec::Kafka(_) => "kafka",
            IngressSpec::Kinesis(_) => "kinesis",
            IngressSpec::File(_) => "file",
            IngressSpec::Generator(_) => "generator",
        }
    }
}

/// `io.statefun.kafka.v1/ingress`.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaIngress {
    /// Bootstrap servers (`address`).
    pub address: String,
    /// `consumerGroupId`.
    pub consumer_group_id: String,
    /// `topics[]`, in order.
    pub topics: Vec<KafkaTopic>,
    /// `startupPosition` (default latest).
    pub startup_position: KafkaStartupPosition,
    /// `autoOffsetResetPosition` (default latest): where to start when a group or specific offset is missing.
    pub auto_offset_reset: AutoOffsetReset,
    /// `properties`, passed to the consumer (after the `cluster`'s, which they override).
    pub properties: Properties,
    /// `cluster`: the [`KafkaCluster`] this ingress connects through, if it names one.
    pub cluster: Option<String>,
    /// The cluster's `propertiesFile` (resolved against the module file's directory):
    /// Java client properties read when the consumer is made, below `properties`.
    pub properties_file: Option<String>,
}

/// One `topics[]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaTopic {
    /// The topic name.
    pub topic: String,
    /// `valueType`.
    pub value_type: TypeName,
    /// `targets[]`.
    pub targets: Vec<FunctionPattern>,
}

/// Where a Kafka ingress starts reading on its first run.
#[derive(Clone, Debug, PartialEq)]
pub enum KafkaStartupPosition {
    /// Only records produced after start.
    Latest,
    /// From the beginning of each partition.
    Earliest,
    /// From the consumer group's committed offsets.
    GroupOffsets,
    /// From these offsets; other partitions use the auto-offset-reset position.
    SpecificOffsets(Vec<PartitionOffset>),
    /// From the first record at or after this time (`at-timestamp`/`date`).
    AtTimestamp(Timestamp),
}

/// One `topic/partition: offset` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset to start at.
    pub offset: i64,
}

/// `autoOffsetResetPosition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// `latest` (the default).
    #[default]
    Latest,
    /// `earliest`.
    Earliest,
}

/// `io.statefun.kinesis.v1/ingress`.
#[derive(Clone, Debug, PartialEq)]
pub struct KinesisIngress {
    /// `awsRegion` (default: the SDK's default region chain).
    pub aws_region: AwsRegion,
    /// `awsCredentials` (default: the SDK's default credentials chain).
    pub aws_credentials: AwsCredentials,
    /// `startupPosition` (default latest).
    pub startup_position: KinesisStartupPosition,
    /// `streams[]`, in order.
    pub streams: Vec<KinesisStream>,
    /// `clientConfigProperties`.
    pub client_config_properties: Properties,
}

/// One `streams[]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct KinesisStream {
    /// The short stream name (taken from the ARN when only `streamArn` is given).
    pub stream: String,
    /// `streamArn`, validated.
    pub arn: Option<String>,
    /// `valueType`.
    pub value_type: TypeName,
    /// `targets[]`.
    pub targets: Vec<FunctionPattern>,
}

/// Where a Kinesis ingress starts reading.
#[derive(Clone, Debug, PartialEq)]
pub enum KinesisStartupPosition {
    /// `latest`.
    Latest,
    /// `trim-horizon` or `earliest`: the oldest available record.
    TrimHorizon,
    /// `at-timestamp` or `date`.
    AtTimestamp(Timestamp),
}

/// `awsRegion`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AwsRegion {
    /// `default`: the SDK's default region chain.
    #[default]
    Default,
    /// `specific` with `id`.
    Specific(String),
    /// `custom-endpoint` with `endpoint` (http or https) and `id`.
    CustomEndpoint {
        /// The endpoint URL.
        endpoint: String,
        /// The region id.
        id: String,
    },
}

impl AwsRegion {
    /// The region id, when one is given.
    pub fn id(&self) -> Option<&str> {
        match self {
            AwsRegion::Default => None,
            AwsRegion::Specific(id) | AwsRegion::CustomEndpoint { id, .. } => Some(id),
        }
    }
}

/// `awsCredentials`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AwsCredentials {
    /// `default`: the SDK's default credentials chain.
    #[default]
    Default,
    /// `basic` with `accessKeyId` and `secretAccessKey`.
    Basic {
        /// `accessKeyId`.
        access_key_id: String,
        /// `secretAccessKey` (shown as `***`).
        secret_access_key: Secret,
    },
    /// `profile` with `profile`/`profileName` and optional `profilePath`.
    Profile {
        /// The profile name.
        name: String,
        /// The profile file, when not the default.
        path: Option<String>,
    },
}

/// An egress: where functions send records out.
#[derive(Clone, Debug, PartialEq)]
pub struct Egress {
    /// Its id (the typename functions address it by).
    pub id: TypeName,
    /// The module file that declares it, as given to the loader: relative paths in its
    /// spec (a file egress's `path`) start at this file's directory.
    pub file: String,
    /// Where it writes.
    pub spec: EgressSpec,
}

impl Egress {
    /// A short name of the kind: `kafka`, `kinesis`, `file`.
    pub fn kind_name(&self) -> &'static str {
        match self.spec {
            EgressSpec::Kafka(_) => "kafka",
            EgressSpec::Kinesis(_) => "kinesis",
            EgressSpec::File(_) => "file",
        }
    }
}

/// The egress kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum EgressSpec {
    /// `io.statefun.kafka.v1/egress`.
    Kafka(KafkaEgress),
    /// `io.statefun.kinesis.v1/egress`.
    Kinesis(KinesisEgress),
    /// `io.statefun-rs.file.v1/egress`.
    File(FileEgress),
}

/// `io.statefun.kafka.v1/egress`.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaEgress {
    /// Bootstrap servers (`address`).
    pub address: String,
    /// `deliverySemantic` (default at-least-once).
    pub delivery_semantic: KafkaDeliverySemantic,
    /// `properties`, passed to the producer (after the `cluster`'s, which they override).
    pub properties: Properties,
    /// `cluster`: the [`KafkaCluster`] this egress connects through, if it names one.
    pub cluster: Option<String>,
    /// The cluster's `propertiesFile` (resolved against the module file's directory).
    pub properties_file: Option<String>,
}

/// `io.statefun-rs.kafka.v1/cluster`: a Kafka cluster declared once and named by
/// ingresses and egresses with `cluster:` (Restate's `kafka-clusters`). Its `properties`
/// and `propertiesFile` (a `client.properties` file as Confluent Cloud and MSK hand out)
/// are the base every user of the cluster overrides with its own `properties`.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaCluster {
    /// `id`: the name ingresses and egresses give as `cluster`.
    pub id: String,
    /// `address`: the bootstrap servers.
    pub address: String,
    /// `properties`: client properties for every user of the cluster.
    pub properties: Properties,
    /// `propertiesFile`, resolved against the directory of the module file that declares
    /// the cluster.
    pub properties_file: Option<String>,
}

impl KafkaEgress {
    /// The transaction timeout when exactly-once (the engine checks it against the checkpoint interval).
    pub fn transaction_timeout(&self) -> Option<Duration> {
        match self.delivery_semantic {
            KafkaDeliverySemantic::ExactlyOnce {
                transaction_timeout,
            } => Some(transaction_timeout),
            _ => None,
        }
    }
}

/// `deliverySemantic` of a Kafka egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KafkaDeliverySemantic {
    /// `exactly-once` with `transactionTimeoutMillis` or `transactionTimeout`.
    ExactlyOnce {
        /// The Kafka transaction timeout.
        transaction_timeout: Duration,
    },
    /// `at-least-once` (the default).
    #[default]
    AtLeastOnce,
    /// `none`: fire and forget.
    None,
}

/// `io.statefun.kinesis.v1/egress`.
#[derive(Clone, Debug, PartialEq)]
pub struct KinesisEgress {
    /// `awsRegion`.
    pub aws_region: AwsRegion,
    /// `awsCredentials`.
    pub aws_credentials: AwsCredentials,
    /// `streamName`: the default stream (records may name their own).
    pub stream_name: String,
    /// `maxOutstandingRecords` (default 1000).
    pub max_outstanding_records: usize,
    /// `clientConfigProperties`.
    pub client_config_properties: Properties,
    /// `recordIds` (statefun-rs extension, default `false`): frame each
    /// record's data with a versioned prefix carrying a deterministic 16-byte
    /// record id, so that consumers can drop the duplicates at-least-once
    /// delivery may write (see `statefun_connectors::kinesis::split_record_id`).
    /// Off, records carry exactly the bytes functions wrote, as upstream.
    pub record_ids: bool,
}

/// `io.statefun-rs.file.v1/ingress`: lines of a file (or stdin) as messages.
#[derive(Clone, Debug, PartialEq)]
pub struct FileIngress {
    /// The file; `-` is standard input.
    pub path: String,
    /// `valueType` of each line.
    pub value_type: TypeName,
    /// `targets[]`.
    pub targets: Vec<FunctionPattern>,
    /// `follow`: keep reading as the file grows (default false).
    pub follow: bool,
}

/// `io.statefun-rs.generator.v1/ingress`: synthetic messages for benchmarks.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorIngress {
    /// `valueType` of the generated values.
    pub value_type: TypeName,
    /// `targets[]`.
    pub targets: Vec<FunctionPattern>,
    /// Distinct ids (`keys`, default 1000).
    pub keys: u64,
    /// Messages per second over all workers (`rate`, default 0 = as fast as possible).
    pub rate: f64,
    /// Messages in total (`count`, default 0 = unbounded).
    pub count: u64,
    /// Bytes per value (`valueSize`, default 100).
    pub value_size: usize,
    /// `stamp` (default false): each string or raw value begins with the record's due
    /// time, for end-to-end latency measurements: [`Self::STAMP_DIGITS`] decimal digits of
    /// microseconds since the Unix epoch.
    pub stamp: bool,
    /// `keyOrder: scrambled` (default `sequential`): record `s` goes to the id at place
    /// `s % keys` of a fixed permutation of the ids instead of to id `s % keys`, so
    /// consecutive records reach unrelated instances, as records keyed by user ids arrive.
    pub scrambled_keys: bool,
}

impl GeneratorIngress {
    /// The characters a `stamp` takes at the start of each value: the due time in
    /// microseconds since the Unix epoch, zero-padded (16 digits last until the year 2286).
    pub const STAMP_DIGITS: usize = 16;
}

/// `io.statefun-rs.file.v1/egress`: records as lines of a file (or stdout).
#[derive(Clone, Debug, PartialEq)]
pub struct FileEgress {
    /// The file; `-` is standard output.
    pub path: String,
    /// `deliverySemantic` (default at-least-once).
    pub delivery_semantic: FileDeliverySemantic,
}

/// `deliverySemantic` of a file egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FileDeliverySemantic {
    /// `at-least-once` (the default): lines may repeat after a restore.
    #[default]
    AtLeastOnce,
    /// `exactly-once`: lines are written only for completed checkpoints.
    ExactlyOnce,
}
