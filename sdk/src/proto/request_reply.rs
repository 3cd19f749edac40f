//! StateFun's request-reply protocol (`request-reply.proto`, package
//! `io.statefun.sdk.reqreply`): what the runtime POSTs to a remote function
//! ([`ToFunction`]) and what the function answers ([`FromFunction`]).
//!
//! Transcribed field by field from the descriptor in the official Python SDK.
//! The protocol's `TypedValue` is the crate's [`TypedValue`] (same fields and
//! numbers).
//!
//! ```
//! use prost::Message as _;
//! use statefun_sdk::proto::request_reply::{to_function, Address, ToFunction};
//!
//! let request = ToFunction {
//!     request: Some(to_function::Request::Invocation(to_function::InvocationBatchRequest {
//!         target: Some(Address { namespace: "example".into(), r#type: "greeter".into(), id: "alice".into() }),
//!         state: vec![],
//!         invocations: vec![],
//!     })),
//! };
//! let bytes = request.encode_to_vec();
//! assert_eq!(ToFunction::decode(bytes.as_slice()).unwrap(), request);
//! ```

use crate::{SdkError, TypeName, TypedValue};

/// A function address on the wire: `namespace`, `type` and `id` (fields 1–3).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Address {
    /// The namespace of the function type.
    #[prost(string, tag = "1")]
    pub namespace: String,
    /// The name of the function type.
    #[prost(string, tag = "2")]
    pub r#type: String,
    /// The instance id.
    #[prost(string, tag = "3")]
    pub id: String,
}

impl From<&crate::Address> for Address {
    fn from(address: &crate::Address) -> Self {
        Address {
            namespace: address.function_type.namespace().to_string(),
            r#type: address.function_type.name().to_string(),
            id: address.id.to_string(),
        }
    }
}

impl TryFrom<&Address> for crate::Address {
    type Error = SdkError;

    /// Fails with `InvalidTypeName` when namespace or type is empty or invalid.
    fn try_from(address: &Address) -> Result<Self, SdkError> {
        Ok(crate::Address::new(
            TypeName::new(&address.namespace, &address.r#type)?,
            address.id.clone(),
        ))
    }
}

/// A request from the runtime to a remote function.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ToFunction {
    /// The request (`oneof request`).
    #[prost(oneof = "to_function::Request", tags = "100")]
    pub request: Option<to_function::Request>,
}

/// Messages nested in [`ToFunction`].
pub mod to_function {
    use super::{Address, TypedValue};

    /// A state value sent with a request (`PersistedValue`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PersistedValue {
        /// The state name, as in the function's value spec.
        #[prost(string, tag = "1")]
        pub state_name: String,
        /// The value; `has_value == false` when the state is empty.
        #[prost(message, optional, tag = "2")]
        pub state_value: Option<TypedValue>,
    }

    /// One message for the target function.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Invocation {
        /// The sender; absent when the message came from an ingress.
        #[prost(message, optional, tag = "1")]
        pub caller: Option<Address>,
        /// The message.
        #[prost(message, optional, tag = "2")]
        pub argument: Option<TypedValue>,
    }

    /// A batch of messages for one address, with its state.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InvocationBatchRequest {
        /// The function instance invoked.
        #[prost(message, optional, tag = "1")]
        pub target: Option<Address>,
        /// The state values the function declared.
        #[prost(message, repeated, tag = "2")]
        pub state: Vec<PersistedValue>,
        /// The messages, in order.
        #[prost(message, repeated, tag = "3")]
        pub invocations: Vec<Invocation>,
    }

    /// `oneof request` of [`super::ToFunction`].
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Request {
        /// A batch invocation (field 100).
        #[prost(message, tag = "100")]
        Invocation(InvocationBatchRequest),
    }
}

/// A remote function's answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FromFunction {
    /// The response (`oneof response`).
    #[prost(oneof = "from_function::Response", tags = "100, 101")]
    pub response: Option<from_function::Response>,
}

/// Messages and enums nested in [`FromFunction`].
pub mod from_function {
    use super::{Address, TypedValue};

