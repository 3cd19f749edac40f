//! Stateful functions and their specs.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::context::Context;
use crate::spec::{ValueSpec, ValueSpecDescriptor};
use crate::types::Type;
use crate::{Message, SdkError, TypeName};

/// The error a function returns. Any error converts into it with `?`.
pub type FunctionError = Box<dyn std::error::Error + Send + Sync>;

/// A function that handles one message at a time for one address.
///
/// Closures of the right shape are functions:
/// `|ctx: &mut Context<'_>, message: Message| -> Result<(), FunctionError> { .. }`.
pub trait StatefulFunction: Send + Sync + 'static {
    /// Handles one message. State changes and sent messages take effect when
    /// the invocation returns; an error is reported by the runtime.
    fn invoke(&self, ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError>;
}

impl<F> StatefulFunction for F
where
    F: Fn(&mut Context<'_>, Message) -> Result<(), FunctionError> + Send + Sync + 'static,
{
    fn invoke(&self, ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
        self(ctx, message)
    }
}

/// A function type with its state values and implementation, ready to be
/// registered with the runtime.
///
/// ```
/// use statefun_sdk::{types, Context, FunctionError, FunctionSpec, Message, TypeName, ValueSpec};
///
/// let seen = ValueSpec::new("seen", types::INT);
/// let spec = FunctionSpec::builder(TypeName::parse("example/greeter").unwrap())
///     .with_value_spec(&seen)
///     .with_fn(move |ctx: &mut Context<'_>, _message: Message| {
///         let count = ctx.get(&seen)?.unwrap_or(0);
///         ctx.set(&seen, &(count + 1))?;
///         Ok(())
///     })
///     .build()
///     .unwrap();
/// assert_eq!(spec.value_specs[0].name, "seen");
/// ```
#[derive(Clone)]
pub struct FunctionSpec {
    /// The function type.
    pub function_type: TypeName,
    /// The state values, in registration order; names are unique and valid.
    pub value_specs: Vec<ValueSpecDescriptor>,
    /// The implementation.
    pub function: Arc<dyn StatefulFunction>,
}

impl FunctionSpec {
    /// Starts a spec for a function type.
    pub fn builder(function_type: TypeName) -> FunctionSpecBuilder {
        FunctionSpecBuilder {
            function_type,
            value_specs: Vec::new(),
            function: None,
        }
    }
}

impl fmt::Debug for FunctionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionSpec")
            .field("function_type", &self.function_type)
            .field("value_specs", &self.value_specs)
            .finish_non_exhaustive()
    }
}

/// Builds a [`FunctionSpec`]; see [`FunctionSpec::builder`].
#[must_use]
pub struct FunctionSpecBuilder {
    function_type: TypeName,
    value_specs: Vec<ValueSpecDescriptor>,
    function: Option<Arc<dyn StatefulFunction>>,
}

impl FunctionSpecBuilder {
    /// Registers a state value.
    pub fn with_value_spec<T: Type>(self, spec: &ValueSpec<T>) -> Self {
        self.with_value_spec_descriptor(spec.descriptor())
    }

    /// Registers a state value by its descriptor.
    pub fn with_value_spec_descriptor(mut self, descriptor: ValueSpecDescriptor) -> Self {
        self.value_specs.push(descriptor);
        self
    }

    /// Sets the implementation.
    pub fn with_function(mut self, f: impl StatefulFunction) -> Self {
        self.function = Some(Arc::new(f));
        self
    }

