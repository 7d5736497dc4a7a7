//! `ContentDigest`: what a table holds, summed row by row as a builder encodes it, so two
//! encodings of the same entries (the hybrid store's SSTable and Parquet copies) can be
//! compared when they are written, without reading either back. Each row's crc32c (over the
//! key, sequence number, kind and value, with lengths) is added into a 64-bit sum; the sum
//! does not depend on how rows were cut into blocks or row groups, and one changed row
//! changes it. It guards against divergence, not against an adversary.

/// See the module's comment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentDigest {
    pub rows: u64,
    pub sum: u64,
}

impl ContentDigest {
    pub fn add(&mut self, key: &[u8], seq: u64, kind: u8, value: &[u8]) {
        let c = row_crc(0, key, seq, kind, value);
        self.rows += 1;
        self.sum = self.sum.wrapping_add(u64::from(c));
    }

    pub fn merge(&mut self, other: &ContentDigest) {
        self.rows += other.rows;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

/// `crc` extended by one row, `[key_len u32][key][seq u64][kind u8][value_len u32][value]`
/// (integers little-endian): the fixed-size fields between key and value in one call, as
/// per-call cost outweighs the bytes in rows this small.
pub(crate) fn row_crc(crc: u32, key: &[u8], seq: u64, kind: u8, value: &[u8]) -> u32 {
    let mut c = crc32c::crc32c_append(crc, &(key.len() as u32).to_le_bytes());
    c = crc32c::crc32c_append(c, key);
    let mut middle = [0u8; 13];
    middle[..8].copy_from_slice(&seq.to_le_bytes());
    middle[8] = kind;
    middle[9..].copy_from_slice(&(value.len() as u32).to_le_bytes());
    c = crc32c::crc32c_append(c, &middle);
    crc32c::crc32c_append(c, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_how_rows_are_grouped_but_not_what_they_hold() {
        let rows: Vec<(Vec<u8>, u64, u8, Vec<u8>)> = (0..10u64)
            .map(|i| (format!("k{i}").into_bytes(), i, 0, vec![i as u8; 3]))
            .collect();
        let mut whole = ContentDigest::default();
        rows.iter().for_each(|(k, s, t, v)| whole.add(k, *s, *t, v));
        let (mut a, mut b) = (ContentDigest::default(), ContentDigest::default());
        rows[..4]
            .iter()
            .for_each(|(k, s, t, v)| a.add(k, *s, *t, v));
        rows[4..]
            .iter()
            .for_each(|(k, s, t, v)| b.add(k, *s, *t, v));
        a.merge(&b);
        assert_eq!(a, whole);
        let mut changed = ContentDigest::default();
        for (i, (k, s, t, v)) in rows.iter().enumerate() {
            let mut v = v.clone();
            if i == 7 {
                v[1] ^= 1;
            }
            changed.add(k, *s, *t, &v);
        }
        assert_eq!(changed.rows, whole.rows);
        assert_ne!(changed.sum, whole.sum);
    }
}
