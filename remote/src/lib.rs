//! Remote functions for statefun-rs: StateFun's HTTP request-reply protocol,
//! so functions written with the official SDKs (Python, Java, Go, JavaScript)
//! run unchanged against this runtime.
//!
//! The crate is split so that the engine keeps control of ordering and
//! checkpoints while the I/O happens elsewhere:
//!
//! - [`protocol`] (pure): builds the [`ToFunction`](statefun_sdk::proto::request_reply::ToFunction)
//!   for one address and validates the answer into [`RemoteOutcome`].
//! - [`batcher`] (pure): one request in flight per address, batching what
//!   arrives meanwhile, with a per-address queue cap for backpressure.
//! - [`client`]: [`RemoteInvoker`], a pooled, retrying HTTP client on its own
//!   tokio runtime; the engine submits requests from its worker thread and is
//!   woken when answers arrive.
//! - [`concurrency`] (pure limits + slots): how many requests and connections
//!   one endpoint gets at once, adapted so that every server shape (one
//!   connection per request, single-threaded, pre-forked, asynchronous) works
//!   at its own speed.
//! - [`stats`]: per-endpoint counters (requests, retries, in flight, latency and
//!   batch-size histograms) the client keeps for the engine's `/metrics`.
//!
//! There is no timely dependency here: the engine's function operator owns a
//! [`Batcher`] and a [`RemoteInvoker`] and applies the effects.

#![warn(missing_docs)]

pub mod batcher;
pub mod client;
pub mod concurrency;
pub mod protocol;
pub mod stats;

pub use batcher::Batcher;
pub use client::{
    Completion, RemoteError, RemoteErrorDetails, RemoteErrorKind, RemoteInvoker, RemotePool,
};
pub use protocol::{
    build_request, parse_response, request_target, DelayedEffect, InvocationInput, ProtocolError,
    RemoteEffects, RemoteOutcome, StateMutation,
};
