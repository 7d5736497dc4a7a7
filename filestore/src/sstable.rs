//! The SSTable store: one file per table in a local directory, written through a temporary
//! name and renamed into place once synced, read with positioned reads through the block cache.

use crate::bloom::Bloom;
use crate::cache::{Block, BlockCache};
use crate::format::{self, Footer, Handle, IndexEntry};
use crate::manifest_store::{DirManifestStore, MANIFEST_DIR, ManifestStore};
use crate::tracker::MetaTracker;
use crate::{BlockLayout, ContentDigest, Storage, Table, TableBuilder, find_in_block};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{
    BoxStream, Entry, EntryIter, Error, IoContext, KeyRange, RangeTombstone, Result, SeqNo,
    TableId, TableMeta,
};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// How a table's blocks are compressed. Written in configuration as `none`, `lz4`, `zstd`
/// (level 3) or `zstd:N` (N from 1, fastest, to 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    #[default]
    None,
    Lz4,
    Zstd(i32),
}

impl Compression {
    pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

    fn codec(self) -> Result<format::BlockCodec> {
        Ok(match self {
            Compression::None => format::BlockCodec::None,
            Compression::Lz4 => format::BlockCodec::Lz4,
            Compression::Zstd(level) => {
                format::BlockCodec::zstd(level).map_err(Error::InvalidArgument)?
            }
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let level = |l: &str| match l.parse::<i32>() {
            Ok(l) if (1..=22).contains(&l) => Ok(l),
            _ => Err(format!("zstd level {l:?}: expected 1 to 22")),
        };
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd(Self::ZSTD_DEFAULT_LEVEL)),
            _ => match s.strip_prefix("zstd:") {
                Some(l) => level(l).map(Compression::Zstd),
                None => Err(format!(
                    "compression {s:?}: expected none, lz4, zstd or zstd:LEVEL"
                )),
            },
        }
    }
}

impl TryFrom<String> for Compression {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.to_string()
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Lz4 => f.write_str("lz4"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FilterKind {
    #[default]
    Bloom,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SstOptions {
    pub dir: PathBuf,
    /// Target size of a data block before compression.
    pub block_bytes: usize,
    pub compression: Compression,
    /// The compression of tables written for each level of the tree, from level 0; levels
    /// past the list take its last entry. Empty: every level takes `compression`. Lower
    /// levels hold most of the bytes and are rewritten least often, so a heavier codec there
    /// saves the most space for the least CPU (as RocksDB's `compression_per_level`).
    pub compression_per_level: Vec<Compression>,
    pub filter: FilterKind,
    pub bloom_bits_per_key: u32,
    /// Bytes of decoded blocks kept in memory; 0 disables the cache.
    pub block_cache_bytes: u64,
}

impl SstOptions {
    /// The compression of a table written for `level`.
    pub fn compression_at(&self, level: u32) -> Compression {
        let last = self.compression_per_level.len().saturating_sub(1);
        self.compression_per_level
            .get((level as usize).min(last))
            .copied()
            .unwrap_or(self.compression)
    }

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SstOptions {
            dir: dir.into(),
            block_bytes: 4096,
            compression: Compression::None,
            compression_per_level: Vec::new(),
            filter: FilterKind::Bloom,
            bloom_bits_per_key: 10,
            block_cache_bytes: 64 << 20,
        }
    }
}

pub struct SstStorage {
    opts: SstOptions,
    cache: BlockCache,
    manifests: Arc<DirManifestStore>,
}

const SUFFIX: &str = "sst";
const TMP_SUFFIX: &str = "sst.tmp";

impl SstStorage {
    /// Opens the directory, creating it, and removes temporary files of builds that never
    /// finished (a crash mid-flush leaves one). A build holds an exclusive lock on its file
    /// while it lives, and the lock goes with its process: a file still locked is another
    /// process's build in progress (a compaction node on the same directory), and stays.
    pub fn open(opts: SstOptions) -> Result<Self> {
        cairn_common::durable::create_dir_durably(&opts.dir)?;
        let manifests = Arc::new(DirManifestStore::open(opts.dir.join(MANIFEST_DIR))?);
        for ent in std::fs::read_dir(&opts.dir).at(&opts.dir)? {
            let path = ent.at(&opts.dir)?.path();
            if !path.to_str().is_some_and(|p| p.ends_with(TMP_SUFFIX)) {
                continue;
            }
            let file = match File::open(&path) {
                Ok(f) => f,
                // Finished or abandoned since the listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            match file.try_lock() {
                Ok(()) => match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, e)),
                },
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
        let cache = BlockCache::new(opts.block_cache_bytes);
        Ok(SstStorage {
            opts,
            cache,
            manifests,
        })
    }

    pub fn path_of(&self, id: TableId) -> PathBuf {
        self.opts.dir.join(format!("{id:020}.{SUFFIX}"))
    }

    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }
}

