//! Query strings of reads and subscriptions, parsed once and strictly: keys and values are
//! percent-decoded before anything looks at them, a key given twice is refused, an unknown
//! parameter or a bad value is a 400 that names it.

use eventfold_core::{
    Direction, EventFilter, ExpectedRevision, Position, ReadAll, ReadFrom, ReadStream, Revision,
    SubscribeFrom, Timestamp,
};

use crate::codes::ErrorCode;
use crate::error::WireError;

/// A request's query string, decoded once: keys and values percent-decoded (`+` is a space),
/// in the order given, every key at most once. Everything that reads a query (the handlers and
/// the authorization of what they will do) reads this one value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryPairs(Vec<(String, String)>);

/// Most parameters one query string may carry; no route knows more than a handful.
pub const QUERY_PARAMS_MAX: usize = 32;

impl QueryPairs {
    /// Decodes the raw query string (`None` or empty: no parameters). Refuses a key given twice
    /// (`400 duplicate_query_parameter`, after decoding, so `a=1&%61=2` is a repeat), text that
    /// is not UTF-8 once decoded, and more than [`QUERY_PARAMS_MAX`] parameters.
    pub fn parse(raw: Option<&str>) -> Result<Self, WireError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key = decode(k)?;
            let value = decode(v)?;
            if pairs.iter().any(|(seen, _)| *seen == key) {
                return Err(WireError::new(ErrorCode::DuplicateQueryParameter,
                    format!(
                        "query parameter `{key}` is given more than once; give each parameter once (several event types go in one value: type=a,b)"
                    ),
                )
                .with("parameter", key));
            }
            if pairs.len() == QUERY_PARAMS_MAX {
                return Err(WireError::new(
                    ErrorCode::InvalidQuery,
                    format!(
                        "the query string has more than {QUERY_PARAMS_MAX} parameters; no route takes that many"
                    ),
                ));
            }
            pairs.push((key, value));
        }
        Ok(QueryPairs(pairs))
    }

    /// Pairs from already decoded keys and values (tests and in-process callers); the same
    /// rules as [`parse`](Self::parse) apply to repeated keys.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, WireError> {
        let mut raw = String::new();
        for (k, v) in pairs {
            if !raw.is_empty() {
                raw.push('&');
            }
            raw.push_str(&encode(&k.into()));
            raw.push('=');
            raw.push_str(&encode(&v.into()));
        }
        QueryPairs::parse(Some(&raw))
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `key` was given.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The pairs in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Refuses any parameter not in `known` (a 400 naming it and listing the known ones).
    pub fn check_known(&self, known: &[&str]) -> Result<(), WireError> {
        for (k, v) in self.iter() {
            if !known.contains(&k) {
                let known = if known.is_empty() {
                    "this route takes no query parameters".to_owned()
                } else {
                    format!("known parameters: {}", known.join(", "))
                };
                return Err(bad(k, v, &format!("is not known here; {known}")));
            }
        }
        Ok(())
    }

    /// An unsigned integer parameter, if given.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, WireError> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(key, v, "must be an unsigned integer"))
            })
            .transpose()
    }
}

fn decode(s: &str) -> Result<String, WireError> {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            WireError::new(
                ErrorCode::InvalidQuery,
                format!("the query string part `{s}` is not UTF-8 once percent-decoded"),
            )
        })
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Default `limit` of reads (contract).
pub const READ_LIMIT_DEFAULT: usize = 100;

fn bad(param: &str, value: &str, why: &str) -> WireError {
    WireError::new(
        ErrorCode::InvalidQuery,
        format!("query parameter `{param}={value}` {why}"),
    )
    .with("parameter", param)
}

fn parse_from(q: &QueryPairs) -> Result<Option<ReadFrom<u64>>, WireError> {
    Ok(match q.get("from") {
        None => None,
        Some("start") => Some(ReadFrom::Start),
        Some("end") => Some(ReadFrom::End),
        Some(v) => Some(ReadFrom::At(v.parse::<u64>().map_err(|_| {
            bad("from", v, "must be `start`, `end` or an unsigned integer")
        })?)),
    })
}

