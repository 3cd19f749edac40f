//! How many requests and connections one endpoint gets at once: an adaptive
//! limit, so that every HTTP server shape works at its own speed.
//!
//! # Why a limit at all
//!
//! StateFun keeps one request in flight per *address*, so a job with many
//! active addresses wants hundreds of requests in flight to one endpoint.
//! Servers differ in how many they can take:
//!
//! - asynchronous servers (aiohttp, Go's `net/http`) serve hundreds at once;
//! - pre-forked ones (gunicorn sync workers) serve as many as they have
//!   workers and queue the rest in a deep listen backlog: more connections
//!   only wait longer;
//! - the standard library's single-threaded `http.server` serves one
//!   connection at a time from a listen backlog of 5. Past that, the kernel
//!   drops SYNs (retried after 1, 3, 7 … seconds) and the final ACKs of
//!   handshakes (the client believes it is connected, sends its request and
//!   waits), so a client that opens a connection per request stalls for
//!   seconds, then for its whole read timeout: the job crawled and failed.
//!   With keep-alive (HTTP/1.1) it is worse: the server reads the next
//!   request from its current connection until that closes, so every other
//!   connection starves while the first one stays pooled.
//!
//! # The rule
//!
//! One [`Concurrency`] per endpoint client bounds both the requests in
//! flight and the connections open (idle pooled ones included) by one
//! `limit`, adapted AIMD-style:
//!
//! - it starts at [`INITIAL_LIMIT`] (below the smallest listen backlog in
//!   common use) and, while requests wait for a slot (demand exceeds the
//!   limit) and no request in flight lags (the oldest has not seen more
//!   than `limit + 2` others answered since it started, with the limit as it
//!   was then), grows by one per
//!   successful answer until the first stall (slow start), and after a stall
//!   by one per `limit` answers (additive increase), up to the endpoint's
//!   `pool_size`;
//! - a request **stalls** when, since it started, the endpoint answered
//!   more than `2 × limit + 4` other requests (the limit as it was when the
//!   request started) and at least [`stall_after`] has passed: a server that
//!   takes requests in turn answers at most `limit` before it, so this one is
//!   stuck in a backlog or behind a connection the server will not leave. A
//!   stalled attempt is abandoned (its connection closed) and retried at
//!   once; the limit halves — once per congestion event: requests that
//!   started before the last halving do not halve it again — and growth past
//!   the level that stalled waits for a cool-down that doubles (1 s up to
//!   60 s) while stalls repeat.
//!
//! Abandoning and retrying is safe in StateFun's request–reply protocol:
//! the request carries the state, and the effects of an answer that is never
//! read are never applied. A call is abandoned for a stall at most once, so a
//! function that is merely slow is waited for (up to the read timeout).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The limit a new endpoint client starts with: below the listen backlog of
/// 5 of Python's `socketserver`, so even a single-threaded server is never
/// overrun at the start.
pub const INITIAL_LIMIT: usize = 4;
/// The first cool-down before growing past a level that stalled.
const FIRST_COOLDOWN: Duration = Duration::from_secs(1);
/// The longest cool-down.
const MAX_COOLDOWN: Duration = Duration::from_secs(60);
/// The least time an attempt runs before it can count as stalled.
const MIN_STALL: Duration = Duration::from_millis(50);

/// The limit and what it is decided from (pure; no I/O, no clock of its own).
#[derive(Clone, Debug)]
pub struct Limits {
    limit: usize,
    max: usize,
    in_flight: usize,
    open: usize,
    waiting: usize,
    completions: u64,
    /// Growth stops at this level until `probe_after` (set by a stall).
    ceiling: Option<(usize, Instant)>,
    cooldown: Duration,
    last_stall: Option<Instant>,
    /// Answers counted towards the next additive step (after a stall).
    credit: usize,
    /// `(completions, limit)` at the start of each request in flight (a multiset).
    starts: BTreeMap<(u64, usize), usize>,
    /// Halvings so far: a stall of a request started before the last one
    /// is the same congestion event.
    generation: u64,
    /// Smoothed latency of successful attempts (EWMA, 1/8 gain).
    latency: Option<Duration>,
}

