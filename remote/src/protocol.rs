//! The pure half of StateFun's request-reply protocol: building a
//! [`ToFunction`] for one address and turning a remote function's
//! [`FromFunction`] answer into validated effects.
//!
//! Nothing here does I/O, so the engine can call it on its worker thread and
//! every rule is unit-tested byte for byte. The checks are the ones upstream
//! StateFun applies when it reads a response (a `MODIFY` must carry the state's
//! registered type name; only registered state may change), plus the ones a
//! Rust runtime needs to avoid panicking on bad input (every address must be a
//! valid type name, delays must not be negative). Every error names the
//! function type and address, so an operator reading a log line knows which
//! function to fix.

use std::fmt;
use std::time::Duration;

use prost::Message as _;
use statefun_sdk::proto::request_reply::{
    self as rr,
    from_function::{self, persisted_value_mutation::MutationType},
    to_function, FromFunction, ToFunction,
};
use statefun_sdk::{Address, EgressMessage, TypeName, TypedValue, ValueSpecDescriptor};

/// One message for the invoked address, as the engine queued it.
///
/// `caller` is `None` for ingress records (StateFun sends no caller then) and
/// the sending function's address for function→function messages.
#[derive(Clone, Debug, PartialEq)]
pub struct InvocationInput {
    /// Who sent the message; `None` when it came from an ingress.
    pub caller: Option<Address>,
    /// The message itself.
    pub argument: TypedValue,
}

/// What a remote function answered, after validation.
#[derive(Clone, Debug, PartialEq)]
pub enum RemoteOutcome {
    /// The function declares state values the request did not carry
    /// (`IncompleteInvocationContext`). The engine registers `missing` (with
    /// their expirations) for the function type and re-sends the same batch;
    /// none of the batch's messages has been processed.
    Incomplete {
        /// The state values to register, in the order the function listed them.
        missing: Vec<ValueSpecDescriptor>,
    },
    /// The batch ran; these are its effects.
    Complete(RemoteEffects),
}

/// The effects of one successful batch invocation, in the order the function
/// produced them within each kind.
///
/// StateFun applies the kinds in this order: `outgoing`, then `delayed`
/// (including cancellations), then `egress`, then `state`; the engine must do
/// the same so that remote functions behave exactly as under upstream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteEffects {
    /// Messages to other functions (or to itself), sent now.
    pub outgoing: Vec<(Address, TypedValue)>,
    /// Delayed messages and cancellations of delayed messages.
    pub delayed: Vec<DelayedEffect>,
    /// Records for egresses.
    pub egress: Vec<EgressMessage>,
    /// State changes of the invoked address.
    pub state: Vec<StateMutation>,
}

/// A delayed message, or the cancellation of one.
///
/// Kept as one type (rather than an enum) because that is how the protocol
/// carries them and their relative order matters: a `send_after` followed by a
/// `cancel_delayed_message` with the same token cancels it, the reverse order
/// does not.
#[derive(Clone, Debug, PartialEq)]
pub struct DelayedEffect {
    /// How long after the invocation the message is due (zero for cancellations).
    pub delay: Duration,
    /// The receiver; `None` for a cancellation.
    pub target: Option<Address>,
    /// The message; `None` for a cancellation.
    pub argument: Option<TypedValue>,
    /// The token naming the delayed message; `None` when the function gave none.
    pub cancellation_token: Option<String>,
    /// True when this only cancels the delayed message with `cancellation_token`.
    pub is_cancellation: bool,
}

/// A change to one state value of the invoked address.
#[derive(Clone, Debug, PartialEq)]
pub struct StateMutation {
    /// The state name (registered for the function type).
    pub name: String,
    /// The new value, whose type name is the registered one; `None` deletes the value.
    pub value: Option<TypedValue>,
}

