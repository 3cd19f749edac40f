//! The crash-test app: keyed counters that message each other and use
//! delayed messages, writing to an exactly-once file egress (or Kafka, or
//! Kinesis when `CRASH_OUT_STREAM` names a stream).
//!
//! Every egress line is derived from state, so the output proves the state:
//! for a key seen `n` times the egress holds `count KEY 1` … `count KEY n`
//! and `tick KEY 1` … `tick KEY n` (one delayed self-message per record),
//! and for every audit id `audit ID 1` … `audit ID m` (one message per
//! record of its keys). After any number of crashes and restarts, each of
//! those lines must appear exactly once — a lost message leaves a gap, a
//! duplicated one a repeat, and state that went back in time a repeat too.

use std::time::Duration;

use statefun_engine::FunctionRegistry;
use statefun_sdk::{
    Context, FunctionError, FunctionSpec, IntType, KafkaEgressMessage, KinesisEgressMessage,
    Message, MessageBuilder, TypeName, ValueSpec,
};

/// The counter function type (ingress records go here; the key is the id).
pub const COUNTER: &str = "crash/counter";
/// The audit function type: counts messages from counters.
pub const AUDIT: &str = "crash/audit";
/// The egress every line goes to.
pub const OUT: &str = "crash/out";
/// How many audit instances the counters spread over.
pub const AUDITS: u32 = 7;
/// The delay of a counter's tick message (`CRASH_TICK_MS` overrides it, so that a test
/// can stop the job with ticks still pending).
pub const TICK: Duration = Duration::from_millis(30);

fn tick_delay() -> Duration {
    std::env::var("CRASH_TICK_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(TICK, Duration::from_millis)
}

fn count() -> ValueSpec<IntType> {
    ValueSpec::new("count", IntType)
}

fn ticks() -> ValueSpec<IntType> {
    ValueSpec::new("ticks", IntType)
}

/// The audit id of a counter key (a stable hash of the key).
pub fn audit_of(key: &str) -> String {
    let h = key
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    format!("audit-{}", h % AUDITS)
}

/// The Kafka topic of egress records (`CRASH_OUT_TOPIC`, default `crash-out`).
fn topic() -> String {
    std::env::var("CRASH_OUT_TOPIC").unwrap_or_else(|_| "crash-out".to_string())
}

/// The Kinesis stream of egress records (`CRASH_OUT_STREAM`); when set,
/// lines go out as Kinesis records instead of Kafka records.
fn stream() -> Option<String> {
    std::env::var("CRASH_OUT_STREAM")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Every line goes out as a Kafka producer record keyed by the instance id,
/// so the same app writes to a file egress (which prints the value) or to
/// Kafka; with `CRASH_OUT_STREAM` as a Kinesis record partitioned by it.
fn line(ctx: &mut Context<'_>, text: String) -> Result<(), FunctionError> {
    let id = ctx.self_address().id.clone();
    let egress = TypeName::parse(OUT)?;
    let record = match stream() {
        Some(stream) => KinesisEgressMessage::for_egress(egress)
            .with_stream(&stream)
            .with_partition_key(&id)
            .with_utf8_value(&text)
            .build()?,
        None => KafkaEgressMessage::for_egress(egress)
            .with_topic(&topic())
            .with_key(&id)
            .with_utf8_value(&text)
            .build()?,
    };
    ctx.send_egress(record);
    Ok(())
}

fn counter(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let id = ctx.self_address().id.clone();
    if message.as_string().ok().as_deref() == Some("tick") && ctx.caller().is_some() {
        let spec = ticks();
        let n = ctx.get(&spec)?.unwrap_or(0) + 1;
        ctx.set(&spec, &n)?;
        return line(ctx, format!("tick {id} {n}"));
    }
    let spec = count();
    let n = ctx.get(&spec)?.unwrap_or(0) + 1;
    ctx.set(&spec, &n)?;
    line(ctx, format!("count {id} {n}"))?;
    let audit = MessageBuilder::for_address(TypeName::parse(AUDIT)?, audit_of(&id))
        .with_string(&id)
        .build()?;
    ctx.send(audit);
    let tick = MessageBuilder::for_address(TypeName::parse(COUNTER)?, id)
        .with_string("tick")
        .build()?;
    ctx.send_after(tick_delay(), tick);
    Ok(())
}

fn audit(ctx: &mut Context<'_>, _message: Message) -> Result<(), FunctionError> {
    let id = ctx.self_address().id.clone();
    let spec = count();
    let n = ctx.get(&spec)?.unwrap_or(0) + 1;
    ctx.set(&spec, &n)?;
    line(ctx, format!("audit {id} {n}"))
}

/// The egress lines the state implies after the counters received the
/// records with `keys` (one key per record, in any order): for each key seen
/// `n` times `count KEY 1..n` and `tick KEY 1..n`, for each audit id `audit
/// ID 1..m`. Crash tests compare the egress with this, line by line.
///
/// ```
/// let lines = example_crash_counter::expected_lines(["a", "a"].into_iter().map(String::from));
/// assert!(lines.contains_key("count a 2") && lines.contains_key("tick a 1"));
/// assert_eq!(lines.len(), 6);
/// ```
pub fn expected_lines(
    keys: impl Iterator<Item = String>,
) -> std::collections::BTreeMap<String, u32> {
    use std::collections::BTreeMap;
    let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
    for key in keys {
        *per_key.entry(key).or_default() += 1;
    }
    let mut expected = BTreeMap::new();
    let mut audits: BTreeMap<String, u64> = BTreeMap::new();
    for (key, n) in &per_key {
        for i in 1..=*n {
            expected.insert(format!("count {key} {i}"), 1);
            expected.insert(format!("tick {key} {i}"), 1);
        }
        *audits.entry(audit_of(key)).or_default() += n;
    }
    for (audit, n) in &audits {
        for i in 1..=*n {
            expected.insert(format!("audit {audit} {i}"), 1);
        }
    }
    expected
}

/// A registry with the counter and audit functions.
pub fn registry() -> Result<FunctionRegistry, String> {
    let mut registry = FunctionRegistry::new();
    let parse = |s: &str| TypeName::parse(s).map_err(|e| e.to_string());
    let counter = FunctionSpec::builder(parse(COUNTER)?)
        .with_value_spec(&count())
        .with_value_spec(&ticks())
        .with_function(counter)
        .build()
        .map_err(|e| e.to_string())?;
    let audit = FunctionSpec::builder(parse(AUDIT)?)
        .with_value_spec(&count())
        .with_function(audit)
        .build()
        .map_err(|e| e.to_string())?;
    registry.register(counter)?;
    registry.register(audit)?;
    Ok(registry)
}