impl Limits {
    /// Limits for an endpoint that may use up to `max` connections.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Limits {
            limit: INITIAL_LIMIT.min(max),
            max,
            in_flight: 0,
            open: 0,
            waiting: 0,
            completions: 0,
            ceiling: None,
            cooldown: FIRST_COOLDOWN,
            last_stall: None,
            credit: 0,
            starts: BTreeMap::new(),
            generation: 0,
            latency: None,
        }
    }

    /// The current limit on requests in flight and connections open.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Successful answers so far.
    pub fn completions(&self) -> u64 {
        self.completions
    }

    /// Whether another request may start now.
    pub fn may_start(&self) -> bool {
        self.in_flight < self.limit
    }

    /// Whether another connection may be opened now.
    pub fn may_open(&self) -> bool {
        self.open < self.limit
    }

    /// A successful answer after `latency`; grows the limit if requests wait.
    pub fn success(&mut self, latency: Duration, now: Instant) {
        self.completions += 1;
        self.latency = Some(match self.latency {
            None => latency,
            Some(l) => (l * 7 + latency) / 8,
        });
        if self.waiting == 0 || self.limit >= self.max || self.lagging() {
            return;
        }
        if let Some((ceiling, probe_after)) = self.ceiling {
            if self.limit >= ceiling {
                if now < probe_after {
                    return;
                }
                // The cool-down is over: probe one level past the ceiling.
                self.ceiling = None;
            }
        }
        if self.last_stall.is_some() {
            // Additive increase: one more per `limit` answers.
            self.credit += 1;
            if self.credit < self.limit {
                return;
            }
            self.credit = 0;
        }
        self.limit += 1;
    }

    /// Whether the oldest request in flight has seen more than `limit + 2`
    /// others answered since it started (the limit as it was then): a server
    /// taking requests in turn would have answered it by now, so it is not
    /// keeping up with this many, and the limit must not grow.
    fn lagging(&self) -> bool {
        self.starts
            .keys()
            .next()
            .is_some_and(|&(started_at, limit)| self.completions - started_at > limit as u64 + 2)
    }

    /// Counts a request as started; returns `(completions, limit,
    /// generation)` as it starts.
    fn start(&mut self) -> (u64, usize, u64) {
        self.in_flight += 1;
        *self
            .starts
            .entry((self.completions, self.limit))
            .or_default() += 1;
        (self.completions, self.limit, self.generation)
    }

    /// Counts a request that started at `started_at` with `limit` as ended.
    fn end(&mut self, started_at: u64, limit: usize) {
        self.in_flight -= 1;
        let key = (started_at, limit);
        if let Some(n) = self.starts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.starts.remove(&key);
            }
        }
    }

    /// An attempt that started when [`Limits::completions`] was
    /// `started_at` and the limit `limit_then`, and has run for `elapsed`:
    /// whether it is stalled.
    pub fn stalled(&self, started_at: u64, limit_then: usize, elapsed: Duration) -> bool {
        let answered_since = self.completions.saturating_sub(started_at);
        answered_since > 2 * limit_then as u64 + 4 && elapsed >= stall_after(self.latency)
    }

    /// A stalled attempt that started in halving `generation` was
    /// abandoned: halve the limit and hold growth below the level that
    /// stalled for a cool-down — unless the limit was already halved since
    /// the attempt started (the same congestion event). Returns whether it
    /// halved.
    pub fn stall(&mut self, now: Instant, generation: u64) -> bool {
        if generation < self.generation {
            return false;
        }
        self.generation += 1;
        let repeated = self
            .last_stall
            .is_some_and(|t| now.saturating_duration_since(t) < MAX_COOLDOWN);
        self.cooldown = if repeated {
            (self.cooldown * 2).min(MAX_COOLDOWN)
        } else {
            FIRST_COOLDOWN
        };
        self.last_stall = Some(now);
        let stalled_at = self.limit;
        self.limit = (self.limit / 2).max(1);
        self.credit = 0;
        self.ceiling = Some(((stalled_at - 1).max(1), now + self.cooldown));
        true
    }
}

/// How long an attempt must have run before it can count as stalled: four
/// times the smoothed latency, and at least [`MIN_STALL`].
pub fn stall_after(latency: Option<Duration>) -> Duration {
    latency.map_or(MIN_STALL, |l| (l * 4).max(MIN_STALL))
}

/// An endpoint's [`Limits`] shared by its requests and its connector.
///
/// A freed slot wakes waiters one at a time, oldest first, and only as many
/// as could now start: with thousands of addresses waiting, waking them all
/// per answer (each to find the slot taken and queue again) cost CPU in
/// proportion to the queue on every answer.
#[derive(Debug)]
pub struct Concurrency {
    limits: Mutex<Limits>,
    /// Waiters for a request slot.
    requests: Notify,
    /// Waiters for a connection slot.
    connections: Notify,
}

/// A request slot: released (and a waiter woken) on drop.
#[derive(Debug)]
pub struct RequestSlot {
    owner: Arc<Concurrency>,
    started_at: u64,
    limit_then: usize,
    generation: u64,
    started: Instant,
}

/// A connection slot, held by an open connection until it closes.
#[derive(Debug)]
pub struct ConnectionSlot {
    owner: Arc<Concurrency>,
}

