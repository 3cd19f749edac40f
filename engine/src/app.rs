//! The application: module.yaml and the function registry resolved into
//! what the dataflow runs — function entries, ingress routes and egresses.
//!
//! Everything that can be checked before the dataflow starts is checked
//! here, and all problems are reported together, so a bad deployment fails
//! at startup with every reason rather than at the first record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use statefun_connectors::{
    ConnectorError, FileEgressConfig, FileIngressConfig, FileSink, FileSource, GeneratorConfig,
    GeneratorSource, KafkaSink, KafkaSource, KinesisSink, KinesisSource, Sink, Source,
};
use statefun_module::{
    BadRecordPolicy, EgressSpec, FunctionPattern, HttpEndpoint, IngressSpec, KafkaDeliverySemantic,
    KafkaEgress, KafkaIngress, KinesisEgress, KinesisIngress, Module, RemoteMetadata,
};
use statefun_sdk::TypeName;

use crate::dead_letter::{BadRecords, DeadLetterPlan, Destination, DEAD_LETTER_FUNCTION};
pub use crate::entry::FunctionEntry;
use crate::registry::FunctionRegistry;

/// Runtime settings that are not part of module.yaml.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The length of an epoch, the unit of progress (default 10 ms).
    pub epoch_interval: Duration,
    /// How many function→function hops a cascade may take within one epoch
    /// before its messages move to the next epoch (default 128). This keeps
    /// runaway cycles from stalling epoch completion.
    pub hop_cap: u32,
    /// Sources pause while more than this many epochs are incomplete (default 200).
    pub max_epochs_in_flight: u64,
    /// Records a source reads per activation (default 1024).
    pub source_batch: usize,
    /// After shutdown is requested, how long in-flight messages may still be
    /// processed before the rest are dropped (default 5 s). Bounds the drain
    /// of runaway cycles.
    pub shutdown_grace: Duration,
    /// What happens when a remote invocation fails for good.
    pub remote_failure: crate::remote::RemoteFailurePolicy,
    /// What happens when an embedded function returns an error, a message is
    /// for a function type nothing serves, or an egress record is for an
    /// egress module.yaml does not declare (`--on-function-error`, default
    /// fail, as upstream StateFun).
    pub function_error: FunctionErrorPolicy,
    /// Sources of this process pause while more messages than this wait
    /// behind in-flight remote requests (default 100 000), so a slow remote
    /// function bounds memory instead of growing queues; every other address
    /// keeps being processed meanwhile.
    pub max_remote_queued: u64,
    /// Durable state and checkpoints; `None` keeps state in memory only.
    pub durability: Option<Durability>,
    /// Whether an ingress record without a non-empty UTF-8 key or without a
    /// value (a Kafka tombstone) fails the job instead of being skipped,
    /// counted and logged (`--on-bad-record fail|skip`, default skip). An
    /// ingress's own `badRecords` in module.yaml wins over this.
    pub fail_on_bad_records: bool,
}

/// What to do when a function fails on a message (`--on-function-error`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum FunctionErrorPolicy {
    /// The job stops with an error naming the function, address and cause
    /// (default; upstream StateFun's semantics). With durable state nothing is
    /// lost: a restart resumes from the last checkpoint and invokes the
    /// message again, so a transient error or a bug fixed by a redeploy costs
    /// a restart, not the message.
    #[default]
    Fail,
    /// The message is dropped, counted (`failed_invocations`) and logged
    /// (rate-limited), and the job goes on.
    Skip,
    /// The message goes to a dead-letter egress (as `--on-remote-failure
    /// dead-letter=…` does, see `DeadLetterPlan::remote`), and the job goes on.
    DeadLetter {
        /// The egress id.
        egress: TypeName,
        /// The topic (Kafka egress) or stream (Kinesis egress).
        destination: Option<String>,
    },
}

/// [`FunctionErrorPolicy`] resolved against the module.
#[derive(Clone, Debug, PartialEq)]
pub enum FunctionErrorAction {
    /// Fail the job.
    Fail,
    /// Drop and count.
    Skip,
    /// Write a dead letter.
    DeadLetter(DeadLetterPlan),
}

