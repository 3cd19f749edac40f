//! module.yaml model (being written).
