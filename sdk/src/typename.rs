//! Type names (`namespace/name`) and function addresses.
//!
//! StateFun names every function type, message type and egress with a
//! `TypeName`. The namespace is everything before the *last* `/`, so
//! `type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord` and
//! `com.example/greeter` both parse.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::{SdkError, Symbol};

/// A `namespace/name` pair naming a function type, a message type or an egress.
///
/// ```
/// use statefun_sdk::TypeName;
/// let t = TypeName::parse("example/greeter").unwrap();
/// assert_eq!(t.namespace(), "example");
/// assert_eq!(t.name(), "greeter");
/// assert_eq!(t.to_string(), "example/greeter");
/// assert!(TypeName::parse("no-namespace").is_err());
/// ```
#[derive(Clone)]
pub struct TypeName {
    /// The full `namespace/name` text, validated to contain a `/` with
    /// non-empty parts on both sides, and interned (see [`Symbol`]): type
    /// names travel in every message, so copying one copies a pointer and
    /// equal names are the same pointer.
    full: Symbol,
}

impl TypeName {
    /// Builds a type name from its two parts; both must be non-empty and the name must not contain `/`.
    pub fn new(namespace: &str, name: &str) -> Result<Self, SdkError> {
        Self::parse(&format!("{namespace}/{name}"))
    }

    /// Parses `namespace/name`, splitting at the last `/`.
    pub fn parse(text: &str) -> Result<Self, SdkError> {
        check(text)?;
        Ok(TypeName {
            full: Symbol::from(text),
        })
    }

    /// The index of the last `/` (present by construction).
    #[inline]
    fn split(&self) -> usize {
        self.full.rfind('/').unwrap_or(0)
    }

    /// The namespace: everything before the last `/`.
    pub fn namespace(&self) -> &str {
        &self.full[..self.split()]
    }

    /// The name: everything after the last `/`.
    pub fn name(&self) -> &str {
        &self.full[self.split() + 1..]
    }

    /// The whole `namespace/name` text.
    pub fn as_str(&self) -> &str {
        self.full.as_str()
    }

    /// The name as a [`Symbol`].
    pub fn as_symbol(&self) -> &Symbol {
        &self.full
    }
}

/// Whether `text` is a valid `namespace/name`: a `/` with non-empty text on
/// both sides of the last one, and no white space.
fn check(text: &str) -> Result<(), SdkError> {
    let split = text.rfind('/').ok_or_else(|| {
        SdkError::InvalidTypeName(format!(
            "`{text}` has no namespace; write it as `<namespace>/<name>`"
        ))
    })?;
    if split == 0 {
        return Err(SdkError::InvalidTypeName(format!(
            "`{text}` has an empty namespace; write it as `<namespace>/<name>`"
        )));
    }
    if split + 1 == text.len() {
        return Err(SdkError::InvalidTypeName(format!(
            "`{text}` has an empty name; write it as `<namespace>/<name>`"
        )));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(SdkError::InvalidTypeName(format!(
            "`{text}` contains white space"
        )));
    }
    Ok(())
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypeName({})", self.full)
    }
}

/// Interned: equal names are one pointer, so equality is pointer equality.
impl PartialEq for TypeName {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for TypeName {}

/// By text (not by pointer), so that hashes agree across processes.
impl std::hash::Hash for TypeName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.full.hash(state);
    }
}

impl PartialOrd for TypeName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By text (not by pointer), so that orders agree across processes.
impl Ord for TypeName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.full.cmp(&other.full)
    }
}

/// Serialized as its `namespace/name` text; deserializing validates it.
impl Serialize for TypeName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through `Symbol`: a name already interned costs no allocation when
        // it arrives from another process.
        let full = Symbol::deserialize(deserializer)?;
        check(&full).map_err(serde::de::Error::custom)?;
        Ok(TypeName { full })
    }
}

impl std::str::FromStr for TypeName {
    type Err = SdkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TypeName::parse(s)
    }
}

/// The address of a virtual function instance: its function type and an id.
///
/// ```
/// use statefun_sdk::{Address, TypeName};
/// let a = Address::new(TypeName::parse("example/greeter").unwrap(), "alice");
/// assert_eq!(a.to_string(), "example/greeter/alice");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address {
    /// The function type.
    pub function_type: TypeName,
    /// The instance id (any UTF-8 string; ingress records use their key).
    pub id: Id,
}

/// An instance id: a string stored inline up to 24 bytes.
///
/// Ids travel in every message and are copied into every invocation, and
/// almost all are short (user names, order numbers, decimal keys): inline,
/// they cost no allocation and no cross-thread free when a message moves to
/// the worker that owns its key. It derefs to `&str` and converts from
/// `&str` and `String`.
///
/// ```
/// use statefun_sdk::Id;
/// let id = Id::from("alice");
/// assert_eq!(id, "alice");
/// assert_eq!(id.len(), 5);
/// ```
pub type Id = compact_str::CompactString;

impl Address {
    /// Creates an address.
    pub fn new(function_type: TypeName, id: impl Into<Id>) -> Self {
        Address {
            function_type,
            id: id.into(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.function_type, self.id)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({}/{})", self.function_type, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_last_slash() {
        let t = TypeName::parse("type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord")
            .unwrap();
        assert_eq!(t.namespace(), "type.googleapis.com");
        assert_eq!(t.name(), "io.statefun.sdk.egress.KafkaProducerRecord");
        let t = TypeName::parse("a/b/c").unwrap();
        assert_eq!(t.namespace(), "a/b");
        assert_eq!(t.name(), "c");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "x", "/x", "x/", "a b/c"] {
            assert!(TypeName::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn serde_roundtrip() {
        let t = TypeName::parse("ns/fn").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        let back: TypeName = serde_json::from_str(&json).unwrap();
        assert_eq!(t, back);
        assert_eq!(back.name(), "fn");
    }
}
