//! A cluster placed by a map, with real `cairn serve node` processes whose journal and tables
//! are in the tests' S3 server (the serverless layout, with the map and leases beside the
//! tables; or Parquet alone, with the map in a real etcd): a SIGKILLed node's shards are served by the others with every
//! acknowledged write, a new node receives shards, a drained node gives them up, and no read
//! is answered by a stale owner.

use crate::support;

use bytes::Bytes;
use cairn::{Config, MapStore, Router};
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const LEASE_MS: u64 = 1000;

/// The cluster profile: an object journal and the tables in `s3`, Parquet alone or (with
/// `serverless`) the serverless layout's hybrid store, whose SSTable copies are each node's
/// own cache; the map where `map` says.
fn profile(
    dir: &Path,
    s3: &cairn_testkit::S3Endpoint,
    map: &str,
    serverless: bool,
) -> std::path::PathBuf {
    let bucket = |url: String| {
        format!(
            "url = \"{url}\"\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\n\
             secret_access_key = \"{}\"\nallow_http = true\n",
            s3.endpoint, s3.region, s3.access_key_id, s3.secret_access_key
        )
    };
    let layout = if serverless {
        support::serverless_layout(s3, "")
    } else {
        format!(
            "[default.journal]\nkind = \"object\"\n{}[default.storage]\nkind = \"parquet\"\n{}",
            bucket(s3.url("journal")),
            bucket(s3.url("tables")),
        )
    };
    let path = dir.join("cluster.toml");
    std::fs::write(
        &path,
        format!(
            "[default]\ndata_dir = \"{}\"\n\
             [default.rpc]\ntimeout_ms = 3000\nconnect_timeout_ms = 500\nretries = 1\nretry_initial_ms = 20\n\
             [default.engine]\nmemtable_bytes = 262144\n{layout}\
             [default.cluster]\nlease_ms = {LEASE_MS}\nshards = 6\nretry_ms = 15000\n{map}",
            dir.join("router").display(),
        ),
    )
    .unwrap();
    path
}

fn node(config: &Path, dir: &Path, id: &str) -> support::Served {
    let data = dir.join(id);
    support::serve_args(
        config,
        &["serve", "node", "--node", id, "--listen", "127.0.0.1:0"],
        &[("CAIRN_DATA_DIR", data.to_str().unwrap())],
    )
}

/// Starts nodes `ids` and waits until they serve every shard, evenly.
async fn start_nodes(
    config: &Config,
    config_path: &Path,
    dir: &Path,
    ids: &[&str],
) -> (
    BTreeMap<String, support::Served>,
    Arc<dyn MapStore>,
    cairn::ClusterMap,
) {
    let nodes = ids
        .iter()
        .map(|id| (id.to_string(), node(config_path, dir, id)))
        .collect();
    let store = cairn::map_store(config).await.unwrap();
    let placed = wait_for_map(
        store.as_ref(),
        Duration::from_secs(30),
        "every shard placed",
        |m| {
            let even = m.shards.len() / ids.len();
            m.nodes.len() == ids.len()
                && m.shards
                    .iter()
                    .all(|s| s.owner.is_some() && s.moving_to.is_none())
                && m.nodes.keys().all(|n| m.owned_by(n).count() >= even)
        },
    )
    .await;
    (nodes, store, placed)
}

/// A key of shard position `p` of the six the map starts with (cut by the first two bytes).
fn key_in(p: usize, name: &str) -> Bytes {
    let first = ((p * 0x1_0000 / 6) >> 8) as u8 + 1;
    let mut k = vec![first];
    k.extend_from_slice(name.as_bytes());
    Bytes::from(k)
}

async fn current(store: &dyn MapStore) -> cairn::ClusterMap {
    store.current().await.unwrap().expect("a map")
}

