//! The `[rpc]` section: what every gRPC client and server of a profile shares (the bearer
//! token, TLS files, deadlines, retries and the message size bound). Component sections
//! name only their server's `url` and, where it differs, their own `timeout_ms`.

use cairn_rpc::{ClientOptions, ScopedToken, ServerOptions};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcSection {
    /// Shared secret: clients send `authorization: Bearer <token>`, servers refuse calls
    /// without it (default: none, no check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Servers: more tokens, each admitting its calls to some of the server's databases (the
    /// names calls give, `default` for a shard server's one), to read only if `read_only`:
    /// a tenant of a shared server reaches only its own. Clients send theirs as `token`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scoped_tokens: Vec<ScopedToken>,
    /// PEM certificate chain and private key: with both set, servers speak TLS, and clients
    /// present them to servers that verify their clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Servers: PEM of the CA that signs the clients' certificates. With TLS, every client
    /// must present a certificate it signed (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Clients: PEM of the CA that signed the servers' certificates (use `https://` URLs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Clients: the name the servers' certificates carry, if not the URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_domain: Option<String>,
    /// Deadline of one call in ms (default 10000). For calls that run as long as their data
    /// (imports, flushes, compactions) it bounds each wait for the server's progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Deadline of one connection attempt in ms (default 2000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Retries of an idempotent call, or of a compaction job, while the server is
    /// unavailable (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// First and longest wait between retries in ms (default 50 and 2000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_initial_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_ms: Option<u64>,
    /// Largest message a client or server sends or accepts (default 64 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// Servers: listen beyond loopback with neither `token` nor client certificates
    /// (`tls_client_ca`) (default false: refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_open: Option<bool>,
}

impl RpcSection {
    /// Client options for database `database` (the server's default one if `None`) on the
    /// server at `url`.
    pub fn client_of(
        &self,
        url: &str,
        timeout_ms: Option<u64>,
        database: &Option<String>,
    ) -> ClientOptions {
        let mut o = self.client(url, timeout_ms);
        o.database = database.clone();
        o
    }

    /// Client options for the server at `url`, with the component's own deadline if it has one.
    pub fn client(&self, url: &str, timeout_ms: Option<u64>) -> ClientOptions {
        let mut o = ClientOptions::new(url);
        let ms = Duration::from_millis;
        if let Some(t) = timeout_ms.or(self.timeout_ms) {
            o.timeout = ms(t);
        }
        if let Some(t) = self.connect_timeout_ms {
            o.connect_timeout = ms(t);
        }
        if let Some(r) = self.retries {
            o.retries = r;
        }
        if let Some(t) = self.retry_initial_ms {
            o.retry_initial = ms(t);
        }
        if let Some(t) = self.retry_max_ms {
            o.retry_max = ms(t);
        }
        o.token = self.token.clone();
        o.tls_ca = self.tls_ca.clone();
        o.tls_domain = self.tls_domain.clone();
        o.tls_cert = self.tls_cert.clone();
        o.tls_key = self.tls_key.clone();
        if let Some(m) = self.max_message_bytes {
            o.max_message_bytes = m;
        }
        o
    }

    pub fn server(&self) -> ServerOptions {
        ServerOptions {
            token: self.token.clone(),
            scoped_tokens: self.scoped_tokens.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            max_message_bytes: self.max_message_bytes.unwrap_or(0),
            allow_open: self.allow_open.unwrap_or(false),
        }
    }

    /// The section with defaults spelled out and the token hidden.
    pub fn resolved(&self) -> RpcSection {
        let d = ClientOptions::new("");
        RpcSection {
            token: self.token.as_ref().map(|_| "(set)".into()),
            scoped_tokens: self
                .scoped_tokens
                .iter()
                .map(|t| ScopedToken {
                    token: "(set)".into(),
                    ..t.clone()
                })
                .collect(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_domain: self.tls_domain.clone(),
            timeout_ms: Some(self.timeout_ms.unwrap_or(d.timeout.as_millis() as u64)),
            connect_timeout_ms: Some(
                self.connect_timeout_ms
                    .unwrap_or(d.connect_timeout.as_millis() as u64),
            ),
            retries: Some(self.retries.unwrap_or(d.retries)),
            retry_initial_ms: Some(
                self.retry_initial_ms
                    .unwrap_or(d.retry_initial.as_millis() as u64),
            ),
            retry_max_ms: Some(self.retry_max_ms.unwrap_or(d.retry_max.as_millis() as u64)),
            max_message_bytes: Some(self.max_message_bytes.unwrap_or(d.max_message_bytes)),
            allow_open: Some(self.allow_open.unwrap_or(false)),
        }
    }
}
