//! The router's model test (puts, deletes, range deletes, merges, expiring puts, batches,
//! imports, reads): three shards (one in this process, two served by real shard
//! servers on 127.0.0.1, started as `cairn serve shard` starts them), wired from a profile's
//! `[router]` section. Random puts, deletes, cross-shard batches, gets, multi-gets, ordered and
//! unordered scans, aggregates, bulk imports, flushes, compactions, router reopens and shard
//! server restarts, every read checked against a `BTreeMap`; a remote shard goes down now and
//! then (calls touching it fail naming it, the others carry on) and comes back. SQL through
//! the router (partial aggregates computed on the shards) is checked against the model too.
//! `CAIRN_MODEL_SEEDS=N` runs more seeds.

use bytes::Bytes;
use cairn::serve::{Component, ComponentServer};
use cairn::{AggregateState, Config, KeyRange, Router, ValueType, WriteBatch};
use cairn_testkit::model::{Model, model_range, random_range, remove_range};
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;

/// Small sizes, so a run flushes and compacts every shard several times.
const ENGINE: &str = "[default.engine]\nmemtable_bytes = 8192\nmax_immutable_memtables = 2\n\
     merge_operator = \"append\"\n\
     l0_stop_writes = 12\nbackground_threads = 1\n\
     [default.compaction]\nl0_trigger = 2\nlevels = 3\nbase_level_bytes = 32768\n\
     level_size_ratio = 4\ntarget_table_bytes = 8192\n\
     [default.journal]\nkind = \"file\"\nsync = false\n\
     [default.rpc]\ntimeout_ms = 5000\nconnect_timeout_ms = 500\nretries = 1\nretry_initial_ms = 20\n";

fn profile(root: &std::path::Path, remote: [SocketAddr; 2]) -> String {
    format!(
        "[default]\ndata_dir = \"{}\"\n{ENGINE}[default.router]\nimport_table_bytes = 4096\nshards = [\
         {{ kind = \"local\" }}, {{ kind = \"grpc\", url = \"http://{}\" }}, \
         {{ kind = \"grpc\", url = \"http://{}\" }}]\n",
        root.display(),
        remote[0],
        remote[1]
    )
}

async fn serve(config: &Config, index: u32, addr: SocketAddr) -> ComponentServer {
    // The port was ours a moment ago; a restart may briefly find it in TIME_WAIT.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!("{e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    };
    cairn::serve::start(
        config,
        Component::Shard(Some(index)),
        listener,
        std::future::pending(),
    )
    .await
    .expect("start shard server")
}

fn key(rng: &mut StdRng) -> Bytes {
    Bytes::from(format!("key{:04}", rng.random_range(0..400u32)))
}

/// A range to delete, of a few keys mostly.
fn span(rng: &mut StdRng) -> (Bytes, Bytes) {
    let a = rng.random_range(0..400u32);
    let widest = if rng.random_ratio(1, 10) { 400 } else { 30 };
    let width = rng.random_range(1..widest);
    (
        Bytes::from(format!("key{a:04}")),
        Bytes::from(format!("key{:04}", a + width)),
    )
}

/// Text, or now and then an 8-byte number for the aggregates.
fn value(rng: &mut StdRng, step: usize) -> Bytes {
    if rng.random_bool(0.3) {
        return Bytes::copy_from_slice(&rng.random_range(-1000i64..1000).to_le_bytes());
    }
    let len = rng.random_range(0..60usize);
    let mut v = format!("v{step}-").into_bytes();
    v.resize(v.len() + len, b'a' + (step % 26) as u8);
    Bytes::from(v)
}

