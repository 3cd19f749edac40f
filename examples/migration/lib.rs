//! The migration example has no Rust code: `module.yaml` and `functions.py` are an app
//! written for Apache Flink StateFun 3.3 (official Python SDK, Kafka in and out), run
//! unchanged by the stock `statefun` binary. `tests/migration.rs` runs it end to end.
