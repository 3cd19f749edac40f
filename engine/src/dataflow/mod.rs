//! Everything that touches timely-dataflow lives in this module, so that a
//! timely upgrade changes one place.
//!
//! The shape (DESIGN.md §2):
//!
//! ```text
//!  sources ─► router ─►┐ outer scope: time = epoch (u64)
//!                      │
//!        ┌─────────────▼──────────── inner scope: time = (epoch, hop) ─┐
//!        │ concat ─► Exchange(worker of id) ─► functions ─┬─► egress ──┼─► leave ─► sinks
//!        │   ▲                                            │            │
//!        │   └──────── feedback (+(0, 1)) ◄───────────────┘ messages   │
//!        └─────────────────────────────────────────────────────────────┘
//! ```
//!
//! A message sent at `(e, k)` arrives at `(e, k + 1)`; past the hop cap and
//! for delayed messages it moves to `(e + 1, 0)`, which is legal because the
//! order is lexicographic. So epoch `e` is complete exactly when every
//! cascade it started is quiet, and runaway cycles cannot stall it.
//!
//! # Embedding in a host dataflow
//!
//! [`run`] is what `statefun run` does. A host (an analytics job on timely or
//! differential-dataflow) builds the same graph inside its own `worker.dataflow`
//! instead, from parts (docs/EMBEDDING.md has the whole story):
//!
//! * messages in: [`ingress_stream`] (module.yaml's sources) and [`host_ingress`] (a
//!   stream of the host's own [`HostRecord`]s, declared as a [`HostIngress`] and routed
//!   by the same rules), concatenated;
//! * [`build_function_graph`] with a [`FunctionWorker`] per worker: egress records out;
//! * records out: [`egress_streams`] hands the host the egresses it consumes as streams,
//!   and [`attach_sinks`] writes the others to the sinks module.yaml declares.
//!
//! State lives in the worker's [`StateBackend`] (in memory: [`MemoryBackend`]); the
//! checkpoints of `--state-dir` are [`run`]'s alone (see [`build_function_graph`]).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use statefun_engine::dataflow::{
//!     attach_sinks, build_function_graph, egress_streams, host_ingress, FunctionWorker,
//!     HostIngress, HostRecord,
//! };
//! use statefun_engine::state::MemoryBackend;
//! use statefun_engine::{Application, FunctionRegistry, Settings, Shared};
//! use statefun_sdk::{
//!     Context, EgressMessage, FunctionError, FunctionSpec, Message, StringType, Type, TypeName,
//! };
//! use timely::dataflow::operators::{Inspect, ToStream};
//!
//! // A function greeting every name it is sent, by its instance id.
//! fn greet(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
//!     let name = message.as_value(&StringType)?;
//!     let greeting = format!("{}: hello {name}", ctx.self_address().id);
//!     ctx.send_egress(EgressMessage::of(TypeName::parse("demo/greetings")?, &StringType, &greeting));
//!     Ok(())
//! }
//!
//! // The egress the host consumes is declared, so functions may write to it.
//! let yaml = "kind: io.statefun-rs.file.v1/egress\nspec:\n  id: demo/greetings\n  path: \"-\"\n";
//! let module = statefun_module::load_str(yaml, "demo.yaml").map_err(|d| d.to_string())?;
//! let mut registry = FunctionRegistry::new();
//! registry.register(FunctionSpec::builder(TypeName::parse("demo/greeter")?).with_function(greet).build()?)?;
//! let app = Arc::new(Application::new(&module, &registry, Settings::default()).map_err(|e| e.join("\n"))?);
//! // The host's names go to `demo/greeter`, the record key being the id.
//! let names = HostIngress::new("demo/names", "io.statefun.types/string", &["demo/greeter"])
//!     .resolve(&module, &app)
//!     .map_err(|e| e.join("\n"))?;
//! let records = vec![
//!     HostRecord::of("en", &StringType, &"Ann".to_owned())?,
//!     HostRecord::of("fr", &StringType, &"Luc".to_owned())?,
//!     HostRecord::of("", &StringType, &"nobody".to_owned())?, // no id: skipped
//! ];
//! let shared = Arc::new(Shared::default());
//! let greetings = Arc::new(Mutex::new(Vec::new()));
//! let (seen, metrics) = (greetings.clone(), shared.clone());
//! timely::execute_directly(move |worker| {
//!     worker.dataflow::<u64, _, _>(|scope| {
//!         let messages = host_ingress(records.to_stream(scope), &names, &shared);
//!         let functions = FunctionWorker::new(app.clone(), Box::new(MemoryBackend::default()), shared.clone());
//!         let egress = build_function_graph(scope, messages, functions);
//!         let mut streams = egress_streams(egress, &app, &[TypeName::parse("demo/greetings").unwrap()]).unwrap();
//!         attach_sinks(streams.rest, &app, &shared);
//!         let ours = streams.taken.pop_first().unwrap().1;
//!         ours.inspect(move |m| seen.lock().unwrap().push(StringType.decode(&m.value.value).unwrap()));
//!     });
//! });
//! let mut greetings = greetings.lock().unwrap().clone();
//! greetings.sort();
//! assert_eq!(greetings, ["en: hello Ann", "fr: hello Luc"]);
//! assert_eq!(statefun_engine::shared::Metrics::get(&metrics.metrics.records_skipped), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod baseline;
mod batches;
pub mod checkpointing;
mod function;
mod rescale;
mod sink;
mod source;
mod stop;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::{
    Concat, Concatenate, ConnectLoop, Enter, Feedback, Leave, Probe,
};
use timely::dataflow::{ProbeHandle, Scope, Stream};
use timely::{CommunicationConfig, WorkerConfig};

