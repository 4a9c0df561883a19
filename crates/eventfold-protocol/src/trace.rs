//! W3C trace context on an append: the `traceparent`/`tracestate` headers of the request,
//! parsed once into a [`TraceContext`], and the same keys in each event's metadata (where a
//! CloudEvent's distributed-tracing extension attributes land), checked before anything is
//! stored. A malformed value is refused with `invalid_trace_context` (400) naming the header or
//! the event, never stored unchecked and never silently dropped.

use eventfold_core::{
    Limits, NewEvent, TRACEPARENT_KEY, TRACESTATE_KEY, TraceContext, ValidationError,
};

use crate::codes::ErrorCode;
use crate::error::WireError;

/// The request header carrying the W3C `traceparent`.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The request header carrying the W3C `tracestate`.
pub const TRACESTATE_HEADER: &str = "tracestate";

fn header_error(header: &'static str, why: String) -> WireError {
    WireError::new(
        ErrorCode::InvalidTraceContext,
        format!("the {header} header is not a valid W3C trace context: {why}"),
    )
    .with("header", header)
}

fn header_text<'a>(
    header: &'static str,
    v: Option<&'a [u8]>,
) -> Result<Option<&'a str>, WireError> {
    v.map(|b| {
        std::str::from_utf8(b).map_err(|_| header_error(header, "it is not ASCII text".into()))
    })
    .transpose()
}

/// Parses the request's `traceparent` and `tracestate` header values (raw bytes, `None` when
/// absent). `Ok(None)` when there is neither.
pub fn parse_trace_headers(
    traceparent: Option<&[u8]>,
    tracestate: Option<&[u8]>,
) -> Result<Option<TraceContext>, WireError> {
    let p = header_text(TRACEPARENT_HEADER, traceparent)?;
    let s = header_text(TRACESTATE_HEADER, tracestate)?;
    TraceContext::parse(p, s).map_err(|e: ValidationError| {
        let header = if e.what == TRACESTATE_KEY {
            TRACESTATE_HEADER
        } else {
            TRACEPARENT_HEADER
        };
        header_error(header, e.to_string())
    })
}

