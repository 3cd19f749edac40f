//! Per-address batching of remote invocations.
//!
//! StateFun's rule for remote functions: at most one request in flight per
//! address, so a function instance sees its messages in order and its state
//! is never written by two concurrent invocations. Messages that arrive while
//! a request is in flight wait and go out together as the next batch (up to
//! `max_num_batch_requests`), which is what makes remote functions fast under
//! load.
//!
//! Upstream stalls the whole task when one address has too much queued. Here
//! the cap is per address: [`Batcher::over_limit`] tells the engine which
//! address is over it, so it can hold back the senders of that address only
//! and keep every other address on the worker moving.
//!
//! The batcher is pure bookkeeping (no clocks, no I/O), so the engine owns it
//! on its worker thread and tests drive it step by step.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use statefun_sdk::Address;

/// Queues messages per address and hands out batches, one in flight per address.
///
/// `T` is whatever the engine keeps per message (typically the message and the
/// timely capability it came with); `K` is the address type.
#[derive(Debug)]
pub struct Batcher<T, K = Address> {
    max_batch: usize,
    max_queued: usize,
    slots: HashMap<K, Slot<T>>,
    in_flight: usize,
    queued: usize,
}

#[derive(Debug)]
struct Slot<T> {
    in_flight: bool,
    queue: VecDeque<T>,
}

impl<T, K: Hash + Eq + Clone> Batcher<T, K> {
    /// A batcher sending at most `max_batch` messages per request (the
    /// endpoint's `max_num_batch_requests`), with the default per-address
    /// queue cap of 10 batches.
    pub fn new(max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        Self::with_max_queued(max_batch, max_batch.saturating_mul(10))
    }

    /// A batcher with an explicit per-address queue cap (messages waiting
    /// behind the request in flight). Both limits are at least 1.
    pub fn with_max_queued(max_batch: usize, max_queued: usize) -> Self {
        Batcher {
            max_batch: max_batch.max(1),
            max_queued: max_queued.max(1),
            slots: HashMap::new(),
            in_flight: 0,
            queued: 0,
        }
    }

    /// The most messages in one batch.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The per-address queue cap that [`Batcher::over_limit`] checks.
    pub fn max_queued(&self) -> usize {
        self.max_queued
    }

    /// Adds a message for `address`. When the address is idle the message is
    /// returned at once as a one-message batch to send now (the address is
    /// then in flight); otherwise it waits for [`Batcher::complete`].
    ///
    /// Pushing never refuses a message: the cap is advisory, reported by
    /// [`Batcher::over_limit`], because messages already emitted by timely
    /// cannot be handed back.
    pub fn push(&mut self, address: K, item: T) -> Option<Vec<T>> {
        let slot = self.slots.entry(address).or_insert_with(|| Slot {
            in_flight: false,
            queue: VecDeque::new(),
        });
        if slot.in_flight || !slot.queue.is_empty() {
            slot.queue.push_back(item);
            self.queued += 1;
            None
        } else {
            slot.in_flight = true;
            self.in_flight += 1;
            Some(vec![item])
        }
    }

    /// Marks the request in flight for `address` as answered and returns the
    /// next batch to send, if messages are waiting (the address stays in
    /// flight then). Returns `None` and forgets the address when nothing waits.
    pub fn complete(&mut self, address: &K) -> Option<Vec<T>> {
        let slot = self.slots.get_mut(address)?;
        if slot.in_flight {
            slot.in_flight = false;
            self.in_flight -= 1;
        }
        if slot.queue.is_empty() {
            self.slots.remove(address);
            return None;
        }
        let n = slot.queue.len().min(self.max_batch);
        let batch: Vec<T> = slot.queue.drain(..n).collect();
        self.queued -= n;
        slot.in_flight = true;
        self.in_flight += 1;
        Some(batch)
    }