use statefun_connectors::RecordKey;
use statefun_sdk::EgressMessage;

use crate::app::{Application, Durability};
use crate::checkpoint::rescale::Decision;
use crate::checkpoint::{agree, DurableBackend, RocksStore, Schedule, WorkerReport};
use crate::envelope::{Envelope, Metadata};
use crate::shared::{Metrics, Shared};
use crate::state::{MemoryBackend, StateBackend};

use checkpointing::{Control, WorkerCheckpoint};
pub use function::{Checkpointing, FunctionWorker};

use std::collections::BTreeMap;

use crate::app::RoutePlan;
use crate::dead_letter::BadRecords;

/// The time of the function loop: `(epoch, hop)`, ordered lexicographically.
pub type LoopTime = (u64, u32);

/// Where this process sits in a timely cluster (`-w`, `-n`, `-p`, `-h`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Worker threads per process (`-w`).
    pub workers: usize,
    /// Number of processes (`-n`).
    pub processes: usize,
    /// This process's index (`-p`).
    pub process: usize,
    /// A file with one `host:port` per process (`-h`); default `localhost:2101+i`.
    pub hostfile: Option<PathBuf>,
    /// The processes' addresses given inline (`--hosts`): a pattern with `{i}` expanded for
    /// `i` in `0..processes` (`statefun-{i}.statefun:2101`, as a StatefulSet names its
    /// pods), or a comma-separated list. Not together with `hostfile`.
    pub hosts: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
            hosts: None,
        }
    }
}

/// The addresses `--hosts` gives for `processes` processes: `pattern` with `{i}` replaced by
/// 0, 1, …, or a comma-separated list of exactly `processes` addresses.
///
/// ```
/// use statefun_engine::dataflow::expand_hosts;
/// assert_eq!(
///     expand_hosts("statefun-{i}.statefun:2101", 2).unwrap(),
///     ["statefun-0.statefun:2101", "statefun-1.statefun:2101"]
/// );
/// assert_eq!(expand_hosts("a:1, b:2", 2).unwrap(), ["a:1", "b:2"]);
/// assert!(expand_hosts("a:1", 2).is_err());
/// ```
pub fn expand_hosts(pattern: &str, processes: usize) -> Result<Vec<String>, String> {
    if pattern.contains("{i}") {
        return Ok((0..processes)
            .map(|i| pattern.replace("{i}", &i.to_string()))
            .collect());
    }
    let list: Vec<String> = pattern
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    if list.len() != processes {
        return Err(format!(
            "--hosts lists {} addresses, but -n is {processes}: give one host:port per process, \
             comma-separated, or a pattern with {{i}} (e.g. `statefun-{{i}}.statefun:2101`)",
            list.len()
        ));
    }
    Ok(list)
}

/// The ordinal at the end of a host name (`statefun-3` → 3), as a Kubernetes StatefulSet
/// names its pods: the process index for `--process-from-hostname`.
///
/// ```
/// use statefun_engine::dataflow::hostname_ordinal;
/// assert_eq!(hostname_ordinal("statefun-3"), Some(3));
/// assert_eq!(hostname_ordinal("my-app-12.example"), None);
/// assert_eq!(hostname_ordinal("statefun"), None);
/// ```
pub fn hostname_ordinal(hostname: &str) -> Option<usize> {
    let (_, ordinal) = hostname.trim().rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse().ok()
}

impl ClusterConfig {
    /// The timely configuration for this cluster position.
    pub fn timely_config(&self) -> Result<timely::Config, String> {
        if self.workers == 0 {
            return Err("-w/--workers must be at least 1".into());
        }
        let communication = if self.processes > 1 {
            if self.process >= self.processes {
                return Err(format!(
                    "-p/--process {} is out of range for -n/--processes {}: use 0..{}",
                    self.process,
                    self.processes,
                    self.processes - 1
                ));
            }
            let addresses = match (&self.hostfile, &self.hosts) {
                (Some(_), Some(_)) => {
                    return Err("give either -h/--hostfile or --hosts, not both".into())
                }
                (None, Some(pattern)) => expand_hosts(pattern, self.processes)?,
                (Some(path), None) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read hostfile {}: {e}", path.display()))?;
                    let lines: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .take(self.processes)
                        .collect();
                    if lines.len() < self.processes {
                        return Err(format!(
                            "hostfile {} lists {} addresses, but -n is {}: give one host:port per line",
                            path.display(),
                            lines.len(),
                            self.processes
                        ));
                    }
                    lines
                }
                (None, None) => (0..self.processes)
                    .map(|i| format!("localhost:{}", 2101 + i))
                    .collect(),
            };
            CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses,
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            CommunicationConfig::Process(self.workers)
        } else {
            CommunicationConfig::Thread
        };
        Ok(timely::Config {
            communication,
            worker: WorkerConfig::default(),
        })
    }
}

