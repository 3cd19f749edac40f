//! The invocation context: what a function can see and do while it handles
//! one message.

use std::time::Duration;

use crate::spec::ValueSpec;
use crate::types::Type;
use crate::{Address, EgressMessage, IngressMetadata, Message, SdkError};

/// The runtime side of an invocation, implemented by the engine.
///
/// State is addressed by the value spec's name and carried as the type's wire
/// bytes; [`Context`] adds the typed layer on top.
pub trait InvocationHost {
    /// The current bytes of a state value, `None` when it is empty (or
    /// expired); `Err(SdkError::UnknownState)` when the function did not
    /// register a value spec of this name.
    fn state_get(&mut self, name: &str) -> Result<Option<&[u8]>, SdkError>;
    /// Replaces a state value; `Err(SdkError::UnknownState)` when not registered.
    fn state_set(&mut self, name: &str, value: Vec<u8>) -> Result<(), SdkError>;
    /// An empty buffer for [`Context::set`] to encode a value into before
    /// handing it to [`InvocationHost::state_set`]: a host that keeps the
    /// buffers it is given can return them here, so that a state write
    /// allocates nothing. The default allocates a new one.
    fn state_buffer(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// Clears a state value; `Err(SdkError::UnknownState)` when not registered.
    fn state_remove(&mut self, name: &str) -> Result<(), SdkError>;
    /// Sends a message to a function.
    fn send(&mut self, message: Message);
    /// Sends a message after a delay. With a cancellation token, fails with
    /// `Err(SdkError::TokenInUse)` while another pending delayed message of
    /// this function instance holds the same token.
    fn send_after(
        &mut self,
        delay: Duration,
        message: Message,
        cancellation_token: Option<String>,
    ) -> Result<(), SdkError>;
    /// Cancels the pending delayed message with this token, if there is one.
    fn cancel_delayed_message(&mut self, token: &str);
    /// Sends a message to an egress.
    fn send_egress(&mut self, message: EgressMessage);
}

/// What a function sees during one invocation.
///
/// ```
/// use statefun_sdk::{types, Context, FunctionError, Message, MessageBuilder, ValueSpec};
///
/// fn greet(ctx: &mut Context<'_>, message: Message) -> Result<(), FunctionError> {
///     let seen = ValueSpec::new("seen", types::INT);
///     let count = ctx.get(&seen)?.unwrap_or(0) + 1;
///     ctx.set(&seen, &count)?;
///     let name = message.as_string()?;
///     let reply = MessageBuilder::for_address(ctx.self_address().function_type.clone(), "printer")
///         .with_string(&format!("Hello {name}, #{count}"))
///         .build()?;
///     ctx.send(reply);
///     Ok(())
/// }
/// # let _ = greet;
/// ```
pub struct Context<'a> {
    self_address: &'a Address,
    caller: Option<&'a Address>,
    metadata: Option<&'a IngressMetadata>,
    host: &'a mut dyn InvocationHost,
}

impl<'a> Context<'a> {
    /// A context for one invocation of `self_address`.
    pub fn new(
        self_address: &'a Address,
        caller: Option<&'a Address>,
        metadata: Option<&'a IngressMetadata>,
        host: &'a mut dyn InvocationHost,
    ) -> Self {
        Context {
            self_address,
            caller,
            metadata,
            host,
        }
    }

    /// The address of the function instance invoked.
    pub fn self_address(&self) -> &Address {
        self.self_address
    }

    /// The sender of the message; `None` when it came from an ingress.
    pub fn caller(&self) -> Option<&Address> {
        self.caller
    }

    /// Where the ingress record behind the message came from; `None` for
    /// messages sent by functions.
    pub fn metadata(&self) -> Option<&IngressMetadata> {
        self.metadata
    }

    /// Sends a message to a function.
    pub fn send(&mut self, message: Message) {
        self.host.send(message);
    }

    /// Sends a message after a delay, without a cancellation token.
    pub fn send_after(&mut self, delay: Duration, message: Message) {
        // Without a token there is nothing that can be in use.
        let _ = self.host.send_after(delay, message, None);
    }

    /// Sends a message after a delay with a cancellation token, which
    /// [`Context::cancel_delayed_message`] takes. Fails with
    /// `SdkError::TokenInUse` while another pending delayed message of this
    /// instance has the token.
    pub fn send_after_with_token(
        &mut self,
        delay: Duration,
        message: Message,
        token: impl Into<String>,
    ) -> Result<(), SdkError> {
        self.host.send_after(delay, message, Some(token.into()))
    }

    /// Cancels the pending delayed message with this token, if there is one.
    pub fn cancel_delayed_message(&mut self, token: &str) {
        self.host.cancel_delayed_message(token);
    }

    /// Sends a message to an egress.
    pub fn send_egress(&mut self, message: EgressMessage) {
        self.host.send_egress(message);
    }

