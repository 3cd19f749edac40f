//! Remote functions: the engine side of StateFun's HTTP request–reply protocol.
//!
//! One [`RemoteDriver`] per worker queues messages per address (at most one
//! request in flight per address; later messages batch up to the endpoint's
//! `maxNumBatchRequests`), builds requests with the address's current state,
//! and applies responses in StateFun's order: outgoing messages, delayed
//! messages and cancellations, egress records, then state mutations.
//!
//! The driver knows nothing of timely: every queued message carries an opaque
//! time `T`, and completed batches hand back the times of their messages so
//! that the operator can release the capabilities it held for them. An epoch
//! therefore completes only when the invocations of its messages have
//! answered and their effects are applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use statefun_module::HttpEndpoint;
use statefun_remote::{
    build_request, parse_response, Batcher, Completion, InvocationInput, RemoteInvoker,
    RemoteOutcome, RemotePool,
};
use statefun_sdk::{Address, EgressMessage, TypeName, TypedValue, ValueSpecDescriptor};

use crate::dead_letter::DeadLetterPlan;
use crate::envelope::{Envelope, Metadata};
use crate::invoke::{expiry, renew_after_call};
use crate::state::{StateBackend, StateKey, StoredValue, ValueBytes};
use crate::timers::Timers;

/// What to do when a remote invocation fails for good (after retries).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RemoteFailurePolicy {
    /// Stop the job with an error naming the function, address and cause (default).
    #[default]
    FailJob,
    /// Send each message of the failed batch to a dead-letter egress with an
    /// error log line, and go on (`--on-remote-failure
    /// dead-letter=<egress>[:<topic or stream>]`). A file egress gets the
    /// message's typed value as it is; a Kafka egress a record on the topic,
    /// a Kinesis egress one on the stream (see [`DeadLetterPlan::remote`]).
    DeadLetter {
        /// The egress id.
        egress: TypeName,
        /// The topic (Kafka egress) or stream (Kinesis egress).
        destination: Option<String>,
    },
}

/// A request held back until its function type first answers: the address, its batch and
/// when it was first to be sent.
type Held<T> = (Address, Vec<Queued<T>>, Instant);

struct Queued<T> {
    input: InvocationInput,
    time: T,
}

struct InFlight<T> {
    address: Address,
    batch: Vec<Queued<T>>,
    /// When the batch was first to be sent (a state handshake's second request keeps it),
    /// for the invocation latency.
    since: Instant,
}

/// A finished batch: the times to release and what to send on.
pub struct Finished<T> {
    /// The function type the batch was for.
    pub function: TypeName,
    /// Whether the batch failed for good (its messages went nowhere or to the
    /// dead-letter egress).
    pub failed: bool,
    /// The times of the batch's messages (one per message).
    pub times: Vec<T>,
    /// Messages to functions, to send at the batch's least time.
    pub messages: Vec<Envelope>,
    /// Egress records, to send at the batch's least time.
    pub egress: Vec<EgressMessage>,
    /// From sending the batch's request to its answer (handshakes, retries and waiting for
    /// a function type's first answer included): each message's invocation latency.
    pub latency: Duration,
}

/// A remote invocation that failed for good.
#[derive(Debug)]
pub struct RemoteFailure {
    /// What happened, naming the function, address and cause.
    pub message: String,
}

/// Drives remote invocations for one worker.
pub struct RemoteDriver<T> {
    invoker: RemoteInvoker,
    endpoints: Vec<HttpEndpoint>,
    batchers: FxHashMap<TypeName, Batcher<Queued<T>>>,
    in_flight: FxHashMap<u64, InFlight<T>>,
    /// Value specs registered per function type, grown by the
    /// missing-state handshake (`IncompleteInvocationContext`).
    specs: FxHashMap<TypeName, Vec<ValueSpecDescriptor>>,
    /// Function types whose first answer has not arrived yet, with the requests
    /// held back meanwhile. Until a type has answered once its value specs are
    /// unknown, so every request would come back `IncompleteInvocationContext`
    /// and go again: the first request of a type goes alone and the others wait
    /// for its answer (one round trip per type, as upstream, instead of one per
    /// new address). A held request counts as in flight for its address.
    probing: FxHashMap<TypeName, Vec<Held<T>>>,
    /// Function types that have answered once: their specs are known.
    answered: rustc_hash::FxHashSet<TypeName>,
    /// `IncompleteInvocationContext` answers since [`RemoteDriver::take_handshakes`].
    handshakes: u64,
    next_ticket: u64,
    completed: Vec<Completion>,
    /// Where messages of failed invocations go; `None` fails the job.
    dead_letter: Option<DeadLetterPlan>,
}

