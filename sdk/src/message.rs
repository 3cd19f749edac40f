//! Reading and building messages.

use crate::types::{self, Type};
use crate::{Address, Message, SdkError, TypeName, TypedValue};

macro_rules! primitive_accessors {
    ($($is:ident, $as:ident, $ty:ident, $value:ty, $name:literal;)*) => {
        $(
            #[doc = concat!("Whether the message holds ", $name, ".")]
            pub fn $is(&self) -> bool {
                self.is(&types::$ty)
            }

            #[doc = concat!("The message as ", $name, "; `TypeMismatch` when it is another type.")]
            pub fn $as(&self) -> Result<$value, SdkError> {
                self.as_value(&types::$ty)
            }
        )*
    };
}

impl Message {
    /// A message for `target`.
    pub fn new(target: Address, value: TypedValue) -> Self {
        Message { target, value }
    }

    /// The type name of the payload.
    pub fn value_typename(&self) -> &str {
        &self.value.typename
    }

    /// Whether the payload is of type `ty`.
    pub fn is<T: Type>(&self, ty: &T) -> bool {
        self.value.typename == ty.type_name().as_str()
    }

    /// Decodes the payload as `ty`; `SdkError::TypeMismatch` when the payload
    /// has another type name.
    ///
    /// ```
    /// use statefun_sdk::{types, MessageBuilder, SdkError, TypeName};
    /// let m = MessageBuilder::for_address(TypeName::parse("example/fn").unwrap(), "a")
    ///     .with_int(7)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(m.as_value(&types::INT), Ok(7));
    /// assert!(matches!(m.as_value(&types::LONG), Err(SdkError::TypeMismatch { .. })));
    /// ```
    pub fn as_value<T: Type>(&self, ty: &T) -> Result<T::Value, SdkError> {
        if !self.is(ty) {
            return Err(SdkError::TypeMismatch {
                expected: ty.type_name().to_string(),
                found: self.value.typename.to_string(),
            });
        }
        ty.decode(&self.value.value)
    }

    primitive_accessors! {
        is_string, as_string, STRING, String, "a string (`io.statefun.types/string`)";
        is_int, as_int, INT, i32, "an int (`io.statefun.types/int`)";
        is_long, as_long, LONG, i64, "a long (`io.statefun.types/long`)";
        is_float, as_float, FLOAT, f32, "a float (`io.statefun.types/float`)";
        is_double, as_double, DOUBLE, f64, "a double (`io.statefun.types/double`)";
        is_bool, as_bool, BOOL, bool, "a bool (`io.statefun.types/bool`)";
    }
}

/// Builds a [`Message`].
///
/// ```
/// use statefun_sdk::{MessageBuilder, TypeName};
/// let m = MessageBuilder::for_address(TypeName::parse("example/greeter").unwrap(), "alice")
///     .with_string("hello")
///     .build()
///     .unwrap();
/// assert_eq!(m.target.id, "alice");
/// assert_eq!(m.value_typename(), "io.statefun.types/string");
/// assert_eq!(m.as_string().unwrap(), "hello");
/// ```
#[derive(Debug)]
#[must_use]
pub struct MessageBuilder {
    target: Address,
    value: Option<Result<TypedValue, SdkError>>,
}

impl MessageBuilder {
    /// Starts a message for the instance `id` of `function_type`.
    pub fn for_address(function_type: TypeName, id: impl Into<crate::Id>) -> Self {
        Self::for_target(Address::new(function_type, id))
    }

    /// Starts a message for an address.
    pub fn for_target(target: Address) -> Self {
        MessageBuilder {
            target,
            value: None,
        }
    }

    /// Sets the payload to a value of type `ty`.
    pub fn with_value<T: Type>(mut self, ty: &T, value: &T::Value) -> Self {
        self.value = Some(
            ty.try_encode(value)
                .map(|bytes| TypedValue::new(ty.type_name().as_str(), bytes)),
        );
        self
    }

    /// Sets the payload to a string.
    pub fn with_string(self, value: &str) -> Self {
        self.with_value(&types::STRING, &value.to_string())
    }