    /// A change to one state value.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PersistedValueMutation {
        /// Delete or modify; read it with `mutation_type()`.
        #[prost(enumeration = "persisted_value_mutation::MutationType", tag = "1")]
        pub mutation_type: i32,
        /// The state name.
        #[prost(string, tag = "2")]
        pub state_name: String,
        /// The new value (for `MODIFY`).
        #[prost(message, optional, tag = "3")]
        pub state_value: Option<TypedValue>,
    }

    /// Enums nested in [`PersistedValueMutation`].
    pub mod persisted_value_mutation {
        /// `MutationType { DELETE = 0; MODIFY = 1; }`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum MutationType {
            /// Remove the value.
            Delete = 0,
            /// Replace the value.
            Modify = 1,
        }
    }

    /// A message sent by the function.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Invocation {
        /// The receiver.
        #[prost(message, optional, tag = "1")]
        pub target: Option<Address>,
        /// The message.
        #[prost(message, optional, tag = "2")]
        pub argument: Option<TypedValue>,
    }

    /// A delayed message, or the cancellation of one.
    ///
    /// Fields are declared in field-number order (the `.proto` lists 10 and 11
    /// first) so that prost writes the same bytes as protoc-generated code.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DelayedInvocation {
        /// The delay in milliseconds.
        #[prost(int64, tag = "1")]
        pub delay_in_ms: i64,
        /// The receiver.
        #[prost(message, optional, tag = "2")]
        pub target: Option<Address>,
        /// The message.
        #[prost(message, optional, tag = "3")]
        pub argument: Option<TypedValue>,
        /// True when this only cancels the delayed message with `cancellation_token`.
        #[prost(bool, tag = "10")]
        pub is_cancellation_request: bool,
        /// The cancellation token; empty means none.
        #[prost(string, tag = "11")]
        pub cancellation_token: String,
    }

    /// A message for an egress.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EgressMessage {
        /// The namespace of the egress id.
        #[prost(string, tag = "1")]
        pub egress_namespace: String,
        /// The name of the egress id.
        #[prost(string, tag = "2")]
        pub egress_type: String,
        /// The record.
        #[prost(message, optional, tag = "3")]
        pub argument: Option<TypedValue>,
    }

    /// The effects of a successful batch invocation.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InvocationResponse {
        /// State changes, in order.
        #[prost(message, repeated, tag = "1")]
        pub state_mutations: Vec<PersistedValueMutation>,
        /// Messages to other functions.
        #[prost(message, repeated, tag = "2")]
        pub outgoing_messages: Vec<Invocation>,
        /// Delayed messages and cancellations.
        #[prost(message, repeated, tag = "3")]
        pub delayed_invocations: Vec<DelayedInvocation>,
        /// Egress messages.
        #[prost(message, repeated, tag = "4")]
        pub outgoing_egresses: Vec<EgressMessage>,
    }

    /// How a state value expires.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct ExpirationSpec {
        /// The mode; read it with `mode()`.
        #[prost(enumeration = "expiration_spec::ExpireMode", tag = "1")]
        pub mode: i32,
        /// The time to live in milliseconds.
        #[prost(int64, tag = "2")]
        pub expire_after_millis: i64,
    }

    /// Enums nested in [`ExpirationSpec`].
    pub mod expiration_spec {
        /// `ExpireMode { NONE = 0; AFTER_WRITE = 1; AFTER_INVOKE = 2; }`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum ExpireMode {
            /// Never expires.
            None = 0,
            /// Expires a while after the last write.
            AfterWrite = 1,
            /// Expires a while after the last read or write (invocation).
            AfterInvoke = 2,
        }
    }

    /// A state value the function declares, with its type and expiration.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PersistedValueSpec {
        /// The state name.
        #[prost(string, tag = "1")]
        pub state_name: String,
        /// The expiration.
        #[prost(message, optional, tag = "2")]
        pub expiration_spec: Option<ExpirationSpec>,
        /// The value's type name.
        #[prost(string, tag = "3")]
        pub type_typename: String,
    }

    /// The function's answer when the request lacked state values it declares:
    /// the runtime registers them and retries.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IncompleteInvocationContext {
        /// The missing state values.
        #[prost(message, repeated, tag = "1")]
        pub missing_values: Vec<PersistedValueSpec>,
    }

    /// `oneof response` of [`super::FromFunction`].
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Response {
        /// The effects of the invocation (field 100).
        #[prost(message, tag = "100")]
        InvocationResult(InvocationResponse),
        /// Missing state values (field 101).
        #[prost(message, tag = "101")]
        IncompleteInvocationContext(IncompleteInvocationContext),
    }
}

