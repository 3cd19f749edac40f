//! Types and their codecs.
//!
//! A [`Type`] pairs a StateFun type name with a codec. The six primitives use
//! StateFun's exact wire formats (the wrapper messages of `types.proto`), so
//! values exchanged with the official SDKs decode on both sides:
//!
//! | Rust type | type name | wire format |
//! | --- | --- | --- |
//! | [`StringType`] (`String`) | `io.statefun.types/string` | `StringWrapper { string value = 1; }` |
//! | [`IntType`] (`i32`) | `io.statefun.types/int` | `IntWrapper { sfixed32 value = 1; }` |
//! | [`LongType`] (`i64`) | `io.statefun.types/long` | `LongWrapper { sfixed64 value = 1; }` |
//! | [`FloatType`] (`f32`) | `io.statefun.types/float` | `FloatWrapper { float value = 1; }` |
//! | [`DoubleType`] (`f64`) | `io.statefun.types/double` | `DoubleWrapper { double value = 1; }` |
//! | [`BoolType`] (`bool`) | `io.statefun.types/bool` | `BooleanWrapper { bool value = 1; }` |
//!
//! As in proto3, a default value (`0`, `""`, `false`) encodes to zero bytes and
//! empty bytes decode to the default. Negative zero floats are written (as
//! protoc's C++ and Java code does), so their sign survives a round trip.
//!
//! User types are [`JsonType`] (serde_json), [`ProtobufType`] (prost) or
//! [`RawType`] (bytes as they are).
//!
//! ```
//! use statefun_sdk::types::{self, Type};
//! let bytes = types::STRING.encode(&"hello".to_string());
//! assert_eq!(bytes, b"\x0a\x05hello");
//! assert_eq!(types::STRING.decode(&bytes).unwrap(), "hello");
//! assert_eq!(types::INT.encode(&7), [0x0d, 7, 0, 0, 0]);
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

use prost::Message as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::types::{
    BooleanWrapper, DoubleWrapper, FloatWrapper, IntWrapper, LongWrapper, StringWrapper,
};
use crate::{SdkError, TypeName};

/// A StateFun type: a type name and a codec for values of `Self::Value`.
pub trait Type: Send + Sync + 'static {
    /// The Rust value this type encodes.
    type Value;

    /// The StateFun type name, carried in every `TypedValue` of this type.
    fn type_name(&self) -> &TypeName;

    /// Encodes a value to its wire bytes.
    ///
    /// Infallible for every type of this crate except [`JsonType`], whose
    /// `encode` panics when the value's `Serialize` implementation fails; the
    /// SDK itself calls [`Type::try_encode`].
    fn encode(&self, value: &Self::Value) -> Vec<u8>;

    /// Decodes wire bytes; `SdkError::Decode` when they are not a valid value.
    fn decode(&self, bytes: &[u8]) -> Result<Self::Value, SdkError>;

    /// Encodes a value, reporting a failure instead of panicking.
    ///
    /// The default calls [`Type::encode`]; override it for codecs that can fail.
    fn try_encode(&self, value: &Self::Value) -> Result<Vec<u8>, SdkError> {
        Ok(self.encode(value))
    }

    /// Encodes a value by appending to `out`, which the caller may reuse
    /// across values (state writes do: no allocation per write).
    ///
    /// The default appends what [`Type::try_encode`] returns; the primitive
    /// types write directly.
    fn try_encode_into(&self, value: &Self::Value, out: &mut Vec<u8>) -> Result<(), SdkError> {
        let bytes = self.try_encode(value)?;
        if out.is_empty() {
            *out = bytes;
        } else {
            out.extend_from_slice(&bytes);
        }
        Ok(())
    }
}