    /// Puts a batch back at the head of `address`'s queue, in its order.
    ///
    /// For `IncompleteInvocationContext`: the engine registers the missing
    /// state, calls `requeue_front` with the batch it sent and then
    /// [`Batcher::complete`], which returns the same messages first (possibly
    /// with more that arrived meanwhile, up to the batch size).
    pub fn requeue_front(&mut self, address: K, batch: Vec<T>) {
        let slot = self.slots.entry(address).or_insert_with(|| Slot {
            in_flight: false,
            queue: VecDeque::new(),
        });
        self.queued += batch.len();
        for item in batch.into_iter().rev() {
            slot.queue.push_front(item);
        }
    }

    /// How many addresses have a request in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How many messages wait behind requests in flight, over all addresses.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// How many messages wait for `address`.
    pub fn queued_for(&self, address: &K) -> usize {
        self.slots.get(address).map_or(0, |s| s.queue.len())
    }

    /// Whether `address` has a request in flight.
    pub fn is_in_flight(&self, address: &K) -> bool {
        self.slots.get(address).is_some_and(|s| s.in_flight)
    }

    /// Whether `address` has at least `max_queued` messages waiting: the
    /// engine should stop feeding it (and only it) until it drops below.
    pub fn over_limit(&self, address: &K) -> bool {
        self.queued_for(address) >= self.max_queued
    }

    /// True when nothing is in flight or queued: every remote invocation has
    /// been answered, so an epoch may complete.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.queued == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_message_goes_out_alone_and_later_ones_batch() {
        let mut b: Batcher<u32, &str> = Batcher::new(3);
        assert_eq!(b.push("a", 1), Some(vec![1]));
        assert_eq!(b.in_flight(), 1);
        for i in 2..=6 {
            assert_eq!(b.push("a", i), None);
        }
        assert_eq!(b.queued(), 5);
        assert_eq!(b.complete(&"a"), Some(vec![2, 3, 4]));
        assert_eq!(b.in_flight(), 1);
        assert_eq!(b.queued(), 2);
        assert_eq!(b.complete(&"a"), Some(vec![5, 6]));
        assert_eq!(b.complete(&"a"), None);
        assert!(b.is_idle());
        assert!(!b.is_in_flight(&"a"));
        // After going idle the next message is sent at once again.
        assert_eq!(b.push("a", 7), Some(vec![7]));
    }

    #[test]
    fn addresses_are_independent() {
        let mut b: Batcher<u32, &str> = Batcher::new(10);
        assert_eq!(b.push("a", 1), Some(vec![1]));
        assert_eq!(b.push("b", 2), Some(vec![2]));
        assert_eq!(b.push("a", 3), None);
        assert_eq!(b.in_flight(), 2);
        assert_eq!(b.complete(&"b"), None);
        assert_eq!(b.queued_for(&"a"), 1);
        assert_eq!(b.complete(&"a"), Some(vec![3]));
        assert_eq!(b.complete(&"unknown"), None);
    }

    #[test]
    fn requeue_front_resends_the_same_batch_first() {
        let mut b: Batcher<u32, &str> = Batcher::new(3);
        let first = b.push("a", 1).unwrap();
        b.push("a", 2);
        b.push("a", 3);
        let batch = b.complete(&"a").unwrap();
        assert_eq!(batch, vec![2, 3]);
        b.push("a", 4);
        b.push("a", 5);
        // Incomplete context: put the batch back and take the next one.
        b.requeue_front("a", batch);
        assert_eq!(b.queued(), 4);
        assert_eq!(b.complete(&"a"), Some(vec![2, 3, 4]));
        assert_eq!(b.complete(&"a"), Some(vec![5]));
        assert_eq!(b.complete(&"a"), None);
        assert!(b.is_idle());
        assert_eq!(first, vec![1]);
    }

    #[test]
    fn over_limit_is_per_address() {
        let mut b: Batcher<u32, &str> = Batcher::with_max_queued(2, 3);
        b.push("a", 0);
        b.push("b", 0);
        for i in 1..=3 {
            assert!(!b.over_limit(&"a"));
            b.push("a", i);
        }
        assert!(b.over_limit(&"a"));
        assert!(!b.over_limit(&"b"));
        b.complete(&"a");
        assert!(!b.over_limit(&"a"));
        assert_eq!(Batcher::<u32, &str>::new(5).max_queued(), 50);
        assert_eq!(Batcher::<u32, &str>::new(0).max_batch(), 1);
    }
}
