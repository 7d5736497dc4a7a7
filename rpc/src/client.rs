//! The client half: a lazily connected channel (it reconnects by itself once a server is
//! back), the bearer token on every call, per-call deadlines, retries with backoff for
//! idempotent calls, and errors that name the component and its URL.

use super::ClientOptions;
use super::metered::{Metered, MeteredLayer};
use cairn_common::{Error, Result};
use std::future::Future;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tower_layer::Layer;

/// HTTP/2 flow-control window of one stream: one stream carries every journal append in
/// flight, and HTTP/2's default 64 KiB would stall it behind window updates.
pub const STREAM_WINDOW: u32 = 2 << 20;

/// The connection's window is the largest HTTP/2 allows, so it never binds before the
/// streams' windows do. A compaction merges many scans over one connection and reads each
/// only when the merge needs its next entry; with a smaller connection window, the blocks
/// buffered on the streams not being read could use it all up and starve the one the merge
/// waits on, which would never come. Memory stays bounded by the stream windows.
pub const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

type Header = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

/// Adds the bearer token and the database's name to every outgoing call.
#[derive(Clone)]
pub struct Auth {
    header: Option<Header>,
    database: Option<Header>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        if let Some(d) = &self.database {
            req.metadata_mut().insert(super::DATABASE_HEADER, d.clone());
        }
        Ok(req)
    }
}

/// A client's channel: per-method metrics around the connection, the token and database on
/// every call.
pub type RpcChannel = InterceptedService<Metered<Channel>, Auth>;

/// A connection to one remote component, shared by its generated clients.
#[derive(Clone)]
pub struct RpcClient {
    pub channel: RpcChannel,
    pub opts: ClientOptions,
    /// What the caller calls the remote end, for errors: "journal", "storage", "shard 2"...
    pub component: std::sync::Arc<str>,
}

/// Prepares a channel to `opts.url`. Nothing is dialled until the first call, so a client
/// can be built while its server is still starting; a dead server is an error per call.
pub fn connect(
    component: impl Into<std::sync::Arc<str>>,
    opts: ClientOptions,
) -> Result<RpcClient> {
    let component = component.into();
    let bad = |d: String| Error::InvalidArgument(format!("{component} url `{}`: {d}", opts.url));
    let mut endpoint = Endpoint::from_shared(opts.url.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(opts.connect_timeout)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if opts.url.starts_with("https://") || opts.tls_ca.is_some() {
        super::tls_provider();
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &opts.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| Error::io(ca, e))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some(d) = &opts.tls_domain {
            tls = tls.domain_name(d.clone());
        }
        match (&opts.tls_cert, &opts.tls_key) {
            (Some(cert), Some(key)) => {
                let cert = std::fs::read(cert).map_err(|e| Error::io(cert, e))?;
                let key = std::fs::read(key).map_err(|e| Error::io(key, e))?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => {
                return Err(bad(
                    "a client certificate needs both tls_cert and tls_key".into()
                ));
            }
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| bad(format!("TLS: {e}")))?;
    }
    let header = match &opts.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| bad("the token has characters a header cannot carry".into()))?,
        ),
        None => None,
    };
    let database = match &opts.database {
        Some(d) => {
            super::check_database_name(d)?;
            Some(d.parse().map_err(|_| bad(format!("database name `{d}`")))?)
        }
        None => None,
    };
    // The sockets come from our connector (TCP_NODELAY, coalesced writes): the endpoint's own
    // TCP settings apply only to tonic's connector. Its connect timeout and TLS still wrap ours.
    Ok(RpcClient {
        channel: InterceptedService::new(
            MeteredLayer::CLIENT.layer(endpoint.connect_with_connector_lazy(
                super::coalesce::CoalescingConnector::new(opts.connect_timeout),
            )),
            Auth { header, database },
        ),
        opts,
        component,
    })
}

impl RpcClient {
    /// Whom an error is about: "storage at http://127.0.0.1:10002", with the database
    /// when it is not the server's default one.
    pub fn who(&self) -> String {
        match &self.opts.database {
            Some(d) => format!("{} at {} (database {d})", self.component, self.opts.url),
            None => format!("{} at {}", self.component, self.opts.url),
        }
    }

    /// A request carrying the call's deadline, which the server also sees. The channel sets
    /// none of its own: a deadline on the channel would cut every call, long ones included,
    /// so each call sets the one that suits it (see `progress` for long calls).
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(self.opts.timeout);
        r
    }

    /// Turns a failed call into the library's error, keeping what kind of failure it was.
    pub fn error(&self, what: &str, s: Status) -> Error {
        let who = self.who();
        if s.metadata().contains_key(crate::server::MOVED_HEADER) {
            return Error::Moved(format!("{who}: {}", s.message()));
        }
        match s.code() {
            Code::InvalidArgument => Error::InvalidArgument(format!("{who}: {}", s.message())),
            Code::DataLoss => Error::corruption(who, s.message()),
            Code::Aborted => Error::Fenced(format!("{who}: {what}: {}", s.message())),
            Code::DeadlineExceeded | Code::Cancelled => Error::component(
                who,
                format!(
                    "{what} timed out after {} ms ({})",
                    self.opts.timeout.as_millis(),
                    s.message()
                ),
            ),
            Code::Unavailable => {
                Error::component(who, format!("{what}: server unavailable ({})", s.message()))
            }
            Code::Unauthenticated => {
                Error::component(who, format!("{what}: refused: {}", s.message()))
            }
            code => Error::component(who, format!("{what}: {code:?}: {}", s.message())),
        }
    }

    /// The items of a server stream of chunks (the other end of the server's `chunked`):
    /// `unpack` opens a chunk, each chunk must come within the call deadline, and the first
    /// failure ends the stream with an error naming this component.
    pub fn unchunk<M, T>(
        &self,
        what: &'static str,
        chunks: tonic::Streaming<M>,
        unpack: fn(M) -> Result<Vec<T>>,
    ) -> cairn_common::BoxStream<Result<T>>
    where
        M: Send + 'static,
        T: Send + 'static,
    {
        use futures::StreamExt;
        let rpc = self.clone();
        let items = futures::stream::unfold(Some(chunks), move |state| {
            let rpc = rpc.clone();
            async move {
                let mut chunks = state?;
                let next = match tokio::time::timeout(rpc.opts.timeout, chunks.message()).await {
                    Ok(Ok(Some(chunk))) => unpack(chunk),
                    Ok(Ok(None)) => return None,
                    Ok(Err(s)) => Err(rpc.error(what, s)),
                    Err(_) => Err(rpc.error(what, Status::deadline_exceeded("no next chunk"))),
                };
                Some(match next {
                    Ok(items) => (
                        futures::stream::iter(items.into_iter().map(Ok).collect::<Vec<_>>()),
                        Some(chunks),
                    ),
                    Err(e) => (futures::stream::iter(vec![Err(e)]), None),
                })
            }
        })
        .flatten();
        Box::pin(items)
    }

    /// Runs an idempotent call, retrying with backoff while the server is unavailable.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(s) if s.code() == Code::Unavailable && attempt < self.opts.retries => {
                    attempt += 1;
                    tracing::debug!(who = %self.who(), attempt, "{what}: {}; retrying", s.message());
                    tokio::time::sleep(self.opts.backoff(attempt)).await;
                }
                Err(s) => return Err(self.error(what, s)),
            }
        }
    }
}