/// A response the runtime cannot apply. Each variant names the function and
/// address so that the message alone tells which function misbehaved; the
/// engine treats all of them as a failed invocation (no effect is applied).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not a `FromFunction` protobuf message.
    #[error(
        "remote function {function} returned an undecodable response for address {address}: {error} \
         ({len} bytes, starting {head:?}); check that the endpoint URL points at a StateFun \
         request-reply handler and that it answers with the protobuf body, not an error page"
    , function = .address.function_type)]
    Decode {
        /// The invoked address (its function type names the function).
        address: Address,
        /// What the protobuf decoder said.
        error: String,
        /// The body length.
        len: usize,
        /// The first bytes of the body, lossily as text.
        head: String,
    },
    /// The body decoded but carries neither an invocation result nor an
    /// incomplete-context answer.
    #[error(
        "remote function {function} returned an empty response for address {address}; \
         the SDK must answer with an invocation result or the missing state values"
    , function = .address.function_type)]
    EmptyResponse {
        /// The invoked address (its function type names the function).
        address: Address,
    },
    /// A `MODIFY` carried another type name than the state's registered one.
    #[error(
        "remote function {function} at address {address} wrote state `{state}` with type \
         `{actual}`, but it is registered with type `{expected}`; declare the value spec with \
         the same type in the function, or migrate the state"
    , function = .address.function_type)]
    TypeMismatch {
        /// The invoked address (its function type names the function).
        address: Address,
        /// The state name.
        state: String,
        /// The registered type name.
        expected: TypeName,
        /// The type name in the response.
        actual: String,
    },
    /// A mutation of a state value the function type has not registered.
    #[error(
        "remote function {function} at address {address} changed state `{state}`, which is not \
         registered for it (registered: [{registered}]); the function must declare every value \
         spec it writes"
    , function = .address.function_type)]
    UnregisteredState {
        /// The invoked address (its function type names the function).
        address: Address,
        /// The state name.
        state: String,
        /// The registered names, comma-separated.
        registered: String,
    },
    /// Any other malformed part of a response (bad address, missing argument,
    /// negative delay, invalid state spec, unknown enum value).
    #[error(
        "remote function {function} at address {address} returned an invalid response: {detail}"
    , function = .address.function_type)]
    Invalid {
        /// The invoked address (its function type names the function).
        address: Address,
        /// What is wrong, and where in the response.
        detail: String,
    },
}

/// Builds the request for one batch of messages to `target`.
///
/// `state` holds every value spec registered for the function type with the
/// address's current value (`None` when unset). StateFun sends all registered
/// values with every request, unset ones with `has_value = false` and the
/// spec's type name, so the SDK can tell "empty" from "not registered".
pub fn build_request(
    target: &Address,
    caller_and_args: &[InvocationInput],
    state: &[(ValueSpecDescriptor, Option<Vec<u8>>)],
) -> ToFunction {
    let state = state
        .iter()
        .map(|(spec, value)| to_function::PersistedValue {
            state_name: spec.name.clone(),
            state_value: Some(TypedValue {
                typename: spec.typename.as_symbol().clone(),
                has_value: value.is_some(),
                value: value.clone().unwrap_or_default(),
            }),
        })
        .collect();
    let invocations = caller_and_args
        .iter()
        .map(|input| to_function::Invocation {
            caller: input.caller.as_ref().map(rr::Address::from),
            argument: Some(input.argument.clone()),
        })
        .collect();
    ToFunction {
        request: Some(to_function::Request::Invocation(
            to_function::InvocationBatchRequest {
                target: Some(rr::Address::from(target)),
                state,
                invocations,
            },
        )),
    }
}

/// The address a request is for, if it has one; used to name the address in
/// transport errors.
pub fn request_target(request: &ToFunction) -> Option<Address> {
    match &request.request {
        Some(to_function::Request::Invocation(batch)) => batch
            .target
            .as_ref()
            .and_then(|a| Address::try_from(a).ok()),
        None => None,
    }
}

