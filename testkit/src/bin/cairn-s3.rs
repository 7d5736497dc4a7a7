//! `cairn-s3`: the tests' S3 endpoint as a process, for trying the `serverless` and `cloud`
//! profiles and benchmarking them without MinIO or AWS. It serves one bucket from a directory
//! (a fresh temporary one by default) and can add a latency to every request, as a distant
//! store would.
//!
//! ```text
//! cairn-s3 [--listen 127.0.0.1:9000] [--bucket cairn] [--dir DIR] [--latency-ms MS]
//! ```
//!
//! Clients sign with the access key `cairn-test` and the secret `cairn-test-secret`.

use cairn_testkit::{ACCESS_KEY, S3Server, SECRET_KEY};
use std::time::Duration;

const USAGE: &str =
    "usage: cairn-s3 [--listen 127.0.0.1:9000] [--bucket cairn] [--dir DIR] [--latency-ms MS]

Serves one S3 bucket on ADDR from DIR. Without --dir the bucket lives in a temporary
directory that is deleted when cairn-s3 stops: pass --dir to keep it across restarts.
Clients sign with the access key cairn-test and the secret cairn-test-secret.";

fn main() -> std::process::ExitCode {
    let mut listen = "127.0.0.1:9000".to_string();
    let mut bucket = "cairn".to_string();
    let mut dir = None;
    let mut latency = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        let Some(value) = args.next() else {
            eprintln!("cairn-s3: {flag} needs a value");
            return std::process::ExitCode::from(2);
        };
        match flag.as_str() {
            "--listen" => listen = value,
            "--bucket" => bucket = value,
            "--dir" => dir = Some(std::path::PathBuf::from(value)),
            "--latency-ms" => match value.parse() {
                Ok(ms) => latency = Duration::from_millis(ms),
                Err(e) => {
                    eprintln!("cairn-s3: --latency-ms {value}: {e}");
                    return std::process::ExitCode::from(2);
                }
            },
            other => {
                eprintln!("cairn-s3: unknown flag {other}\n{USAGE}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let kept = dir.is_some();
    match S3Server::start(&bucket, &listen, dir, latency) {
        Ok(server) => {
            println!(
                "serving s3://{bucket} on {} (access key {ACCESS_KEY}, secret {SECRET_KEY}, {} ms added a request){}",
                server.endpoint(),
                latency.as_millis(),
                if kept {
                    ""
                } else {
                    "; the bucket is in a temporary directory, deleted when this stops (--dir keeps it)"
                }
            );
            server.wait();
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn-s3: serving on {listen}: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