/// Where and how often state is checkpointed.
#[derive(Clone, Debug)]
pub struct Durability {
    /// The directory holding one RocksDB database per worker (`worker-N`).
    pub state_dir: std::path::PathBuf,
    /// Time between checkpoints (default 1 s); rounded to whole epochs.
    pub checkpoint_interval: Duration,
    /// The memory each worker's durable state may use.
    pub memory: crate::checkpoint::StateMemory,
}

impl Durability {
    /// Durable state in `state_dir` with default interval and cache.
    pub fn new(state_dir: impl Into<std::path::PathBuf>) -> Self {
        Durability {
            state_dir: state_dir.into(),
            checkpoint_interval: Duration::from_secs(1),
            memory: Default::default(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            epoch_interval: Duration::from_millis(10),
            hop_cap: 128,
            max_epochs_in_flight: 200,
            source_batch: 1024,
            shutdown_grace: Duration::from_secs(5),
            remote_failure: crate::remote::RemoteFailurePolicy::FailJob,
            function_error: FunctionErrorPolicy::Fail,
            max_remote_queued: 100_000,
            durability: None,
            fail_on_bad_records: false,
        }
    }
}

/// Where the records of one `topics[]`/`streams[]` entry go.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutePlan {
    /// The typename ingress values are delivered with.
    pub value_type: statefun_sdk::Symbol,
    /// The function types that receive every record (the record key is the id).
    pub targets: Vec<TypeName>,
    /// The function types that receive every record wrapped with its metadata
    /// as a `statefun_rs.v1.IngressRecord` (the remote targets of an ingress
    /// with `remoteMetadata: wrap`; see [`statefun_sdk::proto::ingress`]).
    pub wrapped: Vec<TypeName>,
}

/// How to open an ingress source on a worker.
#[derive(Clone, Debug)]
pub enum SourcePlan {
    /// A file or stdin.
    File(FileIngressConfig),
    /// The generator.
    Generator(GeneratorConfig),
    /// Kinesis Data Streams: each worker reads the shards it owns.
    Kinesis(Box<KinesisIngress>),
    /// Kafka: each worker reads the partitions it owns (assigned, not subscribed).
    Kafka(Box<KafkaIngress>),
}

/// An ingress: its id, routes, and source.
#[derive(Clone, Debug)]
pub struct IngressPlan {
    /// The ingress id.
    pub id: TypeName,
    /// Routes, indexed by the source record's `route`.
    pub routes: Vec<RoutePlan>,
    /// The source to open on each worker.
    pub source: SourcePlan,
    /// What happens to records that cannot become messages.
    pub bad_records: BadRecords,
}

impl IngressPlan {
    /// Opens this ingress's source for worker `index` of `peers`.
    pub fn open(&self, index: usize, peers: usize) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(match &self.source {
            SourcePlan::File(config) => Box::new(FileSource::open(config.clone(), index, peers)?),
            SourcePlan::Generator(config) => {
                Box::new(GeneratorSource::new(config.clone(), index, peers))
            }
            SourcePlan::Kafka(spec) => Box::new(KafkaSource::open(&self.id, spec, index, peers)?),
            SourcePlan::Kinesis(spec) => {
                Box::new(KinesisSource::open(self.id.as_str(), spec, index, peers)?)
            }
        })
    }
}

/// How to open an egress sink.
#[derive(Clone, Debug)]
pub enum SinkPlan {
    /// A file or stdout, written by one worker.
    File(FileEgressConfig),
    /// A Kinesis stream; every worker writes its own records (at-least-once).
    Kinesis(TypeName, Box<KinesisEgress>),
    /// Kafka; every worker produces its own records (at-least-once or none).
    Kafka(TypeName, Box<KafkaEgress>),
}

