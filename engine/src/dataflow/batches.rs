//! The container builder of the message streams: `Vec`s of [`BATCH`] messages.
//!
//! timely's default builder (`CapacityContainerBuilder<Vec<T>>`) cuts a stream
//! into `Vec`s of 8 KiB: 70-odd envelopes. Every such container costs its
//! operators a fixed amount — capabilities taken and dropped, a session, a
//! progress count, a clock read, a batch read of durable state — which at
//! that size is a few percent of each message's work. Containers of
//! [`BATCH`] messages spread it over more.

use std::collections::VecDeque;

use timely::container::{ContainerBuilder, LengthPreservingContainerBuilder, PushInto};

/// Messages per container.
pub const BATCH: usize = 1024;

/// Builds `Vec`s of [`BATCH`] items, in push order (the shape of timely's
/// `CapacityContainerBuilder`, with a capacity in items rather than bytes).
///
/// Why not timely's builder: it takes its capacity from the container's
/// `SizableContainer` implementation, which timely fixes at 8 KiB for `Vec`; a
/// container type of our own would change the streams' type and every operator
/// on them, so the builder is the one piece written again.
#[derive(Debug)]
pub struct Batches<T> {
    /// The container being filled.
    current: Vec<T>,
    /// A container handed out by `extract`/`finish`, whose allocation is reused.
    empty: Option<Vec<T>>,
    /// Full containers not yet handed out.
    pending: VecDeque<Vec<T>>,
}

impl<T> Default for Batches<T> {
    fn default() -> Self {
        Batches {
            current: Vec::new(),
            empty: None,
            pending: VecDeque::new(),
        }
    }
}

impl<T> PushInto<T> for Batches<T> {
    // Always inlined: a call passes the item by copying it (an envelope is over 100
    // bytes) and was 60 instructions a record where the compiler chose not to inline.
    #[inline(always)]
    fn push_into(&mut self, item: T) {
        if self.current.capacity() == 0 {
            self.current = self.empty.take().unwrap_or_default();
            self.current.clear();
            self.current.reserve(BATCH);
        }
        self.current.push(item);
        if self.current.len() >= BATCH {
            self.pending.push_back(std::mem::take(&mut self.current));
        }
    }
}

impl<T: 'static> ContainerBuilder for Batches<T> {
    type Container = Vec<T>;

    #[inline]
    fn extract(&mut self) -> Option<&mut Vec<T>> {
        self.empty = Some(self.pending.pop_front()?);
        self.empty.as_mut()
    }

    #[inline]
    fn finish(&mut self) -> Option<&mut Vec<T>> {
        if !self.current.is_empty() {
            self.pending.push_back(std::mem::take(&mut self.current));
        }
        self.empty = self.pending.pop_front();
        self.empty.as_mut()
    }
}

impl<T: 'static> LengthPreservingContainerBuilder for Batches<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item comes out once, in order, in containers of at most `BATCH`.
    #[test]
    fn items_come_out_in_order_in_full_batches() {
        let mut b = Batches::default();
        let mut out = Vec::new();
        let n = 3 * BATCH + 5;
        for i in 0..n {
            b.push_into(i);
            while let Some(c) = b.extract() {
                assert_eq!(c.len(), BATCH);
                out.append(c);
            }
        }
        while let Some(c) = b.finish() {
            assert!(c.len() <= BATCH);
            out.append(c);
        }
        assert_eq!(out, (0..n).collect::<Vec<_>>());
        assert!(b.finish().is_none());
    }
}