impl<T: Copy + Ord> RemoteDriver<T> {
    /// A driver for `endpoints`, sending through `pool` (one per process, see
    /// [`statefun_remote::RemotePool`]); `waker` is called from the HTTP runtime when a
    /// response arrives. Invocations that fail for good go to `dead_letter`, or fail the
    /// job without one.
    pub fn new(
        endpoints: &[HttpEndpoint],
        pool: Arc<RemotePool>,
        waker: Arc<dyn Fn() + Send + Sync>,
        dead_letter: Option<DeadLetterPlan>,
    ) -> Result<Self, String> {
        let invoker = RemoteInvoker::on(pool, waker);
        Ok(RemoteDriver {
            invoker,
            endpoints: endpoints.to_vec(),
            batchers: FxHashMap::default(),
            in_flight: FxHashMap::default(),
            specs: FxHashMap::default(),
            probing: FxHashMap::default(),
            answered: rustc_hash::FxHashSet::default(),
            handshakes: 0,
            next_ticket: 0,
            completed: Vec::new(),
            dead_letter,
        })
    }

    /// Whether an endpoint serves `function_type` (exact patterns win over namespace ones).
    pub fn serves(&self, function_type: &TypeName) -> bool {
        self.invoker.endpoint_for(function_type).is_some()
    }

