//! The Kafka job: events from a Kafka topic scored by stateful functions,
//! joined by differential-dataflow with a reference collection the host keeps
//! (each user's plan), and the enriched result written to a Kafka topic.
//!
//! ```text
//!   Kafka `events` ─► analytics/events (module ingress) ─┐
//!                                                        ├─► analytics/scorer ─► analytics/tiers ─┐ (host takes it)
//!   plan changes ─┬─► analytics/plans (host ingress) ────┘   per-user state       (user, tier)     │
//!   (host input)  │                                                                                ▼
//!                 └─► (user, plan) collection ───────────────────────────────────────────► join ─► consolidate
//!                                                                                                  │
//!                                    analytics/enriched (Kafka egress, written by attach_sinks) ◄──┘
//! ```
//!
//! * `analytics/scorer` keeps each user's total points and plan in state; a
//!   `pro` user's points count double. Each tier the total crosses
//!   (`TIER_POINTS` points each) is a fact `(user, tier)` on the
//!   `analytics/tiers` egress, which the host takes as a stream
//!   ([`egress_streams`]).
//! * Plan changes are the host's own input: they reach the scorer through the
//!   host ingress `analytics/plans` ([`host_ingress`], routed like a module
//!   ingress) and form the reference collection `(user, plan)`.
//! * The join `(user, tier) ⋈ (user, plan)` is consolidated and each change
//!   becomes a Kafka record (key: the user, value `+1 tier 2 pro` or
//!   `-1 tier 1 basic`) on `analytics/enriched`, written by [`attach_sinks`]
//!   with the job's other egresses. A plan change retracts the user's old
//!   enriched tiers and asserts the new ones.
//!
//! What is written does not depend on timing: consolidation emits a time only
//! once every input is past it, and plan changes are stamped with the epoch of
//! the moment they are fed, so everything already written is older than the
//! next change and is retracted by it exactly.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use differential_dataflow::AsCollection;
use statefun_engine::clock::Clock;
use statefun_engine::dataflow::{
    attach_sinks, build_function_graph, egress_streams, host_ingress, ingress_stream,
    FunctionWorker, HostIngress, HostRecord,
};
use statefun_engine::state::MemoryBackend;
use statefun_engine::{Application, FunctionRegistry, Settings, Shared};
use statefun_module::BadRecordPolicy;
use statefun_sdk::{
    Context, EgressMessage, FunctionError, FunctionSpec, KafkaEgressMessage, LongType, Message,
    StringType, Type, TypeName, ValueSpec,
};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Input, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, Stream};

/// The function keeping each user's points and plan.
pub const SCORER: &str = "analytics/scorer";
/// The module ingress reading the events topic.
pub const EVENTS: &str = "analytics/events";
/// The host ingress carrying plan changes to the scorer.
pub const PLANS: &str = "analytics/plans";
/// The egress of tier facts, which the host takes as a stream.
pub const TIERS: &str = "analytics/tiers";
/// The Kafka egress of the enriched result.
pub const ENRICHED: &str = "analytics/enriched";
/// The value type of an event: the points as UTF-8 digits.
pub const POINTS_TYPE: &str = "analytics/points";
/// The value type of a plan change: the plan name as UTF-8 (empty: no plan).
pub const PLAN_TYPE: &str = "analytics/plan";
/// Points per tier.
pub const TIER_POINTS: i64 = 10;
/// The plan whose points count double.
pub const DOUBLE_PLAN: &str = "pro";

/// Where the job reads and writes.
#[derive(Clone, Debug)]
pub struct KafkaJob {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// The topic of events: key the user, value the points.
    pub events_topic: String,
    /// The topic the enriched result goes to.
    pub output_topic: String,
    /// The consumer group of the events ingress.
    pub group: String,
    /// Worker threads.
    pub workers: usize,
}

/// A change of the reference collection, as the host receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanChange {
    /// The user is on `plan` from now on.
    Set {
        /// The user id.
        user: String,
        /// The plan name.
        plan: String,
    },
    /// The user has no plan any more.
    Remove {
        /// The user id.
        user: String,
    },
}

/// A plan change with what it replaces: the reference collection's update
/// (`old` out, `new` in) and the scorer's new plan in one record.
#[derive(Clone, Debug)]
struct PlanUpdate {
    user: String,
    old: Option<String>,
    new: Option<String>,
}

