//! The one backoff every retry loop uses: the wait doubles from `initial` with each failed
//! attempt, up to `max`, and is jittered down by up to a quarter so that many clients
//! retrying the same server do not come back in step.

use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::time::Duration;

thread_local! {
    static SEEDED: RefCell<Option<rand::rngs::StdRng>> = const { RefCell::new(None) };
}

/// Draws the jitter of every backoff on this thread from `seed` from now on: a simulation
/// that runs every task on one thread then replays its retries exactly.
pub fn seed_jitter_on_this_thread(seed: u64) {
    SEEDED.with_borrow_mut(|r| *r = Some(rand::rngs::StdRng::seed_from_u64(seed)));
}

/// A number in [0, 1): from this thread's seed if it has one.
fn unit() -> f64 {
    SEEDED
        .with_borrow_mut(|r| r.as_mut().map(|r| r.random()))
        .unwrap_or_else(rand::random)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        let full = self.initial.saturating_mul(factor).min(self.max);
        full.mul_f64(1.0 - unit() / 4.0)
    }

    /// Sleeps for `delay(attempt)`.
    pub async fn wait(&self, attempt: u32) {
        tokio::time::sleep(self.delay(attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_below() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let d = b.delay(attempt).as_millis() as u64;
            assert!(d <= full && d >= full * 3 / 4, "attempt {attempt}: {d} ms");
        }
    }
}