/// The type name of [`StringType`].
pub const STRING_TYPENAME: &str = "io.statefun.types/string";
/// The type name of [`IntType`].
pub const INT_TYPENAME: &str = "io.statefun.types/int";
/// The type name of [`LongType`].
pub const LONG_TYPENAME: &str = "io.statefun.types/long";
/// The type name of [`FloatType`].
pub const FLOAT_TYPENAME: &str = "io.statefun.types/float";
/// The type name of [`DoubleType`].
pub const DOUBLE_TYPENAME: &str = "io.statefun.types/double";
/// The type name of [`BoolType`].
pub const BOOL_TYPENAME: &str = "io.statefun.types/bool";

/// The type names of the six primitives.
pub const PRIMITIVE_TYPENAMES: [&str; 6] = [
    STRING_TYPENAME,
    INT_TYPENAME,
    LONG_TYPENAME,
    FLOAT_TYPENAME,
    DOUBLE_TYPENAME,
    BOOL_TYPENAME,
];

fn decode_error(typename: &str, error: prost::DecodeError) -> SdkError {
    SdkError::Decode {
        typename: typename.to_string(),
        reason: error.to_string(),
    }
}

macro_rules! primitive_type {
    ($(#[$doc:meta])* $ty:ident, $const_name:ident, $value:ty, $typename:ident, $wrapper:ident, $encode:expr, $fast_decode:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $ty;

        impl Type for $ty {
            type Value = $value;

            fn type_name(&self) -> &TypeName {
                static NAME: OnceLock<TypeName> = OnceLock::new();
                NAME.get_or_init(|| TypeName::parse($typename).expect("a valid built-in type name"))
            }

            fn encode(&self, value: &$value) -> Vec<u8> {
                let encode: fn(&$value, &mut Vec<u8>) = $encode;
                // Every numeric wrapper fits in 16 bytes (key + 8); strings
                // reserve their exact size. No regrowth on the hot path.
                let mut bytes = Vec::with_capacity(16);
                encode(value, &mut bytes);
                bytes
            }

            fn try_encode_into(&self, value: &$value, out: &mut Vec<u8>) -> Result<(), SdkError> {
                let encode: fn(&$value, &mut Vec<u8>) = $encode;
                encode(value, out);
                Ok(())
            }

            fn decode(&self, bytes: &[u8]) -> Result<$value, SdkError> {
                // The usual encodings (nothing for the default value, or the one
                // field with its wire type) directly; anything else (repeated or
                // unknown fields, other valid encodings) through prost, which
                // gives the same value for the usual ones.
                let fast: fn(&[u8]) -> Option<$value> = $fast_decode;
                if let Some(value) = fast(bytes) {
                    return Ok(value);
                }
                $wrapper::decode(bytes)
                    .map(|w| w.value)
                    .map_err(|e| decode_error($typename, e))
            }
        }

        #[doc = concat!("The [`", stringify!($ty), "`] codec as a constant.")]
        pub const $const_name: $ty = $ty;
    };
}

/// Appends field 1 of a wrapper message with a fixed-width value: its key (`0x0d` for
/// 32 bits, `0x09` for 64) and the little-endian bytes — what prost writes, without
/// its varint encoder (a call per value).
#[inline(always)]
fn fixed_field(key: u8, le: &[u8], buf: &mut Vec<u8>) {
    buf.reserve(1 + le.len());
    buf.push(key);
    buf.extend_from_slice(le);
}

primitive_type!(
    /// `io.statefun.types/string`: a `String` as a `StringWrapper`.
    StringType, STRING, String, STRING_TYPENAME, StringWrapper,
    |v, buf| {
        if !v.is_empty() {
            buf.reserve(1 + prost::encoding::encoded_len_varint(v.len() as u64) + v.len());
            prost::encoding::string::encode(1, v, buf);
        }
    },
    |_| None
);
primitive_type!(
    /// `io.statefun.types/int`: an `i32` as an `IntWrapper` (sfixed32).
    IntType, INT, i32, INT_TYPENAME, IntWrapper,
    |v, buf| if *v != 0 { fixed_field(0x0d, &v.to_le_bytes(), buf) },
    |b| match b {
        [] => Some(0),
        [0x0d, rest @ ..] => Some(i32::from_le_bytes(rest.try_into().ok()?)),
        _ => None,
    }
);
primitive_type!(
    /// `io.statefun.types/long`: an `i64` as a `LongWrapper` (sfixed64).
    LongType, LONG, i64, LONG_TYPENAME, LongWrapper,
    |v, buf| if *v != 0 { fixed_field(0x09, &v.to_le_bytes(), buf) },
    |b| match b {
        [] => Some(0),
        [0x09, rest @ ..] => Some(i64::from_le_bytes(rest.try_into().ok()?)),
        _ => None,
    }
);
primitive_type!(
    /// `io.statefun.types/float`: an `f32` as a `FloatWrapper`.
    FloatType, FLOAT, f32, FLOAT_TYPENAME, FloatWrapper,
    |v, buf| if v.to_bits() != 0 { fixed_field(0x0d, &v.to_le_bytes(), buf) },
    |b| match b {
        [] => Some(0.0),
        [0x0d, rest @ ..] => Some(f32::from_le_bytes(rest.try_into().ok()?)),
        _ => None,
    }
);
primitive_type!(
    /// `io.statefun.types/double`: an `f64` as a `DoubleWrapper`.
    DoubleType, DOUBLE, f64, DOUBLE_TYPENAME, DoubleWrapper,
    |v, buf| if v.to_bits() != 0 { fixed_field(0x09, &v.to_le_bytes(), buf) },
    |b| match b {
        [] => Some(0.0),
        [0x09, rest @ ..] => Some(f64::from_le_bytes(rest.try_into().ok()?)),
        _ => None,
    }
);
primitive_type!(
    /// `io.statefun.types/bool`: a `bool` as a `BooleanWrapper`.
    BoolType, BOOL, bool, BOOL_TYPENAME, BooleanWrapper,
    |v, buf| if *v { prost::encoding::bool::encode(1, v, buf) },
    |b| match b {
        [] => Some(false),
        [0x08, v @ (0 | 1)] => Some(*v == 1),
        _ => None,
    }
);

/// A user type encoded as JSON with serde_json.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use statefun_sdk::{JsonType, Type, TypeName};
///
/// #[derive(Serialize, Deserialize, PartialEq, Debug)]
/// struct Order { id: u64, item: String }
///
/// let ty = JsonType::<Order>::new(TypeName::parse("com.example/Order").unwrap());
/// let order = Order { id: 1, item: "book".into() };
/// let bytes = ty.encode(&order);
/// assert_eq!(bytes, br#"{"id":1,"item":"book"}"#);
/// assert_eq!(ty.decode(&bytes).unwrap(), order);
/// ```
pub struct JsonType<T> {
    name: TypeName,
    _value: PhantomData<fn() -> T>,
}

impl<T> JsonType<T> {
    /// A JSON type with the given type name.
    pub fn new(name: TypeName) -> Self {
        JsonType {
            name,
            _value: PhantomData,
        }
    }
}

impl<T> Clone for JsonType<T> {
    fn clone(&self) -> Self {
        JsonType::new(self.name.clone())
    }
}

impl<T> fmt::Debug for JsonType<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonType({})", self.name)
    }
}

