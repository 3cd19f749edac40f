//! Analytics: the function graph embedded in a larger timely dataflow, with
//! its egress stream aggregated by differential-dataflow (docs/EMBEDDING.md).
//!
//! Two jobs:
//!
//! * [`run`] (this module): a generator feeds `analytics/scorer` functions
//!   (one per user id) that keep a running score in state and report each
//!   user's current tier to the `analytics/tiers` egress. Instead of writing
//!   that egress to a sink, the dataflow turns it into a differential
//!   collection of (user, tier) changes and maintains the number of users per
//!   tier incrementally.
//! * [`enrich::run_kafka`]: events from a Kafka topic, per-user state, a
//!   differential join with a reference collection the host feeds itself
//!   (plan changes, also delivered to the functions through a host ingress),
//!   and the joined result written to a Kafka topic by the job's sinks.
//!
//! ```text
//! cargo run --release -p example-analytics [-- -w 2]
//! cargo run --release -p example-analytics -- --kafka localhost:9092 --in events --out enriched [-w 2]
//! ```

pub mod enrich;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::AsCollection;
use statefun_engine::dataflow::{build_function_graph, ingress_stream, FunctionWorker};
use statefun_engine::state::MemoryBackend;
use statefun_engine::{Application, FunctionRegistry, Settings, Shared};
use statefun_sdk::{
    Context, EgressMessage, FunctionError, FunctionSpec, LongType, Message, StringType, TypeName,
    ValueSpec,
};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;

/// Users (generator keys `0..USERS`).
pub const USERS: u64 = 100;
/// Events (generator records; event `s` is for user `u = s % USERS` and worth
/// `(s % 7) × (1 + u % 3)` points).
pub const EVENTS: u64 = 20_000;
/// Points per tier.
pub const TIER_POINTS: i64 = 250;

/// A change of a tier's count as differential reports it: `((tier, users), diff)`.
type TierChange = ((u64, i64), isize);

fn module_text() -> String {
    format!(
        "
kind: io.statefun-rs.generator.v1/ingress
spec:
  id: analytics/events
  valueType: io.statefun.types/long
  targets: [analytics/scorer]
  keys: {USERS}
  count: {EVENTS}
---
kind: io.statefun-rs.file.v1/egress
spec:
  id: analytics/tiers
  path: \"-\"
"
    )
}

/// The scorer: adds an event's points to the user's total and, on the user's
/// first event or when the tier changes, retracts the old `(user, tier)` and
/// asserts the new one on the `analytics/tiers` egress.
///
/// Whether this is the first event is whether the total is stored at all — not
/// whether it is 0: a user whose first events score nothing has a stored 0 and
/// must not be counted again.
fn score(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let total = ValueSpec::new("total", LongType);
    // Users weigh their events 1×, 2× or 3× (by id), so they spread over tiers.
    let weight = 1 + ctx.self_address().id.parse::<i64>().unwrap_or(0) % 3;
    let points = (message.as_long()? % 7) * weight;
    let stored = ctx.get(&total)?;
    let before = stored.unwrap_or(0);
    let after = before + points;
    ctx.set(&total, &after)?;
    let (old, new) = (before / TIER_POINTS, after / TIER_POINTS);
    if stored.is_none() || old != new {
        let user = ctx.self_address().id.clone();
        let egress = TypeName::parse("analytics/tiers")?;
        if stored.is_some() {
            ctx.send_egress(EgressMessage::of(
                egress.clone(),
                &StringType,
                &format!("-{user},{old}"),
            ));
        }
        ctx.send_egress(EgressMessage::of(
            egress,
            &StringType,
            &format!("+{user},{new}"),
        ));
    }
    Ok(())
}

