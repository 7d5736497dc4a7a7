//! `cairn cluster`: what an operator asks of a cluster placed by a map (`[cluster]`): its
//! status, draining a node before it stops, and splitting and merging shards.

use anyhow::{Context, Result};
use cairn::{ClusterMap, Config, MapKind, MapStore};
use clap::Subcommand;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The map's version; each shard's range, owner, generation, move, plan, size and call
    /// rate (as its owner last reported it); each node's URL, lease and count of shards.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Moves every shard off NODE (no table data is copied: each new owner takes the shard's
    /// database over) and waits until it holds none; it may then be stopped.
    Drain {
        node: String,
        /// How long to wait for the moves.
        #[arg(long, default_value = "60", value_name = "SECONDS")]
        wait: u64,
    },
    /// Lets NODE receive shards again after a drain.
    Undrain { node: String },
    /// Splits SHARD at KEY into two shards that share its tables (nothing is copied: the
    /// time does not grow with the data), and waits until the map has them. Writes to the
    /// shard wait meanwhile; reads go on.
    Split {
        shard: u64,
        /// The first key of the second shard: text, with \xNN for any byte.
        #[arg(long, value_name = "KEY")]
        at: String,
        #[arg(long, default_value = "60", value_name = "SECONDS")]
        wait: u64,
    },
    /// Merges two neighbouring shards into one, and waits until the map has it. The larger
    /// one's tables are shared; the smaller one's entries are copied.
    Merge {
        a: u64,
        b: u64,
        #[arg(long, default_value = "60", value_name = "SECONDS")]
        wait: u64,
    },
}

