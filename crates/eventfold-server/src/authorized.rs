//! Requests parsed once and authorized on what was parsed.
//!
//! A handler never reads its path parameters, query string or bearer token itself: it takes an
//! [`Authorized<R>`], which only [`FromRequestParts`] below can build. It identifies the caller
//! (`401`), parses the request into `R` once (`400`: percent-decoded keys, no repeated key,
//! validating newtypes), and checks the caller's rights against `R::scope()` of that same
//! value (`403`). So the streams a request is allowed to touch and the streams its handler then
//! touches come from one parse and cannot disagree. The routes that need no token
//! (`/health/*`) are the ones that take no `Authorized`; a table-driven test walks every
//! operation of the route table and checks that the others refuse a token without rights.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use eventfold_core::StreamName;
use eventfold_groups::GroupName;
use eventfold_protocol::{ErrorCode, QueryPairs};

use crate::auth::{Right, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A request as its route parses it, and what it needs.
pub trait ApiRequest: Sized + Send + 'static {
    /// The query parameters the route takes (any other is refused); the API document lists
    /// these.
    const PARAMS: &'static [&'static str];
    /// Parses the route's path parameters (percent-decoded) and query string (decoded, each
    /// key at most once). Nothing else in the server reads them.
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self>;
    /// The right this parsed request needs, on the streams it acts on.
    fn scope(&self) -> Scope;
}

/// A parsed request that the caller is allowed to make. Only the extractor builds one.
#[derive(Debug)]
pub struct Authorized<R>(R);

impl<R> Authorized<R> {
    /// The parsed request.
    pub fn into_inner(self) -> R {
        self.0
    }
}

impl<R> std::ops::Deref for Authorized<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.0
    }
}

impl<R: ApiRequest> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        // Who, before anything about the request is looked at or answered.
        let caller = st.auth.authenticate(parts.headers.get(AUTHORIZATION))?;
        let raw = RawPathParams::from_request_parts(parts, st)
            .await
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidPath,
                    format!("the path is not valid: {e}"),
                )
            })?;
        let path = PathParams(
            raw.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        );
        let query = QueryPairs::parse(parts.uri.query())?;
        let request = R::parse(&path, &query)?;
        st.auth.authorize(caller, &request.scope())?;
        Ok(Authorized(request))
    }
}

/// A route's path parameters, percent-decoded.
#[derive(Debug)]
pub struct PathParams(Vec<(String, String)>);

impl PathParams {
    /// Parameters from (name, decoded value) pairs: what the router hands over.
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Self {
        PathParams(pairs)
    }

    /// The parameter `name` of the route's path.
    pub fn get(&self, name: &str) -> ApiResult<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                tracing::error!(
                    name,
                    "a route's request asks for a path parameter it does not have"
                );
                ApiError::new(
                    ErrorCode::InternalError,
                    format!("the route has no path parameter `{name}`"),
                )
            })
    }

    /// The stream named by the `{stream}` parameter, validated.
    pub fn stream(&self) -> ApiResult<StreamName> {
        Ok(StreamName::new(self.get("stream")?)?)
    }

    /// The group named by the `{group}` parameter, validated.
    pub fn group(&self) -> ApiResult<GroupName> {
        Ok(GroupName::new(self.get("group")?)?)
    }
}

/// The right a generic request needs, as a type.
pub trait Needs: Send + Sync + 'static {
    /// The right.
    const RIGHT: Right;
}

/// Needs `read`.
#[derive(Debug)]
pub struct Read;
/// Needs `write`.
#[derive(Debug)]
pub struct Write;
/// Needs `admin`.
#[derive(Debug)]
pub struct Admin;

impl Needs for Read {
    const RIGHT: Right = Right::Read;
}
impl Needs for Write {
    const RIGHT: Right = Right::Write;
}
impl Needs for Admin {
    const RIGHT: Right = Right::Admin;
}

/// A request on the stream of its `{stream}` path parameter, with no query parameters.
#[derive(Debug)]
pub struct OnStream<N> {
    /// The stream.
    pub stream: StreamName,
    needs: PhantomData<N>,
}

impl<N: Needs> ApiRequest for OnStream<N> {
    const PARAMS: &'static [&'static str] = &[];
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        query.check_known(Self::PARAMS)?;
        Ok(OnStream {
            stream: path.stream()?,
            needs: PhantomData,
        })
    }
    fn scope(&self) -> Scope {
        Scope::Stream(N::RIGHT, self.stream.clone())
    }
}

/// A request on the consumer group of its `{group}` path parameter, with no query
/// parameters. A group reads every stream, so it needs the right over all of them.
#[derive(Debug)]
pub struct OnGroup<N> {
    /// The group.
    pub group: GroupName,
    needs: PhantomData<N>,
}

impl<N: Needs> ApiRequest for OnGroup<N> {
    const PARAMS: &'static [&'static str] = &[];
    fn parse(path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        query.check_known(Self::PARAMS)?;
        Ok(OnGroup {
            group: path.group()?,
            needs: PhantomData,
        })
    }
    fn scope(&self) -> Scope {
        Scope::every(N::RIGHT)
    }
}

/// A request about the whole server, with no query parameters: it needs the right `N` over
/// every stream (`read` for metrics, the API document, the list of groups; `admin` for a
/// backup).
#[derive(Debug)]
pub struct OnServer<N = Read>(PhantomData<N>);

impl<N: Needs> ApiRequest for OnServer<N> {
    const PARAMS: &'static [&'static str] = &[];
    fn parse(_path: &PathParams, query: &QueryPairs) -> ApiResult<Self> {
        query.check_known(Self::PARAMS)?;
        Ok(OnServer(PhantomData))
    }
    fn scope(&self) -> Scope {
        Scope::every(N::RIGHT)
    }
}