impl<T> Type for JsonType<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Value = T;

    fn type_name(&self) -> &TypeName {
        &self.name
    }

    /// # Panics
    ///
    /// When `T`'s `Serialize` implementation fails (for example a map with
    /// non-string keys). Use [`Type::try_encode`] to get an error instead.
    fn encode(&self, value: &T) -> Vec<u8> {
        match self.try_encode(value) {
            Ok(bytes) => bytes,
            Err(e) => panic!("{e}"),
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, SdkError> {
        serde_json::from_slice(bytes).map_err(|e| SdkError::Decode {
            typename: self.name.to_string(),
            reason: e.to_string(),
        })
    }

    fn try_encode(&self, value: &T) -> Result<Vec<u8>, SdkError> {
        serde_json::to_vec(value).map_err(|e| SdkError::Encode {
            typename: self.name.to_string(),
            reason: e.to_string(),
        })
    }
}

/// A user type encoded as a protobuf message with prost.
///
/// ```
/// use statefun_sdk::{ProtobufType, Type, TypeName};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Greeting { #[prost(string, tag = "1")] text: String }
///
/// let ty = ProtobufType::<Greeting>::new(TypeName::parse("com.example/Greeting").unwrap());
/// let bytes = ty.encode(&Greeting { text: "hi".into() });
/// assert_eq!(bytes, b"\x0a\x02hi");
/// assert_eq!(ty.decode(&bytes).unwrap().text, "hi");
/// ```
pub struct ProtobufType<T> {
    name: TypeName,
    _value: PhantomData<fn() -> T>,
}

impl<T> ProtobufType<T> {
    /// A protobuf type with the given type name. StateFun's convention for
    /// protobuf messages is `type.googleapis.com/<full message name>`.
    pub fn new(name: TypeName) -> Self {
        ProtobufType {
            name,
            _value: PhantomData,
        }
    }
}

impl<T> Clone for ProtobufType<T> {
    fn clone(&self) -> Self {
        ProtobufType::new(self.name.clone())
    }
}

impl<T> fmt::Debug for ProtobufType<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProtobufType({})", self.name)
    }
}