    /// Sets the payload to an int.
    pub fn with_int(self, value: i32) -> Self {
        self.with_value(&types::INT, &value)
    }

    /// Sets the payload to a long.
    pub fn with_long(self, value: i64) -> Self {
        self.with_value(&types::LONG, &value)
    }

    /// Sets the payload to a float.
    pub fn with_float(self, value: f32) -> Self {
        self.with_value(&types::FLOAT, &value)
    }

    /// Sets the payload to a double.
    pub fn with_double(self, value: f64) -> Self {
        self.with_value(&types::DOUBLE, &value)
    }

    /// Sets the payload to a bool.
    pub fn with_bool(self, value: bool) -> Self {
        self.with_value(&types::BOOL, &value)
    }

    /// Sets the payload to an already encoded value.
    pub fn with_typed_value(mut self, value: TypedValue) -> Self {
        self.value = Some(Ok(value));
        self
    }

    /// The message; `SdkError::Incomplete` when no payload was set, or the
    /// payload's encoding error.
    pub fn build(self) -> Result<Message, SdkError> {
        match self.value {
            Some(value) => Ok(Message::new(self.target, value?)),
            None => Err(SdkError::Incomplete(format!(
                "message for `{}` has no value; call with_value (or with_string, with_int, ...)",
                self.target
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::JsonType;

    fn builder() -> MessageBuilder {
        MessageBuilder::for_address(TypeName::parse("example/fn").unwrap(), "id-1")
    }

    #[test]
    fn primitives_roundtrip() {
        let m = builder().with_string("héllo").build().unwrap();
        assert!(m.is_string() && !m.is_int());
        assert_eq!(m.as_string().unwrap(), "héllo");
        assert_eq!(m.target.to_string(), "example/fn/id-1");
        assert_eq!(builder().with_int(-3).build().unwrap().as_int(), Ok(-3));
        assert_eq!(
            builder().with_long(1 << 40).build().unwrap().as_long(),
            Ok(1 << 40)
        );
        assert_eq!(
            builder().with_float(1.5).build().unwrap().as_float(),
            Ok(1.5)
        );
        assert_eq!(
            builder().with_double(-2.25).build().unwrap().as_double(),
            Ok(-2.25)
        );
        assert_eq!(
            builder().with_bool(true).build().unwrap().as_bool(),
            Ok(true)
        );
        let m = builder().with_bool(false).build().unwrap();
        assert!(m.is_bool());
        assert!(m.value.value.is_empty());
    }

    #[test]
    fn exact_wire_bytes() {
        let m = builder().with_int(7).build().unwrap();
        assert_eq!(
            m.value,
            TypedValue::new("io.statefun.types/int", vec![0x0d, 7, 0, 0, 0])
        );
    }

    #[test]
    fn mismatch_and_missing_value() {
        let m = builder().with_int(7).build().unwrap();
        assert_eq!(
            m.as_string(),
            Err(SdkError::TypeMismatch {
                expected: types::STRING_TYPENAME.into(),
                found: types::INT_TYPENAME.into()
            })
        );
        let err = builder().build().unwrap_err();
        assert!(matches!(err, SdkError::Incomplete(_)));
        assert!(err.to_string().contains("example/fn/id-1"), "{err}");
    }

    #[test]
    fn typed_value_and_encode_errors() {
        let raw = TypedValue::new("com.example/x", vec![1, 2]);
        let m = builder().with_typed_value(raw.clone()).build().unwrap();
        assert_eq!(m.value, raw);
        assert_eq!(m.value_typename(), "com.example/x");

        // JSON maps need string keys: encoding fails, and build reports it.
        let ty = JsonType::<BTreeMap<(u8, u8), u8>>::new(TypeName::parse("t/map").unwrap());
        let err = builder()
            .with_value(&ty, &BTreeMap::from([((1, 2), 3)]))
            .build()
            .unwrap_err();
        assert!(matches!(err, SdkError::Encode { .. }), "{err}");
    }
}
