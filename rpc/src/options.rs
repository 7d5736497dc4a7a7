//! Plain options for gRPC clients and servers; the `cairn` crate fills them from config.

use std::path::PathBuf;
use std::time::Duration;

/// How a client reaches one remote component.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// `http://host:port`, or `https://host:port` with TLS.
    pub url: String,
    /// Deadline of each call (for a stream: of each message).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Extra attempts for idempotent calls that found the server unavailable.
    pub retries: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate (with an `https` URL).
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry, if not the URL's host.
    pub tls_domain: Option<String>,
    /// PEM certificate chain and private key this client presents, for a server that
    /// verifies its clients (mutual TLS).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Largest message accepted or sent.
    pub max_message_bytes: usize,
    /// Which of the server's databases the calls are about (journal and storage servers hold
    /// many), sent as `cairn-database`; the server's `default` one when unset.
    pub database: Option<String>,
}

impl ClientOptions {
    pub fn new(url: impl Into<String>) -> Self {
        ClientOptions {
            url: url.into(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            retries: 3,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(2),
            token: None,
            tls_ca: None,
            tls_domain: None,
            tls_cert: None,
            tls_key: None,
            max_message_bytes: 64 << 20,
            database: None,
        }
    }

    /// The wait before retry `attempt` (1-based): doubling from `retry_initial`, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        cairn_common::backoff::Backoff::new(self.retry_initial, self.retry_max).delay(attempt)
    }
}

/// What every Cairn server checks and bounds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerOptions {
    /// Calls without `authorization: Bearer <token>` are refused, when set.
    pub token: Option<String>,
    /// Tokens that admit their calls to some databases only, perhaps to read only; with any,
    /// calls carrying none of them (nor `token`) are refused.
    pub scoped_tokens: Vec<crate::ScopedToken>,
    /// PEM certificate chain and private key: serve TLS when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM of the CA that signs the clients' certificates: with TLS, every client must
    /// present one it signed (mutual TLS), and a client without is refused at the handshake.
    pub tls_client_ca: Option<PathBuf>,
    /// Largest message accepted or sent (0: 64 MiB).
    pub max_message_bytes: usize,
    /// Serve beyond loopback with neither a token nor verified client certificates (see
    /// `check_exposure`).
    pub allow_open: bool,
}

impl ServerOptions {
    pub fn max_message_bytes(&self) -> usize {
        if self.max_message_bytes == 0 {
            64 << 20
        } else {
            self.max_message_bytes
        }
    }
}
