//! `cargo run --release -p example-greeter -- run examples/greeter/module.yaml`

fn main() -> std::process::ExitCode {
    match example_greeter::registry() {
        Ok(registry) => statefun_engine::run_from_args(registry),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
