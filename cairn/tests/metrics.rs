//! A `cairn serve` process with `[metrics] listen` set exports Prometheus' text format on
//! `GET /metrics`; scraped while an engine writes through the server, its counters move.

use crate::support;

use cairn::Config;
use std::io::{Read, Write};
use std::net::TcpStream;

/// One `GET /metrics`, over a plain HTTP/1.1 connection.
fn scrape(addr: &str) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Parses the exposition text (the parser crate), and checks each sample line's shape
/// strictly (the crate skips lines it does not understand).
fn parse(text: &str) -> prometheus_parse::Scrape {
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn counter(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    counter_where(scrape, name, |_| true)
}

/// The sum of counter `name` over the series whose labels `keep` accepts.
fn counter_where(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    keep: impl Fn(&prometheus_parse::Labels) -> bool,
) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && keep(&s.labels))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

/// `cairn serve COMPONENT` exporting its metrics on a free port; returns the server and where
/// to scrape it.
fn serve_with_metrics(
    dir: &std::path::Path,
    component: &str,
    env: &[(&str, &str)],
) -> (support::Served, String) {
    let config = support::node_config(dir, component);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_at = format!("127.0.0.1:{port}");
    let server = support::serve(
        &config,
        component,
        "127.0.0.1:0",
        &[&[("CAIRN_METRICS__LISTEN", metrics_at.as_str())], env].concat(),
    );
    (server, metrics_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_metrics_move_while_an_engine_writes_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, metrics_at) = serve_with_metrics(dir.path(), "journal", &[]);
    let before = counter(&parse(&scrape(&metrics_at)), "cairn_journal_appends_total");

    let engine = Config::from_toml_str(
        &format!(
            "[default]\ndata_dir = \"{}\"\n[default.journal]\nkind = \"grpc\"\nurl = \"{}\"\n",
            dir.path().join("engine").display(),
            journal.url
        ),
        None,
    )
    .unwrap();
    let db = cairn::open(&engine).await.unwrap();
    for i in 0..100 {
        db.put(format!("k{i}"), "v").await.unwrap();
    }
    let text = scrape(&metrics_at);
    let after = parse(&text);
    db.close().await.unwrap();

    assert!(
        counter(&after, "cairn_journal_appends_total") >= before + 100.0,
        "100 appends recorded:\n{text}"
    );
    assert!(
        counter(&after, "cairn_journal_bytes_total") > 0.0,
        "bytes recorded:\n{text}"
    );
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric.starts_with("cairn_journal_fsync_seconds")),
        "fsync latency recorded:\n{text}"
    );
    let journal_calls = counter_where(&after, "cairn_rpc_server_calls_total", |l| {
        l.get("method")
            .is_some_and(|m| m.starts_with("/cairn.journal.Journal/"))
    });
    assert!(
        journal_calls >= 2.0,
        "the claim and the appends, per method:\n{text}"
    );
}

/// A shard server is a whole engine: a router's writes and reads through it move the
/// engine's own counters, labelled with its database, and its calls to its journal server
/// are counted on its side of the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_servers_engine_metrics_move_with_a_routers_calls() {
    let dir = tempfile::tempdir().unwrap();
    let journal = support::serve(
        &support::node_config(dir.path(), "journal"),
        "journal",
        "127.0.0.1:0",
        &[],
    );
    let (shard, metrics_at) = serve_with_metrics(
        dir.path(),
        "shard",
        &[
            ("CAIRN_JOURNAL__KIND", "grpc"),
            ("CAIRN_JOURNAL__URL", journal.url.as_str()),
        ],
    );
    let router = Config::from_toml_str(
        &format!(
            "[default]\ndata_dir = \"{}\"\n[default.router]\nshards = [{{ kind = \"grpc\", url = \"{}\" }}]\n",
            dir.path().join("router").display(),
            shard.url
        ),
        None,
    )
    .unwrap();
    let db = cairn::open_router(&router).await.unwrap();
    for i in 0..50 {
        db.put(format!("k{i}"), "v").await.unwrap();
    }
    for i in 0..20 {
        assert!(db.get(format!("k{i}").as_bytes()).await.unwrap().is_some());
    }
    db.flush().await.unwrap();
    let text = scrape(&metrics_at);
    let after = parse(&text);
    db.close().await.unwrap();

    assert!(
        counter(&after, "cairn_engine_writes_total") >= 50.0,
        "{text}"
    );
    assert!(counter(&after, "cairn_engine_gets_total") >= 20.0, "{text}");
    assert!(
        counter(&after, "cairn_engine_flushes_total") >= 1.0,
        "{text}"
    );
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "cairn_engine_writes_total" && s.labels.get("database").is_some()),
        "labelled with the database: {text}"
    );
    let appends = |name| {
        counter_where(&after, name, |l| {
            l.get("method") == Some("/cairn.journal.Journal/Append")
        })
    };
    assert!(
        appends("cairn_rpc_client_calls_total") >= 1.0,
        "the shard's calls to its journal, on the client side:\n{text}"
    );
    assert_eq!(appends("cairn_rpc_client_errors_total"), 0.0, "{text}");
}

