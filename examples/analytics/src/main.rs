//! `cargo run --release -p example-analytics [-- -w WORKERS]`: runs the
//! analytics job (see the library docs) and prints each tier's count as it
//! changes, then the final count per tier.

fn main() -> Result<(), String> {
    let mut workers = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-w" | "--workers" => {
                workers = args
                    .next()
                    .and_then(|w| w.parse().ok())
                    .ok_or("-w needs a number of workers")?;
            }
            other => return Err(format!("unknown argument `{other}`; use -w WORKERS")),
        }
    }
    let tiers = example_analytics::run(workers, |tier, users| {
        println!("tier {tier}: {users} users");
    })?;
    println!("final:");
    for (tier, users) in tiers {
        println!("tier {tier}: {users} users");
    }
    Ok(())
}
