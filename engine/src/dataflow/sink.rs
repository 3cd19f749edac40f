//! Egress sinks at the end of the dataflow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use statefun_connectors::Sink;
use statefun_sdk::{EgressMessage, TypeName};
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::OkErr;
use timely::dataflow::Stream;

use crate::app::Application;
use crate::shared::{Metrics, Shared};

/// How often sinks are flushed while the job runs (always at the end).
///
/// A flush waits for the external system to acknowledge (Kafka, Kinesis), so
/// flushing at every 10 ms epoch would stall the worker; without checkpoints
/// the flush cadence does not change what is delivered, only when errors
/// surface.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Writes egress records to their sinks.
///
/// Single-writer sinks (files) run on worker 0 and every record for them is
/// sent there; other sinks (Kafka, Kinesis producers) run on every worker and
/// write the records produced on it. Sinks write records as they arrive and
/// are flushed when the egress frontier passes an epoch (at most every
/// [`FLUSH_INTERVAL`]) and when the stream ends.
pub(crate) fn sinks<'s>(
    egress: Stream<'s, u64, Vec<EgressMessage>>,
    app: Arc<Application>,
    shared: Arc<Shared>,
) {
    let single: Arc<std::collections::BTreeSet<TypeName>> = Arc::new(
        app.egresses
            .iter()
            .filter(|(_, plan)| plan.single_writer())
            .map(|(id, _)| id.clone())
            .collect(),
    );
    let (to_one, local) = egress.ok_err(move |m| {
        if single.contains(&m.egress) {
            Ok(m)
        } else {
            Err(m)
        }
    });
    sink_operator(
        to_one,
        Exchange::new(|_: &EgressMessage| 0u64),
        true,
        &app,
        &shared,
    );
    sink_operator(local, Pipeline, false, &app, &shared);
}

fn sink_operator<'s, P>(
    stream: Stream<'s, u64, Vec<EgressMessage>>,
    pact: P,
    single_writers: bool,
    app: &Arc<Application>,
    shared: &Arc<Shared>,
) where
    P: ParallelizationContract<u64, Vec<EgressMessage>>,
{
    let index = stream.scope().index();
    let shared = shared.clone();
    let mut sinks: BTreeMap<TypeName, Box<dyn Sink>> = BTreeMap::new();
    for (id, plan) in &app.egresses {
        if plan.single_writer() != single_writers || (single_writers && index != 0) {
            continue;
        }
        match plan.open() {
            Ok(sink) => {
                sinks.insert(id.clone(), sink);
            }
            Err(e) => shared.fail(format!("cannot open egress `{id}`: {e}")),
        }
    }
    let mut frontier_seen: Option<u64> = Some(0);
    let mut dirty = false;
    let mut last_flush = Instant::now();
    let name = if single_writers {
        "Egress (single writer)"
    } else {
        "Egress"
    };
    stream.sink(pact, name, move |(input, frontier)| {
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
                if single_writers {
                    shared.metrics.completed_epoch.store(
                        epoch.saturating_sub(1),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
            }
            let finished = now.is_none();
            if dirty && (finished || last_flush.elapsed() >= FLUSH_INTERVAL) {
                for (id, sink) in sinks.iter_mut() {
                    if let Err(e) = sink.flush() {
                        shared.fail(format!("egress `{id}` failed to flush: {e}"));
                    }
                }
                dirty = false;
                last_flush = Instant::now();
            }
        }
    });
}
