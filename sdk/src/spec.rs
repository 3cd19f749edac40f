//! Value specs: the named, typed state values a function declares.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proto::request_reply::from_function::{
    expiration_spec::ExpireMode, ExpirationSpec, PersistedValueSpec,
};
use crate::types::Type;
use crate::{SdkError, TypeName};

/// When a state value expires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expiration {
    /// Never.
    #[default]
    Never,
    /// This long after the last write.
    AfterWrite(Duration),
    /// This long after the last invocation that read or wrote the value.
    AfterCall(Duration),
}

impl Expiration {
    /// The time to live, if the value expires.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            Expiration::Never => None,
            Expiration::AfterWrite(d) | Expiration::AfterCall(d) => Some(*d),
        }
    }

    /// The protocol form (`FromFunction.ExpirationSpec`), in whole milliseconds.
    pub fn to_proto(&self) -> ExpirationSpec {
        let (mode, d) = match self {
            Expiration::Never => (ExpireMode::None, Duration::ZERO),
            Expiration::AfterWrite(d) => (ExpireMode::AfterWrite, *d),
            Expiration::AfterCall(d) => (ExpireMode::AfterInvoke, *d),
        };
        ExpirationSpec {
            mode: mode as i32,
            expire_after_millis: i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Reads the protocol form; an unknown mode or a negative time is an error.
    pub fn from_proto(spec: &ExpirationSpec) -> Result<Self, SdkError> {
        let millis = u64::try_from(spec.expire_after_millis).map_err(|_| {
            SdkError::InvalidSpec(format!(
                "negative expiration time {} ms",
                spec.expire_after_millis
            ))
        })?;
        let d = Duration::from_millis(millis);
        match ExpireMode::try_from(spec.mode) {
            Ok(ExpireMode::None) => Ok(Expiration::Never),
            Ok(ExpireMode::AfterWrite) => Ok(Expiration::AfterWrite(d)),
            Ok(ExpireMode::AfterInvoke) => Ok(Expiration::AfterCall(d)),
            Err(_) => Err(SdkError::InvalidSpec(format!(
                "unknown expiration mode {}",
                spec.mode
            ))),
        }
    }
}

/// A state value of a function: a name, a [`Type`] and an [`Expiration`].
///
/// Declare value specs once (they are cheap to keep in a `static` via
/// `LazyLock` or in the function's struct), register them with
/// [`FunctionSpecBuilder::with_value_spec`](crate::function::FunctionSpecBuilder::with_value_spec)
/// and access state with [`Context::get`](crate::Context::get) and friends.
///
/// ```
/// use std::time::Duration;
/// use statefun_sdk::{types, Expiration, ValueSpec};
///
/// let seen = ValueSpec::new("seen_count", types::INT).expire_after_call(Duration::from_secs(3600));
/// assert_eq!(seen.name(), "seen_count");
/// assert_eq!(seen.expiration(), Expiration::AfterCall(Duration::from_secs(3600)));
/// assert_eq!(seen.descriptor().typename.as_str(), "io.statefun.types/int");
/// ```
pub struct ValueSpec<T: Type> {
    name: String,
    ty: T,
    expiration: Expiration,
}

impl<T: Type> ValueSpec<T> {
    /// A value spec that never expires. The name is validated when the spec is
    /// registered ([`FunctionSpecBuilder::build`](crate::function::FunctionSpecBuilder::build)).
    pub fn new(name: &str, ty: T) -> Self {
        ValueSpec {
            name: name.to_string(),
            ty,
            expiration: Expiration::Never,
        }
    }

    /// Expires the value `d` after its last write.
    pub fn expire_after_write(mut self, d: Duration) -> Self {
        self.expiration = Expiration::AfterWrite(d);
        self
    }

    /// Expires the value `d` after the last invocation that read or wrote it.
    pub fn expire_after_call(mut self, d: Duration) -> Self {
        self.expiration = Expiration::AfterCall(d);
        self
    }

    /// The state name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value's type.
    pub fn value_type(&self) -> &T {
        &self.ty
    }

    /// The expiration.
    pub fn expiration(&self) -> Expiration {
        self.expiration
    }

    /// The untyped description the runtime keeps.
    pub fn descriptor(&self) -> ValueSpecDescriptor {
        ValueSpecDescriptor {
            name: self.name.clone(),
            typename: self.ty.type_name().clone(),
            expiration: self.expiration,
        }
    }
}

impl<T: Type + Clone> Clone for ValueSpec<T> {
    fn clone(&self) -> Self {
        ValueSpec {
            name: self.name.clone(),
            ty: self.ty.clone(),
            expiration: self.expiration,
        }
    }
}

impl<T: Type> fmt::Debug for ValueSpec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueSpec")
            .field("name", &self.name)
            .field("typename", self.ty.type_name())
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// A value spec without its codec: what the runtime needs to store, expire
/// and (for remote functions) announce a state value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueSpecDescriptor {
    /// The state name.
    pub name: String,
    /// The value's type name.
    pub typename: TypeName,
    /// The expiration.
    pub expiration: Expiration,
}