    /// Reads a state value; `Ok(None)` when it is empty.
    pub fn get<T: Type>(&mut self, spec: &ValueSpec<T>) -> Result<Option<T::Value>, SdkError> {
        match self.host.state_get(spec.name())? {
            Some(bytes) => spec.value_type().decode(bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Writes a state value.
    pub fn set<T: Type>(&mut self, spec: &ValueSpec<T>, value: &T::Value) -> Result<(), SdkError> {
        let mut bytes = self.host.state_buffer();
        bytes.clear();
        spec.value_type().try_encode_into(value, &mut bytes)?;
        self.host.state_set(spec.name(), bytes)
    }

    /// Clears a state value.
    pub fn remove<T: Type>(&mut self, spec: &ValueSpec<T>) -> Result<(), SdkError> {
        self.host.state_remove(spec.name())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::types::{self, JsonType};
    use crate::{TypeName, TypedValue};

    #[derive(Default)]
    struct TestHost {
        registered: Vec<&'static str>,
        state: HashMap<String, Vec<u8>>,
        sent: Vec<Message>,
        delayed: Vec<(Duration, Message, Option<String>)>,
        cancelled: Vec<String>,
        egress: Vec<EgressMessage>,
    }

    impl TestHost {
        fn check(&self, name: &str) -> Result<(), SdkError> {
            if self.registered.contains(&name) {
                Ok(())
            } else {
                Err(SdkError::UnknownState(name.to_string()))
            }
        }
    }

    impl InvocationHost for TestHost {
        fn state_get(&mut self, name: &str) -> Result<Option<&[u8]>, SdkError> {
            self.check(name)?;
            Ok(self.state.get(name).map(Vec::as_slice))
        }
        fn state_set(&mut self, name: &str, value: Vec<u8>) -> Result<(), SdkError> {
            self.check(name)?;
            self.state.insert(name.to_string(), value);
            Ok(())
        }
        fn state_remove(&mut self, name: &str) -> Result<(), SdkError> {
            self.check(name)?;
            self.state.remove(name);
            Ok(())
        }
        fn send(&mut self, message: Message) {
            self.sent.push(message);
        }
        fn send_after(
            &mut self,
            delay: Duration,
            message: Message,
            token: Option<String>,
        ) -> Result<(), SdkError> {
            if let Some(t) = &token {
                if self.delayed.iter().any(|(_, _, o)| o.as_ref() == Some(t)) {
                    return Err(SdkError::TokenInUse(t.clone()));
                }
            }
            self.delayed.push((delay, message, token));
            Ok(())
        }
        fn cancel_delayed_message(&mut self, token: &str) {
            self.cancelled.push(token.to_string());
            self.delayed.retain(|(_, _, t)| t.as_deref() != Some(token));
        }
        fn send_egress(&mut self, message: EgressMessage) {
            self.egress.push(message);
        }
    }

    fn addr(id: &str) -> Address {
        Address::new(TypeName::parse("test/fn").unwrap(), id)
    }

    fn msg(text: &str) -> Message {
        Message::new(
            addr("other"),
            TypedValue::new(types::STRING_TYPENAME, types::STRING.encode(&text.into())),
        )
    }

    #[test]
    fn typed_state_roundtrip() {
        let mut host = TestHost {
            registered: vec!["count", "profile"],
            ..TestHost::default()
        };
        let me = addr("me");
        let count = ValueSpec::new("count", types::LONG);
        let profile = ValueSpec::new(
            "profile",
            JsonType::<HashMap<String, u32>>::new(TypeName::parse("test/profile").unwrap()),
        );
        {
            let mut ctx = Context::new(&me, None, None, &mut host);
            assert_eq!(ctx.get(&count).unwrap(), None);
            ctx.set(&count, &41).unwrap();
            let next = ctx.get(&count).unwrap().unwrap() + 1;
            ctx.set(&count, &next).unwrap();
            assert_eq!(ctx.get(&count).unwrap(), Some(42));
            ctx.set(&profile, &HashMap::from([("age".to_string(), 7)]))
                .unwrap();
            assert_eq!(ctx.get(&profile).unwrap().unwrap()["age"], 7);
            ctx.remove(&profile).unwrap();
            assert_eq!(ctx.get(&profile).unwrap(), None);
        }
        // State is stored in the wire format: LongWrapper(42).
        assert_eq!(host.state["count"], [0x09, 42, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn unknown_state_and_bad_bytes_are_errors() {
        let mut host = TestHost {
            registered: vec!["count"],
            ..TestHost::default()
        };
        host.state.insert("count".into(), vec![0xff]);
        let me = addr("me");
        let mut ctx = Context::new(&me, None, None, &mut host);
        let missing = ValueSpec::new("missing", types::INT);
        assert_eq!(
            ctx.get(&missing),
            Err(SdkError::UnknownState("missing".into()))
        );
        assert!(ctx.set(&missing, &1).is_err());
        assert!(ctx.remove(&missing).is_err());
        let count = ValueSpec::new("count", types::INT);
        assert!(matches!(ctx.get(&count), Err(SdkError::Decode { .. })));
    }

    #[test]
    fn messaging_goes_to_the_host() {
        let mut host = TestHost::default();
        let me = addr("me");
        let caller = addr("caller");
        let metadata = IngressMetadata::Generator { sequence: 3 };
        {
            let mut ctx = Context::new(&me, Some(&caller), Some(&metadata), &mut host);
            assert_eq!(ctx.self_address(), &me);
            assert_eq!(ctx.caller(), Some(&caller));
            assert_eq!(ctx.metadata(), Some(&metadata));
            ctx.send(msg("a"));
            ctx.send_after(Duration::from_secs(1), msg("b"));
            ctx.send_after_with_token(Duration::from_secs(2), msg("c"), "t")
                .unwrap();
            assert_eq!(
                ctx.send_after_with_token(Duration::from_secs(2), msg("d"), "t"),
                Err(SdkError::TokenInUse("t".into()))
            );
            ctx.cancel_delayed_message("t");
            ctx.send_egress(EgressMessage::new(
                TypeName::parse("test/out").unwrap(),
                TypedValue::new(types::STRING_TYPENAME, vec![]),
            ));
        }
        assert_eq!(host.sent, vec![msg("a")]);
        assert_eq!(host.delayed.len(), 1);
        assert_eq!(host.delayed[0].1, msg("b"));
        assert_eq!(host.cancelled, vec!["t".to_string()]);
        assert_eq!(host.egress.len(), 1);
    }
}