fn parse_direction_and_from(q: &QueryPairs) -> Result<(Direction, ReadFrom<u64>), WireError> {
    let from = parse_from(q)?;
    let direction = match q.get("direction") {
        Some("forward") => Direction::Forward,
        Some("backward") => Direction::Backward,
        Some(v) => return Err(bad("direction", v, "must be `forward` or `backward`")),
        // `from=end` reads backward unless told otherwise.
        None if from == Some(ReadFrom::End) => Direction::Backward,
        None => Direction::Forward,
    };
    let from = from.unwrap_or(match direction {
        Direction::Forward => ReadFrom::Start,
        Direction::Backward => ReadFrom::End,
    });
    Ok((direction, from))
}

fn parse_limit(q: &QueryPairs) -> Result<usize, WireError> {
    match q.get("limit") {
        None => Ok(READ_LIMIT_DEFAULT),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad("limit", v, "must be an unsigned integer")),
    }
}

/// `until`: an RFC 3339 time (absent: no bound).
fn parse_until(q: &QueryPairs) -> Result<Option<Timestamp>, WireError> {
    q.get("until")
        .map(|v| {
            Timestamp::parse_rfc3339(v).ok_or_else(|| {
                bad(
                    "until",
                    v,
                    "must be an RFC 3339 time in UTC such as `2026-01-31T12:00:00Z` or `2026-01-31T12:00:00.123456Z`",
                )
            })
        })
        .transpose()
}

fn map_from<T>(f: ReadFrom<u64>, wrap: fn(u64) -> T) -> ReadFrom<T> {
    match f {
        ReadFrom::Start => ReadFrom::Start,
        ReadFrom::End => ReadFrom::End,
        ReadFrom::At(n) => ReadFrom::At(wrap(n)),
    }
}

fn parse_filter(q: &QueryPairs) -> Result<EventFilter, WireError> {
    let mut filter = EventFilter::default();
    if let Some(types) = q.get("type") {
        for t in types.split(',').filter(|t| !t.is_empty()) {
            filter
                .push_type(t)
                .map_err(|e| bad("type", t, &format!("is not an {}: {}", e.what, e.reason)))?;
        }
    }
    if let Some(c) = q.get("category") {
        if c.is_empty() {
            return Err(bad("category", c, "must not be empty"));
        }
        filter.category = Some(c.to_owned());
    }
    if let Some(p) = q.get("stream_prefix") {
        filter.stream_prefix = Some(p.to_owned());
    }
    if let Some(v) = q.get("query") {
        filter.query = v.parse().map_err(|e: eventfold_core::ValidationError| {
            bad("query", v, &format!("is not a query: {}", e.reason))
        })?;
    }
    Ok(filter)
}

/// The query parameters of a stream read.
pub const READ_STREAM_PARAMS: &[&str] = &["from", "direction", "limit", "until"];
/// The query parameters of a `$all` read.
pub const READ_ALL_PARAMS: &[&str] = &[
    "from",
    "direction",
    "limit",
    "type",
    "category",
    "stream_prefix",
    "query",
    "until",
];
/// The query parameters of a stream subscription.
pub const SUBSCRIBE_STREAM_PARAMS: &[&str] = &["from"];
/// The query parameters of a `$all` subscription.
pub const SUBSCRIBE_ALL_PARAMS: &[&str] = &["from", "type", "category", "stream_prefix", "query"];

/// `GET /streams/{stream}`: `from`, `direction`, `limit`, `until`.
pub fn read_stream_query(q: &QueryPairs) -> Result<ReadStream, WireError> {
    q.check_known(READ_STREAM_PARAMS)?;
    let (direction, from) = parse_direction_and_from(q)?;
    Ok(ReadStream {
        from: map_from(from, Revision),
        direction,
        limit: parse_limit(q)?,
        until: parse_until(q)?,
    })
}