impl SinkPlan {
    /// Whether one writer (worker 0) serves the whole job, as for a file;
    /// otherwise every worker opens its own sink and writes its own records.
    pub fn single_writer(&self) -> bool {
        matches!(self, SinkPlan::File(_))
    }

    /// Opens the sink on worker `worker`; `resume` when the run restores a
    /// checkpoint (an exactly-once file then truncates what was written past
    /// its last delivered checkpoint).
    pub fn open(&self, resume: bool, worker: usize) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(match self {
            SinkPlan::File(config) => Box::new(FileSink::open(FileEgressConfig {
                resume,
                ..config.clone()
            })?),
            SinkPlan::Kinesis(id, spec) => Box::new(KinesisSink::open(id.as_str(), spec)?),
            SinkPlan::Kafka(id, spec) => match spec.delivery_semantic {
                KafkaDeliverySemantic::ExactlyOnce { .. } => {
                    Box::new(KafkaSink::open_exactly_once(id, spec, worker, resume)?)
                }
                _ => Box::new(KafkaSink::open(id, spec)?),
            },
        })
    }
}

/// A module resolved against the registry: what the dataflow runs.
pub struct Application {
    /// The function types the runtime can invoke.
    pub functions: FxHashMap<TypeName, Arc<FunctionEntry>>,
    /// Ingresses in module order.
    pub ingresses: Vec<IngressPlan>,
    /// Egresses by id.
    pub egresses: BTreeMap<TypeName, SinkPlan>,
    /// Where messages of remote invocations that failed for good go
    /// (`--on-remote-failure dead-letter=…`); `None` fails the job.
    pub remote_dead_letter: Option<DeadLetterPlan>,
    /// What a function failure does (`--on-function-error`).
    pub function_error: FunctionErrorAction,
    /// HTTP endpoints serving remote functions (Rust functions win where both serve a type).
    pub endpoints: Vec<HttpEndpoint>,
    /// Runtime settings.
    pub settings: Settings,
}