#[async_trait]
impl Storage for SstStorage {
    async fn create_table(&self, id: TableId, level: u32) -> Result<Box<dyn TableBuilder>> {
        let codec = self.opts.compression_at(level).codec()?;
        let path = self.path_of(id);
        let tmp = self.opts.dir.join(format!("{id:020}.{TMP_SUFFIX}"));
        let create = || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
        };
        let file = loop {
            let file = match create() {
                // A store reached by reference is made by its first table.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    cairn_common::durable::create_dir_durably(&self.opts.dir)?;
                    create()
                }
                file => file,
            }
            .at(&tmp)?;
            // Held until the file is closed: tells another store's sweep the build is alive.
            file.lock().at(&tmp)?;
            // A sweep may have taken the file between its creation and the lock (it was not
            // locked yet): then the name is gone or someone else's, and the build starts over.
            if still_named(&file, &tmp)? {
                break file;
            }
        };
        Ok(Box::new(SstBuilder {
            id,
            path,
            tmp,
            out: BufWriter::with_capacity(256 << 10, file),
            opts: self.opts.clone(),
            codec,
            offset: 0,
            block: format::DataBlockWriter::default(),
            index: Vec::new(),
            hashes: Vec::new(),
            scratch: Vec::new(),
            tracker: MetaTracker::new(id),
            finished: false,
            digest: None,
        }))
    }

    async fn open_table(&self, meta: &TableMeta) -> Result<Arc<dyn Table>> {
        Ok(Arc::new(SstTable::open(
            self.path_of(meta.id),
            meta.clone(),
            self.cache.clone(),
        )?))
    }

    async fn delete_table(&self, id: TableId) -> Result<()> {
        let path = self.path_of(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    async fn list_tables(&self) -> Result<Vec<TableId>> {
        let mut ids = Vec::new();
        // A store reached by reference may not exist yet (where a clone goes).
        let listing = match std::fs::read_dir(&self.opts.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
            listing => listing.at(&self.opts.dir)?,
        };
        for ent in listing {
            let path = ent.at(&self.opts.dir)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(id) = name.strip_suffix(".sst").and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn manifests(&self) -> Arc<dyn ManifestStore> {
        self.manifests.clone()
    }

    fn reference(&self) -> Option<String> {
        let dir = std::path::absolute(&self.opts.dir).ok()?;
        dir.to_str().map(str::to_string)
    }

    /// The directory `reference` names, with this store's options and block cache (table ids
    /// of a parent and its clone never meet: a clone numbers its own tables after its
    /// parent's). Nothing is swept or created there: it is another database's directory,
    /// or one a clone is about to be made in.
    fn open_reference(&self, reference: &str) -> Result<Arc<dyn Storage>> {
        let dir = PathBuf::from(reference);
        let manifests = Arc::new(DirManifestStore::at(dir.join(MANIFEST_DIR)));
        Ok(Arc::new(SstStorage {
            opts: SstOptions {
                dir,
                ..self.opts.clone()
            },
            cache: self.cache.clone(),
            manifests,
        }))
    }
}

/// Whether `path` still names the open `file`.
fn still_named(file: &File, path: &std::path::Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata().at(path)?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

struct SstBuilder {
    id: TableId,
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    opts: SstOptions,
    codec: format::BlockCodec,
    offset: u64,
    block: format::DataBlockWriter,
    index: Vec<IndexEntry>,
    hashes: Vec<u64>,
    scratch: Vec<u8>,
    tracker: MetaTracker,
    finished: bool,
    /// Of the rows written into blocks, and the range tombstones, once asked for.
    digest: Option<ContentDigest>,
}

impl SstBuilder {
    fn write_framed(&mut self, payload: &[u8]) -> Result<Handle> {
        self.scratch.clear();
        format::frame_block(payload, &mut self.codec, &mut self.scratch);
        self.out.write_all(&self.scratch).at(&self.tmp)?;
        let h = Handle {
            offset: self.offset,
            len: self.scratch.len() as u64,
        };
        self.offset += h.len;
        Ok(h)
    }

    fn cut_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        // The block's entries are the versions seen since the last cut, so its last one is
        // the tracker's last version.
        let (last_key, last_seq) = match self.tracker.last_point() {
            Some((k, s)) => (k.to_vec(), s),
            None => return Err(self.corrupt_input("a block without a version".into())),
        };
        // Taken out while it is framed from: the writer is put back, its buffer kept.
        let mut block = std::mem::take(&mut self.block);
        let framed = match block.finish() {
            Ok(payload) => self.write_framed(payload),
            Err(e) => Err(self.corrupt_input(e)),
        };
        block.clear();
        self.block = block;
        let h = framed?;
        self.index.push(IndexEntry {
            last_key,
            last_seq,
            offset: h.offset,
            len: h.len,
        });
        Ok(())
    }

    fn corrupt_input(&self, e: String) -> Error {
        Error::component(format!("table {} ({})", self.id, self.tmp.display()), e)
    }
}

#[async_trait]
impl TableBuilder for SstBuilder {
    async fn add(&mut self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            let new_key = self.tracker.observe(e)?;
            if e.is_range_delete() {
                // Kept by the tracker, written in the properties block.
                if let Some(d) = &mut self.digest {
                    d.add(&e.key, e.seq, e.kind.as_u8(), &e.value);
                }
                continue;
            }
            if new_key && self.opts.filter == FilterKind::Bloom {
                self.hashes.push(Bloom::hash(&e.key));
            }
            self.block.add(e).map_err(|err| self.corrupt_input(err))?;
            if let Some(d) = &mut self.digest {
                d.add(&e.key, e.seq, e.kind.as_u8(), &e.value);
            }
            if self.block.len() >= self.opts.block_bytes {
                self.cut_block()?;
            }
        }
        Ok(())
    }

    fn estimated_size(&self) -> u64 {
        self.offset + self.block.len() as u64
    }

    fn keep_digest(&mut self) {
        self.digest.get_or_insert_default();
    }

    async fn finish(self: Box<Self>) -> Result<TableMeta> {
        Ok(self.finish_with_digest().await?.0)
    }

    async fn finish_with_digest(mut self: Box<Self>) -> Result<(TableMeta, Option<ContentDigest>)> {
        let mut meta = self.tracker.seal()?;
        self.cut_block()?;
        let filter = match self.opts.filter {
            FilterKind::Bloom => Bloom::build(&self.hashes, self.opts.bloom_bits_per_key),
            FilterKind::None => Bloom {
                k: 0,
                bits: Vec::new(),
            },
        };
        let filter = format::encode(&filter).map_err(|e| self.corrupt_input(e))?;
        let filter = self.write_framed(&filter)?;
        let index = format::encode(&self.index).map_err(|e| self.corrupt_input(e))?;
        let index = self.write_framed(&index)?;
        let ranges = format::raw_range_deletes(self.tracker.ranges());
        let props = format::encode(&(&meta, &ranges)).map_err(|e| self.corrupt_input(e))?;
        let props = self.write_framed(&props)?;
        let footer = Footer {
            filter,
            index,
            props,
            range_deletes: ranges.len() as u32,
        }
        .encode();
        self.out.write_all(&footer).at(&self.tmp)?;
        self.offset += footer.len() as u64;
        self.out.flush().at(&self.tmp)?;
        // The fsyncs run off the async worker: on a busy disk they take hundreds of
        // milliseconds, and every task sharing the worker would wait with them.
        let file = self.out.get_ref().try_clone().at(&self.tmp)?;
        let (tmp, path) = (self.tmp.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            file.sync_all().at(&tmp)?;
            cairn_common::durable::rename_durably(&tmp, &path)
        })
        .await
        .map_err(|e| Error::component(format!("sealing {}", self.tmp.display()), e))??;
        self.finished = true;
        meta.size = self.offset;
        metrics::counter!("cairn_storage_written_bytes_total", "store" => "sstable")
            .increment(meta.size);
        Ok((meta, self.digest))
    }

    async fn abandon(mut self: Box<Self>) -> Result<()> {
        self.finished = true;
        match std::fs::remove_file(&self.tmp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.tmp, e)),
        }
    }
}

