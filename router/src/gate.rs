//! `WriteGate`: lets a node seal a shard against writes before it splits or merges it. Once
//! `seal` returns, no write is running and every later one is refused as not applied (a
//! router sends it again, to whichever shards the map then has), so a checkpoint taken
//! after it holds every write the shard ever acknowledged.

use cairn_common::{Error, Result};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

#[derive(Default)]
pub struct WriteGate {
    sealed: AtomicBool,
    running: AtomicUsize,
    why: Mutex<String>,
}

/// A write let through; it counts as running until dropped.
pub struct Entered<'a>(&'a WriteGate);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

impl WriteGate {
    /// Lets a write through, or refuses it once sealed. A write counts itself before it
    /// looks at the seal, and `seal` sets the seal before it counts the writes: whichever
    /// comes second sees the other (both are `SeqCst`).
    pub fn enter(&self) -> Result<Entered<'_>> {
        self.running.fetch_add(1, SeqCst);
        let entered = Entered(self);
        if self.sealed.load(SeqCst) {
            return Err(Error::Moved(self.why.lock().clone()));
        }
        Ok(entered)
    }

    /// Refuses every write from now on, saying `why`, and waits until none is running.
    pub async fn seal(&self, why: String) {
        *self.why.lock() = why;
        self.sealed.store(true, SeqCst);
        while self.running.load(SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn sealing_waits_for_running_writes_and_refuses_later_ones() {
        let gate = Arc::new(WriteGate::default());
        let running = gate.enter().unwrap();
        let sealing = tokio::spawn({
            let gate = gate.clone();
            async move { gate.seal("shard 3 is splitting".into()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sealing.is_finished(), "a write is still running");
        let e = gate.enter().err().unwrap();
        assert!(
            e.not_applied() && e.to_string().contains("splitting"),
            "{e}"
        );
        drop(running);
        sealing.await.unwrap();
        assert!(gate.enter().is_err(), "sealed for good");
    }
}
