//! A signal that background work changed something (a flush, a compaction, a failure):
//! stalled writers and flush waiters look again. Waiters are woken in the order they began
//! waiting. tokio's `watch` would do, but wakes its receivers in an order drawn at random
//! from the runtime's own seed, which a seeded simulation cannot replay.

use std::pin::Pin;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

#[derive(Default)]
pub struct Changes {
    notify: Notify,
}

impl Changes {
    /// Wakes everyone waiting.
    pub fn bump(&self) {
        self.notify.notify_waiters();
    }

    /// A wait for the next bump, armed now: take it before looking at what it guards, and a
    /// bump in between is not missed.
    pub fn next(&self) -> Pin<Box<Notified<'_>>> {
        let mut next = Box::pin(self.notify.notified());
        next.as_mut().enable();
        next
    }
}