/// Builds the function graph inside `scope`: messages in, egress records out.
///
/// This is the library entry point: `ingress` may come from
/// [`ingress_stream`], [`host_ingress`] or any other operator of the caller's
/// dataflow (concatenated), and the returned egress stream can feed sinks
/// ([`attach_sinks`]), be taken apart per egress ([`egress_streams`]) or feed
/// further analysis (e.g. differential-dataflow). Messages are exchanged to
/// the worker owning their id here, so `ingress` may carry any worker's ids.
///
/// Give it a worker made with [`FunctionWorker::new`] and any [`StateBackend`].
/// State then lasts as long as the process, and nothing is checkpointed. A
/// [`FunctionWorker::durable`] worker is for [`run`] only: its checkpoints
/// complete only with the control stream, the recovery exchange before the
/// dataflow is built, checkpoint-aware sources and sinks that hold records
/// until every worker's checkpoint is durable, which [`run`] wires and this
/// function does not; here no checkpoint would ever count as complete (no
/// worker's token reaches it), so its pending state would never be merged
/// into the store nor its outboxes dropped.
/// docs/EMBEDDING.md says what a host would have to provide.
pub fn build_function_graph<'s>(
    scope: Scope<'s, u64>,
    ingress: Stream<'s, u64, Vec<Envelope>>,
    worker: FunctionWorker,
) -> Stream<'s, u64, Vec<EgressMessage>> {
    function_graph(scope, ingress, worker).0
}

/// The function graph with its control stream (restored outbox records and
/// finish announcements for checkpointed sinks).
#[allow(clippy::type_complexity)]
fn function_graph<'s>(
    scope: Scope<'s, u64>,
    ingress: Stream<'s, u64, Vec<Envelope>>,
    worker: FunctionWorker,
) -> (
    Stream<'s, u64, Vec<EgressMessage>>,
    Stream<'s, u64, Vec<Control>>,
) {
    scope.scoped::<LoopTime, _, _>("Functions", move |inner| {
        let (handle, loop_stream) = inner.feedback::<Vec<Envelope>>((0, 1));
        let messages = ingress.enter(inner).concat(loop_stream);
        let (sent, egress, control) = function::functions(messages, worker);
        sent.connect_loop(handle);
        (egress.leave(scope), control.leave(scope))
    })
}

/// One stream of routed messages from every ingress of `app` on this worker.
///
/// `progress` is a probe on the completed output (e.g. the egress stream):
/// sources pause while more than `max_epochs_in_flight` epochs are incomplete.
pub fn ingress_stream<'s>(
    scope: Scope<'s, u64>,
    app: &Arc<Application>,
    shared: &Arc<Shared>,
    progress: &ProbeHandle<u64>,
) -> Stream<'s, u64, Vec<Envelope>> {
    checkpointed_ingress_stream(scope, app, shared, progress, None)
}

fn checkpointed_ingress_stream<'s>(
    scope: Scope<'s, u64>,
    app: &Arc<Application>,
    shared: &Arc<Shared>,
    progress: &ProbeHandle<u64>,
    checkpoint: Option<checkpointing::SharedCheckpoint>,
) -> Stream<'s, u64, Vec<Envelope>> {
    let streams: Vec<_> = app
        .ingresses
        .iter()
        .map(|plan| source::ingress(scope, plan, app, shared, progress, checkpoint.clone()))
        .collect();
    scope.concatenate(streams)
}

/// Writes egress records to the sinks declared in module.yaml.
pub fn attach_sinks<'s>(
    egress: Stream<'s, u64, Vec<EgressMessage>>,
    app: &Arc<Application>,
    shared: &Arc<Shared>,
) {
    sink::sinks(egress, app.clone(), shared.clone());
}

// ---------------------------------------------------------------------------
// Embedding: host streams in, egress streams out.
// ---------------------------------------------------------------------------

/// An ingress fed by a stream of the host dataflow instead of a source, declared in the terms
/// of a module.yaml ingress: an id, a `valueType` and `targets`, and optionally `badRecords`.
///
/// It is resolved against the module and the application with [`HostIngress::resolve`], by
/// the same rule as module ingresses ([`statefun_module::Module::resolve_target`]), so a
/// target nothing serves is an error naming it, before the dataflow is built; then
/// [`host_ingress`] routes the host's records as the router of a module ingress does.
#[derive(Clone, Debug, PartialEq)]
pub struct HostIngress {
    id: String,
    value_type: String,
    targets: Vec<String>,
    bad_records: Option<statefun_module::BadRecordPolicy>,
}

