//! Page checksums. parquet-rs writes no page CRCs, and zstd stores incompressible data raw, so
//! a flipped bit in a page would decode as a different value. The writer sums each page's
//! stored bytes (header and body, as they lie in the file) with crc32c and keeps the sums in
//! the footer under `cairn.page_crc32c`; the reader checks every page it fetches. Lookups,
//! ranged scans and column reads fetch single pages, so the row-group sums
//! (`checksum.rs`), which need every row of a group, cannot cover them; these do.
//!
//! A page's bounds are not stored: they are the column chunk's start, each data page's offset
//! in the offset index, and the chunk's end, so the sums are one list per column chunk, in
//! row-group order. A chunk's dictionary page, if any, is the span before its first data page.

use parquet::arrow::arrow_writer::ArrowColumnChunk;
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use std::ops::Range;

pub const PAGE_CRC_KEY: &str = "cairn.page_crc32c";

/// The spans of a column chunk's pages, from the chunk's byte range and the file offsets of
/// its data pages.
pub fn spans(chunk: (u64, u64), data_pages: impl IntoIterator<Item = u64>) -> Vec<Range<u64>> {
    let (start, len) = chunk;
    let mut bounds = vec![start];
    bounds.extend(data_pages);
    bounds.push(start + len);
    bounds.dedup();
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// An encoded chunk's data page sizes, in order. Where the pages lie is known only once the
/// chunk is in the file: in memory a chunk holds its dictionary page after its data pages, in
/// the file before them.
pub fn data_page_sizes(chunk: &ArrowColumnChunk) -> Vec<u64> {
    chunk
        .close()
        .offset_index
        .as_ref()
        .map_or_else(Vec::new, |index| {
            index
                .page_locations()
                .iter()
                .map(|p| p.compressed_page_size.max(0) as u64)
                .collect()
        })
}

/// The page sums of each column chunk of `group`, just written: `sizes` holds each chunk's
/// data page sizes (`data_page_sizes`), `held` the file's bytes from offset `base` on.
pub fn of_row_group(
    group: &RowGroupMetaData,
    sizes: &[Vec<u64>],
    held: &[u8],
    base: u64,
) -> Result<Vec<Vec<u32>>, String> {
    group
        .columns()
        .iter()
        .zip(sizes)
        .map(|(column, sizes)| {
            let (start, len) = column.byte_range();
            // The dictionary page, if any, is what the data pages leave at the chunk's start.
            let dictionary = len.saturating_sub(sizes.iter().sum());
            let pages = sizes.iter().scan(start + dictionary, |at, size| {
                let page = *at;
                *at += size;
                Some(page)
            });
            spans((start, len), pages)
                .into_iter()
                .map(|span| {
                    let page = span
                        .start
                        .checked_sub(base)
                        .zip(span.end.checked_sub(base))
                        .and_then(|(a, b)| held.get(a as usize..b as usize))
                        .ok_or_else(|| format!("page {span:?} is not among the bytes written"))?;
                    Ok(crc32c::crc32c(page))
                })
                .collect()
        })
        .collect()
}

/// The footer's value: each column chunk's page sums, row group by row group.
pub fn encode(chunks: &[Vec<u32>]) -> String {
    chunks
        .iter()
        .map(|c| {
            c.iter()
                .map(|s| format!("{s:08x}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The pages of a file with their sums, in file order.
pub struct PageSums {
    pages: Vec<(Range<u64>, u32)>,
}

impl PageSums {
    /// The sums the footer holds, matched to the pages `md`'s offset index shows; `None` for
    /// a file written before pages were summed.
    pub fn of(md: &ParquetMetaData) -> Result<Option<PageSums>, String> {
        let Some(text) = md
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|e| e.key == PAGE_CRC_KEY))
            .and_then(|e| e.value.as_deref())
        else {
            return Ok(None);
        };
        if md.num_row_groups() == 0 {
            return Ok(Some(PageSums { pages: Vec::new() }));
        }
        let index = md
            .offset_index()
            .ok_or_else(|| format!("{PAGE_CRC_KEY} without an offset index"))?;
        let mut chunks = text.split(';');
        let mut pages = Vec::new();
        for (g, group) in md.row_groups().iter().enumerate() {
            for (c, column) in group.columns().iter().enumerate() {
                let locations = index
                    .get(g)
                    .and_then(|cols| cols.get(c))
                    .ok_or_else(|| format!("no offset index for column {c} of row group {g}"))?;
                let (start, len) = column.byte_range();
                let offsets: Vec<u64> = locations
                    .page_locations()
                    .iter()
                    .map(|p| p.offset.max(0) as u64)
                    .collect();
                if offsets.windows(2).any(|w| w[0] >= w[1])
                    || offsets.iter().any(|&o| o < start || o >= start + len)
                {
                    return Err(format!(
                        "the offset index of column {c} of row group {g} puts pages outside \
                         its chunk or out of order"
                    ));
                }
                let spans = spans((start, len), offsets);
                let sums: Vec<&str> = chunks
                    .next()
                    .ok_or_else(|| format!("{PAGE_CRC_KEY} ends before row group {g}"))?
                    .split(',')
                    .collect();
                if sums.len() != spans.len() {
                    return Err(format!(
                        "{PAGE_CRC_KEY}: {} sums for the {} pages of column {c} of row group {g}",
                        sums.len(),
                        spans.len()
                    ));
                }
                for (span, sum) in spans.into_iter().zip(sums) {
                    let sum =
                        u32::from_str_radix(sum, 16).map_err(|e| format!("{PAGE_CRC_KEY}: {e}"))?;
                    pages.push((span, sum));
                }
            }
        }
        if chunks.next().is_some() {
            return Err(format!("{PAGE_CRC_KEY} holds more chunks than the file"));
        }
        pages.sort_by_key(|(span, _)| span.start);
        if pages.windows(2).any(|w| w[0].0.end > w[1].0.start) {
            return Err(format!("{PAGE_CRC_KEY}: pages overlap"));
        }
        Ok(Some(PageSums { pages }))
    }

    /// The pages `range` touches.
    fn touched(&self, range: &Range<u64>) -> &[(Range<u64>, u32)] {
        let first = self.pages.partition_point(|(p, _)| p.end <= range.start);
        let end = first + self.pages[first..].partition_point(|(p, _)| p.start < range.end);
        &self.pages[first..end]
    }

    /// `range` grown to the whole pages it touches, so that every page read can be checked.
    pub fn widen(&self, range: Range<u64>) -> Range<u64> {
        let touched = self.touched(&range);
        match (touched.first(), touched.last()) {
            (Some(first), Some(last)) => range.start.min(first.0.start)..range.end.max(last.0.end),
            _ => range,
        }
    }

    /// Checks the pages that lie wholly in `bytes`, read from `at` on.
    pub fn check(&self, at: u64, bytes: &[u8]) -> Result<(), String> {
        let range = at..at + bytes.len() as u64;
        for (span, sum) in self.touched(&range) {
            if span.start < range.start || span.end > range.end {
                continue;
            }
            let page = &bytes[(span.start - at) as usize..(span.end - at) as usize];
            if crc32c::crc32c(page) != *sum {
                return Err(format!(
                    "the page at bytes {}..{} fails its checksum",
                    span.start, span.end
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_the_chunk_with_or_without_a_dictionary_page() {
        assert_eq!(
            spans((100, 50), [120, 130]),
            vec![100..120, 120..130, 130..150]
        );
        assert_eq!(spans((100, 50), [100, 130]), vec![100..130, 130..150]);
    }

    #[test]
    fn reads_widen_to_whole_pages_and_flips_inside_them_fail() {
        let data: Vec<u8> = (0..100u8).collect();
        let pages: Vec<(Range<u64>, u32)> = [10..30u64, 30..60, 60..90]
            .into_iter()
            .map(|r| {
                let sum = crc32c::crc32c(&data[r.start as usize..r.end as usize]);
                (r, sum)
            })
            .collect();
        let sums = PageSums { pages };
        assert_eq!(sums.widen(0..5), 0..5, "the footer's bytes are no page");
        assert_eq!(sums.widen(35..40), 30..60);
        assert_eq!(sums.widen(25..65), 10..90);
        assert_eq!(sums.widen(30..60), 30..60);
        assert!(sums.check(0, &data).is_ok());
        assert!(sums.check(30, &data[30..60]).is_ok());
        let mut bad = data.clone();
        bad[45] ^= 1;
        assert!(sums.check(0, &bad).is_err());
        assert!(sums.check(30, &bad[30..60]).is_err());
        assert!(sums.check(60, &bad[60..90]).is_ok(), "another page");
    }
}
