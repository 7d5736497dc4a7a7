//! The writer's lease, for a journal that cannot fence a replaced writer by itself: a file
//! journal on the writer's node beside a manifest that other nodes reach. A new writer on
//! another node never sees that journal, so nothing it claims stops the old writer from
//! acknowledging more writes there. The lease does, from the other side: every manifest
//! version the writer writes renews it (an idle writer writes an empty one every quarter
//! lease), and the writer acknowledges a write only while its last renewal began less than
//! `TRUST` of the lease ago. A writer on another journal that finds a lease in the newest
//! version waits until no version has appeared for `WAIT` of the lease before it takes
//! over, and refuses if one does (the holder is alive).
//!
//! The clock assumption: each node's monotonic clock runs within 5% of real time (the 0.9
//! against 1.1 margin covers that with room), and a process is not paused between its
//! lease check and its answer for longer than the margin, 10% of the lease.

use crate::manifest::{Holder, Lease};
use cairn_common::{Error, Result};
use cairn_journal::{Journal, Reach};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The share of the lease a writer trusts a renewal for, from when the renewal began.
pub const TRUST: f64 = 0.9;
/// The share of the lease a new writer waits without seeing a renewal.
pub const WAIT: f64 = 1.1;

/// The lease a writer on `journal` holds: one of `lease_ms` where only its node reaches the
/// journal, none where the journal fences every writer itself (or leases are off, 0).
pub fn holder(journal: &dyn Journal, lease_ms: u64) -> Option<Holder> {
    match journal.reach() {
        Reach::Node { id } if lease_ms > 0 => Some(Holder {
            lease: Lease {
                ms: lease_ms,
                journal: id,
            },
            clock: Arc::new(LeaseClock::new(Duration::from_millis(lease_ms))),
        }),
        _ => None,
    }
}

/// How long the holder's lease lasts, and when it last proved it. Checked on every
/// acknowledged write, so the common case is two atomic loads.
pub struct LeaseClock {
    lease: Duration,
    base: Instant,
    /// When the newest successful renewal began, in nanoseconds after `base` plus one (0:
    /// never).
    renewed: AtomicU64,
    lost: AtomicBool,
    /// Why the lease is gone for good (a newer writer took over).
    why: Mutex<Option<String>>,
}

impl LeaseClock {
    pub fn new(lease: Duration) -> LeaseClock {
        LeaseClock {
            lease,
            base: Instant::now(),
            renewed: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            why: Mutex::new(None),
        }
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// A manifest version begun at `started` was written: nobody had taken over by then.
    pub fn renewed(&self, started: Instant) {
        let at = started.saturating_duration_since(self.base).as_nanos() as u64 + 1;
        self.renewed.fetch_max(at, Ordering::AcqRel);
    }

    /// A newer writer took over: nothing more is acknowledged.
    pub fn lost(&self, why: &Error) {
        self.why.lock().get_or_insert_with(|| why.to_string());
        self.lost.store(true, Ordering::Release);
    }

    /// Time since the newest renewal began (`None`: never renewed).
    pub fn since_renewal(&self) -> Option<Duration> {
        match self.renewed.load(Ordering::Acquire) {
            0 => None,
            at => Some(
                self.base
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(at - 1)),
            ),
        }
    }

    /// Ok while this writer may acknowledge: its lease is still provably its own.
    pub fn check(&self, database: &str) -> Result<()> {
        if self.lost.load(Ordering::Acquire) {
            let why = self.why.lock().clone().unwrap_or_default();
            return Err(Error::Fenced(why));
        }
        let since = self.since_renewal();
        if since.is_some_and(|s| s < self.lease.mul_f64(TRUST)) {
            return Ok(());
        }
        Err(Error::component(
            format!("database {database}"),
            format!(
                "its writer's lease ({} ms) was last renewed {}: the write is in this node's journal but not acknowledged, since another node may have taken over; it is kept if this writer renews its lease (once the storage tier answers again)",
                self.lease.as_millis(),
                since.map_or("never".to_string(), |s| format!("{} ms ago", s.as_millis()))
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_is_trusted_for_part_of_the_lease_and_a_loss_for_good() {
        let c = LeaseClock::new(Duration::from_millis(100));
        assert!(c.check("db").is_err(), "never renewed");
        std::thread::sleep(Duration::from_millis(100));
        c.renewed(Instant::now() - Duration::from_millis(91));
        assert!(!c.check("db").unwrap_err().is_fenced(), "lapsed, not lost");
        c.renewed(Instant::now());
        c.check("db").unwrap();
        c.renewed(Instant::now() - Duration::from_millis(95));
        c.check("db").unwrap(); // an older renewal does not move it back
        c.lost(&Error::Fenced("replaced".into()));
        assert!(c.check("db").unwrap_err().is_fenced());
    }
}
