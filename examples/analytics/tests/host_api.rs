//! The embedding API refuses bad declarations before a dataflow runs, with
//! errors naming what is wrong (no broker needed: nothing connects).

use std::sync::Arc;

use example_analytics::enrich::{module_text, registry, KafkaJob, PLANS, PLAN_TYPE, SCORER, TIERS};
use statefun_engine::dataflow::{egress_streams, HostIngress};
use statefun_engine::{Application, Settings};
use statefun_module::{BadRecordPolicy, DeadLetter, Module};
use statefun_sdk::{EgressMessage, TypeName};
use timely::dataflow::operators::ToStream;

fn app() -> (Module, Arc<Application>) {
    let job = KafkaJob {
        bootstrap: "localhost:1".into(),
        events_topic: "events".into(),
        output_topic: "out".into(),
        group: "g".into(),
        workers: 1,
    };
    let module = statefun_module::load_str(&module_text(&job), "analytics-kafka.yaml").unwrap();
    let app = Application::new(&module, &registry().unwrap(), Settings::default()).unwrap();
    (module, Arc::new(app))
}

#[test]
fn a_host_ingress_resolves_like_a_module_ingress() {
    let (module, app) = app();
    let plan = HostIngress::new(PLANS, PLAN_TYPE, &[SCORER, "analytics/*"])
        .resolve(&module, &app)
        .unwrap();
    assert_eq!(plan.id().as_str(), PLANS);
    let targets: Vec<&str> = plan.targets().iter().map(|t| t.as_str()).collect();
    assert_eq!(
        targets,
        [SCORER, SCORER],
        "an exact type, then a namespace's types"
    );
}

#[test]
fn every_problem_of_a_host_ingress_is_named() {
    let (module, app) = app();
    let errors = HostIngress::new(PLANS, "no-namespace", &["analytics/nobody", "bad target"])
        .resolve(&module, &app)
        .unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].contains("valueType `no-namespace`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("target `analytics/nobody` of ingress `analytics/plans`")
            && errors[1].contains("register a Rust function"),
        "{}",
        errors[1]
    );
    assert!(errors[2].contains("target `bad target`"), "{}", errors[2]);

    let errors = HostIngress::new("analytics/events", PLAN_TYPE, &[])
        .resolve(&module, &app)
        .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("id of an ingress module.yaml declares"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("has no targets"), "{}", errors[1]);

    let errors = HostIngress::new(PLANS, PLAN_TYPE, &[SCORER])
        .bad_records(BadRecordPolicy::DeadLetter(DeadLetter {
            egress: TypeName::parse(TIERS).unwrap(),
            topic: None,
            stream: None,
        }))
        .resolve(&module, &app)
        .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("dead-letter") && errors[0].contains("not supported for host ingresses"),
        "{}",
        errors[0]
    );
}

#[test]
fn only_declared_egresses_can_be_taken() {
    let (_module, app) = app();
    let error = timely::execute_directly(move |worker| {
        worker.dataflow::<u64, _, _>(|scope| {
            let egress = Vec::<EgressMessage>::new().to_stream(scope);
            let ids = [
                TypeName::parse(TIERS).unwrap(),
                TypeName::parse("analytics/missing").unwrap(),
            ];
            egress_streams(egress, &app, &ids).err()
        })
    });
    let error = error.expect("an undeclared egress is an error");
    assert!(
        error.contains("`analytics/missing`") && !error.contains(TIERS),
        "{error}"
    );
}

#[test]
fn a_bad_host_record_fails_the_job_by_policy_naming_the_ingress() {
    use std::sync::Mutex;

    use statefun_engine::dataflow::{host_ingress, HostRecord};
    use statefun_engine::Shared;
    use statefun_sdk::IngressMetadata;
    use timely::dataflow::operators::Inspect;

    let (module, app) = app();
    let plans = HostIngress::new(PLANS, PLAN_TYPE, &[SCORER])
        .bad_records(BadRecordPolicy::Fail)
        .resolve(&module, &app)
        .unwrap();
    let shared = Arc::new(Shared::default());
    let routed = Arc::new(Mutex::new(Vec::new()));
    let (seen, s) = (routed.clone(), shared.clone());
    let read_at = IngressMetadata::File {
        path: "plans.tsv".into(),
        line: 3,
    };
    let records = vec![
        HostRecord::new("alice", "pro").with_metadata(read_at.clone()),
        HostRecord::new("", "pro"),
    ];
    timely::execute_directly(move |worker| {
        worker.dataflow::<u64, _, _>(|scope| {
            host_ingress(records.to_stream(scope), &plans, &s)
                .inspect(move |e| seen.lock().unwrap().push(e.clone()));
        });
    });
    let routed = routed.lock().unwrap();
    assert_eq!(routed.len(), 1, "{routed:?}");
    assert_eq!(routed[0].target.to_string(), "analytics/scorer/alice");
    assert_eq!(routed[0].value.typename.as_str(), PLAN_TYPE);
    assert_eq!(routed[0].value.value, b"pro");
    assert_eq!(routed[0].metadata.get().as_deref(), Some(&read_at));
    let failure = shared.failure().expect("the job fails");
    assert!(
        failure.contains("ingress `analytics/plans`")
            && failure.contains("key is empty")
            && failure.contains("a host record"),
        "{failure}"
    );
}
