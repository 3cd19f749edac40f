//! `cargo run --release -p example-ping-pong -- run examples/ping-pong/module.yaml -w 4`

fn main() -> std::process::ExitCode {
    match example_ping_pong::registry() {
        Ok(registry) => statefun_engine::run_from_args(registry),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
