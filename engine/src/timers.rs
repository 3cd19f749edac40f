//! Delayed messages: pending until due, cancellable by token.
//!
//! A delayed message is held by the worker of the function that sent it, like
//! upstream StateFun, which keys the buffer by the sender. Cancellation
//! tokens are therefore scoped to the sending address: a token names at most
//! one pending message of that sender, sending a second message with a live
//! token is an error, and cancelling an unknown (or already fired) token is a
//! no-op.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use statefun_sdk::{Address, SdkError};

use crate::envelope::Envelope;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    envelope: Envelope,
    token: Option<(Address, String)>,
}

/// The delayed messages held by one worker, ordered by due time.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timers {
    queue: BTreeMap<(u64, u64), Pending>,
    tokens: HashMap<(Address, String), (u64, u64)>,
    next_seq: u64,
}

impl Timers {
    /// Whether `sender` has a pending message with `token`.
    pub fn token_in_use(&self, sender: &Address, token: &str) -> bool {
        // Avoid allocating a key on the common path where no tokens exist.
        !self.tokens.is_empty()
            && self
                .tokens
                .contains_key(&(sender.clone(), token.to_owned()))
    }

    /// Schedules `envelope` for `due_ms` (ms since the Unix epoch).
    pub fn schedule(
        &mut self,
        due_ms: u64,
        sender: &Address,
        token: Option<String>,
        envelope: Envelope,
    ) -> Result<(), SdkError> {
        let key = (due_ms, self.next_seq);
        let token = match token {
            Some(token) => {
                let k = (sender.clone(), token);
                if self.tokens.contains_key(&k) {
                    return Err(SdkError::TokenInUse(k.1));
                }
                self.tokens.insert(k.clone(), key);
                Some(k)
            }
            None => None,
        };
        self.next_seq += 1;
        self.queue.insert(key, Pending { envelope, token });
        Ok(())
    }

    /// Cancels `sender`'s pending message with `token`; returns whether one was pending.
    pub fn cancel(&mut self, sender: &Address, token: &str) -> bool {
        match self.tokens.remove(&(sender.clone(), token.to_owned())) {
            Some(key) => self.queue.remove(&key).is_some(),
            None => false,
        }
    }

    /// Removes and returns every message due at or before `now_ms`, oldest first.
    pub fn pop_due(&mut self, now_ms: u64) -> Vec<Envelope> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let pending = entry.remove();
            if let Some(token) = pending.token {
                self.tokens.remove(&token);
            }
            due.push(pending.envelope);
        }
        due
    }

    /// When the next message is due, if any is pending.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.queue.keys().next().map(|k| k.0)
    }

    /// The number of pending messages.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Every pending message with its due time and token, oldest first: for moving
    /// them to the workers that own their senders after a rescale.
    pub fn into_delayed(self) -> Vec<Delayed> {
        self.queue
            .into_iter()
            .map(|((due_ms, _), p)| Delayed {
                due_ms,
                token: p.token,
                envelope: p.envelope,
            })
            .collect()
    }

    /// Adds a message taken out by [`Timers::into_delayed`], token included.
    pub fn insert(&mut self, delayed: Delayed) {
        let key = (delayed.due_ms, self.next_seq);
        self.next_seq += 1;
        if let Some(token) = &delayed.token {
            self.tokens.insert(token.clone(), key);
        }
        self.queue.insert(
            key,
            Pending {
                envelope: delayed.envelope,
                token: delayed.token,
            },
        );
    }
}

/// A pending delayed message outside of [`Timers`] (on its way to another worker).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delayed {
    /// When it is due (ms since the Unix epoch).
    pub due_ms: u64,
    /// Its cancellation token, scoped to the sender.
    pub token: Option<(Address, String)>,
    /// The message.
    pub envelope: Envelope,
}

impl Delayed {
    /// The id whose worker holds the message: its sender's (tokens are scoped to the
    /// sender, who cancels them there), or the target's for a message without sender.
    pub fn holder_id(&self) -> &str {
        match (&self.token, &self.envelope.caller) {
            (Some((sender, _)), _) => &sender.id,
            (None, Some(caller)) => &caller.id,
            (None, None) => &self.envelope.target.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statefun_sdk::{TypeName, TypedValue};

    fn addr(id: &str) -> Address {
        Address::new(TypeName::parse("ns/f").unwrap(), id)
    }

    fn env(id: &str) -> Envelope {
        Envelope {
            target: addr(id),
            caller: None,
            value: TypedValue::new("ns/t", vec![]),
            metadata: crate::envelope::Metadata::None,
        }
    }

    #[test]
    fn fires_in_due_order_and_not_before() {
        let mut t = Timers::default();
        t.schedule(200, &addr("s"), None, env("b")).unwrap();
        t.schedule(100, &addr("s"), None, env("a")).unwrap();
        t.schedule(200, &addr("s"), None, env("c")).unwrap();
        assert!(t.pop_due(99).is_empty());
        assert_eq!(t.next_due_ms(), Some(100));
        let ids: Vec<_> = t.pop_due(200).into_iter().map(|e| e.target.id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(t.is_empty());
    }

    #[test]
    fn moved_messages_keep_due_order_and_tokens() {
        let mut t = Timers::default();
        t.schedule(300, &addr("s1"), Some("tok".into()), env("a"))
            .unwrap();
        t.schedule(100, &addr("s2"), None, env("b")).unwrap();
        let moved = t.into_delayed();
        assert_eq!(moved.len(), 2);
        assert_eq!(moved[0].holder_id(), "b", "no token, no caller: the target");
        assert_eq!(moved[1].holder_id(), "s1", "a token's sender holds it");
        let mut other = Timers::default();
        other.schedule(200, &addr("x"), None, env("c")).unwrap();
        for d in moved {
            other.insert(d);
        }
        assert!(other.token_in_use(&addr("s1"), "tok"));
        let ids: Vec<_> = other
            .pop_due(250)
            .into_iter()
            .map(|e| e.target.id)
            .collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(other.cancel(&addr("s1"), "tok"));
        assert!(other.is_empty());
    }

    #[test]
    fn tokens_cancel_and_are_scoped_by_sender() {
        let mut t = Timers::default();
        t.schedule(100, &addr("s1"), Some("tok".into()), env("a"))
            .unwrap();
        // Same token, other sender: independent.
        t.schedule(100, &addr("s2"), Some("tok".into()), env("b"))
            .unwrap();
        // Same token, same sender, still pending: an error.
        assert_eq!(
            t.schedule(100, &addr("s1"), Some("tok".into()), env("c")),
            Err(SdkError::TokenInUse("tok".into()))
        );
        assert!(t.cancel(&addr("s1"), "tok"));
        assert!(!t.cancel(&addr("s1"), "tok"), "second cancel is a no-op");
        assert!(!t.cancel(&addr("s1"), "unknown"));
        let ids: Vec<_> = t.pop_due(1000).into_iter().map(|e| e.target.id).collect();
        assert_eq!(ids, ["b"]);
        // Fired tokens are free again.
        t.schedule(100, &addr("s2"), Some("tok".into()), env("d"))
            .unwrap();
    }
}