/// The module: the events ingress, the tiers egress the host takes (a file
/// egress on stdout that receives nothing: functions may only write to
/// declared egresses) and the Kafka egress of the result.
pub fn module_text(job: &KafkaJob) -> String {
    let KafkaJob {
        bootstrap,
        events_topic,
        group,
        ..
    } = job;
    format!(
        "kind: io.statefun.kafka.v1/ingress
spec:
  id: {EVENTS}
  address: {bootstrap}
  consumerGroupId: {group}
  startupPosition: {{ type: earliest }}
  topics:
    - topic: {events_topic}
      valueType: {POINTS_TYPE}
      targets: [{SCORER}]
---
kind: io.statefun-rs.file.v1/egress
spec:
  id: {TIERS}
  path: \"-\"
---
kind: io.statefun.kafka.v1/egress
spec:
  id: {ENRICHED}
  address: {bootstrap}
  deliverySemantic: {{ type: at-least-once }}
"
    )
}

/// The scorer: a plan change sets (or clears) the user's plan; an event adds
/// its points (doubled on the `pro` plan) and reports every tier the total
/// crosses as `user,tier` on the tiers egress. Totals only grow, so each
/// tier is reported once per user.
fn score(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let plan = ValueSpec::new("plan", StringType);
    let total = ValueSpec::new("total", LongType);
    match message.value_typename() {
        PLAN_TYPE => {
            let name = std::str::from_utf8(&message.value.value)?.to_owned();
            if name.is_empty() {
                ctx.remove(&plan)?;
            } else {
                ctx.set(&plan, &name)?;
            }
        }
        POINTS_TYPE => {
            let text = std::str::from_utf8(&message.value.value)?;
            let points: i64 = text
                .trim()
                .parse()
                .map_err(|e| format!("event points `{text}` are not a whole number: {e}"))?;
            if points < 0 {
                return Err(format!("event points `{points}` are negative").into());
            }
            let weight = if ctx.get(&plan)?.as_deref() == Some(DOUBLE_PLAN) {
                2
            } else {
                1
            };
            let before = ctx.get(&total)?.unwrap_or(0);
            let after = before + points * weight;
            ctx.set(&total, &after)?;
            let tiers = TypeName::parse(TIERS)?;
            let user = ctx.self_address().id.clone();
            for tier in before / TIER_POINTS + 1..=after / TIER_POINTS {
                ctx.send_egress(EgressMessage::of(
                    tiers.clone(),
                    &StringType,
                    &format!("{user},{tier}"),
                ));
            }
        }
        other => {
            return Err(
                format!("the scorer takes {POINTS_TYPE} and {PLAN_TYPE}, not {other}").into(),
            )
        }
    }
    Ok(())
}

/// The functions of the job.
pub fn registry() -> Result<FunctionRegistry, String> {
    let mut registry = FunctionRegistry::new();
    registry.register(
        FunctionSpec::builder(TypeName::parse(SCORER).map_err(|e| e.to_string())?)
            .with_value_spec(&ValueSpec::new("plan", StringType))
            .with_value_spec(&ValueSpec::new("total", LongType))
            .with_function(score)
            .build()
            .map_err(|e| e.to_string())?,
    )?;
    Ok(registry)
}

/// Timestamps each record of `stream` with its time and turns it into
/// differential updates with `f` (a timely stream into a collection).
fn updates<'s, X, D, I>(
    stream: Stream<'s, u64, Vec<X>>,
    name: &str,
    mut f: impl FnMut(X) -> I + 'static,
) -> Stream<'s, u64, Vec<(D, u64, isize)>>
where
    X: Clone + 'static,
    D: Clone + 'static,
    I: IntoIterator<Item = (D, isize)>,
{
    stream.unary(Pipeline, name, move |_cap, _info| {
        move |input, output| {
            input.for_each(|cap, data| {
                let Some(&time) = cap.least() else {
                    return;
                };
                let mut session = output.session(&cap);
                for record in data.drain(..) {
                    for (d, diff) in f(record) {
                        session.give((d, time, diff));
                    }
                }
            });
        }
    })
}

