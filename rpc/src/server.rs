//! The server half: the token check, TLS, the listener and graceful shutdown, and the
//! mapping of library errors to status codes a client maps back.

use super::ServerOptions;
use super::access::Access;
use super::metered::MeteredLayer;
use cairn_common::{Error, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::Router;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

/// Marks a status that carries `Error::Moved`, so the client can tell it from the other
/// failed preconditions: a moved call was not applied and may be sent again.
pub const MOVED_HEADER: &str = "cairn-moved";

/// The status a library error travels as. Clients learn what failed, not where the server
/// keeps its files: paths are cut to their last component (the full error is logged here).
pub fn status(e: Error) -> Status {
    if !matches!(
        e,
        Error::InvalidArgument(_) | Error::Closed | Error::Fenced(_) | Error::Moved(_)
    ) {
        tracing::warn!(error = %e, "call failed");
    }
    match e {
        Error::InvalidArgument(m) => Status::invalid_argument(without_paths(&m)),
        Error::Corruption { what, detail } => {
            Status::data_loss(without_paths(&format!("{what}: {detail}")))
        }
        Error::Closed => Status::failed_precondition("closed"),
        // Aborted is kept for fencing alone, so a client can map it back.
        Error::Fenced(m) => Status::aborted(without_paths(&m)),
        Error::Held(m) | Error::Conflict(m) => Status::failed_precondition(without_paths(&m)),
        Error::Moved(m) => {
            let mut s = Status::failed_precondition(m);
            s.metadata_mut().insert(
                MOVED_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
            s
        }
        other => Status::internal(without_paths(&other.to_string())),
    }
}

/// `text` with every absolute path shortened to its file name.
fn without_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('/') {
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || "([{'\"`=".contains(c));
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || ")]}'\",;`".contains(c))
            .map_or(rest.len(), |n| at + n);
        let word = &rest[at..end];
        out.push_str(&rest[..at]);
        if starts_word && word[1..].contains('/') {
            let name = word.trim_end_matches(['/', ':', '.']).rsplit('/').next();
            out.push_str(name.unwrap_or_default());
            out.push_str(&word[word.trim_end_matches(['/', ':', '.']).len()..]);
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Refuses calls that do not carry the configured bearer token or one of the scoped tokens,
/// and records on each call what its token admits it to (`Access`).
#[derive(Clone)]
pub struct ServerAuth {
    expected: Option<String>,
    scoped: Arc<[(String, Access)]>,
}

impl ServerAuth {
    pub fn new(opts: &ServerOptions) -> Self {
        ServerAuth {
            expected: opts.token.as_ref().map(|t| format!("Bearer {t}")),
            scoped: opts
                .scoped_tokens
                .iter()
                .map(|t| (format!("Bearer {}", t.token), Access::from(t)))
                .collect(),
        }
    }
}

impl tonic::service::Interceptor for ServerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if self.expected.is_none() && self.scoped.is_empty() {
            return Ok(req);
        }
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // Compare in constant time: tokens are secrets (`subtle` compares lengths too).
        let same = |t: &str| bool::from(given.as_bytes().ct_eq(t.as_bytes()));
        let access = if self.expected.as_deref().is_some_and(same) {
            Some(Access::All)
        } else {
            self.scoped
                .iter()
                .find(|(t, _)| same(t))
                .map(|(_, a)| a.clone())
        };
        match access {
            Some(a) => {
                req.extensions_mut().insert(a);
                Ok(req)
            }
            None => Err(Status::unauthenticated("missing or wrong bearer token")),
        }
    }
}

/// What a server-streaming call returns.
pub type StatusStream<M> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<M, Status>> + Send + 'static>>;

