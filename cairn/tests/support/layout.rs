//! Engine layouts wired from config as a user's profile is: every journal kind (memory, file,
//! grpc, object), storage kind (sstable, parquet, hybrid, grpc) and compactor kind (local,
//! grpc), the grpc kinds on real servers on 127.0.0.1 started with `cairn::serve`.

use cairn::Config;
use cairn::serve::{Component, ComponentServer};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum J {
    Memory,
    File,
    Grpc,
    Object,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum S {
    Sstable,
    Parquet,
    Hybrid,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum C {
    Local,
    Grpc,
}

/// Small sizes, so a few hundred operations flush and compact several times.
pub const ENGINE: &str = "[default.engine]\nmemtable_bytes = 8192\nmax_immutable_memtables = 2\n\
     merge_operator = \"append\"\n\
     l0_stop_writes = 12\nbackground_threads = 1\n\
     [default.compaction]\nl0_trigger = 2\nlevels = 3\nbase_level_bytes = 32768\n\
     level_size_ratio = 4\ntarget_table_bytes = 4096\nsubcompactions = 2\n";

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

/// Starts a component server from a profile, as `cairn serve` does, on a free port.
pub async fn start(toml: &str, component: Component) -> ComponentServer {
    let config = Config::from_toml_str(toml, None).expect("node config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cairn::serve::start(&config, component, listener, std::future::pending())
        .await
        .expect("start server")
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub engine: String,
    pub servers: Vec<ComponentServer>,
}

/// Starts the servers a pairing needs and returns the engine's profile.
pub async fn cluster(j: J, s: S, c: C) -> Cluster {
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
        dir,
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
