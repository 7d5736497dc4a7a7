//! The pairing matrix: every journal kind (memory, file, grpc, object) x storage kind (sstable,
//! parquet, hybrid, grpc) x compactor kind (local, grpc), wired from config exactly as a user's
//! profile would be, runs one engine scenario (writes, overwrites, deletes, batches, gets,
//! scans, flushes, compactions, reopens) checked against a `BTreeMap`. The grpc kinds talk to
//! real servers on 127.0.0.1 started with `cairn::serve`, as `cairn serve` starts them.

use bytes::Bytes;
use cairn::serve::{Component, ComponentServer};
use cairn::{Config, KeyRange, WriteBatch};
use cairn_testkit::model::model_range;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq)]
enum J {
    Memory,
    File,
    Grpc,
    Object,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum S {
    Sstable,
    Parquet,
    Hybrid,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum C {
    Local,
    Grpc,
}

/// Small sizes, so a few hundred operations flush and compact several times.
const ENGINE: &str = "[default.engine]\nmemtable_bytes = 8192\nmax_immutable_memtables = 2\n\
     l0_stop_writes = 12\nbackground_threads = 1\n\
     [default.compaction]\nl0_trigger = 2\nlevels = 3\nbase_level_bytes = 32768\n\
     level_size_ratio = 4\ntarget_table_bytes = 8192\n";

/// The storage section (as TOML lines after a `[...storage]` header) for local kinds.
fn local_storage(kind: S, dir: &Path, header: &str) -> String {
    let tables = dir.join("tables");
    let parquet = format!("file://{}", dir.join("parquet").display());
    match kind {
        S::Sstable => format!(
            "[{header}]\nkind = \"sstable\"\ndir = \"{}\"\nblock_bytes = 512\n",
            tables.display()
        ),
        S::Parquet => {
            format!("[{header}]\nkind = \"parquet\"\nurl = \"{parquet}\"\nrow_group_rows = 64\n")
        }
        S::Hybrid => format!(
            "[{header}]\nkind = \"hybrid\"\n[{header}.primary]\nkind = \"sstable\"\ndir = \"{}\"\n\
             block_bytes = 512\n[{header}.secondary]\nkind = \"parquet\"\nurl = \"{parquet}\"\n\
             row_group_rows = 64\n",
            tables.display()
        ),
        S::Grpc => unreachable!("not a local storage"),
    }
}

async fn start(toml: &str, component: Component) -> ComponentServer {
    let config = Config::from_toml_str(toml, None).expect("node config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cairn::serve::start(&config, component, listener, std::future::pending())
        .await
        .expect("start server")
}

struct Cluster {
    _dir: tempfile::TempDir,
    engine: String,
    servers: Vec<ComponentServer>,
}

/// Starts the servers a pairing needs and returns the engine's profile.
async fn cluster(j: J, s: S, c: C) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let data = dir.path().join("engine");
    let mut servers = Vec::new();
    let mut engine = format!("[default]\ndata_dir = \"{}\"\n{ENGINE}", data.display());
    match j {
        J::Memory => engine += "[default.journal]\nkind = \"memory\"\n",
        J::File => engine += "[default.journal]\nkind = \"file\"\n",
        J::Object => {
            engine += &format!(
                "[default.journal]\nkind = \"object\"\nurl = \"file://{}\"\n",
                dir.path().join("journal-bucket").display()
            )
        }
        J::Grpc => {
            let server = start(
                &format!("[default]\ndata_dir = \"{}\"\n", node.display()),
                Component::Journal,
            )
            .await;
            engine += &format!(
                "[default.journal]\nkind = \"grpc\"\nurl = \"{}\"\n",
                server.url()
            );
            servers.push(server);
        }
    }
    // The storage section as the engine sees it; the compaction node is given the same one,
    // so both reach the same tables.
    let storage = match s {
        S::Grpc => {
            let server = start(
                &format!(
                    "[default]\ndata_dir = \"{}\"\n{}",
                    node.display(),
                    local_storage(S::Sstable, &node, "default.storage")
                ),
                Component::Storage,
            )
            .await;
            let url = server.url();
            servers.push(server);
            format!("kind = \"grpc\"\nurl = \"{url}\"\nblock_cache_bytes = 1048576\n")
        }
        local => local_storage(local, &data, "STORAGE"),
    };
    let section = |header: &str| {
        if storage.starts_with("[STORAGE]") {
            storage.replace("STORAGE", header)
        } else {
            format!("[{header}]\n{storage}")
        }
    };
    engine += &section("default.storage");
    if c == C::Grpc {
        let server = start(
            &format!(
                "[default]\ndata_dir = \"{}\"\n{}",
                node.join("compaction").display(),
                section("default.compaction.storage")
            ),
            Component::Compaction,
        )
        .await;
        // No fallback: the jobs must run on the node.
        engine += &format!(
            "[default.compaction]\nkind = \"grpc\"\nurl = \"{}\"\nfallback = \"none\"\n",
            server.url()
        );
        servers.push(server);
    }
    Cluster {
        _dir: dir,
        engine: merge_sections(&engine),
        servers,
    }
}

/// TOML allows a table once: fold repeated `[default.compaction]` headers into one.
fn merge_sections(text: &str) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            current = line.to_string();
            if !bodies.contains_key(&current) {
                order.push(current.clone());
                bodies.insert(current.clone(), String::new());
            }
        } else if let Some(b) = bodies.get_mut(&current) {
            b.push_str(line);
            b.push('\n');
        }
    }
    order
        .iter()
        .map(|h| format!("{h}\n{}", bodies[h]))
        .collect()
}

