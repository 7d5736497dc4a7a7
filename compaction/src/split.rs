//! Subcompactions: a large job cut by key range into jobs that run at once, on different
//! workers of a pool or different background threads, as RocksDB's `max_subcompactions` and
//! SlateDB's RFC-0028 do. Each part reads every input but keeps only its range, so the parts'
//! outputs never overlap and together are the job's.

use crate::CompactionJob;
use bytes::Bytes;

impl CompactionJob {
    /// This job as up to `n` jobs over consecutive key ranges, about even in input bytes,
    /// each with its own run of the output ids, in key order. The cuts fall at the inputs'
    /// smallest keys; a job with too few inputs, or ids, to cut stays whole.
    pub fn split(self, n: usize) -> Vec<CompactionJob> {
        let cuts = self.cuts(n);
        if cuts.is_empty() {
            return vec![self];
        }
        let parts = cuts.len() + 1;
        let ids = &self.output_ids;
        let mut bounds = Vec::with_capacity(parts + 1);
        bounds.push(self.lower.clone());
        bounds.extend(cuts.into_iter().map(Some));
        bounds.push(self.upper.clone());
        (0..parts)
            .map(|i| CompactionJob {
                output_ids: ids[i * ids.len() / parts..(i + 1) * ids.len() / parts].to_vec(),
                lower: bounds[i].clone(),
                upper: bounds[i + 1].clone(),
                ..self.clone()
            })
            .collect()
    }

    /// Up to `n - 1` keys to cut at, ascending, strictly inside the job's range, where the
    /// input bytes below reach the next even share. Bytes below a key are estimated per input
    /// by where the key falls between its smallest and largest key (read as numbers past
    /// their common prefix), and the keys tried are each input's ends and points evenly
    /// between them: overlapping inputs (L0 tables over the same keys) are cut inside.
    fn cuts(&self, n: usize) -> Vec<Bytes> {
        let n = n.min(self.output_ids.len());
        if n < 2 || self.inputs.is_empty() {
            return Vec::new();
        }
        let below = |key: &[u8]| -> f64 {
            self.inputs
                .iter()
                .map(|t| t.size.max(1) as f64 * Span::of(t).fraction_below(key))
                .sum()
        };
        let total = below(&[0xff; 64]).max(1.0);
        let mut tried: Vec<Bytes> = self
            .inputs
            .iter()
            .flat_map(|t| {
                let span = Span::of(t);
                (0..=POINTS).map(move |i| span.key_at(i as f64 / POINTS as f64))
            })
            .collect();
        tried.sort();
        tried.dedup();
        let range = self.key_range();
        let smallest = self.inputs.iter().map(|t| &t.smallest[..]).min();
        // Past the largest key of all, a cut would leave its last part nothing.
        let largest = self.inputs.iter().map(|t| &t.largest[..]).max();
        let mut cuts: Vec<Bytes> = Vec::new();
        for key in tried {
            if cuts.len() + 1 >= n {
                break;
            }
            let share = total * (cuts.len() + 1) as f64 / n as f64;
            if below(&key) >= share
                && smallest.is_some_and(|s| &key[..] > s)
                && largest.is_some_and(|l| &key[..] <= l)
                && range.contains(&key)
                && self.lower.as_ref() != Some(&key)
            {
                cuts.push(key);
            }
        }
        cuts
    }
}

/// Keys tried between each input's ends.
const POINTS: usize = 16;

/// An input's keys as numbers: the 8 bytes after the common prefix of its smallest and
/// largest key, big-endian, so that a key between them has a place in between.
struct Span<'a> {
    smallest: &'a [u8],
    largest: &'a [u8],
    prefix: usize,
    lo: u64,
    hi: u64,
}

impl<'a> Span<'a> {
    fn of(t: &'a cairn_common::TableMeta) -> Self {
        let prefix = t
            .smallest
            .iter()
            .zip(&t.largest)
            .take_while(|(a, b)| a == b)
            .count();
        Span {
            smallest: &t.smallest,
            largest: &t.largest,
            prefix,
            lo: number(&t.smallest, prefix),
            hi: number(&t.largest, prefix),
        }
    }

    /// The share of the input's keys below `key`.
    fn fraction_below(&self, key: &[u8]) -> f64 {
        if key <= self.smallest {
            0.0
        } else if key > self.largest {
            1.0
        } else {
            let x = number(key, self.prefix).clamp(self.lo, self.hi);
            (x - self.lo) as f64 / (self.hi - self.lo).max(1) as f64
        }
    }

