//! Compaction servers in the bench's own process, on loopback, for the suites that measure
//! work sent to them: started with a worker's profile, one job slot each, and a database
//! reopened with them as its pool.

use anyhow::{Context, Result};
use cairn::serve::{Component, ComponentServer};
use cairn::{CompactionKind, Config, Router};
use std::time::Instant;

/// `n` servers with `worker`'s profile, one job slot each.
pub async fn start(worker: &Config, n: usize) -> Result<Vec<ComponentServer>> {
    let mut worker = worker.clone();
    worker.compaction.slots = Some(1);
    let mut servers = Vec::with_capacity(n);
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server = cairn::serve::start(
            &worker,
            Component::Compaction,
            listener,
            std::future::pending(),
        )
        .await
        .context("starting a compaction server")?;
        servers.push(server);
    }
    Ok(servers)
}

/// `db` with `servers` as its compaction pool.
pub fn pooled(db: &Config, servers: &[ComponentServer]) -> Config {
    let mut c = db.clone();
    c.compaction.kind = CompactionKind::Grpc;
    c.compaction.url = None;
    c.compaction.urls = servers.iter().map(ComponentServer::url).collect();
    c
}

pub async fn stop(servers: Vec<ComponentServer>) -> Result<()> {
    for s in servers {
        s.stop().await?;
    }
    Ok(())
}

/// One full compaction: its seconds, and the CPU seconds this process spent in it.
pub async fn timed_compaction(router: &Router) -> Result<(f64, f64)> {
    let (t, cpu) = (Instant::now(), crate::measure::cpu_seconds());
    router.compact().await?;
    Ok((
        t.elapsed().as_secs_f64(),
        crate::measure::cpu_seconds() - cpu,
    ))
}