fn key(rng: &mut StdRng) -> Bytes {
    Bytes::from(format!("k{:04}", rng.random_range(0..300u32)))
}

async fn scenario(j: J, s: S, c: C) {
    let cl = cluster(j, s, c).await;
    let config =
        Config::from_toml_str(&cl.engine, None).unwrap_or_else(|e| panic!("{e}\n{}", cl.engine));
    let mut db = cairn::open(&config).await.expect("open");
    let mut rng = StdRng::seed_from_u64(7);
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let (mut flushes, mut compactions, mut reopens) = (0, 0, 0);
    for step in 0..700 {
        match rng.random_range(0..100u32) {
            0..=39 => {
                let (k, v) = (
                    key(&mut rng),
                    Bytes::from(format!("v{step}-{}", "x".repeat(step % 50))),
                );
                db.put(k.clone(), v.clone()).await.unwrap();
                model.insert(k, v);
            }
            40..=54 => {
                let k = key(&mut rng);
                db.delete(k.clone()).await.unwrap();
                model.remove(&k);
            }
            55..=62 => {
                let mut b = WriteBatch::new();
                for i in 0..rng.random_range(1..10) {
                    let k = key(&mut rng);
                    if rng.random_bool(0.7) {
                        let v = Bytes::from(format!("b{step}.{i}"));
                        b.put(k.clone(), v.clone());
                        model.insert(k, v);
                    } else {
                        b.delete(k.clone());
                        model.remove(&k);
                    }
                }
                db.write(b).await.unwrap();
            }
            63..=79 => {
                let k = key(&mut rng);
                assert_eq!(
                    db.get(&k).await.unwrap().as_ref(),
                    model.get(&k),
                    "step {step}: get {k:?}"
                );
            }
            80..=88 => {
                let (a, b) = (key(&mut rng), key(&mut rng));
                let r = KeyRange::new(Some(a.min(b.clone())), Some(b.max(key(&mut rng))));
                let got = db
                    .scan(r.clone())
                    .await
                    .unwrap()
                    .collect(None)
                    .await
                    .unwrap();
                assert_eq!(got, model_range(&model, &r), "step {step}: scan {r:?}");
            }
            89..=93 => {
                db.flush().await.unwrap();
            }
            94..=96 => {
                db.compact().await.unwrap();
            }
            _ => {
                let s = db.stats();
                flushes += s.flushes;
                compactions += s.compactions;
                reopens += 1;
                // A memory journal does not outlive its process: only a clean close keeps
                // its writes. The others also survive a close without the final flush.
                if j == J::Memory || rng.random_bool(0.5) {
                    db.close().await.unwrap();
                } else {
                    db.close_without_flush().await.unwrap();
                }
                drop(db);
                db = cairn::open(&config).await.expect("reopen");
            }
        }
    }
    let all = db
        .scan(KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    assert_eq!(all, model_range(&model, &KeyRange::all()), "final scan");
    let s = db.stats();
    flushes += s.flushes;
    compactions += s.compactions;
    assert!(
        flushes > 0 && compactions > 0 && reopens > 0,
        "the run must flush ({flushes}), compact ({compactions}) and reopen ({reopens})"
    );
    assert_eq!(s.background_error, None);
    if j == J::Memory {
        db.close().await.unwrap();
    } else {
        db.close_without_flush().await.unwrap();
    }
    drop(db);
    let db = cairn::open(&config).await.expect("last reopen");
    let all = db
        .scan(KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap();
    assert_eq!(
        all,
        model_range(&model, &KeyRange::all()),
        "after the last reopen"
    );
    db.close().await.unwrap();
    for server in cl.servers {
        server.stop().await.unwrap();
    }
}

macro_rules! matrix {
    ($($name:ident: $j:ident $s:ident $c:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            scenario(J::$j, S::$s, C::$c).await;
        }
    )*};
}

matrix! {
    memory_sstable_local: Memory Sstable Local;
    memory_sstable_grpc: Memory Sstable Grpc;
    memory_parquet_local: Memory Parquet Local;
    memory_parquet_grpc: Memory Parquet Grpc;
    memory_hybrid_local: Memory Hybrid Local;
    memory_hybrid_grpc: Memory Hybrid Grpc;
    memory_grpc_local: Memory Grpc Local;
    memory_grpc_grpc: Memory Grpc Grpc;
    file_sstable_local: File Sstable Local;
    file_sstable_grpc: File Sstable Grpc;
    file_parquet_local: File Parquet Local;
    file_parquet_grpc: File Parquet Grpc;
    file_hybrid_local: File Hybrid Local;
    file_hybrid_grpc: File Hybrid Grpc;
    file_grpc_local: File Grpc Local;
    file_grpc_grpc: File Grpc Grpc;
    grpc_sstable_local: Grpc Sstable Local;
    grpc_sstable_grpc: Grpc Sstable Grpc;
    grpc_parquet_local: Grpc Parquet Local;
    grpc_parquet_grpc: Grpc Parquet Grpc;
    grpc_hybrid_local: Grpc Hybrid Local;
    grpc_hybrid_grpc: Grpc Hybrid Grpc;
    grpc_grpc_local: Grpc Grpc Local;
    grpc_grpc_grpc: Grpc Grpc Grpc;
    object_sstable_local: Object Sstable Local;
    object_parquet_local: Object Parquet Local;
    object_hybrid_local: Object Hybrid Local;
    object_grpc_grpc: Object Grpc Grpc;
}