/// `GET /all`: `from`, `direction`, `limit`, `type`, `category`, `stream_prefix`, `query`
/// (the JSON form of `eventfold_core::Query`), `until`.
pub fn read_all_query(q: &QueryPairs) -> Result<ReadAll, WireError> {
    q.check_known(READ_ALL_PARAMS)?;
    let (direction, from) = parse_direction_and_from(q)?;
    Ok(ReadAll {
        from: map_from(from, Position),
        direction,
        limit: parse_limit(q)?,
        filter: parse_filter(q)?,
        until: parse_until(q)?,
    })
}

fn subscribe_from<T>(q: &QueryPairs, wrap: fn(u64) -> T) -> Result<SubscribeFrom<T>, WireError> {
    Ok(match parse_from(q)? {
        None | Some(ReadFrom::End) => SubscribeFrom::End,
        Some(ReadFrom::Start) => SubscribeFrom::Start,
        Some(ReadFrom::At(n)) => SubscribeFrom::At(wrap(n)),
    })
}

/// `GET /streams/{stream}/subscribe`: `from` (default `end`).
pub fn subscribe_stream_query(q: &QueryPairs) -> Result<SubscribeFrom<Revision>, WireError> {
    q.check_known(SUBSCRIBE_STREAM_PARAMS)?;
    subscribe_from(q, Revision)
}

/// `GET /all/subscribe`: `from` (default `end`) and the filters of `/all`.
pub fn subscribe_all_query(
    q: &QueryPairs,
) -> Result<(SubscribeFrom<Position>, EventFilter), WireError> {
    q.check_known(SUBSCRIBE_ALL_PARAMS)?;
    Ok((subscribe_from(q, Position)?, parse_filter(q)?))
}

