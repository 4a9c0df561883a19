//! Bearer tokens: who may read, write or administer which streams.
//!
//! With no token configured every request is allowed. Otherwise every request but
//! `/health/*` needs `Authorization: Bearer <token>` (else `401 unauthenticated`), and a token
//! may act only on streams under its prefixes and only with its rights (else `403 forbidden`).
//! Rights: `read` (reads, subscriptions, listing, `$all`, metrics, the API document), `write`
//! (appends), `admin` (metadata changes and deletes). Consumer groups (`/subscriptions`) read
//! every stream, so they need the right over all streams (a token without prefixes): `admin` to
//! create, update, delete a group and replay its parked events, `read` for the rest.

use std::path::Path;

use axum::http::Method;

use crate::error::ApiError;

/// A right a token can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Reads, subscriptions, listings, metrics.
    Read,
    /// Appends.
    Write,
    /// Metadata changes and deletes.
    Admin,
}

/// One token and what it may do.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRule {
    /// The secret.
    pub token: String,
    /// Stream-name prefixes it may act on; absent or empty: every stream.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Its rights.
    pub rights: Vec<Right>,
    /// A name for logs (never the token itself).
    #[serde(default)]
    pub name: Option<String>,
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    rules: Vec<TokenRule>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenRule>,
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No token needed.
    Open,
    /// A right on one stream.
    Stream(Right, String),
    /// A right over streams starting with this prefix (`""`: all of them).
    Prefix(Right, String),
}

impl Auth {
    /// No authentication.
    pub fn none() -> Self {
        Auth::default()
    }

    /// One token with every right on every stream, plus the rules of a tokens file.
    pub fn new(token: Option<String>, file: Option<&Path>) -> Result<Self, String> {
        let mut rules = Vec::new();
        if let Some(t) = token {
            if t.is_empty() {
                return Err("--auth-token must not be empty".into());
            }
            rules.push(TokenRule {
                token: t,
                prefixes: vec![],
                rights: vec![Right::Read, Right::Write, Right::Admin],
                name: Some("auth-token".into()),
            });
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
            let parsed: TokensFile = toml::from_str(&text).map_err(|e| {
                format!(
                    "the tokens file {} is not valid ({e}); expected [[tokens]] tables with token = \"...\", rights = [\"read\", \"write\", \"admin\"] and optional prefixes = [\"order-\"]",
                    path.display()
                )
            })?;
            for r in &parsed.tokens {
                if r.token.len() < 8 {
                    return Err(format!(
                        "a token in {} is shorter than 8 characters; use a long random secret",
                        path.display()
                    ));
                }
            }
            rules.extend(parsed.tokens);
        }
        Ok(Auth { rules })
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Checks a request's bearer token against what the request needs.
    pub fn check(&self, authorization: Option<&str>, scope: &Scope) -> Result<(), ApiError> {
        if !self.enabled() || *scope == Scope::Open {
            return Ok(());
        }
        let presented = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(ApiError::new(
                401,
                "unauthenticated",
                "this server needs a token: send `Authorization: Bearer <token>`",
            ));
        };
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| constant_time_eq(r.token.as_bytes(), presented.as_bytes()))
        else {
            return Err(ApiError::new(
                401,
                "unauthenticated",
                "the bearer token is not known to this server; check the token",
            ));
        };
        let (right, allowed) = match scope {
            Scope::Open => return Ok(()),
            Scope::Stream(right, stream) => (
                *right,
                rule.prefixes.is_empty()
                    || rule.prefixes.iter().any(|p| stream.starts_with(p.as_str())),
            ),
            Scope::Prefix(right, prefix) => (
                *right,
                rule.prefixes.is_empty()
                    || rule.prefixes.iter().any(|p| prefix.starts_with(p.as_str())),
            ),
        };
        if !rule.rights.contains(&right) {
            return Err(ApiError::new(
                403,
                "forbidden",
                format!(
                    "this token does not have the `{}` right needed here",
                    right_name(right)
                ),
            ));
        }
        if !allowed {
            let what = match scope {
                Scope::Stream(_, s) => format!("stream {s}"),
                Scope::Prefix(_, p) if p.is_empty() => {
                    "every stream (pass a stream_prefix or prefix within your token's prefixes)"
                        .to_owned()
                }
                Scope::Prefix(_, p) => format!("streams starting with {p:?}"),
                Scope::Open => String::new(),
            };
            return Err(ApiError::new(
                403,
                "forbidden",
                format!(
                    "this token may not act on {what}; it is limited to {:?}",
                    rule.prefixes
                ),
            ));
        }
        Ok(())
    }
}

fn right_name(r: Right) -> &'static str {
    match r {
        Right::Read => "read",
        Right::Write => "write",
        Right::Admin => "admin",
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(&v.replace('+', " ")))
    })
}

