//! The stock `statefun` binary: no Rust functions registered (remote
//! functions only). Apps with Rust functions build their own binary around
//! `statefun_engine::run_from_args`.

fn main() -> std::process::ExitCode {
    statefun_engine::run_from_args(statefun_engine::FunctionRegistry::new())
}
