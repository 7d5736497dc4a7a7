//! The clients' TCP connector, whose sockets send what one turn of the runtime produced in one
//! write.
//!
//! hyper opens a gRPC call by writing the request's HEADERS frame as soon as the connection
//! task runs, while the body's DATA frames come from another task that is only woken then
//! (it waits for HTTP/2 send capacity, which the connection task assigns). A unary call thus
//! left in two writes, two segments and often two wake-ups of the server, for ~90 bytes.
//! Here the first write of each flush yields once to the runtime, so the tasks already woken
//! (the body's) run first and their frames join the same write. Nothing waits on a timer:
//! the hold lasts one scheduler turn, and only when there is something to write.

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// A socket whose writes wait one turn of the runtime after the last flush.
pub struct Coalesced<T> {
    io: T,
    /// Set once this flush cycle has yielded; cleared when a flush completes.
    yielded: bool,
}

impl<T> Coalesced<T> {
    pub fn new(io: T) -> Self {
        Coalesced { io, yielded: false }
    }

    /// True when the caller should write now; otherwise the task has been woken to come back
    /// after the tasks already queued have run.
    fn ready_to_write(&mut self, cx: &mut Context<'_>) -> bool {
        if self.yielded {
            return true;
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        false
    }
}

impl<T: Read + Unpin> Read for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.ready_to_write(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.ready_to_write(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        if r.is_ready() {
            self.yielded = false;
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// hyper's TCP connector, configured as tonic configures its own, with coalesced sockets.
#[derive(Clone)]
pub struct CoalescingConnector {
    http: HttpConnector,
}

impl CoalescingConnector {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        // https:// is handled by tonic's TLS layer around this connector.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        CoalescingConnector { http }
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<Coalesced<TokioIo<TcpStream>>, io::Error>> + Send>>;

impl tower_service::Service<http::Uri> for CoalescingConnector {
    type Response = Coalesced<TokioIo<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(io::Error::other)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let io = connecting.await.map_err(io::Error::other)?;
            Ok(Coalesced::new(io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use tokio::io::AsyncReadExt;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_first_write_of_a_flush_yields_once_and_later_ones_go_through() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut io = Coalesced::new(TokioIo::new(client.unwrap()));
        let mut peer = accepted.unwrap().0;
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = Pin::new(&mut io);

        // Nothing is written on the first try, and the task is asked to come back.
        assert!(io.as_mut().poll_write(&mut cx, b"headers").is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // When it does, both frames go out, without another yield.
        let Poll::Ready(Ok(n)) = io.as_mut().poll_write(&mut cx, b"headers+data") else {
            panic!("the second poll must write");
        };
        assert_eq!(n, 12);
        assert!(io.as_mut().poll_flush(&mut cx).is_ready());
        let mut got = [0u8; 12];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"headers+data");

        // A flush ends the cycle: the next write yields again, vectored or not.
        let bufs = [io::IoSlice::new(b"next")];
        assert!(io.as_mut().poll_write_vectored(&mut cx, &bufs).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert!(matches!(
            io.as_mut().poll_write_vectored(&mut cx, &bufs),
            Poll::Ready(Ok(4))
        ));
    }
}
