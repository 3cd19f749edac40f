//! One invocation of an embedded (Rust) function: the `InvocationHost` the
//! SDK's `Context` talks to, over a state backend and the worker's timers.
//!
//! An invocation is atomic: state writes, sends, delayed messages and
//! cancellations are buffered and applied only when the function returns
//! `Ok`. A failing function leaves no trace but the error, so retrying or
//! skipping it never applies half an invocation.

use std::time::Duration;

use statefun_sdk::{
    Address, Context, EgressMessage, Expiration, FunctionError, InvocationHost, Message, SdkError,
    ValueSpecDescriptor,
};

use crate::entry::FunctionEntry;
use crate::envelope::{Envelope, Metadata};
use crate::state::{same_bytes, StateBackend, StateKey, StoredValue, ValueBytes};
use crate::timers::Timers;

/// What a successful invocation produced for the operator to send on.
#[derive(Default, Debug)]
pub struct Effects {
    /// Messages to other functions (or itself), in send order.
    pub messages: Vec<Envelope>,
    /// Egress messages, in send order.
    pub egress: Vec<EgressMessage>,
}

enum TimerOp {
    Schedule {
        delay: Duration,
        token: Option<String>,
        envelope: Box<Envelope>,
    },
    Cancel(String),
}

/// A failed invocation: whose, and why. Nothing of it was applied.
#[derive(Debug)]
pub struct InvocationError {
    /// The function instance that failed.
    pub target: Address,
    /// The function's error.
    pub error: FunctionError,
}

impl std::fmt::Display for InvocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invocation of {} failed: {}", self.target, self.error)
    }
}

/// Buffers for one invocation, reused across invocations to avoid allocation.
#[derive(Default)]
pub struct Scratch {
    writes: Vec<(usize, Option<Vec<u8>>)>,
    /// Buffers of written values whose bytes were copied inline into the
    /// state: handed back to the next `Context::set`.
    spare: Vec<Vec<u8>>,
    timer_ops: Vec<TimerOp>,
    effects: Effects,
}

struct Host<'a> {
    backend: &'a mut dyn StateBackend,
    timers: &'a Timers,
    target: &'a Address,
    specs: &'a [ValueSpecDescriptor],
    now_ms: u64,
    scratch: &'a mut Scratch,
}

impl Host<'_> {
    #[inline(always)]
    fn slot(&self, name: &str) -> Result<usize, SdkError> {
        match self
            .specs
            .iter()
            .position(|s| same_bytes(s.name.as_bytes(), name.as_bytes()))
        {
            Some(slot) => Ok(slot),
            None => Err(unknown_state(name)),
        }
    }

    fn token_live(&self, token: &str) -> bool {
        let mut live = self.timers.token_in_use(self.target, token);
        for op in &self.scratch.timer_ops {
            match op {
                TimerOp::Schedule { token: Some(t), .. } if t == token => live = true,
                TimerOp::Cancel(t) if t == token => live = false,
                _ => {}
            }
        }
        live
    }
}

/// The error for a state name the function did not declare (out of line: the lookup
/// that may return it runs twice per invocation and stays small).
#[cold]
#[inline(never)]
fn unknown_state(name: &str) -> SdkError {
    SdkError::UnknownState(name.to_owned())
}