/// Sends `items` to a client in messages of about `chunk_bytes` (`size` weighs an item, `wrap`
/// makes a message), through a buffer of two messages: a slow reader holds the producer back,
/// and a client that goes away stops it. An item that fails ends the stream with its error.
pub fn chunked<T, M>(
    mut items: cairn_common::BoxStream<Result<T>>,
    chunk_bytes: usize,
    size: fn(&T) -> usize,
    wrap: fn(Vec<T>) -> M,
) -> StatusStream<M>
where
    T: Send + 'static,
    M: Send + 'static,
{
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while let Some(item) = items.next().await {
            match item {
                Ok(item) => {
                    bytes += size(&item);
                    chunk.push(item);
                    if bytes >= chunk_bytes {
                        bytes = 0;
                        if tx.send(Ok(wrap(std::mem::take(&mut chunk)))).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(status(e))).await;
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(Ok(wrap(chunk))).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Refuses to serve on an address other machines can reach with neither a token nor TLS,
/// unless `opts.allow_open` says so: anyone on the network could read and write every
/// database the server holds.
pub fn check_exposure(addr: SocketAddr, opts: &ServerOptions) -> Result<()> {
    // TLS alone encrypts, but lets in any client: only a token or a verified client
    // certificate says who is calling.
    let clients_verified = opts.tls_cert.is_some() && opts.tls_client_ca.is_some();
    let guarded = opts.token.is_some() || !opts.scoped_tokens.is_empty() || clients_verified;
    if addr.ip().is_loopback() || guarded || opts.allow_open {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "refusing to serve on {addr} with neither rpc.token nor client certificates (rpc.tls_client_ca, with rpc.tls_cert and rpc.tls_key): anyone who can reach it could read and write the data, TLS or not. Set a token or a client CA, or listen on 127.0.0.1, or set rpc.allow_open = true to serve open on purpose"
    )))
}

/// A server builder with TLS configured when the options ask for it.
/// A server's router, with the call metrics around every service.
pub type ServerRouter = Router<tower_layer::Stack<MeteredLayer, tower_layer::Identity>>;

pub fn builder(
    opts: &ServerOptions,
) -> Result<Server<tower_layer::Stack<MeteredLayer, tower_layer::Identity>>> {
    let mut server = Server::builder()
        // A span per call, naming the service and method (so the component) and the
        // database: whatever the handler logs carries them. At error level, so that it is
        // there whatever level the log is filtered at.
        .trace_fn(|req| {
            let database = req
                .headers()
                .get(super::DATABASE_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(super::DEFAULT_DATABASE);
            tracing::error_span!("rpc", method = %req.uri().path(), database)
        })
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(super::client::STREAM_WINDOW))
        .initial_connection_window_size(Some(super::client::CONNECTION_WINDOW))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        // What one connection may hold open at once; the client's further calls wait.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .layer(MeteredLayer::SERVER);
    match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => {
            super::tls_provider();
            let cert = std::fs::read(cert).map_err(|e| Error::io(cert, e))?;
            let key = std::fs::read(key).map_err(|e| Error::io(key, e))?;
            let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
            if let Some(ca) = &opts.tls_client_ca {
                let pem = std::fs::read(ca).map_err(|e| Error::io(ca, e))?;
                tls = tls.client_ca_root(Certificate::from_pem(pem));
            }
            server = server
                .tls_config(tls)
                .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?;
        }
        (None, None) if opts.tls_client_ca.is_some() => {
            return Err(Error::InvalidArgument(
                "tls_client_ca needs TLS: set tls_cert and tls_key too".into(),
            ));
        }
        (None, None) => {}
        _ => {
            return Err(Error::InvalidArgument(
                "TLS needs both tls_cert and tls_key".into(),
            ));
        }
    }
    Ok(server)
}

/// Calls one connection may have open at once (tonic sets no limit). An engine keeps one
/// connection per server, and each scan or compaction holds a stream per table it merges, all
/// at once: a bound near what many concurrent scans use could leave each holding some streams
/// while waiting for the rest. So the bound is high, and stops only a runaway client.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 8192;

/// How long a stopping server waits for the calls in flight before it closes them.
pub const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A running server: its address, and the means to stop it gracefully.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub tls: bool,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<()>>,
}

impl ServerHandle {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, lets calls in flight finish, and returns once the server is down.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.wait().await
    }

    /// Waits until the server ends by itself (its shutdown signal fired).
    pub async fn wait(self) -> Result<()> {
        self.join
            .await
            .map_err(|e| Error::component("server task", e))?
    }
}