/// Runs the job on `job.workers` threads until shutdown is requested through
/// `shared` (or the job fails). Plan changes arriving on `plans` are fed, on
/// worker 0, at the current epoch; a change for an empty user id is a bad
/// record of the host ingress, skipped and counted.
pub fn run_kafka(
    job: &KafkaJob,
    plans: Receiver<PlanChange>,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let module = statefun_module::load_str(&module_text(job), "analytics-kafka.yaml")
        .map_err(|d| d.to_string())?;
    let registry = registry()?;
    let app = Arc::new(
        Application::new(&module, &registry, Settings::default()).map_err(|e| e.join("\n"))?,
    );
    let plans_ingress = HostIngress::new(PLANS, PLAN_TYPE, &[SCORER])
        .bad_records(BadRecordPolicy::Skip)
        .resolve(&module, &app)
        .map_err(|e| e.join("\n"))?;
    let tiers = TypeName::parse(TIERS).map_err(|e| e.to_string())?;
    let enriched = TypeName::parse(ENRICHED).map_err(|e| e.to_string())?;
    let output_topic = job.output_topic.clone();
    let plans = Arc::new(Mutex::new(plans));
    let worker_shared = shared.clone();
    let config = timely::Config::process(job.workers.max(1));
    let guards =
        timely::execute(config, move |worker| {
            let shared = worker_shared.clone();
            let index = worker.index();
            let probe = ProbeHandle::new();
            let (enriched, output_topic) = (enriched.clone(), output_topic.clone());
            let mut input: InputHandleVec<u64, PlanUpdate> = InputHandleVec::new();
            let built =
                worker.dataflow::<u64, _, _>(|scope| -> Result<(), String> {
                    let changes = scope.input_from(&mut input);
                    // To the functions: the new plan (empty: none), keyed by user.
                    let records = changes
                        .clone()
                        .map(|u| HostRecord::new(u.user, u.new.unwrap_or_default()));
                    let messages = ingress_stream(scope, &app, &shared, &probe)
                        .concat(host_ingress(records, &plans_ingress, &shared));
                    let functions = FunctionWorker::new(
                        app.clone(),
                        Box::new(MemoryBackend::default()),
                        shared.clone(),
                    );
                    let egress = build_function_graph(scope, messages, functions);
                    let mut streams = egress_streams(egress, &app, std::slice::from_ref(&tiers))?;
                    let facts = streams
                        .taken
                        .remove(&tiers)
                        .ok_or_else(|| format!("egress_streams did not return `{tiers}`"))?;
                    // (user, tier) facts, from `user,tier` egress records.
                    let parse_shared = shared.clone();
                    let facts = updates(facts, "TierFacts", move |m: EgressMessage| {
                        let fact = StringType.decode(&m.value.value).ok().and_then(|text| {
                            let (user, tier) = text.split_once(',')?;
                            Some((user.to_owned(), tier.parse::<i64>().ok()?))
                        });
                        if fact.is_none() {
                            parse_shared.fail(format!("a tier fact is not `user,tier`: {m:?}"));
                        }
                        fact.map(|f| (f, 1))
                    })
                    .as_collection();
                    // The reference collection (user, plan): the old plan out, the new one in.
                    let plans = updates(changes, "PlanUpdates", |u: PlanUpdate| {
                        let old = u.old.map(|p| ((u.user.clone(), p), -1));
                        let new = u.new.map(|p| ((u.user, p), 1));
                        old.into_iter().chain(new)
                    })
                    .as_collection();
                    let build_shared = shared.clone();
                    let enriched_records = facts.join(plans).consolidate().inner.flat_map(
                        move |((user, (tier, plan)), _time, diff)| {
                            let record = KafkaEgressMessage::for_egress(enriched.clone())
                                .with_topic(&output_topic)
                                .with_key(&user)
                                .with_utf8_value(&format!("{diff:+} tier {tier} {plan}"))
                                .build();
                            match record {
                                Ok(record) => Some(record),
                                Err(e) => {
                                    build_shared.fail(format!(
                                        "cannot build the enriched record for `{user}`: {e}"
                                    ));
                                    None
                                }
                            }
                        },
                    );
                    // The enriched records go out with every other egress; the probe
                    // sees all output, for the sources' backpressure.
                    let out = streams.rest.concat(enriched_records).probe_with(&probe);
                    attach_sinks(out, &app, &shared);
                    Ok(())
                });
            if let Err(e) = built {
                shared.fail(e);
            }
            let clock = Clock::new(app.settings.epoch_interval);
            // Worker 0's view of the reference collection, to retract what a change replaces.
            let mut current: HashMap<String, String> = HashMap::new();
            while !shared.shutting_down() {
                // Host input moves with the engine's epochs, as module sources do.
                let epoch = clock.epoch();
                if *input.time() < epoch {
                    input.advance_to(epoch);
                }
                if index == 0 {
                    match plans.lock() {
                        Ok(receiver) => {
                            for change in receiver.try_iter() {
                                input.send(match change {
                                    PlanChange::Set { user, plan } => PlanUpdate {
                                        old: current.insert(user.clone(), plan.clone()),
                                        new: Some(plan),
                                        user,
                                    },
                                    PlanChange::Remove { user } => PlanUpdate {
                                        old: current.remove(&user),
                                        new: None,
                                        user,
                                    },
                                });
                            }
                        }
                        Err(_) => {
                            shared.fail("the plan-change receiver is poisoned (a worker panicked)")
                        }
                    }
                }
                worker.step_or_park(Some(Duration::from_millis(10)));
            }
            // Closing the host input lets the dataflow drain and end.
            drop(input);
            while worker.step_or_park(Some(Duration::from_millis(10))) {}
        })
        .map_err(|e| e.to_string())?;
    for result in guards.join() {
        result.map_err(|e| format!("a worker failed: {e}"))?;
    }
    match shared.failure() {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}
