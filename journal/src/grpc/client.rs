//! `GrpcJournal`: appends from every caller share one stream, tagged with ids, so many are in
//! flight at once and the server's group commit sees them together. A broken stream fails the
//! appends waiting on it (their outcome is unknown to the caller, as with any lost reply) and
//! the next append opens a new one. Replay and truncate are idempotent and retried.
//!
//! An append costs the caller a map entry and a one-shot channel, nothing more: the deadline
//! of every waiting append is kept by the task that reads the acknowledgements, which fails
//! the ones past it on a tick, where a timer per append cost more than the rest of the path.

use super::pb::journal_client::JournalClient;
use super::pb::{
    AppendAcks, AppendBatch, AppendRequest, ClaimRequest, ReplayRequest, TruncateRequest,
    WaitPastRequest,
};
use crate::{Claimed, Journal, JournalClaim, JournalRecord};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{BoxStream, Error, Lsn, Result};
use cairn_rpc::{ClientOptions, RpcChannel, RpcClient, connect};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

/// An append waiting for its acknowledgement, and since when.
struct Waiter {
    done: oneshot::Sender<Result<Lsn, Status>>,
    since: Instant,
}

/// Ids are a counter: a multiplicative hash spreads them, where SipHash would cost more
/// than the rest of an append's bookkeeping.
type Waiters = Mutex<HashMap<u64, Waiter, rustc_hash::FxBuildHasher>>;

/// One open append stream.
struct Pipe {
    tx: mpsc::UnboundedSender<AppendRequest>,
    waiting: Arc<Waiters>,
    alive: Arc<AtomicBool>,
}

pub struct GrpcJournal {
    rpc: RpcClient,
    /// The open stream; appends read it without waiting on each other.
    pipe: parking_lot::RwLock<Option<Arc<Pipe>>>,
    /// Held while a stream is being opened, so only one is.
    opening: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl GrpcJournal {
    /// A client of the journal server at `opts.url`; it connects on first use.
    pub fn new(opts: ClientOptions) -> Result<Self> {
        Ok(GrpcJournal {
            rpc: connect("journal", opts)?,
            pipe: parking_lot::RwLock::new(None),
            opening: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        })
    }

    fn client(&self) -> JournalClient<RpcChannel> {
        let max = self.rpc.opts.max_message_bytes;
        JournalClient::new(self.rpc.channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// The open stream, or a new one if there is none or it broke.
    async fn pipe(&self) -> Result<Arc<Pipe>> {
        let live = |slot: &Option<Arc<Pipe>>| {
            slot.as_ref()
                .filter(|p| p.alive.load(Ordering::Acquire))
                .cloned()
        };
        if let Some(p) = live(&self.pipe.read()) {
            return Ok(p);
        }
        let _opening = self.opening.lock().await;
        if let Some(p) = live(&self.pipe.read()) {
            return Ok(p);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // No grpc-timeout on the stream itself: it lives as long as the client. Each append
        // has its own deadline below.
        let responses =
            tokio::time::timeout(self.rpc.opts.timeout, self.client().append(batches(rx)))
                .await
                .map_err(|_| {
                    self.rpc.error(
                        "opening the append stream",
                        Status::deadline_exceeded("no answer"),
                    )
                })?
                .map_err(|s| self.rpc.error("opening the append stream", s))?
                .into_inner();
        let waiting: Arc<Waiters> = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(read_acks(
            responses,
            waiting.clone(),
            alive.clone(),
            self.rpc.opts.timeout,
        ));
        let p = Arc::new(Pipe { tx, waiting, alive });
        *self.pipe.write() = Some(p.clone());
        Ok(p)
    }
}

/// Records as they are queued, every one ready at the time in one message (up to a bound).
fn batches(
    rx: mpsc::UnboundedReceiver<AppendRequest>,
) -> impl futures::Stream<Item = AppendBatch> + Send + 'static {
    const MAX_BATCH_BYTES: usize = 1 << 20;
    futures::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut bytes = first.payload.len();
        let mut records = vec![first];
        while bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.payload.len();
                    records.push(r);
                }
                Err(_) => break,
            }
        }
        Some((AppendBatch { records }, rx))
    })
}

