//! Interned strings: the names that travel in every message.
//!
//! Type names — of function types, of message values, of egresses — travel
//! in every message, so they must be as cheap as an integer to copy, compare
//! and drop. A `String` costs an allocation per message and a free on
//! whichever worker the message ends on (a cross-thread free when it crossed
//! an exchange); a shared `Arc<str>` costs an atomic read-modify-write per
//! clone and drop on one reference count whose cache line then bounces
//! between cores (in the two-worker benchmark a fifth of the CPU went to
//! those two instructions). A [`Symbol`] is one `&'static str` per distinct
//! text for the life of the process: copying copies a pointer, equal texts
//! are equal pointers, and nothing is freed.
//!
//! A text, once interned, is never freed. Names come from code and module
//! files, so a process sees tens of them; so that a misbehaving peer (a
//! remote function inventing a new type name per message) cannot grow memory
//! without bound, the table stops interning at [`MAX_INTERNED`] names and
//! later new texts are kept in owned boxes instead: correct, freed with the
//! symbol, only slower.
//!
//! Lookups go to a per-thread cache first, so the shared table's lock is
//! taken once per name per thread, never per message.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

/// How many distinct texts a process interns; later new ones are owned.
pub const MAX_INTERNED: usize = 1 << 20;

/// An immutable string, interned (see the [module docs](self)).
///
/// ```
/// use statefun_sdk::Symbol;
/// let a = Symbol::from("io.statefun.types/string");
/// let b = Symbol::from(String::from("io.statefun.types/string"));
/// assert_eq!(a, b);
/// assert_eq!(a, "io.statefun.types/string");
/// assert_eq!(a.len(), 24);
/// ```
#[derive(Clone)]
pub struct Symbol(Repr);

#[derive(Clone)]
enum Repr {
    /// In the process table: equal texts are the same pointer.
    Interned(&'static str),
    /// Past [`MAX_INTERNED`]: an owned copy.
    Owned(Box<str>),
}

impl Symbol {
    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Interned(s) => s,
            Repr::Owned(s) => s,
        }
    }

    /// The text with a `'static` lifetime, when it is interned (always,
    /// unless the process met more than [`MAX_INTERNED`] distinct texts).
    #[inline]
    pub fn as_static(&self) -> Option<&'static str> {
        match self.0 {
            Repr::Interned(s) => Some(s),
            Repr::Owned(_) => None,
        }
    }
}

type Table = HashSet<&'static str, rustc_hash::FxBuildHasher>;

fn global() -> &'static Mutex<Table> {
    static GLOBAL: OnceLock<Mutex<Table>> = OnceLock::new();
    GLOBAL.get_or_init(|| Mutex::new(Table::default()))
}

thread_local! {
    static LOCAL: RefCell<Table> = RefCell::new(Table::default());
}

fn intern(text: &str) -> Repr {
    if let Some(found) = LOCAL.with(|local| local.borrow().get(text).copied()) {
        return Repr::Interned(found);
    }
    let interned = {
        // A poisoned lock only means another thread panicked while holding
        // it; the set is consistent after every insert.
        let mut table = global().lock().unwrap_or_else(|p| p.into_inner());
        match table.get(text) {
            Some(found) => *found,
            None if table.len() >= MAX_INTERNED => return Repr::Owned(text.into()),
            None => {
                let leaked: &'static str = Box::leak(text.into());
                table.insert(leaked);
                leaked
            }
        }
    };
    LOCAL.with(|local| local.borrow_mut().insert(interned));
    Repr::Interned(interned)
}

impl From<&str> for Symbol {
    #[inline]
    fn from(text: &str) -> Self {
        Symbol(intern(text))
    }
}

impl From<&String> for Symbol {
    fn from(text: &String) -> Self {
        Symbol(intern(text))
    }
}

impl From<String> for Symbol {
    fn from(text: String) -> Self {
        Symbol(intern(&text))
    }
}

impl From<Symbol> for String {
    fn from(symbol: Symbol) -> Self {
        symbol.as_str().to_owned()
    }
}

impl Default for Symbol {
    fn default() -> Self {
        Symbol::from("")
    }
}

impl std::ops::Deref for Symbol {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Symbol {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Interned(a), Repr::Interned(b)) => std::ptr::eq(*a, *b),
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for Symbol {}

impl PartialEq<str> for Symbol {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Symbol {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Symbol {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Symbol> for &str {
    fn eq(&self, other: &Symbol) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Symbol> for str {
    fn eq(&self, other: &Symbol) -> bool {
        self == other.as_str()
    }
}

/// By text (not by pointer), so that hashes agree with `str`'s and across
/// processes.
impl std::hash::Hash for Symbol {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Symbol {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By text (not by pointer), so that orders agree across processes.
impl Ord for Symbol {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self == other {
            return std::cmp::Ordering::Equal;
        }
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Symbol {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor instead of `String::deserialize`: a text already
        // interned costs no allocation when it arrives from another process.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Symbol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Symbol, E> {
                Ok(Symbol::from(text))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_text_is_one_pointer_across_threads() {
        let here = Symbol::from("ns/interned");
        let text = String::from("ns/interned");
        let there = std::thread::spawn(move || Symbol::from(text))
            .join()
            .unwrap();
        assert_eq!(
            here.as_static().unwrap().as_ptr(),
            there.as_static().unwrap().as_ptr()
        );
        assert_eq!(here, there);
        assert_ne!(Symbol::from("ns/other"), here);
        let other = Symbol::from("ns/other");
        assert_eq!(other.cmp(&here), std::cmp::Ordering::Greater);
    }

    #[test]
    fn owned_symbols_equal_interned_ones_by_text() {
        let owned = Symbol(Repr::Owned("ns/x".into()));
        let interned = Symbol::from("ns/x");
        assert_eq!(owned, interned);
        assert_eq!(owned.cmp(&interned), std::cmp::Ordering::Equal);
        assert_eq!(owned.as_static(), None);
        let json = serde_json::to_string(&owned).unwrap();
        let back: Symbol = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_static(), Some("ns/x"));
    }
}
