//! What opening a database recovers: its manifest (created, moved from the file an older
//! Cairn kept in the data directory, or moved to a new journal), the journal's records past
//! the tables, and the tables a crash left behind. The writer's open and a reader's
//! catch-up both replay the journal through here.

use crate::db::MemSlot;
use crate::legacy_manifest::LegacyManifest;
use crate::manifest::{Holder, Manifest, ManifestLog, VersionEdit};
use cairn_common::{Error, IoContext, Lsn, Result, SeqNo, TableId, WriteBatch};
use cairn_filestore::Storage;
use cairn_journal::Journal;
use futures::StreamExt;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;

/// Opens the manifest beside the tables as this database's writer. A store with no manifest
/// gets a new database, unless it holds tables: those belong to a database whose manifest
/// is elsewhere or lost, and are not ours to build over (or to delete). A manifest left in
/// `dir` by an older Cairn moves into the store.
pub(crate) async fn open_manifest(
    dir: &Path,
    levels: usize,
    storage: &dyn Storage,
    holder: Option<Holder>,
) -> Result<ManifestLog> {
    let store = storage.manifests();
    let location = store.location();
    let legacy = LegacyManifest::load(dir)?;
    let tables = storage.list_tables().await?;
    let new_id = new_database_id();
    let log = ManifestLog::open_writer(store, || match &legacy {
        Some(m) => Ok(Manifest {
            database: new_id.clone(),
            epoch: 1,
            next_table_id: m.next_table_id,
            last_seq: m.last_seq,
            flushed_lsn: m.flushed_lsn,
            journal: String::new(),
            levels: m.levels.clone(),
            checkpoints: Vec::new(),
            origins: Vec::new(),
            // What the old manifest's flushes and compactions dropped is not known.
            history_floor: m.last_seq,
        }),
        None if !tables.is_empty() => Err(Error::InvalidArgument(format!(
            "{location} has no manifest but its storage holds {} tables: they belong to a database whose manifest is elsewhere or lost; refusing to create a new database over them (nothing was deleted)",
            tables.len()
        ))),
        None => Ok(Manifest::new(new_id.clone(), levels)),
    }, holder)
    .await?;
    if legacy.is_some() {
        let old = LegacyManifest::path(dir);
        if log.state().database == new_id {
            let moved = dir.join("MANIFEST.migrated");
            std::fs::rename(&old, &moved).at(&old)?;
            tracing::info!(from = %old.display(), to = %location, "moved the manifest beside the tables");
        } else {
            tracing::warn!(file = %old.display(), database = %log.state().database, "ignoring an old manifest file: the storage holds a manifest already");
        }
    }
    Ok(log)
}

/// Makes the claimed journal the one the manifest counts in. The same journal as before
/// must reach the manifest's flushed position (else records were lost). A journal the
/// database did not use last (another node's local journal, a new server) may hold records
/// of an older writer that a take-over already went past: those are superseded, never
/// replayed, so the manifest moves past its end.
pub(crate) async fn adopt_journal(
    log: &mut ManifestLog,
    claimed: &cairn_journal::Claimed,
) -> Result<()> {
    let m = log.state();
    if m.journal == claimed.journal {
        if claimed.last_lsn < m.flushed_lsn {
            return Err(Error::corruption(
                format!("journal {}", claimed.journal),
                format!(
                    "it ends at LSN {} but database {}'s tables hold its records up to LSN {}: records were lost (was the journal emptied or replaced?)",
                    claimed.last_lsn, m.database, m.flushed_lsn
                ),
            ));
        }
        return Ok(());
    }
    // A manifest that never named a journal (a new or migrated database) replays what the
    // journal holds after its flushed position, as before.
    let flushed = if m.journal.is_empty() {
        m.flushed_lsn
    } else {
        if claimed.last_lsn > m.flushed_lsn {
            tracing::warn!(journal = %claimed.journal, last_lsn = claimed.last_lsn, "the journal holds records of an older writer of this database; a newer one took over since, so they are not replayed");
        }
        m.flushed_lsn.max(claimed.last_lsn)
    };
    log.commit(VersionEdit {
        journal: Some(claimed.journal.clone()),
        flushed_lsn: Some(flushed),
        ..VersionEdit::default()
    })
    .await
}

