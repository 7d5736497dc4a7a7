//! What the engine records through the `metrics` facade, labelled with its database. Handles
//! are registered once at open, so recording on a write or a read is an atomic update (and
//! nothing at all when no recorder is installed); whoever installs one sees them: the
//! Prometheus exporter of `cairn serve`, or a library user's own.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

pub(crate) struct EngineMetrics {
    pub writes: Counter,
    pub write_seconds: Histogram,
    pub gets: Counter,
    pub get_seconds: Histogram,
    pub scans: Counter,
    pub journal_bytes: Counter,
    pub flushes: Counter,
    pub flush_seconds: Histogram,
    pub flushed_bytes: Counter,
    pub compactions: Counter,
    pub subcompactions: Counter,
    pub compaction_seconds: Histogram,
    pub compaction_bytes_in: Counter,
    pub compaction_bytes_out: Counter,
    pub stalls: Counter,
    pub stall_seconds: Histogram,
    pub background_errors: Counter,
    pub l0_tables: Gauge,
    pub memtable_bytes: Gauge,
}

impl EngineMetrics {
    pub fn new(database: &str) -> Self {
        let l = [("database", database.to_string())];
        EngineMetrics {
            writes: counter!("cairn_engine_writes_total", &l),
            write_seconds: histogram!("cairn_engine_write_seconds", &l),
            gets: counter!("cairn_engine_gets_total", &l),
            get_seconds: histogram!("cairn_engine_get_seconds", &l),
            scans: counter!("cairn_engine_scans_total", &l),
            journal_bytes: counter!("cairn_engine_journal_bytes_total", &l),
            flushes: counter!("cairn_engine_flushes_total", &l),
            flush_seconds: histogram!("cairn_engine_flush_seconds", &l),
            flushed_bytes: counter!("cairn_engine_flushed_bytes_total", &l),
            compactions: counter!("cairn_engine_compactions_total", &l),
            subcompactions: counter!("cairn_engine_subcompactions_total", &l),
            compaction_seconds: histogram!("cairn_engine_compaction_seconds", &l),
            compaction_bytes_in: counter!("cairn_engine_compaction_read_bytes_total", &l),
            compaction_bytes_out: counter!("cairn_engine_compaction_written_bytes_total", &l),
            stalls: counter!("cairn_engine_write_stalls_total", &l),
            stall_seconds: histogram!("cairn_engine_write_stall_seconds", &l),
            background_errors: counter!("cairn_engine_background_errors_total", &l),
            l0_tables: gauge!("cairn_engine_l0_tables", &l),
            memtable_bytes: gauge!("cairn_engine_memtable_bytes", &l),
        }
    }
}
