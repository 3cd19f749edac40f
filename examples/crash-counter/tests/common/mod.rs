//! What the crash tests share: replayable randomness and the soak knobs.

/// A small deterministic random source (the seed is printed to replay a run).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `STATEFUN_CRASH_SEED`, else the clock.
pub fn seed() -> u64 {
    std::env::var("STATEFUN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// `STATEFUN_CRASH_KILLS`, else `default`.
pub fn kills<T: std::str::FromStr>(default: T) -> T {
    std::env::var("STATEFUN_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
