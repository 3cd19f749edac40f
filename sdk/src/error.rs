//! Errors of the SDK.

/// What can go wrong in SDK calls: bad names, values that do not decode, state misuse.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SdkError {
    /// A type name that is not `<namespace>/<name>`.
    #[error("invalid type name: {0}")]
    InvalidTypeName(String),
    /// Bytes that do not decode as the expected type.
    #[error("cannot decode a value of type `{typename}`: {reason}")]
    Decode {
        /// The type that was expected.
        typename: String,
        /// Why decoding failed.
        reason: String,
    },
    /// A value that its type's codec could not encode (only JSON types can fail).
    #[error("cannot encode a value of type `{typename}`: {reason}")]
    Encode {
        /// The type of the value.
        typename: String,
        /// Why encoding failed.
        reason: String,
    },
    /// A message or state value whose type is not the one asked for.
    #[error("type mismatch: expected `{expected}`, found `{found}`")]
    TypeMismatch {
        /// The type asked for.
        expected: String,
        /// The type present.
        found: String,
    },
    /// A state access for a value spec the function did not register.
    #[error("state value `{0}` is not registered for this function type; register its ValueSpec")]
    UnknownState(String),
    /// A function spec or value spec that is not valid (bad or duplicate state names, ...).
    #[error("{0}")]
    InvalidSpec(String),
    /// A builder was missing a required field.
    #[error("{0}")]
    Incomplete(String),
    /// A delayed message was sent with a cancellation token that is still in use.
    #[error("cancellation token `{0}` is already in use by a pending delayed message")]
    TokenInUse(String),
}
