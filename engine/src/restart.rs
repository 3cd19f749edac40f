//! `statefun run --restart`: re-running a failed job in the same process, from
//! the last checkpoint every worker wrote (Flink's exponential-delay restart
//! strategy).
//!
//! Why in the process: a job that fails on a transient cause (a broker away
//! for a minute, a function error fixed by the next attempt of a downstream
//! lookup) should come back by itself, with its cause logged, and without an
//! orchestrator. Without the flag a failure exits non-zero, for systemd or
//! Kubernetes to restart. Either way nothing is lost: recovery resumes from
//! the last checkpoint (docs/DURABILITY.md).

use std::time::Duration;

/// When and how often a failed run is started again.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// A failure ends the process with a non-zero exit (default).
    #[default]
    Never,
    /// A failed run is started again after a backoff that doubles from
    /// `min` to `max` with each failure in a row; after `max_restarts` in a
    /// row (if given) the process exits non-zero. A run that lasted longer
    /// than `max` before failing starts the count and the backoff over.
    OnFailure {
        /// Most restarts in a row, `None` for no limit.
        max_restarts: Option<u32>,
        /// First backoff.
        min: Duration,
        /// Longest backoff.
        max: Duration,
    },
}

impl RestartPolicy {
    /// Parses `no`, `on-failure` or `on-failure:max=N,backoff=1s..60s` (either
    /// option alone too).
    ///
    /// ```
    /// use statefun_engine::restart::RestartPolicy;
    /// use std::time::Duration;
    /// let p = RestartPolicy::parse("on-failure:max=3,backoff=500ms..10s").unwrap();
    /// assert_eq!(
    ///     p,
    ///     RestartPolicy::OnFailure {
    ///         max_restarts: Some(3),
    ///         min: Duration::from_millis(500),
    ///         max: Duration::from_secs(10),
    ///     }
    /// );
    /// assert!(RestartPolicy::parse("sometimes").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = "use `no`, `on-failure` or `on-failure:max=<n>,backoff=<min>..<max>` (e.g. `on-failure:max=10,backoff=1s..60s`)";
        let (kind, options) = match text.split_once(':') {
            Some((k, o)) => (k, Some(o)),
            None => (text, None),
        };
        match kind {
            "no" | "never" if options.is_none() => return Ok(RestartPolicy::Never),
            "on-failure" => {}
            _ => return Err(format!("`{text}` is not a restart policy: {usage}")),
        }
        let (mut max_restarts, mut min, mut max) =
            (None, Duration::from_secs(1), Duration::from_secs(60));
        for option in options.into_iter().flat_map(|o| o.split(',')) {
            match option.split_once('=') {
                Some(("max", n)) => {
                    max_restarts = Some(n.parse().map_err(|_| {
                        format!("`max={n}` in `{text}` is not a whole number: {usage}")
                    })?)
                }
                Some(("backoff", range)) => {
                    let (lo, hi) = range.split_once("..").ok_or_else(|| {
                        format!("`backoff={range}` in `{text}` is not `<min>..<max>`: {usage}")
                    })?;
                    let duration = |d: &str| {
                        statefun_module::parse_duration(d)
                            .map_err(|e| format!("`{d}` in `{text}`: {e}"))
                    };
                    min = duration(lo)?;
                    max = duration(hi)?;
                    if min > max {
                        return Err(format!(
                            "`backoff={range}` in `{text}`: the minimum is above the maximum"
                        ));
                    }
                }
                _ => return Err(format!("`{option}` in `{text}` is not an option: {usage}")),
            }
        }
        Ok(RestartPolicy::OnFailure {
            max_restarts,
            min,
            max,
        })
    }

    /// After the `failures_in_a_row`-th failure in a row (1 for the first):
    /// how long to wait before starting again, or `None` to give up.
    pub fn backoff(&self, failures_in_a_row: u32) -> Option<Duration> {
        match self {
            RestartPolicy::Never => None,
            RestartPolicy::OnFailure {
                max_restarts,
                min,
                max,
            } => {
                if max_restarts.is_some_and(|m| failures_in_a_row > m) {
                    return None;
                }
                let doublings = failures_in_a_row.saturating_sub(1).min(30);
                Some(min.saturating_mul(1 << doublings).min(*max))
            }
        }
    }

    /// Whether a run that lasted `ran` before failing starts the count over.
    pub fn resets_after(&self, ran: Duration) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure { max, .. } => ran > *max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn parses_every_form_and_names_what_is_wrong() {
        assert_eq!(RestartPolicy::parse("no"), Ok(RestartPolicy::Never));
        assert_eq!(
            RestartPolicy::parse("on-failure"),
            Ok(RestartPolicy::OnFailure {
                max_restarts: None,
                min: s(1),
                max: s(60)
            })
        );
        assert_eq!(
            RestartPolicy::parse("on-failure:max=2"),
            Ok(RestartPolicy::OnFailure {
                max_restarts: Some(2),
                min: s(1),
                max: s(60)
            })
        );
        for bad in [
            "always",
            "on-failure:max=x",
            "on-failure:backoff=1s",
            "on-failure:backoff=10s..1s",
            "on-failure:tries=3",
            "no:max=1",
        ] {
            let err = RestartPolicy::parse(bad).expect_err(bad);
            assert!(err.contains(bad) || err.contains("max=x"), "{bad}: {err}");
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_gives_up_after_max() {
        let p = RestartPolicy::parse("on-failure:max=8,backoff=1s..5s").unwrap();
        let waits: Vec<Option<Duration>> = (1..=9).map(|n| p.backoff(n)).collect();
        assert_eq!(
            waits,
            [
                Some(s(1)),
                Some(s(2)),
                Some(s(4)),
                Some(s(5)),
                Some(s(5)),
                Some(s(5)),
                Some(s(5)),
                Some(s(5)),
                None
            ]
        );
        assert_eq!(RestartPolicy::Never.backoff(1), None);
        assert!(p.resets_after(s(6)) && !p.resets_after(s(4)));
    }
}
