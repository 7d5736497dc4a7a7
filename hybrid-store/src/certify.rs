//! The two copies of a table are checked against each other when they are written: row
//! count, key range, and a digest of the rows each format encoded (`ContentDigest`). A
//! mismatch fails the write and keeps neither copy: the Parquet copy is what analytics and
//! exports read, so it must never quietly hold something other than what the SSTable holds.

use cairn_common::{Error, Result, TableId, TableMeta};
use cairn_filestore::ContentDigest;

/// One copy as its builder finished it.
pub(crate) type Copy = (TableMeta, Option<ContentDigest>);

pub(crate) fn certify(id: TableId, primary: &Copy, secondary: &Copy) -> Result<()> {
    let ((p, pd), (s, sd)) = (primary, secondary);
    let mut differ = Vec::new();
    if p.entries != s.entries {
        differ.push(format!("{} entries against {}", p.entries, s.entries));
    }
    if p.smallest != s.smallest || p.largest != s.largest {
        differ.push(format!(
            "keys {:?}..={:?} against {:?}..={:?}",
            String::from_utf8_lossy(&p.smallest),
            String::from_utf8_lossy(&p.largest),
            String::from_utf8_lossy(&s.smallest),
            String::from_utf8_lossy(&s.largest)
        ));
    }
    if let (Some(a), Some(b)) = (pd, sd)
        && a != b
    {
        differ.push(format!(
            "content digest {:016x} over {} rows against {:016x} over {} rows",
            a.sum, a.rows, b.sum, b.rows
        ));
    }
    if differ.is_empty() {
        metrics::counter!("cairn_hybrid_tables_certified_total").increment(1);
        return Ok(());
    }
    metrics::counter!("cairn_hybrid_copies_differ_total").increment(1);
    Err(Error::Corruption {
        what: format!("hybrid store table {id}"),
        detail: format!(
            "the SSTable and Parquet copies differ: {}",
            differ.join("; ")
        ),
    })
}