impl Concurrency {
    /// For an endpoint of at most `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Concurrency {
            limits: Mutex::new(Limits::new(max)),
            requests: Notify::new(),
            connections: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Limits> {
        self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of the limits (for tests and logs).
    pub fn limits(&self) -> Limits {
        self.lock().clone()
    }

    /// Waits for a request slot.
    pub async fn request(self: &Arc<Self>) -> RequestSlot {
        let (started_at, limit_then, generation) = self
            .wait(&self.requests, |l| l.may_start(), Limits::start)
            .await;
        RequestSlot {
            owner: Arc::clone(self),
            started_at,
            limit_then,
            generation,
            started: Instant::now(),
        }
    }

    /// Waits for a connection slot.
    pub async fn connection(self: &Arc<Self>) -> ConnectionSlot {
        self.wait(&self.connections, |l| l.may_open(), |l| l.open += 1)
            .await;
        ConnectionSlot {
            owner: Arc::clone(self),
        }
    }

    async fn wait<R>(
        &self,
        freed: &Notify,
        ready: impl Fn(&Limits) -> bool,
        take: impl Fn(&mut Limits) -> R,
    ) -> R {
        let mut counted = false;
        loop {
            // In the queue before looking, so that a slot freed between the
            // look and the await still wakes this waiter. A notified waiter
            // that is dropped (its caller timed out) passes the wake-up on.
            let notified = freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut l = self.lock();
                if ready(&l) {
                    let taken = take(&mut l);
                    if counted {
                        l.waiting -= 1;
                    }
                    return taken;
                }
                if !counted {
                    l.waiting += 1;
                    counted = true;
                }
            }
            // Un-count on cancellation (the caller's timeout dropped us).
            let guard = WaitGuard {
                owner: self,
                armed: true,
            };
            notified.await;
            std::mem::forget(guard);
        }
    }

    /// Applies `f` and wakes as many waiters of each kind as could now take
    /// a slot (the limit may also have grown), at most as many as wait.
    fn release(&self, f: impl FnOnce(&mut Limits)) {
        let (requests, connections) = {
            let mut l = self.lock();
            f(&mut l);
            (
                l.limit.saturating_sub(l.in_flight).min(l.waiting),
                l.limit.saturating_sub(l.open).min(l.waiting),
            )
        };
        for _ in 0..requests {
            self.requests.notify_one();
        }
        for _ in 0..connections {
            self.connections.notify_one();
        }
    }
}

/// Removes a waiter from the count when its wait is cancelled.
struct WaitGuard<'a> {
    owner: &'a Concurrency,
    armed: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut l = self.owner.lock();
            l.waiting = l.waiting.saturating_sub(1);
        }
    }
}

impl RequestSlot {
    /// Whether this attempt is stalled now (see the module docs).
    pub fn stalled(&self) -> bool {
        self.owner
            .lock()
            .stalled(self.started_at, self.limit_then, self.started.elapsed())
    }

    /// How often to check [`RequestSlot::stalled`].
    pub fn check_every(&self) -> Duration {
        stall_after(self.owner.lock().latency) / 4
    }

    /// The attempt was answered successfully.
    pub fn succeeded(self) {
        let latency = self.started.elapsed();
        self.owner.lock().success(latency, Instant::now());
    }