/// Parses the `traceparent`/`tracestate` fields of a `POST /appends` line (`None` when it has
/// neither); a malformed one is `invalid_trace_context` with `"field"` naming it.
pub(crate) fn parse_line_trace(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Result<Option<TraceContext>, WireError> {
    TraceContext::parse(traceparent, tracestate).map_err(|e| {
        WireError::new(
            ErrorCode::InvalidTraceContext,
            format!("the line's {}: {e}", e.what),
        )
        .with("field", e.what.to_string())
    })
}

/// Checks the trace context an event's own metadata carries (event number `i` of its batch).
pub(crate) fn check_event_trace(event: &NewEvent, i: usize) -> Result<(), WireError> {
    if !event.metadata.contains_key(TRACEPARENT_KEY) && !event.metadata.contains_key(TRACESTATE_KEY)
    {
        return Ok(());
    }
    TraceContext::from_metadata(&event.metadata)
        .map(drop)
        .map_err(|e| {
            WireError::new(
                ErrorCode::InvalidTraceContext,
                format!("event {i}: metadata.{}: {e}", e.what),
            )
            .with("index", i as u64)
            .with("field", format!("metadata.{}", e.what))
        })
}

/// Gives every event that does not carry its own trace context `ctx` (the request's, or the
/// server's span). Events' own contexts were checked when they were parsed.
///
/// The context counts towards the store's `limits` like any metadata, and it is the server's
/// addition, not the client's: an event it would push over `event_bytes_max` (or a batch over
/// `batch_bytes_max`) is left without it, so a client's append is accepted or refused, and its
/// sizes reported, exactly as without tracing.
pub fn fill_trace_context(events: &mut [NewEvent], ctx: &TraceContext, limits: &Limits) {
    // What writing the context can add to one event's metadata, at most: the two keys, their
    // quotes, colons and commas, and `{}` when the metadata was empty.
    let added_max = 55 + 32 + ctx.state.as_ref().map_or(0, |s| s.as_str().len() + 32);
    let n = events.len();
    let far_from_limits = events
        .iter()
        .all(|e| e.data.len() + e.metadata.json_len() + added_max <= limits.event_bytes_max)
        && events
            .iter()
            .map(|e| e.data.len() + e.metadata.json_len())
            .sum::<usize>()
            + n * added_max
            <= limits.batch_bytes_max;
    if far_from_limits {
        for e in events {
            ctx.fill(&mut e.metadata);
        }
        return;
    }
    let mut total: usize = events.iter().map(NewEvent::size_bytes).sum();
    for e in events {
        if e.metadata.contains_key(TRACEPARENT_KEY) {
            continue;
        }
        let before = e.size_bytes();
        ctx.fill(&mut e.metadata);
        let after = e.size_bytes();
        if after > limits.event_bytes_max || total - before + after > limits.batch_bytes_max {
            e.metadata.remove(TRACEPARENT_KEY);
            e.metadata.remove(TRACESTATE_KEY);
        } else {
            total = total - before + after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_cloudevent, parse_new_events};

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn headers_parse_once_into_a_context() {
        assert_eq!(parse_trace_headers(None, None).unwrap(), None);
        let c = parse_trace_headers(Some(VALID.as_bytes()), Some(b"vendor=x"))
            .unwrap()
            .unwrap();
        assert_eq!(c.parent.to_string(), VALID);
        assert_eq!(c.state.unwrap().as_str(), "vendor=x");
        for (p, s, header) in [
            (Some(&b"00-nope"[..]), None, "traceparent"),
            (Some(&b"\xff"[..]), None, "traceparent"),
            (
                Some(VALID.as_bytes()),
                Some(&b"Bad Key=1"[..]),
                "tracestate",
            ),
            (None, Some(&b"vendor=x"[..]), "tracestate"),
        ] {
            let e = parse_trace_headers(p, s).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.body.error.code, "invalid_trace_context");
            assert_eq!(e.body.error.details["header"], header, "{p:?} {s:?}");
            assert!(e.body.error.message.contains(header));
        }
    }

    #[test]
    fn an_events_own_context_is_checked_and_kept() {
        let own = "00-11111111111111111111111111111111-2222222222222222-00";
        let mut events = parse_new_events(
            format!(r#"[{{"type":"a","data":1,"metadata":{{"traceparent":"{own}"}}}},{{"type":"b","data":2}}]"#)
                .as_bytes(),
        )
        .unwrap();
        let ctx = parse_trace_headers(Some(VALID.as_bytes()), None)
            .unwrap()
            .unwrap();
        fill_trace_context(&mut events, &ctx, &Limits::DEFAULT);
        assert_eq!(events[0].metadata.get_str("traceparent"), Some(own));
        assert_eq!(events[1].metadata.get_str("traceparent"), Some(VALID));
        let e = parse_new_events(
            br#"[{"type":"a","data":1},{"type":"a","data":1,"metadata":{"traceparent":"x"}}]"#,
        )
        .unwrap_err();
        assert_eq!(e.body.error.code, "invalid_trace_context");
        assert_eq!(e.body.error.details["index"], 1);
        assert_eq!(e.body.error.details["field"], "metadata.traceparent");
    }

    #[test]
    fn an_append_line_carries_its_own_context() {
        let line = format!(
            r#"{{"stream":"s-1","events":[{{"type":"t","data":1}}],"traceparent":"{VALID}","tracestate":"k=v"}}"#
        );
        let a = crate::parse_append_line(line.as_bytes()).unwrap();
        let c = a.trace.expect("the line's context");
        assert_eq!(c.parent.to_string(), VALID);
        assert_eq!(c.state.unwrap().as_str(), "k=v");
        let a = crate::parse_append_line(br#"{"stream":"s-1","events":[{"type":"t","data":1}]}"#)
            .unwrap();
        assert_eq!(a.trace, None);
        for (line, field) in [
            (
                r#"{"stream":"s-1","events":[{"type":"t","data":1}],"traceparent":"00-x"}"#,
                "traceparent",
            ),
            (
                r#"{"stream":"s-1","events":[{"type":"t","data":1}],"tracestate":"k=v"}"#,
                "tracestate",
            ),
        ] {
            let e = crate::parse_append_line(line.as_bytes()).unwrap_err();
            assert_eq!(e.body.error.code, "invalid_trace_context", "{line}");
            assert_eq!(e.body.error.details["field"], field, "{line}");
        }
    }

    #[test]
    fn the_context_never_pushes_an_event_over_the_limits() {
        let ctx = parse_trace_headers(Some(VALID.as_bytes()), None)
            .unwrap()
            .unwrap();
        let limits = Limits {
            event_bytes_max: 200,
            batch_bytes_max: 400,
            ..Limits::DEFAULT
        };
        let event = |n: usize| {
            NewEvent::bytes(
                eventfold_core::EventType::new("t").unwrap(),
                eventfold_core::ContentType::json(),
                vec![b'x'; n],
            )
        };
        // Room for the context in the first; none in the second (at the limit already).
        let mut events = vec![event(10), event(200)];
        fill_trace_context(&mut events, &ctx, &limits);
        assert_eq!(events[0].metadata.get_str("traceparent"), Some(VALID));
        assert!(events[1].metadata.is_empty());
        assert_eq!(events[1].size_bytes(), 200);
        // The batch limit holds too: 320 bytes, room for one context (73 bytes), not two.
        let mut events = vec![event(100), event(100), event(120)];
        fill_trace_context(&mut events, &ctx, &limits);
        assert!(events[0].metadata.contains_key("traceparent"));
        assert!(!events[1].metadata.contains_key("traceparent"));
        assert!(!events[2].metadata.contains_key("traceparent"));
        assert!(events.iter().map(NewEvent::size_bytes).sum::<usize>() <= 400);
    }

    #[test]
    fn cloudevents_tracing_extension_is_checked() {
        let ok = parse_cloudevent(
            format!(r#"{{"specversion":"1.0","id":"a","source":"s","type":"t","traceparent":"{VALID}","tracestate":"k=v"}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(ok[0].metadata.get_str("traceparent"), Some(VALID));
        assert_eq!(ok[0].metadata.get_str("tracestate"), Some("k=v"));
        let e = parse_cloudevent(
            br#"{"specversion":"1.0","id":"a","source":"s","type":"t","traceparent":"00-bad"}"#,
        )
        .unwrap_err();
        assert_eq!(e.body.error.code, "invalid_trace_context");
    }
}
