//! `statefun run|validate|describe` with an app split over module files in two directories,
//! run as a real process: directories expand to their module files, relative paths resolve
//! against the directory of the file that declares them (not the working directory, not the
//! first file), the summary names each item's file, and a collision across files names both.
//!
//! The stock binary registers no Rust function, so the app's one function is remote, on a
//! port nothing listens on: with `--on-remote-failure dead-letter=test/dead` every message
//! goes, unchanged, to the file egress declared in the other directory's file.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_statefun");

/// `io/ingress.yaml` (its input `in.txt` beside it) and `functions/module.yaml` (the
/// endpoint and the dead-letter egress), under `root`; returns the endpoint's port.
fn write_app(root: &Path) -> u16 {
    let port = statefun_testkit::free_port();
    std::fs::create_dir_all(root.join("io")).expect("io dir");
    std::fs::create_dir_all(root.join("functions")).expect("functions dir");
    std::fs::write(root.join("io/in.txt"), "a\thello\nb\tworld\nc\tagain\n").expect("input");
    std::fs::write(
        root.join("io/ingress.yaml"),
        "kind: io.statefun-rs.file.v1/ingress
spec:
  id: test/in
  path: in.txt
  valueType: io.statefun.types/string
  targets: [remote/fn]
",
    )
    .expect("ingress.yaml");
    std::fs::write(
        root.join("functions/module.yaml"),
        format!(
            "kind: io.statefun.endpoints.v2/http
spec:
  functions: remote/*
  urlPathTemplate: http://127.0.0.1:{port}/{{function.name}}
  transport:
    call: 1s
    connect: 200ms
---
kind: io.statefun-rs.file.v1/egress
spec:
  id: test/dead
  path: dead.jsonl
"
        ),
    )
    .expect("module.yaml");
    port
}

fn statefun(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(root)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("statefun runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_loads_two_directories_as_one_app_with_paths_relative_to_each_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write_app(root);
    let out = statefun(
        root,
        &[
            "run",
            "io/",
            "functions/",
            "--on-remote-failure",
            "dead-letter=test/dead",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The egress wrote beside its own file; nothing was read or written in the working
    // directory, the input came from beside the ingress's file.
    let written = std::fs::read_to_string(root.join("functions/dead.jsonl")).expect("dead.jsonl");
    let mut lines: Vec<&str> = written.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            r#"{"egress":"test/dead","typename":"io.statefun.types/string","value":"again"}"#,
            r#"{"egress":"test/dead","typename":"io.statefun.types/string","value":"hello"}"#,
            r#"{"egress":"test/dead","typename":"io.statefun.types/string","value":"world"}"#,
        ]
    );
    assert!(!root.join("dead.jsonl").exists());
    assert!(!root.join("io/dead.jsonl").exists());
}

#[test]
fn validate_and_describe_name_the_files_and_mix_files_and_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let port = write_app(root);
    let summary = format!(
        "io/ingress.yaml, functions/module.yaml: 1 ingress, 1 egress, 1 endpoint
ingresses:
  test/in (file in.txt) [io/ingress.yaml]
    in.txt → io.statefun.types/string → remote/fn
egresses:
  test/dead (file dead.jsonl, at-least-once) [functions/module.yaml]
endpoints:
  remote/* → http://127.0.0.1:{port}/{{function.name}} (max batch 1000, call timeout 1s, connect timeout 200ms) [functions/module.yaml]
"
    );
    let out = statefun(root, &["validate", "io/", "functions/module.yaml"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (Some(0), summary.clone(), String::new())
    );
    let out = statefun(root, &["describe", "io", "functions/module.yaml"]);
    let table = format!(
        "INGRESS  SOURCE       VALUE TYPE                TARGET     SERVED BY
test/in  file in.txt  io.statefun.types/string  remote/fn  http://127.0.0.1:{port}/fn
"
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (Some(0), format!("{summary}{table}"), String::new())
    );
}

#[test]
fn a_collision_across_files_names_both_and_nothing_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write_app(root);
    std::fs::create_dir_all(root.join("more")).expect("more dir");
    std::fs::copy(root.join("io/ingress.yaml"), root.join("more/copy.yml")).expect("copy");
    let collision =
        "error: more/copy.yml:3:7: document 1, spec.id: duplicate ingress id `test/in` \
                     (first declared at io/ingress.yaml:3, document 1)\n";
    let out = statefun(root, &["validate", "io/", "functions/", "more/"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (
            Some(1),
            String::new(),
            format!("{collision}io/, functions/, more/: 1 error(s); nothing was run\n")
        )
    );
    let out = statefun(root, &["run", "io/", "functions/", "more/"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (
            Some(1),
            String::new(),
            format!("{collision}1 error(s); nothing was run\n")
        )
    );
    assert!(!root.join("functions/dead.jsonl").exists());
    // A directory without module files is an error saying so.
    std::fs::create_dir_all(root.join("empty")).expect("empty dir");
    let out = statefun(root, &["run", "io/", "functions/", "empty"]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(1),
            "error: empty: the directory holds no module file (`*.yaml` or `*.yml` directly in it)\n\
             1 error(s); nothing was run\n"
                .to_string()
        )
    );
}

/// `validate` and `run` resolve targets the same way: a namespace target whose namespace
/// an endpoint serves by namespace is an error for both, naming the endpoint's file and line.
#[test]
fn validate_and_run_refuse_the_same_namespace_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write_app(root);
    let ingress = std::fs::read_to_string(root.join("io/ingress.yaml")).expect("ingress.yaml");
    std::fs::write(
        root.join("io/ingress.yaml"),
        ingress.replace("targets: [remote/fn]", "targets: [remote/*]"),
    )
    .expect("ingress.yaml");
    let problem = "io/ingress.yaml:6:13: document 1, spec.targets[0]: target `remote/*` of ingress \
                   `test/in`: namespace `remote` is served by the endpoint at functions/module.yaml:3";
    let out = statefun(root, &["validate", "io/", "functions/"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("error: {problem}")), "{stderr}");
    let out = statefun(root, &["run", "io/", "functions/"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(problem), "{stderr}");
    assert!(!root.join("functions/dead.jsonl").exists());
}
