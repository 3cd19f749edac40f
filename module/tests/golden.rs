//! Golden tests: each `tests/golden/<case>.yaml` is loaded as `module.yaml`, and what the
//! loader reports (every error and warning, one per line, as `statefun validate` prints them)
//! must equal `tests/golden/<case>.out` exactly. Run with `UPDATE_GOLDEN=1` to rewrite the
//! `.out` files after a deliberate change, and review the diff.

use std::path::PathBuf;

fn report(text: &str) -> String {
    match statefun_module::load_str(text, "module.yaml") {
        Err(diagnostics) => diagnostics.to_string(),
        Ok(module) => module
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn check(case: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input = std::fs::read_to_string(dir.join(format!("{case}.yaml"))).expect("input");
    let got = report(&input);
    let out = dir.join(format!("{case}.out"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&out, format!("{got}\n")).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(
        got,
        want.trim_end_matches('\n'),
        "\n--- {case}: got ---\n{got}\n--- want ---\n{want}"
    );
}

macro_rules! golden {
    ($($case:ident),* $(,)?) => {
        $(#[test] fn $case() { check(stringify!($case)); })*

        #[test]
        fn every_golden_input_has_a_test() {
            let known = [$(stringify!($case)),*];
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
            for entry in std::fs::read_dir(dir).expect("golden dir") {
                let name = entry.expect("entry").file_name().to_string_lossy().to_string();
                if let Some(case) = name.strip_suffix(".yaml") {
                    assert!(known.contains(&case), "tests/golden/{name} has no golden! entry");
                }
            }
        }
    };
}

golden!(
    all_errors_together,
    arn_region_mismatch,
    aws_settings,
    bad_duration,
    bad_offsets_syntax,
    bad_timestamp,
    document_not_a_mapping,
    duplicate_egress_id,
    duplicate_ingress_id,
    duplicate_key,
    endpoint_overlap,
    endpoint_specific_within_namespace,
    endpoint_url,
    endpoint_version_fields,
    exactly_once_timeout_above_15min,
    exactly_once_without_timeout,
    generator_key_order,
    generator_stamp,
    generator_values,
    kafka_topics,
    kinesis_egress_missing_stream_name,
    legacy_functions_section,
    legacy_id_conflict,
    legacy_name_in_kind_format,
    legacy_role_mismatch,
    legacy_unsupported_kind,
    malformed_arn,
    missing_required_field,
    negative_partition,
    numeric_epoch_timestamp,
    option_not_applicable,
    target_comma_list,
    target_empty_parts,
    target_list_expected,
    target_wildcard_namespace,
    targets_empty,
    timeout_on_at_least_once,
    transaction_timeout_millis_not_a_number,
    typename_without_namespace,
    unknown_field,
    unknown_kind,
    unknown_kind_no_suggestion,
    unknown_startup_position,
    unknown_transport_type,
    unsupported_version,
    yaml_syntax_error,
);