impl HostIngress {
    /// An ingress `id` whose record values are of `value_type` (its wire bytes, as a Kafka
    /// ingress's `valueType`) and go to every function type of `targets` (`<namespace>/<name>`
    /// or `<namespace>/*`), the record key being the function id. Checked by
    /// [`HostIngress::resolve`].
    pub fn new(id: &str, value_type: &str, targets: &[&str]) -> Self {
        HostIngress {
            id: id.to_owned(),
            value_type: value_type.to_owned(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            bad_records: None,
        }
    }

    /// What happens to a record without a non-empty UTF-8 key or without a value: `Skip`
    /// (counted in `records_skipped`, logged rate-limited) or `Fail` (the job fails naming
    /// the ingress and the record). Without it, [`Settings::fail_on_bad_records`] decides,
    /// as for module ingresses. `DeadLetter` is refused by [`HostIngress::resolve`]: a dead
    /// letter names where its record was read, and a host record need not say; a host
    /// diverts the records it considers bad in its own dataflow instead.
    ///
    /// [`Settings::fail_on_bad_records`]: crate::app::Settings::fail_on_bad_records
    pub fn bad_records(mut self, policy: statefun_module::BadRecordPolicy) -> Self {
        self.bad_records = Some(policy);
        self
    }

    /// Resolves the declaration against `module` (for its endpoints) and `app` (for the Rust
    /// functions it serves; `app` must be built from `module`). Every problem is reported,
    /// one per line, as [`Application::new`] reports module ingresses.
    pub fn resolve(
        &self,
        module: &statefun_module::Module,
        app: &Application,
    ) -> Result<HostIngressPlan, Vec<String>> {
        use statefun_module::{BadRecordPolicy, FunctionPattern, TargetProblem};
        let mut errors = Vec::new();
        let id = match statefun_sdk::TypeName::parse(&self.id) {
            Ok(id) => Some(id),
            Err(e) => {
                errors.push(format!("host ingress id `{}`: {e}", self.id));
                None
            }
        };
        let name = &self.id;
        if module.ingresses.iter().any(|i| i.id.as_str() == name) {
            errors.push(format!(
                "host ingress `{name}` has the id of an ingress module.yaml declares; give it an id of its own"
            ));
        }
        if let Err(e) = statefun_sdk::TypeName::parse(&self.value_type) {
            errors.push(format!(
                "host ingress `{name}`: valueType `{}`: {e}",
                self.value_type
            ));
        }
        if self.targets.is_empty() {
            errors.push(format!(
                "host ingress `{name}` has no targets; give at least one `<namespace>/<name>` or `<namespace>/*`"
            ));
        }
        // The Rust function types, as `Application::new` resolves module ingresses (the
        // built-in dead-letter forwarder is no target).
        let rust: Vec<statefun_sdk::TypeName> = app
            .functions
            .keys()
            .filter(|t| t.as_str() != crate::dead_letter::DEAD_LETTER_FUNCTION)
            .cloned()
            .collect();
        let mut targets = Vec::new();
        for target in &self.targets {
            let pattern = match FunctionPattern::parse(target) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("host ingress `{name}`: target `{target}`: {e}"));
                    continue;
                }
            };
            match module.resolve_target(&pattern, &rust) {
                // The application's own type names, so that routed messages share one `Arc`
                // with the function table (pointer-equal), as module ingresses do.
                Ok(types) => targets.extend(types.into_iter().map(|t| {
                    app.functions
                        .get_key_value(&t)
                        .map_or(t, |(own, _)| own.clone())
                })),
                Err(problem) => {
                    let message = match &id {
                        Some(id) => module.target_problem(id, &pattern, &problem),
                        None => format!(
                            "target `{target}` of host ingress `{name}` resolves to no function"
                        ),
                    };
                    errors.push(match problem {
                        TargetProblem::Unserved => format!(
                            "{message}: register a Rust function of that type, or declare an `io.statefun.endpoints.v2/http` endpoint for it"
                        ),
                        TargetProblem::ByNamespace { .. } => message,
                    });
                }
            }
        }
        let bad_records = match &self.bad_records {
            None if app.settings.fail_on_bad_records => BadRecords::Fail,
            None | Some(BadRecordPolicy::Skip) => BadRecords::Skip,
            Some(BadRecordPolicy::Fail) => BadRecords::Fail,
            Some(BadRecordPolicy::DeadLetter(d)) => {
                errors.push(format!(
                    "host ingress `{name}`: badRecords dead-letter (to `{}`) is not supported for host ingresses: \
                     a dead letter names where its record was read, and a host record need not say; use skip or \
                     fail, and divert the records the host considers bad in its own dataflow",
                    d.egress
                ));
                BadRecords::Skip
            }
        };
        match id {
            Some(id) if errors.is_empty() => Ok(HostIngressPlan {
                id,
                route: RoutePlan {
                    value_type: self.value_type.as_str().into(),
                    targets,
                    wrapped: Vec::new(),
                },
                bad_records,
            }),
            _ => Err(errors),
        }
    }
}

/// A [`HostIngress`] resolved: what [`host_ingress`] routes by.
#[derive(Clone, Debug, PartialEq)]
pub struct HostIngressPlan {
    id: statefun_sdk::TypeName,
    route: RoutePlan,
    bad_records: BadRecords,
}

impl HostIngressPlan {
    /// The ingress id (in logs, metrics and errors).
    pub fn id(&self) -> &statefun_sdk::TypeName {
        &self.id
    }

    /// The function types every record goes to, in resolution order.
    pub fn targets(&self) -> &[statefun_sdk::TypeName] {
        &self.route.targets
    }
}