#[cfg(test)]
mod tests {
    //! Byte vectors produced by the official Python SDK's generated classes
    //! (protobuf 3.20.3, `statefun/request_reply_pb2.py`).

    use prost::Message as _;

    use super::from_function::{
        expiration_spec::ExpireMode, persisted_value_mutation::MutationType, DelayedInvocation,
        EgressMessage, ExpirationSpec, IncompleteInvocationContext, Invocation, InvocationResponse,
        PersistedValueMutation, PersistedValueSpec,
    };
    use super::to_function::{InvocationBatchRequest, PersistedValue};
    use super::*;

    fn addr(namespace: &str, ty: &str, id: &str) -> Address {
        Address {
            namespace: namespace.into(),
            r#type: ty.into(),
            id: id.into(),
        }
    }

    fn tv(typename: &str, value: &[u8]) -> Option<TypedValue> {
        Some(TypedValue::new(typename, value.to_vec()))
    }

    const TO_FUNCTION: &[u8] = &[
        0xa2, 0x06, 0xbb, 0x01, 0x0a, 0x14, 0x0a, 0x02, 0x65, 0x78, 0x12, 0x07, 0x67, 0x72, 0x65,
        0x65, 0x74, 0x65, 0x72, 0x1a, 0x05, 0x61, 0x6c, 0x69, 0x63, 0x65, 0x12, 0x28, 0x0a, 0x04,
        0x73, 0x65, 0x65, 0x6e, 0x12, 0x20, 0x0a, 0x15, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61, 0x74,
        0x65, 0x66, 0x75, 0x6e, 0x2e, 0x74, 0x79, 0x70, 0x65, 0x73, 0x2f, 0x69, 0x6e, 0x74, 0x10,
        0x01, 0x1a, 0x05, 0x0d, 0x07, 0x00, 0x00, 0x00, 0x12, 0x23, 0x0a, 0x05, 0x65, 0x6d, 0x70,
        0x74, 0x79, 0x12, 0x1a, 0x0a, 0x18, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61, 0x74, 0x65, 0x66,
        0x75, 0x6e, 0x2e, 0x74, 0x79, 0x70, 0x65, 0x73, 0x2f, 0x73, 0x74, 0x72, 0x69, 0x6e, 0x67,
        0x1a, 0x36, 0x0a, 0x10, 0x0a, 0x02, 0x65, 0x78, 0x12, 0x05, 0x6f, 0x74, 0x68, 0x65, 0x72,
        0x1a, 0x03, 0x62, 0x6f, 0x62, 0x12, 0x22, 0x0a, 0x18, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61,
        0x74, 0x65, 0x66, 0x75, 0x6e, 0x2e, 0x74, 0x79, 0x70, 0x65, 0x73, 0x2f, 0x73, 0x74, 0x72,
        0x69, 0x6e, 0x67, 0x10, 0x01, 0x1a, 0x04, 0x0a, 0x02, 0x68, 0x69, 0x1a, 0x1c, 0x12, 0x1a,
        0x0a, 0x16, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61, 0x74, 0x65, 0x66, 0x75, 0x6e, 0x2e, 0x74,
        0x79, 0x70, 0x65, 0x73, 0x2f, 0x62, 0x6f, 0x6f, 0x6c, 0x10, 0x01,
    ];
    const FROM_FUNCTION: &[u8] = &[
        0xa2, 0x06, 0x85, 0x02, 0x0a, 0x2a, 0x08, 0x01, 0x12, 0x04, 0x73, 0x65, 0x65, 0x6e, 0x1a,
        0x20, 0x0a, 0x15, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61, 0x74, 0x65, 0x66, 0x75, 0x6e, 0x2e,
        0x74, 0x79, 0x70, 0x65, 0x73, 0x2f, 0x69, 0x6e, 0x74, 0x10, 0x01, 0x1a, 0x05, 0x0d, 0x08,
        0x00, 0x00, 0x00, 0x0a, 0x06, 0x12, 0x04, 0x67, 0x6f, 0x6e, 0x65, 0x12, 0x36, 0x0a, 0x10,
        0x0a, 0x02, 0x65, 0x78, 0x12, 0x05, 0x6f, 0x74, 0x68, 0x65, 0x72, 0x1a, 0x03, 0x62, 0x6f,
        0x62, 0x12, 0x22, 0x0a, 0x18, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61, 0x74, 0x65, 0x66, 0x75,
        0x6e, 0x2e, 0x74, 0x79, 0x70, 0x65, 0x73, 0x2f, 0x73, 0x74, 0x72, 0x69, 0x6e, 0x67, 0x10,
        0x01, 0x1a, 0x04, 0x0a, 0x02, 0x79, 0x6f, 0x1a, 0x3a, 0x08, 0xdc, 0x0b, 0x12, 0x14, 0x0a,
        0x02, 0x65, 0x78, 0x12, 0x07, 0x67, 0x72, 0x65, 0x65, 0x74, 0x65, 0x72, 0x1a, 0x05, 0x61,
        0x6c, 0x69, 0x63, 0x65, 0x1a, 0x1a, 0x0a, 0x16, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61, 0x74,
        0x65, 0x66, 0x75, 0x6e, 0x2e, 0x74, 0x79, 0x70, 0x65, 0x73, 0x2f, 0x6c, 0x6f, 0x6e, 0x67,
        0x10, 0x01, 0x5a, 0x03, 0x74, 0x6f, 0x6b, 0x1a, 0x07, 0x50, 0x01, 0x5a, 0x03, 0x6f, 0x6c,
        0x64, 0x22, 0x52, 0x0a, 0x02, 0x65, 0x78, 0x12, 0x03, 0x6f, 0x75, 0x74, 0x1a, 0x47, 0x0a,
        0x3e, 0x74, 0x79, 0x70, 0x65, 0x2e, 0x67, 0x6f, 0x6f, 0x67, 0x6c, 0x65, 0x61, 0x70, 0x69,
        0x73, 0x2e, 0x63, 0x6f, 0x6d, 0x2f, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61, 0x74, 0x65, 0x66,
        0x75, 0x6e, 0x2e, 0x73, 0x64, 0x6b, 0x2e, 0x65, 0x67, 0x72, 0x65, 0x73, 0x73, 0x2e, 0x4b,
        0x61, 0x66, 0x6b, 0x61, 0x50, 0x72, 0x6f, 0x64, 0x75, 0x63, 0x65, 0x72, 0x52, 0x65, 0x63,
        0x6f, 0x72, 0x64, 0x10, 0x01, 0x1a, 0x03, 0x1a, 0x01, 0x74,
    ];
    const INCOMPLETE: &[u8] = &[
        0xaa, 0x06, 0x4b, 0x0a, 0x25, 0x0a, 0x04, 0x73, 0x65, 0x65, 0x6e, 0x12, 0x06, 0x08, 0x02,
        0x10, 0xe0, 0xd4, 0x03, 0x1a, 0x15, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61, 0x74, 0x65, 0x66,
        0x75, 0x6e, 0x2e, 0x74, 0x79, 0x70, 0x65, 0x73, 0x2f, 0x69, 0x6e, 0x74, 0x0a, 0x22, 0x0a,
        0x04, 0x6e, 0x61, 0x6d, 0x65, 0x12, 0x00, 0x1a, 0x18, 0x69, 0x6f, 0x2e, 0x73, 0x74, 0x61,
        0x74, 0x65, 0x66, 0x75, 0x6e, 0x2e, 0x74, 0x79, 0x70, 0x65, 0x73, 0x2f, 0x73, 0x74, 0x72,
        0x69, 0x6e, 0x67,
    ];