    /// The key at share `f` of the way from the smallest key to the largest.
    fn key_at(&self, f: f64) -> Bytes {
        let x = self.lo + ((self.hi - self.lo) as f64 * f) as u64;
        let mut key = self.smallest[..self.prefix].to_vec();
        key.extend_from_slice(&x.to_be_bytes());
        while key.len() > self.prefix + 1 && key.last() == Some(&0) {
            key.pop();
        }
        Bytes::from(key)
    }
}

fn number(key: &[u8], prefix: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in key.iter().skip(prefix).take(8).enumerate() {
        b[i] = *x;
    }
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::TableMeta;

    fn table(id: u64, smallest: &str, largest: &str, size: u64) -> TableMeta {
        TableMeta {
            id,
            smallest: smallest.as_bytes().to_vec(),
            largest: largest.as_bytes().to_vec(),
            min_seq: 1,
            max_seq: 1,
            entries: 1,
            size,
        }
    }

    fn job(inputs: Vec<TableMeta>) -> CompactionJob {
        CompactionJob {
            inputs,
            output_ids: (100..160).collect(),
            ..CompactionJob::default()
        }
    }

    fn bounds(parts: &[CompactionJob]) -> Vec<(Option<Bytes>, Option<Bytes>)> {
        parts
            .iter()
            .map(|p| (p.lower.clone(), p.upper.clone()))
            .collect()
    }

    /// Consecutive ranges from the job's lower bound to its upper one, each non-empty.
    fn assert_consecutive(parts: &[CompactionJob], lower: Option<&str>, upper: Option<&str>) {
        let b = bounds(parts);
        assert_eq!(b.first().unwrap().0.as_deref(), lower.map(str::as_bytes));
        assert_eq!(b.last().unwrap().1.as_deref(), upper.map(str::as_bytes));
        for w in b.windows(2) {
            assert_eq!(w[0].1, w[1].0, "{b:?}");
        }
        for (lo, hi) in &b {
            if let (Some(lo), Some(hi)) = (lo, hi) {
                assert!(lo < hi, "{b:?}");
            }
        }
    }

    #[test]
    fn a_job_is_cut_into_even_parts_with_their_own_ids() {
        let inputs = vec![
            table(1, "a", "c", 10),
            table(2, "d", "f", 10),
            table(3, "g", "i", 10),
            table(4, "j", "l", 10),
        ];
        let parts = job(inputs).split(2);
        assert_eq!(parts.len(), 2);
        assert_consecutive(&parts, None, None);
        let cut = parts[0].upper.clone().unwrap();
        assert!(
            (&b"f"[..]..=&b"g"[..]).contains(&&cut[..]),
            "half the bytes lie below {cut:?}"
        );
        let ids: Vec<u64> = parts.iter().flat_map(|p| p.output_ids.clone()).collect();
        assert_eq!(
            ids,
            (100..160).collect::<Vec<_>>(),
            "every id once, in order"
        );
        assert!(parts.iter().all(|p| p.output_ids.len() == 30));
        assert!(
            parts.iter().all(|p| p.inputs.len() == 4),
            "each reads every input"
        );
    }

    /// L0 tables over the same keys are cut inside them, not at their ends.
    #[test]
    fn overlapping_inputs_are_cut_between_their_ends() {
        let parts = job(vec![
            table(1, "k0000", "k0299", 10),
            table(2, "k0001", "k0298", 10),
        ])
        .split(2);
        assert_eq!(parts.len(), 2);
        let cut = parts[0].upper.clone().unwrap();
        assert!(cut > "k01" && cut < "k02", "{cut:?}");
    }

    #[test]
    fn a_job_that_cannot_be_cut_stays_whole() {
        let one_key = job(vec![table(1, "k", "k", 100), table(2, "k", "k", 100)]);
        assert_eq!(one_key.clone().split(4), vec![one_key]);
        let whole = job(vec![table(1, "a", "m", 10), table(2, "n", "z", 10)]);
        assert_eq!(whole.clone().split(1), vec![whole.clone()]);
        let mut one_id = whole;
        one_id.output_ids = vec![7];
        assert_eq!(one_id.clone().split(3), vec![one_id]);
    }

    /// A part cut again stays inside its own range.
    #[test]
    fn cuts_fall_inside_the_jobs_range() {
        let mut part = job(vec![
            table(1, "a", "c", 10),
            table(2, "d", "f", 10),
            table(3, "g", "i", 10),
        ]);
        part.lower = Some(Bytes::from("e"));
        part.upper = Some(Bytes::from("h"));
        let parts = part.split(3);
        assert!(parts.len() >= 2, "{:?}", bounds(&parts));
        assert_consecutive(&parts, Some("e"), Some("h"));
    }
}