impl Drop for SstBuilder {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// An open SSTable: index and filter pinned in memory, data blocks through the shared cache.
pub struct SstTable {
    inner: Arc<Inner>,
}

struct Inner {
    meta: TableMeta,
    ranges: Vec<RangeTombstone>,
    path: PathBuf,
    file: File,
    index: Vec<IndexEntry>,
    layout: Arc<BlockLayout>,
    cache: BlockCache,
}

impl SstTable {
    fn cursor(&self, range: &KeyRange) -> ScanCursor {
        let (next_block, seek) = match &range.start {
            Bound::Included(k) | Bound::Excluded(k) => {
                (self.inner.layout.seek(k, SeqNo::MAX), Some(k.clone()))
            }
            Bound::Unbounded => (0, None),
        };
        ScanCursor {
            inner: self.inner.clone(),
            range: range.clone(),
            next_block,
            seek,
            block: None,
            pos: 0,
            started: false,
        }
    }

    pub(crate) fn open(path: PathBuf, meta: TableMeta, cache: BlockCache) -> Result<Self> {
        let file = File::open(&path).at(&path)?;
        let len = file.metadata().at(&path)?.len();
        let corrupt =
            |d: String| Error::corruption(format!("table {} ({})", meta.id, path.display()), d);
        if len < format::FOOTER_LEN as u64 {
            return Err(corrupt(format!(
                "file is {len} bytes, shorter than the footer"
            )));
        }
        if meta.size != 0 && len != meta.size {
            return Err(corrupt(format!(
                "file is {len} bytes, the manifest says {}",
                meta.size
            )));
        }
        let mut footer = [0u8; format::FOOTER_LEN];
        file.read_exact_at(&mut footer, len - format::FOOTER_LEN as u64)
            .at(&path)?;
        let footer = Footer::decode(&footer).map_err(corrupt)?;
        let read = |h: Handle| -> Result<Bytes> {
            if h.offset.saturating_add(h.len) > len - format::FOOTER_LEN as u64 {
                return Err(corrupt(format!("block handle {h:?} points past the data")));
            }
            let mut buf = vec![0u8; h.len as usize];
            file.read_exact_at(&mut buf, h.offset).at(&path)?;
            format::unframe_block(buf)
                .map_err(|d| corrupt(format!("block at offset {}: {d}", h.offset)))
        };
        let index: Vec<IndexEntry> =
            format::decode(&read(footer.index)?).map_err(|d| corrupt(format!("index: {d}")))?;
        let filter: Bloom =
            format::decode(&read(footer.filter)?).map_err(|d| corrupt(format!("filter: {d}")))?;
        // Only a table that has range tombstones reads its properties at open.
        let ranges = if footer.range_deletes == 0 {
            Vec::new()
        } else {
            format::decode_range_deletes(&read(footer.props)?, footer.range_deletes)
                .map_err(|d| corrupt(format!("properties: {d}")))?
        };
        // One buffer for all the index's keys, so a lookup's search reads neighbouring memory.
        let mut all =
            bytes::BytesMut::with_capacity(index.iter().map(|ie| ie.last_key.len()).sum());
        for ie in &index {
            all.extend_from_slice(&ie.last_key);
        }
        let all = all.freeze();
        let mut at = 0;
        let last_keys = index
            .iter()
            .map(|ie| {
                let k = all.slice(at..at + ie.last_key.len());
                at += ie.last_key.len();
                (k, ie.last_seq)
            })
            .collect();
        let layout = Arc::new(BlockLayout::new(last_keys, filter));
        Ok(SstTable {
            inner: Arc::new(Inner {
                meta,
                ranges,
                path,
                file,
                index,
                layout,
                cache,
            }),
        })
    }
}

impl Inner {
    fn corrupt(&self, detail: String) -> Error {
        Error::corruption(
            format!("table {} ({})", self.meta.id, self.path.display()),
            detail,
        )
    }

