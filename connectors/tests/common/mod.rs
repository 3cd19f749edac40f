//! Reading a source in the connectors' integration tests.

use std::time::{Duration, Instant};

use statefun_connectors::{Source, SourceRecord, SourceStatus};

/// Polls until `n` records arrived, asking for no more than are still wanted (so a
/// checkpoint taken after it covers exactly these), or fails after `timeout`.
pub fn read_n(source: &mut impl Source, n: usize, timeout: Duration) -> Vec<SourceRecord> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} records in {timeout:?}",
            out.len()
        );
        let want = (n - out.len()).min(100);
        if let SourceStatus::Idle { .. } = source.poll(&mut out, want).expect("poll") {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    out
}

/// Polls for `time` and returns what arrived (to show that nothing more does).
pub fn read_for(source: &mut impl Source, time: Duration) -> Vec<SourceRecord> {
    let deadline = Instant::now() + time;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        if let SourceStatus::Idle { .. } = source.poll(&mut out, 100).expect("poll") {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    out
}