/// Runs the job on `workers` threads; calls `report(tier, users)` for every
/// change of a tier's count as the dataflow computes it, and returns the final
/// number of users per tier (tiers with none left out).
pub fn run(
    workers: usize,
    report: impl Fn(u64, i64) + Send + Sync + 'static,
) -> Result<BTreeMap<u64, i64>, String> {
    let module =
        statefun_module::load_str(&module_text(), "analytics.yaml").map_err(|d| d.to_string())?;
    let mut registry = FunctionRegistry::new();
    registry.register(
        FunctionSpec::builder(TypeName::parse("analytics/scorer").map_err(|e| e.to_string())?)
            .with_value_spec(&ValueSpec::new("total", LongType))
            .with_function(score)
            .build()
            .map_err(|e| e.to_string())?,
    )?;
    let app = Arc::new(
        Application::new(&module, &registry, Settings::default()).map_err(|e| e.join("\n"))?,
    );
    let shared = Arc::new(Shared::default());
    // Every change of every tier's count: ((tier, users), diff), from all workers.
    let changes: Arc<Mutex<Vec<TierChange>>> = Arc::default();
    let collected = changes.clone();
    let report = Arc::new(report);
    let config = timely::Config::process(workers.max(1));
    let guards = timely::execute(config, move |worker| {
        let probe = ProbeHandle::new();
        let collected = collected.clone();
        let report = report.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let ingress = ingress_stream(scope, &app, &shared, &probe);
            let functions = FunctionWorker::new(
                app.clone(),
                Box::new(MemoryBackend::default()),
                shared.clone(),
            );
            let egress = build_function_graph(scope, ingress, functions);
            // Egress records become differential updates ((user, tier), epoch, ±1).
            egress
                .unary(
                    timely::dataflow::channels::pact::Pipeline,
                    "ToUpdates",
                    |_cap, _info| {
                        move |input, output| {
                            input.for_each(|cap, data| {
                                let Some(&time) = cap.least() else {
                                    return;
                                };
                                let mut session = output.session(&cap);
                                for message in data.drain(..) {
                                    let Ok(text) = message.value.try_into_string() else {
                                        continue;
                                    };
                                    let (diff, rest) = text.split_at(1);
                                    if let Some((user, tier)) = rest.split_once(',') {
                                        let diff: isize = if diff == "-" { -1 } else { 1 };
                                        session.give((
                                            (user.to_owned(), tier.parse::<u64>().unwrap_or(0)),
                                            time,
                                            diff,
                                        ));
                                    }
                                }
                            });
                        }
                    },
                )
                .as_collection()
                .map(|(_user, tier)| tier)
                .count()
                .inspect(move |((tier, users), _time, diff)| {
                    if *diff > 0 {
                        report(*tier, *users as i64);
                    }
                    if let Ok(mut changes) = collected.lock() {
                        changes.push(((*tier, *users as i64), *diff));
                    }
                })
                .inner
                .probe_with(&probe);
        });
        while worker.step_or_park(Some(std::time::Duration::from_millis(10))) {}
    })
    .map_err(|e| e.to_string())?;
    for result in guards.join() {
        result.map_err(|e| format!("a worker failed: {e}"))?;
    }
    // The final collection: every (tier, users) whose changes add up to one.
    let mut net: BTreeMap<(u64, i64), isize> = BTreeMap::new();
    for (key, diff) in changes.lock().map_err(|e| e.to_string())?.drain(..) {
        *net.entry(key).or_insert(0) += diff;
    }
    let mut tiers = BTreeMap::new();
    for ((tier, users), count) in net {
        match count {
            0 => {}
            1 => {
                if tiers.insert(tier, users).is_some() {
                    return Err(format!("tier {tier} has two final counts"));
                }
            }
            other => {
                return Err(format!(
                    "tier {tier} with {users} users counted {other} times"
                ))
            }
        }
    }
    Ok(tiers)
}

/// Decodes a `io.statefun.types/string` value.
trait TryIntoString {
    fn try_into_string(self) -> Result<String, statefun_sdk::SdkError>;
}

impl TryIntoString for statefun_sdk::TypedValue {
    fn try_into_string(self) -> Result<String, statefun_sdk::SdkError> {
        use statefun_sdk::Type;
        StringType.decode(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The users per tier computed directly from the generator's definition.
    fn expected() -> BTreeMap<u64, i64> {
        let mut totals = vec![0i64; USERS as usize];
        for s in 0..EVENTS {
            let user = s % USERS;
            totals[user as usize] += ((s % 7) * (1 + user % 3)) as i64;
        }
        let mut tiers = BTreeMap::new();
        for total in totals {
            *tiers.entry((total / TIER_POINTS) as u64).or_insert(0) += 1;
        }
        tiers
    }

    #[test]
    fn users_per_tier_are_exact_on_one_and_two_workers() {
        let expected = expected();
        assert_eq!(expected.values().sum::<i64>(), USERS as i64);
        assert!(expected.len() >= 3, "users spread over tiers: {expected:?}");
        for workers in [1, 2] {
            let tiers = run(workers, |_, _| {}).unwrap();
            assert_eq!(tiers, expected, "{workers} worker(s)");
        }
    }
}