/// SQL through the router: a filtered aggregate over `r` and a GROUP BY over everything,
/// each equal to what the model says.
async fn sql_matches(router: &Router, r: &KeyRange, model: &Model, step: usize) {
    let columns: cairn_filestore::ValueColumns =
        serde_json::from_str(r#"{"key":"utf8","encoding":"utf8","column":"text"}"#).unwrap();
    let bound = |b: &std::ops::Bound<Bytes>, incl: &str, excl: &str| match b {
        std::ops::Bound::Unbounded => "TRUE".to_string(),
        std::ops::Bound::Included(k) => format!("key {incl} '{}'", String::from_utf8_lossy(k)),
        std::ops::Bound::Excluded(k) => format!("key {excl} '{}'", String::from_utf8_lossy(k)),
    };
    let sql = format!(
        "SELECT count(*) AS n, sum(octet_length(text)) AS bytes, min(key) AS lo, max(key) AS hi \
         FROM kv WHERE {} AND {}",
        bound(&r.start, ">=", ">"),
        bound(&r.end, "<=", "<")
    );
    let rows = model_range(model, r);
    let want = match (rows.first(), rows.last()) {
        (Some((lo, _)), Some((hi, _))) => format!(
            "n,bytes,lo,hi\n{},{},{},{}\n",
            rows.len(),
            // Values that are not UTF-8 (the 8-byte numbers) have a null `text`.
            rows.iter()
                .filter_map(|(_, v)| std::str::from_utf8(v).ok())
                .map(str::len)
                .reduce(|a, b| a + b)
                .map_or(String::new(), |n| n.to_string()),
            String::from_utf8_lossy(lo),
            String::from_utf8_lossy(hi)
        ),
        _ => "n,bytes,lo,hi\n0,,,\n".to_string(),
    };
    let csv =
        |batches: Vec<_>| cairn_sql::output::render(&batches, cairn_sql::Format::Csv).unwrap();
    let got = router.sql(&sql, &columns).await.unwrap();
    assert_eq!(csv(got), want, "step {step}: {sql}");

    let sql =
        "SELECT substr(key, 1, 5) AS prefix, count(*) AS n FROM kv GROUP BY prefix ORDER BY prefix";
    let mut groups = std::collections::BTreeMap::<String, usize>::new();
    for k in model.keys() {
        *groups
            .entry(String::from_utf8_lossy(&k[..5]).into_owned())
            .or_default() += 1;
    }
    // No rows, no batches: not even a header.
    let mut want = String::new();
    if !groups.is_empty() {
        want += "prefix,n\n";
    }
    for (p, n) in groups {
        want += &format!("{p},{n}\n");
    }
    let got = router.sql(sql, &columns).await.unwrap();
    assert_eq!(csv(got), want, "step {step}: {sql}");

    // A limit above a filter the shards apply: the router's answer is within it.
    let sql = "SELECT key FROM kv WHERE text IS NOT NULL LIMIT 3";
    let texts = model
        .values()
        .filter(|v| std::str::from_utf8(v).is_ok())
        .count();
    let got = router.sql(sql, &columns).await.unwrap();
    let rows: usize = got.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, texts.min(3), "step {step}: {sql}");
}

