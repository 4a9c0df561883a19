//! Content negotiation: JSON by default, NDJSON or Server-Sent Events when asked for, and
//! CloudEvents (a batch, or NDJSON and SSE whose items are structured CloudEvents) when asked
//! with `application/cloudevents-batch+json` or the media type parameter `format=cloudevents`.

use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use eventfold_protocol::{CLOUDEVENTS_BATCH_JSON, NDJSON};

/// What a client asked to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    Json,
    Ndjson,
    EventStream,
    /// A read page as `application/cloudevents-batch+json`.
    CloudEventsBatch,
}

/// What a client asked to receive, and in which shape each event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub wants: Wants,
    /// Each event as a structured CloudEvent (always so for [`Wants::CloudEventsBatch`]).
    pub cloudevents: bool,
}

pub use eventfold_protocol::{EVENT_STREAM_CLOUDEVENTS, NDJSON_CLOUDEVENTS};

/// Whether a media range's parameters hold `format=cloudevents` (any case, quoted or not).
fn asks_cloudevents(params: &[&str]) -> bool {
    params.iter().any(|p| {
        let mut kv = p.splitn(2, '=');
        let k = kv.next().unwrap_or("").trim();
        let v = kv.next().unwrap_or("").trim().trim_matches('"');
        k.eq_ignore_ascii_case("format") && v.eq_ignore_ascii_case("cloudevents")
    })
}

/// Reads `Accept`. For subscriptions, plain JSON is not a streaming format, so `default`
/// decides (SSE there). Media ranges are looked at in this order, whatever their `q`: a
/// CloudEvents batch, NDJSON, SSE; anything else is `default` (no 406).
pub fn negotiate(headers: &HeaderMap, default: Wants) -> Negotiated {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ranges: Vec<(String, Vec<&str>)> = accept
        .split(',')
        .map(|range| {
            let mut parts = range.split(';');
            let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            (essence, parts.collect())
        })
        .collect();
    let find = |essence: &str| ranges.iter().find(|(e, _)| e == essence);
    if find(CLOUDEVENTS_BATCH_JSON).is_some() {
        return Negotiated {
            wants: Wants::CloudEventsBatch,
            cloudevents: true,
        };
    }
    for (essence, wants) in [
        (NDJSON, Wants::Ndjson),
        ("text/event-stream", Wants::EventStream),
    ] {
        let asked: Vec<_> = ranges.iter().filter(|(e, _)| e == essence).collect();
        if !asked.is_empty() {
            return Negotiated {
                wants,
                cloudevents: asked.iter().any(|(_, p)| asks_cloudevents(p)),
            };
        }
    }
    Negotiated {
        wants: default,
        cloudevents: false,
    }
}

/// What a client asked to receive, ignoring the shape of events (routes without CloudEvents).
pub fn wants(headers: &HeaderMap, default: Wants) -> Wants {
    negotiate(headers, default).wants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(accept: &str, default: Wants) -> Negotiated {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, accept.parse().unwrap());
        negotiate(&h, default)
    }

    #[test]
    fn reads_accept() {
        let ce = |wants| Negotiated {
            wants,
            cloudevents: true,
        };
        let plain = |wants| Negotiated {
            wants,
            cloudevents: false,
        };
        assert_eq!(n("application/x-ndjson", Wants::Json), plain(Wants::Ndjson));
        assert_eq!(
            n("application/x-ndjson; format=cloudevents", Wants::Json),
            ce(Wants::Ndjson)
        );
        assert_eq!(
            n(
                "text/html, Text/Event-Stream;Format=\"CloudEvents\"",
                Wants::Json
            ),
            ce(Wants::EventStream)
        );
        assert_eq!(
            n("application/cloudevents-batch+json", Wants::Json),
            ce(Wants::CloudEventsBatch)
        );
        assert_eq!(n("application/json", Wants::Json), plain(Wants::Json));
        // A single CloudEvent is no answer to a read or a subscription: the default, as for
        // any other media type the route does not serve.
        assert_eq!(
            n("application/cloudevents+json", Wants::EventStream),
            plain(Wants::EventStream)
        );
        assert_eq!(
            n("application/x-ndjson; format=json", Wants::Json),
            plain(Wants::Ndjson)
        );
    }
}
