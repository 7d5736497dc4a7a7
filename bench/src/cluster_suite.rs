//! `cairn-bench --suite cluster`: a cluster placed by a map ([cluster]) under load, with real
//! `cairn serve node` processes (the `cairn` binary beside this one). Three nodes serve the
//! profile's shards while `--concurrency` writers overwrite `--keys` keys through a router
//! that follows the map; the suite measures the throughput steady, while a fourth node joins
//! and shards move to it, and while a SIGKILLed node's shards fail over, with the failover
//! time (the kill to the first acknowledged write on a shard the dead node held) and the
//! errors writers saw. With `--split-mb`, it then imports that much into one shard and
//! splits it under the load: the time from the request to the map edit, and to the first
//! acknowledged write on each side. Every acknowledged write is checked at the end.
//!
//! The profile's shared places are moved under the bench's temporary directory where they
//! are local (a `file://` journal, SSTables in a directory); a bucket or an etcd is used as
//! configured, under a prefix of this run's own.

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use cairn::{ClusterMap, Config, MapKind, MapStore, Router};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct ClusterResult {
    pub profile: String,
    pub map: &'static str,
    pub lease_ms: u64,
    pub shards: usize,
    pub phases: Vec<Phase>,
    /// SIGKILL to the first acknowledged write on a shard the killed node held.
    pub failover_ms: f64,
    /// Shards that changed owner while the fourth node joined.
    pub moved: usize,
    pub splits: Vec<Split>,
    pub acknowledged: u64,
}

#[derive(Debug, Serialize)]
pub struct Split {
    pub shard: u64,
    /// What the shard held: the import's bytes of keys and values, and its tables' bytes.
    pub imported_bytes: u64,
    pub table_bytes: u64,
    /// From the request to the map edit that put the two new shards in its place.
    pub split_ms: f64,
    /// From the request to an acknowledged write on each new shard.
    pub writable_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// Writes that failed (and were sent again by their writer).
    pub errors: u64,
}

struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `cairn` binary built beside this one.
fn cairn_binary() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("cairn");
    ensure!(
        bin.exists(),
        "the cluster suite runs `cairn serve node` processes: build the cairn binary beside {} first (cargo build --release -p cairn)",
        me.display()
    );
    Ok(bin)
}

/// The profile with its local shared places under `base`, written as the default profile of
/// `base/cluster.toml`.
fn profile_file(config: &Config, base: &Path) -> Result<PathBuf> {
    let mut c = config.clone();
    let Some(cluster) = c.cluster.as_mut() else {
        bail!(
            "the cluster suite needs a profile with a [cluster] section (cairn.toml's `elastic`)"
        );
    };
    let run = format!("bench-{}-{}", std::process::id(), rand::random::<u32>());
    cluster.prefix = Some(format!("{}/{run}", cluster.prefix().trim_end_matches('/')));
    c.data_dir = base.join("router");
    if let Some(url) = &c.journal.url {
        c.journal.url = Some(if url.starts_with("file://") {
            format!("file://{}", base.join("journal").display())
        } else {
            format!("{}/{run}", url.trim_end_matches('/'))
        });
    }
    if c.storage.dir.is_some() {
        c.storage.dir = Some(base.join("tables"));
    }
    if let Some(url) = &c.storage.url {
        c.storage.url = Some(if url.starts_with("file://") {
            format!("file://{}", base.join("tables-objects").display())
        } else {
            format!("{}/{run}", url.trim_end_matches('/'))
        });
    }
    let as_value: toml::Value = toml::from_str(&c.to_toml()?)?;
    let mut top = toml::Table::new();
    top.insert("default".into(), as_value);
    let path = base.join("cluster.toml");
    std::fs::write(&path, toml::to_string(&top)?)?;
    Ok(path)
}

