//! Test support: a real S3 endpoint for tests that must speak the S3 protocol over HTTP. By
//! default an in-process `s3s-fs` server on 127.0.0.1 (a port of its own, files in a temporary
//! directory), so `cargo test` needs nothing installed; with `CAIRN_TEST_S3_ENDPOINT` set, the
//! same tests use that endpoint instead (MinIO, say), with the usual `AWS_*` credentials.
//! `model` holds what the model-based tests share; `FreezableProxy` stands for a stopped node;
//! `EtcdServer` is a real etcd on loopback.

mod etcd;
pub mod model;
mod proxy;

pub use etcd::EtcdServer;
pub use proxy::FreezableProxy;

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

pub const ACCESS_KEY: &str = "cairn-test";
pub const SECRET_KEY: &str = "cairn-test-secret";

/// Where a test's objects go, and how to reach it.
pub struct S3Endpoint {
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// Unique per endpoint handed out, so tests sharing an external bucket do not collide.
    pub prefix: String,
    server: Option<S3Server>,
}

static PREFIXES: AtomicU64 = AtomicU64::new(0);

impl S3Endpoint {
    /// The external endpoint named by `CAIRN_TEST_S3_ENDPOINT`, or a fresh in-process server.
    pub fn start() -> Self {
        let prefix = format!(
            "cairn-test-{}-{}",
            std::process::id(),
            PREFIXES.fetch_add(1, Ordering::Relaxed)
        );
        if let Ok(endpoint) = std::env::var("CAIRN_TEST_S3_ENDPOINT") {
            let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.into());
            return S3Endpoint {
                endpoint,
                bucket: var("CAIRN_TEST_S3_BUCKET", "cairn-test"),
                access_key_id: var("AWS_ACCESS_KEY_ID", "minioadmin"),
                secret_access_key: var("AWS_SECRET_ACCESS_KEY", "minioadmin"),
                region: var("AWS_REGION", "us-east-1"),
                prefix,
                server: None,
            };
        }
        let server = S3Server::start("cairn", "127.0.0.1:0", None, Duration::ZERO)
            .expect("start the in-process S3 server");
        S3Endpoint {
            endpoint: format!("http://{}", server.addr),
            bucket: "cairn".into(),
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            region: "us-east-1".into(),
            prefix,
            server: Some(server),
        }
    }

    /// `s3://bucket/prefix/sub`.
    pub fn url(&self, sub: &str) -> String {
        format!("s3://{}/{}/{sub}", self.bucket, self.prefix)
    }

    /// Makes every request fail with 503 until `set_down(false)` (in-process server only;
    /// returns false for an external endpoint, which cannot be taken down from here).
    pub fn set_down(&self, down: bool) -> bool {
        match &self.server {
            Some(s) => {
                s.down.store(down, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// An outage that ends by itself: every request fails with 503 for `d` (in-process
    /// server only; returns false for an external endpoint).
    pub fn go_down_for(&self, d: std::time::Duration) -> bool {
        let Some(s) = &self.server else {
            return false;
        };
        s.down.store(true, Ordering::SeqCst);
        let down = s.down.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            down.store(false, Ordering::SeqCst);
        });
        true
    }

    pub fn is_down(&self) -> bool {
        self.server
            .as_ref()
            .is_some_and(|s| s.down.load(Ordering::SeqCst))
    }

    /// Requests answered so far (in-process server only).
    pub fn requests(&self) -> u64 {
        self.server
            .as_ref()
            .map_or(0, |s| s.requests.load(Ordering::Relaxed))
    }

    /// The directory the in-process server keeps its objects in.
    pub fn root(&self) -> Option<&std::path::Path> {
        self.server.as_ref().map(|s| s.dir.path())
    }
}

/// An S3 endpoint on loopback serving one bucket from a directory, on its own thread and
/// runtime (the `cairn-s3` binary serves one as a process).
pub struct S3Server {
    addr: SocketAddr,
    dir: Root,
    down: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Where a server keeps its objects: a temporary directory of its own, or one it was given.
enum Root {
    Temp(tempfile::TempDir),
    Given(std::path::PathBuf),
}

impl Root {
    fn path(&self) -> &std::path::Path {
        match self {
            Root::Temp(t) => t.path(),
            Root::Given(p) => p,
        }
    }
}

impl S3Server {
    /// Serves `bucket` on `listen` from `dir` (a fresh temporary directory if `None`) on its
    /// own thread and runtime, so it outlives any runtime a test creates and drops. Each
    /// request waits `latency` first, as a distant store would make it.
    pub fn start(
        bucket: &str,
        listen: &str,
        dir: Option<std::path::PathBuf>,
        latency: Duration,
    ) -> std::io::Result<Self> {
        let dir = match dir {
            Some(d) => Root::Given(d),
            None => Root::Temp(tempfile::tempdir()?),
        };
        let bucket_dir = dir.path().join(bucket);
        if !bucket_dir.exists() {
            std::fs::create_dir_all(&bucket_dir)?;
        }
        let fs = s3s_fs::FileSystem::new(dir.path())
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let down = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let (d, r) = (down.clone(), requests.clone());
        // s3s-fs checks a put's condition and then writes, so two conditional puts of one
        // key can both succeed; S3 decides them atomically, and the manifest and cluster map
        // rely on that. Taking them one at a time restores it.
        let conditional = Arc::new(tokio::sync::Mutex::new(()));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("S3 server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let http = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                loop {
                    let socket = tokio::select! {
                        res = listener.accept() => match res {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => break,
                    };
                    // As S3 endpoints do: without it, a response whose body leaves in a second
                    // small write waits for the client's delayed ACK (40 ms on Linux).
                    let _ = socket.set_nodelay(true);
                    let (service, down, requests) = (service.clone(), d.clone(), r.clone());
                    let conditional = conditional.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        let service = service.clone();
                        let conditional = conditional.clone();
                        let down = down.load(Ordering::SeqCst);
                        requests.fetch_add(1, Ordering::Relaxed);
                        async move {
                            if !latency.is_zero() {
                                tokio::time::sleep(latency).await;
                            }
                            if down {
                                let mut resp = http::Response::new(s3s::Body::empty());
                                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                                return Ok(resp);
                            }
                            if req.method() == http::Method::GET
                                && req.uri().query().is_some_and(|q| q.contains("list-type"))
                            {
                                return list(&service, req).await;
                            }
                            let _one_at_a_time = if req.method() == http::Method::PUT
                                && (req.headers().contains_key(http::header::IF_NONE_MATCH)
                                    || req.headers().contains_key(http::header::IF_MATCH))
                            {
                                Some(conditional.lock().await)
                            } else {
                                None
                            };
                            hyper::service::Service::call(&service, req).await
                        }
                    });
                    let conn = http
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), svc)
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
            rt.shutdown_background();
        });
        Ok(S3Server {
            addr,
            dir,
            down,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Blocks until the server stops (it runs until the process ends).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listing, asked again when it fails: s3s-fs walks the bucket's directories and fails
/// the whole listing with a 500 when a file goes between its readdir and its stat (an object
/// deleted meanwhile), which no S3 service does.
async fn list(
    service: &s3s::service::S3Service,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<s3s::Body>, s3s::HttpError> {
    let (parts, _) = req.into_parts();
    let mut attempt = 0;
    loop {
        let again = http::Request::from_parts(parts.clone(), s3s::Body::empty());
        let resp = service.call(again).await?;
        attempt += 1;
        if resp.status() != http::StatusCode::INTERNAL_SERVER_ERROR || attempt == 10 {
            return Ok(resp);
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64) for test and benchmark data.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise(seed.max(1))
    }

    /// `n` bytes; `letters = false` gives incompressible bytes, `true` gives 16 letters,
    /// which zstd shrinks to about half.
    pub fn bytes(&mut self, n: usize, letters: bool) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let x = &mut self.0;
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                if letters {
                    b'a' + (*x % 16) as u8
                } else {
                    *x as u8
                }
            })
            .collect()
    }
}

/// How many files in `dir` have the extension `ext` (tables among a store's other files).
pub fn count_files(dir: &std::path::Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("read the directory")
        .filter(|e| {
            e.as_ref()
                .expect("directory entry")
                .path()
                .extension()
                .is_some_and(|x| x == ext)
        })
        .count()
}