    /// The attempt stalled and is abandoned.
    pub fn stalled_out(self) {
        let (halved, limit) = {
            let mut l = self.owner.lock();
            (l.stall(Instant::now(), self.generation), l.limit)
        };
        if halved {
            tracing::debug!(
                limit,
                "remote endpoint stalled a request; lowering its concurrency"
            );
        }
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        let (started_at, limit) = (self.started_at, self.limit_then);
        self.owner.release(|l| l.end(started_at, limit));
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.owner.release(|l| l.open -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn grows_only_while_requests_wait() {
        let t = Instant::now();
        let mut l = Limits::new(1024);
        assert_eq!(l.limit(), INITIAL_LIMIT);
        l.success(ms(1), t);
        assert_eq!(l.limit(), INITIAL_LIMIT, "no one waits: no growth");
        l.waiting = 10;
        for _ in 0..10 {
            l.success(ms(1), t);
        }
        assert_eq!(l.limit(), INITIAL_LIMIT + 10);
    }

    #[test]
    fn never_past_the_pool_size() {
        let t = Instant::now();
        let mut l = Limits::new(6);
        l.waiting = 100;
        for _ in 0..100 {
            l.success(ms(1), t);
        }
        assert_eq!(l.limit(), 6);
        assert_eq!(Limits::new(2).limit(), 2);
    }

    #[test]
    fn a_stall_is_many_answers_to_others_and_enough_time() {
        let t = Instant::now();
        let mut l = Limits::new(1024);
        for _ in 0..100 {
            l.success(ms(2), t);
        }
        let started = l.completions() - 12;
        // 12 answers since it started: 2 × 4 + 4 = 12 is not more than allowed.
        assert!(!l.stalled(started, 4, ms(500)));
        assert!(l.stalled(started - 1, 4, ms(500)));
        // The limit when it started counts, not a limit that grew since.
        assert!(!l.stalled(started - 1, 40, ms(500)));
        // Not before the least stall time, whatever was answered.
        assert!(!l.stalled(0, 4, ms(10)));
    }

    #[test]
    fn slow_answers_raise_the_stall_time() {
        let t = Instant::now();
        let mut l = Limits::new(1024);
        for _ in 0..50 {
            l.success(ms(300), t);
        }
        assert!(stall_after(l.latency) >= ms(1000));
        assert!(!l.stalled(0, 4, ms(900)));
        assert!(l.stalled(0, 4, ms(1300)));
    }

    #[test]
    fn a_stall_halves_and_holds_growth_for_a_cooldown_that_doubles() {
        let t = Instant::now();
        let mut l = Limits::new(1024);
        l.waiting = 1;
        for _ in 0..4 {
            l.success(ms(1), t);
        }
        assert_eq!(l.limit(), 8);
        l.stall(t, l.generation);
        assert_eq!(l.limit(), 4);
        // Grows back additively (one per `limit` answers) to 7, below the
        // level that stalled, then holds.
        for _ in 0..4 {
            l.success(ms(1), t + ms(10));
        }
        assert_eq!(l.limit(), 5);
        for _ in 0..100 {
            l.success(ms(1), t + ms(10));
        }
        assert_eq!(l.limit(), 7);
        // After the cool-down it probes 8 again…
        for _ in 0..7 {
            l.success(ms(1), t + ms(1001));
        }
        assert_eq!(l.limit(), 8);
        // …stalls again: this time the cool-down is 2 s.
        l.stall(t + ms(1100), l.generation);
        assert_eq!(l.limit(), 4);
        for _ in 0..100 {
            l.success(ms(1), t + ms(2500));
        }
        assert_eq!(l.limit(), 7);
        for _ in 0..7 {
            l.success(ms(1), t + ms(3200));
        }
        assert_eq!(l.limit(), 8);
        // A stall long after the last starts over at 1 s.
        l.stall(t + Duration::from_secs(100), l.generation);
        assert_eq!(l.cooldown, FIRST_COOLDOWN);
    }

    #[test]
    fn one_halving_per_congestion_event() {
        let t = Instant::now();
        let mut l = Limits::new(1024);
        l.limit = 64;
        let (_, _, generation) = l.start();
        let (_, _, same) = l.start();
        assert!(l.stall(t, generation));
        assert_eq!(l.limit(), 32);
        // Another request that started before the halving: same event.
        assert!(!l.stall(t, same));
        assert_eq!(l.limit(), 32);
        let (_, _, later) = l.start();
        assert!(l.stall(t, later));
        assert_eq!(l.limit(), 16);
    }

    #[test]
    fn no_growth_while_a_request_lags() {
        let t = Instant::now();
        let mut l = Limits::new(1024);
        l.waiting = 10;
        let (old, limit_then, _) = l.start();
        for _ in 0..6 {
            l.success(ms(1), t);
        }
        // Grew while `old` was within 4 + 2 answers, then stopped.
        assert_eq!(l.limit(), 10);
        for _ in 0..20 {
            l.success(ms(1), t);
        }
        assert_eq!(l.limit(), 10, "a lagging request holds the limit");
        l.end(old, limit_then);
        l.success(ms(1), t);
        assert_eq!(l.limit(), 11);
    }

    #[test]
    fn never_below_one() {
        let t = Instant::now();
        let mut l = Limits::new(1024);
        for i in 0..10 {
            l.stall(t + ms(i), l.generation);
        }
        assert_eq!(l.limit(), 1);
        assert!(l.may_start());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn slots_wait_for_the_limit_and_wake_on_release() {
        let c = Concurrency::new(1024);
        let mut held = Vec::new();
        for _ in 0..INITIAL_LIMIT {
            held.push(c.request().await);
        }
        let c2 = Arc::clone(&c);
        let waiter = tokio::spawn(async move { c2.request().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(c.limits().waiting, 1);
        drop(held.pop());
        let slot = waiter.await.unwrap();
        assert_eq!(c.limits().waiting, 0);
        assert_eq!(c.limits().in_flight, INITIAL_LIMIT);
        drop(slot);
        drop(held);
        assert_eq!(c.limits().in_flight, 0);
        let conn = c.connection().await;
        assert_eq!(c.limits().open, 1);
        drop(conn);
        assert_eq!(c.limits().open, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_wait_is_not_counted() {
        let c = Concurrency::new(1);
        let held = c.request().await;
        let _ = tokio::time::timeout(ms(5), c.request()).await;
        assert_eq!(c.limits().waiting, 0);
        drop(held);
    }
}