/// Hands each acknowledgement to its waiter, and fails the appends that waited past
/// `timeout` (checked every quarter of it); when the stream ends, fails those still waiting.
async fn read_acks(
    mut responses: tonic::Streaming<AppendAcks>,
    waiting: Arc<Waiters>,
    alive: Arc<AtomicBool>,
    timeout: Duration,
) {
    let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        let message = tokio::select! {
            m = responses.message() => m,
            _ = tick.tick() => {
                expire(&waiting, timeout);
                continue;
            }
        };
        match message {
            Ok(Some(batch)) => {
                let mut waiting = waiting.lock();
                for r in batch.acks {
                    let result = if r.error_code == 0 {
                        Ok(r.lsn)
                    } else {
                        Err(Status::new(Code::from(r.error_code as i32), r.error))
                    };
                    if let Some(w) = waiting.remove(&r.id) {
                        let _ = w.done.send(result);
                    }
                }
            }
            Ok(None) => break Status::unavailable("the server ended the append stream"),
            Err(s) => break s,
        }
    };
    alive.store(false, Ordering::Release);
    for (_, w) in waiting.lock().drain() {
        let _ = w.done.send(Err(Status::new(
            end.code(),
            format!(
                "append stream broke before the record was acknowledged; it may or may not be durable: {}",
                end.message()
            ),
        )));
    }
}

/// Fails the appends that have waited longer than `timeout` for their acknowledgement.
fn expire(waiting: &Waiters, timeout: Duration) {
    let now = Instant::now();
    let mut waiting = waiting.lock();
    for (_, w) in waiting.extract_if(|_, w| now.duration_since(w.since) >= timeout) {
        let _ = w
            .done
            .send(Err(Status::deadline_exceeded("no acknowledgement")));
    }
}

#[async_trait]
impl Journal for GrpcJournal {
    fn reach(&self) -> crate::Reach {
        crate::Reach::Shared
    }

    async fn claim(&self, claim: &JournalClaim) -> Result<Claimed> {
        self.rpc
            .retry("claim", || {
                let mut c = self.client();
                let req = self.rpc.request(ClaimRequest {
                    database: claim.database.clone(),
                    epoch: claim.epoch,
                    flushed_lsn: claim.flushed_lsn,
                });
                async move { c.claim(req).await.map(|r| r.into_inner()) }
            })
            .await
            .map(|r| Claimed {
                journal: r.journal,
                last_lsn: r.last_lsn,
            })
    }

    async fn append(&self, epoch: u64, record: Bytes) -> Result<Lsn> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let pipe = self.pipe().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, ack) = oneshot::channel();
        let since = Instant::now();
        pipe.waiting.lock().insert(id, Waiter { done, since });
        if pipe
            .tx
            .send(AppendRequest {
                id,
                payload: record,
                epoch,
            })
            .is_err()
            || !pipe.alive.load(Ordering::Acquire)
        {
            pipe.waiting.lock().remove(&id);
            pipe.alive.store(false, Ordering::Release);
            return Err(self
                .rpc
                .error("append", Status::unavailable("the append stream is closed")));
        }
        match ack.await {
            Ok(Ok(lsn)) => Ok(lsn),
            Ok(Err(s)) => Err(self.rpc.error("append", s)),
            Err(_) => Err(self
                .rpc
                .error("append", Status::unavailable("the append stream dropped"))),
        }
    }

    async fn replay(&self, from: Lsn) -> Result<BoxStream<Result<JournalRecord>>> {
        let chunks = self
            .rpc
            .retry("replay", || {
                let mut c = self.client();
                let req = ReplayRequest { from };
                async move { c.replay(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(self.rpc.unchunk("replay", chunks, |c| {
            Ok(c.records
                .into_iter()
                .map(|r| JournalRecord {
                    lsn: r.lsn,
                    payload: r.payload,
                })
                .collect())
        }))
    }

    /// A long poll: the server answers when a record past `lsn` is durable or `limit` has
    /// passed. Its deadline is `limit` plus the call timeout, so a dead server is an error
    /// after that, not a wait for ever.
    async fn wait_past(&self, lsn: Lsn, limit: Duration) -> Result<()> {
        let deadline = limit + self.rpc.opts.timeout;
        let mut c = self.client();
        let mut req = tonic::Request::new(WaitPastRequest {
            lsn,
            limit_ms: limit.as_millis() as u64,
        });
        req.set_timeout(deadline);
        match tokio::time::timeout(deadline, c.wait_past(req)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(self.rpc.error("wait for records", s)),
            Err(_) => Err(self
                .rpc
                .error("wait for records", Status::deadline_exceeded("no answer"))),
        }
    }

    async fn truncate(&self, upto: Lsn) -> Result<()> {
        self.rpc
            .retry("truncate", || {
                let mut c = self.client();
                let req = self.rpc.request(TruncateRequest { upto });
                async move { c.truncate(req).await.map(|_| ()) }
            })
            .await
    }

    /// Waits for the appends in flight, then refuses new ones. The server's journal stays
    /// open: it belongs to the server.
    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + self.rpc.opts.timeout;
        let current = self.pipe.write().take();
        if let Some(p) = current {
            while !p.waiting.lock().is_empty() && p.alive.load(Ordering::Acquire) {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        Ok(())
    }
}
