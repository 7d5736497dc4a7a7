//! Split and merge, as map edits: asking for one puts a `Plan` on the shard (reserving the
//! new shards' ids); the shard's owner carries it out (`crate::node`) and ends it with the
//! edit that replaces the old shards by the new ones. Each edit checks the map is still as
//! the plan found it, so a retry after a failover, or a second finisher, changes nothing.

use super::{ClusterMap, MapStore, Plan, ShardEntry, edit, key_text};
use bytes::Bytes;
use cairn_common::{Error, Result};

fn no_shard(m: &ClusterMap, id: u64) -> Error {
    Error::InvalidArgument(format!(
        "no shard {id} in the cluster map (shards: {})",
        m.shards
            .iter()
            .map(|s| s.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Asks for shard `id` to split at `at`, a key strictly inside it. Answers the map with the
/// plan (the same plan, if the same split was asked for already).
pub async fn request_split(store: &dyn MapStore, id: u64, at: Bytes) -> Result<ClusterMap> {
    edit(store, |m| {
        let s = m.shard(id).ok_or_else(|| no_shard(m, id))?;
        match &s.plan {
            Some(Plan::Split { at: planned, .. }) if *planned == at => return Ok(None),
            Some(p) => {
                return Err(Error::InvalidArgument(format!(
                    "shard {id} has a plan already: {p:?}"
                )));
            }
            None => {}
        }
        if !s.contains(&at) || at == s.start {
            return Err(Error::InvalidArgument(format!(
                "shard {id} holds {}: a split key must be inside it, after its first key (got {})",
                s.range_text(),
                key_text(&at)
            )));
        }
        if merging_with(m, id).is_some() {
            return Err(Error::InvalidArgument(format!(
                "shard {id} is being merged into the shard before it"
            )));
        }
        let mut next = m.clone();
        let (left, right) = (next.next_shard, next.next_shard + 1);
        next.next_shard += 2;
        if let Some(s) = next.shards.iter_mut().find(|s| s.id == id) {
            s.plan = Some(Plan::Split {
                at: at.clone(),
                left,
                right,
            });
        }
        Ok(Some(next))
    })
    .await
}

/// Asks for shards `a` and `b`, neighbours in either order, to merge into one.
pub async fn request_merge(store: &dyn MapStore, a: u64, b: u64) -> Result<ClusterMap> {
    edit(store, |m| {
        let pa = m.shards.iter().position(|s| s.id == a);
        let pb = m.shards.iter().position(|s| s.id == b);
        let (Some(pa), Some(pb)) = (pa, pb) else {
            return Err(no_shard(m, if pa.is_none() { a } else { b }));
        };
        let (l, r) = (pa.min(pb), pa.max(pb));
        if r != l + 1 {
            return Err(Error::InvalidArgument(format!(
                "shards {a} and {b} are not neighbours: only adjacent key ranges merge"
            )));
        }
        let right = m.shards[r].id;
        match (&m.shards[l].plan, &m.shards[r].plan) {
            (Some(Plan::Merge { right: planned, .. }), None) if *planned == right => {
                return Ok(None);
            }
            (None, None) if merging_with(m, m.shards[l].id).is_none() => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "shard {} or {right} has a plan already",
                    m.shards[l].id
                )));
            }
        }
        let mut next = m.clone();
        let into = next.next_shard;
        next.next_shard += 1;
        next.shards[l].plan = Some(Plan::Merge { right, into });
        Ok(Some(next))
    })
    .await
}

/// The shard merging shard `id` into itself, if one is.
pub fn merging_with(m: &ClusterMap, id: u64) -> Option<&ShardEntry> {
    m.shards
        .iter()
        .find(|s| matches!(s.plan, Some(Plan::Merge { right, .. }) if right == id))
}

/// Replaces shard `parent` (as `owner` holds it at `generation`) by the two shards its plan
/// names, owned by `owner` too. `false` if the map no longer holds that plan so.
pub async fn finish_split(store: &dyn MapStore, parent: &ShardEntry, owner: &str) -> Result<bool> {
    let Some(Plan::Split { at, left, right }) = parent.plan.clone() else {
        return Ok(false);
    };
    let mut done = false;
    edit(store, |m| {
        let Some(i) = m.shards.iter().position(|s| s.id == parent.id) else {
            return Ok(None);
        };
        let s = &m.shards[i];
        if s.owner.as_deref() != Some(owner)
            || s.generation != parent.generation
            || s.plan != parent.plan
        {
            return Ok(None);
        }
        let child = |id, start, end| ShardEntry::fresh(id, start, end, Some(owner.to_string()));
        let mut next = m.clone();
        next.shards.splice(
            i..=i,
            [
                child(left, s.start.clone(), Some(at.clone())),
                child(right, at.clone(), s.end.clone()),
            ],
        );
        done = true;
        Ok(Some(next))
    })
    .await?;
    Ok(done)
}

/// Replaces shard `left` and the shard after it, both held by `owner` as they are in
/// `left_was` and `right_was`, by the shard the plan names, owned by `owner`.
pub async fn finish_merge(
    store: &dyn MapStore,
    left_was: &ShardEntry,
    right_was: &ShardEntry,
    owner: &str,
) -> Result<bool> {
    let Some(Plan::Merge { into, .. }) = left_was.plan else {
        return Ok(false);
    };
    let mut done = false;
    edit(store, |m| {
        let Some(i) = m.shards.iter().position(|s| s.id == left_was.id) else {
            return Ok(None);
        };
        if m.shards.get(i) != Some(left_was) || m.shards.get(i + 1) != Some(right_was) {
            return Ok(None);
        }
        let merged = ShardEntry::fresh(
            into,
            left_was.start.clone(),
            right_was.end.clone(),
            Some(owner.to_string()),
        );
        let mut next = m.clone();
        next.shards.splice(i..=i + 1, [merged]);
        done = true;
        Ok(Some(next))
    })
    .await?;
    Ok(done)
}

/// A key as `key_text` writes it: printable ASCII as is, `\xNN` for any byte, `\\` for a
/// backslash.
pub fn parse_key(text: &str) -> Result<Bytes> {
    let bad = || {
        Error::InvalidArgument(format!(
            "{text:?} is not a key: write bytes as text, with \\xNN for any byte and \\\\ for a backslash"
        ))
    };
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_as_written() {
        for key in [&b"user42"[..], b"\x00\x01a\\b\xff", b""] {
            assert_eq!(parse_key(&key_text(key)).unwrap(), key);
        }
        assert!(parse_key("\\x4").is_err() && parse_key("\\q").is_err());
    }
}
