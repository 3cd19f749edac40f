//! connectors (being written).
