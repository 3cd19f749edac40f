//! The `module.yaml` model of statefun-rs.
//!
//! Reads Apache Flink StateFun module files in both formats — the multi-document
//! `kind:`/`spec:` format (empty documents are skipped) and the legacy single-document
//! `version: "3.0"` format — for the kinds
//!
//! * `io.statefun.endpoints.v1/http`, `io.statefun.endpoints.v2/http`
//! * `io.statefun.kafka.v1/ingress`, `io.statefun.kafka.v1/egress`
//! * `io.statefun.kinesis.v1/ingress`, `io.statefun.kinesis.v1/egress`
//! * our development kinds `io.statefun-rs.file.v1/ingress|egress` and
//!   `io.statefun-rs.generator.v1/ingress`
//!
//! and validates them. Every problem in a file is reported at once, each naming the file,
//! document, line, column and field path. Unlike upstream, unknown fields are errors (with a
//! did-you-mean), because a silent typo loses data. Secrets (`sasl.password`,
//! `secretAccessKey`, anything named `*password*` or `*secret*`) are shown as `***` by
//! `Debug`, `Display` and [`Module::summary`].
//!
//! An app may be split over several module files — one per team or service, remote functions
//! in one, I/O in another — or a directory of them: [`load_files`] loads them as one module,
//! checking ids and references across files as within one (see [`module_files`] for which
//! files of a directory are read).
//!
//! ```
//! let text = r#"
//! kind: io.statefun.endpoints.v2/http
//! spec:
//!   functions: example/*
//!   urlPathTemplate: http://functions:8000/{function.name}
//! ---
//! kind: io.statefun-rs.file.v1/ingress
//! spec:
//!   id: example/names
//!   path: "-"
//!   valueType: io.statefun.types/string
//!   targets: [example/greeter]
//! "#;
//! let module = statefun_module::load_str(text, "module.yaml").unwrap();
//! assert_eq!(module.ingresses.len(), 1);
//! let greeter = statefun_sdk::TypeName::parse("example/greeter").unwrap();
//! assert!(module.endpoint_for(&greeter).is_some());
//!
//! let err = statefun_module::load_str("kind: io.statefun.kafka.v1/ingres\nspec: {}\n", "m.yaml")
//!     .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "m.yaml:1:7: document 1, kind: unknown kind `io.statefun.kafka.v1/ingres`; did you mean `io.statefun.kafka.v1/ingress`?"
//! );
//! ```

#![deny(missing_docs)]

mod diag;
mod fields;
mod files;
mod kinds;
mod load;
mod model;
mod report;
mod time;
mod yaml;

use std::path::Path;

pub use diag::{Diagnostic, Diagnostics, Location, Severity};
pub use files::{is_module_file_name, load_files, load_sources, module_files};
pub use model::{
    is_secret_key, AutoOffsetReset, AwsCredentials, AwsRegion, BadRecordPolicy, DeadLetter, Egress,
    EgressLocation, EgressSpec, EndpointVersion, FileDeliverySemantic, FileEgress, FileIngress,
    FunctionPattern, GeneratorIngress, HttpEndpoint, HttpTransport, Ingress, IngressLocation,
    IngressSpec, KafkaDeliverySemantic, KafkaEgress, KafkaIngress, KafkaStartupPosition,
    KafkaTopic, KinesisEgress, KinesisIngress, KinesisStartupPosition, KinesisStream, Module,
    PartitionOffset, Properties, RemoteMetadata, Route, Secret, SourceMap, TlsFiles, TransportType,
};
pub use report::TargetProblem;
pub use statefun_sdk::TypeName;
pub use time::{format_duration, parse_duration, parse_timestamp, Timestamp};

/// Reads, parses and validates the module file at `path`.
///
/// `Err` holds every error and warning found; `Ok` carries the warnings in
/// [`Module::warnings`]. Ingress targets are checked separately ([`Module::check_targets`]),
/// because only the caller knows which functions are registered in Rust. An app made of
/// several files, or of a directory of them, loads with [`load_files`].
pub fn load_file(path: &Path) -> Result<Module, Diagnostics> {
    let name = path.display().to_string();
    load_str(&files::read_text(path, &name)?, &name)
}

/// Parses and validates module text; `file_name` is used in diagnostics.
pub fn load_str(text: &str, file_name: &str) -> Result<Module, Diagnostics> {
    load::load(files::strip_bom(text), file_name)
}