/// The `Expected-Revision` header (absent: `any`).
pub fn parse_expected_revision(header: Option<&str>) -> Result<ExpectedRevision, WireError> {
    match header {
        None => Ok(ExpectedRevision::Any),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| WireError::invalid(&e).with("header", "Expected-Revision")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> QueryPairs {
        QueryPairs::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn code(raw: &str) -> String {
        QueryPairs::parse(Some(raw)).unwrap_err().body.error.code
    }

    #[test]
    fn a_query_string_is_decoded_once_and_keys_are_unique() {
        let p = QueryPairs::parse(Some("stream%5Fprefix=order%2D&type=a+b&flag")).unwrap();
        assert_eq!(p.get("stream_prefix"), Some("order-"));
        assert_eq!(p.get("type"), Some("a b"));
        assert_eq!(p.get("flag"), Some(""));
        assert_eq!(QueryPairs::parse(None).unwrap(), QueryPairs::default());
        assert_eq!(
            QueryPairs::parse(Some("&&")).unwrap(),
            QueryPairs::default()
        );
        for repeated in [
            "stream_prefix=order-&stream_prefix=",
            "stream_prefix=order-&stream%5Fprefix=",
            "prefix=a&prefix=b",
            "%70refix=a&prefix=a",
            "limit&limit",
        ] {
            assert_eq!(code(repeated), "duplicate_query_parameter", "{repeated}");
        }
        let e = QueryPairs::parse(Some("a=1&a=2")).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.body.error.message.contains("`a`"),
            "{}",
            e.body.error.message
        );
        assert_eq!(code("a=%FF"), "invalid_query");
        let many: Vec<String> = (0..=QUERY_PARAMS_MAX).map(|i| format!("k{i}=v")).collect();
        assert_eq!(code(&many.join("&")), "invalid_query");
        let round = QueryPairs::from_pairs([("stream_prefix", "a&b=c d%")]).unwrap();
        assert_eq!(round.get("stream_prefix"), Some("a&b=c d%"));
        assert!(QueryPairs::from_pairs([("x", "1"), ("x", "2")]).is_err());
    }

    #[test]
    fn reads_default_as_the_contract_says() {
        let r = read_stream_query(&q(&[])).unwrap();
        assert_eq!(
            (r.from, r.direction, r.limit),
            (ReadFrom::Start, Direction::Forward, 100)
        );
        let r = read_stream_query(&q(&[("from", "end")])).unwrap();
        assert_eq!((r.from, r.direction), (ReadFrom::End, Direction::Backward));
        let r = read_stream_query(&q(&[("direction", "backward")])).unwrap();
        assert_eq!(r.from, ReadFrom::End);
        let r =
            read_all_query(&q(&[("from", "7"), ("type", "a,b"), ("category", "order")])).unwrap();
        assert_eq!(r.from, ReadFrom::At(Position(7)));
        assert_eq!(r.filter.types.len(), 2);
        // An entry with `*` or `#` is a pattern, parsed here once; the others stay exact.
        let r = read_all_query(&q(&[("type", "a,order.*,#.failed")])).unwrap();
        assert_eq!(r.filter.types.len(), 1);
        let patterns: Vec<&str> = r.filter.type_patterns.iter().map(|p| p.as_str()).collect();
        assert_eq!(patterns, ["order.*", "#.failed"]);
        let (_, f) = subscribe_all_query(&q(&[("type", "order.#")])).unwrap();
        assert!(
            f.matches("order-1", "order.item.added", |_| false)
                && !f.matches("order-1", "orders", |_| false)
        );
        // A query, in its JSON form; a malformed one names the parameter.
        let r = read_all_query(&q(&[(
            "query",
            r#"{"items":[{"types":["a"],"tags":["course:c1"]},{"tags":["s7"]}]}"#,
        )]))
        .unwrap();
        assert_eq!(r.filter.query.items().len(), 2);
        assert!(r.filter.matches("x-1", "b", |t| t == "s7"));
        assert!(!r.filter.matches("x-1", "b", |t| t == "course:c1"));
        let (_, f) =
            subscribe_all_query(&q(&[("query", r#"{"items":[{"tags":["s7"]}]}"#)])).unwrap();
        assert!(f.matches("x-1", "b", |t| t == "s7"));
        for bad in [r#"{"items":[{"tags":["a b"]}]}"#, "[]", "course:c1"] {
            let e = read_all_query(&q(&[("query", bad)])).unwrap_err();
            assert_eq!(e.body.error.code, "invalid_query", "{bad}");
            assert_eq!(e.body.error.details["parameter"], "query", "{bad}");
        }
        let e = read_all_query(&q(&[("type", "a,order.*x")])).unwrap_err();
        assert_eq!(e.body.error.code, "invalid_query");
        assert!(
            e.body.error.message.contains("`type=order.*x`")
                && e.body.error.message.contains("event type pattern"),
            "{}",
            e.body.error.message
        );
        for bad in [
            &[("from", "x")][..],
            &[("limit", "-1")],
            &[("direction", "up")],
            &[("colour", "red")],
            &[("category", "")],
        ] {
            assert_eq!(read_all_query(&q(bad)).unwrap_err().status, 400);
        }
        // `until` is parsed once into a timestamp, on both reads; subscriptions do not take it.
        let t = "2026-01-31T12:00:00.5Z";
        let want = Timestamp::parse_rfc3339(t);
        assert!(want.is_some());
        assert_eq!(read_stream_query(&q(&[("until", t)])).unwrap().until, want);
        assert_eq!(read_all_query(&q(&[("until", t)])).unwrap().until, want);
        assert_eq!(read_all_query(&q(&[])).unwrap().until, None);
        for v in ["yesterday", "2026-01-31", "2026-13-01T00:00:00Z", ""] {
            let e = read_stream_query(&q(&[("until", v)])).unwrap_err();
            assert_eq!(e.body.error.code, "invalid_query", "{v}");
            assert!(e.body.error.message.contains("RFC 3339"), "{v}");
        }
        assert!(subscribe_all_query(&q(&[("until", t)])).is_err());
        assert_eq!(subscribe_all_query(&q(&[])).unwrap().0, SubscribeFrom::End);
        assert_eq!(
            parse_expected_revision(Some("no-stream")).unwrap(),
            ExpectedRevision::NoStream
        );
        assert_eq!(
            parse_expected_revision(Some("bogus"))
                .unwrap_err()
                .body
                .error
                .code,
            "invalid_expected_revision"
        );
    }
}
