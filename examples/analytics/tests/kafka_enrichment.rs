//! The Kafka job ([`example_analytics::enrich`]) end to end on the test broker
//! (ci/install-kafka.sh), on 1 and 2 workers: events from a real topic, per-user
//! state, a differential join with the host's reference collection (plan changes
//! included) and the enriched result read back from the output topic with a
//! read_committed consumer, record for record.
//!
//! The test runs in three phases and moves to the next only once the previous
//! one's exact output is in the topic, so what each phase writes is
//! determined: the join's output for a time is written only when every input
//! (the function graph's egress and the host's input) is past it.

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use example_analytics::enrich::{run_kafka, KafkaJob, PlanChange};
use statefun_engine::shared::Metrics;
use statefun_engine::Shared;
use statefun_testkit::kafka::{create_topics, produce, read_committed, text};

const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];

/// Produces `(user, points)` events, each user's to one partition (by its
/// place in [`USERS`]), so that a user's events keep their order.
fn produce_events(bootstrap: &str, topic: &str, events: &[(&str, i64)]) {
    produce(
        bootstrap,
        topic,
        events.iter().map(|(user, points)| {
            let partition = USERS.iter().position(|u| u == user).unwrap_or(0) as i32 % 2;
            (partition, (*user).to_owned(), points.to_string())
        }),
    );
}

fn set(plans: &Sender<PlanChange>, user: &str, plan: &str) {
    plans
        .send(PlanChange::Set {
            user: user.to_owned(),
            plan: plan.to_owned(),
        })
        .expect("the job takes plan changes");
}

fn remove(plans: &Sender<PlanChange>, user: &str) {
    plans
        .send(PlanChange::Remove {
            user: user.to_owned(),
        })
        .expect("the job takes plan changes");
}

/// Reads the output topic until `before + expected.len()` records are in and
/// asserts that the records after the first `before` are exactly `expected`
/// (as a multiset: two workers write concurrently). `settle` keeps reading
/// after that many arrived, so that a record too many would show.
fn expect_phase(
    bootstrap: &str,
    topic: &str,
    before: usize,
    expected: &[(&str, &str)],
    settle: Duration,
    what: &str,
) -> usize {
    let total = before + expected.len();
    let records = read_committed(bootstrap, topic, total, settle);
    let all: Vec<(String, String)> = records
        .iter()
        .map(|m| {
            let (key, value, _headers) = text(m);
            (key, value)
        })
        .collect();
    assert_eq!(
        all.len(),
        total,
        "{what}: every record so far, and no more: {all:?}"
    );
    let mut got = all[before..].to_vec();
    got.sort();
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    assert_eq!(got, want, "{what}");
    total
}

fn run_job_on(bootstrap: &str, workers: usize) {
    let events = statefun_testkit::unique_name("analytics-events");
    let output = statefun_testkit::unique_name("analytics-enriched");
    create_topics(bootstrap, &[(&events, 2), (&output, 1)]);
    let job = KafkaJob {
        bootstrap: bootstrap.to_owned(),
        events_topic: events.clone(),
        output_topic: output.clone(),
        group: statefun_testkit::unique_name("analytics-group"),
        workers,
    };
    let what = |phase: &str| format!("{workers} worker(s), {phase}");

    // Phase 1: the reference collection as the job starts, and the first events.
    // No user is on the doubling plan yet, so scores do not depend on whether a
    // plan or an event reaches a scorer first.
    let (plans, changes) = mpsc::channel();
    for (user, plan) in [
        ("alice", "basic"),
        ("bob", "team"),
        ("carol", "basic"),
        ("erin", "basic"),
    ] {
        set(&plans, user, plan);
    }
    produce_events(
        bootstrap,
        &events,
        &[
            ("alice", 4),
            ("bob", 6),
            ("carol", 9),
            ("dave", 25), // two tiers at once; no plan: joins nothing yet
            ("erin", 10),
            ("alice", 7),
            ("bob", 5),
            ("carol", 3),
            ("bob", 9),
        ],
    );
    let shared = Arc::new(Shared::default());
    let runner = {
        let (job, shared) = (job.clone(), shared.clone());
        std::thread::spawn(move || run_kafka(&job, changes, shared))
    };
    let seen = expect_phase(
        bootstrap,
        &output,
        0,
        &[
            ("alice", "+1 tier 1 basic"),
            ("bob", "+1 tier 1 team"),
            ("bob", "+1 tier 2 team"),
            ("carol", "+1 tier 1 basic"),
            ("erin", "+1 tier 1 basic"),
        ],
        Duration::ZERO,
        &what("phase 1: events joined with the initial plans"),
    );

    // Phase 2: the reference collection changes. Carol's enriched tier moves to
    // her new plan, dave's tiers join his first plan, erin's are retracted; bob's
    // change to the plan he has nets out; a change with no user id is a bad
    // record of the host ingress (skipped) and joins nothing.
    set(&plans, "carol", "pro");
    set(&plans, "dave", "basic");
    remove(&plans, "erin");
    set(&plans, "bob", "team");
    set(&plans, "", "pro");
    let seen = expect_phase(
        bootstrap,
        &output,
        seen,
        &[
            ("carol", "-1 tier 1 basic"),
            ("carol", "+1 tier 1 pro"),
            ("dave", "+1 tier 1 basic"),
            ("dave", "+1 tier 2 basic"),
            ("erin", "-1 tier 1 basic"),
        ],
        Duration::ZERO,
        &what("phase 2: plan changes"),
    );

    // Phase 3: more events. Carol's 5 points count double on `pro` (the scorer
    // got her plan through the host ingress): 12 + 10 reaches tier 2, where 17
    // would not. Erin reaches tier 2 with no plan: nothing to join.
    produce_events(
        bootstrap,
        &events,
        &[
            ("carol", 5),
            ("dave", 5),
            ("erin", 15),
            ("alice", 8),
            ("bob", 1),
        ],
    );
    expect_phase(
        bootstrap,
        &output,
        seen,
        &[("carol", "+1 tier 2 pro"), ("dave", "+1 tier 3 basic")],
        Duration::from_secs(2),
        &what("phase 3: events after the changes"),
    );

    shared.request_shutdown();
    drop(plans);
    runner
        .join()
        .expect("the job thread")
        .unwrap_or_else(|e| panic!("{}: the job fails: {e}", what("end")));
    let m = &shared.metrics;
    // 14 events and 9 plan changes read; the change without a user skipped.
    assert_eq!(
        Metrics::get(&m.records_in),
        14 + 9,
        "{}",
        what("records in")
    );
    assert_eq!(Metrics::get(&m.records_skipped), 1, "{}", what("skipped"));
    assert_eq!(
        Metrics::get(&m.failed_invocations),
        0,
        "{}",
        what("failures")
    );
}

#[test]
fn enriched_tiers_are_exact_on_one_and_two_workers() {
    let Some(bootstrap) = statefun_testkit::kafka_bootstrap() else {
        return;
    };
    for workers in [1, 2] {
        run_job_on(&bootstrap, workers);
    }
}
