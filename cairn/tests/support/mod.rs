//! Real `cairn serve` processes for the tests that kill, pause and restart them.

#![allow(dead_code)]

pub mod layout;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A profile file in `dir` for component servers whose data lives in `dir/data`.
pub fn node_config(dir: &Path, data: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{data}.toml"));
    let text = format!("[default]\ndata_dir = \"{}\"\n", dir.join(data).display());
    std::fs::write(&path, text).expect("write the node profile");
    path
}

/// Every pair the database shows now, in key order.
pub async fn scan_all(db: &cairn::Db) -> Vec<(bytes::Bytes, bytes::Bytes)> {
    db.scan(cairn::KeyRange::all())
        .await
        .unwrap()
        .collect(None)
        .await
        .unwrap()
}

pub struct Served {
    pub child: Child,
    pub url: String,
}

impl Served {
    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no graceful anything
        let _ = self.child.wait();
    }

    pub fn port(&self) -> &str {
        self.url.rsplit(':').next().unwrap()
    }

    /// Pauses the process (SIGSTOP): it holds its sockets and state but does nothing.
    pub fn pause(&self) {
        signal(&self.child, "STOP");
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        signal(&self.child, "CONT");
    }

    /// Asks the process to shut down gracefully (SIGTERM).
    pub fn terminate(&self) {
        signal(&self.child, "TERM");
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {}", child.id());
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `cairn serve COMPONENT` and waits for its `serving ... on URL` line.
pub fn serve(config: &Path, component: &str, listen: &str, env: &[(&str, &str)]) -> Served {
    serve_args(config, &["serve", component, "--listen", listen], env)
}

/// Starts `cairn ARGS` (a `serve` command) and waits for its `serving ... on URL` line.
pub fn serve_args(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Served {
    let component = args.get(1).copied().unwrap_or_default();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("CAIRN_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("cairn serve {component} printed {line:?}"))
        .to_string();
    Served { child, url }
}

/// `serve` again on the same port, once the old socket lets go.
pub fn restart(config: &Path, component: &str, old: &Served, env: &[(&str, &str)]) -> Served {
    let listen = format!("127.0.0.1:{}", old.port());
    serve(config, component, &listen, env)
}

/// The journal and storage sections of the serverless layout on `s3`: an object journal, and
/// a hybrid store whose Parquet copy (with `parquet_keys` added) is in the bucket.
pub fn serverless_layout(s3: &cairn_testkit::S3Endpoint, parquet_keys: &str) -> String {
    let bucket = |url: String| {
        format!(
            "url = \"{url}\"\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\n\
             secret_access_key = \"{}\"\nallow_http = true\n",
            s3.endpoint, s3.region, s3.access_key_id, s3.secret_access_key
        )
    };
    format!(
        "[default.journal]\nkind = \"object\"\n{}\
         [default.storage]\nkind = \"hybrid\"\n[default.storage.primary]\nkind = \"sstable\"\n\
         [default.storage.secondary]\nkind = \"parquet\"\n{parquet_keys}{}",
        bucket(s3.url("journal")),
        bucket(s3.url("tables"))
    )
}
