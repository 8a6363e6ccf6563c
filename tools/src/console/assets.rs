//! The page's files, compiled into the binary: nothing is fetched from anywhere at run time.

use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Shown when the binary was built before the page was (`cargo build` without
/// `scripts/install.sh`).
const NOT_BUILT: &str = "<!doctype html><title>murmur console</title><h1>The console page was not built into this binary</h1><p>Run <code>bash scripts/install.sh</code> (it runs <code>npm ci &amp;&amp; npm run build</code> in <code>tools/console</code>), then rebuild murmur. The JSON API under <code>/api/</code> works without it.</p>";

pub(super) fn built() -> bool {
    FILES.iter().any(|(path, _)| *path == "index.html")
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

async fn file(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match FILES.iter().find(|(p, _)| *p == path) {
        Some((p, bytes)) => {
            // Bundled names carry a content hash: cache them for good, but never the page.
            let cache = if p.starts_with("assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [
                    (header::CONTENT_TYPE, content_type(p)),
                    (header::CACHE_CONTROL, cache),
                ],
                *bytes,
            )
                .into_response()
        }
        None if path == "index.html" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            NOT_BUILT,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file in the console\n").into_response(),
    }
}

pub(super) fn router() -> Router {
    Router::new().fallback(file)
}
