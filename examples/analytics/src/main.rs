//! `cargo run --release -p example-analytics [-- -w WORKERS]`: runs the
//! generator job (see the library docs) and prints each tier's count as it
//! changes, then the final count per tier.
//!
//! `cargo run --release -p example-analytics -- --kafka BOOTSTRAP --in TOPIC --out TOPIC [-w WORKERS]`:
//! runs the Kafka job ([`example_analytics::enrich`]): events (key user, value
//! points) from `--in`, enriched tiers to `--out`. Plan changes are read from
//! stdin as `USER<TAB>PLAN` lines (an empty plan removes the user's); the job
//! stops when stdin ends.

use std::io::BufRead;
use std::sync::Arc;

use example_analytics::enrich::{run_kafka, KafkaJob, PlanChange};
use statefun_engine::Shared;

fn main() -> Result<(), String> {
    let mut workers = 1;
    let (mut bootstrap, mut input, mut output) = (None, None, None);
    let mut args = std::env::args().skip(1);
    let usage = "use -w WORKERS, and --kafka BOOTSTRAP --in TOPIC --out TOPIC for the Kafka job";
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value; {usage}"));
        match arg.as_str() {
            "-w" | "--workers" => {
                workers = value("-w")?
                    .parse()
                    .map_err(|_| "-w needs a number of workers".to_owned())?;
            }
            "--kafka" => bootstrap = Some(value("--kafka")?),
            "--in" => input = Some(value("--in")?),
            "--out" => output = Some(value("--out")?),
            other => return Err(format!("unknown argument `{other}`; {usage}")),
        }
    }
    match (bootstrap, input, output) {
        (None, None, None) => run_generator(workers),
        (Some(bootstrap), Some(events_topic), Some(output_topic)) => {
            let job = KafkaJob {
                group: format!("analytics-{events_topic}"),
                bootstrap,
                events_topic,
                output_topic,
                workers,
            };
            let shared = Arc::new(Shared::default());
            let (send, plans) = std::sync::mpsc::channel();
            let stop = shared.clone();
            // Plan changes from stdin; its end stops the job.
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    let (user, plan) = line.split_once('\t').unwrap_or((line.as_str(), ""));
                    let change = match plan.trim() {
                        "" => PlanChange::Remove {
                            user: user.to_owned(),
                        },
                        plan => PlanChange::Set {
                            user: user.to_owned(),
                            plan: plan.to_owned(),
                        },
                    };
                    if send.send(change).is_err() {
                        return;
                    }
                }
                stop.request_shutdown();
            });
            run_kafka(&job, plans, shared)
        }
        _ => Err(format!("--kafka, --in and --out go together; {usage}")),
    }
}

fn run_generator(workers: usize) -> Result<(), String> {
    let tiers = example_analytics::run(workers, |tier, users| {
        println!("tier {tier}: {users} users");
    })?;
    println!("final:");
    for (tier, users) in tiers {
        println!("tier {tier}: {users} users");
    }
    Ok(())
}
