//! The greeter: StateFun's classic first app, with Rust functions.
//!
//! Names arrive on a file ingress (`KEY<TAB>NAME` lines); the greeter
//! function for that key counts how often it has seen the name (`seen`
//! state) and sends a greeting to the `example/greets` egress as a Kafka
//! producer record (topic `greetings`, or `$GREETINGS_TOPIC`), which the file
//! egress prints as JSON and a Kafka egress writes to the topic.
//!
//! `module.yaml` runs it on files; `kafka.yaml` runs the same function on
//! Kafka topics (`names` in, `greetings` out).
//!

use statefun_engine::FunctionRegistry;
use statefun_sdk::{
    Context, FunctionError, FunctionSpec, IntType, KafkaEgressMessage, Message, TypeName, ValueSpec,
};

/// The greeter function type.
pub const GREETER: &str = "example/greeter";
/// The egress greetings go to.
pub const GREETS: &str = "example/greets";

fn seen() -> ValueSpec<IntType> {
    ValueSpec::new("seen", IntType)
}

fn greet(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    // A StateFun string (the file ingress, the SDKs), or plain UTF-8 bytes
    // under any other type (`example/name` in kafka.yaml: what a console
    // producer writes).
    let name = if message.is_string() {
        message.as_string()?
    } else {
        String::from_utf8(message.value.value)?
    };
    let seen_spec = seen();
    let seen = ctx.get(&seen_spec)?.unwrap_or(0) + 1;
    ctx.set(&seen_spec, &seen)?;
    let greeting = match seen {
        1 => format!("Hello {name}! 😎"),
        2 => format!("Hello again {name}! 🤗"),
        n => format!("Hello {name}! I've seen you {n} times. 👋"),
    };
    let egress = KafkaEgressMessage::for_egress(TypeName::parse(GREETS)?)
        .with_topic(greetings_topic())
        .with_key(&ctx.self_address().id)
        .with_utf8_value(&greeting)
        .build()?;
    ctx.send_egress(egress);
    Ok(())
}

/// The topic greetings are written to: `$GREETINGS_TOPIC`, default `greetings`.
pub fn greetings_topic() -> &'static str {
    static TOPIC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOPIC.get_or_init(|| {
        std::env::var("GREETINGS_TOPIC")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "greetings".to_owned())
    })
}

/// A registry with the greeter function.
pub fn registry() -> Result<FunctionRegistry, String> {
    let mut registry = FunctionRegistry::new();
    let spec = FunctionSpec::builder(TypeName::parse(GREETER).map_err(|e| e.to_string())?)
        .with_value_spec(&seen())
        .with_function(greet)
        .build()
        .map_err(|e| e.to_string())?;
    registry.register(spec)?;
    Ok(registry)
}
