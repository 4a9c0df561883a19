//! Bearer tokens: who may read, write or administer which streams.
//!
//! With no token configured every request is allowed. Otherwise every request but
//! `/health/*` needs `Authorization: Bearer <token>` (else `401 unauthenticated`), and a token
//! may act only on streams under its prefixes and only with its rights (else `403 forbidden`).
//! Rights: `read` (reads, subscriptions, listing, `$all`, metrics, the API document), `write`
//! (appends), `admin` (metadata changes and deletes). Consumer groups (`/subscriptions`) and
//! their parked events (`$parked-{group}`) hold events of every stream, so they need the right
//! over all streams (a token without prefixes): `admin` to create, update, delete a group and
//! replay its parked events, `read` for the rest.
//!
//! The [`Scope`] a request needs is computed from the request as parsed for its handler (see
//! [`crate::Authorized`]); this module only answers whether a caller may have it.

use std::path::Path;

use axum::http::HeaderValue;
use eventfold_core::StreamName;
use eventfold_protocol::ErrorCode;

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

/// What a request needs, decided from the request as its handler will run it (see
/// [`crate::Authorized`]): a right, and the streams it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A right on one stream.
    Stream(Right, StreamName),
    /// A right over the streams a filter selects.
    Streams(Right, StreamSet),
}

impl Scope {
    /// A right over every stream (what `$all` unfiltered, the metrics and the consumer groups
    /// need).
    pub fn every(right: Right) -> Self {
        Scope::Streams(right, StreamSet::default())
    }

    fn right(&self) -> Right {
        match self {
            Scope::Stream(r, _) | Scope::Streams(r, _) => *r,
        }
    }
}

/// The streams a read selects: those whose name starts with `prefix` *and* whose category is
/// `category` (both absent: every stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSet {
    /// Stream names start with this.
    pub prefix: Option<String>,
    /// Streams of this category (`order` is `order` and `order-*`).
    pub category: Option<String>,
}

impl StreamSet {
    /// The streams a `$all` filter can return (its event types select no streams).
    pub fn of_filter(f: &eventfold_core::EventFilter) -> Self {
        StreamSet {
            prefix: f.stream_prefix.clone(),
            category: f.category.clone(),
        }
    }

    /// Whether every stream of this set starts with `p`: `p` is empty, the prefix starts with
    /// it, or the category does (then both `category` and `category-*` do).
    fn within(&self, p: &str) -> bool {
        p.is_empty()
            || self.prefix.as_deref().is_some_and(|x| x.starts_with(p))
            || self.category.as_deref().is_some_and(|c| c.starts_with(p))
    }
}

/// Who sent a request, from its `Authorization` header.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// The server has no tokens: everyone may do everything.
    Anyone,
    /// A known token.
    Token(&'a TokenRule),
}

/// A [`Caller`] that owns its hold on the rules: for work that outlives the request's
/// borrow (the lines of a `POST /appends` body are authorized one by one as they arrive).
#[derive(Debug, Clone)]
pub struct OwnedCaller {
    auth: std::sync::Arc<Auth>,
    /// Index of the caller's rule; `None`: the server has no tokens.
    rule: Option<usize>,
}

impl OwnedCaller {
    /// Authenticates once: [`Auth::authenticate`], kept.
    pub fn authenticate(
        auth: &std::sync::Arc<Auth>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Self, ApiError> {
        let rule = match auth.authenticate(authorization)? {
            Caller::Anyone => None,
            // The rule came from this very list: its index is there (fail closed if not).
            Caller::Token(r) => Some(
                auth.rules
                    .iter()
                    .position(|x| std::ptr::eq(x, r))
                    .ok_or_else(|| {
                        ApiError::new(ErrorCode::InternalError, "the caller's token rule is lost")
                    })?,
            ),
        };
        Ok(OwnedCaller {
            auth: auth.clone(),
            rule,
        })
    }

    /// Refuses (`403 forbidden`) a caller whose token does not have `right` on any stream: a
    /// route whose parts are authorized one by one still needs the right to be worth opening.
    pub fn require_right(&self, right: Right) -> Result<(), ApiError> {
        match self.rule {
            Some(i) if !self.auth.rules[i].rights.contains(&right) => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this token does not have the `{}` right needed here",
                    right_name(right)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// [`Auth::authorize`] for this caller.
    pub fn authorize(&self, scope: &Scope) -> Result<(), ApiError> {
        let caller = match self.rule {
            None => Caller::Anyone,
            Some(i) => Caller::Token(&self.auth.rules[i]),
        };
        self.auth.authorize(caller, scope)
    }
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

    /// Who is calling: with tokens configured, a known bearer token, else `401
    /// unauthenticated`.
    pub fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Caller<'_>, ApiError> {
        if !self.enabled() {
            return Ok(Caller::Anyone);
        }
        let presented = authorization
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "this server needs a token: send `Authorization: Bearer <token>`",
            ));
        };
        self.rules
            .iter()
            .find(|r| constant_time_eq(r.token.as_bytes(), presented.as_bytes()))
            .map(Caller::Token)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "the bearer token is not known to this server; check the token",
                )
            })
    }

    /// Whether `caller` may do what `scope` says (`403 forbidden` naming what is missing).
    pub fn authorize(&self, caller: Caller<'_>, scope: &Scope) -> Result<(), ApiError> {
        let Caller::Token(rule) = caller else {
            return Ok(());
        };
        let right = scope.right();
        if !rule.rights.contains(&right) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this token does not have the `{}` right needed here",
                    right_name(right)
                ),
            ));
        }
        let allowed = rule.prefixes.is_empty()
            || rule.prefixes.iter().any(|p| match scope {
                Scope::Stream(_, s) => s.as_str().starts_with(p.as_str()),
                Scope::Streams(_, set) => set.within(p),
            });
        if !allowed {
            let what = match scope {
                Scope::Stream(_, s) => format!("stream {s}"),
                Scope::Streams(
                    _,
                    StreamSet {
                        prefix: None,
                        category: None,
                    },
                ) => "every stream (pass a stream_prefix or prefix within your token's prefixes)"
                    .to_owned(),
                Scope::Streams(_, set) => {
                    let mut parts = Vec::new();
                    if let Some(p) = &set.prefix {
                        parts.push(format!("streams starting with {p:?}"));
                    }
                    if let Some(c) = &set.category {
                        parts.push(format!("streams of category {c:?}"));
                    }
                    parts.join(" of ")
                }
            };
            return Err(ApiError::new(
                ErrorCode::Forbidden,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(prefix: Option<&str>, category: Option<&str>) -> StreamSet {
        StreamSet {
            prefix: prefix.map(str::to_owned),
            category: category.map(str::to_owned),
        }
    }

    #[test]
    fn a_stream_set_is_within_a_prefix_only_when_all_its_streams_are() {
        let cases = [
            (set(None, None), "order-", false),
            (set(None, None), "", true),
            (set(Some(""), None), "order-", false),
            (set(Some("order-1"), None), "order-", true),
            (set(Some("ord"), None), "order-", false),
            (set(None, Some("order")), "order-", false),
            (set(None, Some("order")), "order", true),
            (set(Some("user-"), Some("order")), "order", true),
            (set(Some("x"), Some("y")), "", true),
        ];
        for (s, p, within) in cases {
            assert_eq!(s.within(p), within, "{s:?} within {p:?}");
        }
    }
}
