//! Analytics: the function graph embedded in a larger timely dataflow, with
//! its egress stream aggregated by differential-dataflow.
//!
//! A generator feeds `analytics/scorer` functions (one per user id) that keep
//! a running score in state and report each user's current tier to the
//! `analytics/tiers` egress. Instead of writing that egress to a sink, the
//! dataflow turns it into a differential collection of (user, tier) changes
//! and maintains the number of users per tier incrementally.
//!
//! ```text
//! cargo run --release -p example-analytics
//! ```

use std::sync::Arc;

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

const MODULE: &str = "
kind: io.statefun-rs.generator.v1/ingress
spec:
  id: analytics/events
  valueType: io.statefun.types/long
  targets: [analytics/scorer]
  keys: 100
  count: 20000
---
kind: io.statefun-rs.file.v1/egress
spec:
  id: analytics/tiers
  path: \"-\"
";

fn score(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let total = ValueSpec::new("total", LongType);
    let points = message.as_long()? % 7;
    let before = ctx.get(&total)?.unwrap_or(0);
    let after = before + points;
    ctx.set(&total, &after)?;
    // Report (user, old tier) retraction and (user, new tier) when the tier changes.
    let (old, new) = (before / 250, after / 250);
    if before == 0 || old != new {
        let user = ctx.self_address().id.clone();
        let egress = TypeName::parse("analytics/tiers")?;
        if before != 0 {
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

fn main() -> Result<(), String> {
    let module = statefun_module::load_str(MODULE, "analytics.yaml").map_err(|d| d.to_string())?;
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
    timely::execute_from_args(std::env::args().skip(1), move |worker| {
        let probe = ProbeHandle::new();
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
                                let time = *cap.least().expect("data has a time");
                                let mut session = output.session(&cap);
                                for message in data.drain(..) {
                                    let Ok(text) = message.value.clone().try_into_string() else {
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
                .inspect(|((tier, users), _time, diff)| {
                    if *diff > 0 {
                        println!("tier {tier}: {users} users");
                    }
                })
                .inner
                .probe_with(&probe);
        });
        while worker.step_or_park(Some(std::time::Duration::from_millis(10))) {}
    })
    .map_err(|e| e.to_string())?;
    Ok(())
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