impl InvocationHost for Host<'_> {
    fn state_get(&mut self, name: &str) -> Result<Option<&[u8]>, SdkError> {
        let slot = self.slot(name)?;
        if let Some(pos) = self.scratch.writes.iter().rposition(|(s, _)| *s == slot) {
            return Ok(self.scratch.writes[pos].1.as_deref());
        }
        let spec = &self.specs[slot];
        let key = StateKey {
            function: &self.target.function_type,
            id: &self.target.id,
            spec: &spec.name,
            slot: slot as u16,
        };
        if spec.expiration == Expiration::Never {
            return Ok(self.backend.get(&key).map(|v| v.bytes));
        }
        let live = self.backend.get(&key).map(|v| v.is_live(self.now_ms));
        match live {
            Some(true) => Ok(self.backend.get(&key).map(|v| v.bytes)),
            Some(false) => {
                // Expired: drop it for real, not just hide it.
                self.backend.delete(&key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn state_set(&mut self, name: &str, value: Vec<u8>) -> Result<(), SdkError> {
        let slot = self.slot(name)?;
        self.scratch.writes.push((slot, Some(value)));
        Ok(())
    }

    fn state_buffer(&mut self) -> Vec<u8> {
        self.scratch.spare.pop().unwrap_or_default()
    }

    fn state_remove(&mut self, name: &str) -> Result<(), SdkError> {
        let slot = self.slot(name)?;
        self.scratch.writes.push((slot, None));
        Ok(())
    }

    fn send(&mut self, message: Message) {
        self.scratch.effects.messages.push(Envelope {
            target: message.target,
            caller: Some(Box::new(self.target.clone())),
            value: message.value,
            metadata: Metadata::None,
        });
    }

    fn send_after(
        &mut self,
        delay: Duration,
        message: Message,
        cancellation_token: Option<String>,
    ) -> Result<(), SdkError> {
        if let Some(token) = &cancellation_token {
            if self.token_live(token) {
                return Err(SdkError::TokenInUse(token.clone()));
            }
        }
        self.scratch.timer_ops.push(TimerOp::Schedule {
            delay,
            token: cancellation_token,
            envelope: Box::new(Envelope {
                target: message.target,
                caller: Some(Box::new(self.target.clone())),
                value: message.value,
                metadata: Metadata::None,
            }),
        });
        Ok(())
    }

    fn cancel_delayed_message(&mut self, token: &str) {
        self.scratch
            .timer_ops
            .push(TimerOp::Cancel(token.to_owned()));
    }

    fn send_egress(&mut self, message: EgressMessage) {
        self.scratch.effects.egress.push(message);
    }
}

/// Invokes `entry` with `envelope` and applies its effects if it succeeds.
///
/// On success, state writes are in `backend`, delayed messages and
/// cancellations in `timers`, and the returned [`Effects`] hold the messages
/// and egress records to send (drain them before the next call). On failure
/// nothing is applied and the function's error is returned. The message's
/// value is taken out of `envelope` (see [`Envelope::take_value`]); the rest
/// stays for the caller to drop with its batch.
pub fn invoke<'s>(
    entry: &FunctionEntry,
    envelope: &mut Envelope,
    backend: &mut dyn StateBackend,
    timers: &mut Timers,
    now_ms: u64,
    scratch: &'s mut Scratch,
) -> Result<&'s mut Effects, InvocationError> {
    scratch.writes.clear();
    scratch.timer_ops.clear();
    let message = Message {
        target: envelope.target.clone(),
        value: envelope.take_value(),
    };
    let Envelope {
        target,
        caller,
        metadata,
        ..
    } = &*envelope;
    let result = {
        let mut host = Host {
            backend: &mut *backend,
            timers,
            target,
            specs: &entry.specs,
            now_ms,
            scratch: &mut *scratch,
        };
        let metadata = metadata.get();
        let mut ctx = Context::new(target, caller.as_deref(), metadata.as_deref(), &mut host);
        entry.function.invoke(&mut ctx, message)
    };
    if let Err(error) = result {
        scratch.effects.messages.clear();
        scratch.effects.egress.clear();
        return Err(InvocationError {
            target: target.clone(),
            error,
        });
    }
    apply_writes(entry, target, backend, now_ms, scratch);
    if scratch.timer_ops.is_empty() {
        return Ok(&mut scratch.effects);
    }
    // Delays count from now, after the function returned, not from `now_ms`
    // (the start of the operator's activation, which may be well before the
    // `send_after` call): a delayed message must never fire early.
    let sent_ms = crate::clock::Clock::now_ms().max(now_ms);
    for op in scratch.timer_ops.drain(..) {
        match op {
            TimerOp::Schedule {
                delay,
                token,
                envelope,
            } => {
                let due = sent_ms.saturating_add(delay.as_millis() as u64);
                // Liveness was checked at send time against these same timers.
                if let Err(e) = timers.schedule(due, target, token, *envelope) {
                    return Err(InvocationError {
                        target: target.clone(),
                        error: e.into(),
                    });
                }
            }
            TimerOp::Cancel(token) => {
                timers.cancel(target, &token);
            }
        }
    }
    Ok(&mut scratch.effects)
}

/// Values up to this size are stored inline ([`ValueBytes`]), so their
/// encoding buffer can be reused.
const SPARE_BUFFER: usize = 16;
/// How many such buffers an invocation scratch keeps.
const SPARE_BUFFERS: usize = 8;

fn apply_writes(
    entry: &FunctionEntry,
    target: &Address,
    backend: &mut dyn StateBackend,
    now_ms: u64,
    scratch: &mut Scratch,
) {
    let key = |slot: usize| StateKey {
        function: &target.function_type,
        id: &target.id,
        spec: &entry.specs[slot].name,
        slot: slot as u16,
    };
    for (slot, value) in scratch.writes.drain(..) {
        match value {
            Some(mut bytes) => {
                // Small values are stored inline: copy them and keep the
                // buffer for the next write (a few, so memory stays bounded).
                let stored = if bytes.len() <= SPARE_BUFFER && scratch.spare.len() < SPARE_BUFFERS {
                    let inline = ValueBytes::from_slice(&bytes);
                    bytes.clear();
                    scratch.spare.push(bytes);
                    inline
                } else {
                    ValueBytes::from_vec(bytes)
                };
                let value = StoredValue {
                    bytes: stored,
                    expires_at_ms: expiry(entry.specs[slot].expiration, now_ms),
                };
                backend.put(&key(slot), value);
            }
            None => backend.delete(&key(slot)),
        }
    }
    if entry.has_expire_after_call {
        renew_after_call(target, &entry.specs, backend, now_ms);
    }
}

/// When a value written at `now_ms` under `expiration` expires.
pub(crate) fn expiry(expiration: Expiration, now_ms: u64) -> u64 {
    match expiration {
        Expiration::Never => StoredValue::NEVER,
        Expiration::AfterWrite(ttl) | Expiration::AfterCall(ttl) => {
            now_ms.saturating_add(ttl.as_millis() as u64)
        }
    }
}

/// `expire_after_call`: a call of the instance restarts the clock of its live
/// values (and drops the expired ones it meets).
pub(crate) fn renew_after_call(
    target: &Address,
    specs: &[ValueSpecDescriptor],
    backend: &mut dyn StateBackend,
    now_ms: u64,
) {
    for (slot, spec) in specs.iter().enumerate() {
        if let Expiration::AfterCall(_) = spec.expiration {
            let key = StateKey {
                function: &target.function_type,
                id: &target.id,
                spec: &spec.name,
                slot: slot as u16,
            };
            let renewed = match backend.get(&key) {
                Some(v) if v.is_live(now_ms) => Some(StoredValue {
                    bytes: ValueBytes::from_slice(v.bytes),
                    expires_at_ms: expiry(spec.expiration, now_ms),
                }),
                Some(_) => None,
                None => continue,
            };
            match renewed {
                Some(v) => backend.put(&key, v),
                None => backend.delete(&key),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use statefun_sdk::{FunctionSpec, IngressMetadata, TypeName, TypedValue};

    use super::*;
    use crate::state::MemoryBackend;

    /// Every kind of envelope metadata reaches the function as the record's
    /// `IngressMetadata` (a generator's is made for the call), and a delayed
    /// send made in the same call still reaches the timers.
    #[test]
    fn the_function_sees_each_kind_of_metadata_and_its_delayed_sends_are_kept() {
        let seen: Arc<Mutex<Vec<Option<IngressMetadata>>>> = Arc::default();
        let log = seen.clone();
        let spec = FunctionSpec::builder(TypeName::parse("t/f").unwrap())
            .with_fn(
                move |ctx: &mut Context<'_>, m: Message| -> Result<(), FunctionError> {
                    log.lock().unwrap().push(ctx.metadata().cloned());
                    if m.value.value == b"later" {
                        ctx.send_after(Duration::from_secs(5), Message::new(m.target, m.value));
                    }
                    Ok(())
                },
            )
            .build()
            .unwrap();
        let entry = FunctionEntry::of(&spec);
        let kafka = IngressMetadata::Kafka {
            topic: "orders".into(),
            partition: 2,
            offset: 40,
            timestamp_ms: Some(1),
            headers: vec![("h".into(), None)],
        };
        let target = Address::new(entry.function_type.clone(), "a");
        let envelope = |metadata, value: &[u8]| Envelope {
            target: target.clone(),
            caller: None,
            value: TypedValue::new("t/v", value.to_vec()),
            metadata,
        };
        let mut backend = MemoryBackend::default();
        let mut timers = Timers::default();
        let mut scratch = Scratch::default();
        for mut e in [
            envelope(Metadata::Generator(7), b"now"),
            envelope(Metadata::of(kafka.clone()), b"now"),
            envelope(Metadata::None, b"later"),
        ] {
            let effects = invoke(
                &entry,
                &mut e,
                &mut backend,
                &mut timers,
                1_000,
                &mut scratch,
            );
            assert!(effects.is_ok());
        }
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Some(IngressMetadata::Generator { sequence: 7 }),
                Some(kafka),
                None
            ]
        );
        assert_eq!(timers.len(), 1);
    }
}
