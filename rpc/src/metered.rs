//! Per-method call metrics on both ends of every connection: a tower layer around each
//! server's services and each client's channel counts calls and failures and times each,
//! labelled with the method (`/cairn.journal.Journal/Append`, which names the component too).
//! A call's time runs until its response begins: a streamed response's body is not waited
//! for. A failure is seen wherever gRPC reports it: in the response's headers (a call that
//! fails at once) or in the trailers after a streamed body.

use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// Which end records: the metric names say it (`cairn_rpc_server_…`, `cairn_rpc_client_…`).
#[derive(Debug, Clone, Copy)]
pub struct MeteredLayer {
    names: &'static Names,
}

#[derive(Debug)]
struct Names {
    calls: &'static str,
    errors: &'static str,
    seconds: &'static str,
}

static SERVER: Names = Names {
    calls: "cairn_rpc_server_calls_total",
    errors: "cairn_rpc_server_errors_total",
    seconds: "cairn_rpc_server_seconds",
};

static CLIENT: Names = Names {
    calls: "cairn_rpc_client_calls_total",
    errors: "cairn_rpc_client_errors_total",
    seconds: "cairn_rpc_client_seconds",
};

impl MeteredLayer {
    pub const SERVER: Self = Self { names: &SERVER };
    pub const CLIENT: Self = Self { names: &CLIENT };
}

impl<S> tower_layer::Layer<S> for MeteredLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            names: self.names,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    names: &'static Names,
}

fn failed(headers: &http::HeaderMap) -> bool {
    headers.get("grpc-status").is_some_and(|s| s != "0")
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Metered<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let names = self.names;
        let method = req.uri().path().to_string();
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let out = call.await;
            let labels = [("method", method)];
            metrics::counter!(names.calls, &labels).increment(1);
            metrics::histogram!(names.seconds, &labels).record(started.elapsed().as_secs_f64());
            let errors = metrics::counter!(names.errors, &labels);
            match out {
                Ok(response) if failed(response.headers()) => {
                    errors.increment(1);
                    Ok(response.map(|body| MeteredBody { body, errors: None }))
                }
                Ok(response) => Ok(response.map(|body| MeteredBody {
                    body,
                    errors: Some(errors),
                })),
                Err(e) => {
                    errors.increment(1);
                    Err(e)
                }
            }
        })
    }
}

/// A response body that counts a failure reported in its trailers, once.
pub struct MeteredBody<B> {
    body: B,
    /// `None` once the call's failure (or success) has been counted.
    errors: Option<metrics::Counter>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(errors) = this.errors.take()
            && failed(trailers)
        {
            errors.increment(1);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::collections::VecDeque;

    /// A response body of given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// A service answering every call with a response of `status` in its headers (absent: a
    /// streamed response) and a body of one message then trailers of `trailer`.
    #[derive(Clone)]
    struct Answer {
        status: Option<&'static str>,
        trailer: &'static str,
    }

    impl tower_service::Service<http::Request<()>> for Answer {
        type Response = http::Response<Frames>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", self.trailer.parse().unwrap());
            let body = Frames(VecDeque::from([
                Frame::data(Bytes::from_static(b"message")),
                Frame::trailers(trailers),
            ]));
            let mut response = http::Response::new(body);
            if let Some(s) = self.status {
                response
                    .headers_mut()
                    .insert("grpc-status", s.parse().unwrap());
            }
            std::future::ready(Ok(response))
        }
    }

    /// Calls `answer` once through the client-side layer and reads the whole body; returns
    /// (calls, errors) recorded for its method.
    fn call_once(answer: Answer) -> (u64, u64) {
        use tower_layer::Layer;
        use tower_service::Service;
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            futures::executor::block_on(async {
                let mut svc = MeteredLayer::CLIENT.layer(answer);
                let req = http::Request::builder()
                    .uri("/cairn.test.Test/Call")
                    .body(())
                    .unwrap();
                let mut body = svc.call(req).await.unwrap().into_body();
                while std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                    .await
                    .is_some()
                {}
            })
        });
        let mut calls = 0;
        let mut errors = 0;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            assert!(
                key.labels()
                    .any(|l| l.key() == "method" && l.value() == "/cairn.test.Test/Call")
            );
            match (key.name(), value) {
                ("cairn_rpc_client_calls_total", DebugValue::Counter(n)) => calls = n,
                ("cairn_rpc_client_errors_total", DebugValue::Counter(n)) => errors = n,
                _ => {}
            }
        }
        (calls, errors)
    }

    #[test]
    fn a_call_that_succeeds_counts_no_failure() {
        let ok = Answer {
            status: None,
            trailer: "0",
        };
        assert_eq!(call_once(ok), (1, 0));
    }

    #[test]
    fn a_failure_after_streaming_is_counted_from_the_trailers() {
        let late = Answer {
            status: None,
            trailer: "13",
        };
        assert_eq!(call_once(late), (1, 1));
    }

    #[test]
    fn a_failure_in_the_headers_is_counted_once() {
        let early = Answer {
            status: Some("14"),
            trailer: "14",
        };
        assert_eq!(call_once(early), (1, 1));
    }
}
