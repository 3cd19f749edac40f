//! Diagnostics: errors and warnings that name the file, document, line, column and field.

use std::fmt;

/// How serious a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The module cannot be used as written.
    Error,
    /// The module loads, but probably not as the author meant.
    Warning,
}

/// One problem found in a module file.
///
/// Displayed as `module.yaml:12:7: document 2, spec.topics[0].targets[1]: <message>`;
/// warnings put `warning: ` before the message. Parts that are unknown (no line,
/// document 0 for file-level problems, an empty field path) are left out.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file name as given to the loader.
    pub file: String,
    /// 1-based index of the YAML document in the file (counting empty ones); 0 for the whole file.
    pub document: usize,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Path of the field inside the document, e.g. `spec.topics[0].targets[1]`.
    pub field: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The same diagnostic with another severity (e.g. `validate` shows unserved targets as warnings).
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// A diagnostic at `location`.
    pub fn at(severity: Severity, location: &Location, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            file: location.file.clone(),
            document: location.document,
            line: location.line,
            column: location.column,
            field: location.field.clone(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if self.document > 0 {
            write!(f, "document {}", self.document)?;
            if self.field.is_empty() {
                f.write_str(": ")?;
            } else {
                f.write_str(", ")?;
            }
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a file, errors and warnings, in source order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    /// Whether there is at least one error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Where something was declared: file, document, line, column and field path.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Location {
    /// The file name as given to the loader.
    pub file: String,
    /// 1-based document index.
    pub document: usize,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Field path inside the document.
    pub field: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let mut d = Diagnostic {
            severity: Severity::Error,
            file: "module.yaml".into(),
            document: 2,
            line: Some(12),
            column: Some(7),
            field: "spec.topics[0].targets[1]".into(),
            message: "bad".into(),
        };
        assert_eq!(
            d.to_string(),
            "module.yaml:12:7: document 2, spec.topics[0].targets[1]: bad"
        );
        d.severity = Severity::Warning;
        d.field.clear();
        assert_eq!(d.to_string(), "module.yaml:12:7: document 2: warning: bad");
        d.document = 0;
        d.line = None;
        assert_eq!(d.to_string(), "module.yaml: warning: bad");
    }
}