/// What a request needs, from its method, path and query.
pub fn scope_of(method: &Method, path: &str, query: Option<&str>) -> Scope {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["health", ..] => Scope::Open,
        ["streams"] => Scope::Prefix(
            Right::Read,
            query_value(query, "prefix").unwrap_or_default(),
        ),
        ["streams", s, rest @ ..] => {
            let stream = percent_decode(s);
            let right = match (method, rest) {
                (&Method::POST, []) => Right::Write,
                (&Method::DELETE, []) | (&Method::PUT, ["metadata"]) => Right::Admin,
                _ => Right::Read,
            };
            Scope::Stream(right, stream)
        }
        // Consumer groups read from every stream: they need the right over all of them.
        // Creating, updating, deleting a group and replaying its parked events is `admin`;
        // listing, inspecting, pulling, pushing, acking and nacking is `read`.
        ["subscriptions", rest @ ..] => {
            let right = match (method, rest) {
                (&Method::PUT | &Method::DELETE, [_])
                | (&Method::POST, [_, "parked", "replay"]) => Right::Admin,
                _ => Right::Read,
            };
            Scope::Prefix(right, String::new())
        }
        ["all", ..] => Scope::Prefix(
            Right::Read,
            query_value(query, "stream_prefix").unwrap_or_default(),
        ),
        _ => Scope::Prefix(Right::Read, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let mut a = Auth::new(Some("admin-token".into()), None).expect("valid");
        a.rules.push(TokenRule {
            token: "orders-reader".into(),
            prefixes: vec!["order-".into()],
            rights: vec![Right::Read],
            name: None,
        });
        a.rules.push(TokenRule {
            token: "orders-writer".into(),
            prefixes: vec!["order-".into()],
            rights: vec![Right::Read, Right::Write],
            name: None,
        });
        a
    }

    fn status(a: &Auth, token: Option<&str>, m: Method, path: &str, q: Option<&str>) -> u16 {
        let h = token.map(|t| format!("Bearer {t}"));
        match a.check(h.as_deref(), &scope_of(&m, path, q)) {
            Ok(()) => 200,
            Err(e) => e.0.status,
        }
    }

    #[test]
    fn tokens_rights_and_prefixes() {
        let a = auth();
        assert_eq!(status(&a, None, Method::GET, "/health/ready", None), 200);
        assert_eq!(status(&a, None, Method::GET, "/streams/order-1", None), 401);
        assert_eq!(
            status(&a, Some("wrong"), Method::GET, "/streams/order-1", None),
            401
        );
        assert_eq!(
            status(&a, Some("admin-token"), Method::DELETE, "/streams/x", None),
            200
        );
        assert_eq!(
            status(
                &a,
                Some("orders-reader"),
                Method::GET,
                "/streams/order-1",
                None
            ),
            200
        );
        assert_eq!(
            status(
                &a,
                Some("orders-reader"),
                Method::POST,
                "/streams/order-1",
                None
            ),
            403
        );
        assert_eq!(
            status(
                &a,
                Some("orders-writer"),
                Method::POST,
                "/streams/order-1",
                None
            ),
            200
        );
        assert_eq!(
            status(
                &a,
                Some("orders-writer"),
                Method::POST,
                "/streams/user-1",
                None
            ),
            403
        );
        assert_eq!(
            status(
                &a,
                Some("orders-writer"),
                Method::PUT,
                "/streams/order-1/metadata",
                None
            ),
            403
        );
        assert_eq!(
            status(&a, Some("orders-reader"), Method::GET, "/all", None),
            403
        );
        assert_eq!(
            status(
                &a,
                Some("orders-reader"),
                Method::GET,
                "/all",
                Some("stream_prefix=order-9")
            ),
            200
        );
        assert_eq!(
            status(
                &a,
                Some("orders-reader"),
                Method::GET,
                "/streams",
                Some("prefix=order-")
            ),
            200
        );
        assert_eq!(
            status(
                &a,
                Some("orders-reader"),
                Method::GET,
                "/streams/order%2D1",
                None
            ),
            200
        );
        assert_eq!(
            status(&a, Some("orders-reader"), Method::GET, "/metrics", None),
            403
        );
        assert_eq!(
            status(&Auth::none(), None, Method::DELETE, "/streams/x", None),
            200
        );
    }
    #[test]
    fn consumer_groups_need_rights_over_every_stream() {
        let g = |m: Method, p: &str| scope_of(&m, p, None);
        assert_eq!(
            g(Method::PUT, "/subscriptions/g"),
            Scope::Prefix(Right::Admin, String::new())
        );
        assert_eq!(
            g(Method::DELETE, "/subscriptions/g"),
            Scope::Prefix(Right::Admin, String::new())
        );
        assert_eq!(
            g(Method::POST, "/subscriptions/g/parked/replay"),
            Scope::Prefix(Right::Admin, String::new())
        );
        for (m, p) in [
            (Method::GET, "/subscriptions"),
            (Method::GET, "/subscriptions/g"),
            (Method::POST, "/subscriptions/g/pull"),
            (Method::POST, "/subscriptions/g/ack"),
            (Method::POST, "/subscriptions/g/nack"),
            (Method::GET, "/subscriptions/g/stream"),
            (Method::GET, "/subscriptions/g/parked"),
        ] {
            assert_eq!(g(m, p), Scope::Prefix(Right::Read, String::new()), "{p}");
        }
        let a = auth();
        assert_eq!(
            status(
                &a,
                Some("orders-reader"),
                Method::POST,
                "/subscriptions/g/pull",
                None
            ),
            403,
            "a token limited to some streams cannot consume a group"
        );
        assert_eq!(
            status(
                &a,
                Some("admin-token"),
                Method::PUT,
                "/subscriptions/g",
                None
            ),
            200
        );
    }
}
