//! The sizes a write may have, checked at the door (`Db::write`, `Db::begin_import`), so that
//! everything behind it holds: a batch is one journal record (at most 256 MiB) and, over gRPC,
//! one message (64 MiB by default) together with the 1 MiB of other records it may travel
//! with; SSTable and Parquet builders hold one value whole.

use crate::{Error, Result, WriteBatch};

/// The longest key: 64 KiB.
pub const MAX_KEY_BYTES: usize = 64 << 10;
/// The longest value: 16 MiB.
pub const MAX_VALUE_BYTES: usize = 16 << 20;
/// The most key and value bytes one batch may hold: 32 MiB.
pub const MAX_BATCH_BYTES: usize = 32 << 20;

/// Refuses a key or value over its limit, saying which and by how much.
pub fn check_pair(key: &[u8], value: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a key of {} bytes is over the limit of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the value of a {}-byte key is {} bytes, over the limit of {MAX_VALUE_BYTES}",
            key.len(),
            value.len()
        )));
    }
    Ok(())
}

/// Refuses a batch with a key or value over its limit, or over `MAX_BATCH_BYTES` in all.
pub fn check_batch(batch: &WriteBatch) -> Result<()> {
    if batch.payload_bytes() > MAX_BATCH_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a batch of {} bytes of keys and values is over the limit of {MAX_BATCH_BYTES}: split it",
            batch.payload_bytes()
        )));
    }
    batch.ops().iter().try_for_each(|op| {
        if op.kind == crate::EntryKind::RangeDelete {
            // The end is a key too.
            check_pair(&op.value, b"")?;
            crate::check_bounds(&op.key, &op.value)?;
        }
        if op.kind == crate::EntryKind::Expiring && op.value.len() < 8 {
            return Err(Error::InvalidArgument(
                "an expiring put's value must start with its 8-byte expiry".into(),
            ));
        }
        check_pair(&op.key, &op.value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_errors_say_which() {
        let key = vec![0u8; MAX_KEY_BYTES];
        assert!(check_pair(&key, b"").is_ok());
        let e = check_pair(&[0u8; MAX_KEY_BYTES + 1], b"").unwrap_err();
        assert!(e.to_string().contains("key of 65537 bytes"), "{e}");
        let value = vec![0u8; MAX_VALUE_BYTES + 1];
        assert!(check_pair(b"k", &value[1..]).is_ok());
        assert!(check_pair(b"k", &value).is_err());
        // Keys count too: two one-byte keys and their values make exactly the limit.
        let mut b = WriteBatch::new();
        b.put(vec![1u8], value[..MAX_VALUE_BYTES - 1].to_vec());
        b.put(vec![2u8], value[..MAX_VALUE_BYTES - 1].to_vec());
        assert_eq!(b.payload_bytes(), MAX_BATCH_BYTES);
        assert!(check_batch(&b).is_ok());
        b.delete(vec![3u8]);
        assert!(
            check_batch(&b)
                .unwrap_err()
                .to_string()
                .contains("split it")
        );
    }
}
