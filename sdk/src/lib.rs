//! The statefun-rs SDK: what a stateful function sees.
//!
//! Names, values and wire formats follow Apache Flink StateFun exactly, so
//! functions written with the official SDKs (Python, Java, Go, JS) exchange
//! messages and state with Rust functions unchanged.

#![warn(missing_docs)]

mod error;
pub mod typename;
pub mod value;

pub use error::SdkError;
pub use typename::{Address, TypeName};
pub use value::{EgressMessage, IngressMetadata, Message, TypedValue};
