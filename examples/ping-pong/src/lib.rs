//! Ping-pong: two function types bouncing a counter across addresses (and
//! so across workers) until it reaches zero.
//!
//! An ingress line `GROUP<TAB>N` sends `N` to `pingpong/ping` at id `GROUP`.
//! `ping/GROUP` sends `n - 1` to `pingpong/pong` at id `GROUP-pong`, which
//! sends `n - 1` back, and so on. Each side counts the messages it received
//! (`hops` state). The side that receives `0` reports its count to the
//! `pingpong/done` egress and sends `-1` to the other side, which reports too.
//! For an even `N`, both sides report `N / 2 + 1`.

use statefun_engine::FunctionRegistry;
use statefun_sdk::{
    Address, Context, EgressMessage, FunctionError, FunctionSpec, IntType, LongType, Message,
    MessageBuilder, StringType, TypeName, ValueSpec,
};

/// The ping function type.
pub const PING: &str = "pingpong/ping";
/// The pong function type.
pub const PONG: &str = "pingpong/pong";
/// The egress reports go to.
pub const DONE: &str = "pingpong/done";

fn hops() -> ValueSpec<LongType> {
    ValueSpec::new("hops", LongType)
}

fn bounce(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
    let n = message.as_value(&IntType)?;
    let spec = hops();
    let hops = ctx.get(&spec)?.unwrap_or(0) + 1;
    ctx.set(&spec, &hops)?;
    let me = ctx.self_address().clone();
    let (group, other) = if me.function_type.as_str() == PING {
        (
            me.id.clone(),
            Address::new(TypeName::parse(PONG)?, format!("{}-pong", me.id)),
        )
    } else {
        let group = statefun_sdk::Id::from(me.id.trim_end_matches("-pong"));
        (group.clone(), Address::new(TypeName::parse(PING)?, group))
    };
    if n <= 0 {
        let side = me.function_type.name().to_owned();
        ctx.send_egress(EgressMessage::of(
            TypeName::parse(DONE)?,
            &StringType,
            &format!("{group} {side} {hops}"),
        ));
        if n < 0 {
            return Ok(());
        }
    }
    let next = if n == 0 { -1 } else { n - 1 };
    ctx.send(MessageBuilder::for_target(other).with_int(next).build()?);
    Ok(())
}

/// A registry with `pingpong/ping` and `pingpong/pong`.
pub fn registry() -> Result<FunctionRegistry, String> {
    let mut registry = FunctionRegistry::new();
    for name in [PING, PONG] {
        let spec = FunctionSpec::builder(TypeName::parse(name).map_err(|e| e.to_string())?)
            .with_value_spec(&hops())
            .with_function(bounce)
            .build()
            .map_err(|e| e.to_string())?;
        registry.register(spec)?;
    }
    Ok(registry)
}
