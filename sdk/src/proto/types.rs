//! The wrapper messages of StateFun's `types.proto` (package
//! `io.statefun.sdk.types`), the wire encodings of the `io.statefun.types/*`
//! primitives.
//!
//! Prefer the codecs in [`crate::types`]; these are the raw messages.

/// `io.statefun.types/bool`: `message BooleanWrapper { bool value = 1; }`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BooleanWrapper {
    /// The value.
    #[prost(bool, tag = "1")]
    pub value: bool,
}

/// `io.statefun.types/int`: `message IntWrapper { sfixed32 value = 1; }`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct IntWrapper {
    /// The value.
    #[prost(sfixed32, tag = "1")]
    pub value: i32,
}

/// `io.statefun.types/float`: `message FloatWrapper { float value = 1; }`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct FloatWrapper {
    /// The value.
    #[prost(float, tag = "1")]
    pub value: f32,
}

/// `io.statefun.types/long`: `message LongWrapper { sfixed64 value = 1; }`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct LongWrapper {
    /// The value.
    #[prost(sfixed64, tag = "1")]
    pub value: i64,
}

/// `io.statefun.types/double`: `message DoubleWrapper { double value = 1; }`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct DoubleWrapper {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
}

/// `io.statefun.types/string`: `message StringWrapper { string value = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringWrapper {
    /// The value.
    #[prost(string, tag = "1")]
    pub value: String,
}
