//! Manifest versions as earlier Cairn wrote them, read into today's types: version 6
//! (`CAIRNMV6`), before the history floor, version 5
//! (`CAIRNMV5`), before a clone's origins had key bounds, version 4 (`CAIRNMV4`), before
//! clones, version 3 (`CAIRNMV3`), before named checkpoints, and
//! version 2 (`CAIRNMV2`), before leases too.
//! Their bincode bodies are these structs, field for field; nothing here is ever written.
//!
//! What their flushes and compactions dropped is not known: a checkpoint read from them
//! puts the history floor at its newest number, and each edit raises it to the newest
//! number of the state it makes (`UNKNOWN_FLOOR`).

use super::record::{Body, Lease, MAGIC_V2, MAGIC_V4, MAGIC_V5, MAGIC_V6, Record, config};
use super::{CheckpointEdit, Manifest, NamedCheckpoint, Origin, VersionEdit};
use bincode::error::DecodeError;
use cairn_common::{Lsn, SeqNo, TableId, TableMeta};

/// An older edit's floor: `Manifest::apply` caps a floor at the newest number of the state,
/// so this raises it that far.
const UNKNOWN_FLOOR: SeqNo = SeqNo::MAX;

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct RecordV6 {
    pub database: String,
    pub epoch: u64,
    pub writer: u64,
    pub body: BodyV6,
    pub lease: Option<Lease>,
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) enum BodyV6 {
    Checkpoint(ManifestV6),
    Edit(VersionEditV6),
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct ManifestV6 {
    pub database: String,
    pub epoch: u64,
    pub next_table_id: TableId,
    pub last_seq: SeqNo,
    pub flushed_lsn: Lsn,
    pub journal: String,
    pub levels: Vec<Vec<TableMeta>>,
    pub checkpoints: Vec<NamedCheckpoint>,
    pub origins: Vec<Origin>,
}

/// The edit of versions 4 to 6.
#[derive(Default, bincode::Encode, bincode::Decode)]
pub(super) struct VersionEditV6 {
    pub added: Vec<(u32, TableMeta)>,
    pub removed: Vec<TableId>,
    pub last_seq: Option<SeqNo>,
    pub flushed_lsn: Option<Lsn>,
    pub next_table_id: Option<TableId>,
    pub journal: Option<String>,
    pub checkpoint: Option<CheckpointEdit>,
}

impl From<VersionEditV6> for VersionEdit {
    fn from(e: VersionEditV6) -> VersionEdit {
        VersionEdit {
            added: e.added,
            removed: e.removed,
            last_seq: e.last_seq,
            flushed_lsn: e.flushed_lsn,
            next_table_id: e.next_table_id,
            journal: e.journal,
            checkpoint: e.checkpoint,
            history_floor: Some(UNKNOWN_FLOOR),
        }
    }
}

impl From<BodyV6> for Body {
    fn from(b: BodyV6) -> Body {
        match b {
            BodyV6::Checkpoint(m) => Body::Checkpoint(Manifest {
                database: m.database,
                epoch: m.epoch,
                next_table_id: m.next_table_id,
                last_seq: m.last_seq,
                flushed_lsn: m.flushed_lsn,
                journal: m.journal,
                levels: m.levels,
                checkpoints: m.checkpoints,
                origins: m.origins,
                history_floor: 0,
            }),
            BodyV6::Edit(e) => Body::Edit(e.into()),
        }
    }
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct RecordV5 {
    pub database: String,
    pub epoch: u64,
    pub writer: u64,
    pub body: BodyV5,
    pub lease: Option<Lease>,
}

/// Today's edits read as they were: key bounds changed only a clone's `Origin`s.
#[derive(bincode::Encode, bincode::Decode)]
pub(super) enum BodyV5 {
    Checkpoint(ManifestV5),
    Edit(VersionEditV6),
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct ManifestV5 {
    pub database: String,
    pub epoch: u64,
    pub next_table_id: TableId,
    pub last_seq: SeqNo,
    pub flushed_lsn: Lsn,
    pub journal: String,
    pub levels: Vec<Vec<TableMeta>>,
    pub checkpoints: Vec<NamedCheckpoint>,
    pub origins: Vec<OriginV5>,
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct OriginV5 {
    pub database: String,
    pub reference: String,
    pub checkpoint: String,
    pub ids: Vec<TableId>,
}

impl From<BodyV5> for Body {
    fn from(b: BodyV5) -> Body {
        match b {
            BodyV5::Checkpoint(m) => Body::Checkpoint(Manifest {
                history_floor: 0,
                database: m.database,
                epoch: m.epoch,
                next_table_id: m.next_table_id,
                last_seq: m.last_seq,
                flushed_lsn: m.flushed_lsn,
                journal: m.journal,
                levels: m.levels,
                checkpoints: m.checkpoints,
                origins: m
                    .origins
                    .into_iter()
                    .map(|o| Origin {
                        database: o.database,
                        reference: o.reference,
                        checkpoint: o.checkpoint,
                        ids: o.ids,
                        lower: None,
                        upper: None,
                    })
                    .collect(),
            }),
            BodyV5::Edit(e) => Body::Edit(e.into()),
        }
    }
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct RecordV4 {
    pub database: String,
    pub epoch: u64,
    pub writer: u64,
    pub body: BodyV4,
    pub lease: Option<Lease>,
}

/// Today's edits read as they were: clones only added a `CheckpointEdit` variant.
#[derive(bincode::Encode, bincode::Decode)]
pub(super) enum BodyV4 {
    Checkpoint(ManifestV4),
    Edit(VersionEditV6),
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct ManifestV4 {
    pub database: String,
    pub epoch: u64,
    pub next_table_id: TableId,
    pub last_seq: SeqNo,
    pub flushed_lsn: Lsn,
    pub journal: String,
    pub levels: Vec<Vec<TableMeta>>,
    pub checkpoints: Vec<NamedCheckpointV4>,
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct NamedCheckpointV4 {
    pub name: String,
    pub created_ms: u64,
    pub seq: SeqNo,
    pub levels: Vec<Vec<TableMeta>>,
}

impl From<BodyV4> for Body {
    fn from(b: BodyV4) -> Body {
        match b {
            BodyV4::Checkpoint(m) => Body::Checkpoint(Manifest {
                history_floor: 0,
                database: m.database,
                epoch: m.epoch,
                next_table_id: m.next_table_id,
                last_seq: m.last_seq,
                flushed_lsn: m.flushed_lsn,
                journal: m.journal,
                levels: m.levels,
                checkpoints: m
                    .checkpoints
                    .into_iter()
                    .map(|c| NamedCheckpoint {
                        name: c.name,
                        created_ms: c.created_ms,
                        seq: c.seq,
                        levels: c.levels,
                        clones: Vec::new(),
                    })
                    .collect(),
                origins: Vec::new(),
            }),
            BodyV4::Edit(e) => Body::Edit(e.into()),
        }
    }
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct RecordV3 {
    pub database: String,
    pub epoch: u64,
    pub writer: u64,
    pub body: BodyV3,
    pub lease: Option<Lease>,
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct RecordV2 {
    pub database: String,
    pub epoch: u64,
    pub writer: u64,
    pub body: BodyV3,
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) enum BodyV3 {
    Checkpoint(ManifestV3),
    Edit(VersionEditV3),
}

#[derive(bincode::Encode, bincode::Decode)]
pub(super) struct ManifestV3 {
    pub database: String,
    pub epoch: u64,
    pub next_table_id: TableId,
    pub last_seq: SeqNo,
    pub flushed_lsn: Lsn,
    pub journal: String,
    pub levels: Vec<Vec<TableMeta>>,
}

#[derive(Default, bincode::Encode, bincode::Decode)]
pub(super) struct VersionEditV3 {
    pub added: Vec<(u32, TableMeta)>,
    pub removed: Vec<TableId>,
    pub last_seq: Option<SeqNo>,
    pub flushed_lsn: Option<Lsn>,
    pub next_table_id: Option<TableId>,
    pub journal: Option<String>,
}

impl From<BodyV3> for Body {
    fn from(b: BodyV3) -> Body {
        match b {
            BodyV3::Checkpoint(m) => Body::Checkpoint(Manifest {
                history_floor: 0,
                database: m.database,
                epoch: m.epoch,
                next_table_id: m.next_table_id,
                last_seq: m.last_seq,
                flushed_lsn: m.flushed_lsn,
                journal: m.journal,
                levels: m.levels,
                checkpoints: Vec::new(),
                origins: Vec::new(),
            }),
            BodyV3::Edit(e) => Body::Edit(VersionEdit {
                added: e.added,
                removed: e.removed,
                last_seq: e.last_seq,
                flushed_lsn: e.flushed_lsn,
                next_table_id: e.next_table_id,
                journal: e.journal,
                checkpoint: None,
                history_floor: Some(UNKNOWN_FLOOR),
            }),
        }
    }
}

/// Decodes the body of a version 6, 5, 4, 3 or 2 record, as `magic` says.
pub(super) fn decode(magic: &[u8], body: &[u8]) -> Result<(Record, usize), DecodeError> {
    let (mut r, used) = decode_as_written(magic, body)?;
    if let Body::Checkpoint(state) = &mut r.body {
        state.history_floor = state.newest_seq();
    }
    Ok((r, used))
}

fn decode_as_written(magic: &[u8], body: &[u8]) -> Result<(Record, usize), DecodeError> {
    if magic == MAGIC_V6 {
        let (r, used): (RecordV6, usize) = bincode::decode_from_slice(body, config())?;
        let r = Record {
            database: r.database,
            epoch: r.epoch,
            writer: r.writer,
            body: r.body.into(),
            lease: r.lease,
        };
        return Ok((r, used));
    }
    if magic == MAGIC_V5 {
        let (r, used): (RecordV5, usize) = bincode::decode_from_slice(body, config())?;
        let r = Record {
            database: r.database,
            epoch: r.epoch,
            writer: r.writer,
            body: r.body.into(),
            lease: r.lease,
        };
        return Ok((r, used));
    }
    if magic == MAGIC_V4 {
        let (r, used): (RecordV4, usize) = bincode::decode_from_slice(body, config())?;
        let r = Record {
            database: r.database,
            epoch: r.epoch,
            writer: r.writer,
            body: r.body.into(),
            lease: r.lease,
        };
        return Ok((r, used));
    }
    if magic == MAGIC_V2 {
        let (r, used): (RecordV2, usize) = bincode::decode_from_slice(body, config())?;
        let r = Record {
            database: r.database,
            epoch: r.epoch,
            writer: r.writer,
            body: r.body.into(),
            lease: None,
        };
        return Ok((r, used));
    }
    let (r, used): (RecordV3, usize) = bincode::decode_from_slice(body, config())?;
    let r = Record {
        database: r.database,
        epoch: r.epoch,
        writer: r.writer,
        body: r.body.into(),
        lease: r.lease,
    };
    Ok((r, used))
}

#[cfg(test)]
mod tests {
    use super::super::record::MAGIC_V3;
    use super::*;

    fn framed(magic: &[u8], body: Vec<u8>) -> Vec<u8> {
        let mut data = magic.to_vec();
        data.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        data.extend_from_slice(&(body.len() as u32).to_le_bytes());
        data.extend_from_slice(&body);
        data
    }

    /// A version written before leases (format 2) reads as one with no lease.
    #[test]
    fn a_version_2_record_is_read_with_no_lease() {
        let old = RecordV2 {
            database: "db".into(),
            epoch: 4,
            writer: 9,
            body: BodyV3::Edit(VersionEditV3::default()),
        };
        let data = framed(MAGIC_V2, bincode::encode_to_vec(&old, config()).unwrap());
        let r = Record::decode(&data, "v2").unwrap();
        assert_eq!((r.database.as_str(), r.epoch, r.writer), ("db", 4, 9));
        assert_eq!(r.lease, None);
        let edit = VersionEdit {
            history_floor: Some(UNKNOWN_FLOOR),
            ..VersionEdit::default()
        };
        assert_eq!(r.body, Body::Edit(edit));
    }

    /// A version written before the history floor (format 6) puts it at the newest number
    /// it holds, and each of its edits raises it to the newest of the state it makes: what
    /// its flushes and compactions dropped is not known.
    #[test]
    fn a_version_6_state_keeps_no_history_before_its_newest_number() {
        let meta = |id, max_seq| TableMeta {
            id,
            smallest: b"a".to_vec(),
            largest: b"z".to_vec(),
            min_seq: 1,
            max_seq,
            entries: 3,
            size: 100,
        };
        let state = RecordV6 {
            database: "db".into(),
            epoch: 1,
            writer: 3,
            body: BodyV6::Checkpoint(ManifestV6 {
                database: "db".into(),
                epoch: 1,
                next_table_id: 9,
                last_seq: 4,
                flushed_lsn: 0,
                journal: String::new(),
                levels: vec![vec![meta(1, 12)], vec![]],
                checkpoints: Vec::new(),
                origins: Vec::new(),
            }),
            lease: None,
        };
        let data = framed(MAGIC_V6, bincode::encode_to_vec(&state, config()).unwrap());
        let Body::Checkpoint(m) = Record::decode(&data, "v6").unwrap().body else {
            panic!("a full state");
        };
        assert_eq!(m.history_floor, 12);
        let edit = RecordV6 {
            database: "db".into(),
            epoch: 1,
            writer: 3,
            body: BodyV6::Edit(VersionEditV6 {
                added: vec![(0, meta(2, 20))],
                last_seq: Some(20),
                ..VersionEditV6::default()
            }),
            lease: None,
        };
        let data = framed(MAGIC_V6, bincode::encode_to_vec(&edit, config()).unwrap());
        let Body::Edit(e) = Record::decode(&data, "v6").unwrap().body else {
            panic!("an edit");
        };
        assert_eq!(m.apply(&e).history_floor, 20);
    }

    /// A version written before named checkpoints (format 3) reads as one with none.
    #[test]
    fn a_version_3_record_is_read_with_no_named_checkpoints() {
        let meta = TableMeta {
            id: 7,
            smallest: b"a".to_vec(),
            largest: b"z".to_vec(),
            min_seq: 1,
            max_seq: 9,
            entries: 3,
            size: 100,
        };
        let old = RecordV3 {
            database: "db".into(),
            epoch: 2,
            writer: 5,
            body: BodyV3::Checkpoint(ManifestV3 {
                database: "db".into(),
                epoch: 2,
                next_table_id: 8,
                last_seq: 9,
                flushed_lsn: 3,
                journal: "j".into(),
                levels: vec![vec![meta.clone()], vec![]],
            }),
            lease: Some(Lease {
                ms: 10_000,
                journal: "j".into(),
            }),
        };
        let data = framed(MAGIC_V3, bincode::encode_to_vec(&old, config()).unwrap());
        let r = Record::decode(&data, "v3").unwrap();
        let Body::Checkpoint(m) = r.body else {
            panic!("a full state");
        };
        assert_eq!(m.levels, vec![vec![meta], vec![]]);
        assert_eq!((m.next_table_id, m.last_seq, m.flushed_lsn), (8, 9, 3));
        assert!(m.checkpoints.is_empty());
        assert_eq!(r.lease.map(|l| l.ms), Some(10_000));
    }

    /// A clone written before origins had key bounds (format 5) sees all of its origins'
    /// tables, as it did.
    #[test]
    fn a_version_5_clone_sees_all_of_its_origins_tables() {
        let old = RecordV5 {
            database: "clone".into(),
            epoch: 1,
            writer: 3,
            body: BodyV5::Checkpoint(ManifestV5 {
                database: "clone".into(),
                epoch: 1,
                next_table_id: 9,
                last_seq: 4,
                flushed_lsn: 0,
                journal: String::new(),
                levels: vec![vec![], vec![]],
                checkpoints: Vec::new(),
                origins: vec![OriginV5 {
                    database: "parent".into(),
                    reference: "/p".into(),
                    checkpoint: "cp".into(),
                    ids: vec![5, 6],
                }],
            }),
            lease: None,
        };
        let data = framed(MAGIC_V5, bincode::encode_to_vec(&old, config()).unwrap());
        let Body::Checkpoint(m) = Record::decode(&data, "v5").unwrap().body else {
            panic!("a full state");
        };
        let o = &m.origins[0];
        assert_eq!((o.database.as_str(), o.ids.clone()), ("parent", vec![5, 6]));
        assert!(o.within().is_all());
    }

    /// A version written before clones (format 4) reads with its checkpoints, none of them
    /// held, and no origins; its edits read as they were.
    #[test]
    fn a_version_4_record_is_read_with_no_clones() {
        let meta = TableMeta {
            id: 3,
            smallest: b"a".to_vec(),
            largest: b"b".to_vec(),
            min_seq: 1,
            max_seq: 2,
            entries: 2,
            size: 50,
        };
        let state = RecordV4 {
            database: "db".into(),
            epoch: 3,
            writer: 1,
            body: BodyV4::Checkpoint(ManifestV4 {
                database: "db".into(),
                epoch: 3,
                next_table_id: 4,
                last_seq: 2,
                flushed_lsn: 1,
                journal: "j".into(),
                levels: vec![vec![meta.clone()], vec![]],
                checkpoints: vec![NamedCheckpointV4 {
                    name: "c".into(),
                    created_ms: 77,
                    seq: 2,
                    levels: vec![vec![meta.clone()], vec![]],
                }],
            }),
            lease: None,
        };
        let data = framed(MAGIC_V4, bincode::encode_to_vec(&state, config()).unwrap());
        let Body::Checkpoint(m) = Record::decode(&data, "v4").unwrap().body else {
            panic!("a full state");
        };
        let c = m.checkpoint("c").expect("the checkpoint");
        assert_eq!((c.created_ms, c.seq, &c.levels), (77, 2, &m.levels));
        assert!(c.clones.is_empty() && m.origins.is_empty());

        let delete = || Some(super::super::CheckpointEdit::Delete { name: "c".into() });
        let old = RecordV4 {
            database: "db".into(),
            epoch: 3,
            writer: 1,
            body: BodyV4::Edit(VersionEditV6 {
                checkpoint: delete(),
                ..VersionEditV6::default()
            }),
            lease: None,
        };
        let data = framed(MAGIC_V4, bincode::encode_to_vec(&old, config()).unwrap());
        let edit = VersionEdit {
            checkpoint: delete(),
            history_floor: Some(UNKNOWN_FLOOR),
            ..VersionEdit::default()
        };
        assert_eq!(Record::decode(&data, "v4").unwrap().body, Body::Edit(edit));
    }
}