    /// Whether nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.batchers.values().all(|b| b.is_idle())
    }

    /// The `IncompleteInvocationContext` answers (state handshakes) since the last call.
    pub fn take_handshakes(&mut self) -> u64 {
        std::mem::take(&mut self.handshakes)
    }

    /// Messages queued behind in-flight requests, over all addresses.
    pub fn queued(&self) -> usize {
        self.batchers.values().map(|b| b.queued()).sum()
    }

    /// Messages queued behind in-flight requests per endpoint (its `functions` pattern, the
    /// label of the endpoint's other metrics), in pattern order: every endpoint this driver
    /// has sent to, 0 when nothing waits (a series that reads 0, not one that vanishes).
    pub fn queued_by_endpoint(&self) -> Vec<(String, u64)> {
        let mut by: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for (function, batcher) in &self.batchers {
            if let Some(endpoint) = self.invoker.endpoint_for(function) {
                *by.entry(endpoint.functions.to_string()).or_default() += batcher.queued() as u64;
            }
        }
        by.into_iter().collect()
    }

    /// Queues a message for a remote function; sends a request if its address is idle.
    pub fn enqueue(
        &mut self,
        envelope: Envelope,
        time: T,
        backend: &mut dyn StateBackend,
        now_ms: u64,
    ) {
        let Envelope {
            target,
            caller,
            value,
            ..
        } = envelope;
        let max_batch = self
            .invoker
            .endpoint_for(&target.function_type)
            .map_or(1000, |e| e.max_num_batch_requests.max(1));
        let batcher = self
            .batchers
            .entry(target.function_type.clone())
            .or_insert_with(|| Batcher::new(max_batch));
        let queued = Queued {
            input: InvocationInput {
                caller: caller.map(|c| *c),
                argument: value,
            },
            time,
        };
        if let Some(batch) = batcher.push(target.clone(), queued) {
            self.send(target, batch, backend, now_ms, Instant::now());
        }
    }

    fn send(
        &mut self,
        address: Address,
        batch: Vec<Queued<T>>,
        backend: &mut dyn StateBackend,
        now_ms: u64,
        since: Instant,
    ) {
        if !self.answered.contains(&address.function_type) {
            match self.probing.get_mut(&address.function_type) {
                Some(held) => {
                    held.push((address, batch, since));
                    return;
                }
                None => {
                    self.probing
                        .insert(address.function_type.clone(), Vec::new());
                }
            }
        }
        let specs = self.specs.entry(address.function_type.clone()).or_default();
        let state: Vec<(ValueSpecDescriptor, Option<Vec<u8>>)> = specs
            .iter()
            .enumerate()
            .map(|(slot, spec)| {
                let key = StateKey {
                    function: &address.function_type,
                    id: &address.id,
                    spec: &spec.name,
                    slot: slot as u16,
                };
                let live = backend
                    .get(&key)
                    .map(|v| (v.is_live(now_ms), v.bytes.to_vec()));
                let value = match live {
                    Some((true, bytes)) => Some(bytes),
                    Some((false, _)) => {
                        backend.delete(&key);
                        None
                    }
                    None => None,
                };
                (spec.clone(), value)
            })
            .collect();
        let inputs: Vec<InvocationInput> = batch.iter().map(|q| q.input.clone()).collect();
        let request = build_request(&address, &inputs, &state);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.invoker.submit(ticket, &address.function_type, request);
        self.in_flight.insert(
            ticket,
            InFlight {
                address,
                batch,
                since,
            },
        );
    }

    /// Applies every response that has arrived. Finished batches are returned
    /// for the operator to send on; a failure under [`RemoteFailurePolicy::FailJob`]
    /// is returned as `Err` (its batch's times are in `released`).
    pub fn poll(
        &mut self,
        backend: &mut dyn StateBackend,
        timers: &mut Timers,
        now_ms: u64,
        finished: &mut Vec<Finished<T>>,
    ) -> Result<(), RemoteFailure> {
        self.invoker.drain_completed(&mut self.completed);
        let completed = std::mem::take(&mut self.completed);
        let mut failure = None;
        for (ticket, result) in completed {
            let Some(InFlight {
                address,
                batch,
                since,
            }) = self.in_flight.remove(&ticket)
            else {
                continue;
            };
            let latency = since.elapsed();
            let registered = self
                .specs
                .get(&address.function_type)
                .cloned()
                .unwrap_or_default();
            let outcome = result.map_err(|e| e.to_string()).and_then(|body| {
                parse_response(&body, &address, &registered).map_err(|e| e.to_string())
            });
            // The first answer of a type (or its failure) releases the requests
            // held behind it; they go out below, after the specs it taught.
            let held = self
                .probing
                .remove(&address.function_type)
                .unwrap_or_default();
            if outcome.is_ok() {
                self.answered.insert(address.function_type.clone());
            }
            if let Ok(RemoteOutcome::Incomplete { missing }) = &outcome {
                self.handshakes += 1;
                let specs = self.specs.entry(address.function_type.clone()).or_default();
                for spec in missing {
                    if !specs.iter().any(|s| s.name == spec.name) {
                        specs.push(spec.clone());
                    }
                }
            }
            for (held_address, held_batch, held_since) in held {
                self.send(held_address, held_batch, backend, now_ms, held_since);
            }
            match outcome {
                Ok(RemoteOutcome::Incomplete { .. }) => {
                    // Re-send the same batch, now with the missing values (as unset).
                    self.send(address, batch, backend, now_ms, since);
                    continue;
                }
                Ok(RemoteOutcome::Complete(effects)) => {
                    // The response may have arrived after this activation began:
                    // count delays from now so that nothing fires early.
                    let applied_ms = crate::clock::Clock::now_ms().max(now_ms);
                    match apply(&address, &registered, effects, backend, timers, applied_ms) {
                        Ok((messages, egress)) => finished.push(Finished {
                            function: address.function_type.clone(),
                            failed: false,
                            times: batch.iter().map(|q| q.time).collect(),
                            messages,
                            egress,
                            latency,
                        }),
                        Err(e) => {
                            if let Some(f) = self.fail(&address, batch, e, latency, finished) {
                                failure.get_or_insert(f);
                            }
                        }
                    }
                }
                Err(e) => {
                    if let Some(f) = self.fail(&address, batch, e, latency, finished) {
                        failure.get_or_insert(f);
                    }
                }
            }
            // The address may have queued more meanwhile.
            if let Some(batcher) = self.batchers.get_mut(&address.function_type) {
                if let Some(next) = batcher.complete(&address) {
                    self.send(address, next, backend, now_ms, Instant::now());
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn fail(
        &mut self,
        address: &Address,
        batch: Vec<Queued<T>>,
        cause: String,
        latency: Duration,
        finished: &mut Vec<Finished<T>>,
    ) -> Option<RemoteFailure> {
        let times = batch.iter().map(|q| q.time).collect();
        let Some(plan) = &self.dead_letter else {
            finished.push(Finished {
                function: address.function_type.clone(),
                failed: true,
                times,
                messages: Vec::new(),
                egress: Vec::new(),
                latency,
            });
            return Some(RemoteFailure {
                message: format!(
                    "remote invocation of {address} failed for good ({} message(s)): {cause}",
                    batch.len()
                ),
            });
        };
        tracing::error!(%address, messages = batch.len(), dead_letter = %plan.egress,
            "remote invocation failed for good; messages sent to the dead-letter egress: {cause}");
        finished.push(Finished {
            function: address.function_type.clone(),
            failed: true,
            times,
            messages: Vec::new(),
            egress: batch
                .into_iter()
                .map(|q| plan.remote(address, &cause, q.input.argument))
                .collect(),
            latency,
        });
        None
    }

    /// The endpoints this driver invokes.
    pub fn endpoints(&self) -> &[HttpEndpoint] {
        &self.endpoints
    }
}

type Applied = (Vec<Envelope>, Vec<EgressMessage>);

/// Applies a response's effects in StateFun's order, after checking all of
/// them, so that a response the runtime cannot apply changes nothing.
fn apply(
    address: &Address,
    registered: &[ValueSpecDescriptor],
    effects: statefun_remote::RemoteEffects,
    backend: &mut dyn StateBackend,
    timers: &mut Timers,
    now_ms: u64,
) -> Result<Applied, String> {
    // Check delayed-message tokens first: a live token is an error.
    let mut live: FxHashMap<&str, bool> = FxHashMap::default();
    for d in &effects.delayed {
        if let Some(token) = d.cancellation_token.as_deref() {
            let is_live = *live
                .entry(token)
                .or_insert_with(|| timers.token_in_use(address, token));
            if d.is_cancellation {
                live.insert(token, false);
            } else if is_live {
                return Err(format!(
                    "remote function {address} sent a delayed message with cancellation token `{token}`, which a pending delayed message already uses"
                ));
            } else {
                live.insert(token, true);
            }
        }
    }
    let messages = effects
        .outgoing
        .into_iter()
        .map(|(target, value)| Envelope {
            target,
            caller: Some(Box::new(address.clone())),
            value,
            metadata: Metadata::None,
        })
        .collect();
    for d in effects.delayed {
        match (d.is_cancellation, d.target, d.argument) {
            (true, _, _) => {
                if let Some(token) = d.cancellation_token {
                    timers.cancel(address, &token);
                }
            }
            (false, Some(target), Some(value)) => {
                let due = now_ms.saturating_add(d.delay.as_millis() as u64);
                let envelope = Envelope {
                    target,
                    caller: Some(Box::new(address.clone())),
                    value,
                    metadata: Metadata::None,
                };
                timers
                    .schedule(due, address, d.cancellation_token, envelope)
                    .map_err(|e| format!("remote function {address}: {e}"))?;
            }
            _ => {
                return Err(format!(
                    "remote function {address} sent a delayed message without a target or argument"
                ))
            }
        }
    }
    for mutation in effects.state {
        let Some(slot) = registered.iter().position(|s| s.name == mutation.name) else {
            return Err(format!(
                "remote function {address} changed state `{}`, which is not registered",
                mutation.name
            ));
        };
        let spec = &registered[slot];
        let key = StateKey {
            function: &address.function_type,
            id: &address.id,
            spec: &spec.name,
            slot: slot as u16,
        };
        match mutation.value {
            Some(TypedValue { value, .. }) => {
                let value = StoredValue {
                    bytes: ValueBytes::from_vec(value),
                    expires_at_ms: expiry(spec.expiration, now_ms),
                };
                backend.put(&key, value);
            }
            None => backend.delete(&key),
        }
    }
    renew_after_call(address, registered, backend, now_ms);
    Ok((messages, effects.egress))
}