impl<T> Type for ProtobufType<T>
where
    T: prost::Message + Default + 'static,
{
    type Value = T;

    fn type_name(&self) -> &TypeName {
        &self.name
    }

    fn encode(&self, value: &T) -> Vec<u8> {
        value.encode_to_vec()
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, SdkError> {
        T::decode(bytes).map_err(|e| decode_error(self.name.as_str(), e))
    }
}

/// A type whose values are bytes, passed through as they are.
///
/// ```
/// use statefun_sdk::{RawType, Type, TypeName};
/// let ty = RawType::new(TypeName::parse("com.example/blob").unwrap());
/// assert_eq!(ty.encode(&vec![1, 2, 3]), [1, 2, 3]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawType {
    name: TypeName,
}

impl RawType {
    /// A raw type with the given type name.
    pub fn new(name: TypeName) -> Self {
        RawType { name }
    }
}

impl Type for RawType {
    type Value = Vec<u8>;

    fn type_name(&self) -> &TypeName {
        &self.name
    }

    fn encode(&self, value: &Vec<u8>) -> Vec<u8> {
        value.clone()
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, SdkError> {
        Ok(bytes.to_vec())
    }
}

/// Whether `typename` is one of the six `io.statefun.types/*` primitives.
pub fn is_primitive(typename: &str) -> bool {
    PRIMITIVE_TYPENAMES.contains(&typename)
}

fn parse_error(typename: &str, text: &str, what: &str) -> SdkError {
    SdkError::Decode {
        typename: typename.to_string(),
        reason: format!("the text `{text}` is not {what}"),
    }
}

fn parse_text<V: std::str::FromStr>(typename: &str, text: &str, what: &str) -> Result<V, SdkError> {
    text.trim()
        .parse()
        .map_err(|_| parse_error(typename, text, what))
}

/// Encodes text as the wire bytes of a primitive, for the file ingress.
///
/// Strings are taken as they are; numbers may have surrounding white space;
/// booleans are `true` or `false` (any case). Floats accept what Rust's
/// `str::parse` accepts, including `inf` and `NaN`. Returns `None` when
/// `typename` is not one of the six primitives; errors name the type and the
/// text.
///
/// ```
/// use statefun_sdk::types::{encode_primitive_from_text, INT_TYPENAME};
/// assert_eq!(encode_primitive_from_text(INT_TYPENAME, "7").unwrap().unwrap(), [0x0d, 7, 0, 0, 0]);
/// assert!(encode_primitive_from_text(INT_TYPENAME, "seven").unwrap().is_err());
/// assert!(encode_primitive_from_text("com.example/Order", "{}").is_none());
/// ```
pub fn encode_primitive_from_text(typename: &str, text: &str) -> Option<Result<Vec<u8>, SdkError>> {
    let result = match typename {
        STRING_TYPENAME => Ok(STRING.encode(&text.to_string())),
        INT_TYPENAME => parse_text(typename, text, "a 32-bit integer").map(|v| INT.encode(&v)),
        LONG_TYPENAME => parse_text(typename, text, "a 64-bit integer").map(|v| LONG.encode(&v)),
        FLOAT_TYPENAME => parse_text(typename, text, "a number").map(|v| FLOAT.encode(&v)),
        DOUBLE_TYPENAME => parse_text(typename, text, "a number").map(|v| DOUBLE.encode(&v)),
        BOOL_TYPENAME => {
            let t = text.trim();
            if t.eq_ignore_ascii_case("true") {
                Ok(BOOL.encode(&true))
            } else if t.eq_ignore_ascii_case("false") {
                Ok(BOOL.encode(&false))
            } else {
                Err(parse_error(typename, text, "`true` or `false`"))
            }
        }
        _ => return None,
    };
    Some(result)
}

fn float_text<F: fmt::Display + fmt::LowerExp>(value: F, magnitude: f64) -> String {
    if magnitude == 0.0 || !magnitude.is_finite() || (1e-7..1e21).contains(&magnitude) {
        value.to_string()
    } else {
        format!("{value:e}")
    }
}

/// Decodes the wire bytes of a primitive to display text, for the file egress
/// and logs: the inverse of [`encode_primitive_from_text`].
///
/// Strings come out as they are; integers and booleans in Rust's `Display`
/// form; floats in the shortest form that reads back to the same value,
/// positional between 1e-7 and 1e21 (`0.1`, `1500`) and in exponent form
/// outside (`1e300`, `2.5e-8`), as JavaScript and Java print them.
/// Returns `None` when `typename` is not one of the six primitives.
///
/// ```
/// use statefun_sdk::types::{decode_primitive_to_text, STRING_TYPENAME};
/// assert_eq!(decode_primitive_to_text(STRING_TYPENAME, b"\x0a\x02hi").unwrap().unwrap(), "hi");
/// assert_eq!(decode_primitive_to_text(STRING_TYPENAME, b"").unwrap().unwrap(), "");
/// ```
pub fn decode_primitive_to_text(typename: &str, bytes: &[u8]) -> Option<Result<String, SdkError>> {
    let result = match typename {
        STRING_TYPENAME => STRING.decode(bytes),
        INT_TYPENAME => INT.decode(bytes).map(|v| v.to_string()),
        LONG_TYPENAME => LONG.decode(bytes).map(|v| v.to_string()),
        FLOAT_TYPENAME => FLOAT
            .decode(bytes)
            .map(|v| float_text(v, f64::from(v).abs())),
        DOUBLE_TYPENAME => DOUBLE.decode(bytes).map(|v| float_text(v, v.abs())),
        BOOL_TYPENAME => BOOL.decode(bytes).map(|v| v.to_string()),
        _ => return None,
    };
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Byte vectors produced by the official Python SDK's wrapper classes
    // (`statefun/types_pb2.py`, protobuf 3.20.3).
    #[test]
    fn primitive_wire_bytes_match_statefun() {
        assert_eq!(
            STRING.encode(&"hello".into()),
            [0x0a, 0x05, b'h', b'e', b'l', b'l', b'o']
        );
        assert_eq!(
            STRING.encode(&"héllo".into()),
            [0x0a, 0x06, 0x68, 0xc3, 0xa9, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(INT.encode(&7), [0x0d, 7, 0, 0, 0]);
        assert_eq!(INT.encode(&-1), [0x0d, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(LONG.encode(&42), [0x09, 42, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            LONG.encode(&-2),
            [0x09, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(FLOAT.encode(&1.5), [0x0d, 0x00, 0x00, 0xc0, 0x3f]);
        assert_eq!(DOUBLE.encode(&-2.25), [0x09, 0, 0, 0, 0, 0, 0, 0x02, 0xc0]);
        assert_eq!(BOOL.encode(&true), [0x08, 0x01]);
    }

    #[test]
    fn hand_encoding_equals_the_wrapper_messages() {
        for v in [i32::MIN, -1, 0, 1, i32::MAX] {
            assert_eq!(INT.encode(&v), IntWrapper { value: v }.encode_to_vec());
        }
        for v in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(LONG.encode(&v), LongWrapper { value: v }.encode_to_vec());
        }
        for v in [f32::MIN, 0.0, 1.5, f32::NAN] {
            assert_eq!(FLOAT.encode(&v), FloatWrapper { value: v }.encode_to_vec());
        }
        for v in [f64::MIN, 0.0, 1.5, f64::INFINITY] {
            assert_eq!(
                DOUBLE.encode(&v),
                DoubleWrapper { value: v }.encode_to_vec()
            );
        }
        for v in [false, true] {
            assert_eq!(BOOL.encode(&v), BooleanWrapper { value: v }.encode_to_vec());
        }
        for v in ["", "a", &"long".repeat(100)] {
            let value = v.to_string();
            assert_eq!(
                STRING.encode(&value),
                StringWrapper {
                    value: value.clone()
                }
                .encode_to_vec()
            );
        }
    }

    #[test]
    fn defaults_are_empty_both_ways() {
        assert!(STRING.encode(&String::new()).is_empty());
        assert!(INT.encode(&0).is_empty());
        assert!(LONG.encode(&0).is_empty());
        assert!(FLOAT.encode(&0.0).is_empty());
        assert!(DOUBLE.encode(&0.0).is_empty());
        assert!(BOOL.encode(&false).is_empty());
        assert_eq!(STRING.decode(&[]), Ok(String::new()));
        assert_eq!(INT.decode(&[]), Ok(0));
        assert_eq!(LONG.decode(&[]), Ok(0));
        assert_eq!(FLOAT.decode(&[]), Ok(0.0));
        assert_eq!(DOUBLE.decode(&[]), Ok(0.0));
        assert_eq!(BOOL.decode(&[]), Ok(false));
    }

    #[test]
    fn roundtrips() {
        for v in [i32::MIN, -1, 1, i32::MAX] {
            assert_eq!(INT.decode(&INT.encode(&v)), Ok(v));
        }
        for v in [i64::MIN, -1, 1, i64::MAX] {
            assert_eq!(LONG.decode(&LONG.encode(&v)), Ok(v));
        }
        for v in [f32::MIN, -0.5, f32::EPSILON, f32::INFINITY] {
            assert_eq!(FLOAT.decode(&FLOAT.encode(&v)), Ok(v));
        }
        for v in [f64::MIN, -0.5, f64::EPSILON, f64::NEG_INFINITY] {
            assert_eq!(DOUBLE.decode(&DOUBLE.encode(&v)), Ok(v));
        }
        assert!(DOUBLE.decode(&DOUBLE.encode(&f64::NAN)).unwrap().is_nan());
        let neg_zero = DOUBLE.decode(&DOUBLE.encode(&-0.0)).unwrap();
        assert!(neg_zero == 0.0 && neg_zero.is_sign_negative());
        assert_eq!(FLOAT.encode(&-0.0), [0x0d, 0, 0, 0, 0x80]);
        for v in ["", "a", "ünïcödé ✓", &"x".repeat(300)] {
            assert_eq!(
                STRING.decode(&STRING.encode(&v.to_string())),
                Ok(v.to_string())
            );
        }
        assert_eq!(BOOL.decode(&BOOL.encode(&true)), Ok(true));
    }

    #[test]
    fn bad_bytes_are_decode_errors() {
        // A truncated fixed32, invalid UTF-8 in a string, a truncated varint.
        let err = INT.decode(&[0x0d, 1, 2]).unwrap_err();
        assert!(
            matches!(&err, SdkError::Decode { typename, .. } if typename == INT_TYPENAME),
            "{err}"
        );
        assert!(STRING.decode(&[0x0a, 0x02, 0xff, 0xfe]).is_err());
        assert!(BOOL.decode(&[0x08]).is_err());
    }

    /// The direct decoding of the usual encodings gives what prost gives, and
    /// unusual but valid encodings still decode (through prost).
    #[test]
    fn primitive_fast_paths_agree_with_prost() {
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 42] {
            let bytes = LONG.encode(&v);
            assert_eq!(LONG.decode(&bytes), Ok(v));
            assert_eq!(LongWrapper::decode(&bytes[..]).unwrap().value, v);
        }
        for v in [0i32, 1, -1, i32::MAX, i32::MIN] {
            assert_eq!(INT.decode(&INT.encode(&v)), Ok(v));
        }
        for v in [0.0f64, -0.0, 1.5, f64::MAX] {
            assert_eq!(
                DOUBLE.decode(&DOUBLE.encode(&v)).map(f64::to_bits),
                Ok(v.to_bits())
            );
        }
        for v in [0.0f32, 1.5, f32::MIN] {
            assert_eq!(
                FLOAT.decode(&FLOAT.encode(&v)).map(f32::to_bits),
                Ok(v.to_bits())
            );
        }
        for v in [false, true] {
            assert_eq!(BOOL.decode(&BOOL.encode(&v)), Ok(v));
        }
        // Field 1 twice (the last wins), an unknown field, a bool varint of 2.
        let twice = [0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x09, 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(LONG.decode(&twice), Ok(2));
        let unknown = [0x10, 5, 0x0d, 7, 0, 0, 0];
        assert_eq!(INT.decode(&unknown), Ok(7));
        assert_eq!(BOOL.decode(&[0x08, 2]), Ok(true));
        // Truncated values are still errors.
        assert!(LONG.decode(&[0x09, 1, 2]).is_err());
        assert!(DOUBLE.decode(&[0x09]).is_err());
    }

    #[test]
    fn type_names() {
        assert_eq!(STRING.type_name().as_str(), STRING_TYPENAME);
        assert_eq!(INT.type_name().as_str(), INT_TYPENAME);
        assert_eq!(LONG.type_name().as_str(), LONG_TYPENAME);
        assert_eq!(FLOAT.type_name().as_str(), FLOAT_TYPENAME);
        assert_eq!(DOUBLE.type_name().as_str(), DOUBLE_TYPENAME);
        assert_eq!(BOOL.type_name().as_str(), BOOL_TYPENAME);
        assert_eq!(BOOL.type_name().namespace(), "io.statefun.types");
        for name in PRIMITIVE_TYPENAMES {
            assert!(is_primitive(name));
        }
        assert!(!is_primitive("io.statefun.types/bytes"));
    }

    #[test]
    fn json_protobuf_and_raw() {
        let json = JsonType::<Vec<u32>>::new(TypeName::parse("t/list").unwrap());
        assert_eq!(json.encode(&vec![1, 2]), b"[1,2]");
        assert_eq!(json.decode(b"[3]"), Ok(vec![3]));
        let err = json.decode(b"{").unwrap_err();
        assert!(matches!(&err, SdkError::Decode { typename, .. } if typename == "t/list"));
        assert_eq!(format!("{json:?}"), "JsonType(t/list)");

        let proto = ProtobufType::<crate::proto::egress::KinesisEgressRecord>::new(
            TypeName::parse("type.googleapis.com/io.statefun.sdk.egress.KinesisEgressRecord")
                .unwrap(),
        );
        let record = crate::proto::egress::KinesisEgressRecord {
            stream: "s".into(),
            ..Default::default()
        };
        assert_eq!(proto.decode(&proto.encode(&record)), Ok(record));
        assert!(proto.decode(&[0xff]).is_err());

        let raw = RawType::new(TypeName::parse("t/raw").unwrap());
        assert_eq!(raw.decode(&[0, 1, 255]), Ok(vec![0, 1, 255]));
        assert_eq!(raw.try_encode(&vec![9]), Ok(vec![9]));
    }

    #[test]
    fn text_to_primitive() {
        let enc = |t: &str, s: &str| encode_primitive_from_text(t, s).unwrap();
        assert_eq!(
            enc(STRING_TYPENAME, " hi "),
            Ok(STRING.encode(&" hi ".into()))
        );
        assert_eq!(enc(INT_TYPENAME, " 7\n"), Ok(vec![0x0d, 7, 0, 0, 0]));
        assert_eq!(enc(LONG_TYPENAME, "-2"), Ok(LONG.encode(&-2)));
        assert_eq!(enc(FLOAT_TYPENAME, "1.5"), Ok(FLOAT.encode(&1.5)));
        assert_eq!(enc(DOUBLE_TYPENAME, "-2.25"), Ok(DOUBLE.encode(&-2.25)));
        assert_eq!(enc(BOOL_TYPENAME, "TRUE"), Ok(vec![0x08, 0x01]));
        assert_eq!(enc(BOOL_TYPENAME, "false"), Ok(vec![]));
        for (t, bad) in [
            (INT_TYPENAME, "2147483648"),
            (INT_TYPENAME, "1.0"),
            (LONG_TYPENAME, "x"),
            (FLOAT_TYPENAME, "one"),
            (DOUBLE_TYPENAME, ""),
            (BOOL_TYPENAME, "yes"),
        ] {
            let err = enc(t, bad).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(t) && text.contains(&format!("`{bad}`")),
                "{text}"
            );
        }
        assert!(encode_primitive_from_text("t/other", "1").is_none());
    }

    #[test]
    fn primitive_to_text() {
        let dec = |t: &str, b: &[u8]| decode_primitive_to_text(t, b).unwrap();
        assert_eq!(dec(STRING_TYPENAME, b"\x0a\x02hi"), Ok("hi".into()));
        assert_eq!(dec(INT_TYPENAME, &INT.encode(&-7)), Ok("-7".into()));
        assert_eq!(dec(LONG_TYPENAME, &[]), Ok("0".into()));
        assert_eq!(dec(FLOAT_TYPENAME, &FLOAT.encode(&0.1)), Ok("0.1".into()));
        assert_eq!(
            dec(DOUBLE_TYPENAME, &DOUBLE.encode(&1e300)),
            Ok("1e300".into())
        );
        assert_eq!(dec(BOOL_TYPENAME, &[0x08, 0x01]), Ok("true".into()));
        assert_eq!(
            dec(DOUBLE_TYPENAME, &DOUBLE.encode(&-2.5e-8)),
            Ok("-2.5e-8".into())
        );
        assert_eq!(dec(FLOAT_TYPENAME, &FLOAT.encode(&3e38)), Ok("3e38".into()));
        assert_eq!(
            dec(DOUBLE_TYPENAME, &DOUBLE.encode(&f64::NAN)),
            Ok("NaN".into())
        );
        assert!(dec(INT_TYPENAME, &[0x0d]).is_err());
        assert!(decode_primitive_to_text("t/other", b"").is_none());
        // Text and bytes round-trip through both functions.
        for (t, s) in [
            (INT_TYPENAME, "12"),
            (DOUBLE_TYPENAME, "0.3"),
            (BOOL_TYPENAME, "true"),
        ] {
            let bytes = encode_primitive_from_text(t, s).unwrap().unwrap();
            assert_eq!(decode_primitive_to_text(t, &bytes).unwrap().unwrap(), s);
        }
    }
}