    #[test]
    fn to_function_matches_python() {
        let request = ToFunction {
            request: Some(to_function::Request::Invocation(InvocationBatchRequest {
                target: Some(addr("ex", "greeter", "alice")),
                state: vec![
                    PersistedValue {
                        state_name: "seen".into(),
                        state_value: tv("io.statefun.types/int", &[0x0d, 7, 0, 0, 0]),
                    },
                    PersistedValue {
                        state_name: "empty".into(),
                        state_value: Some(TypedValue {
                            typename: "io.statefun.types/string".into(),
                            has_value: false,
                            value: vec![],
                        }),
                    },
                ],
                invocations: vec![
                    to_function::Invocation {
                        caller: Some(addr("ex", "other", "bob")),
                        argument: tv("io.statefun.types/string", b"\x0a\x02hi"),
                    },
                    to_function::Invocation {
                        caller: None,
                        argument: tv("io.statefun.types/bool", b""),
                    },
                ],
            })),
        };
        assert_eq!(request.encode_to_vec(), TO_FUNCTION);
        assert_eq!(ToFunction::decode(TO_FUNCTION).unwrap(), request);
    }

    #[test]
    fn from_function_matches_python() {
        let response = FromFunction {
            response: Some(from_function::Response::InvocationResult(
                InvocationResponse {
                    state_mutations: vec![
                        PersistedValueMutation {
                            mutation_type: MutationType::Modify as i32,
                            state_name: "seen".into(),
                            state_value: tv("io.statefun.types/int", &[0x0d, 8, 0, 0, 0]),
                        },
                        PersistedValueMutation {
                            mutation_type: MutationType::Delete as i32,
                            state_name: "gone".into(),
                            state_value: None,
                        },
                    ],
                    outgoing_messages: vec![Invocation {
                        target: Some(addr("ex", "other", "bob")),
                        argument: tv("io.statefun.types/string", b"\x0a\x02yo"),
                    }],
                    delayed_invocations: vec![
                        DelayedInvocation {
                            delay_in_ms: 1500,
                            target: Some(addr("ex", "greeter", "alice")),
                            argument: tv("io.statefun.types/long", b""),
                            is_cancellation_request: false,
                            cancellation_token: "tok".into(),
                        },
                        DelayedInvocation {
                            is_cancellation_request: true,
                            cancellation_token: "old".into(),
                            ..Default::default()
                        },
                    ],
                    outgoing_egresses: vec![EgressMessage {
                        egress_namespace: "ex".into(),
                        egress_type: "out".into(),
                        argument: tv(
                            "type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord",
                            b"\x1a\x01t",
                        ),
                    }],
                },
            )),
        };
        assert_eq!(response.encode_to_vec(), FROM_FUNCTION);
        let decoded = FromFunction::decode(FROM_FUNCTION).unwrap();
        assert_eq!(decoded, response);
        let Some(from_function::Response::InvocationResult(result)) = decoded.response else {
            panic!("expected an invocation result");
        };
        assert_eq!(
            result.state_mutations[1].mutation_type(),
            MutationType::Delete
        );
    }

