//! `Completing`: a future that, dropped before it is done, finishes on the runtime by itself.
//! A write wraps its journal append and memtable insert in one, so a caller that goes away
//! (a timeout, a cancelled call) cannot leave an append that landed unapplied: what the
//! journal holds, the writer and its replicas show.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pub(crate) struct Completing<F>(Option<Pin<Box<F>>>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static;

impl<F> Completing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pub(crate) fn new(f: F) -> Self {
        Completing(Some(Box::pin(f)))
    }
}

impl<F> Future for Completing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(f) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let out = ready!(f.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(out)
    }
}

impl<F> Drop for Completing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        // Outside a runtime (the process is ending) the rest is dropped, as any future is.
        if let (Some(f), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(f);
        }
    }
}
