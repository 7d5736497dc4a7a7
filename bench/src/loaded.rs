//! A database loaded for a suite: `keys` entries of `value_size` bytes imported (past the
//! journal) and compacted, in a directory of its own under `base`.

use anyhow::{Context, Result};
use bytes::Bytes;
use cairn::{Config, Router};
use std::path::Path;

pub fn key(i: u64) -> Bytes {
    Bytes::from(format!("key{i:012}"))
}

/// `config` with its database in `base/db`, where every suite keeps the one it loads.
pub fn in_base(config: &Config, base: &Path) -> Config {
    let mut c = config.clone();
    c.data_dir = base.join("db");
    c.journal.dir = None;
    c.storage.dir = None;
    c
}

pub async fn loaded(config: &Config, base: &Path, keys: u64, value_size: usize) -> Result<Router> {
    let c = in_base(config, base);
    let router = cairn::open_router(&c)
        .await
        .context("opening the database")?;
    let value = Bytes::from(vec![b'v'; value_size]);
    let entries = (0..keys).map(move |i| Ok((key(i), value.clone())));
    router.import(futures::stream::iter(entries)).await?;
    router.compact().await?;
    Ok(router)
}

/// The bytes of every table of every shard that answers.
pub async fn table_bytes(router: &Router) -> u64 {
    router
        .stats()
        .await
        .iter()
        .filter_map(|s| s.stats.as_ref().ok())
        .flat_map(|s| s.levels.iter().map(|l| l.bytes))
        .sum()
}
