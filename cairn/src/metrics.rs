//! Exports what this process records through the `metrics` facade (engine, journal, caches,
//! RPC on both ends, router shards) in Prometheus' text format on `GET /metrics`: for
//! `cairn serve` (`[metrics] listen`) and `cairn-bench --metrics-listen`.

use cairn_common::{Error, Result};

/// Installs the process's recorder and serves it on `at` (`127.0.0.1:9464`). Once per
/// process: a second call is refused, as is an address that is not one.
pub fn export_metrics(at: &str) -> Result<()> {
    let addr: std::net::SocketAddr = at.parse().map_err(|e| {
        Error::InvalidArgument(format!("metrics address `{at}`: {e} (expected host:port)"))
    })?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| Error::InvalidArgument(format!("exporting metrics on {at}: {e}")))
}
