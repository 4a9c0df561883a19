//! Entry points for the fuzz targets in `fuzz/` (coverage-guided, libFuzzer) and for the test
//! that replays their corpus (`tests/it/fuzz_corpus.rs`): the server's own request parsers,
//! called as the routes call them, without a socket or a store. Not API; hidden from the docs.
//!
//! Every function must return for any input: a request the parsers refuse is an error answer,
//! never a panic. Each also serializes the error body it would send, as the route does.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use eventfold_protocol::groups::{
    AckRequest, GroupSettings, NackRequest, PullRequest, ReplayRequest,
};
use eventfold_protocol::{QueryPairs, parse_append_line};

use crate::authorized::PathParams;
use crate::error::{ApiError, ApiResult};
use crate::routes::table::{self, ParseFn};
use crate::routes::{appends, group_bodies, groups, streams};

/// Serializes the answer a route would send for `r` (the error body, or nothing).
fn answer<T>(r: ApiResult<T>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => {
            let body = serde_json::to_vec(&e.0.body).expect("an error body always serializes");
            assert!(!body.is_empty());
            assert!(
                e.0.status >= 400 && e.0.status < 500,
                "a parse error is a client error, not {}",
                e.0.status
            );
            false
        }
    }
}

/// The body of `POST /streams/{stream}` with its `Content-Type` header (JSON events, a
/// structured CloudEvent, or a CloudEvents batch, by type). Whether it parsed.
pub fn append_body(content_type: Option<&str>, body: &[u8]) -> bool {
    answer(streams::parse_append_body(content_type, body))
}

/// A `POST /streams/{stream}` request's headers and body as the route parses them: a
/// binary-mode CloudEvent when a `ce-specversion` header is there (attributes in `ce-*`
/// headers, percent-decoded), else the body by its `Content-Type`. Header lines that are not
/// valid header names or values are left out, as an HTTP server would refuse them before the
/// route. Whether it parsed.
pub fn append_request(header_lines: &[(&[u8], &[u8])], body: &[u8]) -> bool {
    let mut h = HeaderMap::new();
    for (name, value) in header_lines {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            h.append(name, value);
        }
    }
    answer(streams::parse_append_request(&h, body))
}

/// The body of `POST /appends`: NDJSON, one append per line, each line parsed as the pipeline
/// parses it. The lines that parsed.
pub fn append_lines(body: &[u8]) -> usize {
    let mut ok = 0;
    for (n, line) in body
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .enumerate()
    {
        let parsed = parse_append_line(line)
            .map_err(ApiError::from)
            .map_err(|e| appends::with_line(e, n as u64));
        ok += usize::from(answer(parsed));
    }
    ok
}

/// Every route's parse of its path parameters and query string.
fn parsers() -> &'static [ParseFn] {
    static PARSERS: OnceLock<Vec<ParseFn>> = OnceLock::new();
    PARSERS.get_or_init(|| {
        table::operations()
            .into_iter()
            .filter_map(|op| op.parse)
            .collect()
    })
}

/// A request's path parameter (`{stream}`, `{group}`, `{subject}`, `{type}`, `{version}`, decoded) and raw query string, parsed by
/// every route's request type as its extractor does. The routes that accepted them.
pub fn request(path_value: &str, query: Option<&str>) -> usize {
    let query = match QueryPairs::parse(query) {
        Ok(q) => q,
        Err(e) => {
            answer::<()>(Err(e.into()));
            return 0;
        }
    };
    let path = PathParams::new(vec![
        ("stream".into(), path_value.into()),
        ("group".into(), path_value.into()),
        ("subject".into(), path_value.into()),
        ("type".into(), path_value.into()),
        ("version".into(), path_value.into()),
    ]);
    parsers()
        .iter()
        .filter(|parse| answer(parse(&path, &query)))
        .count()
}

/// The headers the routes read themselves: `Expected-Revision`, `traceparent`, `tracestate`,
/// as raw bytes; an empty one is no header (and a value that is no valid header value is
/// refused by HTTP before any route).
pub fn headers(expected_revision: &[u8], traceparent: &[u8], tracestate: &[u8]) -> bool {
    let mut h = HeaderMap::new();
    for (name, v) in [
        ("expected-revision", expected_revision),
        (eventfold_protocol::TRACEPARENT_HEADER, traceparent),
        (eventfold_protocol::TRACESTATE_HEADER, tracestate),
    ] {
        if v.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_bytes(v) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    answer(streams::expected_revision(&h)) & answer(streams::trace_headers(&h))
}

/// A JSON request body of the groups' routes (`PUT` settings, pull, ack, nack, replay) and of
/// `PUT /streams/{stream}/metadata`, and an append's condition, parsed as each route parses it. The routes that took it.
pub fn json_bodies(body: &[u8]) -> usize {
    let settings =
        groups::parse_json_body::<GroupSettings>(body).and_then(group_bodies::config_from_wire);
    [
        answer(settings),
        answer(groups::parse_json_body::<PullRequest>(body)),
        answer(groups::parse_json_body::<AckRequest>(body)),
        answer(groups::parse_json_body::<NackRequest>(body)),
        answer(groups::parse_json_body::<ReplayRequest>(body)),
        answer(streams::parse_stream_metadata(body)),
        // The `Append-Condition` header's JSON (and a `POST /appends` line's `condition`).
        std::str::from_utf8(body)
            .ok()
            .is_some_and(|t| eventfold_protocol::parse_append_condition(t).is_ok()),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

/// The fuzz targets of this crate, by name: a folder of `fuzz/corpus/` each.
pub const TARGETS: &[&str] = &[
    "append_body",
    "append_lines",
    "request",
    "headers",
    "json_bodies",
    "append_request",
];

/// Up to the first line end, and the rest.
fn first_line(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == b'\n') {
        Some(nl) => (&data[..nl], Some(&data[nl + 1..])),
        None => (data, None),
    }
}

/// Runs the target `name` on one input. The inputs are text where they can be, so the corpus
/// reads: `append_body` is the Content-Type, a line end, the body (an empty first line: no
/// header); `request` the path parameter, a line end, the query string; `headers` the three
/// header values on three lines; `append_request` `name: value` header lines, an empty line,
/// the body; the others the body as it is.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "append_body" => {
            let (first, body) = first_line(data);
            let content_type = String::from_utf8_lossy(first);
            let content_type = (!content_type.is_empty()).then_some(&*content_type);
            append_body(content_type, body.unwrap_or_default());
        }
        "append_lines" => {
            append_lines(data);
        }
        "request" => {
            let (path, query) = first_line(data);
            let query = query.map(String::from_utf8_lossy);
            request(&String::from_utf8_lossy(path), query.as_deref());
        }
        "headers" => {
            let mut lines = data.splitn(3, |&b| b == b'\n');
            let (a, b, c) = (lines.next(), lines.next(), lines.next());
            headers(
                a.unwrap_or_default(),
                b.unwrap_or_default(),
                c.unwrap_or_default(),
            );
        }
        "json_bodies" => {
            json_bodies(data);
        }
        "append_request" => {
            // `name: value` header lines up to an empty line, then the body.
            let mut rest = data;
            let mut header_lines = Vec::new();
            loop {
                let (line, after) = first_line(rest);
                let Some(after) = after else {
                    rest = line;
                    break;
                };
                rest = after;
                if line.is_empty() {
                    break;
                }
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let value = line.get(colon + 1..).unwrap_or_default();
                header_lines.push((&line[..colon], value.trim_ascii()));
            }
            append_request(&header_lines, rest);
        }
        other => panic!("no fuzz target {other:?} in eventfold-server; see TARGETS"),
    }
}
