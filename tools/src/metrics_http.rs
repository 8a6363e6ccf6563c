//! The opt-in Prometheus scrape endpoint of `murmur agent run --metrics-listen ADDR`.

use std::sync::Arc;

use anyhow::{Context, Result};
use murmur_agents::metrics::AgentMetrics;

/// OpenMetrics text, which Prometheus scrapes natively.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `addr` from a background thread for the life of the process;
/// returns the bound address (useful with port 0).
pub fn serve(addr: &str, metrics: Arc<AgentMetrics>) -> Result<std::net::SocketAddr> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("listening on {addr} for metrics"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .context("metrics listener has no IP address")?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                        .expect("static header is valid");
                    tiny_http::Response::from_string(metrics.prometheus_text()).with_header(header)
                } else {
                    tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                };
                if let Err(e) = request.respond(response) {
                    tracing::debug!(error = %e, "metrics response failed");
                }
            }
        })?;
    Ok(bound)
}
