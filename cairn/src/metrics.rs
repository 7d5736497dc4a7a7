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

/// Refuses to export metrics beyond loopback unless `allow_open`: the endpoint has no token
/// and no TLS, and it names every database the process holds, with their sizes and traffic.
pub fn check_exposure(at: &str, allow_open: bool) -> Result<()> {
    let addr: std::net::SocketAddr = at.parse().map_err(|e| {
        Error::InvalidArgument(format!("metrics address `{at}`: {e} (expected host:port)"))
    })?;
    if addr.ip().is_loopback() || allow_open {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "refusing to serve metrics on {addr}: the endpoint has no token and no TLS, and it names every database this process holds. Listen on 127.0.0.1 (and scrape through a proxy), or set metrics.allow_open = true to serve them open on purpose"
    )))
}

#[cfg(test)]
mod tests {
    use super::check_exposure;

    #[test]
    fn metrics_beyond_loopback_need_an_explicit_yes() {
        assert!(check_exposure("127.0.0.1:9464", false).is_ok());
        assert!(check_exposure("[::1]:9464", false).is_ok());
        let e = check_exposure("0.0.0.0:9464", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.allow_open"), "{e}");
        assert!(check_exposure("0.0.0.0:9464", true).is_ok());
        assert!(check_exposure("nowhere", true).is_err());
    }
}
