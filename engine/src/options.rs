//! Engine tuning: memtable size, write-stall thresholds and the compaction policy.

use cairn_common::{Operators, SharedClock};
use cairn_compaction::PickerOptions;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineOptions {
    /// A memtable is frozen and queued for flush once it holds this many bytes.
    pub memtable_bytes: usize,
    /// Frozen memtables waiting for flush; when the queue is full and the active memtable is
    /// full too, writes wait for a flush instead of growing memory without bound.
    pub max_immutable_memtables: usize,
    /// Write groups in the journal at once (`write_group`): writers that arrive while these
    /// are out queue, and the oldest of them leads the next group when one returns. 1 makes
    /// the largest groups; 2 lets the next group reach a journal that commits in groups (a
    /// synced file, a journal server) while the one before it syncs. A journal whose appends
    /// do not wait (`Journal::appends_wait`: an unsynced file) has no limit, and no groups.
    pub write_groups_in_flight: usize,
    /// Writes wait while L0 holds this many tables, until compaction catches up.
    pub l0_stop_writes: usize,
    /// Threads of the background runtime that runs flushes and compactions. 0: no runtime
    /// of its own; background work runs on the runtime that opened the database (an
    /// embedder's, or a deterministic simulation's), which must then outlive the `Db`.
    pub background_threads: usize,
    /// A reader (`Db::open_reader`) reads its writer's manifest this often, and its journal's
    /// tail too where the journal cannot say when records land (`Journal::wait_past`).
    pub reader_poll_ms: u64,
    /// A reader whose polls have not caught up for this long refuses reads (naming how far
    /// behind it is and why) instead of answering from an ever older view; a router then
    /// sends them to the writer.
    pub reader_max_staleness_ms: u64,
    /// A table compacted away is deleted this long after the writer stops reading it, so
    /// replicas still reading the version they last saw can finish (0: at once).
    pub table_grace_ms: u64,
    /// The writer's lease, for a journal only its own node reaches (a file journal beside
    /// tables and a manifest on shared storage): it acknowledges writes only while its last
    /// renewal (any manifest version it wrote, or an empty one every quarter lease) began
    /// less than 90% of this ago, and a writer on another node waits 110% of this without
    /// a renewal before taking over. 0: no lease (a single-node deployment, where nobody
    /// else can take over). Journals every node reaches fence by themselves and need none.
    pub lease_ms: u64,
    /// The merge operator `Db::merge` folds with, by name: a built-in (`add`, `max`,
    /// `append`) or one registered in `operators`. Unknown names fail the open.
    pub merge_operator: Option<String>,
    /// The compaction filter compactions run, by name: the built-in `remove-empty-values`
    /// or one registered in `operators`.
    pub compaction_filter: Option<String>,
    /// Puts expire this long after they are written, unless they carry an expiry of their
    /// own (`Db::put_with_ttl`); 0: they do not.
    pub ttl_ms: u64,
    /// Where `merge_operator` and `compaction_filter` are looked up (the built-ins unless an
    /// embedder adds its own). Code, not configuration.
    #[serde(skip)]
    pub operators: Operators,
    /// The clock expiries are set and judged by. Code, not configuration: tests move it.
    #[serde(skip)]
    pub clock: SharedClock,
    /// The compaction policy. Configured in its own `[compaction]` section by the `cairn`
    /// crate, so it is not part of this struct's serialized form.
    #[serde(skip)]
    pub compaction: PickerOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            memtable_bytes: 64 << 20,
            max_immutable_memtables: 2,
            write_groups_in_flight: 2,
            l0_stop_writes: 20,
            background_threads: 2,
            reader_poll_ms: 100,
            reader_max_staleness_ms: 5_000,
            table_grace_ms: 30_000,
            lease_ms: 10_000,
            merge_operator: None,
            compaction_filter: None,
            ttl_ms: 0,
            operators: Operators::default(),
            clock: SharedClock::default(),
            compaction: PickerOptions::default(),
        }
    }
}

impl EngineOptions {
    /// `reader_poll_ms`, at least a millisecond.
    pub fn reader_poll(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.reader_poll_ms.max(1))
    }
}
