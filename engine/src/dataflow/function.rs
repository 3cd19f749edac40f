//! The function operator: invokes function instances on the worker that owns
//! their key group, and sends what they produce back around the loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use statefun_sdk::EgressMessage;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use super::LoopTime;
use crate::app::Application;
use crate::clock::Clock;
use crate::envelope::Envelope;
use crate::invoke::{invoke, Scratch};
use crate::keygroup::worker_for_id;
use crate::remote::{Finished, RemoteDriver};
use crate::shared::{Metrics, RateLimit, Shared};
use crate::state::StateBackend;
use crate::timers::Timers;

/// What one worker's function operator owns: the application, this worker's
/// state backend, and the shared run state.
pub struct FunctionWorker {
    app: Arc<Application>,
    backend: Box<dyn StateBackend>,
    shared: Arc<Shared>,
}

impl FunctionWorker {
    /// Bundles what the function operator of one worker needs.
    pub fn new(app: Arc<Application>, backend: Box<dyn StateBackend>, shared: Arc<Shared>) -> Self {
        FunctionWorker {
            app,
            backend,
            shared,
        }
    }
}

type LoopOutput = OutputBuilder<LoopTime, CapacityContainerBuilder<Vec<Envelope>>>;
type EgressOutput = OutputBuilder<LoopTime, CapacityContainerBuilder<Vec<EgressMessage>>>;

