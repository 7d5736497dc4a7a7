//! Per-method call metrics on the server side: a tower layer around every service a server
//! serves counts calls and failures and times each, labelled with the method
//! (`/cairn.journal.Journal/Append`, which names the component too). A call's time runs until
//! its response begins: a streamed response's body is not waited for.

use futures::future::BoxFuture;
use std::task::{Context, Poll};
use std::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
pub struct MeteredLayer;

impl<S> tower_layer::Layer<S> for MeteredLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Metered<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let out = call.await;
            // A call that fails at once answers with its status in the headers (gRPC's
            // trailers-only response); one that fails after streaming is not seen here.
            let failed = match &out {
                Ok(r) => r.headers().get("grpc-status").is_some_and(|s| s != "0"),
                Err(_) => true,
            };
            let labels = [("method", method)];
            metrics::counter!("cairn_rpc_server_calls_total", &labels).increment(1);
            if failed {
                metrics::counter!("cairn_rpc_server_errors_total", &labels).increment(1);
            }
            metrics::histogram!("cairn_rpc_server_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            out
        })
    }
}
