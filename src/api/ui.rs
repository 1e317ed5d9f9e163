//! The operator console (`/ui/`): static assets embedded in the binary (the board may have
//! no internet, and the console must match the API it was built with). No auth to load the
//! page; every call the page makes goes to `/api/v1` with the signed-in token.
//!
//! Every answer under `/ui` carries a strict Content-Security-Policy (no inline script or
//! style, nothing from elsewhere), `Referrer-Policy: no-referrer` and `X-Frame-Options:
//! DENY` (`X-Content-Type-Options: nosniff` is set for every response by the router).

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use tower_http::set_header::SetResponseHeaderLayer;

use super::extract::ApiPath;
use crate::app::AppState;
use crate::error::ApiError;

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// (file name, Content-Type, bytes)
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "verify.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/verify.js"),
    ),
];

/// The console's routes, with their security headers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/ui", get(root))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(file))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
}

/// The console lives at `/ui/`.
#[utoipa::path(get, operation_id = "console_root", path = "/", tag = "console",
    responses((status = 307, description = "redirect to /ui/")))]
pub async fn root() -> Redirect {
    Redirect::temporary("/ui/")
}

/// The operator console (HTML, no auth to load it).
#[utoipa::path(get, operation_id = "console_index", path = "/ui/", tag = "console",
    responses((status = 200, content_type = "text/html", body = String)))]
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers).unwrap_or_else(IntoResponse::into_response)
}

/// One of the console's assets.
#[utoipa::path(get, operation_id = "console_file", path = "/ui/{file}", tag = "console",
    params(("file" = String, Path, description = "index.html, app.css, app.js, verify.js")),
    responses((status = 200, body = String), (status = 404, body = crate::error::Problem)))]
pub async fn file(ApiPath(name): ApiPath<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers).unwrap_or_else(IntoResponse::into_response)
}

/// Entity tags of the embedded files, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        FILES
            .iter()
            .map(|(_, _, bytes)| {
                let digest = Sha256::digest(bytes);
                format!("\"{}\"", hex::encode(&digest[..12]))
            })
            .collect()
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let index = FILES
        .iter()
        .position(|(n, _, _)| *n == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("the console has no file {name:?}"),
            )
        })?;
    let (_, content_type, bytes) = FILES[index];
    let etag = &etags()[index];
    // Assets are not fingerprinted, so the browser revalidates each time (a cheap 304):
    // after an upgrade it never runs a stale script against a newer API.
    let common = [
        (header::CACHE_CONTROL, "no-cache".to_string()),
        (header::ETAG, etag.clone()),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    Ok((
        common,
        [(header::CONTENT_TYPE, content_type)],
        axum::body::Bytes::from_static(bytes),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_file_is_found_and_unknown_ones_are_not() {
        for (name, _, bytes) in FILES {
            assert!(!bytes.is_empty(), "{name} is empty");
            assert!(serve(name, &HeaderMap::new()).is_ok());
        }
        assert!(serve("nope.js", &HeaderMap::new()).is_err());
        assert!(serve("../Cargo.toml", &HeaderMap::new()).is_err());
    }

    #[test]
    fn the_page_has_no_inline_script_style_or_handler() {
        let html = std::str::from_utf8(FILES[0].2).unwrap();
        for script in html.split("<script").skip(1) {
            let tag_end = script.find('>').unwrap();
            assert!(script[..tag_end].contains("src="), "inline <script>");
            assert!(script[tag_end + 1..].trim_start().starts_with("</script>"));
        }
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "style attribute");
        let lower = html.to_lowercase();
        for (i, _) in lower.match_indices(" on") {
            let rest = &lower[i + 3..];
            let name_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(0);
            assert!(
                name_len == 0 || !rest[name_len..].starts_with('='),
                "inline event handler near {:?}",
                &lower[i..(i + 20).min(lower.len())]
            );
        }
        for (name, _, bytes) in FILES {
            let text = std::str::from_utf8(bytes).unwrap();
            assert!(!text.contains("innerHTML"), "{name} uses innerHTML");
            assert!(!text.contains("outerHTML"), "{name} uses outerHTML");
            assert!(!text.contains("insertAdjacentHTML"), "{name}");
            assert!(!text.contains("document.write"), "{name}");
            assert!(!text.contains("eval("), "{name}");
        }
    }
}
