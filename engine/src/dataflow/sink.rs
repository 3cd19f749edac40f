//! Egress sinks at the end of the dataflow.

use std::collections::BTreeMap;
use std::sync::Arc;

use statefun_connectors::Sink;
use statefun_sdk::{EgressMessage, TypeName};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use crate::app::Application;
use crate::shared::{Metrics, Shared};

/// Writes egress records to their sinks and flushes whenever an epoch completes.
///
/// File sinks have one writer, so every record goes to worker 0; its sink
/// writes records as they arrive and flushes when the input frontier passes
/// an epoch, so a completed epoch's output is on disk.
pub(crate) fn sinks<'s>(
    egress: Stream<'s, u64, Vec<EgressMessage>>,
    app: Arc<Application>,
    shared: Arc<Shared>,
) {
    let index = egress.scope().index();
    let mut sinks: BTreeMap<TypeName, Box<dyn Sink>> = BTreeMap::new();
    if index == 0 {
        for (id, plan) in &app.egresses {
            match plan.open() {
                Ok(sink) => {
                    sinks.insert(id.clone(), sink);
                }
                Err(e) => shared.fail(format!("cannot open egress `{id}`: {e}")),
            }
        }
    }
    let mut frontier_seen: Option<u64> = Some(0);
    let mut dirty = false;
    egress.sink(
        Exchange::new(|_: &EgressMessage| 0u64),
        "Egress",
        move |(input, frontier)| {
            let mut written = 0u64;
            input.for_each(|_cap, data| {
                let mut rest: &[EgressMessage] = data;
                while let Some(first) = rest.first() {
                    let run = rest.iter().take_while(|m| m.egress == first.egress).count();
                    let (batch, tail) = rest.split_at(run);
                    rest = tail;
                    match sinks.get_mut(&first.egress) {
                        Some(sink) => match sink.write(batch) {
                            Ok(()) => {
                                written += batch.len() as u64;
                                dirty = true;
                            }
                            Err(e) => shared.fail(format!("egress `{}` failed: {e}", first.egress)),
                        },
                        None => shared.fail(format!(
                            "egress `{}` received records but is not open on this worker",
                            first.egress
                        )),
                    }
                }
                data.clear();
            });
            Metrics::add(&shared.metrics.records_out, written);
            let now = frontier.frontier().first().copied();
            if now != frontier_seen {
                frontier_seen = now;
                if let Some(epoch) = now {
                    shared.metrics.completed_epoch.store(
                        epoch.saturating_sub(1),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                if dirty {
                    for (id, sink) in sinks.iter_mut() {
                        if let Err(e) = sink.flush() {
                            shared.fail(format!("egress `{id}` failed to flush: {e}"));
                        }
                    }
                    dirty = false;
                }
            }
        },
    );
}
