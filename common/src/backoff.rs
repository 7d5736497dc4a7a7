//! The one backoff every retry loop uses: the wait doubles from `initial` with each failed
//! attempt, up to `max`, and is jittered down by up to a quarter so that many clients
//! retrying the same server do not come back in step.

use std::time::Duration;

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
        full.mul_f64(1.0 - rand::random::<f64>() / 4.0)
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