    /// Sets the implementation from a closure. Same as
    /// [`with_function`](Self::with_function), but the closure's argument and
    /// error types are inferred from this signature.
    pub fn with_fn<F>(self, f: F) -> Self
    where
        F: Fn(&mut Context<'_>, Message) -> Result<(), FunctionError> + Send + Sync + 'static,
    {
        self.with_function(f)
    }

    /// Sets an implementation that is already shared.
    pub fn with_shared_function(mut self, f: Arc<dyn StatefulFunction>) -> Self {
        self.function = Some(f);
        self
    }

    /// Checks the spec: an implementation is set, and state names are StateFun
    /// identifiers (`[A-Za-z_][A-Za-z0-9_]*`), unique, and expire after a
    /// positive time if at all.
    pub fn build(self) -> Result<FunctionSpec, SdkError> {
        let function_type = self.function_type;
        let function = self.function.ok_or_else(|| {
            SdkError::Incomplete(format!(
                "function spec `{function_type}` has no implementation; call with_function"
            ))
        })?;
        let mut names = HashSet::new();
        for spec in &self.value_specs {
            spec.validate().map_err(|e| {
                SdkError::InvalidSpec(format!("function type `{function_type}`: {e}"))
            })?;
            if !names.insert(spec.name.as_str()) {
                return Err(SdkError::InvalidSpec(format!(
                    "function type `{function_type}` registers the state value `{}` twice",
                    spec.name
                )));
            }
        }
        Ok(FunctionSpec {
            function_type,
            value_specs: self.value_specs,
            function,
        })
    }
}

impl fmt::Debug for FunctionSpecBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionSpecBuilder")
            .field("function_type", &self.function_type)
            .field("value_specs", &self.value_specs)
            .field("has_function", &self.function.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::Expiration;
    use crate::types;

    fn noop(_: &mut Context<'_>, _: Message) -> Result<(), FunctionError> {
        Ok(())
    }

    fn fn_type() -> TypeName {
        TypeName::parse("example/counter").unwrap()
    }

    #[test]
    fn builds_a_valid_spec() {
        let a = ValueSpec::new("a", types::INT);
        let b = ValueSpec::new("_b2", types::STRING).expire_after_write(Duration::from_secs(1));
        let spec = FunctionSpec::builder(fn_type())
            .with_value_spec(&a)
            .with_value_spec(&b)
            .with_function(noop)
            .build()
            .unwrap();
        assert_eq!(spec.function_type, fn_type());
        assert_eq!(spec.value_specs.len(), 2);
        assert_eq!(spec.value_specs[1].name, "_b2");
        assert_eq!(
            spec.value_specs[1].expiration,
            Expiration::AfterWrite(Duration::from_secs(1))
        );
        assert_eq!(
            spec.value_specs[1].typename.as_str(),
            types::STRING_TYPENAME
        );
        assert!(format!("{spec:?}").contains("example/counter"));
    }

    #[test]
    fn requires_a_function() {
        let err = FunctionSpec::builder(fn_type()).build().unwrap_err();
        assert!(matches!(err, SdkError::Incomplete(_)));
        assert!(err.to_string().contains("example/counter"), "{err}");
    }

    #[test]
    fn rejects_bad_state_names() {
        for bad in ["", "1a", "a-b", "a b", "ä", "a.b"] {
            let err = FunctionSpec::builder(fn_type())
                .with_value_spec(&ValueSpec::new(bad, types::INT))
                .with_function(noop)
                .build()
                .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, SdkError::InvalidSpec(_)), "{bad}: {text}");
            assert!(text.contains("example/counter"), "{text}");
            assert!(text.contains(&format!("`{bad}`")), "{text}");
        }
    }

    #[test]
    fn rejects_duplicates_and_zero_ttl() {
        let err = FunctionSpec::builder(fn_type())
            .with_value_spec(&ValueSpec::new("x", types::INT))
            .with_value_spec(&ValueSpec::new("x", types::LONG))
            .with_function(noop)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`x` twice"), "{err}");
        let err = FunctionSpec::builder(fn_type())
            .with_value_spec(&ValueSpec::new("x", types::INT).expire_after_call(Duration::ZERO))
            .with_function(noop)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("zero"), "{err}");
    }

    #[test]
    fn closures_and_structs_are_functions() {
        struct Counter;
        impl StatefulFunction for Counter {
            fn invoke(&self, _: &mut Context<'_>, _: Message) -> Result<(), FunctionError> {
                Err("boom".into())
            }
        }
        let spec = FunctionSpec::builder(fn_type())
            .with_function(Counter)
            .build()
            .unwrap();
        let shared = spec.function.clone();
        FunctionSpec::builder(fn_type())
            .with_shared_function(shared)
            .build()
            .unwrap();
        FunctionSpec::builder(fn_type())
            .with_function(
                |_: &mut Context<'_>, _: Message| -> Result<(), FunctionError> { Ok(()) },
            )
            .build()
            .unwrap();
    }
}