    #[test]
    fn incomplete_context_matches_python() {
        let response = FromFunction {
            response: Some(from_function::Response::IncompleteInvocationContext(
                IncompleteInvocationContext {
                    missing_values: vec![
                        PersistedValueSpec {
                            state_name: "seen".into(),
                            expiration_spec: Some(ExpirationSpec {
                                mode: ExpireMode::AfterInvoke as i32,
                                expire_after_millis: 60_000,
                            }),
                            type_typename: "io.statefun.types/int".into(),
                        },
                        PersistedValueSpec {
                            state_name: "name".into(),
                            expiration_spec: Some(ExpirationSpec::default()),
                            type_typename: "io.statefun.types/string".into(),
                        },
                    ],
                },
            )),
        };
        assert_eq!(response.encode_to_vec(), INCOMPLETE);
        assert_eq!(FromFunction::decode(INCOMPLETE).unwrap(), response);
    }

    #[test]
    fn address_conversions() {
        let a = crate::Address::new(crate::TypeName::parse("ex/greeter").unwrap(), "alice");
        let wire = Address::from(&a);
        assert_eq!(wire, addr("ex", "greeter", "alice"));
        assert_eq!(crate::Address::try_from(&wire).unwrap(), a);
        assert!(crate::Address::try_from(&addr("", "greeter", "x")).is_err());
    }
}
