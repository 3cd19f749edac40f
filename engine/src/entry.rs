//! A function the runtime can invoke: the resolved entry of the function
//! table.
//!
//! Its own module because everything that runs functions needs it — the
//! application that resolves the table (`app`), one invocation (`invoke`),
//! the built-in dead-letter function (`dead_letter`) — and none of those
//! should depend on another just for this type: the arrows run one way,
//! `app` → `dead_letter`/`remote` → `invoke` → `entry`.

use std::sync::Arc;

use statefun_sdk::{Expiration, FunctionSpec, StatefulFunction, TypeName, ValueSpecDescriptor};

/// A function the runtime can invoke, with the state it declared.
pub struct FunctionEntry {
    /// The function type.
    pub function_type: TypeName,
    /// The declared state values; slots are indexes into this list.
    pub specs: Vec<ValueSpecDescriptor>,
    /// The implementation.
    pub function: Arc<dyn StatefulFunction>,
    /// Whether any spec expires after call (their TTL is renewed on every call).
    pub has_expire_after_call: bool,
}

impl FunctionEntry {
    /// The entry of a registered function spec.
    ///
    /// ```
    /// use statefun_engine::entry::FunctionEntry;
    /// use statefun_sdk::{Context, FunctionError, FunctionSpec, Message, TypeName};
    /// let spec = FunctionSpec::builder(TypeName::parse("ex/noop").unwrap())
    ///     .with_fn(|_: &mut Context<'_>, _: Message| -> Result<(), FunctionError> { Ok(()) })
    ///     .build()
    ///     .unwrap();
    /// let entry = FunctionEntry::of(&spec);
    /// assert_eq!(entry.function_type.as_str(), "ex/noop");
    /// assert!(!entry.has_expire_after_call);
    /// ```
    pub fn of(spec: &FunctionSpec) -> Self {
        FunctionEntry {
            function_type: spec.function_type.clone(),
            specs: spec.value_specs.clone(),
            function: spec.function.clone(),
            has_expire_after_call: spec
                .value_specs
                .iter()
                .any(|s| matches!(s.expiration, Expiration::AfterCall(_))),
        }
    }
}
