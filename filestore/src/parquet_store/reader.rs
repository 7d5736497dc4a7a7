//! Byte-range reads of one Parquet object for the parquet crate's async reader: each range is
//! a ranged GET (coalesced by object_store), and the footer is fetched with one read near the
//! end of the object. The size comes from a HEAD at open, not from the table's metadata: a
//! hybrid store opens its secondary copy with the primary's metadata, whose `size` is the
//! primary file's (and not every S3 server honours suffix ranges). Where the file's pages are
//! summed (`page_sums.rs`), each read is widened to whole pages and every page is checked
//! before the parquet crate decodes it.

use super::page_sums::PageSums;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::ops::Range;
use std::sync::Arc;

/// Footer bytes fetched in the first read; most Cairn footers (with page index) fit.
const FOOTER_HINT: usize = 64 << 10;

pub(crate) struct ObjectReader {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    pub size: u64,
    /// The file's page sums; `None` at open (the footer is not read yet) and for files
    /// written before pages were summed.
    pub pages: Option<Arc<PageSums>>,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl ObjectReader {
    /// Reads `ranges`, each widened to the whole pages it touches and checked.
    async fn read(&self, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>> {
        let Some(pages) = &self.pages else {
            return self
                .store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external);
        };
        let wide: Vec<Range<u64>> = ranges.iter().map(|r| pages.widen(r.clone())).collect();
        let got = self
            .store
            .get_ranges(&self.path, &wide)
            .await
            .map_err(external)?;
        let mut out = Vec::with_capacity(ranges.len());
        for ((asked, read), bytes) in ranges.into_iter().zip(wide).zip(got) {
            pages.check(read.start, &bytes).map_err(|detail| {
                ParquetError::External(Box::new(cairn_common::Error::corruption(
                    self.path.as_ref(),
                    detail,
                )))
            })?;
            let from = (asked.start - read.start) as usize;
            let to = from + (asked.end - asked.start) as usize;
            if to > bytes.len() {
                return Err(ParquetError::EOF(format!(
                    "{} bytes where {to} were asked for",
                    bytes.len()
                )));
            }
            out.push(bytes.slice(from..to));
        }
        Ok(out)
    }
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        async move {
            let mut got = self.read(vec![range]).await?;
            got.pop()
                .ok_or_else(|| ParquetError::General("no bytes read".into()))
        }
        .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move { self.read(ranges).await }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(FOOTER_HINT))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