impl ValueSpecDescriptor {
    /// Checks the name (a StateFun identifier) and the expiration (a positive
    /// time to live when the value expires).
    pub fn validate(&self) -> Result<(), SdkError> {
        if !is_valid_state_name(&self.name) {
            return Err(SdkError::InvalidSpec(format!(
                "invalid state name `{}`: state names must start with a letter or `_` \
                 and contain only letters, digits and `_`",
                self.name
            )));
        }
        if self.expiration.duration() == Some(Duration::ZERO) {
            return Err(SdkError::InvalidSpec(format!(
                "state value `{}` expires after a zero duration; use a positive duration or no expiration",
                self.name
            )));
        }
        Ok(())
    }

    /// The protocol form (`FromFunction.PersistedValueSpec`).
    pub fn to_proto(&self) -> PersistedValueSpec {
        PersistedValueSpec {
            state_name: self.name.clone(),
            expiration_spec: Some(self.expiration.to_proto()),
            type_typename: self.typename.to_string(),
        }
    }

    /// Reads the protocol form, as sent by a remote function that lacks state
    /// values (`IncompleteInvocationContext`).
    ///
    /// Only the type name and the expiration are checked: the official SDKs
    /// have their own (slightly wider) rules for state names.
    pub fn from_proto(spec: &PersistedValueSpec) -> Result<Self, SdkError> {
        let expiration = match &spec.expiration_spec {
            Some(e) => Expiration::from_proto(e)?,
            None => Expiration::Never,
        };
        Ok(ValueSpecDescriptor {
            name: spec.state_name.clone(),
            typename: TypeName::parse(&spec.type_typename)?,
            expiration,
        })
    }
}

/// Whether `name` is a valid state name: a StateFun identifier,
/// `[A-Za-z_][A-Za-z0-9_]*`.
///
/// ```
/// use statefun_sdk::spec::is_valid_state_name;
/// assert!(is_valid_state_name("seen_count"));
/// assert!(!is_valid_state_name("seen-count"));
/// assert!(!is_valid_state_name("1st"));
/// ```
pub fn is_valid_state_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;

    #[test]
    fn builder_and_descriptor() {
        let spec =
            ValueSpec::new("cart", types::STRING).expire_after_write(Duration::from_millis(1500));
        assert_eq!(spec.name(), "cart");
        assert_eq!(spec.value_type(), &types::STRING);
        let d = spec.descriptor();
        assert_eq!(
            d,
            ValueSpecDescriptor {
                name: "cart".into(),
                typename: TypeName::parse(types::STRING_TYPENAME).unwrap(),
                expiration: Expiration::AfterWrite(Duration::from_millis(1500)),
            }
        );
        assert!(d.validate().is_ok());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            serde_json::from_str::<ValueSpecDescriptor>(&json).unwrap(),
            d
        );
        assert_eq!(
            ValueSpec::new("x", types::INT).expiration(),
            Expiration::Never
        );
        assert!(format!("{:?}", spec.clone()).contains("io.statefun.types/string"));
    }

    #[test]
    fn expiration_protocol_form() {
        for e in [
            Expiration::Never,
            Expiration::AfterWrite(Duration::from_secs(2)),
            Expiration::AfterCall(Duration::from_millis(5)),
        ] {
            assert_eq!(Expiration::from_proto(&e.to_proto()), Ok(e));
        }
        let p = Expiration::AfterCall(Duration::from_secs(60)).to_proto();
        assert_eq!(p.mode(), ExpireMode::AfterInvoke);
        assert_eq!(p.expire_after_millis, 60_000);
        assert!(Expiration::from_proto(&ExpirationSpec {
            mode: 9,
            expire_after_millis: 0
        })
        .is_err());
        assert!(Expiration::from_proto(&ExpirationSpec {
            mode: 1,
            expire_after_millis: -1
        })
        .is_err());

        let d = ValueSpec::new("seen", types::INT)
            .expire_after_call(Duration::from_secs(1))
            .descriptor();
        assert_eq!(ValueSpecDescriptor::from_proto(&d.to_proto()), Ok(d));
        let no_expiration = PersistedValueSpec {
            state_name: "s".into(),
            expiration_spec: None,
            type_typename: "t/x".into(),
        };
        assert_eq!(
            ValueSpecDescriptor::from_proto(&no_expiration)
                .unwrap()
                .expiration,
            Expiration::Never
        );
    }

    #[test]
    fn state_names() {
        for good in ["a", "_", "A_1", "seen_count"] {
            assert!(is_valid_state_name(good), "{good}");
        }
        for bad in ["", "1", "a-b", "a b", "é", "a.b"] {
            assert!(!is_valid_state_name(bad), "{bad}");
        }
    }
}
