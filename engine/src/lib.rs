//! The statefun-rs runtime: Apache Flink StateFun's programming model on
//! timely-dataflow.
//!
//! Functions are virtual instances addressed by `namespace/type` + id, with
//! private state, messaging each other freely (cycles included), fed by
//! ingresses and writing to egresses declared in a StateFun `module.yaml`.
//!
//! * [`run_from_args`] is the `statefun` command line for a binary that
//!   registers its own Rust functions in a [`FunctionRegistry`].
//! * [`dataflow::build_function_graph`] builds the function graph inside a
//!   caller's timely scope, so it can be embedded in a larger dataflow.

#![warn(missing_docs)]

pub mod app;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dataflow;
pub mod dead_letter;
pub mod envelope;
pub mod failpoint;
pub mod invoke;
pub mod keygroup;
pub mod observe;
pub mod registry;
pub mod remote;
pub mod restart;
pub mod runner;
pub mod shared;
pub mod state;
pub mod timers;

pub use app::{Application, Settings};
pub use cli::run_from_args;
pub use envelope::Envelope;
pub use registry::FunctionRegistry;
pub use runner::{run_module, RunError, RunOptions};
pub use shared::Shared;
