//! Several module files loaded as one module: the union of their documents, with ids,
//! endpoint patterns and references checked across files as within one, diagnostics naming
//! each file, directories expanded to their `*.yaml`/`*.yml` files in name order, and every
//! item knowing the file (and so the directory) that declares it.

use std::path::{Path, PathBuf};

use statefun_module::*;

/// A scratch directory for one test, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "statefun-module-files-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    /// Writes `text` to `name` (parent directories created) and returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("parent dir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

const INGRESS: &str = "kind: io.statefun-rs.file.v1/ingress
spec:
  id: shop/orders
  path: orders.txt
  valueType: io.statefun.types/string
  targets: [shop/handler]
";

const EGRESS: &str = "kind: io.statefun-rs.file.v1/egress
spec:
  id: shop/out
  path: out.jsonl
";

const ENDPOINT: &str = "kind: io.statefun.endpoints.v2/http
spec:
  functions: shop/*
  urlPathTemplate: http://shop:8000/{function.name}
";

fn errors(result: Result<Module, Diagnostics>) -> Vec<String> {
    match result {
        Ok(m) => panic!("loaded, with warnings {:?}", m.warnings),
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_module_is_the_union_of_every_document_of_every_file() {
    let a = format!("{ENDPOINT}---\n{INGRESS}");
    let returns = INGRESS.replace("shop/orders", "shop/returns");
    let b = format!("{returns}---\n---\n{EGRESS}");
    let m = load_sources(&[("a.yaml", &a), ("b.yaml", &b)]).expect("loads");
    assert_eq!(m.files, ["a.yaml", "b.yaml"]);
    assert_eq!(m.file, "a.yaml, b.yaml");
    assert_eq!(m.endpoints.len(), 1);
    let ingresses: Vec<(String, &str)> = m
        .ingresses
        .iter()
        .map(|i| (i.id.to_string(), i.file.as_str()))
        .collect();
    assert_eq!(
        ingresses,
        [
            ("shop/orders".to_string(), "a.yaml"),
            ("shop/returns".to_string(), "b.yaml")
        ]
    );
    assert_eq!(
        (m.egresses.len(), m.egresses[0].file.as_str()),
        (1, "b.yaml")
    );
    assert_eq!(m.locations.egresses[0].spec.file, "b.yaml");
    // Documents count per file (the empty second one included).
    assert_eq!(m.locations.egresses[0].spec.document, 3);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert!(m.check_targets(&[]).is_empty());
}

#[test]
fn colliding_ids_name_both_files_and_lines() {
    // a.yaml declares both first; b.yaml repeats them in its second and third documents.
    let a = format!("{INGRESS}---\n{EGRESS}");
    let b = format!("{ENDPOINT}---\n{INGRESS}---\n{EGRESS}");
    assert_eq!(
        errors(load_sources(&[("a.yaml", &a), ("b.yaml", &b)])),
        [
            "b.yaml:8:7: document 2, spec.id: duplicate ingress id `shop/orders` (first declared at a.yaml:3, document 1)",
            "b.yaml:15:7: document 3, spec.id: duplicate egress id `shop/out` (first declared at a.yaml:10, document 2)",
        ]
    );
    // Within one file the message is as before.
    let one = format!("{INGRESS}---\n{INGRESS}");
    assert_eq!(
        errors(load_sources(&[("a.yaml", &one)])),
        ["a.yaml:10:7: document 2, spec.id: duplicate ingress id `shop/orders` (first declared in document 1 at line 3)"]
    );
}

#[test]
fn overlapping_endpoints_and_clusters_name_both_files() {
    let exact = "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/special\n  urlPathTemplate: http://special:8000/{function.name}\n";
    let cluster =
        "kind: io.statefun-rs.kafka.v1/cluster\nspec:\n  id: prod\n  address: kafka:9092\n";
    let a = format!("{ENDPOINT}---\n{cluster}");
    let b = format!("{exact}---\n{ENDPOINT}---\n{cluster}");
    assert_eq!(
        errors(load_sources(&[("a.yaml", &a), ("b.yaml", &b)])),
        [
            "b.yaml:3:14: document 1, spec.functions: warning: `shop/special` is also covered by `shop/*` (a.yaml:3, document 1); this more specific endpoint wins for it",
            "b.yaml:8:14: document 2, spec.functions: `shop/*` is already served by the endpoint declared at a.yaml:3, document 1; each function type must have one endpoint",
            "b.yaml:13:7: document 3, spec.id: Kafka cluster `prod` is declared twice (first at a.yaml:8)",
        ]
    );
}

#[test]
fn references_cross_files() {
    let kafka_ingress = "kind: io.statefun.kafka.v1/ingress
spec:
  id: shop/orders
  cluster: prod
  consumerGroupId: shop
  topics:
    - topic: orders
      valueType: io.statefun.types/string
      targets: [shop/handler]
  badRecords:
    policy: dead-letter
    egress: shop/dead
";
    let dead = "kind: io.statefun-rs.file.v1/egress\nspec:\n  id: shop/dead\n  path: dead.jsonl\n";
    let cluster = "kind: io.statefun-rs.kafka.v1/cluster\nspec:\n  id: prod\n  address: kafka:9092\n  propertiesFile: client.properties\n";
    let m = load_sources(&[
        ("ingest/orders.yaml", kafka_ingress),
        ("sinks/dead.yaml", dead),
        ("conf/kafka/cluster.yaml", cluster),
    ])
    .expect("a dead-letter egress and a cluster declared in other files");
    let IngressSpec::Kafka(k) = &m.ingresses[0].spec else {
        panic!("a Kafka ingress");
    };
    assert_eq!(k.address, "kafka:9092");
    // Relative to the file that declares the cluster, not to the ingress's or the first file.
    assert_eq!(
        k.properties_file.as_deref(),
        Some("conf/kafka/client.properties")
    );
    assert_eq!(
        m.ingresses[0].bad_records,
        Some(BadRecordPolicy::DeadLetter(DeadLetter {
            egress: TypeName::parse("shop/dead").expect("type name"),
            topic: None,
            stream: None,
        }))
    );
    // Without the file that declares them, both references are errors in the ingress's file.
    assert_eq!(
        errors(load_sources(&[("ingest/orders.yaml", kafka_ingress)])),
        [
            "ingest/orders.yaml:4:12: document 1, spec.cluster: no Kafka cluster `prod` is declared; add a document `kind: io.statefun-rs.kafka.v1/cluster` with `id: prod`",
            "ingest/orders.yaml:11:5: document 1, spec.badRecords: dead-letter egress `shop/dead` is not declared in this module; declare it (kind io.statefun.kafka.v1/egress, io.statefun.kinesis.v1/egress or io.statefun-rs.file.v1/egress)",
        ]
    );
}

#[test]
fn diagnostics_name_their_own_file_in_file_order() {
    let bad_a = EGRESS.replace("  path: out.jsonl", "  pth: out.jsonl");
    let bad_b = INGRESS.replace(
        "targets: [shop/handler]",
        "targets: [shop/handler, shop/handler]\n  follw: true",
    );
    assert_eq!(
        errors(load_sources(&[("b.yaml", &bad_b), ("a.yaml", &bad_a)])),
        [
            "b.yaml:6:27: document 1, spec.targets[1]: warning: target `shop/handler` is listed twice; it will receive each record twice",
            "b.yaml:7:3: document 1, spec.follw: unknown field `follw`; did you mean `follow`?",
            "a.yaml:4:3: document 1, spec.pth: unknown field `pth`; did you mean `path`?",
        ]
    );
}

#[test]
fn warnings_of_a_loaded_module_name_their_file() {
    let twice = INGRESS.replace(
        "targets: [shop/handler]",
        "targets: [shop/handler, shop/handler]",
    );
    let m = load_sources(&[
        ("a.yaml", EGRESS),
        ("b.yaml", &twice),
        ("c.yaml", "# nothing yet\n"),
    ])
    .expect("loads");
    let warnings: Vec<String> = m.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "b.yaml:6:27: document 1, spec.targets[1]: warning: target `shop/handler` is listed twice; it will receive each record twice",
            "c.yaml: warning: the file is empty: it declares no endpoints, ingresses or egresses",
        ]
    );
}

#[test]
fn a_directory_is_its_yaml_and_yml_files_in_name_order() {
    let dir = Scratch::new("order");
    dir.write("modules/b.yml", EGRESS);
    dir.write("modules/a.yaml", INGRESS);
    dir.write("modules/c.yaml", ENDPOINT);
    // Ignored: other files, hidden files and subdirectories.
    dir.write("modules/orders.txt", "not yaml: [");
    dir.write("modules/README.md", "# not a module");
    dir.write("modules/.backup.yaml", "not: [valid");
    dir.write("modules/old/x.yaml", "not: [valid");
    let modules = dir.path("modules");
    assert_eq!(
        module_files(&[&modules]).expect("lists"),
        [
            modules.join("a.yaml"),
            modules.join("b.yml"),
            modules.join("c.yaml")
        ]
    );
    let m = load_files(&[&modules]).expect("loads");
    assert_eq!(
        m.files,
        ["a.yaml", "b.yml", "c.yaml"].map(|f| shown(&modules.join(f)))
    );
    assert_eq!(m.ingresses[0].file, shown(&modules.join("a.yaml")));
    assert_eq!(m.egresses[0].file, shown(&modules.join("b.yml")));
    assert!(m.check_targets(&[]).is_empty());
    // Files and directories mix, in the order given.
    dir.write(
        "extra.yaml",
        "kind: io.statefun-rs.file.v1/egress\nspec: {id: shop/more, path: more.jsonl}\n",
    );
    let m = load_files(&[dir.path("extra.yaml"), modules.clone()]).expect("loads");
    assert_eq!(
        m.files,
        [
            shown(&dir.path("extra.yaml")),
            shown(&modules.join("a.yaml")),
            shown(&modules.join("b.yml")),
            shown(&modules.join("c.yaml")),
        ]
    );
    assert_eq!(
        m.egresses
            .iter()
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>(),
        ["shop/more", "shop/out"]
    );
}

#[test]
fn an_empty_directory_is_an_error_saying_so() {
    let dir = Scratch::new("empty");
    dir.write("empty/notes.txt", "kind: not a module");
    dir.write("empty/sub/a.yaml", EGRESS);
    let empty = dir.path("empty");
    assert_eq!(
        errors(load_files(&[&empty])),
        [format!(
            "{}: the directory holds no module file (`*.yaml` or `*.yml` directly in it)",
            shown(&empty)
        )]
    );
    assert_eq!(
        errors(load_files::<PathBuf>(&[])),
        ["(no module file): no module file or directory was given"]
    );
}

#[test]
fn a_file_given_twice_is_an_error_not_a_collision() {
    let dir = Scratch::new("twice");
    let a = dir.write("modules/a.yaml", INGRESS);
    assert_eq!(
        errors(load_files(&[dir.path("modules"), a.clone()])),
        [format!(
            "{}: the module file is given twice (also as {}); each file is read once",
            shown(&a),
            shown(&a)
        )]
    );
}

#[test]
fn unreadable_files_are_reported_before_anything_is_checked() {
    let dir = Scratch::new("unreadable");
    // This file's ingress would need the (unreadable) other file's egress.
    let a = dir.write(
        "a.yaml",
        &INGRESS.replace(
            "  targets",
            "  badRecords: {policy: dead-letter, egress: shop/out}\n  targets",
        ),
    );
    let b = dir.path("b.yaml");
    std::fs::write(&b, [0x6b, 0xff, 0xfe]).expect("write");
    let missing = dir.path("missing.yaml");
    assert_eq!(
        errors(load_files(&[&a, &b, &missing])),
        [
            format!(
                "{}: the file is not UTF-8 text (invalid byte at offset 1)",
                shown(&b)
            ),
            format!(
                "{}: cannot read the file: No such file or directory (os error 2)",
                shown(&missing)
            ),
        ]
    );
}

#[test]
fn each_item_knows_the_file_whose_directory_its_relative_paths_start_at() {
    let dir = Scratch::new("relative");
    let ingress = dir.write("teams/orders/io.yaml", INGRESS);
    let egress = dir.write("teams/sinks/out.yml", EGRESS);
    let m = load_files(&[dir.path("teams/orders"), egress.clone()]).expect("loads");
    let parent = |file: &str| Path::new(file).parent().map(Path::to_path_buf);
    assert_eq!(
        parent(&m.ingresses[0].file),
        ingress.parent().map(Path::to_path_buf)
    );
    assert_eq!(
        parent(&m.egresses[0].file),
        egress.parent().map(Path::to_path_buf)
    );
    // The paths themselves stay as written (the runtime resolves them).
    let (IngressSpec::File(i), EgressSpec::File(e)) = (&m.ingresses[0].spec, &m.egresses[0].spec)
    else {
        panic!("file ingress and egress");
    };
    assert_eq!(
        (i.path.as_str(), e.path.as_str()),
        ("orders.txt", "out.jsonl")
    );
}

#[test]
fn one_path_loads_as_load_file_does() {
    let dir = Scratch::new("single");
    let a = dir.write("module.yaml", &format!("{INGRESS}---\n{EGRESS}"));
    let many = load_files(&[&a]).expect("loads");
    let one = load_file(&a).expect("loads");
    assert_eq!((&many.file, &many.files), (&one.file, &one.files));
    assert_eq!(many.files, [shown(&a)]);
    assert_eq!(many.ingresses, one.ingresses);
    assert_eq!(many.egresses, one.egresses);
    assert_eq!(many.summary(), one.summary());
}

#[test]
fn the_summary_names_the_files_and_where_each_item_is_declared() {
    let a = format!("{ENDPOINT}---\n{INGRESS}");
    let m = load_sources(&[("fns.yaml", &a), ("io/out.yaml", EGRESS)]).expect("loads");
    assert_eq!(
        m.summary(),
        "fns.yaml, io/out.yaml: 1 ingress, 1 egress, 1 endpoint
ingresses:
  shop/orders (file orders.txt) [fns.yaml]
    orders.txt → io.statefun.types/string → shop/handler
egresses:
  shop/out (file out.jsonl, at-least-once) [io/out.yaml]
endpoints:
  shop/* → http://shop:8000/{function.name} (max batch 1000, call timeout 1min, connect timeout 10s) [fns.yaml]
"
    );
    // One file: as before, no per-item file.
    let one = load_sources(&[("module.yaml", &a)]).expect("loads");
    assert!(one.summary().starts_with("module.yaml: 1 ingress, 0 egresses, 1 endpoint\ningresses:\n  shop/orders (file orders.txt)\n"));
}