impl Application {
    /// Resolves `module` against `registry`; every problem is reported, one per line.
    pub fn new(
        module: &Module,
        registry: &FunctionRegistry,
        settings: Settings,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut functions = FxHashMap::default();
        for spec in registry.iter() {
            functions.insert(
                spec.function_type.clone(),
                Arc::new(FunctionEntry::of(spec)),
            );
        }
        let file = &module.file;
        // Relative paths in a module file resolve against the directory of the
        // file that declares them (`declared_in`: each ingress and egress knows
        // its own), so an app runs the same from any working directory and its
        // module files may live in different directories.
        let resolve_path = |declared_in: &str, path: &str| -> String {
            if path == "-" || std::path::Path::new(path).is_absolute() {
                path.to_owned()
            } else {
                let base = std::path::Path::new(declared_in)
                    .parent()
                    .unwrap_or(std::path::Path::new(""));
                base.join(path).to_string_lossy().into_owned()
            }
        };
        // Targets resolve as `validate` resolves them (one function in the module crate), so
        // the two cannot disagree; run refuses every target validate flags.
        let rust: Vec<TypeName> = registry.iter().map(|s| s.function_type.clone()).collect();
        for (diagnostic, problem) in module.check_targets(&rust) {
            errors.push(match problem {
                statefun_module::TargetProblem::Unserved => format!(
                    "{diagnostic}: register a Rust function of that type, or declare an `io.statefun.endpoints.v2/http` endpoint for it"
                ),
                statefun_module::TargetProblem::ByNamespace { .. } => diagnostic.to_string(),
            });
        }
        let resolve = |pattern: &FunctionPattern| -> Vec<TypeName> {
            module
                .resolve_target(pattern, &rust)
                .unwrap_or_default()
                .into_iter()
                // The registry's own type names, so that messages routed here share one
                // `Arc` with the function table (pointer-equal).
                .map(|t| {
                    registry
                        .get(&t)
                        .map_or(t, |spec| spec.function_type.clone())
                })
                .collect()
        };
        let mut ingresses = Vec::new();
        for ingress in &module.ingresses {
            let routes: Vec<RoutePlan> = ingress
                .routes()
                .iter()
                .map(|route| {
                    let targets: Vec<TypeName> = route.targets.iter().flat_map(resolve).collect();
                    // Rust functions read metadata from their context: only
                    // the types no Rust function serves get the wrapper.
                    let (targets, wrapped) = match ingress.remote_metadata {
                        RemoteMetadata::None => (targets, Vec::new()),
                        RemoteMetadata::Wrap => {
                            targets.into_iter().partition(|t| functions.contains_key(t))
                        }
                    };
                    RoutePlan {
                        value_type: route.value_type.as_str().into(),
                        targets,
                        wrapped,
                    }
                })
                .collect();
            let source = match &ingress.spec {
                IngressSpec::File(f) => SourcePlan::File(FileIngressConfig {
                    id: ingress.id.clone(),
                    path: resolve_path(&ingress.file, &f.path),
                    value_type: f.value_type.as_str().into(),
                    follow: f.follow,
                }),
                IngressSpec::Generator(g) => SourcePlan::Generator(GeneratorConfig {
                    id: ingress.id.clone(),
                    value_type: g.value_type.as_str().into(),
                    keys: g.keys,
                    rate: g.rate,
                    count: g.count,
                    value_size: g.value_size,
                    stamp: g.stamp,
                    scrambled_keys: g.scrambled_keys,
                }),
                IngressSpec::Kafka(k) => {
                    let Some(properties) = planned_kafka_properties(
                        &ingress.file,
                        &ingress.id,
                        &k.properties,
                        k.properties_file.as_deref(),
                        &mut errors,
                    ) else {
                        continue;
                    };
                    SourcePlan::Kafka(Box::new(KafkaIngress {
                        properties,
                        properties_file: None,
                        ..k.clone()
                    }))
                }
                IngressSpec::Kinesis(k) => {
                    warn_unsupported_properties(
                        &ingress.file,
                        &ingress.id,
                        &k.client_config_properties,
                    );
                    SourcePlan::Kinesis(Box::new(k.clone()))
                }
            };
            let bad_records = match &ingress.bad_records {
                None if settings.fail_on_bad_records => BadRecords::Fail,
                None | Some(BadRecordPolicy::Skip) => BadRecords::Skip,
                Some(BadRecordPolicy::Fail) => BadRecords::Fail,
                Some(BadRecordPolicy::DeadLetter(d)) => {
                    match dead_letter_plan(
                        module,
                        &d.egress,
                        d.topic.as_deref(),
                        d.stream.as_deref(),
                        ingress.id.as_str(),
                    ) {
                        Ok(plan) => BadRecords::DeadLetter(plan),
                        Err(e) => {
                            // The module loader checks this; a hand-built Module may not.
                            errors.push(format!(
                                "{}: ingress `{}`: badRecords: {e}",
                                ingress.file, ingress.id
                            ));
                            BadRecords::Skip
                        }
                    }
                }
            };
            ingresses.push(IngressPlan {
                id: ingress.id.clone(),
                routes,
                source,
                bad_records,
            });
        }
        let mut egresses = BTreeMap::new();
        for egress in &module.egresses {
            let plan = match &egress.spec {
                EgressSpec::File(f) => {
                    if f.delivery_semantic == statefun_module::FileDeliverySemantic::ExactlyOnce
                        && settings.durability.is_none()
                    {
                        tracing::warn!(
                            "{}: egress `{}`: deliverySemantic exactly-once needs durable state (--state-dir); \
                             without it records are written as they are produced and a crash may repeat or lose some",
                            egress.file, egress.id
                        );
                    }
                    SinkPlan::File(FileEgressConfig {
                        id: egress.id.clone(),
                        path: resolve_path(&egress.file, &f.path),
                        exactly_once: f.delivery_semantic
                            == statefun_module::FileDeliverySemantic::ExactlyOnce,
                        resume: false,
                    })
                }
                EgressSpec::Kafka(k) => {
                    if let KafkaDeliverySemantic::ExactlyOnce { .. } = k.delivery_semantic {
                        match &settings.durability {
                            None => {
                                errors.push(format!("{}: egress `{}`: deliverySemantic exactly-once needs durable state and checkpoints: run with --state-dir <dir> (or use `type: at-least-once`)", egress.file, egress.id));
                                continue;
                            }
                            Some(d) => {
                                if let Some(timeout) = k.transaction_timeout() {
                                    if timeout <= d.checkpoint_interval {
                                        errors.push(format!("{}: egress `{}`: transaction timeout {} is not longer than the checkpoint interval {}; raise transactionTimeout above the interval (at most 15min)", egress.file, egress.id, statefun_module::format_duration(timeout), statefun_module::format_duration(d.checkpoint_interval)));
                                        continue;
                                    }
                                }
                            }
                        }
                    }
                    let Some(properties) = planned_kafka_properties(
                        &egress.file,
                        &egress.id,
                        &k.properties,
                        k.properties_file.as_deref(),
                        &mut errors,
                    ) else {
                        continue;
                    };
                    SinkPlan::Kafka(
                        egress.id.clone(),
                        Box::new(KafkaEgress {
                            properties,
                            properties_file: None,
                            ..k.clone()
                        }),
                    )
                }
                EgressSpec::Kinesis(k) => {
                    warn_unsupported_properties(
                        &egress.file,
                        &egress.id,
                        &k.client_config_properties,
                    );
                    SinkPlan::Kinesis(egress.id.clone(), Box::new(k.clone()))
                }
            };
            egresses.insert(egress.id.clone(), plan);
        }
        let remote_dead_letter = match &settings.remote_failure {
            crate::remote::RemoteFailurePolicy::FailJob => None,
            crate::remote::RemoteFailurePolicy::DeadLetter {
                egress,
                destination,
            } => {
                let d = destination.as_deref();
                match dead_letter_plan(module, egress, d, d, "remote-failures") {
                    Ok(plan) => Some(plan),
                    Err(e) => {
                        errors.push(format!("{file}: --on-remote-failure: {e}"));
                        None
                    }
                }
            }
        };
        let function_error = match &settings.function_error {
            FunctionErrorPolicy::Fail => FunctionErrorAction::Fail,
            FunctionErrorPolicy::Skip => FunctionErrorAction::Skip,
            FunctionErrorPolicy::DeadLetter {
                egress,
                destination,
            } => {
                let d = destination.as_deref();
                match dead_letter_plan(module, egress, d, d, "function-errors") {
                    Ok(plan) => FunctionErrorAction::DeadLetter(plan),
                    Err(e) => {
                        errors.push(format!("{file}: --on-function-error: {e}"));
                        FunctionErrorAction::Fail
                    }
                }
            }
        };
        if ingresses
            .iter()
            .any(|i| matches!(i.bad_records, BadRecords::DeadLetter(_)))
        {
            match crate::dead_letter::function_entry() {
                Ok(entry) => {
                    if functions
                        .insert(entry.function_type.clone(), entry)
                        .is_some()
                    {
                        errors.push(format!(
                            "function type `{DEAD_LETTER_FUNCTION}` is reserved for dead letters; register your function under another type"
                        ));
                    }
                }
                Err(e) => errors.push(format!("cannot set up dead letters: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(Application {
                functions,
                ingresses,
                egresses,
                remote_dead_letter,
                function_error,
                endpoints: module.endpoints.clone(),
                settings,
            })
        } else {
            Err(errors)
        }
    }
}

/// Where dead letters for `egress` go: the record kind its egress takes.
/// A Kafka egress needs `topic`, a Kinesis egress `stream`; a file egress
/// takes either as a label, else `label`.
fn dead_letter_plan(
    module: &Module,
    egress: &TypeName,
    topic: Option<&str>,
    stream: Option<&str>,
    label: &str,
) -> Result<DeadLetterPlan, String> {
    let spec = module
        .egresses
        .iter()
        .find(|e| &e.id == egress)
        .map(|e| &e.spec)
        .ok_or_else(|| {
            format!(
                "the dead-letter egress `{egress}` is not declared in the module; declare it, e.g. as an io.statefun-rs.file.v1/egress"
            )
        })?;
    let destination = match spec {
        EgressSpec::Kafka(_) => Destination::Kafka {
            topic: topic
                .ok_or_else(|| format!("the dead-letter egress `{egress}` is a Kafka egress: name the topic for dead letters"))?
                .to_owned(),
        },
        EgressSpec::Kinesis(_) => Destination::Kinesis {
            stream: stream
                .ok_or_else(|| format!("the dead-letter egress `{egress}` is a Kinesis egress: name the stream for dead letters"))?
                .to_owned(),
        },
        EgressSpec::File(_) => Destination::File {
            label: topic.or(stream).unwrap_or(label).to_owned(),
        },
    };
    Ok(DeadLetterPlan {
        egress: egress.clone(),
        destination,
    })
}

/// A Kafka ingress's or egress's `properties` as librdkafka takes them
/// ([`statefun_connectors::kafka::client_properties`]: Java client settings
/// translated or dropped, every key checked by librdkafka), with its notes;
/// notes and errors name the file and the id. `run` logs the notes and
/// `validate` prints them: one rule for both.
fn kafka_properties(
    file: &str,
    id: &TypeName,
    properties: &statefun_module::Properties,
    properties_file: Option<&str>,
) -> Result<(statefun_module::Properties, Vec<String>), Vec<String>> {
    let named = |items: &[String]| -> Vec<String> {
        items
            .iter()
            .map(|x| format!("{file}: `{id}`: {x}"))
            .collect()
    };
    match statefun_connectors::kafka::client_properties(properties, properties_file) {
        Ok(translated) => Ok((translated.properties, named(&translated.notes))),
        Err(problems) => Err(named(&problems)),
    }
}

/// [`kafka_properties`] for the plan: notes logged, errors collected.
fn planned_kafka_properties(
    file: &str,
    id: &TypeName,
    properties: &statefun_module::Properties,
    properties_file: Option<&str>,
    errors: &mut Vec<String>,
) -> Option<statefun_module::Properties> {
    match kafka_properties(file, id, properties, properties_file) {
        Ok((properties, notes)) => {
            for note in notes {
                tracing::warn!("{note}");
            }
            Some(properties)
        }
        Err(problems) => {
            errors.extend(problems);
            None
        }
    }
}

/// What `statefun validate` says of the Kafka client properties of `module`:
/// (errors, notes), by the rule a run applies ([`kafka_properties`]).
pub fn check_kafka_properties(module: &Module) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut notes) = (Vec::new(), Vec::new());
    let ingresses = module.ingresses.iter().filter_map(|i| match &i.spec {
        IngressSpec::Kafka(k) => Some((&i.file, &i.id, &k.properties, &k.properties_file)),
        _ => None,
    });
    let egresses = module.egresses.iter().filter_map(|e| match &e.spec {
        EgressSpec::Kafka(k) => Some((&e.file, &e.id, &k.properties, &k.properties_file)),
        _ => None,
    });
    for (file, id, properties, properties_file) in ingresses.chain(egresses) {
        match kafka_properties(file, id, properties, properties_file.as_deref()) {
            Ok((_, n)) => notes.extend(n),
            Err(e) => errors.extend(e),
        }
    }
    (errors, notes)
}

/// `clientConfigProperties` without an AWS SDK setting are ignored, with a
/// warning that lists the supported names.
fn warn_unsupported_properties(
    file: &str,
    id: &TypeName,
    properties: &statefun_module::Properties,
) {
    let unsupported = statefun_connectors::kinesis::unsupported_client_properties(properties);
    if !unsupported.is_empty() {
        tracing::warn!(
            "{file}: `{id}`: clientConfigProperties {unsupported:?} have no AWS SDK setting and are ignored; supported: {:?}",
            statefun_connectors::kinesis::SUPPORTED_CLIENT_PROPERTIES
        );
    }
}
