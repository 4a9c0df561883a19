//! Query parameters of reads and subscriptions, parsed strictly: an unknown parameter or a bad
//! value is a 400 that names it.

use eventfold_core::{
    Direction, EventFilter, EventType, ExpectedRevision, Position, ReadAll, ReadFrom, ReadStream,
    Revision, SubscribeFrom,
};

use crate::error::WireError;

/// Decoded query parameters, in order.
pub type Query = [(String, String)];

/// Default `limit` of reads (contract).
pub const READ_LIMIT_DEFAULT: usize = 100;

fn bad(param: &str, value: &str, why: &str) -> WireError {
    WireError::new(
        400,
        "invalid_query",
        format!("query parameter `{param}={value}` {why}"),
    )
    .with("parameter", param)
}

fn check_known(q: &Query, known: &[&str]) -> Result<(), WireError> {
    for (k, v) in q {
        if !known.contains(&k.as_str()) {
            return Err(bad(
                k,
                v,
                &format!("is not known here; known parameters: {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn get<'a>(q: &'a Query, key: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn parse_from(q: &Query) -> Result<Option<ReadFrom<u64>>, WireError> {
    Ok(match get(q, "from") {
        None => None,
        Some("start") => Some(ReadFrom::Start),
        Some("end") => Some(ReadFrom::End),
        Some(v) => Some(ReadFrom::At(v.parse::<u64>().map_err(|_| {
            bad("from", v, "must be `start`, `end` or an unsigned integer")
        })?)),
    })
}

fn parse_direction_and_from(q: &Query) -> Result<(Direction, ReadFrom<u64>), WireError> {
    let from = parse_from(q)?;
    let direction = match get(q, "direction") {
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

fn parse_limit(q: &Query) -> Result<usize, WireError> {
    match get(q, "limit") {
        None => Ok(READ_LIMIT_DEFAULT),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad("limit", v, "must be an unsigned integer")),
    }
}

fn map_from<T>(f: ReadFrom<u64>, wrap: fn(u64) -> T) -> ReadFrom<T> {
    match f {
        ReadFrom::Start => ReadFrom::Start,
        ReadFrom::End => ReadFrom::End,
        ReadFrom::At(n) => ReadFrom::At(wrap(n)),
    }
}

fn parse_filter(q: &Query) -> Result<EventFilter, WireError> {
    let mut filter = EventFilter::default();
    if let Some(types) = get(q, "type") {
        for t in types.split(',').filter(|t| !t.is_empty()) {
            filter.types.push(
                EventType::new(t)
                    .map_err(|e| bad("type", t, &format!("is not an event type: {}", e.reason)))?,
            );
        }
    }
    if let Some(c) = get(q, "category") {
        if c.is_empty() {
            return Err(bad("category", c, "must not be empty"));
        }
        filter.category = Some(c.to_owned());
    }
    if let Some(p) = get(q, "stream_prefix") {
        filter.stream_prefix = Some(p.to_owned());
    }
    Ok(filter)
}

/// `GET /streams/{stream}`: `from`, `direction`, `limit`.
pub fn read_stream_query(q: &Query) -> Result<ReadStream, WireError> {
    check_known(q, &["from", "direction", "limit"])?;
    let (direction, from) = parse_direction_and_from(q)?;
    Ok(ReadStream {
        from: map_from(from, Revision),
        direction,
        limit: parse_limit(q)?,
    })
}

/// `GET /all`: `from`, `direction`, `limit`, `type`, `category`, `stream_prefix`.
pub fn read_all_query(q: &Query) -> Result<ReadAll, WireError> {
    check_known(
        q,
        &[
            "from",
            "direction",
            "limit",
            "type",
            "category",
            "stream_prefix",
        ],
    )?;
    let (direction, from) = parse_direction_and_from(q)?;
    Ok(ReadAll {
        from: map_from(from, Position),
        direction,
        limit: parse_limit(q)?,
        filter: parse_filter(q)?,
    })
}

fn subscribe_from<T>(q: &Query, wrap: fn(u64) -> T) -> Result<SubscribeFrom<T>, WireError> {
    Ok(match parse_from(q)? {
        None | Some(ReadFrom::End) => SubscribeFrom::End,
        Some(ReadFrom::Start) => SubscribeFrom::Start,
        Some(ReadFrom::At(n)) => SubscribeFrom::At(wrap(n)),
    })
}

/// `GET /streams/{stream}/subscribe`: `from` (default `end`).
pub fn subscribe_stream_query(q: &Query) -> Result<SubscribeFrom<Revision>, WireError> {
    check_known(q, &["from"])?;
    subscribe_from(q, Revision)
}

/// `GET /all/subscribe`: `from` (default `end`) and the filters of `/all`.
pub fn subscribe_all_query(q: &Query) -> Result<(SubscribeFrom<Position>, EventFilter), WireError> {
    check_known(q, &["from", "type", "category", "stream_prefix"])?;
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

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
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
        for bad in [
            &[("from", "x")][..],
            &[("limit", "-1")],
            &[("direction", "up")],
            &[("colour", "red")],
            &[("category", "")],
        ] {
            assert_eq!(read_all_query(&q(bad)).unwrap_err().status, 400);
        }
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
