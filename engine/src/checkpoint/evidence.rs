//! Positive evidence that a checkpoint was written, and delivered, everywhere.
//!
//! A timely frontier says that *no more* records at or before a time can
//! arrive; it does not say that anybody *wrote* anything. A worker that fails,
//! times out its drain or loses its process releases its capabilities without
//! writing its checkpoint, and the frontier moves past that checkpoint all the
//! same. Taking the frontier as proof of durability let the surviving workers
//! deliver (and merge) a checkpoint that the failed worker never wrote: the
//! restart then either re-delivered it (duplicates) or found no checkpoint
//! common to all workers (the job could not start).
//!
//! So, as DESIGN.md §3 states and docs/DURABILITY.md repeats:
//!
//! * **Complete.** Checkpoint epoch `c` is complete only when every worker of
//!   every process has sent a token saying it durably wrote a checkpoint
//!   covering `c` ([`Evidence::token`]). A worker's token covers every
//!   checkpoint epoch up to the last one of its write (one write can stand for
//!   a range of checkpoint epochs in which the worker received nothing).
//! * **No evidence past the frontier is a failure.** When the frontier of the
//!   token stream has passed `c`, every token for `c` that will ever come has
//!   come; if one is missing, a worker released its capability without
//!   writing, and the job must fail ([`Evidence::check`]) — never deliver.
//! * **Delivered.** The same rule, with the sink operators as the writers: an
//!   outbox entry of checkpoint `c` may be deleted only when every sink
//!   operator of every worker has said it delivered through `c`.
//!
//! This module is the one place these rules are decided; the dataflow feeds it
//! tokens and frontiers and asks it what holds.

/// Tokens from a fixed set of writers (workers, or sink operators): for each,
/// the newest checkpoint epoch it has said it wrote (or delivered) through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    through: Vec<Option<u64>>,
}

/// What [`Evidence::check`] found once a frontier passed a checkpoint epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every writer has a token covering the epoch.
    Complete,
    /// These writers have no token covering the epoch although no more can
    /// come: they released their capability without writing. The job fails.
    Unwritten(Vec<usize>),
}

impl Evidence {
    /// Evidence from `writers` writers, none of which has written anything yet.
    pub fn new(writers: usize) -> Self {
        Evidence {
            through: vec![None; writers],
        }
    }

    /// How many writers must give evidence.
    pub fn writers(&self) -> usize {
        self.through.len()
    }

    /// Writer `writer` says it wrote through checkpoint epoch `through`.
    /// Tokens may arrive in any order; an older one changes nothing. A token
    /// from a writer outside the set is ignored (and reported as `false`),
    /// never trusted.
    pub fn token(&mut self, writer: usize, through: u64) -> bool {
        match self.through.get_mut(writer) {
            Some(slot) => {
                *slot = Some(slot.map_or(through, |t| t.max(through)));
                true
            }
            None => false,
        }
    }

    /// The newest checkpoint epoch every writer has written through, if any:
    /// the newest epoch that is complete (or delivered) everywhere.
    pub fn through(&self) -> Option<u64> {
        self.through
            .iter()
            .copied()
            .reduce(|a, b| match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            })
            .flatten()
    }

    /// Whether checkpoint epoch `c` is complete (or delivered) everywhere.
    pub fn covers(&self, c: u64) -> bool {
        self.through().is_some_and(|t| t >= c)
    }

    /// The frontier of the token stream has passed checkpoint epoch `c`, so
    /// every token for `c` has arrived: either every writer covers `c`, or
    /// the ones that do not released their capability without writing.
    pub fn check(&self, c: u64) -> Verdict {
        let missing: Vec<usize> = self
            .through
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_none_or(|t| t < c))
            .map(|(w, _)| w)
            .collect();
        if missing.is_empty() {
            Verdict::Complete
        } else {
            Verdict::Unwritten(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_needs_a_token_from_every_writer() {
        let mut e = Evidence::new(3);
        assert_eq!(e.through(), None);
        assert!(e.token(0, 9));
        assert!(e.token(2, 9));
        assert!(!e.covers(9), "worker 1 has not written");
        assert_eq!(e.check(9), Verdict::Unwritten(vec![1]));
        assert!(e.token(1, 19));
        assert!(e.covers(9));
        assert!(!e.covers(19));
        assert_eq!(e.through(), Some(9));
        assert_eq!(e.check(9), Verdict::Complete);
    }

    #[test]
    fn ranges_and_out_of_order_tokens() {
        let mut e = Evidence::new(2);
        // Worker 0 wrote one batch standing for checkpoints 9..=39; worker 1 wrote 9, 19, 29, 39.
        e.token(0, 39);
        for c in [19, 9, 39, 29] {
            e.token(1, c);
        }
        assert_eq!(e.through(), Some(39));
        for c in [9, 19, 29, 39] {
            assert_eq!(e.check(c), Verdict::Complete);
        }
        assert_eq!(e.check(49), Verdict::Unwritten(vec![0, 1]));
    }

    #[test]
    fn unknown_writers_are_not_trusted() {
        let mut e = Evidence::new(1);
        assert!(!e.token(1, 100));
        assert_eq!(e.through(), None);
    }

    /// Drives 2 and 3 workers through a sequence of checkpoints in which one
    /// worker fails at every possible step (before writing checkpoint k, or
    /// after writing it but before its token is sent). In every case no
    /// checkpoint the failed worker did not write is ever reported complete,
    /// and the frontier passing it is reported as a failure naming exactly
    /// that worker.
    #[test]
    fn a_failed_worker_never_lets_a_checkpoint_count_as_complete() {
        let checkpoints = [9u64, 19, 29, 39, 49, 59];
        for workers in [2usize, 3] {
            for failing in 0..workers {
                for (k, &fails_at) in checkpoints.iter().enumerate() {
                    for token_sent in [false, true] {
                        let mut e = Evidence::new(workers);
                        // What the failed worker durably wrote, as recovery would see it.
                        let mut written_by_failed: Option<u64> = None;
                        for &c in &checkpoints {
                            for w in 0..workers {
                                if w == failing && c >= fails_at {
                                    if c == fails_at && token_sent {
                                        written_by_failed = Some(c);
                                        e.token(w, c);
                                    } else if c == fails_at {
                                        // Wrote, crashed before the token went out.
                                        written_by_failed = Some(c);
                                    }
                                    continue;
                                }
                                if w == failing {
                                    written_by_failed = Some(c);
                                }
                                e.token(w, c);
                            }
                            // Whatever is complete was written by the failed worker too.
                            if let Some(t) = e.through() {
                                assert!(
                                    written_by_failed.is_some_and(|w| w >= t),
                                    "workers {workers}, failing {failing} at #{k}: {t} complete but never written"
                                );
                            }
                            // The frontier passes c once every worker released it.
                            let verdict = e.check(c);
                            let failed_now = c > fails_at || (c == fails_at && !token_sent);
                            if failed_now {
                                assert_eq!(verdict, Verdict::Unwritten(vec![failing]));
                                // The job fails here: nothing later is considered.
                                break;
                            } else {
                                assert_eq!(verdict, Verdict::Complete);
                            }
                        }
                    }
                }
            }
        }
    }
}