async fn scan(router: &Router, r: KeyRange, limit: Option<usize>) -> Vec<(Bytes, Bytes)> {
    router
        .scan(r, limit)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

struct Run {
    config: Config,
    addrs: [SocketAddr; 2],
    servers: [Option<ComponentServer>; 2],
}

impl Run {
    /// The name errors about remote shard `s` (1 or 2) must carry.
    fn who(&self, s: usize) -> String {
        format!("shard {s} at http://{}", self.addrs[s - 1])
    }
}

async fn run_model(seed: u64, steps: usize) {
    let root = tempfile::tempdir().unwrap();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        addrs.push(l.local_addr().unwrap());
    }
    let addrs = [addrs[0], addrs[1]];
    let toml = profile(root.path(), addrs);
    let config = Config::from_toml_str(&toml, None).expect("profile");
    let mut run = Run {
        servers: [
            Some(serve(&config, 1, addrs[0]).await),
            Some(serve(&config, 2, addrs[1]).await),
        ],
        config,
        addrs,
    };
    let mut router = cairn::open_router(&run.config).await.expect("open router");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new();
    let (mut outages, mut refused, mut reopens, mut restarts) = (0, 0, 0, 0);

    for step in 0..steps {
        match rng.random_range(0..1000u32) {
            0..=259 => {
                let (k, v) = (key(&mut rng), value(&mut rng, step));
                router.put(k.clone(), v.clone()).await.unwrap();
                model.insert(k, v);
            }
            260..=284 => {
                // Folded by each shard's `append`, locally and in the servers' engines.
                let (k, v) = (key(&mut rng), value(&mut rng, step));
                router.merge(k.clone(), v.clone()).await.unwrap();
                let old = model.get(&k).cloned().unwrap_or_default();
                model.insert(k, Bytes::from([&old[..], &v[..]].concat()));
            }
            285..=299 => {
                // Expiring puts on the shards' own (system) clocks: one that expired long
                // ago hides the key as a tombstone would; one far off reads as a put.
                let (k, v) = (key(&mut rng), value(&mut rng, step));
                let expired = rng.random_bool(0.5);
                let at = if expired { 1 } else { u64::MAX };
                let mut b = WriteBatch::new();
                b.put_expiring(k.clone(), &v, at);
                router.write(b).await.unwrap();
                if expired {
                    model.remove(&k);
                } else {
                    model.insert(k, v);
                }
            }
            300..=364 => {
                let k = key(&mut rng);
                router.delete(k.clone()).await.unwrap();
                model.remove(&k);
            }
            365..=379 => {
                // A range spans every shard.
                let (a, b) = span(&mut rng);
                router.delete_range(a.clone(), b.clone()).await.unwrap();
                remove_range(&mut model, &a, &b);
            }
            380..=459 => {
                // Batches span shards; each shard applies its part.
                let mut batch = WriteBatch::new();
                for _ in 0..rng.random_range(1..20) {
                    let k = key(&mut rng);
                    if rng.random_ratio(1, 30) {
                        let (a, b) = span(&mut rng);
                        batch.delete_range(a.clone(), b.clone());
                        remove_range(&mut model, &a, &b);
                    } else if rng.random_bool(0.7) {
                        let v = value(&mut rng, step);
                        batch.put(k.clone(), v.clone());
                        model.insert(k, v);
                    } else {
                        batch.delete(k.clone());
                        model.remove(&k);
                    }
                }
                router.write(batch).await.unwrap();
            }
            460..=479 => {
                let mut entries = Vec::new();
                for _ in 0..rng.random_range(1..80) {
                    entries.push((key(&mut rng), value(&mut rng, step)));
                }
                let n = router
                    .import(futures::stream::iter(entries.clone().into_iter().map(Ok)))
                    .await
                    .unwrap();
                assert_eq!(n as usize, entries.len(), "step {step}: import count");
                model.extend(entries);
            }
            480..=599 => {
                let k = key(&mut rng);
                assert_eq!(
                    router.get(&k).await.unwrap().as_ref(),
                    model.get(&k),
                    "step {step}: get {k:?}"
                );
            }
            600..=679 => {
                let keys: Vec<Bytes> = (0..rng.random_range(0..40))
                    .map(|_| key(&mut rng))
                    .collect();
                let got = router.multi_get(&keys).await.unwrap();
                let want: Vec<_> = keys.iter().map(|k| model.get(k).cloned()).collect();
                assert_eq!(got, want, "step {step}: multi_get {keys:?}");
            }
            680..=759 => {
                let r = random_range(&mut rng, key);
                let limit = rng.random_bool(0.3).then(|| rng.random_range(0..50usize));
                let mut want = model_range(&model, &r);
                if let Some(l) = limit {
                    want.truncate(l);
                }
                assert_eq!(
                    scan(&router, r.clone(), limit).await,
                    want,
                    "step {step}: scan {r:?} limit {limit:?}"
                );
            }
            760..=789 => {
                let r = random_range(&mut rng, key);
                let mut got: Vec<_> = router
                    .scan_unordered(r.clone())
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                got.sort();
                assert_eq!(got, model_range(&model, &r), "step {step}: scatter {r:?}");
            }
            790..=839 => {
                let r = random_range(&mut rng, key);
                let mut want = AggregateState::new(ValueType::I64);
                for (_, v) in model_range(&model, &r) {
                    want.add(&v);
                }
                let got = router.aggregate(r.clone(), ValueType::I64).await.unwrap();
                assert_eq!(got, want, "step {step}: aggregate {r:?}");
                let pulled = router
                    .aggregate_by_scan(r.clone(), ValueType::I64)
                    .await
                    .unwrap();
                assert_eq!(pulled, want, "step {step}: aggregate by scan {r:?}");
                sql_matches(&router, &r, &model, step).await;
            }
            840..=869 => router.flush().await.unwrap(),
            870..=889 => router.compact().await.unwrap(),
            890..=929 => {
                outages += 1;
                outage(&mut run, &router, &mut rng, &model, step).await;
            }
            930..=959 => {
                // A shard server restarts (a clean stop flushes it; data is kept).
                restarts += 1;
                let s = rng.random_range(0..2);
                run.servers[s].take().unwrap().stop().await.unwrap();
                run.servers[s] = Some(serve(&run.config, s as u32 + 1, run.addrs[s]).await);
            }
            960..=979 => {
                // The router reopens; remote shards are checked again.
                reopens += 1;
                router.close().await.unwrap();
                drop(router);
                router = cairn::open_router(&run.config)
                    .await
                    .expect("reopen router");
            }
            _ => {
                // A router whose shard list changed order is refused, whatever it holds.
                refused += 1;
                let swapped = profile(root.path(), [run.addrs[1], run.addrs[0]]);
                let swapped = Config::from_toml_str(&swapped, None).unwrap();
                router.close().await.unwrap();
                drop(router);
                let e = cairn::open_router(&swapped)
                    .await
                    .err()
                    .expect("refused")
                    .to_string();
                assert!(e.contains("order changed"), "step {step}: {e}");
                router = cairn::open_router(&run.config)
                    .await
                    .expect("reopen router");
            }
        }
    }
    assert!(
        outages > 0 && reopens > 0 && restarts > 0 && refused > 0,
        "seed {seed}: outages {outages}, reopens {reopens}, restarts {restarts}, refusals {refused}"
    );
    // Counters restart with each reopen and server restart; the tables stay: a run that
    // flushed has some, wherever it was in its reopens when it ended.
    let stats = router.stats().await;
    let tables: usize = stats
        .iter()
        .map(|s| s.stats.as_ref().unwrap().table_count())
        .sum();
    assert!(tables > 0, "seed {seed}: flushes happened");
    assert_eq!(
        scan(&router, KeyRange::all(), None).await,
        model_range(&model, &KeyRange::all()),
        "seed {seed}: final scan"
    );
    router.close().await.unwrap();
    drop(router);
    for s in run.servers.iter_mut() {
        s.take().unwrap().stop().await.unwrap();
    }
    for (i, a) in run.addrs.into_iter().enumerate() {
        run.servers[i] = Some(serve(&run.config, i as u32 + 1, a).await);
    }
    let router = cairn::open_router(&run.config).await.unwrap();
    assert_eq!(
        scan(&router, KeyRange::all(), None).await,
        model_range(&model, &KeyRange::all()),
        "seed {seed}: after every process restarted"
    );
    router.close().await.unwrap();
    for s in run.servers.iter_mut() {
        s.take().unwrap().stop().await.unwrap();
    }
}

