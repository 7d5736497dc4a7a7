//! Turns a URL into an object store and a key prefix, in one place (the way object_store's
//! `parse.rs` does): `s3://bucket/prefix`, `file:///path` and `memory://name`. The Parquet
//! store and the object journal both open their place through it.

use cairn_common::{Error, Result};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use url::Url;

/// How to reach an object store: the URL and, for S3, the endpoint, credentials and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStoreOptions {
    /// `s3://bucket/prefix`, `file:///absolute/path` or `memory://name`.
    pub url: String,
    /// S3 endpoint (MinIO, a test server); AWS's own when absent. Falls back to `AWS_ENDPOINT`.
    pub endpoint: Option<String>,
    /// Falls back to `AWS_REGION` / `AWS_DEFAULT_REGION`, then `us-east-1`.
    pub region: Option<String>,
    /// Fall back to `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Permit `http://` endpoints (local test servers, MinIO without TLS).
    pub allow_http: bool,
    /// Deadline of one request, and the retries after a failed one.
    pub timeout_ms: u64,
    pub max_retries: usize,
}

impl ObjectStoreOptions {
    /// A store at `url` with the defaults: no endpoint or credentials beyond the environment,
    /// HTTPS only, 30 s a request, 3 retries.
    pub fn new(url: impl Into<String>) -> Self {
        ObjectStoreOptions {
            url: url.into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            timeout_ms: 30_000,
            max_retries: 3,
        }
    }
}

/// An opened place in an object store.
pub struct ObjectLocation {
    pub store: Arc<dyn ObjectStore>,
    /// Where the objects live inside `store`.
    pub prefix: Path,
    /// For `file://`: the directory, which object_store does not fsync.
    pub local_dir: Option<PathBuf>,
}

/// `memory://name` stores live as long as the process, so a database reopened in the same
/// process finds its tables (as the memory journal does).
static MEMORY: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Checks that `url` names a place `open_object_store` can open, touching nothing (for
/// config validation).
pub fn check_object_url(url: &str, what: &str) -> Result<()> {
    let bad = |detail: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("{what} url `{url}`: {detail}"))
    };
    let parsed = Url::parse(url).map_err(|e| bad(&e))?;
    match parsed.scheme() {
        "s3" if parsed.host_str().is_none_or(str::is_empty) => {
            Err(bad(&"no bucket (expected s3://bucket/prefix)"))
        }
        "file" if parsed.to_file_path().is_err() => Err(bad(&"not an absolute local path")),
        "s3" | "file" | "memory" => Ok(()),
        other => Err(bad(&format!(
            "unsupported scheme `{other}` (s3, file, memory)"
        ))),
    }
}

/// Opens the place `opts.url` names (nothing is read yet; `file://` creates its directory).
/// `what` names the user of the URL in errors: "storage", "journal".
pub fn open_object_store(opts: &ObjectStoreOptions, what: &str) -> Result<ObjectLocation> {
    let bad = |url: &str, detail: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("{what} url `{url}`: {detail}"))
    };
    let raw = opts.url.as_str();
    let url = Url::parse(raw).map_err(|e| bad(raw, &e))?;
    let prefix = || Path::from(url.path().trim_matches('/'));
    match url.scheme() {
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad(raw, &"no bucket (expected s3://bucket/prefix)"))?;
            // Standard AWS_* variables first; explicit config wins over them.
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(opts.allow_http)
                .with_retry(RetryConfig {
                    backoff: BackoffConfig::default(),
                    max_retries: opts.max_retries,
                    retry_timeout: Duration::from_millis(opts.timeout_ms.saturating_mul(4)),
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_allow_http(opts.allow_http)
                        .with_timeout(Duration::from_millis(opts.timeout_ms))
                        .with_connect_timeout(Duration::from_millis(opts.timeout_ms.min(5_000))),
                );
            if let Some(e) = &opts.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = &opts.region {
                b = b.with_region(r);
            }
            if let Some(k) = &opts.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(s) = &opts.secret_access_key {
                b = b.with_secret_access_key(s);
            }
            let store = b.build().map_err(|e| bad(raw, &e))?;
            Ok(ObjectLocation {
                store: Arc::new(store),
                prefix: prefix(),
                local_dir: None,
            })
        }
        "file" => {
            let dir = url
                .to_file_path()
                .map_err(|()| bad(raw, &"not an absolute local path"))?;
            cairn_common::durable::create_dir_durably(&dir)?;
            let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(raw, &e))?;
            Ok(ObjectLocation {
                store: Arc::new(store),
                prefix: Path::default(),
                local_dir: Some(dir),
            })
        }
        "memory" => {
            let name = url.host_str().unwrap_or_default().to_string();
            let store = MEMORY.lock().entry(name).or_default().clone();
            Ok(ObjectLocation {
                store,
                prefix: prefix(),
                local_dir: None,
            })
        }
        other => Err(bad(
            raw,
            &format!("unsupported scheme `{other}` (s3, file, memory)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: &str) -> ObjectStoreOptions {
        ObjectStoreOptions::new(url)
    }

    fn open(opts: &ObjectStoreOptions) -> Result<ObjectLocation> {
        open_object_store(opts, "storage")
    }

    #[test]
    fn urls_are_parsed_or_refused_with_the_url_named() {
        let l = open(&opts("memory://a/some/prefix/")).unwrap();
        assert_eq!(l.prefix.as_ref(), "some/prefix");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/tables", dir.path().display());
        let l = open(&opts(&url)).unwrap();
        assert_eq!(l.local_dir.unwrap(), dir.path().join("tables"));
        let l = open(&opts("s3://bucket/p/q")).unwrap();
        assert_eq!(l.prefix.as_ref(), "p/q");
        for bad_url in ["gs://x/y", "s3:///nobucket", "not a url", "file://relative"] {
            let err = open(&opts(bad_url)).err().unwrap().to_string();
            assert!(err.contains(bad_url), "{err}");
            let err = check_object_url(bad_url, "journal")
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad_url) && err.contains("journal"), "{err}");
        }
        for good in ["s3://b/p", "memory://x", "file:///tmp/x"] {
            check_object_url(good, "journal").unwrap();
        }
    }
}
