//! `example-crash-counter run module.yaml --state-dir DIR`: the crash-test app
//! (see the crate docs and `tests/crash.rs`).

fn main() -> std::process::ExitCode {
    match example_crash_counter::registry() {
        Ok(registry) => statefun_engine::run_from_args(registry),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
