//! Generates a module with 1 000 Kafka ingresses (and an endpoint), loads it and prints how
//! long loading took. A benchmark to watch, not a timed test:
//! `cargo run --release -p statefun-module --example load_many_ingresses [count]`.

use std::fmt::Write as _;
use std::time::Instant;

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut text = String::from(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: bench/*\n  urlPathTemplate: http://functions:8000/{function.name}\n",
    );
    for i in 0..count {
        let _ = write!(
            text,
            "---\nkind: io.statefun.kafka.v1/ingress\nspec:\n  id: bench/ingress-{i}\n  address: kafka:9092\n  consumerGroupId: group-{i}\n  startupPosition:\n    type: at-timestamp\n    timestamp: \"2026-04-23T00:00:00.000Z\"\n  properties:\n    - max.poll.records: 500\n  topics:\n    - topic: topic-{i}\n      valueType: bench/Event\n      targets: [bench/fn-{i}, bench/*]\n    - topic: other-{i}\n      valueType: bench/Other\n      targets: [bench/fn-{i}]\n"
        );
    }
    let start = Instant::now();
    let module = match statefun_module::load_str(&text, "bench.yaml") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let loaded = start.elapsed();
    let unserved = module.check_targets(&[]);
    let checked = start.elapsed();
    println!(
        "loaded {} ingresses ({} bytes of YAML) in {:.1} ms; target check done at {:.1} ms ({} unserved)",
        module.ingresses.len(),
        text.len(),
        loaded.as_secs_f64() * 1e3,
        checked.as_secs_f64() * 1e3,
        unserved.len()
    );
}
