//! The python-greeter example has no Rust code of its own: `functions.py`
//! holds the functions (official StateFun Python SDK) and the stock
//! `statefun` binary runs `module.yaml`. See `tests/` for the end-to-end test.