pub async fn run(config: &Config, command: ClusterCommand) -> Result<ExitCode> {
    anyhow::ensure!(
        config.cluster.is_some(),
        "`cairn cluster` works on a profile with a [cluster] section"
    );
    let store = cairn::map_store(config).await?;
    let mut out = std::io::stdout().lock();
    match command {
        ClusterCommand::Status { json } => {
            let map = current(store.as_ref()).await?;
            let sizes = sizes(config).await;
            if config
                .cluster
                .as_ref()
                .is_some_and(|c| c.map == MapKind::Storage)
            {
                // On the storage tier a lease runs out by the observer's clock: watch each
                // node's heartbeats for as long as a node would before judging.
                for id in map.nodes.keys() {
                    store.alive(id).await?;
                }
                let lease = config
                    .cluster
                    .as_ref()
                    .map(|c| c.lease())
                    .unwrap_or_default();
                tokio::time::sleep(
                    lease.mul_f64(cairn_router::map::WAIT) + Duration::from_millis(50),
                )
                .await;
            }
            let mut nodes = Vec::new();
            for (id, n) in &map.nodes {
                let alive = store.alive(id).await?;
                nodes.push((id, n, alive, map.owned_by(id).count()));
            }
            if json {
                let v = serde_json::json!({
                    "version": map.version,
                    "cluster": format!("{:016x}", map.cluster),
                    "shards": map.shards.iter().map(|s| serde_json::json!({
                        "id": s.id,
                        "range": s.range_text(),
                        "owner": s.owner,
                        "generation": s.generation,
                        "moving_to": s.moving_to,
                        "plan": s.plan.as_ref().map(plan_text),
                        "calls_per_sec": s.load.map(|l| l.calls_per_sec),
                        "bytes": sizes.get(&s.id),
                    })).collect::<Vec<_>>(),
                    "nodes": nodes.iter().map(|(id, n, alive, shards)| serde_json::json!({
                        "id": id,
                        "url": n.url,
                        "lease": if *alive { "held" } else { "expired" },
                        "draining": n.draining,
                        "shards": shards,
                    })).collect::<Vec<_>>(),
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                writeln!(
                    out,
                    "cluster {:016x}, map version {} at {}",
                    map.cluster,
                    map.version,
                    store.location()
                )?;
                for s in &map.shards {
                    let mut size = sizes
                        .get(&s.id)
                        .map_or_else(|| "size unknown".to_string(), |b| format!("{b} bytes"));
                    if let Some(l) = s.load {
                        size.push_str(&format!(", {} calls/s", l.calls_per_sec));
                    }
                    let moving = s
                        .moving_to
                        .as_ref()
                        .map(|t| format!("\tmoving to {t}"))
                        .unwrap_or_default();
                    let moving = match &s.plan {
                        Some(p) => format!("{moving}\t{}", plan_text(p)),
                        None => moving,
                    };
                    writeln!(
                        out,
                        "shard {}\t{}\towner {}\tgeneration {}\t{size}{moving}",
                        s.id,
                        s.range_text(),
                        s.owner.as_deref().unwrap_or("(none)"),
                        s.generation
                    )?;
                }
                for (id, n, alive, shards) in nodes {
                    writeln!(
                        out,
                        "node {id}\t{}\tlease {}\t{shards} shards{}",
                        n.url,
                        if alive { "held" } else { "expired" },
                        if n.draining { "\tdraining" } else { "" }
                    )?;
                }
            }
        }
        ClusterCommand::Drain { node, wait } => {
            cairn_router::map::set_draining(store.as_ref(), &node, true).await?;
            writeln!(out, "draining {node}")?;
            out.flush()?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            loop {
                let map = current(store.as_ref()).await?;
                let left = map.owned_by(&node).count();
                if left == 0 {
                    writeln!(out, "{node} holds no shards (map version {})", map.version)?;
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "{node} still holds {left} shards after {wait} s: are other nodes alive? (`cairn cluster status`)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        ClusterCommand::Split { shard, at, wait } => {
            let at = cairn_router::map::parse_key(&at)?;
            let asked = cairn_router::map::request_split(store.as_ref(), shard, at).await?;
            let Some(cairn_router::map::Plan::Split { left, right, .. }) =
                asked.shard(shard).and_then(|s| s.plan.clone())
            else {
                anyhow::bail!("shard {shard} has no split planned");
            };
            writeln!(
                out,
                "splitting shard {shard} into shards {left} and {right}"
            )?;
            out.flush()?;
            let (map, ms) = wait_for(store.as_ref(), wait, |m| m.shard(shard).is_none()).await?;
            for id in [left, right] {
                if let Some(s) = map.shard(id) {
                    writeln!(out, "shard {id}\t{}", s.range_text())?;
                }
            }
            writeln!(out, "split in {ms} ms (map version {})", map.version)?;
        }
        ClusterCommand::Merge { a, b, wait } => {
            let asked = cairn_router::map::request_merge(store.as_ref(), a, b).await?;
            let into = asked
                .shards
                .iter()
                .find_map(|s| match s.plan {
                    Some(cairn_router::map::Plan::Merge { into, .. }) if s.id == a || s.id == b => {
                        Some(into)
                    }
                    _ => None,
                })
                .context("no merge planned")?;
            writeln!(out, "merging shards {a} and {b} into shard {into}")?;
            out.flush()?;
            let (map, ms) = wait_for(store.as_ref(), wait, |m| m.shard(into).is_some()).await?;
            if let Some(s) = map.shard(into) {
                writeln!(out, "shard {into}\t{}", s.range_text())?;
            }
            writeln!(out, "merged in {ms} ms (map version {})", map.version)?;
        }
        ClusterCommand::Undrain { node } => {
            let map = cairn_router::map::set_draining(store.as_ref(), &node, false).await?;
            writeln!(
                out,
                "{node} takes shards again (map version {})",
                map.version
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Waits up to `wait` seconds for a map where `done` holds; answers it and the
/// milliseconds it took.
async fn wait_for(
    store: &dyn MapStore,
    wait: u64,
    done: impl Fn(&ClusterMap) -> bool,
) -> Result<(ClusterMap, u128)> {
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(wait);
    loop {
        let map = current(store).await?;
        if done(&map) {
            return Ok((map, started.elapsed().as_millis()));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not done after {wait} s; the shard's owner carries it on (`cairn cluster status` shows the plan)"
        );
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        store
            .next(map.version, left.min(Duration::from_secs(1)))
            .await?;
    }
}

async fn current(store: &dyn MapStore) -> Result<ClusterMap> {
    store.current().await?.with_context(|| {
        format!(
            "no cluster map at {}: no node has started",
            store.location()
        )
    })
}

fn plan_text(p: &cairn_router::map::Plan) -> String {
    match p {
        cairn_router::map::Plan::Split { at, left, right } => format!(
            "splitting at {} into {left} and {right}",
            cairn_router::map::key_text(at)
        ),
        cairn_router::map::Plan::Merge { right, into } => {
            format!("merging with {right} into {into}")
        }
    }
}

/// Each served shard's bytes of tables, by shard id; shards that do not answer within a few
/// seconds are left out.
async fn sizes(config: &Config) -> std::collections::HashMap<u64, u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(Ok(router)) =
        tokio::time::timeout(Duration::from_secs(3), cairn::open_router(config)).await
    else {
        return out;
    };
    let ids = router.routing().ids();
    if let Ok(all) = tokio::time::timeout(Duration::from_secs(3), router.stats()).await {
        for (id, s) in ids.into_iter().zip(all) {
            if let Ok(stats) = s.stats {
                out.insert(id, stats.levels.iter().map(|l| l.bytes).sum());
            }
        }
    }
    out
}
