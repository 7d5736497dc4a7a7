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
/// (integers little-endian). A row that fits in `ROW_BUF` is laid out on the stack and summed
/// in one call: rows are small, and each call's setup costs more than their bytes (four calls
/// a row took an eighth of a flush).
pub(crate) fn row_crc(crc: u32, key: &[u8], seq: u64, kind: u8, value: &[u8]) -> u32 {
    let len = 4 + key.len() + 13 + value.len();
    if len <= ROW_BUF {
        let mut buf = [0u8; ROW_BUF];
        let (head, rest) = buf.split_at_mut(4);
        head.copy_from_slice(&(key.len() as u32).to_le_bytes());
        let (k, rest) = rest.split_at_mut(key.len());
        k.copy_from_slice(key);
        let (middle, rest) = rest.split_at_mut(13);
        fill_middle(middle, seq, kind, value.len());
        rest[..value.len()].copy_from_slice(value);
        return crc32c::crc32c_append(crc, &buf[..len]);
    }
    let mut c = crc32c::crc32c_append(crc, &(key.len() as u32).to_le_bytes());
    c = crc32c::crc32c_append(c, key);
    let mut middle = [0u8; 13];
    fill_middle(&mut middle, seq, kind, value.len());
    c = crc32c::crc32c_append(c, &middle);
    crc32c::crc32c_append(c, value)
}

/// Rows up to this size are summed in one call.
const ROW_BUF: usize = 256;

/// The fixed-size fields between a row's key and its value.
fn fill_middle(middle: &mut [u8], seq: u64, kind: u8, value_len: usize) {
    middle[..8].copy_from_slice(&seq.to_le_bytes());
    middle[8] = kind;
    middle[9..13].copy_from_slice(&(value_len as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small rows (summed from one stack buffer) and large ones (in four calls) are the crc of
    /// the row's layout written out.
    #[test]
    fn a_rows_crc_is_that_of_its_layout_at_every_size() {
        for (k, v) in [(0, 0), (3, 100), (13, 226), (13, 227), (40, 300), (300, 0)] {
            let (key, value) = (vec![7u8; k], vec![9u8; v]);
            let mut laid = (k as u32).to_le_bytes().to_vec();
            laid.extend_from_slice(&key);
            laid.extend_from_slice(&42u64.to_le_bytes());
            laid.push(1);
            laid.extend_from_slice(&(v as u32).to_le_bytes());
            laid.extend_from_slice(&value);
            assert_eq!(
                row_crc(5, &key, 42, 1, &value),
                crc32c::crc32c_append(5, &laid),
                "key {k}, value {v}"
            );
        }
    }

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