fn start_node(bin: &Path, profile: &Path, base: &Path, id: &str) -> Result<Node> {
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(profile)
        .args(["serve", "node", "--node", id, "--listen", "127.0.0.1:0"])
        .env("CAIRN_DATA_DIR", base.join(id))
        .env_remove("CAIRN_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting cairn serve node")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    ensure!(
        line.starts_with("serving node on"),
        "cairn serve node {id} printed {line:?}"
    );
    Ok(Node { child })
}

async fn wait_for(
    store: &dyn MapStore,
    within: Duration,
    what: &str,
    ok: impl Fn(&ClusterMap) -> bool,
) -> Result<ClusterMap> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = store.current().await?
            && ok(&m)
        {
            return Ok(m);
        }
        ensure!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn settled(m: &ClusterMap) -> bool {
    m.shards
        .iter()
        .all(|s| s.owner.is_some() && s.moving_to.is_none())
}

struct Load {
    ops: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<Result<HashMap<Bytes, Bytes>>>>,
}

/// `concurrency` writers, each overwriting its own share of `keys`, all in one shard's range
/// (writer `w` in shard `w % shards`), so a shard that moves or fails over holds up only its
/// own writers. A failed write is sent again until acknowledged, so each writer knows every
/// key's final value.
fn start_load(
    router: &Arc<Router>,
    map: &ClusterMap,
    keys: u64,
    value_size: usize,
    concurrency: usize,
) -> Load {
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let starts: Vec<Vec<u8>> = map
        .shards
        .iter()
        .map(|s| {
            if s.start.is_empty() {
                vec![0]
            } else {
                s.start.to_vec()
            }
        })
        .collect();
    let writers = (0..concurrency as u64)
        .map(|w| {
            let (router, ops, errors, stop) =
                (router.clone(), ops.clone(), errors.clone(), stop.clone());
            let prefix = starts[w as usize % starts.len()].clone();
            tokio::spawn(async move {
                let mut last = HashMap::new();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut i = w;
                    while i < keys && !stop.load(Ordering::Relaxed) {
                        let mut key = prefix.clone();
                        key.extend_from_slice(format!("-{i:010}").as_bytes());
                        let key = Bytes::from(key);
                        let mut value = format!("{round}:").into_bytes();
                        value.resize(value_size.max(value.len()), b'v');
                        let value = Bytes::from(value);
                        let mut tries = 0;
                        while let Err(e) = router.put(key.clone(), value.clone()).await {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tries += 1;
                            if tries > 200 {
                                bail!("a write keeps failing: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                        last.insert(key, value);
                        i += concurrency as u64;
                    }
                    round += 1;
                }
                Ok(last)
            })
        })
        .collect();
    Load {
        ops,
        errors,
        stop,
        writers,
    }
}

/// The ops and errors of the load from `since` until `done` resolves.
async fn phase<T>(
    name: impl Into<String>,
    load: &Load,
    done: impl std::future::Future<Output = Result<T>>,
) -> Result<(Phase, T)> {
    let (ops, errors) = (
        load.ops.load(Ordering::Relaxed),
        load.errors.load(Ordering::Relaxed),
    );
    let t = Instant::now();
    let out = done.await?;
    let seconds = t.elapsed().as_secs_f64();
    Ok((
        Phase {
            name: name.into(),
            seconds,
            ops_per_sec: (load.ops.load(Ordering::Relaxed) - ops) as f64 / seconds,
            errors: load.errors.load(Ordering::Relaxed) - errors,
        },
        out,
    ))
}

/// What the suite runs: the load, each steady phase's length, and the splits.
pub struct Options<'a> {
    pub keys: u64,
    pub value_size: usize,
    pub concurrency: usize,
    pub steady: Duration,
    pub split_mb: &'a [u64],
}

pub async fn run(
    config: &Config,
    profile: &str,
    base: &Path,
    opts: Options<'_>,
) -> Result<ClusterResult> {
    let Options {
        keys,
        value_size,
        concurrency,
        steady,
        split_mb,
    } = opts;
    let bin = cairn_binary()?;
    let file = profile_file(config, base)?;
    let config = Config::load(&file, None)?;
    let Some(section) = config.cluster.clone() else {
        bail!("no [cluster] section");
    };
    let mut nodes: HashMap<&str, Node> = HashMap::new();
    for id in ["n0", "n1", "n2"] {
        nodes.insert(id, start_node(&bin, &file, base, id)?);
    }
    let store = cairn::map_store(&config).await?;
    let placed = wait_for(
        store.as_ref(),
        Duration::from_secs(60),
        "three nodes serving every shard",
        |m| m.nodes.len() == 3 && settled(m) && m.nodes.keys().all(|n| m.owned_by(n).count() > 0),
    )
    .await?;
    let router = Arc::new(cairn::open_router(&config).await?);
    let load = start_load(&router, &placed, keys, value_size, concurrency);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut phases = Vec::new();
    let (p, ()) = phase("steady, 3 nodes", &load, async {
        tokio::time::sleep(steady).await;
        Ok(())
    })
    .await?;
    phases.push(p);

    let before = store.current().await?.context("the map")?;
    nodes.insert("n3", start_node(&bin, &file, base, "n3")?);
    let fair = before.shards.len() / 4;
    let (p, after) = phase("n3 joins, shards move", &load, async {
        wait_for(
            store.as_ref(),
            Duration::from_secs(120),
            "the fourth node's shards",
            |m| settled(m) && m.owned_by("n3").count() >= fair.max(1),
        )
        .await
    })
    .await?;
    phases.push(p);
    let moved = after
        .shards
        .iter()
        .filter(|s| before.shard(s.id).is_some_and(|b| b.owner != s.owner))
        .count();

    let (p, ()) = phase("steady, 4 nodes", &load, async {
        tokio::time::sleep(steady).await;
        Ok(())
    })
    .await?;
    phases.push(p);

    let map = store.current().await?.context("the map")?;
    let victim = "n1";
    let lost = map
        .owned_by(victim)
        .next()
        .context("the victim holds a shard")?
        .clone();
    // Just past the shard's first key, so inside it.
    let mut probe_key = lost.start.to_vec();
    probe_key.extend_from_slice(b"\0probe");
    let probe_key = Bytes::from(probe_key);
    let killed = Instant::now();
    drop(nodes.remove(victim));
    let (p, failover) = phase("n1 killed, failover", &load, async {
        let mut tries = 0;
        while let Err(e) = router
            .put(probe_key.clone(), Bytes::from_static(b"probe"))
            .await
        {
            tries += 1;
            ensure!(tries < 1000, "the probe keeps failing: {e}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let failover = killed.elapsed();
        wait_for(
            store.as_ref(),
            Duration::from_secs(60),
            "the dead node's shards placed",
            |m| settled(m) && m.owned_by(victim).count() == 0,
        )
        .await?;
        Ok(failover)
    })
    .await?;
    phases.push(p);

    let mut splits = Vec::new();
    for (n, mb) in split_mb.iter().enumerate() {
        let map = store.current().await?.context("the map")?;
        let target = map.shards[n % map.shards.len()].clone();
        let name = format!("split of {mb} MB");
        let (p, s) = phase(
            name,
            &load,
            split(&router, store.as_ref(), &target, mb << 20, value_size),
        )
        .await?;
        phases.push(p);
        splits.push(s);
    }

    load.stop.store(true, Ordering::Relaxed);
    let mut last = HashMap::new();
    for w in load.writers {
        last.extend(w.await??);
    }
    let acknowledged = load.ops.load(Ordering::Relaxed);
    let keys: Vec<Bytes> = last.keys().cloned().collect();
    for chunk in keys.chunks(1000) {
        let got = router.multi_get(chunk).await?;
        for (k, v) in chunk.iter().zip(got) {
            ensure!(
                v.as_ref() == last.get(k),
                "an acknowledged write is missing: {k:?}"
            );
        }
    }
    router.close().await?;
    drop(nodes);
    Ok(ClusterResult {
        profile: profile.to_string(),
        map: match section.map {
            MapKind::Storage => "storage",
            MapKind::Etcd => "etcd",
        },
        lease_ms: section.lease().as_millis() as u64,
        shards: map.shards.len(),
        phases,
        failover_ms: failover.as_secs_f64() * 1e3,
        moved,
        splits,
        acknowledged,
    })
}

/// Imports `bytes` of entries into shard `s`, then splits it at its middle one and times
/// the split; checks a sample of the import on both sides after.
async fn split(
    router: &Router,
    store: &dyn MapStore,
    s: &cairn::ShardEntry,
    bytes: u64,
    value_size: usize,
) -> Result<Split> {
    let prefix = if s.start.is_empty() {
        vec![0]
    } else {
        s.start.to_vec()
    };
    let key = |i: u64| {
        let mut k = prefix.clone();
        k.extend_from_slice(format!("/import-{i:012}").as_bytes());
        Bytes::from(k)
    };
    let value_size = value_size.max(16);
    let count = (bytes / (value_size as u64 + 24)).max(2);
    let value = Bytes::from(vec![b'i'; value_size]);
    let entries = futures::stream::iter((0..count).map(|i| Ok((key(i), value.clone()))));
    router.import(entries).await?;
    let table_bytes = router
        .stats()
        .await
        .into_iter()
        .zip(router.routing().ids())
        .filter(|(_, id)| *id == s.id)
        .filter_map(|(st, _)| st.stats.ok())
        .map(|st| st.levels.iter().map(|l| l.bytes).sum::<u64>())
        .sum();

    let at = key(count / 2);
    let started = Instant::now();
    cairn::request_split(store, s.id, at.clone()).await?;
    wait_for(store, Duration::from_secs(120), "the split", |m| {
        m.shard(s.id).is_none()
    })
    .await?;
    let split_ms = started.elapsed().as_secs_f64() * 1e3;
    for probe in [key(0), at.clone()] {
        let mut tries = 0;
        while let Err(e) = router.put(probe.clone(), value.clone()).await {
            tries += 1;
            ensure!(tries < 1000, "a write after the split keeps failing: {e}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let writable_ms = started.elapsed().as_secs_f64() * 1e3;
    let sample: Vec<Bytes> = (0..count)
        .step_by((count / 500).max(1) as usize)
        .map(key)
        .collect();
    for (k, v) in sample.iter().zip(router.multi_get(&sample).await?) {
        ensure!(
            v.as_ref() == Some(&value),
            "imported {k:?} is missing after the split"
        );
    }
    Ok(Split {
        shard: s.id,
        imported_bytes: count * (value_size as u64 + 24),
        table_bytes,
        split_ms,
        writable_ms,
    })
}

pub fn report(results: &[ClusterResult]) -> String {
    let mut out = String::new();
    for r in results {
        let _ = writeln!(
            out,
            "{}: map on {}, {} shards, lease {} ms: failover {:.0} ms, {} shards moved to the new node, {} writes acknowledged and checked",
            r.profile, r.map, r.shards, r.lease_ms, r.failover_ms, r.moved, r.acknowledged
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>9} {:>10} {:>8}",
            "phase", "seconds", "writes/s", "errors"
        );
        for p in &r.phases {
            let _ = writeln!(
                out,
                "  {:<24} {:>9.2} {:>10.0} {:>8}",
                p.name, p.seconds, p.ops_per_sec, p.errors
            );
        }
        for s in &r.splits {
            let _ = writeln!(
                out,
                "  split of shard {} ({} MB imported, {} MB of tables): map edit after {:.0} ms, both sides written after {:.0} ms",
                s.shard,
                s.imported_bytes >> 20,
                s.table_bytes >> 20,
                s.split_ms,
                s.writable_ms
            );
        }
    }
    out
}
