//! The sink side of the connector interface.
//!
//! The engine decides *when* records may leave (after a checkpoint is
//! globally complete, for exactly-once sinks); a [`Sink`] only knows *how*.

use statefun_sdk::EgressMessage;

use crate::ConnectorError;

/// An egress sink.
///
/// `write` may buffer; only after `flush` returns `Ok` are the records handed
/// to the destination (the OS, a broker). The engine calls `flush` at the
/// points where it promises delivery (checkpoints, shutdown), so a sink never
/// has to guess.
pub trait Sink: Send {
    /// Accepts a batch of egress records, in order.
    fn write(&mut self, records: &[EgressMessage]) -> Result<(), ConnectorError>;

    /// Pushes everything written so far to the destination.
    fn flush(&mut self) -> Result<(), ConnectorError>;
}