/// The tables to delete that the manifest does not name: left by flushes and compactions
/// that never installed them, or compacted away by an earlier writer that stopped before
/// deleting them; ids reserved by this database (below `next_table_id`). A table with an id
/// never reserved is not provably this database's, and stays.
pub(crate) async fn leftovers(manifest: &Manifest, storage: &dyn Storage) -> Result<Vec<TableId>> {
    let live: HashSet<TableId> = manifest.live_ids().collect();
    let mut out = Vec::new();
    for id in storage.list_tables().await? {
        if live.contains(&id) {
            continue;
        }
        if id < manifest.next_table_id {
            tracing::info!(table = id, "deleting a table the manifest does not name");
            out.push(id);
        } else {
            tracing::warn!(
                table = id,
                reserved_below = manifest.next_table_id,
                "leaving a table this database never reserved an id for"
            );
        }
    }
    Ok(out)
}

/// What an open found, for `assemble`.
/// What a replay of the journal found.
pub(crate) struct Replayed {
    /// The first record's LSN, if any: past `from`, records before it are gone (or were
    /// never written).
    pub first_lsn: Option<Lsn>,
    /// The newest record's LSN (0 for none).
    pub last_lsn: Lsn,
    /// The newest sequence number applied, or the `last_seq` given.
    pub last_seq: SeqNo,
    pub replayed: u64,
    pub stale: u64,
}

/// Applies the journal's records from `from` on to `slot`'s memtable, skipping batches the
/// tables (whose newest sequence number is `tables_seq`) supersede. A reader passes its
/// `shown` prefix: batches at or below what it shows already are skipped, and the others
/// are applied above it, to be shown once the prefix reaches them.
pub(crate) async fn replay_journal(
    journal: &dyn Journal,
    from: Lsn,
    tables_seq: SeqNo,
    mut last_seq: SeqNo,
    slot: &MemSlot,
    mut shown: Option<&mut crate::follow::Prefix>,
) -> Result<Replayed> {
    let (mut replayed, mut stale) = (0u64, 0u64);
    let (mut first_lsn, mut last_lsn) = (None, 0);
    let mut records = journal.replay(from).await?;
    while let Some(rec) = records.next().await {
        let rec = rec?;
        let (first, mark, batch) = WriteBatch::decode_marked(&rec.payload)
            .map_err(|e| Error::corruption(format!("journal record {}", rec.lsn), e.to_string()))?;
        first_lsn.get_or_insert(rec.lsn);
        last_lsn = rec.lsn;
        slot.max_lsn.fetch_max(rec.lsn, Ordering::Relaxed);
        // Every write the memtables held when a flush froze them is older than the
        // flushed table's newest, and every later one newer (the gate orders both). A
        // batch numbered at or below the tables' newest is therefore in them already, or
        // is one whose caller gave up while its append was on the way and that landed
        // late, past newer flushed writes: replaying it would put an old value in front
        // of a newer one.
        if first <= tables_seq || shown.as_ref().is_some_and(|p| first <= p.shown()) {
            stale += 1;
            continue;
        }
        if !batch.is_empty() {
            let last = first + batch.len() as u64 - 1;
            last_seq = last_seq.max(last);
            if let Some(p) = shown.as_mut() {
                p.applied(first, last, mark);
            }
        }
        crate::write_path::apply(slot, first, batch);
        replayed += 1;
    }
    Ok(Replayed {
        first_lsn,
        last_lsn,
        last_seq,
        replayed,
        stale,
    })
}

/// 128 random bits, in hex.
pub(crate) fn new_database_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