/// The function operator: returns (messages to loop back, egress records).
pub(crate) fn functions<'s>(
    messages: Stream<'s, LoopTime, Vec<Envelope>>,
    worker: FunctionWorker,
) -> (
    Stream<'s, LoopTime, Vec<Envelope>>,
    Stream<'s, LoopTime, Vec<EgressMessage>>,
) {
    let scope = messages.scope();
    let peers = scope.peers();
    let mut builder = OperatorBuilder::new("Functions".to_owned(), scope);
    let address = builder.operator_info().address;
    let activator = scope.activator_for(address.clone());
    let sync_activator = scope.worker().sync_activator_for(address.to_vec());
    // Route by id only, so all function types of one id share a worker.
    let mut input = builder.new_input(
        messages,
        Exchange::new(move |e: &Envelope| worker_for_id(&e.target.id, peers) as u64),
    );
    let (loop_out, loop_stream) = builder.new_output::<Vec<Envelope>>();
    let (egress_out, egress_stream) = builder.new_output::<Vec<EgressMessage>>();
    let mut loop_out: LoopOutput = OutputBuilder::from(loop_out);
    let mut egress_out: EgressOutput = OutputBuilder::from(egress_out);

    builder.build(move |initial| {
        // We hold nothing until delayed messages are pending.
        drop(initial);
        let FunctionWorker {
            app,
            mut backend,
            shared,
        } = worker;
        let clock = Clock::new(app.settings.epoch_interval);
        let hop_cap = app.settings.hop_cap;
        let mut timers = Timers::default();
        // Held while delayed messages are pending, at (current epoch, 0).
        let mut timer_cap: Option<Capability<LoopTime>> = None;
        let mut scratch = Scratch::default();
        let mut unknown_function = RateLimit::default();
        let mut failed = RateLimit::default();
        let mut unknown_egress = RateLimit::default();
        let mut drain_deadline: Option<std::time::Instant> = None;
        let mut dropped_at_shutdown = 0u64;
        // Remote functions: the driver, and the capabilities held for the
        // times of messages queued or in flight (count per time).
        let mut remote: Option<RemoteDriver<LoopTime>> = None;
        if !app.endpoints.is_empty() {
            let waker = Arc::new(move || {
                let _ = sync_activator.activate();
            });
            match RemoteDriver::new(&app.endpoints, waker, app.settings.remote_failure.clone()) {
                Ok(driver) => remote = Some(driver),
                Err(e) => shared.fail(format!("cannot set up remote function endpoints: {e}")),
            }
        }
        type Held = (Capability<LoopTime>, Capability<LoopTime>, usize);
        let mut held: BTreeMap<LoopTime, Held> = BTreeMap::new();
        let mut finished: Vec<Finished<LoopTime>> = Vec::new();
        // This worker's share of the process-wide remote backlog gauge.
        let mut reported_queued = 0u64;

        move |_frontiers| {
            let now_ms = Clock::now_ms();
            let (mut invocations, mut failures, mut bad_egress) = (0u64, 0u64, 0u64);
            let mut loop_handle = loop_out.activate();
            let mut egress_handle = egress_out.activate();

            // After shutdown and its grace period — at once if the job failed —
            // in-flight messages are dropped (and counted) and held capabilities
            // released, so that runaway cycles or unreachable remote functions
            // cannot keep the process alive.
            if shared.shutting_down() {
                let grace = if shared.failed() {
                    std::time::Duration::ZERO
                } else {
                    app.settings.shutdown_grace
                };
                let deadline = *drain_deadline.get_or_insert_with(|| std::time::Instant::now() + grace);
                if std::time::Instant::now() >= deadline {
                    let mut dropped = 0;
                    input.for_each(|_cap, data| {
                        dropped += data.len() as u64;
                        data.clear();
                    });
                    if let Some(driver) = remote.as_ref() {
                        dropped += driver.queued() as u64;
                    }
                    if dropped > 0 || !held.is_empty() || timer_cap.is_some() {
                        dropped_at_shutdown += dropped;
                        tracing::warn!(
                            dropped = dropped_at_shutdown,
                            remote_in_flight = held.len(),
                            delayed = timers.len(),
                            "shutdown: dropping in-flight messages, pending remote invocations and delayed messages"
                        );
                    }
                    held.clear();
                    timer_cap = None;
                    return;
                }
                activator.activate_after(deadline.saturating_duration_since(std::time::Instant::now()));
            }
            input.for_each(|cap, data| {
                let Some(&(epoch, hop)) = cap.least() else {
                    return;
                };
                // Messages sent now arrive at hop + 1; past the cap they move to
                // the next epoch so that this one can complete.
                let send_time = if hop + 1 < hop_cap {
                    (epoch, hop)
                } else {
                    (epoch + 1, 0)
                };
                let send_cap = cap.delayed(&send_time, 0);
                let mut sent = loop_handle.session(&send_cap);
                let mut egress = egress_handle.session(&cap);
                for envelope in data.drain(..) {
                    let Some(entry) = app.functions.get(&envelope.target.function_type) else {
                        if let Some(driver) = remote.as_mut().filter(|d| d.serves(&envelope.target.function_type)) {
                            let time = (epoch, hop);
                            held.entry(time)
                                .or_insert_with(|| (cap.delayed(&time, 0), cap.delayed(&time, 1), 0))
                                .2 += 1;
                            driver.enqueue(envelope, time, &mut *backend, now_ms);
                            continue;
                        }
                        failures += 1;
                        if let Some(n) = unknown_function.hit() {
                            tracing::error!(target = %envelope.target, caller = ?envelope.caller, dropped = n,
                                "message dropped: no function of type `{}` is registered or served by an endpoint",
                                envelope.target.function_type);
                        }
                        continue;
                    };
                    invocations += 1;
                    match invoke(entry, envelope, &mut *backend, &mut timers, now_ms, &mut scratch) {
                        Ok(effects) => {
                            sent.give_iterator(effects.messages.drain(..));
                            for message in effects.egress.drain(..) {
                                if declared(&app, &message, &mut unknown_egress, &mut bad_egress) {
                                    egress.give(message);
                                }
                            }
                        }
                        Err(error) => {
                            failures += 1;
                            if let Some(n) = failed.hit() {
                                tracing::error!(failed = n, "{error}");
                            }
                        }
                    }
                }
                if !timers.is_empty() && timer_cap.is_none() {
                    timer_cap = Some(cap.delayed(&(epoch + 1, 0), 0));
                }
            });

            if let Some(driver) = remote.as_mut() {
                if let Err(failure) = driver.poll(&mut *backend, &mut timers, now_ms, &mut finished) {
                    shared.fail(failure.message);
                }
                for Finished { times, messages, egress } in finished.drain(..) {
                    invocations += times.len() as u64;
                    // Effects go out at the batch's least time, whose capabilities we hold.
                    if let Some(least) = times.iter().min() {
                        if let Some((loop_cap, egress_cap, _)) = held.get(least) {
                            let (epoch, hop) = *least;
                            if hop + 1 < hop_cap {
                                loop_handle.session(loop_cap).give_iterator(messages.into_iter());
                            } else {
                                let next = loop_cap.delayed(&(epoch + 1, 0));
                                loop_handle.session(&next).give_iterator(messages.into_iter());
                            }
                            let mut session = egress_handle.session(egress_cap);
                            for message in egress {
                                if declared(&app, &message, &mut unknown_egress, &mut bad_egress) {
                                    session.give(message);
                                }
                            }
                        }
                    }
                    // Delayed messages the batch scheduled need a capability
                    // before the batch's are released.
                    if !timers.is_empty() && timer_cap.is_none() {
                        if let Some((cap, _, _)) = times.iter().min().and_then(|t| held.get(t)) {
                            let epoch = cap.time().0;
                            timer_cap = Some(cap.delayed(&(epoch + 1, 0)));
                        }
                    }
                    for time in times {
                        if let Some(entry) = held.get_mut(&time) {
                            entry.2 -= 1;
                            if entry.2 == 0 {
                                held.remove(&time);
                            }
                        }
                    }
                }
            }

            if let Some(tc) = timer_cap.as_mut() {
                if shared.shutting_down() {
                    tracing::warn!(pending = timers.len(), "shutting down with delayed messages pending");
                    timer_cap = None;
                } else {
                    let epoch = clock.epoch_at(now_ms);
                    if tc.time().0 < epoch {
                        tc.downgrade(&(epoch, 0));
                    }
                    let due = timers.pop_due(now_ms);
                    if !due.is_empty() {
                        loop_handle.session(&*tc).give_iterator(due.into_iter());
                    }
                    match timers.next_due_ms() {
                        None => timer_cap = None,
                        Some(next) => {
                            // Wake when the next message is due, and at every
                            // epoch boundary to let time advance.
                            let until_due = std::time::Duration::from_millis(next.saturating_sub(now_ms));
                            activator.activate_after(until_due.min(clock.until_next_epoch(now_ms)));
                        }
                    }
                }
            }

            let m = &shared.metrics;
            if let Some(driver) = remote.as_ref() {
                let queued = driver.queued() as u64;
                if queued > reported_queued {
                    m.remote_queued.fetch_add(queued - reported_queued, std::sync::atomic::Ordering::Relaxed);
                } else if queued < reported_queued {
                    m.remote_queued.fetch_sub(reported_queued - queued, std::sync::atomic::Ordering::Relaxed);
                }
                reported_queued = queued;
                let total = Metrics::get(&m.remote_queued);
                m.remote_queued_peak.fetch_max(total, std::sync::atomic::Ordering::Relaxed);
            }
            Metrics::add(&m.invocations, invocations);
            Metrics::add(&m.failed_invocations, failures);
            Metrics::add(&m.unknown_egress, bad_egress);
        }
    });

    (loop_stream, egress_stream)
}

/// Whether `message` goes to an egress module.yaml declares; if not, it is
/// counted and logged (rate-limited) as dropped, for Rust and remote
/// functions alike.
fn declared(
    app: &Application,
    message: &EgressMessage,
    log: &mut RateLimit,
    dropped: &mut u64,
) -> bool {
    if app.egresses.contains_key(&message.egress) {
        return true;
    }
    *dropped += 1;
    if let Some(n) = log.hit() {
        tracing::error!(egress = %message.egress, dropped = n,
            "egress message dropped: no egress with this id is declared in module.yaml");
    }
    false
}