    /// Reads, checks and decodes data block `i`, through the cache. Local reads are short
    /// positioned reads, mostly from the page cache: cheaper inline than a hop to a blocking
    /// thread.
    fn block(&self, i: usize) -> Result<Block> {
        let h = &self.index[i];
        if let Some(b) = self.cache.get(self.meta.id, h.offset) {
            return Ok(b);
        }
        let mut buf = vec![0u8; h.len as usize];
        self.file.read_exact_at(&mut buf, h.offset).at(&self.path)?;
        let payload = format::unframe_block(buf)
            .map_err(|d| self.corrupt(format!("data block at offset {}: {d}", h.offset)))?;
        let block = format::decode_data_block(payload)
            .map_err(|d| self.corrupt(format!("data block at offset {}: {d}", h.offset)))?;
        let block = Arc::new(block);
        self.cache.insert(self.meta.id, h.offset, block.clone());
        Ok(block)
    }

    fn get(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        match self.layout.locate(&self.meta, key, snapshot) {
            Some(i) => Ok(find_in_block(&self.block(i)?, key, snapshot)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl Table for SstTable {
    fn meta(&self) -> &TableMeta {
        &self.inner.meta
    }

    fn range_deletes(&self) -> &[RangeTombstone] {
        &self.inner.ranges
    }

    async fn get(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Entry>> {
        self.inner.get(key, snapshot)
    }

    async fn scan(&self, range: &KeyRange) -> Result<BoxStream<Result<Entry>>> {
        Ok(Box::pin(futures::stream::iter(self.cursor(range))))
    }

    fn scan_ready(&self, range: &KeyRange) -> Option<Result<EntryIter>> {
        Some(Ok(Box::new(self.cursor(range))))
    }

    fn block_layout(&self) -> Option<Arc<BlockLayout>> {
        Some(self.inner.layout.clone())
    }

    async fn read_block(&self, index: usize) -> Result<Block> {
        if index >= self.inner.index.len() {
            return Err(Error::InvalidArgument(format!(
                "table {} has {} blocks, not {}",
                self.inner.meta.id,
                self.inner.index.len(),
                index + 1
            )));
        }
        self.inner.block(index)
    }
}

/// Walks blocks from the first that can hold the range's start, yielding entries in range.
struct ScanCursor {
    inner: Arc<Inner>,
    range: KeyRange,
    next_block: usize,
    /// The range's start, to search for in the first block rather than walk to.
    seek: Option<Bytes>,
    block: Option<Block>,
    pos: usize,
    /// A key inside the range was reached.
    started: bool,
}

impl Iterator for ScanCursor {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            if let Some(b) = &self.block {
                while self.pos < b.len() {
                    let i = self.pos;
                    self.pos += 1;
                    let key = b.key(i);
                    // Keys only grow: once one is inside the range, none after is before it.
                    if !self.started {
                        if self.range.is_before_start(key) {
                            continue;
                        }
                        self.started = true;
                    }
                    if self.range.is_past_end(key) {
                        self.block = None;
                        self.next_block = usize::MAX;
                        return None;
                    }
                    return b.entry(i).map(Ok);
                }
                self.block = None;
            }
            if self.next_block >= self.inner.index.len() {
                return None;
            }
            match self.inner.block(self.next_block) {
                Ok(b) => {
                    self.pos = match self.seek.take() {
                        Some(k) => b.seek(&k, SeqNo::MAX),
                        None => 0,
                    };
                    self.block = Some(b);
                    self.next_block += 1;
                }
                Err(e) => {
                    self.next_block = usize::MAX;
                    return Some(Err(e));
                }
            }
        }
    }
}