/// Decodes and validates a response body for an invocation of `target`.
///
/// `registered` is the function type's registered value specs at the time of
/// the request. Validation is all-or-nothing: on `Err` no effect should be
/// applied.
pub fn parse_response(
    body: &[u8],
    target: &Address,
    registered: &[ValueSpecDescriptor],
) -> Result<RemoteOutcome, ProtocolError> {
    let from = FromFunction::decode(body).map_err(|e| ProtocolError::Decode {
        address: target.clone(),
        error: e.to_string(),
        len: body.len(),
        head: String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned(),
    })?;
    let invalid = |detail: String| ProtocolError::Invalid {
        address: target.clone(),
        detail,
    };
    match from.response {
        None => Err(ProtocolError::EmptyResponse {
            address: target.clone(),
        }),
        Some(from_function::Response::IncompleteInvocationContext(ctx)) => {
            let missing = ctx
                .missing_values
                .iter()
                .map(|spec| {
                    ValueSpecDescriptor::from_proto(spec).map_err(|e| {
                        invalid(format!("missing state value `{}`: {e}", spec.state_name))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RemoteOutcome::Incomplete { missing })
        }
        Some(from_function::Response::InvocationResult(result)) => {
            let mut effects = RemoteEffects::default();
            for (i, message) in result.outgoing_messages.into_iter().enumerate() {
                let where_ = format!("outgoing message #{i}");
                let to = convert_address(message.target.as_ref(), &where_).map_err(&invalid)?;
                let argument = message
                    .argument
                    .ok_or_else(|| invalid(format!("{where_} to {to} has no argument")))?;
                effects.outgoing.push((to, argument));
            }
            for (i, delayed) in result.delayed_invocations.into_iter().enumerate() {
                effects
                    .delayed
                    .push(convert_delayed(delayed, i).map_err(&invalid)?);
            }
            for (i, egress) in result.outgoing_egresses.into_iter().enumerate() {
                let id = TypeName::new(&egress.egress_namespace, &egress.egress_type)
                    .map_err(|e| invalid(format!("egress message #{i}: egress id: {e}")))?;
                let value = egress.argument.ok_or_else(|| {
                    invalid(format!("egress message #{i} to {id} has no argument"))
                })?;
                effects.egress.push(EgressMessage { egress: id, value });
            }
            for mutation in result.state_mutations {
                effects
                    .state
                    .push(convert_mutation(mutation, target, registered, &invalid)?);
            }
            Ok(RemoteOutcome::Complete(effects))
        }
    }
}

fn convert_address(address: Option<&rr::Address>, where_: &str) -> Result<Address, String> {
    let address = address.ok_or_else(|| format!("{where_} has no target address"))?;
    Address::try_from(address).map_err(|e| {
        format!(
            "{where_} has an invalid target `{}/{}/{}`: {e}",
            address.namespace, address.r#type, address.id
        )
    })
}

fn convert_delayed(
    delayed: from_function::DelayedInvocation,
    index: usize,
) -> Result<DelayedEffect, String> {
    let where_ = format!("delayed message #{index}");
    let token = (!delayed.cancellation_token.is_empty()).then_some(delayed.cancellation_token);
    if delayed.is_cancellation_request {
        let token = token.ok_or_else(|| format!("{where_} is a cancellation without a token"))?;
        return Ok(DelayedEffect {
            delay: Duration::ZERO,
            target: None,
            argument: None,
            cancellation_token: Some(token),
            is_cancellation: true,
        });
    }
    let millis = u64::try_from(delayed.delay_in_ms).map_err(|_| {
        format!(
            "{where_} has a negative delay of {} ms",
            delayed.delay_in_ms
        )
    })?;
    let target = convert_address(delayed.target.as_ref(), &where_)?;
    let argument = delayed
        .argument
        .ok_or_else(|| format!("{where_} to {target} has no argument"))?;
    Ok(DelayedEffect {
        delay: Duration::from_millis(millis),
        target: Some(target),
        argument: Some(argument),
        cancellation_token: token,
        is_cancellation: false,
    })
}

fn convert_mutation(
    mutation: from_function::PersistedValueMutation,
    target: &Address,
    registered: &[ValueSpecDescriptor],
    invalid: &impl Fn(String) -> ProtocolError,
) -> Result<StateMutation, ProtocolError> {
    let Some(spec) = registered.iter().find(|s| s.name == mutation.state_name) else {
        return Err(ProtocolError::UnregisteredState {
            address: target.clone(),
            state: mutation.state_name,
            registered: NameList(registered).to_string(),
        });
    };
    match MutationType::try_from(mutation.mutation_type) {
        Ok(MutationType::Delete) => Ok(StateMutation {
            name: mutation.state_name,
            value: None,
        }),
        Ok(MutationType::Modify) => {
            let value = mutation.state_value.ok_or_else(|| {
                invalid(format!(
                    "MODIFY of state `{}` carries no value",
                    mutation.state_name
                ))
            })?;
            if value.typename != spec.typename.as_str() {
                return Err(ProtocolError::TypeMismatch {
                    address: target.clone(),
                    state: mutation.state_name,
                    expected: spec.typename.clone(),
                    actual: value.typename.to_string(),
                });
            }
            Ok(StateMutation {
                name: mutation.state_name,
                value: Some(value),
            })
        }
        Err(_) => Err(invalid(format!(
            "state `{}` has an unknown mutation type {}",
            mutation.state_name, mutation.mutation_type
        ))),
    }
}

struct NameList<'a>(&'a [ValueSpecDescriptor]);

impl fmt::Display for NameList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, spec) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&spec.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statefun_sdk::proto::request_reply::from_function::{
        DelayedInvocation, EgressMessage as PbEgress, ExpirationSpec, IncompleteInvocationContext,
        Invocation, InvocationResponse, PersistedValueMutation, PersistedValueSpec,
    };
    use statefun_sdk::Expiration;

    fn tn(s: &str) -> TypeName {
        TypeName::parse(s).unwrap()
    }

    fn addr(t: &str, id: &str) -> Address {
        Address::new(tn(t), id)
    }

    fn pb_addr(ns: &str, ty: &str, id: &str) -> rr::Address {
        rr::Address {
            namespace: ns.into(),
            r#type: ty.into(),
            id: id.into(),
        }
    }

    fn seen_spec() -> ValueSpecDescriptor {
        ValueSpecDescriptor {
            name: "seen".into(),
            typename: tn("io.statefun.types/int"),
            expiration: Expiration::Never,
        }
    }

    fn result(r: InvocationResponse) -> Vec<u8> {
        FromFunction {
            response: Some(from_function::Response::InvocationResult(r)),
        }
        .encode_to_vec()
    }

    /// The same bytes the Python SDK's generated classes produce for this
    /// request (see `statefun_sdk::proto::request_reply` tests).
    #[test]
    fn build_request_sends_every_registered_state_value() {
        let target = addr("ex/greeter", "alice");
        let state = vec![
            (seen_spec(), Some(vec![0x0d, 7, 0, 0, 0])),
            (
                ValueSpecDescriptor {
                    name: "empty".into(),
                    typename: tn("io.statefun.types/string"),
                    expiration: Expiration::AfterCall(Duration::from_secs(1)),
                },
                None,
            ),
        ];
        let inputs = vec![
            InvocationInput {
                caller: Some(addr("ex/other", "bob")),
                argument: TypedValue::new("io.statefun.types/string", b"\x0a\x02hi".to_vec()),
            },
            InvocationInput {
                caller: None,
                argument: TypedValue::new("io.statefun.types/bool", vec![]),
            },
        ];
        let request = build_request(&target, &inputs, &state);
        let Some(to_function::Request::Invocation(batch)) = &request.request else {
            panic!("no invocation");
        };
        assert_eq!(batch.target, Some(pb_addr("ex", "greeter", "alice")));
        assert_eq!(batch.state.len(), 2);
        assert_eq!(batch.state[1].state_name, "empty");
        let empty = batch.state[1].state_value.as_ref().unwrap();
        assert_eq!(empty.typename, "io.statefun.types/string");
        assert!(!empty.has_value);
        assert_eq!(
            batch.invocations[0].caller,
            Some(pb_addr("ex", "other", "bob"))
        );
        assert_eq!(batch.invocations[1].caller, None);
        assert_eq!(request_target(&request), Some(target));
        // Byte-identical to what protoc-generated Python code writes.
        let expected_prefix: &[u8] = &[0xa2, 0x06, 0xbb, 0x01, 0x0a, 0x14];
        assert!(request.encode_to_vec().starts_with(expected_prefix));
    }

    #[test]
    fn incomplete_context_yields_missing_specs_with_expiration() {
        let body = FromFunction {
            response: Some(from_function::Response::IncompleteInvocationContext(
                IncompleteInvocationContext {
                    missing_values: vec![
                        PersistedValueSpec {
                            state_name: "seen".into(),
                            expiration_spec: Some(ExpirationSpec {
                                mode: 2,
                                expire_after_millis: 60_000,
                            }),
                            type_typename: "io.statefun.types/int".into(),
                        },
                        PersistedValueSpec {
                            state_name: "name".into(),
                            expiration_spec: None,
                            type_typename: "io.statefun.types/string".into(),
                        },
                    ],
                },
            )),
        }
        .encode_to_vec();
        let outcome = parse_response(&body, &addr("ex/greeter", "a"), &[]).unwrap();
        assert_eq!(
            outcome,
            RemoteOutcome::Incomplete {
                missing: vec![
                    ValueSpecDescriptor {
                        name: "seen".into(),
                        typename: tn("io.statefun.types/int"),
                        expiration: Expiration::AfterCall(Duration::from_secs(60)),
                    },
                    ValueSpecDescriptor {
                        name: "name".into(),
                        typename: tn("io.statefun.types/string"),
                        expiration: Expiration::Never,
                    },
                ]
            }
        );
    }

    #[test]
    fn complete_response_keeps_every_effect_in_order() {
        let body = result(InvocationResponse {
            state_mutations: vec![
                PersistedValueMutation {
                    mutation_type: 1,
                    state_name: "seen".into(),
                    state_value: Some(TypedValue::new(
                        "io.statefun.types/int",
                        vec![0x0d, 8, 0, 0, 0],
                    )),
                },
                PersistedValueMutation {
                    mutation_type: 0,
                    state_name: "seen".into(),
                    state_value: None,
                },
            ],
            outgoing_messages: vec![
                Invocation {
                    target: Some(pb_addr("ex", "a", "1")),
                    argument: Some(TypedValue::new("ex/t", b"1".to_vec())),
                },
                Invocation {
                    target: Some(pb_addr("ex", "b", "2")),
                    argument: Some(TypedValue::new("ex/t", b"2".to_vec())),
                },
            ],
            delayed_invocations: vec![
                DelayedInvocation {
                    delay_in_ms: 1500,
                    target: Some(pb_addr("ex", "a", "1")),
                    argument: Some(TypedValue::new("ex/t", b"d".to_vec())),
                    is_cancellation_request: false,
                    cancellation_token: "tok".into(),
                },
                DelayedInvocation {
                    is_cancellation_request: true,
                    cancellation_token: "tok".into(),
                    ..Default::default()
                },
            ],
            outgoing_egresses: vec![PbEgress {
                egress_namespace: "ex".into(),
                egress_type: "out".into(),
                argument: Some(TypedValue::new("ex/t", b"e".to_vec())),
            }],
        });
        let RemoteOutcome::Complete(effects) =
            parse_response(&body, &addr("ex/greeter", "a"), &[seen_spec()]).unwrap()
        else {
            panic!("incomplete");
        };
        assert_eq!(effects.outgoing.len(), 2);
        assert_eq!(effects.outgoing[0].0, addr("ex/a", "1"));
        assert_eq!(effects.outgoing[1].0, addr("ex/b", "2"));
        assert_eq!(
            effects.delayed,
            vec![
                DelayedEffect {
                    delay: Duration::from_millis(1500),
                    target: Some(addr("ex/a", "1")),
                    argument: Some(TypedValue::new("ex/t", b"d".to_vec())),
                    cancellation_token: Some("tok".into()),
                    is_cancellation: false,
                },
                DelayedEffect {
                    delay: Duration::ZERO,
                    target: None,
                    argument: None,
                    cancellation_token: Some("tok".into()),
                    is_cancellation: true,
                },
            ]
        );
        assert_eq!(
            effects.egress,
            vec![EgressMessage {
                egress: tn("ex/out"),
                value: TypedValue::new("ex/t", b"e".to_vec())
            }]
        );
        assert_eq!(effects.state.len(), 2);
        assert_eq!(effects.state[0].name, "seen");
        assert_eq!(
            effects.state[0].value.as_ref().map(|v| v.value.clone()),
            Some(vec![0x0d, 8, 0, 0, 0])
        );
        assert_eq!(effects.state[1].value, None);
    }

    #[test]
    fn modify_with_wrong_typename_is_a_type_mismatch() {
        let body = result(InvocationResponse {
            state_mutations: vec![PersistedValueMutation {
                mutation_type: 1,
                state_name: "seen".into(),
                state_value: Some(TypedValue::new(
                    "io.statefun.types/string",
                    b"\x0a\x01x".to_vec(),
                )),
            }],
            ..Default::default()
        });
        let err = parse_response(&body, &addr("ex/greeter", "alice"), &[seen_spec()]).unwrap_err();
        assert!(matches!(err, ProtocolError::TypeMismatch { .. }));
        let text = err.to_string();
        for needle in [
            "ex/greeter",
            "ex/greeter/alice",
            "`seen`",
            "io.statefun.types/string",
            "io.statefun.types/int",
        ] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }

    #[test]
    fn mutation_of_unregistered_state_is_an_error() {
        let body = result(InvocationResponse {
            state_mutations: vec![PersistedValueMutation {
                mutation_type: 0,
                state_name: "other".into(),
                state_value: None,
            }],
            ..Default::default()
        });
        let err = parse_response(&body, &addr("ex/greeter", "a"), &[seen_spec()]).unwrap_err();
        assert!(
            matches!(err, ProtocolError::UnregisteredState { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("registered: [seen]"), "{err}");
    }

    #[test]
    fn garbage_body_names_function_and_address() {
        let err =
            parse_response(b"<html>oops</html>", &addr("ex/greeter", "bob"), &[]).unwrap_err();
        assert!(matches!(err, ProtocolError::Decode { .. }));
        let text = err.to_string();
        assert!(text.contains("ex/greeter/bob"), "{text}");
        assert!(text.contains("<html>"), "{text}");
    }

    #[test]
    fn empty_body_is_an_empty_response() {
        let err = parse_response(b"", &addr("ex/greeter", "bob"), &[]).unwrap_err();
        assert!(matches!(err, ProtocolError::EmptyResponse { .. }), "{err}");
    }

    #[test]
    fn malformed_effects_are_rejected() {
        let target = addr("ex/greeter", "a");
        let cases = vec![
            InvocationResponse {
                outgoing_messages: vec![Invocation {
                    target: Some(pb_addr("", "x", "1")),
                    argument: Some(TypedValue::new("ex/t", vec![])),
                }],
                ..Default::default()
            },
            InvocationResponse {
                outgoing_messages: vec![Invocation {
                    target: Some(pb_addr("ex", "x", "1")),
                    argument: None,
                }],
                ..Default::default()
            },
            InvocationResponse {
                delayed_invocations: vec![DelayedInvocation {
                    delay_in_ms: -1,
                    target: Some(pb_addr("ex", "x", "1")),
                    argument: Some(TypedValue::new("ex/t", vec![])),
                    ..Default::default()
                }],
                ..Default::default()
            },
            InvocationResponse {
                delayed_invocations: vec![DelayedInvocation {
                    is_cancellation_request: true,
                    ..Default::default()
                }],
                ..Default::default()
            },
            InvocationResponse {
                outgoing_egresses: vec![PbEgress {
                    egress_namespace: "".into(),
                    egress_type: "out".into(),
                    argument: Some(TypedValue::new("ex/t", vec![])),
                }],
                ..Default::default()
            },
            InvocationResponse {
                state_mutations: vec![PersistedValueMutation {
                    mutation_type: 7,
                    state_name: "seen".into(),
                    state_value: None,
                }],
                ..Default::default()
            },
            InvocationResponse {
                state_mutations: vec![PersistedValueMutation {
                    mutation_type: 1,
                    state_name: "seen".into(),
                    state_value: None,
                }],
                ..Default::default()
            },
        ];
        for case in cases {
            let err = parse_response(&result(case.clone()), &target, &[seen_spec()]).unwrap_err();
            assert!(
                matches!(err, ProtocolError::Invalid { .. }),
                "{case:?}: {err}"
            );
            assert!(err.to_string().contains("ex/greeter/a"), "{err}");
        }
    }
}
