//! The greeter binary produces the same greetings (as a multiset) with 1, 2
//! and 4 workers and with two processes.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_example-greeter");

/// Writes the input and a module.yaml whose egress goes to `out`.
fn setup(dir: &Path, out: &str) {
    let mut input = String::new();
    for round in 0..5 {
        for i in 0..200 {
            if (i + round) % 3 != 0 {
                input.push_str(&format!("user{i}\tuser{i}\n"));
            }
        }
    }
    std::fs::write(dir.join("names.txt"), input).unwrap();
    let yaml = format!(
        "kind: io.statefun-rs.file.v1/ingress\nspec:\n  id: example/names\n  path: names.txt\n  valueType: io.statefun.types/string\n  targets: [example/greeter]\n---\nkind: io.statefun-rs.file.v1/egress\nspec:\n  id: example/greets\n  path: {out}\n"
    );
    std::fs::write(dir.join(format!("{out}.yaml")), yaml).unwrap();
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.sort();
    lines
}

fn run(dir: &Path, out: &str, extra: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("run")
        .arg(dir.join(format!("{out}.yaml")))
        .args(extra)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

#[test]
fn same_egress_for_any_worker_and_process_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for workers in ["1", "2", "4"] {
        let out = format!("w{workers}.jsonl");
        setup(dir.path(), &out);
        let status = run(dir.path(), &out, &["-w", workers]).wait().unwrap();
        assert!(status.success(), "-w {workers}: {status}");
        outputs.push(sorted_lines(&dir.path().join(&out)));
    }
    // Two processes of two workers each, on localhost.
    let out = "n2.jsonl";
    setup(dir.path(), out);
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(
        &hostfile,
        format!(
            "127.0.0.1:{}\n127.0.0.1:{}\n",
            statefun_testkit::free_port(),
            statefun_testkit::free_port()
        ),
    )
    .unwrap();
    let hosts = hostfile.to_str().unwrap();
    let mut p0 = run(
        dir.path(),
        out,
        &["-w", "2", "-n", "2", "-p", "0", "-h", hosts],
    );
    let mut p1 = run(
        dir.path(),
        out,
        &["-w", "2", "-n", "2", "-p", "1", "-h", hosts],
    );
    assert!(p0.wait().unwrap().success());
    assert!(p1.wait().unwrap().success());
    outputs.push(sorted_lines(&dir.path().join(out)));

    let expected_records = (0..5)
        .map(|r| (0..200).filter(|i| (i + r) % 3 != 0).count())
        .sum::<usize>();
    assert_eq!(outputs[0].len(), expected_records);
    for (i, o) in outputs.iter().enumerate().skip(1) {
        assert_eq!(o, &outputs[0], "run {i} differs from -w 1");
    }
    // Spot-check exact content: user1 appears in rounds 0, 1, 3, 4 ((1 + r) % 3 != 0 for r = 0, 1, 3, 4).
    let user1: Vec<&String> = outputs[0]
        .iter()
        .filter(|l| l.contains("\"key\":\"user1\""))
        .collect();
    assert_eq!(user1.len(), 4);
    assert!(outputs[0].contains(&r#"{"egress":"example/greets","typename":"type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord","topic":"greetings","key":"user1","value":"Hello user1! I've seen you 4 times. 👋"}"#.to_string()));
}
