use super::*;
use crate::{FileJournal, FileJournalOptions, Journal, MemoryJournal, conformance};
use bytes::Bytes;
use cairn_rpc::{ClientOptions, ServerHandle, ServerOptions, builder, serve};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

async fn start(journal: Arc<dyn Journal>, opts: ServerOptions) -> ServerHandle {
    let (drain, draining) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = builder(&opts)
        .unwrap()
        .add_service(journal_service(journal, &opts, draining));
    let tls = opts.tls_cert.is_some();
    serve(router, &[], listener, tls, drain, std::future::pending()).unwrap()
}

fn client(url: String) -> ClientOptions {
    let mut o = ClientOptions::new(url);
    o.timeout = Duration::from_secs(5);
    o.connect_timeout = Duration::from_millis(500);
    o.retries = 1;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_grpc_on_a_file_journal() {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(FileJournal::open(FileJournalOptions::new(dir.path())).unwrap());
    let server = start(local, ServerOptions::default()).await;
    let remote = Arc::new(GrpcJournal::new(client(server.url())).unwrap());
    conformance::run(remote).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_the_token_is_refused() {
    let opts = ServerOptions {
        token: Some("s3cret".into()),
        ..Default::default()
    };
    let server = start(Arc::new(MemoryJournal::new()), opts).await;
    let anonymous = GrpcJournal::new(client(server.url())).unwrap();
    let err = anonymous
        .append(0, Bytes::from("x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bearer token"), "{err}");
    let mut wrong = client(server.url());
    wrong.token = Some("guess".into());
    let err = GrpcJournal::new(wrong)
        .unwrap()
        .truncate(0)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bearer token"), "{err}");
    let mut right = client(server.url());
    right.token = Some("s3cret".into());
    let j = GrpcJournal::new(right).unwrap();
    assert_eq!(j.append(0, Bytes::from("x")).await.unwrap(), 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_an_error_naming_the_journal_and_its_url_and_a_restart_reconnects() {
    let local: Arc<dyn Journal> = Arc::new(MemoryJournal::new());
    let server = start(local.clone(), ServerOptions::default()).await;
    let addr = server.addr;
    let j = GrpcJournal::new(client(server.url())).unwrap();
    assert_eq!(j.append(0, Bytes::from("a")).await.unwrap(), 1);
    server.stop().await.unwrap();
    let err = j.append(0, Bytes::from("b")).await.unwrap_err().to_string();
    assert!(err.contains(&format!("journal at http://{addr}")), "{err}");
    // The same address again: the client reconnects on its own.
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (drain, shutdown) = watch::channel(false);
    let opts = ServerOptions::default();
    let router = builder(&opts)
        .unwrap()
        .add_service(journal_service(local, &opts, shutdown));
    let server = serve(router, &[], listener, false, drain, std::future::pending()).unwrap();
    let lsn = j.append(0, Bytes::from("c")).await.unwrap();
    assert!(lsn >= 2, "{lsn}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_acknowledges_what_it_accepted_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Journal> =
        Arc::new(FileJournal::open(FileJournalOptions::new(dir.path())).unwrap());
    let server = start(local.clone(), ServerOptions::default()).await;
    let j = Arc::new(GrpcJournal::new(client(server.url())).unwrap());
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..32 {
        let j = j.clone();
        let count = count.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..200 {
                match j.append(0, Bytes::from(format!("{w}-{i}"))).await {
                    Ok(lsn) => {
                        acked.push((lsn, format!("{w}-{i}")));
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    // Stop while appends are in flight.
    while count.load(std::sync::atomic::Ordering::Relaxed) < 500 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.stop().await.unwrap();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    local.close().await.unwrap();
    drop(local);
    let reopened = FileJournal::open(FileJournalOptions::new(dir.path())).unwrap();
    let durable: std::collections::HashMap<u64, Bytes> =
        futures::TryStreamExt::try_collect::<Vec<_>>(reopened.replay(0).await.unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.lsn, r.payload))
            .collect();
    assert!(!acked.is_empty());
    for (lsn, payload) in acked {
        assert_eq!(
            durable.get(&lsn),
            Some(&Bytes::from(payload)),
            "acknowledged LSN {lsn} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_token_works_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let opts = ServerOptions {
        token: Some("t0ken".into()),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
        ..Default::default()
    };
    let server = start(Arc::new(MemoryJournal::new()), opts).await;
    assert!(server.url().starts_with("https://"));

    let mut o = client(server.url());
    o.tls_ca = Some(cert);
    o.tls_domain = Some("localhost".into());
    o.token = Some("t0ken".into());
    let j = GrpcJournal::new(o).unwrap();
    assert_eq!(j.append(0, Bytes::from("secret")).await.unwrap(), 1);

    let plain = GrpcJournal::new(client(format!("http://{}", server.addr))).unwrap();
    assert!(plain.append(0, Bytes::from("x")).await.is_err());
    // TLS without trusting the server's certificate fails too.
    let untrusted = GrpcJournal::new(client(server.url())).unwrap();
    assert!(untrusted.append(0, Bytes::from("x")).await.is_err());
    server.stop().await.unwrap();
}

/// A CA, and certificates it signs, written as PEM files in `dir`.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: std::path::PathBuf,
}

impl Pki {
    fn new(dir: &std::path::Path, name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { ca, dir }
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `name` and its key.
    fn issue(&self, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// Mutual TLS: a server with `tls_client_ca` serves only clients presenting a certificate
/// that CA signed. A client with none, or with one from another CA, is refused at the
/// handshake; TLS alone authenticates no client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_the_ca_signed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ours");
    let (cert, key) = pki.issue("localhost");
    let opts = ServerOptions {
        tls_cert: Some(cert),
        tls_key: Some(key),
        tls_client_ca: Some(pki.ca()),
        ..Default::default()
    };
    let server = start(Arc::new(MemoryJournal::new()), opts).await;
    let with = |identity: Option<(std::path::PathBuf, std::path::PathBuf)>| {
        let mut o = client(server.url());
        o.tls_ca = Some(pki.ca());
        o.tls_domain = Some("localhost".into());
        o.retries = 0;
        if let Some((c, k)) = identity {
            o.tls_cert = Some(c);
            o.tls_key = Some(k);
        }
        GrpcJournal::new(o).unwrap()
    };

    let signed = with(Some(pki.issue("client")));
    assert_eq!(signed.append(0, Bytes::from("in")).await.unwrap(), 1);
    let e = with(None).append(0, Bytes::from("x")).await.unwrap_err();
    assert!(!e.to_string().is_empty());
    let stranger = Pki::new(dir.path(), "theirs").issue("client");
    assert!(
        with(Some(stranger))
            .append(0, Bytes::from("x"))
            .await
            .is_err()
    );
    let replayed: Vec<_> = futures::TryStreamExt::try_collect(signed.replay(0).await.unwrap())
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1, "only the signed client's record landed");
    server.stop().await.unwrap();
}

/// A client that floods a journal server with appends the journal cannot take (each one held
/// for an hour) gets back-pressure: the server stops reading its stream at its bound of records
/// in flight, HTTP/2 flow control stops the client, and the server's memory stays bounded. The
/// test stops once the client can send no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_appends_gets_back_pressure() {
    use super::pb::journal_client::JournalClient;
    use super::pb::{AppendBatch, AppendRequest};
    let journal = crate::FaultyJournal::new(Arc::new(MemoryJournal::new()));
    journal.set_delay(Duration::from_secs(3600));
    let server = start(journal.clone(), ServerOptions::default()).await;
    let mut raw = JournalClient::connect(server.url()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<AppendBatch>(1);
    let call = tokio::spawn(async move {
        raw.append(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    // Batches of 64 records of 1 KiB: 64 MiB in all if nothing pushed back.
    let mut sent = 0u64;
    for b in 0..1024u64 {
        let batch = AppendBatch {
            records: (0..64)
                .map(|i| AppendRequest {
                    id: b * 64 + i,
                    payload: Bytes::from(vec![0u8; 1024]),
                    epoch: 0,
                })
                .collect(),
        };
        match tokio::time::timeout(Duration::from_millis(500), tx.send(batch)).await {
            Ok(Ok(())) => sent += 64,
            _ => break,
        }
    }
    assert!(sent < 1024 * 64, "the client was never held back");
    let taken = journal.appends();
    assert!(
        taken <= super::server::MAX_INFLIGHT_RECORDS as u64,
        "the server took {taken} appends in flight"
    );
    drop(tx);
    call.abort();
    drop(server);
}

/// Every server speaks the gRPC health checking protocol: SERVING while it serves, and
/// NOT_SERVING to a watcher as soon as it begins to shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_then_not_serving_at_shutdown() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let server = start(Arc::new(MemoryJournal::new()), ServerOptions::default()).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let overall = HealthCheckRequest {
        service: String::new(),
    };
    let status = health
        .check(overall.clone())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let mut watch = health.watch(overall).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap().status;
    assert_eq!(first, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(server.stop());
    let next = watch.message().await.unwrap().unwrap().status;
    assert_eq!(next, ServingStatus::NotServing as i32);
    drop(watch);
    stopping.await.unwrap().unwrap();
}

/// A server that stops answering (a stopped process, a partition) fails each waiting append
/// with "no acknowledgement" once its deadline passes, and the journal works again once the
/// server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_a_server_that_stopped_answering_fail_at_their_deadline() {
    let server = start(Arc::new(MemoryJournal::new()), ServerOptions::default()).await;
    let proxy = cairn_testkit::FreezableProxy::start(server.addr).await;
    let mut o = client(proxy.url());
    o.timeout = Duration::from_millis(300);
    let remote = Arc::new(GrpcJournal::new(o).unwrap());
    remote.append(0, Bytes::from("before")).await.unwrap();
    proxy.freeze(true);
    let waiting: Vec<_> = (0..8)
        .map(|i| {
            let remote = remote.clone();
            tokio::spawn(async move { remote.append(0, Bytes::from(format!("r{i}"))).await })
        })
        .collect();
    for w in waiting {
        let err = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("the append ends by itself")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no acknowledgement"), "{err}");
    }
    proxy.freeze(false);
    let mut answered = false;
    for _ in 0..50 {
        if remote.append(0, Bytes::from("after")).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "appends succeed again once the server answers");
    server.stop().await.unwrap();
}