/// One record of a host stream for [`host_ingress`]: the function id as key, the value in the
/// wire encoding of the ingress's `valueType`, and optionally where the host read it.
///
/// Key and value are optional, as a Kafka record's are, so that a host passing on records of
/// its own sources gets the ingress's bad-record policy for a missing, empty or non-UTF-8
/// key and a missing value instead of checking them itself.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRecord {
    /// The function id as bytes (must be non-empty UTF-8).
    pub key: Option<Vec<u8>>,
    /// The value's wire bytes.
    pub value: Option<Vec<u8>>,
    /// What a Rust function sees as `Context::metadata()`; `None` gives it none.
    pub metadata: Option<statefun_sdk::IngressMetadata>,
}

impl HostRecord {
    /// A record for function id `key` with the wire bytes `value`.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        HostRecord {
            key: Some(key.into().into_bytes()),
            value: Some(value.into()),
            metadata: None,
        }
    }

    /// A record for function id `key` with `value` encoded by `ty` (which should be the
    /// ingress's `valueType`); an error if the codec cannot encode it.
    pub fn of<T: statefun_sdk::Type>(
        key: impl Into<String>,
        ty: &T,
        value: &T::Value,
    ) -> Result<Self, statefun_sdk::SdkError> {
        Ok(HostRecord::new(key, ty.try_encode(value)?))
    }

    /// The same record, telling functions where the host read it.
    pub fn with_metadata(mut self, metadata: statefun_sdk::IngressMetadata) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

/// Routes a host stream of records into messages for the function graph, as the router of a
/// module ingress does: one message per target of `ingress`, addressed by the record key,
/// bad records by the ingress's policy, counted in `records_in` (and per ingress) and
/// `records_skipped`.
///
/// Concatenate the result with [`ingress_stream`] (or other host ingresses) and give it to
/// [`build_function_graph`]: messages then take the same exchange to the worker owning their
/// id, and messages from one host worker to one address keep their order (each host worker's
/// records are routed in arrival order, on that worker). The records keep their timestamps:
/// use the engine's epochs ([`crate::clock::Clock::epoch`] of the application's
/// `epoch_interval`), as module sources stamp theirs, so that host input and sources advance
/// together. The engine does not pause a host stream: a host throttles its own input, e.g.
/// on a probe of the egress stream as [`ingress_stream`] does.
///
/// A record the policy `fail` rejects fails the job through `shared` (naming the ingress and
/// the record); later records are dropped, as the job is stopping.
pub fn host_ingress<'s>(
    records: Stream<'s, u64, Vec<HostRecord>>,
    ingress: &HostIngressPlan,
    shared: &Arc<Shared>,
) -> Stream<'s, u64, Vec<Envelope>> {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::Operator;
    let shared = shared.clone();
    let mut router = source::Router::for_routes(
        &ingress.id,
        vec![ingress.route.clone()],
        ingress.bad_records.clone(),
    );
    let worker = records.scope().index();
    let (read_here, bytes_here) = shared.metrics.ingress_counter(ingress.id.as_str(), worker);
    let name = format!("Host ingress {}", ingress.id);
    let mut failed = false;
    records.unary::<batches::Batches<Envelope>, _, _, _>(Pipeline, &name, move |_cap, _info| {
        move |input, output| {
            input.for_each(|cap, data| {
                if failed {
                    data.clear();
                    return;
                }
                let (mut read, mut bytes, mut skipped, mut dead_lettered) =
                    (0u64, 0u64, 0u64, 0u64);
                let mut session = output.session_with_builder(&cap);
                for record in data.drain(..) {
                    read += 1;
                    bytes += (record.key.as_ref().map_or(0, Vec::len)
                        + record.value.as_ref().map_or(0, Vec::len))
                        as u64;
                    match router.route_parts(
                        record.key.map(RecordKey::from_vec),
                        record.value,
                        0,
                        record.metadata.map_or(Metadata::None, Metadata::of),
                        |e| session.give(e),
                    ) {
                        source::Routed::Delivered => {}
                        source::Routed::Skipped => skipped += 1,
                        source::Routed::DeadLettered => dead_lettered += 1,
                    }
                }
                let m = &shared.metrics;
                Metrics::add(&m.records_in, read);
                Metrics::add(&read_here, read);
                Metrics::add(&bytes_here, bytes);
                Metrics::add(&m.records_skipped, skipped);
                Metrics::add(&m.records_dead_lettered, dead_lettered);
                if let Some(failure) = router.take_failure() {
                    shared.fail(failure);
                    failed = true;
                }
            });
        }
    })
}

/// The egress stream taken apart by [`egress_streams`].
pub struct EgressStreams<'s> {
    /// The records of each egress the host asked for, by egress id.
    pub taken: BTreeMap<statefun_sdk::TypeName, Stream<'s, u64, Vec<EgressMessage>>>,
    /// Every other record: give it to [`attach_sinks`] to write the other egresses.
    pub rest: Stream<'s, u64, Vec<EgressMessage>>,
}

