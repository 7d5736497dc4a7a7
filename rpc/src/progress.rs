//! Deadlines on progress for calls that take as long as their data: the server runs the work
//! and streams heartbeats until it ends, then the result; the client bounds the wait for each
//! message by its call deadline. A dead or stopped server is an error within one deadline, and
//! a call that is working may run for hours.

use super::server::{StatusStream, status};
use super::{RpcClient, pb};
use cairn_common::Result;
use std::future::Future;
use std::time::Duration;
use tonic::{Request, Status, Streaming};

/// How often a server reports progress: a quarter of the deadline the client set on the call
/// (its `grpc-timeout`), kept between 10 ms and 1 s; 1 s when the call has no deadline.
pub fn heartbeat_interval<T>(req: &Request<T>) -> Duration {
    let deadline = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    match deadline {
        Some(d) => (d / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        None => Duration::from_secs(1),
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A long call's stream of messages: heartbeats, then one that carries the result.
pub trait ProgressMessage: Send + 'static {
    fn heartbeat() -> Self;
    fn is_done(&self) -> bool;
}

impl ProgressMessage for pb::Progress {
    fn heartbeat() -> Self {
        pb::Progress {
            done: false,
            count: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// Runs `work` for a client, sending a heartbeat every `interval` until it ends, then its
/// result (or its error as the stream's status). A client that goes away stops the work: it
/// is aborted at its next await.
///
/// The work is a task of its own: were it polled beside the heartbeats, one long stretch of
/// CPU between its awaits (a heavy codec encoding a run of blocks) would hold the heartbeats
/// back past the client's deadline, and a busy worker would pass for a dead one.
pub fn with_progress<M, F>(interval: Duration, work: F) -> StatusStream<M>
where
    M: ProgressMessage,
    F: Future<Output = Result<M>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut work = tokio::spawn(work);
    tokio::spawn(async move {
        let _stop = AbortOnDrop(work.abort_handle());
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut work => {
                    let r = match r {
                        Ok(r) => r.map_err(status),
                        Err(e) => Err(Status::internal(format!("the call's work failed: {e}"))),
                    };
                    let _ = tx.send(r).await;
                    return;
                }
                _ = tick.tick() => {
                    if tx.send(Ok(M::heartbeat())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Stops a task when its follower goes: a client's stream dropped mid-call.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `with_progress` for work whose result is a count (`pb::Progress`).
pub fn counting_progress<F>(interval: Duration, work: F) -> StatusStream<pb::Progress>
where
    F: Future<Output = Result<u64>> + Send + 'static,
{
    with_progress(interval, async move {
        work.await.map(|count| pb::Progress { done: true, count })
    })
}

impl RpcClient {
    /// Follows a long call's progress to its end: each message must come within the call
    /// deadline. Returns the message that says it is done.
    pub async fn progress<M: ProgressMessage>(
        &self,
        what: &str,
        stream: Streaming<M>,
    ) -> Result<M> {
        self.progress_status(stream)
            .await
            .map_err(|s| self.error(what, s))
    }

    /// `progress`, failing with the status, for callers that act on its code.
    pub async fn progress_status<M: ProgressMessage>(
        &self,
        mut stream: Streaming<M>,
    ) -> Result<M, Status> {
        loop {
            match tokio::time::timeout(self.opts.timeout, stream.message()).await {
                Ok(Ok(Some(m))) if m.is_done() => return Ok(m),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => {
                    return Err(Status::internal(
                        "the server ended the call without its result",
                    ));
                }
                Ok(Err(s)) => return Err(lost_server(s)),
                Err(_) => {
                    return Err(Status::deadline_exceeded("the server reported no progress"));
                }
            }
        }
    }
}

/// A stream that broke under the call (the server's process died, its connection was
/// reset) comes from tonic as `Unknown` with the transport's error beneath: it says the
/// server is gone, not what the server answered, so it is `Unavailable`, which callers
/// retry elsewhere. A status the server sent has no source.
pub fn lost_server(s: Status) -> Status {
    if s.code() == tonic::Code::Unknown && std::error::Error::source(&s).is_some() {
        Status::unavailable(format!(
            "the server went away during the call: {}",
            s.message()
        ))
    } else {
        s
    }
}

/// Whether a call failed before anything was sent: the connection to the server was
/// refused, so the call cannot have been applied and may be sent again, there or elsewhere.
pub fn never_sent(s: &Status) -> bool {
    let mut cause = std::error::Error::source(s);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_was_never_sent() {
        let refused = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        assert!(never_sent(&refused));
        let reset = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert!(!never_sent(&reset));
        assert!(!never_sent(&Status::unavailable("no source")));
    }

    #[test]
    fn a_broken_stream_is_a_lost_server_and_a_sent_status_is_itself() {
        let broken = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        assert_eq!(lost_server(broken).code(), tonic::Code::Unavailable);
        let sent = Status::unknown("the server said so");
        assert_eq!(lost_server(sent).code(), tonic::Code::Unknown);
        let refused = Status::invalid_argument("no-such-operator");
        assert_eq!(lost_server(refused).code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }

    /// Work that holds its thread for a long stretch between awaits (as a heavy codec does)
    /// still has its heartbeats sent on time, so its client does not take it for dead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeats_go_out_while_the_work_holds_its_thread() {
        use futures::StreamExt;
        let mut stream = with_progress(Duration::from_millis(10), async {
            std::thread::sleep(Duration::from_millis(300));
            Ok(pb::Progress {
                done: true,
                count: 7,
            })
        });
        let mut heartbeats = 0;
        while let Some(m) = stream.next().await {
            let m = m.unwrap();
            if m.done {
                assert_eq!(m.count, 7);
                break;
            }
            heartbeats += 1;
        }
        assert!(heartbeats >= 5, "{heartbeats} heartbeats in 300 ms");
    }

    /// A client that goes away stops the work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_stream_stops_the_work() {
        use futures::StreamExt;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let steps = Arc::new(AtomicU64::new(0));
        let counted = steps.clone();
        let mut stream = counting_progress(Duration::from_millis(5), async move {
            loop {
                tokio::time::sleep(Duration::from_millis(2)).await;
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(!stream.next().await.unwrap().unwrap().done);
        drop(stream);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stopped = steps.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(steps.load(Ordering::Relaxed), stopped, "the work went on");
    }

    #[test]
    fn heartbeats_come_at_a_quarter_of_the_deadline() {
        let mut r = Request::new(());
        assert_eq!(heartbeat_interval(&r), Duration::from_secs(1));
        r.set_timeout(Duration::from_millis(400));
        assert_eq!(heartbeat_interval(&r), Duration::from_millis(100));
        r.set_timeout(Duration::from_millis(8));
        assert_eq!(heartbeat_interval(&r), Duration::from_millis(10));
    }
}
