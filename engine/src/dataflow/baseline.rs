//! The hand-written timely pipeline that `statefun bench` compares against.
//!
//! It does the engine benchmark's work with nothing but timely: a source
//! producing (decimal key, value bytes) records in batches, an `Exchange`
//! by key hash, and a `HashMap<String, u64>` of counts per worker. It
//! verifies the total so that it cannot skip work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::CommunicationConfig;

use crate::keygroup::fnv1a;

const BATCH: u64 = 1024;

/// Runs the baseline with `workers` threads; returns the elapsed time.
pub fn run(workers: usize, keys: u64, records: u64, value_size: usize) -> Result<Duration, String> {
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
            source::<_, CapacityContainerBuilder<Vec<(String, Vec<u8>)>>, _, _>(
                scope,
                "Generator",
                move |cap, info| {
                    let activator = w.activator_for(info.address.clone());
                    let mut cap = Some(cap);
                    let mut next = index;
                    let value = vec![b'x'; value_size];
                    move |output| {
                        if let Some(c) = cap.as_ref() {
                            let mut session = output.session(c);
                            let mut produced = 0;
                            while next < records && produced < BATCH {
                                session.give((decimal(next % keys), value.clone()));
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
                Exchange::new(|(k, _): &(String, Vec<u8>)| fnv1a(k.as_bytes())),
                "Count",
                {
                    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
                    move |(input, _frontier)| {
                        let mut n = 0;
                        input.for_each(|_, data| {
                            for (key, _value) in data.drain(..) {
                                match counts.get_mut(key.as_str()) {
                                    Some(count) => *count += 1,
                                    None => {
                                        counts.insert(key, 1);
                                    }
                                }
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

/// The decimal text of `n`, like the generator's keys.
fn decimal(mut n: u64) -> String {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    String::from_utf8_lossy(&buf[i..]).into_owned()
}