/// A storage server on Parquet counts the bytes of the tables it writes and its page cache's
/// hits and misses as an engine flushes through it and reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_servers_written_bytes_and_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, metrics_at) =
        serve_with_metrics(dir.path(), "storage", &[("CAIRN_STORAGE__KIND", "parquet")]);
    let engine = Config::from_toml_str(
        &format!(
            "[default]\ndata_dir = \"{}\"\n[default.storage]\nkind = \"grpc\"\nurl = \"{}\"\n",
            dir.path().join("engine").display(),
            storage.url
        ),
        None,
    )
    .unwrap();
    let db = cairn::open(&engine).await.unwrap();
    for i in 0..100 {
        db.put(format!("k{i:03}"), "v").await.unwrap();
    }
    db.flush().await.unwrap();
    for _ in 0..3 {
        for i in 0..10 {
            assert!(
                db.get(format!("k{i:03}").as_bytes())
                    .await
                    .unwrap()
                    .is_some()
            );
        }
    }
    let text = scrape(&metrics_at);
    let after = parse(&text);
    db.close().await.unwrap();

    let written = counter_where(&after, "cairn_storage_written_bytes_total", |l| {
        l.get("store") == Some("parquet")
    });
    assert!(written > 0.0, "the flushed table's bytes:\n{text}");
    assert!(
        counter(&after, "cairn_page_cache_misses_total") >= 1.0,
        "the first read of a page misses:\n{text}"
    );
    assert!(
        counter(&after, "cairn_page_cache_hits_total") >= 1.0,
        "later reads of it hit:\n{text}"
    );
}

/// A compaction server counts the jobs an engine sends it and the bytes they wrote; the
/// engine counts its jobs running there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_servers_job_metrics_move_with_an_engines_compactions() {
    let dir = tempfile::tempdir().unwrap();
    // The server's data_dir is the engine's: it compacts the same SSTables.
    let (server, metrics_at) = serve_with_metrics(dir.path(), "compaction", &[]);
    let engine = Config::from_toml_str(
        &format!(
            "[default]\ndata_dir = \"{}\"\n[default.compaction]\nkind = \"grpc\"\nurl = \"{}\"\nfallback = \"none\"\n",
            dir.path().join("compaction").display(),
            server.url
        ),
        None,
    )
    .unwrap();
    let db = cairn::open(&engine).await.unwrap();
    for round in 0..3 {
        for i in 0..50 {
            db.put(format!("k{i:03}"), format!("v{round}"))
                .await
                .unwrap();
        }
        db.flush().await.unwrap();
    }
    db.compact().await.unwrap();
    assert!(db.stats().compactions > 0);
    db.close().await.unwrap();
    let text = scrape(&metrics_at);
    let after = parse(&text);
    assert!(
        counter(&after, "cairn_compaction_server_jobs_total") >= 1.0,
        "jobs counted:\n{text}"
    );
    assert!(
        counter(&after, "cairn_compaction_server_written_bytes_total") > 0.0,
        "bytes counted:\n{text}"
    );
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "cairn_compaction_server_queued_jobs"),
        "the queue depth is exported:\n{text}"
    );
}