/// Serves `router` on `listener` until `stop` is called or `signal` fires. Then `drain` is set
/// to true, which tells long-lived streams (the journal's appends) to finish what they took
/// and end, and the server waits for the calls in flight, for `DRAIN_GRACE` at most.
/// `descriptors` are the encoded descriptor sets of the services `router` holds: server
/// reflection (v1 and v1alpha, so `grpcurl list` works) answers from them, and from the
/// health service's own.
pub fn serve(
    router: ServerRouter,
    descriptors: &[&'static [u8]],
    listener: TcpListener,
    tls: bool,
    drain: watch::Sender<bool>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<ServerHandle> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::component("server", e))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let (fired, shutting_down) = oneshot::channel::<()>();
    // The gRPC health checking protocol: the server is SERVING from here (its component is
    // open before it is served) and NOT_SERVING as soon as it begins to shut down, so a load
    // balancer or probe watching it stops sending calls before the connections close.
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        descriptors.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |b, d| b.register_encoded_file_descriptor_set(d),
        )
    };
    let failed = |e: tonic_reflection::server::Error| Error::component("server reflection", e);
    let router = router
        .add_service(health_service)
        .add_service(reflection().build_v1().map_err(failed)?)
        .add_service(reflection().build_v1alpha().map_err(failed)?);
    let shutdown = async move {
        tokio::select! {
            _ = stopped => {}
            _ = signal => {}
        }
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = drain.send(true);
        let _ = fired.send(());
    };
    // A client that keeps a call open (a stalled or hostile one) must not hold the server
    // up for ever: past the grace period its connections are closed.
    let grace = async move {
        match shutting_down.await {
            Ok(()) => tokio::time::sleep(DRAIN_GRACE).await,
            Err(_) => std::future::pending().await,
        }
    };
    // Our own listener (port 0 for tests, the address `--listen` names): the builder's
    // tcp_nodelay applies only to sockets it accepts itself, so set it here. Without it,
    // small acknowledgements wait on delayed ACKs (40 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let join = tokio::spawn(async move {
        tokio::select! {
            r = router.serve_with_incoming_shutdown(incoming, shutdown) => {
                r.map_err(|e| Error::component(format!("server on {addr}"), e))
            }
            () = grace => {
                tracing::warn!(%addr, "calls still open {DRAIN_GRACE:?} after shutdown began; closing them");
                Ok(())
            }
        }
    });
    Ok(ServerHandle {
        addr,
        tls,
        stop: Some(stop),
        join,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_serve_without_a_token_or_tls_unless_told() {
        let open = ServerOptions::default();
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert!(check_exposure(at("127.0.0.1:1"), &open).is_ok());
        assert!(check_exposure(at("[::1]:1"), &open).is_ok());
        let e = check_exposure(at("0.0.0.0:1"), &open).unwrap_err();
        assert!(e.to_string().contains("rpc.token"), "{e}");
        let token = ServerOptions {
            token: Some("t".into()),
            ..ServerOptions::default()
        };
        assert!(check_exposure(at("0.0.0.0:1"), &token).is_ok());
        // TLS that verifies no client is no guard; verified client certificates are.
        let tls = ServerOptions {
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            ..ServerOptions::default()
        };
        let e = check_exposure(at("0.0.0.0:1"), &tls).unwrap_err();
        assert!(e.to_string().contains("rpc.tls_client_ca"), "{e}");
        let mtls = ServerOptions {
            tls_client_ca: Some("ca.pem".into()),
            ..tls
        };
        assert!(check_exposure(at("0.0.0.0:1"), &mtls).is_ok());
        let told = ServerOptions {
            allow_open: true,
            ..ServerOptions::default()
        };
        assert!(check_exposure(at("10.0.0.1:1"), &told).is_ok());
    }

    #[test]
    fn errors_for_clients_carry_no_server_paths() {
        assert_eq!(
            without_paths("corruption in journal segment /srv/cairn/journal/0001.wal: bad"),
            "corruption in journal segment 0001.wal: bad"
        );
        assert_eq!(
            without_paths("I/O error on /srv/x/tables/9.sst: No space left (os error 28)"),
            "I/O error on 9.sst: No space left (os error 28)"
        );
        assert_eq!(
            without_paths("url http://h:1/a/b and 3/4"),
            "url http://h:1/a/b and 3/4"
        );
        let s = status(Error::io(
            "/srv/data/7.sst",
            std::io::Error::other("disk on fire"),
        ));
        assert!(!s.message().contains("/srv"), "{}", s.message());
        assert!(s.message().contains("7.sst"), "{}", s.message());
    }

    #[test]
    fn the_token_must_match_exactly() {
        use tonic::service::Interceptor;
        let mut auth = ServerAuth::new(&ServerOptions {
            token: Some("s3cret".into()),
            ..ServerOptions::default()
        });
        let with = |h: Option<&str>| {
            let mut r = Request::new(());
            if let Some(h) = h {
                r.metadata_mut().insert("authorization", h.parse().unwrap());
            }
            r
        };
        assert!(auth.call(with(Some("Bearer s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3crett"),
            Some("Bearer S3cret"),
        ] {
            assert!(auth.call(with(bad)).is_err(), "{bad:?}");
        }
    }
}