/// Waits until `ok` holds of the map, or panics after `within`.
async fn wait_for_map(
    store: &dyn MapStore,
    within: Duration,
    what: &str,
    ok: impl Fn(&cairn::ClusterMap) -> bool,
) -> cairn::ClusterMap {
    let deadline = Instant::now() + within;
    loop {
        let m = current(store).await;
        if ok(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: the map is {m:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Load through a router while the cluster changes under it: 64 writers, each writing keys
/// of its own across every shard (a write that fails is sent again until acknowledged, so
/// each key has one value, acknowledged or not); a reader checking acknowledged writes as it
/// goes (a stale owner would not have them); a scanner reading the whole keyspace over and
/// over (a scan either completes, in key order and with every write acknowledged before it
/// began, or fails with an error).
struct Load {
    acked: Arc<Mutex<BTreeMap<Bytes, Bytes>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    reader: tokio::task::JoinHandle<usize>,
    scanner: tokio::task::JoinHandle<(usize, usize)>,
}

impl Load {
    fn start(router: Arc<Router>) -> Load {
        let acked = Arc::new(Mutex::new(BTreeMap::<Bytes, Bytes>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let writers: Vec<_> = (0..64usize)
            .map(|w| {
                let (router, acked, stop, errors) =
                    (router.clone(), acked.clone(), stop.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let key = key_in((w + i) % 6, &format!("w{w:02}-{i:06}"));
                        let value = Bytes::from(format!("{w}:{i}"));
                        loop {
                            match router.put(key.clone(), value.clone()).await {
                                Ok(()) => break,
                                Err(e) => {
                                    errors.lock().await.push(e.to_string());
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                            }
                        }
                        acked.lock().await.insert(key, value);
                        i += 1;
                    }
                })
            })
            .collect();
        let reader = {
            let (router, acked, stop) = (router.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut checked = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let sample: Vec<(Bytes, Bytes)> = {
                        let a = acked.lock().await;
                        a.iter()
                            .rev()
                            .step_by(7)
                            .take(64)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    };
                    for (k, v) in sample {
                        if let Ok(got) = router.get(&k).await {
                            assert_eq!(got, Some(v), "a read of acknowledged {k:?}");
                            checked += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                checked
            })
        };
        let scanner = {
            let (router, acked, stop) = (router.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut complete, mut failed) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let before = acked.lock().await.clone();
                    let scanned = match router.scan(cairn::KeyRange::all(), None).await {
                        Ok(s) => s.try_collect::<Vec<(Bytes, Bytes)>>().await,
                        Err(e) => Err(e),
                    };
                    let Ok(pairs) = scanned else {
                        failed += 1;
                        continue;
                    };
                    assert!(
                        pairs.windows(2).all(|w| w[0].0 < w[1].0),
                        "a scan out of order"
                    );
                    let got: BTreeMap<Bytes, Bytes> = pairs.into_iter().collect();
                    for (k, v) in &before {
                        assert_eq!(
                            got.get(k),
                            Some(v),
                            "a completed scan lacks acknowledged {k:?}"
                        );
                    }
                    complete += 1;
                }
                (complete, failed)
            })
        };
        Load {
            acked,
            errors,
            stop,
            writers,
            reader,
            scanner,
        }
    }

    /// Stops the load, and answers the acknowledged writes and the errors writers saw.
    async fn stop(self) -> (BTreeMap<Bytes, Bytes>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.writers {
            w.await.unwrap();
        }
        let checked = self.reader.await.unwrap();
        let (complete, failed) = self.scanner.await.unwrap();
        let acked = self.acked.lock().await.clone();
        let errors = self.errors.lock().await.clone();
        eprintln!(
            "{} writes acknowledged, {checked} reads checked, {complete} whole-keyspace scans completed and checked, {failed} failed clearly, {} errors seen by writers",
            acked.len(),
            errors.len()
        );
        assert!(complete > 0, "some scans completed");
        (acked, errors)
    }
}

/// Runs `cairn ARGS` on the profile; answers its output, once it succeeded.
fn cli(config: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CAIRN_PROFILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every acknowledged write reads back through the router.
async fn check_acked(router: &Router, acked: &BTreeMap<Bytes, Bytes>) {
    let keys: Vec<Bytes> = acked.keys().cloned().collect();
    for chunk in keys.chunks(400) {
        let got = router.multi_get(chunk).await.unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(v.as_ref(), acked.get(k), "acknowledged write {k:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serverless_nodes_fail_over_join_and_drain_with_the_map_on_the_storage_tier() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = cairn_testkit::S3Endpoint::start();
    fail_over_join_and_drain(dir.path(), &profile(dir.path(), &s3, "", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_fail_over_join_and_drain_with_the_map_on_etcd() {
    let Some(etcd) = cairn_testkit::EtcdServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = cairn_testkit::S3Endpoint::start();
    let map = format!(
        "map = \"etcd\"\netcd = [\"{}\"]\nprefix = \"/cairn-test\"\n",
        etcd.endpoint()
    );
    fail_over_join_and_drain(dir.path(), &profile(dir.path(), &s3, &map, false)).await;
}

/// Under the same load, a shard splits at a key into two that share its tables (nothing
/// copied), and the two merge back into one: writes to the shard wait and are sent again,
/// reads go on, and every acknowledged write reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serverless_shards_split_and_merge_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = cairn_testkit::S3Endpoint::start();
    let config_path = profile(dir.path(), &s3, "", true);
    let config = Config::load(&config_path, None).unwrap();
    let (_nodes, store, placed) =
        start_nodes(&config, &config_path, dir.path(), &["n0", "n1"]).await;
    let router = Arc::new(cairn::open_router(&config).await.unwrap());
    let load = Load::start(router.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Half of every writer's keys in shard position 2 go to each child.
    let parent = placed.shards[2].id;
    let at = key_in(2, "w32");
    let split = cli(
        &config_path,
        &[
            "cluster",
            "split",
            &parent.to_string(),
            "--at",
            &cairn_router::map::key_text(&at),
            "--wait",
            "30",
        ],
    );
    eprintln!("{split}");
    let map = current(store.as_ref()).await;
    assert_eq!(map.shards.len(), 7, "{map:#?}");
    let (left, right) = (&map.shards[2], &map.shards[3]);
    assert_eq!((left.end.as_ref(), &right.start), (Some(&at), &at));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let merge = cli(
        &config_path,
        &[
            "cluster",
            "merge",
            &left.id.to_string(),
            &right.id.to_string(),
            "--wait",
            "30",
        ],
    );
    eprintln!("{merge}");
    let map = current(store.as_ref()).await;
    assert_eq!(map.shards.len(), 6, "{map:#?}");
    assert_eq!(map.shards[2].range_text(), placed.shards[2].range_text());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let (acked, _) = load.stop().await;
    let in_parent = acked
        .keys()
        .filter(|k| placed.shards[2].contains(k))
        .count();
    assert!(
        in_parent > 0,
        "writes reached the shard that split and merged"
    );
    check_acked(&router, &acked).await;
    router.close().await.unwrap();
}

async fn fail_over_join_and_drain(dir: &Path, config_path: &Path) {
    let config = Config::load(config_path, None).unwrap();
    let (mut nodes, store, placed) =
        start_nodes(&config, config_path, dir, &["n0", "n1", "n2"]).await;
    let router = Arc::new(cairn::open_router(&config).await.unwrap());

    let load = Load::start(router.clone());
    let acked = load.acked.clone();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = "n1";
    let lost: Vec<usize> = placed
        .shards
        .iter()
        .enumerate()
        .filter(|(_, s)| s.owner.as_deref() == Some(victim))
        .map(|(p, _)| p)
        .collect();
    let probe = key_in(lost[0], "probe");
    let before = acked.lock().await.len();
    let killed = Instant::now();
    nodes.get_mut(victim).unwrap().kill();
    // The first acknowledged write on a shard the dead node held. A write the dead node's
    // broken connection took has an unknown outcome, and is sent again by its caller.
    let mut probe_errors = 0;
    while let Err(e) = router.put(probe.clone(), "after the kill").await {
        probe_errors += 1;
        assert!(probe_errors < 100, "the probe keeps failing: {e}");
    }
    let failover = killed.elapsed();
    acked
        .lock()
        .await
        .insert(probe, Bytes::from("after the kill"));
    let after = wait_for_map(
        store.as_ref(),
        Duration::from_secs(30),
        "the dead node's shards placed",
        |m| m.owned_by(victim).count() == 0,
    )
    .await;
    eprintln!(
        "failover: {} ms from SIGKILL to the first acknowledged write on shard {} (lease {LEASE_MS} ms, {probe_errors} failed tries); {} writes acknowledged before",
        failover.as_millis(),
        placed.shards[lost[0]].id,
        before
    );

    // A fourth node joins and receives shards; a drained node gives its up.
    nodes.insert("n3".into(), node(config_path, dir, "n3"));
    wait_for_map(
        store.as_ref(),
        Duration::from_secs(30),
        "the new node receives shards",
        |m| m.owned_by("n3").count() >= 2 && m.shards.iter().all(|s| s.moving_to.is_none()),
    )
    .await;
    cli(config_path, &["cluster", "drain", "n0", "--wait", "30"]);
    let final_map = current(store.as_ref()).await;
    assert_eq!(final_map.owned_by("n0").count(), 0);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, errors) = load.stop().await;
    eprintln!(
        "map {} -> {}; errors: {:?}",
        after.version,
        final_map.version,
        errors.iter().take(3).collect::<Vec<_>>()
    );
    assert!(acked.len() > before, "writes went on after the kill");
    check_acked(&router, &acked).await;

    // `cairn cluster status` shows every shard and node.
    let text = cli(config_path, &["cluster", "status"]);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("shard ")).count(),
        6,
        "{text}"
    );
    assert!(
        text.contains("node n1") && text.contains("lease expired"),
        "{text}"
    );
    assert!(
        text.contains("node n0") && text.contains("draining"),
        "{text}"
    );
    router.close().await.unwrap();
}
