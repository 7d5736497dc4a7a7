//! A bloom filter over user keys, so a lookup of an absent key usually skips the table without
//! reading a block. Probe positions come from one 64-bit SeaHash by double hashing; the exact
//! bit layout is in FORMAT.md.

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Bloom {
    /// Number of probes per key.
    pub k: u8,
    pub bits: Vec<u8>,
}

impl Bloom {
    pub fn build(hashes: &[u64], bits_per_key: u32) -> Bloom {
        let k = ((f64::from(bits_per_key) * 0.69).round() as u8).clamp(1, 30);
        let nbits = (hashes.len() as u64 * u64::from(bits_per_key)).max(64);
        let mut bits = vec![0u8; nbits.div_ceil(8) as usize];
        let nbits = bits.len() as u64 * 8;
        for &h in hashes {
            for pos in probes(h, k, nbits) {
                bits[(pos / 8) as usize] |= 1 << (pos % 8);
            }
        }
        Bloom { k, bits }
    }

    pub fn may_contain(&self, hash: u64) -> bool {
        let nbits = self.bits.len() as u64 * 8;
        if nbits == 0 {
            return true;
        }
        probes(hash, self.k, nbits).all(|pos| self.bits[(pos / 8) as usize] & (1 << (pos % 8)) != 0)
    }

    pub fn hash(key: &[u8]) -> u64 {
        seahash::hash(key)
    }
}

fn probes(hash: u64, k: u8, nbits: u64) -> impl Iterator<Item = u64> {
    let h1 = hash & 0xFFFF_FFFF;
    let h2 = hash >> 32;
    (0..u64::from(k)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % nbits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<u64> = (0..10_000u32)
            .map(|i| Bloom::hash(format!("k{i}").as_bytes()))
            .collect();
        let b = Bloom::build(&keys, 10);
        assert!(keys.iter().all(|&h| b.may_contain(h)));
        let fp = (0..10_000u32)
            .filter(|i| b.may_contain(Bloom::hash(format!("absent{i}").as_bytes())))
            .count();
        assert!(fp < 300, "false-positive rate {fp}/10000 is far above 1%");
    }
}
