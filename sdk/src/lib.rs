//! The statefun-rs SDK: what a stateful function sees.
//!
//! Names, values and wire formats follow Apache Flink StateFun exactly, so
//! functions written with the official SDKs (Python, Java, Go, JS) exchange
//! messages and state with Rust functions unchanged.
//!
//! ```
//! use statefun_sdk::{
//!     types, Context, FunctionError, FunctionSpec, KafkaEgressMessage, Message, TypeName,
//!     ValueSpec,
//! };
//!
//! let seen = ValueSpec::new("seen", types::INT);
//! let greeter = FunctionSpec::builder(TypeName::parse("example/greeter")?)
//!     .with_value_spec(&seen)
//!     .with_fn(move |ctx: &mut Context<'_>, message: Message| {
//!         let name = message.as_string()?;
//!         let count = ctx.get(&seen)?.unwrap_or(0) + 1;
//!         ctx.set(&seen, &count)?;
//!         ctx.send_egress(
//!             KafkaEgressMessage::for_egress(TypeName::parse("example/greets")?)
//!                 .with_topic("greetings")
//!                 .with_key(&name)
//!                 .with_utf8_value(&format!("Hello {name}, #{count}"))
//!                 .build()?,
//!         );
//!         Ok(())
//!     })
//!     .build()?;
//! # let _ = greeter;
//! # Ok::<(), FunctionError>(())
//! ```

#![warn(missing_docs)]

pub mod context;
pub mod egress;
mod error;
pub mod function;
pub mod message;
pub mod proto;
pub mod spec;
pub mod symbol;
pub mod typename;
pub mod types;
pub mod value;

pub use context::{Context, InvocationHost};
pub use egress::{KafkaEgressMessage, KinesisEgressMessage};
pub use error::SdkError;
pub use function::{FunctionError, FunctionSpec, FunctionSpecBuilder, StatefulFunction};
pub use message::MessageBuilder;
pub use spec::{Expiration, ValueSpec, ValueSpecDescriptor};
pub use symbol::Symbol;
pub use typename::{Address, Id, TypeName};
pub use types::{
    BoolType, DoubleType, FloatType, IntType, JsonType, LongType, ProtobufType, RawType,
    StringType, Type,
};
pub use value::{EgressMessage, IngressMetadata, Message, TypedValue};
