//! 100 000 hops of ping-pong across 4 workers end with exact counts.

use std::sync::Arc;

use statefun_engine::dataflow::ClusterConfig;
use statefun_engine::{run_module, RunOptions, Shared};

#[test]
fn hundred_thousand_hops_across_four_workers() {
    let dir = tempfile::tempdir().unwrap();
    let groups: String = (1..=10).map(|g| format!("g{g}\t10000\n")).collect();
    std::fs::write(dir.path().join("groups.txt"), groups).unwrap();
    std::fs::write(
        dir.path().join("module.yaml"),
        "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: pingpong/start\n  path: groups.txt\n  valueType: io.statefun.types/int\n  targets: [pingpong/ping]\n---\nkind: io.statefun-rs.file.v1/egress\nspec:\n  id: pingpong/done\n  path: out.jsonl\n",
    )
    .unwrap();
    let registry = example_ping_pong::registry().unwrap();
    let options = RunOptions {
        cluster: ClusterConfig {
            workers: 4,
            ..ClusterConfig::default()
        },
        ..RunOptions::default()
    };
    let report = run_module(
        &dir.path().join("module.yaml"),
        &registry,
        &options,
        Arc::new(Shared::default()),
    )
    .unwrap();
    // Values 10000..=0 plus the final -1: 10 002 messages per group.
    assert_eq!(report.invocations, 10 * 10_002);
    assert_eq!(report.failed_invocations, 0);
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let mut values: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["value"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    values.sort();
    let mut expected: Vec<String> = (1..=10)
        .flat_map(|g| [format!("g{g} ping 5001"), format!("g{g} pong 5001")])
        .collect();
    expected.sort();
    assert_eq!(values, expected);
}