/// Splits the egress stream (from [`build_function_graph`]) into one stream per egress in
/// `ids`, for the host to consume, and the rest, for [`attach_sinks`].
///
/// Each id must be an egress module.yaml declares: the function operator passes on records
/// for declared egresses only (others are a function error), so an undeclared id would give
/// a stream that stays empty; that is an error naming it. A taken egress is still opened by
/// [`attach_sinks`], which writes nothing to it: declare a host-only egress as a file egress
/// on `-` (stdout), which costs nothing. Records stay on the worker that produced them.
pub fn egress_streams<'s>(
    egress: Stream<'s, u64, Vec<EgressMessage>>,
    app: &Application,
    ids: &[statefun_sdk::TypeName],
) -> Result<EgressStreams<'s>, String> {
    use timely::dataflow::operators::vec::Partition;
    let undeclared: Vec<String> = ids
        .iter()
        .filter(|id| !app.egresses.contains_key(*id))
        .map(|id| format!("`{id}`"))
        .collect();
    if !undeclared.is_empty() {
        return Err(format!(
            "egress {} taken by the host is not declared in module.yaml, so functions cannot write to it; \
             declare it (e.g. as an io.statefun-rs.file.v1/egress with path \"-\")",
            undeclared.join(", ")
        ));
    }
    // One part per distinct id, in id order, and the rest last.
    let ids: Vec<statefun_sdk::TypeName> = ids
        .iter()
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<statefun_sdk::TypeName, u64> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i as u64))
        .collect();
    let rest_part = ids.len() as u64;
    let mut parts = egress.partition(rest_part + 1, move |m: EgressMessage| {
        (index.get(&m.egress).copied().unwrap_or(rest_part), m)
    });
    let rest = parts.pop().ok_or("partition returned no streams")?;
    let taken = ids.into_iter().zip(parts).collect();
    Ok(EgressStreams { taken, rest })
}

/// Counts reported at the end of a run (summed over this process's workers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Ingress records read.
    pub records_in: u64,
    /// Ingress records skipped as bad input.
    pub records_skipped: u64,
    /// Bad ingress records sent to a dead-letter egress.
    pub records_dead_lettered: u64,
    /// Function invocations.
    pub invocations: u64,
    /// Failed invocations.
    pub failed_invocations: u64,
    /// Egress records written.
    pub records_out: u64,
    /// Egress records for undeclared egresses.
    pub unknown_egress: u64,
}

impl RunReport {
    fn from_metrics(m: &Metrics) -> Self {
        RunReport {
            records_in: Metrics::get(&m.records_in),
            records_skipped: Metrics::get(&m.records_skipped),
            records_dead_lettered: Metrics::get(&m.records_dead_lettered),
            invocations: Metrics::get(&m.invocations),
            failed_invocations: Metrics::get(&m.failed_invocations),
            records_out: Metrics::get(&m.records_out),
            unknown_egress: Metrics::get(&m.unknown_egress),
        }
    }
}

/// A factory of per-worker state backends (worker index, peers).
pub type BackendFactory = Arc<dyn Fn(usize, usize) -> Box<dyn StateBackend> + Send + Sync>;

/// The in-memory backend factory.
pub fn memory_backend() -> BackendFactory {
    Arc::new(|_, _| Box::new(MemoryBackend::default()))
}