/// Stops one remote shard, checks that calls touching it fail naming it while calls to the
/// other shards carry on, and brings it back on the same address.
async fn outage(run: &mut Run, router: &Router, rng: &mut StdRng, model: &Model, step: usize) {
    let s = rng.random_range(1..=2usize);
    run.servers[s - 1].take().unwrap().stop().await.unwrap();
    let who = run.who(s);
    let on = |shard: usize, rng: &mut StdRng| loop {
        let k = key(rng);
        if router.shard_of(&k) == shard {
            return k;
        }
    };
    let names = |e: cairn::Error| {
        let e = e.to_string();
        assert!(e.contains(&who), "step {step}: error must name {who}: {e}");
    };
    let down = on(s, rng);
    names(router.get(&down).await.unwrap_err());
    names(router.put(down.clone(), "lost").await.unwrap_err());
    names(
        router
            .multi_get(&[on(0, rng), down.clone()])
            .await
            .unwrap_err(),
    );
    names(
        router
            .aggregate(KeyRange::all(), ValueType::I64)
            .await
            .unwrap_err(),
    );
    names(router.scan(KeyRange::all(), None).await.err().unwrap());
    let columns = cairn_filestore::ValueColumns::default();
    names(
        router
            .sql("SELECT count(*) FROM kv", &columns)
            .await
            .unwrap_err(),
    );
    // The local shard and the other remote one answer as before.
    let up = on(0, rng);
    assert_eq!(router.get(&up).await.unwrap().as_ref(), model.get(&up));
    let other = on(3 - s, rng);
    assert_eq!(
        router.get(&other).await.unwrap().as_ref(),
        model.get(&other)
    );

    run.servers[s - 1] = Some(serve(&run.config, s as u32, run.addrs[s - 1]).await);
    assert_eq!(
        router.get(&down).await.unwrap().as_ref(),
        model.get(&down),
        "step {step}: back, and the refused put was not applied"
    );
}

fn seeds() -> u64 {
    std::env::var("CAIRN_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_one_local_and_two_remote_shards() {
    for seed in 0..seeds() {
        run_model(seed, 1500).await;
    }
}

/// The shard count is fixed at creation: a profile listing more shards is refused at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_shard_count_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let three = format!(
        "[default]\ndata_dir = \"{}\"\n[default.router]\nshards = [{{ kind = \"local\" }}, {{ kind = \"local\" }}, {{ kind = \"local\" }}]\n",
        root.path().display()
    );
    let config = Config::from_toml_str(&three, None).unwrap();
    let router = cairn::open_router(&config).await.unwrap();
    router.put("k", "v").await.unwrap();
    router.close().await.unwrap();
    drop(router);
    let four = three.replace("shards = [", "shards = [{ kind = \"local\" }, ");
    let config = Config::from_toml_str(&four, None).unwrap();
    let e = cairn::open_router(&config).await.err().unwrap().to_string();
    assert!(
        e.contains("created with 3 shards") && e.contains("lists 4"),
        "{e}"
    );
}
