//! The file connectors: `KEY<TAB>VALUE` lines in, JSON lines out.
//!
//! They exist so that a module can be tried, tested and demonstrated without
//! a broker: feed a file (or a pipe on stdin) and read what the functions
//! sent to their egresses from a file (or stdout).
//!
//! * `source` — [`FileSource`] and [`FileIngressConfig`]: lines from a file
//!   (optionally followed as it grows) or from stdin, and resuming a file from
//!   a checkpointed offset.
//! * `sink` — [`FileSink`] and [`FileEgressConfig`]: one JSON line per egress
//!   record, to a file or stdout.
//! * `marker` — the delivery marker `<path>.delivered` beside the output file,
//!   which makes the sink's exactly-once delivery survive crashes.
//!
//! This module holds only what those share (the egress's name in errors, the
//! buffer size) and re-exports their public types, so that every type is
//! `statefun_connectors::file::X`.

mod marker;
mod sink;
mod source;

pub use sink::{FileEgressConfig, FileSink};
pub use source::{FileIngressConfig, FileSource};
pub(crate) use source::{FilePosition, FILE_POSITION};

/// The egress kind in errors, of the sink and of its delivery marker.
const EGRESS: &str = "file egress";
/// Read buffer size: large enough that a poll of many short lines makes few
/// system calls. The sink's write buffer has the same size.
const READ_BUFFER: usize = 64 * 1024;

/// What the tests of the source, the sink and the marker share.
#[cfg(test)]
mod test_support {
    use statefun_sdk::{EgressMessage, TypeName, TypedValue};

    use crate::codec::encode_primitive_from_text;

    pub(super) const STRING: &str = "io.statefun.types/string";
    pub(super) const INT: &str = "io.statefun.types/int";

    /// The encoded value of primitive `typename` written as `text`.
    pub(super) fn enc(typename: &str, text: &str) -> Vec<u8> {
        encode_primitive_from_text(typename, text).unwrap().unwrap()
    }

    /// A record for the egress `example/out`.
    pub(super) fn egress(typename: &str, value: Vec<u8>) -> EgressMessage {
        EgressMessage {
            egress: TypeName::parse("example/out").unwrap(),
            value: TypedValue::new(typename, value),
        }
    }
}
