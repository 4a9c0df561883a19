//! The web console at `/`: plain HTML, CSS and JavaScript modules from `console/`, compiled into
//! the binary (nothing is fetched at build or run time). The console is a client of the same
//! HTTP API as everyone else: it holds no data and no privilege of its own, so its files are
//! served without a token; every figure it shows comes from an API call made with the token
//! the user gives it (in an `Authorization` header, never in a URL).
//!
//! Every answer here carries a strict Content-Security-Policy: scripts and styles only from
//! this server (no inline script or style, no `eval`), connections only to this server, no
//! frames, no plugins. The console renders event data (which any writer controls) as text
//! nodes only, so even a hostile event cannot become markup.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use eventfold_protocol::ErrorCode;

use crate::error::ApiError;
use crate::state::AppState;

/// The policy of every console answer.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One file of the console.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    body: &'static str,
}

macro_rules! assets {
    ($($path:literal => $media:literal),* $(,)?) => {
        &[$(Asset {
            path: $path,
            media_type: $media,
            body: include_str!(concat!("../console/", $path)),
        }),*]
    };
}

/// Every file under `/console/`, and `index.html` (also served at `/`).
const ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "dom.js" => "text/javascript; charset=utf-8",
    "overview.js" => "text/javascript; charset=utf-8",
    "streams.js" => "text/javascript; charset=utf-8",
    "all.js" => "text/javascript; charset=utf-8",
    "groups.js" => "text/javascript; charset=utf-8",
};

/// The console's routes: `/`, `/console/{file}` and `/console/config.json` (whether the server
/// needs a token, so the console can ask for one before its first call). None needs a token.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/console/config.json", get(config))
        .route("/console/{file}", get(file))
}

async fn file(Path(name): Path<String>) -> Response {
    asset(&name)
}

async fn config(State(st): State<AppState>) -> Response {
    let body = serde_json::json!({
        "auth": st.auth.enabled(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    with_headers(axum::Json(body).into_response(), None)
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|a| a.path == name) {
        Some(a) => with_headers(a.body.into_response(), Some(a.media_type)),
        None => ApiError::new(
            ErrorCode::NotFound,
            format!("the console has no file {name:?}"),
        )
        .into_response(),
    }
}

fn with_headers(mut r: Response, media_type: Option<&'static str>) -> Response {
    let h = r.headers_mut();
    if let Some(m) = media_type {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(m));
    }
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The files change with the binary: revalidate rather than cache across upgrades.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_console_imports_is_served() {
        for a in ASSETS {
            if !a.path.ends_with(".js") && !a.path.ends_with(".html") {
                continue;
            }
            let refs = a
                .body
                .match_indices("\"./")
                .map(|(i, _)| i + 3)
                .chain(a.body.match_indices("\"/console/").map(|(i, _)| i + 10));
            for start in refs {
                let rest = &a.body[start..];
                let Some(end) = rest.find(['"', '\'']) else {
                    continue;
                };
                let target = &rest[..end];
                if target.ends_with(".js") || target.ends_with(".css") || target.ends_with(".svg") {
                    assert!(
                        ASSETS.iter().any(|x| x.path == target),
                        "{} refers to {target}, which is not served",
                        a.path
                    );
                }
            }
        }
    }

    #[test]
    fn no_console_file_has_inline_script_or_style() {
        let html = ASSETS
            .iter()
            .find(|a| a.path == "index.html")
            .expect("index");
        assert!(
            !html.body.contains("<script>"),
            "inline script in index.html"
        );
        assert!(!html.body.contains("style="), "inline style in index.html");
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            assert!(
                !a.body.contains("innerHTML"),
                "{} assigns innerHTML",
                a.path
            );
            assert!(!a.body.contains("eval("), "{} calls eval", a.path);
        }
    }
}