/// Runs `app` on this process's workers until every ingress is exhausted and
/// all work is done, or until shutdown is requested through `shared`.
pub fn run(
    app: Arc<Application>,
    cluster: &ClusterConfig,
    shared: Arc<Shared>,
    backends: BackendFactory,
    log_interval: Duration,
) -> Result<RunReport, String> {
    let config = cluster.timely_config()?;
    let local_workers = cluster.workers.max(1);
    shared.expect_workers(local_workers);
    let started = Instant::now();
    let worker_shared = shared.clone();
    let durability = app.settings.durability.clone();
    if let Some(d) = &durability {
        std::fs::create_dir_all(&d.state_dir).map_err(|e| {
            format!(
                "cannot create the state directory {}: {e}; check the path and its permissions",
                d.state_dir.display()
            )
        })?;
    }
    // Timely panics in the calling thread when it joins communication
    // threads that panicked (a peer process died): caught here, it is the
    // run's failure, so that `--restart` can run the job again.
    let execution = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let shared = worker_shared.clone();
        shared.mark_started();
        let probe = ProbeHandle::new();
        let stop = match &durability {
            None => {
                let stop = worker.dataflow::<u64, _, _>(|scope| {
                    let ingress = ingress_stream(scope, &app, &shared, &probe);
                    let function_worker =
                        FunctionWorker::new(app.clone(), backends(index, peers), shared.clone());
                    let egress =
                        build_function_graph(scope, ingress, function_worker).probe_with(&probe);
                    attach_sinks(egress, &app, &shared);
                    stop::job_wide_stop(scope, &shared, &probe)
                });
                shared.worker_ready();
                stop
            }
            Some(d) => {
                let Some((durable, recovered)) = recover(worker, d, &shared, &app, local_workers) else {
                    return;
                };
                let store = durable.shared_store();
                let every = (d.checkpoint_interval.as_millis()
                    / app.settings.epoch_interval.as_millis().max(1))
                .max(1) as u64;
                let schedule = Schedule::new(every, recovered.as_ref().map(|r| r.id));
                let resume_positions = recovered
                    .as_ref()
                    .map(|r| r.sources.iter().cloned().collect())
                    .unwrap_or_default();
                let resuming = recovered.is_some();
                let context = Rc::new(RefCell::new(WorkerCheckpoint::new(schedule, resume_positions)));
                let evidence = checkpointing::CheckpointEvidence::new(peers);
                worker.dataflow::<u64, _, _>(|scope| {
                    let ingress =
                        checkpointed_ingress_stream(scope, &app, &shared, &probe, Some(context.clone()));
                    let function_worker = FunctionWorker::durable(
                        app.clone(),
                        shared.clone(),
                        Checkpointing {
                            backend: Box::new(durable),
                            context,
                            recovered,
                            evidence: evidence.clone(),
                        },
                    );
                    let (egress, control) = function_graph(scope, ingress, function_worker);
                    let egress = egress.probe_with(&probe);
                    sink::checkpointed_sinks(
                        egress,
                        control,
                        app.clone(),
                        shared.clone(),
                        schedule,
                        resuming,
                        evidence.clone(),
                    );
                });
                shared.worker_ready();
                let mut progress = ProgressLog::new(log_interval);
                while worker.step_or_park(Some(Duration::from_millis(50))) {
                    if index == 0 {
                        let epoch = probe.with_frontier(|f| f.first().copied());
                        progress.tick(&shared.metrics, epoch);
                    }
                }
                // Every sink delivered the final checkpoint: its outbox is
                // done with, so a restart does not send it again.
                let all_delivered = evidence.borrow().delivered.covers(checkpointing::FINISH_EPOCH);
                if all_delivered && !shared.failed() {
                    if let Err(e) = DurableBackend::forget_outboxes(&*store) {
                        tracing::warn!(worker = index, "{e}; a restart re-sends the last checkpoint's records to at-least-once egresses");
                    }
                }
                return;
            }
        };
        let mut progress = ProgressLog::new(log_interval);
        while worker.step_or_park(Some(Duration::from_millis(50))) {
            if index == 0 {
                let epoch = probe.with_frontier(|f| f.first().copied());
                progress.tick(&shared.metrics, epoch);
            }
            // The work is done: let the stop signal go now, not at its next poll.
            if probe.done() {
                stop.activate();
            }
        }
    })
    .map_err(|e| format!("cannot start timely workers: {e}"))?;
        Ok::<_, String>(guards.join())
    }));
    match execution {
        Ok(joined) => {
            for (i, result) in joined?.into_iter().enumerate() {
                if let Err(e) = result {
                    shared.fail(format!("worker {i} failed: {e}"));
                }
            }
        }
        Err(_) => shared.fail(
            "the connection to another process of the job broke (it stopped or died); every process stops"
                .to_string(),
        ),
    }
    let report = RunReport::from_metrics(&shared.metrics);
    tracing::info!(
        elapsed_s = started.elapsed().as_secs_f64(),
        records_in = report.records_in,
        records_skipped = report.records_skipped,
        records_dead_lettered = report.records_dead_lettered,
        invocations = report.invocations,
        failed_invocations = report.failed_invocations,
        records_out = report.records_out,
        "run finished"
    );
    match shared.failure() {
        Some(failure) => Err(failure),
        None => Ok(report),
    }
}

