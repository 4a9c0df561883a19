//! Reads as NDJSON, byte for byte: every line of `GET /all` and `GET /streams/{s}` is the
//! event's contract JSON (`RecordedEvent`'s `Serialize`) and a line break, across pages, for
//! every shape of event the encoder treats differently.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use eventfold_core::{
    ContentType, EventStore, EventType, ExpectedRevision, Metadata, NewEvent, ReadAll, ReadStream,
    RecordedEvent, StreamName,
};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_server::{AppState, ServerLimits};
use tower::ServiceExt as _;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// A stream name with what JSON must escape (a quote, a backslash) and what it must not
/// (non-ASCII, U+2028).
const ODD_STREAM: &str = "caf\u{e9}-\"q\"\\1\u{2028}";
/// Small events after the odd ones: more than one server page of NDJSON.
const FILLER_EVENTS: usize = 2_345;

struct Server {
    app: axum::Router,
    store: Arc<dyn EventStore>,
    _dir: tempfile::TempDir,
}

fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn EventStore> = Arc::new(
        Engine::open(dir.path().join("events"), EngineOptions::for_tests()).expect("engine"),
    );
    Server {
        app: eventfold_server::router(AppState::new(store.clone(), ServerLimits::default())),
        store,
        _dir: dir,
    }
}

fn event(content_type: &str, data: &[u8]) -> NewEvent {
    NewEvent::bytes(
        EventType::new("t\u{e9}.\"x\"").expect("type"),
        ContentType::new(content_type).expect("content type"),
        data.to_vec(),
    )
}

/// One event of every shape the line encoder treats differently.
fn odd_events() -> Vec<NewEvent> {
    let mut traced = Metadata::new();
    traced.insert("traceparent".into(), PARENT.into());
    traced.insert("tracestate".into(), "k=v,a=\"b\"".into());
    traced.insert("correlation_id".into(), "c-\u{e9}".into());
    vec![
        // JSON data as sent (key order, big number, trailing zero, escapes), with trace context.
        event(
            "application/json",
            br#"{"b":1,"a":[2,3],"n":12345678901234567890123,"f":1.10,"s":"\u00e9 \"x\" \\"}"#,
        )
        .with_metadata(traced),
        // Not JSON: base64.
        event("application/octet-stream", &[0, 1, 2, 0xff, 0xfe]),
        event("text/plain; charset=utf-8", "plain \u{e9}\n".as_bytes()),
        event("application/octet-stream", b""),
        // JSON content type, data that is not JSON: base64 (never an invalid line).
        event("application/json", b"{not json"),
        event("application/json", b"{\"a\":1} trailing"),
        // A line break between tokens: re-encoded, one line.
        event("application/json", b"{\"a\":\n1}"),
        // A `+json` type and JSON scalars.
        event("application/cloudevents+json", b"[1,2]"),
        event("application/json", b"\"str\""),
        event("application/json", b"12.50"),
    ]
}

/// Appends `n` small JSON events, `{"i":00000}` to `{"i":<n-1>}`, to `stream` in batches of
/// 1,000 (the batch limit).
async fn append_numbered(store: &Arc<dyn EventStore>, stream: &StreamName, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let events = chunk
            .iter()
            .map(|i| event("application/json", format!("{{\"i\":{i:05}}}").as_bytes()))
            .collect();
        store
            .append(stream, ExpectedRevision::Any, events)
            .await
            .expect("append");
    }
}

async fn get_ndjson(app: &axum::Router, uri: &str) -> axum::response::Response {
    app.clone()
        .oneshot(
            Request::get(uri)
                .header("accept", "application/x-ndjson")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer")
}

async fn get(app: &axum::Router, uri: &str) -> (u16, Vec<u8>) {
    let resp = get_ndjson(app, uri).await;
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, bytes.to_vec())
}

fn lines_of(events: &[RecordedEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend(serde_json::to_vec(e).expect("json"));
        out.push(b'\n');
    }
    out
}

