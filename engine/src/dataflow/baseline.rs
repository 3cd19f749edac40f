//! The hand-written timely pipeline that `statefun bench` compares against.
//!
//! It does the engine benchmark's work the way one would write it by hand
//! for speed: a source producing `(u64 key, 128-byte inline payload)`
//! records in batches (no per-record allocation), an `Exchange` by key, and
//! a `HashMap<u64, u64>` of counts per worker. It verifies the total so that
//! it cannot skip work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use statefun_connectors::generator::{key_multiplier, key_of};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::CommunicationConfig;

use crate::keygroup::fnv1a;

const BATCH: u64 = 1024;

/// Runs the baseline with `workers` threads; returns the elapsed time.
/// `scrambled`: keys in the generator's scrambled order
/// ([`statefun_connectors::generator::key_of`]).
pub fn run(
    workers: usize,
    keys: u64,
    records: u64,
    value_size: usize,
    scrambled: bool,
) -> Result<Duration, String> {
    if value_size > 128 {
        return Err(
            "the baseline carries values of up to 128 bytes: use --value-size 128 or less".into(),
        );
    }
    let config = timely::Config {
        communication: if workers > 1 {
            CommunicationConfig::Process(workers)
        } else {
            CommunicationConfig::Thread
        },
        worker: timely::WorkerConfig::default(),
    };
    let counted = Arc::new(AtomicU64::new(0));
    let counted_in = counted.clone();
    let started = Instant::now();
    let guards = timely::execute(config, move |worker| {
        let index = worker.index() as u64;
        let peers = worker.peers() as u64;
        let counted = counted_in.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let w = scope.worker();
            source::<_, CapacityContainerBuilder<Vec<(u64, Payload)>>, _, _>(
                scope,
                "Generator",
                move |cap, info| {
                    let activator = w.activator_for(info.address.clone());
                    let mut cap = Some(cap);
                    let mut next = index;
                    let value = Payload::new(value_size);
                    let multiplier = key_multiplier(keys, scrambled);
                    move |output| {
                        if let Some(c) = cap.as_ref() {
                            let mut session = output.session(c);
                            let mut produced = 0;
                            while next < records && produced < BATCH {
                                session.give((key_of(next, keys, multiplier), value));
                                next += peers;
                                produced += 1;
                            }
                            drop(session);
                            if next < records {
                                activator.activate();
                            } else {
                                cap = None;
                            }
                        }
                    }
                },
            )
            .sink(
                Exchange::new(|(k, _): &(u64, Payload)| fnv1a(&k.to_le_bytes())),
                "Count",
                {
                    let mut counts: FxHashMap<u64, u64> = FxHashMap::default();
                    move |(input, _frontier)| {
                        let mut n = 0;
                        input.for_each(|_, data| {
                            for (key, value) in data.drain(..) {
                                *counts.entry(key).or_insert(0) += u64::from(value.0[0] > 0);
                                n += 1;
                            }
                        });
                        counted.fetch_add(n, Ordering::Relaxed);
                    }
                },
            );
        });
    })
    .map_err(|e| format!("cannot start the baseline: {e}"))?;
    for result in guards.join() {
        result.map_err(|e| format!("baseline worker failed: {e}"))?;
    }
    let elapsed = started.elapsed();
    let total = counted.load(Ordering::Relaxed);
    if total != records {
        return Err(format!("baseline counted {total} of {records} records"));
    }
    Ok(elapsed)
}

/// A record value of up to 128 bytes, stored inline so that records need no allocation.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Payload([u64; 16]);

impl Payload {
    fn new(size: usize) -> Self {
        let mut words = [0u64; 16];
        for (i, w) in words.iter_mut().enumerate().take(size.div_ceil(8).min(16)) {
            *w = 0x7878_7878_7878_7878 ^ i as u64;
        }
        Payload(words)
    }
}
