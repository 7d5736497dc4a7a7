//! Cross-crate scenarios of the `cairn` crate, one module per scenario file, linked into one
//! test binary: each binary links the whole engine and DataFusion (about 300 MB unoptimised), and
//! fifteen of them took 4.5 GB of a CI machine's disk and a link each. Run one file's tests with
//! `cargo test -p cairn --test scenarios router::`.

mod support;

mod cli;
mod cluster;
mod crash;
mod docs;
mod health_and_reflection;
mod json_logs;
mod lockstep;
mod matrix;
mod metrics;
mod replicas;
mod router;
mod serve;
mod sql;
mod takeover;
mod upgrade;
