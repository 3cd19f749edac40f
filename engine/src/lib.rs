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
//!   caller's timely scope, so it can be embedded in a larger dataflow: the
//!   host feeds it module sources ([`dataflow::ingress_stream`]) and streams
//!   of its own ([`dataflow::host_ingress`], declared as a
//!   [`dataflow::HostIngress`] and routed like module ingresses), takes the
//!   egresses it consumes as streams ([`dataflow::egress_streams`]) and lets
//!   [`dataflow::attach_sinks`] write the others. State is in memory (or any
//!   [`state::StateBackend`]); checkpoints are `statefun run`'s only
//!   (docs/EMBEDDING.md).
//!
//! Invariants the modules keep (docs/DURABILITY.md has the full argument):
//! * Only [`dataflow`] touches timely; everything else is plain code that
//!   its operators call, testable without a dataflow.
//! * Decisions are pure and I/O sits at the edges: routing ([`keygroup`]),
//!   the checkpoint protocol ([`checkpoint`]'s `evidence`, `rescale`, the
//!   restore agreement) and invocation ([`invoke`]: atomic, applied only on
//!   `Ok`) take and return values; stores, sources and sinks are behind traits.
//! * Within the crate, dependencies run one way: [`app`] resolves the module
//!   into [`entry::FunctionEntry`]s, routes and sinks; [`remote`] and
//!   [`dead_letter`] use [`invoke`], which uses [`entry`], [`state`] and
//!   [`timers`]; [`dataflow`] sits on top of all of them.
//! * A sink delivers a checkpoint's output only with evidence that every
//!   worker wrote it; a restart resumes from the last checkpoint every worker
//!   completed, so output is exactly once under any crash.

#![warn(missing_docs)]

pub mod app;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dataflow;
pub mod dead_letter;
pub mod entry;
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
pub mod top;

pub use app::{Application, Settings};
pub use cli::run_from_args;
pub use envelope::Envelope;
pub use registry::FunctionRegistry;
pub use runner::{run_module, RunError, RunOptions};
pub use shared::Shared;