/// Opens this worker's durable state, agrees with every worker on the
/// checkpoint to restore, and restores it. `None` (after failing the job)
/// if any worker cannot; every worker then returns, so none waits forever.
///
/// When the state was written by another number of workers, the workers first
/// rescale it (`rescale`, decided by [`crate::checkpoint::rescale::decide`]) and then
/// restore as usual.
fn recover(
    worker: &mut timely::worker::Worker,
    durability: &Durability,
    shared: &Shared,
    app: &Arc<Application>,
    local_workers: usize,
) -> Option<(
    DurableBackend<RocksStore>,
    Option<crate::checkpoint::Recovered>,
)> {
    let (index, peers) = (worker.index(), worker.peers());
    let path = durability.state_dir.join(format!("worker-{index}"));
    let options = &durability.memory;
    let failed = |error: String| WorkerReport {
        worker: index,
        peers: None,
        restorable: Vec::new(),
        error: Some(error),
        merged: false,
        missing: false,
    };
    let fail = |e: String| {
        shared.fail(format!(
            "cannot restore from {}: {e}",
            durability.state_dir.display()
        ))
    };
    let mut rescaled = false;
    let (mut backend, reports, missing) = loop {
        let missing = !path.exists();
        let opened = RocksStore::open(&path, options)
            .map_err(|e| e.to_string())
            .and_then(|store| DurableBackend::open(store, index, peers))
            .map(|(mut backend, report)| {
                backend.set_cache_bytes(options.state_cache_bytes);
                (backend, report)
            });
        let (backend, report) = match opened {
            Ok((backend, report)) => (Some(backend), WorkerReport { missing, ..report }),
            Err(e) => (None, failed(e)),
        };
        let inventory = rescale::inventory(
            &durability.state_dir,
            index,
            peers,
            local_workers,
            report.clone(),
        );
        let inventories = checkpointing::exchange_all(worker, inventory);
        let decision = crate::checkpoint::rescale::decide(&inventories, peers);
        let holds_nothing = report.peers.is_none() && report.restorable.is_empty();
        let (plan, finish) = match decision {
            Ok(Decision::Keep) => {
                let reports = inventories
                    .into_iter()
                    .filter_map(|i| i.found.into_iter().find(|f| f.own))
                    .map(|f| f.report)
                    .collect::<Vec<_>>();
                break (backend, reports, missing);
            }
            Ok(Decision::Rescale(plan)) => (plan, false),
            Ok(Decision::Finish(plan)) => (plan, true),
            Err(e) => {
                if missing {
                    // Leave no new empty directory behind: the next start must
                    // see it missing again, not as a worker that wrote nothing.
                    drop(backend);
                    let _ = std::fs::remove_dir_all(&path);
                }
                fail(e);
                return None;
            }
        };
        // The rescale opens the databases itself; a new worker's empty one makes room
        // for the database the rescale builds.
        drop(backend);
        if holds_nothing {
            let _ = std::fs::remove_dir_all(&path);
        }
        let result = if rescaled {
            Err("the rescale did not take effect (the state directories changed while the job started)".to_string())
        } else {
            rescale::carry_out(worker, durability, app, shared, &plan, finish)
        };
        if let Err(e) = result {
            fail(e);
            return None;
        }
        rescaled = true;
    };
    let agreed = match agree(&reports, peers) {
        Ok(agreed) => agreed,
        Err(e) => {
            if missing {
                // Leave no new empty directory behind: the next start must
                // see it missing again, not as a worker that wrote nothing.
                drop(backend.take());
                let _ = std::fs::remove_dir_all(&path);
            }
            fail(e);
            return None;
        }
    };
    let restored = match backend.as_mut() {
        Some(b) => b.restore(agreed),
        None => Err("state not opened".to_string()),
    };
    // A second round, so that a worker that failed to restore stops everyone.
    let status = match &restored {
        Ok(_) => WorkerReport {
            worker: index,
            peers: Some(peers),
            restorable: Vec::new(),
            error: None,
            merged: false,
            missing: false,
        },
        Err(e) => failed(e.clone()),
    };
    let statuses = checkpointing::exchange_all(worker, status);
    if let Some(e) = statuses.iter().find_map(|r| r.error.as_ref()) {
        fail(e.clone());
        return None;
    }
    let (backend, recovered) = (backend?, restored.ok()?);
    if index == 0 {
        match &recovered {
            Some(r) => {
                let (generation, epoch) = crate::checkpoint::describe_id(r.id);
                tracing::info!(
                    checkpoint = r.id,
                    generation,
                    epoch,
                    state_dir = %durability.state_dir.display(),
                    "restoring checkpoint"
                );
            }
            None => {
                tracing::info!(state_dir = %durability.state_dir.display(), "no checkpoint found: starting fresh")
            }
        }
    }
    if let Some(r) = &recovered {
        tracing::debug!(
            worker = index,
            delayed = r.timers.len(),
            inflight = r.inflight.len(),
            replay = r.replay.len(),
            "restored"
        );
    }
    Some((backend, recovered))
}

/// Logs throughput every `interval`: records in/out per second and the epoch frontier.
struct ProgressLog {
    interval: Duration,
    last: Instant,
    last_in: u64,
    last_out: u64,
    last_invocations: u64,
}

impl ProgressLog {
    fn new(interval: Duration) -> Self {
        ProgressLog {
            interval,
            last: Instant::now(),
            last_in: 0,
            last_out: 0,
            last_invocations: 0,
        }
    }

    fn tick(&mut self, m: &Metrics, epoch: Option<u64>) {
        // The egress frontier at `epoch`: every epoch before it is complete.
        if let Some(e) = epoch {
            m.completed_epoch
                .store(e.saturating_sub(1), std::sync::atomic::Ordering::Relaxed);
        }
        let elapsed = self.last.elapsed();
        if elapsed < self.interval {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let (records_in, records_out, invocations) = (
            Metrics::get(&m.records_in),
            Metrics::get(&m.records_out),
            Metrics::get(&m.invocations),
        );
        tracing::info!(
            in_per_s = ((records_in - self.last_in) as f64 / secs).round(),
            out_per_s = ((records_out - self.last_out) as f64 / secs).round(),
            invocations_per_s = ((invocations - self.last_invocations) as f64 / secs).round(),
            records_in,
            records_out,
            skipped = Metrics::get(&m.records_skipped),
            dead_lettered = Metrics::get(&m.records_dead_lettered),
            failed = Metrics::get(&m.failed_invocations),
            epoch_frontier = epoch,
            checkpoints = Metrics::get(&m.checkpoints),
            last_checkpoint_ms = Metrics::get(&m.last_checkpoint_us) as f64 / 1000.0,
            last_checkpoint_bytes = Metrics::get(&m.last_checkpoint_bytes),
            checkpoint_age_ms = match Metrics::get(&m.last_checkpoint_at_ms) {
                0 => None,
                at => Some(crate::clock::Clock::now_ms().saturating_sub(at)),
            },
            "progress"
        );
        self.last = Instant::now();
        self.last_in = records_in;
        self.last_out = records_out;
        self.last_invocations = invocations;
    }
}
