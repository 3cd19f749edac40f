//! The registry of functions implemented in Rust.

use std::collections::BTreeMap;

use statefun_sdk::{FunctionSpec, TypeName};

/// Functions implemented in Rust, by function type.
///
/// A user binary registers its functions here and hands the registry to
/// [`crate::run_from_args`]; module.yaml then routes ingresses to them.
///
/// ```
/// use statefun_engine::FunctionRegistry;
/// use statefun_sdk::{FunctionSpec, TypeName, Context, Message, FunctionError};
///
/// let mut registry = FunctionRegistry::new();
/// let greeter = FunctionSpec::builder(TypeName::parse("example/greeter").unwrap())
///     .with_function(|_ctx: &mut Context<'_>, _msg: Message| -> Result<(), FunctionError> { Ok(()) })
///     .build()
///     .unwrap();
/// registry.register(greeter).unwrap();
/// assert!(registry.contains(&TypeName::parse("example/greeter").unwrap()));
/// ```
#[derive(Clone, Default)]
pub struct FunctionRegistry {
    functions: BTreeMap<TypeName, FunctionSpec>,
}

impl FunctionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a function; a function type can be registered once.
    pub fn register(&mut self, spec: FunctionSpec) -> Result<(), String> {
        if self.functions.contains_key(&spec.function_type) {
            return Err(format!(
                "function type `{}` is registered twice",
                spec.function_type
            ));
        }
        self.functions.insert(spec.function_type.clone(), spec);
        Ok(())
    }

    /// The function registered for `function_type`.
    pub fn get(&self, function_type: &TypeName) -> Option<&FunctionSpec> {
        self.functions.get(function_type)
    }

    /// Whether `function_type` is registered.
    pub fn contains(&self, function_type: &TypeName) -> bool {
        self.functions.contains_key(function_type)
    }

    /// All registered functions, ordered by type name.
    pub fn iter(&self) -> impl Iterator<Item = &FunctionSpec> {
        self.functions.values()
    }
}
