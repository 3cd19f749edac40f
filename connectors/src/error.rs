//! The one error type of all connectors.

use std::fmt;
use std::io;

/// A connector failure.
///
/// Every message names the connector kind and its id (as declared in
/// module.yaml) and the path or endpoint involved, and ends with what to do
/// next, because these errors reach operators who did not write the code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// A file, stdin or stdout could not be opened.
    #[error("{connector} `{id}`: cannot open `{path}`: {source}; {hint}")]
    Open {
        /// The connector kind, e.g. `file ingress`.
        connector: &'static str,
        /// The ingress or egress id.
        id: String,
        /// The path that failed.
        path: String,
        /// The underlying error.
        source: io::Error,
        /// What to do about it.
        hint: String,
    },
    /// Reading or writing failed after the connector was opened.
    #[error("{connector} `{id}`: I/O error on `{path}`: {source}; {hint}")]
    Io {
        /// The connector kind, e.g. `file egress`.
        connector: &'static str,
        /// The ingress or egress id.
        id: String,
        /// The path that failed.
        path: String,
        /// The underlying error.
        source: io::Error,
        /// What to do about it.
        hint: String,
    },
    /// The connector's configuration cannot work.
    #[error("{connector} `{id}`: {message}")]
    Config {
        /// The connector kind.
        connector: &'static str,
        /// The ingress or egress id.
        id: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Constructors, so that building an error takes one line. `hint` comes before
/// `source` so that it can be computed from the error before the error moves in.
impl ConnectorError {
    /// A [`ConnectorError::Open`] of connector kind `connector` (e.g.
    /// `file ingress`) with ingress or egress id `id`.
    pub(crate) fn open(
        connector: &'static str,
        id: impl fmt::Display,
        path: impl Into<String>,
        hint: impl Into<String>,
        source: io::Error,
    ) -> Self {
        ConnectorError::Open {
            connector,
            id: id.to_string(),
            path: path.into(),
            source,
            hint: hint.into(),
        }
    }

    /// A [`ConnectorError::Io`] of connector kind `connector` with ingress or
    /// egress id `id`.
    pub(crate) fn io(
        connector: &'static str,
        id: impl fmt::Display,
        path: impl Into<String>,
        hint: impl Into<String>,
        source: io::Error,
    ) -> Self {
        ConnectorError::Io {
            connector,
            id: id.to_string(),
            path: path.into(),
            source,
            hint: hint.into(),
        }
    }

    /// A [`ConnectorError::Config`] of connector kind `connector` with ingress
    /// or egress id `id`.
    pub(crate) fn config(
        connector: &'static str,
        id: impl fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        ConnectorError::Config {
            connector,
            id: id.to_string(),
            message: message.into(),
        }
    }
}

/// A hint for an open failure, by error kind.
pub(crate) fn open_hint(kind: io::ErrorKind, writing: bool) -> String {
    match kind {
        io::ErrorKind::NotFound if writing => "the directory does not exist; create it first \
             (the file egress does not create directories), or fix `path` in module.yaml"
            .to_string(),
        io::ErrorKind::NotFound => "check `path` in module.yaml; relative paths resolve \
             against the working directory of the statefun process"
            .to_string(),
        io::ErrorKind::PermissionDenied => format!(
            "grant the statefun process {} permission on it, or choose another path",
            if writing { "write" } else { "read" }
        ),
        _ => "check that the path names a regular file that this process can access".to_string(),
    }
}