/// Every line of `$all` and of a stream read as NDJSON is the event's JSON, byte for byte,
/// across pages and up to the limit; the odd events' lines are pinned literally, so a change
/// of the shape (key order, escapes, timestamp, base64, data as stored) fails here even when
/// `Serialize` and the encoder change together. Fails if a page loses or repeats events, if a
/// limit cuts at the wrong event, or if any line differs from the contract JSON.
#[tokio::test]
async fn ndjson_reads_are_the_events_json_byte_for_byte() {
    let s = server();
    let odd = StreamName::new(ODD_STREAM).expect("stream");
    s.store
        .append(&odd, ExpectedRevision::Any, odd_events())
        .await
        .expect("append");
    let filler = StreamName::new("filler-1").expect("stream");
    append_numbered(&s.store, &filler, FILLER_EVENTS).await;
    let total = odd_events().len() + FILLER_EVENTS;
    let all = s
        .store
        .read_all(ReadAll::forward(total))
        .await
        .expect("read")
        .events;
    assert_eq!(all.len(), total);

    let (status, body) = get(&s.app, &format!("/all?from=start&limit={total}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&lines_of(&all))
    );
    // A limit that ends inside a page.
    let (_, body) = get(&s.app, "/all?from=start&limit=1234").await;
    assert_eq!(body, lines_of(&all[..1234]));
    let (_, body) = get(&s.app, "/all?from=3&limit=600").await;
    assert_eq!(body, lines_of(&all[3..603]));
    // A stream, the same lines.
    let stream = s
        .store
        .read_stream(&filler, ReadStream::forward(FILLER_EVENTS))
        .await
        .expect("read")
        .events;
    let (_, body) = get(&s.app, &format!("/streams/filler-1?limit={FILLER_EVENTS}")).await;
    assert_eq!(body, lines_of(&stream));

    // The odd events, literally.
    let text = String::from_utf8(body_of_odd(&s.app).await).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    let head = |i: usize, content_type: &str| {
        let e = &all[i];
        format!(
            "{{\"id\":\"{}\",\"stream\":\"caf\u{e9}-\\\"q\\\"\\\\1\u{2028}\",\"type\":\"t\u{e9}.\\\"x\\\"\",\
             \"revision\":{i},\"position\":{},\"timestamp\":\"{}\",\"schema_version\":1,\
             \"content_type\":\"{content_type}\",",
            e.id, e.position.0, e.timestamp
        )
    };
    let want = [
        format!(
            "{}\"data\":{{\"b\":1,\"a\":[2,3],\"n\":12345678901234567890123,\"f\":1.10,\"s\":\"\\u00e9 \\\"x\\\" \\\\\"}},\
             \"metadata\":{{\"correlation_id\":\"c-\u{e9}\",\"traceparent\":\"{PARENT}\",\"tracestate\":\"k=v,a=\\\"b\\\"\"}}}}",
            head(0, "application/json")
        ),
        format!(
            "{}\"data_base64\":\"AAEC//4=\",\"metadata\":{{}}}}",
            head(1, "application/octet-stream")
        ),
        format!(
            "{}\"data_base64\":\"cGxhaW4gw6kK\",\"metadata\":{{}}}}",
            head(2, "text/plain; charset=utf-8")
        ),
        format!(
            "{}\"data_base64\":\"\",\"metadata\":{{}}}}",
            head(3, "application/octet-stream")
        ),
        format!(
            "{}\"data_base64\":\"e25vdCBqc29u\",\"metadata\":{{}}}}",
            head(4, "application/json")
        ),
        format!(
            "{}\"data_base64\":\"eyJhIjoxfSB0cmFpbGluZw==\",\"metadata\":{{}}}}",
            head(5, "application/json")
        ),
        format!(
            "{}\"data\":{{\"a\":1}},\"metadata\":{{}}}}",
            head(6, "application/json")
        ),
        format!(
            "{}\"data\":[1,2],\"metadata\":{{}}}}",
            head(7, "application/cloudevents+json")
        ),
        format!(
            "{}\"data\":\"str\",\"metadata\":{{}}}}",
            head(8, "application/json")
        ),
        format!(
            "{}\"data\":12.50,\"metadata\":{{}}}}",
            head(9, "application/json")
        ),
    ];
    assert_eq!(lines.len(), want.len());
    for (got, want) in lines.iter().zip(&want) {
        assert_eq!(got, want);
    }
}

async fn body_of_odd(app: &axum::Router) -> Vec<u8> {
    let uri = format!(
        "/streams/{}?limit=100",
        ODD_STREAM
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    let (status, body) = get(app, &uri).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    body
}

/// A read that fails after its first page cuts the NDJSON answer off with an error instead of
/// ending it as if it were whole: with a record of the third page damaged on disk, `$all` and
/// the stream both answer 200 (the first page was read before the answer) and the body ends in
/// an error, after whole lines only. Had the answer just ended, a client would have taken 1,000
/// events for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_fails_after_the_first_page_cuts_the_answer_off() {
    let s = server();
    let stream = StreamName::new("damaged-1").expect("stream");
    append_numbered(&s.store, &stream, 1_200).await;
    let segment = std::fs::read_dir(s._dir.path().join("events"))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    let at = bytes
        .windows(10)
        .position(|w| w == b"{\"i\":01100")
        .expect("event 1,100 in the segment");
    bytes[at + 5] = b'X';
    std::fs::write(&segment, &bytes).expect("write");

    for uri in [
        "/all?from=start&limit=1200",
        "/streams/damaged-1?limit=1200",
    ] {
        let resp = get_ndjson(&s.app, uri).await;
        assert_eq!(resp.status().as_u16(), 200, "{uri}");
        let mut body = resp.into_body().into_data_stream();
        let (mut lines, mut failed) = (0, false);
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            match chunk {
                Ok(c) => {
                    assert!(c.ends_with(b"\n"), "{uri}: whole lines only");
                    lines += c.iter().filter(|&&b| b == b'\n').count();
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(
            failed,
            "{uri}: the answer ended as if whole after {lines} lines"
        );
        assert!(lines < 1_100, "{uri}: {lines} lines before the error");
    }
}
