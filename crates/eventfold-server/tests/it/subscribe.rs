//! Live subscriptions as the fan-out path writes them: each wake-up's events in one chunk, in
//! order, with no gap and no duplicate across the catch-up→live switch for many subscribers
//! at once; each event encoded once for all of them; bounded chunks for a subscriber that
//! fell behind; subscribers that fall behind the live hub's ring and come back to it; the hub
//! running only while someone subscribes; SSE ids that are revisions on a stream and positions
//! on `$all`; heartbeats and the closing frame. Each chunk the body yields is one frame read
//! here (a body not read is not polled: its subscription does nothing meanwhile).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use eventfold_core::EventStore;
use eventfold_engine::{Engine, EngineOptions};
use eventfold_server::{AppState, CHUNK_DATA_BYTES_MAX, CHUNK_EVENTS_MAX, ServerLimits};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// Longest wait for one chunk before the test fails instead of hanging.
const CHUNK_WAIT: Duration = Duration::from_secs(20);

struct Server {
    app: axum::Router,
    state: AppState,
    _dir: tempfile::TempDir,
}

fn server(heartbeat: Duration) -> Server {
    server_with_hub(heartbeat, eventfold_server::live::Hub::default())
}

/// A server whose live hub is `hub` (a small ring makes subscribers fall behind it).
fn server_with_hub(heartbeat: Duration, hub: eventfold_server::live::Hub) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine: Arc<dyn EventStore> =
        Arc::new(Engine::open(dir.path(), EngineOptions::for_tests()).expect("engine"));
    let limits = ServerLimits {
        heartbeat,
        ..ServerLimits::default()
    };
    let mut state = AppState::new(engine, limits);
    state.live = hub;
    Server {
        app: eventfold_server::router(state.clone()),
        state,
        _dir: dir,
    }
}

impl Server {
    async fn request(&self, method: &str, uri: &str, accept: &str, body: String) -> Body {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(Body::from(body))
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        assert!(
            resp.status().is_success(),
            "{method} {uri}: {}",
            resp.status()
        );
        resp.into_body()
    }

    /// Appends `n` events of `data_bytes` bytes of data each in one request.
    async fn append(&self, stream: &str, n: usize, data_bytes: usize) {
        let data = "x".repeat(data_bytes);
        let body: Vec<Value> = (0..n)
            .map(|_| json!({"type": "tick", "data": {"pad": data}}))
            .collect();
        let b = self
            .request(
                "POST",
                &format!("/streams/{stream}"),
                "application/json",
                Value::from(body).to_string(),
            )
            .await;
        b.collect().await.expect("append answer");
    }

    async fn subscribe(&self, uri: &str, sse: bool) -> Body {
        let accept = if sse {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        };
        self.request("GET", uri, accept, String::new()).await
    }

    /// Events in the log.
    async fn log_len(&self) -> usize {
        let b = self
            .request("GET", "/all?limit=10000", "application/json", String::new())
            .await;
        let v: Value =
            serde_json::from_slice(&b.collect().await.expect("read").to_bytes()).expect("json");
        v["events"].as_array().expect("events").len()
    }

    async fn metric(&self, name: &str) -> f64 {
        let b = self
            .request("GET", "/metrics", "text/plain", String::new())
            .await;
        let text = String::from_utf8(b.collect().await.expect("metrics").to_bytes().to_vec())
            .expect("utf-8");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

/// The next chunk of a body.
async fn chunk(body: &mut Body) -> Bytes {
    loop {
        let frame = tokio::time::timeout(CHUNK_WAIT, body.frame())
            .await
            .expect("a chunk in time")
            .expect("the body is open")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            return data;
        }
    }
}

/// One delivered event: the SSE id (`None` on NDJSON) and the event's JSON.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    id: Option<u64>,
    event: Value,
}

/// The events of one chunk; panics on anything that is not an event.
fn events_of(chunk: &[u8], sse: bool) -> Vec<Got> {
    let text = std::str::from_utf8(chunk).expect("utf-8");
    if !sse {
        assert!(text.ends_with('\n'), "a chunk holds whole lines: {text:?}");
        return text
            .lines()
            .map(|l| Got {
                id: None,
                event: serde_json::from_str(l).expect("an NDJSON event"),
            })
            .collect();
    }
    assert!(
        text.ends_with("\n\n"),
        "a chunk holds whole frames: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|frame| {
            let mut lines = frame.lines();
            let id = lines
                .next()
                .and_then(|l| l.strip_prefix("id: "))
                .expect("an id line first")
                .parse()
                .expect("a numeric id");
            let ev = lines
                .next()
                .and_then(|l| l.strip_prefix("event: "))
                .expect("an event line");
            let data = lines
                .next()
                .and_then(|l| l.strip_prefix("data: "))
                .expect("a data line");
            assert_eq!(lines.next(), None, "three lines per frame");
            let event: Value = serde_json::from_str(data).expect("data is JSON");
            assert_eq!(event["type"], ev);
            Got {
                id: Some(id),
                event,
            }
        })
        .collect()
}

/// Reads chunks until `n` events came; returns them and the events per chunk.
async fn take(body: &mut Body, n: usize, sse: bool) -> (Vec<Got>, Vec<usize>) {
    let (mut got, mut per_chunk) = (Vec::new(), Vec::new());
    while got.len() < n {
        let events = events_of(&chunk(body).await, sse);
        per_chunk.push(events.len());
        got.extend(events);
    }
    assert_eq!(got.len(), n, "no more than asked for");
    (got, per_chunk)
}

fn field(got: &[Got], key: &str) -> Vec<u64> {
    got.iter()
        .map(|g| g.event[key].as_u64().expect("a number"))
        .collect()
}

#[tokio::test]
async fn a_wake_up_is_one_chunk_and_catch_up_chunks_are_bounded() {
    let s = server(Duration::from_secs(60));
    for i in 0..12 {
        s.append(&format!("c-{}", i % 3), 100, 10).await;
    }
    let mut sub = s.subscribe("/all/subscribe?from=start", false).await;
    let (got, per_chunk) = take(&mut sub, 1_200, false).await;
    assert_eq!(field(&got, "position"), (0..1_200).collect::<Vec<_>>());
    assert!(
        per_chunk.iter().all(|&n| n <= CHUNK_EVENTS_MAX),
        "{per_chunk:?}"
    );
    assert!(
        per_chunk.len() <= 12,
        "the catch-up goes out in few chunks, not one per event: {per_chunk:?}"
    );
    // One append of 50 is one commit, one wake-up, one chunk.
    s.append("c-0", 50, 10).await;
    let events = events_of(&chunk(&mut sub).await, false);
    assert_eq!(
        field(&events, "position"),
        (1_200..1_250).collect::<Vec<_>>()
    );
    assert_eq!(
        s.metric("eventfold_subscription_chunks_total").await,
        per_chunk.len() as f64 + 1.0
    );
    assert_eq!(
        s.metric("eventfold_subscription_deliveries_total").await,
        1_250.0
    );
}

#[tokio::test]
async fn many_subscribers_get_every_event_once_in_order_across_the_switch_to_live() {
    const STREAMS: u64 = 3;
    const HISTORY: u64 = 300;
    const LIVE: u64 = 1_500;
    let s = Arc::new(server(Duration::from_secs(60)));
    for i in 0..HISTORY / 10 {
        s.append(&format!("m-{}", i % STREAMS), 10, 10).await;
    }
    // Half the subscribers open before the writer starts, half while it writes; SSE and
    // NDJSON, `$all` and one stream.
    let open = |k: usize| {
        let s = s.clone();
        async move {
            let sse = k.is_multiple_of(2);
            let uri = if k % 4 < 2 {
                "/all/subscribe?from=start".to_owned()
            } else {
                "/streams/m-1/subscribe?from=start".to_owned()
            };
            (k, sse, s.subscribe(&uri, sse).await)
        }
    };
    let mut subs = Vec::new();
    for k in 0..20 {
        subs.push(open(k).await);
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut written = 0;
            let mut i = 0;
            while written < LIVE {
                let n = (1 + i % 10).min(LIVE - written);
                s.append(&format!("m-{}", i % STREAMS), n as usize, 10)
                    .await;
                written += n;
                i += 1;
                if i.is_multiple_of(20) {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    tokio::task::yield_now().await;
    for k in 20..40 {
        subs.push(open(k).await);
    }
    // Every subscriber reads concurrently with the others and the writer.
    let total = HISTORY + LIVE;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(k, sse, mut body)| {
            tokio::spawn(async move {
                let all = k % 4 < 2;
                // m-1 gets every third append of the writer: count its events at the end.
                let want = if all { total as usize } else { 0 };
                (k, sse, all, body_take(&mut body, want, sse).await, body)
            })
        })
        .collect();
    writer.await.expect("writer");
    let stream_total: usize = {
        let b = s
            .request(
                "GET",
                "/streams/m-1?limit=10000",
                "application/json",
                String::new(),
            )
            .await;
        let v: Value =
            serde_json::from_slice(&b.collect().await.expect("read").to_bytes()).expect("json");
        v["events"].as_array().expect("events").len()
    };
    let mut deliveries = 0u64;
    for r in readers {
        let (k, sse, all, mut got, mut body) = r.await.expect("reader");
        if !all {
            got.extend(take(&mut body, stream_total, sse).await.0);
        }
        deliveries += got.len() as u64;
        if all {
            assert_eq!(
                field(&got, "position"),
                (0..total).collect::<Vec<_>>(),
                "subscriber {k}: every position once, in order"
            );
            if sse {
                let ids: Vec<u64> = got.iter().filter_map(|g| g.id).collect();
                assert_eq!(ids, field(&got, "position"), "subscriber {k}: $all ids");
            }
        } else {
            assert_eq!(
                field(&got, "revision"),
                (0..stream_total as u64).collect::<Vec<_>>(),
                "subscriber {k}: every revision once, in order"
            );
            assert!(got.iter().all(|g| g.event["stream"] == "m-1"));
            if sse {
                let ids: Vec<u64> = got.iter().filter_map(|g| g.id).collect();
                assert_eq!(ids, field(&got, "revision"), "subscriber {k}: stream ids");
            }
        }
    }
    let counted = s.metric("eventfold_subscription_deliveries_total").await;
    assert_eq!(counted, deliveries as f64);
    let encodes = s.metric("eventfold_subscription_encodes_total").await;
    assert!(
        encodes * 4.0 < counted,
        "events are encoded once and shared: {encodes} encodes for {counted} deliveries"
    );
}

/// `take` for a reader task that may want nothing yet.
async fn body_take(body: &mut Body, n: usize, sse: bool) -> Vec<Got> {
    if n == 0 {
        return Vec::new();
    }
    take(body, n, sse).await.0
}

#[tokio::test]
async fn sse_ids_are_revisions_on_a_stream_and_positions_on_all_with_shared_bytes() {
    let s = server(Duration::from_secs(60));
    let mut on_stream = s.subscribe("/streams/b-1/subscribe?from=start", true).await;
    let mut on_all = s.subscribe("/all/subscribe?from=start", true).await;
    // Interleaved: b-1's revisions are not its positions.
    for i in 0..10 {
        s.append(if i % 2 == 0 { "a-1" } else { "b-1" }, 3, 10)
            .await;
    }
    let (all, _) = take(&mut on_all, 30, true).await;
    let (stream, _) = take(&mut on_stream, 15, true).await;
    assert_eq!(
        all.iter().map(|g| g.id).collect::<Vec<_>>(),
        (0..30).map(Some).collect::<Vec<_>>()
    );
    assert_eq!(
        stream.iter().map(|g| g.id).collect::<Vec<_>>(),
        (0..15).map(Some).collect::<Vec<_>>()
    );
    // The same event through both: the same JSON, its own id line each.
    for g in &stream {
        let twin = all
            .iter()
            .find(|a| a.event["position"] == g.event["position"])
            .expect("on $all too");
        assert_eq!(twin.event, g.event);
        assert_eq!(twin.id, g.event["position"].as_u64());
        assert_ne!(g.id, twin.id, "b-1's revision differs from its position");
    }
}

#[tokio::test]
async fn a_subscriber_that_fell_behind_gets_everything_in_bounded_chunks() {
    let s = server(Duration::from_secs(60));
    let mut sub = s.subscribe("/all/subscribe?from=start", false).await;
    // 3,000 events of 4 KiB (12 MB) while the subscriber reads nothing.
    const EVENT_DATA: usize = 4 << 10;
    for i in 0..30 {
        s.append(&format!("slow-{}", i % 2), 100, EVENT_DATA).await;
    }
    let mut got = Vec::new();
    let mut largest_chunk = 0;
    let mut most_events = 0;
    while got.len() < 3_000 {
        let c = chunk(&mut sub).await;
        largest_chunk = largest_chunk.max(c.len());
        let events = events_of(&c, false);
        most_events = most_events.max(events.len());
        got.extend(events);
    }
    assert_eq!(field(&got, "position"), (0..3_000).collect::<Vec<_>>());
    // The data budget closes a chunk at the first event that reaches it; the JSON around each
    // event's data adds a few hundred bytes per event.
    assert!(
        most_events <= CHUNK_DATA_BYTES_MAX / EVENT_DATA + 1,
        "{most_events} events of {EVENT_DATA} B in a chunk"
    );
    assert!(
        largest_chunk <= CHUNK_DATA_BYTES_MAX * 5 / 4,
        "a chunk of {largest_chunk} bytes"
    );
    assert!(
        most_events < CHUNK_EVENTS_MAX,
        "4 KiB events hit the byte bound first: {most_events}"
    );
}

#[tokio::test]
async fn heartbeats_and_the_closing_frame_still_come() {
    for sse in [true, false] {
        let s = server(Duration::from_millis(100));
        let mut sub = s.subscribe("/streams/hb-1/subscribe", sse).await;
        let beat = chunk(&mut sub).await;
        assert_eq!(
            &beat[..],
            if sse {
                &b": heartbeat\n\n"[..]
            } else {
                &b"\n"[..]
            }
        );
        s.append("hb-1", 2, 10).await;
        // Heartbeats may come before the events; skip them.
        let events = loop {
            let c = chunk(&mut sub).await;
            if &c[..] != b"\n" && &c[..] != b": heartbeat\n\n" {
                break events_of(&c, sse);
            }
        };
        assert_eq!(field(&events, "revision"), [0, 1]);
        s.state.closing.send_replace(true);
        let last = loop {
            let c = chunk(&mut sub).await;
            if &c[..] != b"\n" && &c[..] != b": heartbeat\n\n" {
                break String::from_utf8(c.to_vec()).expect("utf-8");
            }
        };
        if sse {
            assert!(last.starts_with("event: closing\ndata: "), "{last:?}");
        } else {
            assert!(last.starts_with("{\"closing\":"), "{last:?}");
        }
        assert!(last.contains("server_shutdown"), "{last:?}");
        let end = tokio::time::timeout(CHUNK_WAIT, sub.frame())
            .await
            .expect("the body ends");
        assert!(end.is_none(), "nothing after the closing frame");
    }
}

/// Reads chunks until the hub's ring holds everything after what `body` received (the
/// subscription has joined the hub), appending a few events at a time so that it can.
async fn until_joined(s: &Server, stream: &str, body: &mut Body, sse: bool) -> Vec<Got> {
    let joins = s.metric("eventfold_subscription_hub_joins_total").await;
    let mut got = Vec::new();
    for _ in 0..50 {
        s.append(stream, 2, 10).await;
        got.extend(take(body, 2, sse).await.0);
        if s.metric("eventfold_subscription_hub_joins_total").await > joins {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the subscription never joined the live hub");
}

#[tokio::test]
async fn live_subscribers_that_fall_behind_the_hub_read_the_store_and_come_back_without_gap() {
    // A ring of 64 events; subscribers stop reading while 1,200 events go by.
    let s = server_with_hub(
        Duration::from_secs(60),
        eventfold_server::live::Hub::new(64, 1 << 20),
    );
    s.append("f-0", 5, 10).await;
    let mut on_all = s.subscribe("/all/subscribe?from=start", false).await;
    let mut on_stream = s.subscribe("/streams/f-1/subscribe?from=start", true).await;
    let filtered = "/all/subscribe?from=start&stream_prefix=f-2";
    let mut on_filtered = s.subscribe(filtered, true).await;
    let mut all = take(&mut on_all, 5, false).await.0;
    all.extend(until_joined(&s, "f-0", &mut on_all, false).await);
    let mut stream = until_joined(&s, "f-1", &mut on_stream, true).await;
    let mut filt = until_joined(&s, "f-2", &mut on_filtered, true).await;
    // Everyone is on the hub now; the bodies wait unread while the log moves far past the ring.
    assert_eq!(
        s.metric("eventfold_subscription_hub_fallbacks_total").await,
        0.0
    );
    for i in 0..120 {
        s.append(&format!("f-{}", i % 3), 10, 10).await;
    }
    let joins = s.metric("eventfold_subscription_hub_joins_total").await;
    let total = s.log_len().await;
    all.extend(take(&mut on_all, total - all.len(), false).await.0);
    assert_eq!(
        field(&all, "position"),
        (0..total as u64).collect::<Vec<_>>(),
        "$all: every position once, in order, across hub → store → hub"
    );
    let of = |all: &[Got], stream: &str| -> Vec<Got> {
        all.iter()
            .filter(|g| g.event["stream"] == stream)
            .cloned()
            .collect()
    };
    let f1 = of(&all, "f-1").len();
    stream.extend(take(&mut on_stream, f1 - stream.len(), true).await.0);
    assert_eq!(
        field(&stream, "revision"),
        (0..f1 as u64).collect::<Vec<_>>(),
        "a stream: every revision once, in order"
    );
    assert_eq!(
        field(&stream, "position"),
        field(&of(&all, "f-1"), "position")
    );
    let f2 = of(&all, "f-2");
    filt.extend(take(&mut on_filtered, f2.len() - filt.len(), true).await.0);
    assert_eq!(
        field(&filt, "position"),
        field(&f2, "position"),
        "a filter: what it matches, once, in order"
    );
    let fallbacks = s.metric("eventfold_subscription_hub_fallbacks_total").await;
    assert!(
        fallbacks >= 3.0,
        "each subscriber fell behind the 64-event ring: {fallbacks} fallbacks"
    );
    // Caught up again, each is back on the hub, and live events keep coming in order.
    s.append("f-1", 1, 10).await;
    s.append("f-2", 1, 10).await;
    let next = field(&take(&mut on_all, 2, false).await.0, "position");
    assert_eq!(next, [total as u64, total as u64 + 1]);
    assert_eq!(
        field(&take(&mut on_stream, 1, true).await.0, "position"),
        [next[0]]
    );
    assert_eq!(
        field(&take(&mut on_filtered, 1, true).await.0, "position"),
        [next[1]]
    );
    let back = s.metric("eventfold_subscription_hub_joins_total").await - joins;
    assert!(back >= 3.0, "all three came back to the hub: {back}");
}

#[tokio::test]
async fn the_hub_runs_only_while_someone_subscribes_and_restarts_at_the_end_of_the_log() {
    let s = server(Duration::from_secs(60));
    assert!(!s.state.live.running());
    s.append("r-1", 3, 10).await;
    let mut first = s
        .subscribe("/streams/r-1/subscribe?from=start", false)
        .await;
    assert!(s.state.live.running());
    take(&mut first, 3, false).await;
    until_joined(&s, "r-1", &mut first, false).await;
    drop(first);
    assert!(
        !s.state.live.running(),
        "the last subscriber gone, the hub stops"
    );
    assert_eq!(s.state.live.from(), u64::MAX, "and holds nothing");
    // Appends meanwhile are nobody's; a new subscriber from the start gets all of them once.
    s.append("r-1", 4, 10).await;
    let before = s.log_len().await;
    let mut again = s.subscribe("/all/subscribe?from=start", true).await;
    let mut got = take(&mut again, before, true).await.0;
    got.extend(until_joined(&s, "r-1", &mut again, true).await);
    let n = got.len() as u64;
    assert_eq!(field(&got, "position"), (0..n).collect::<Vec<_>>());
    assert_eq!(
        got.iter().map(|g| g.id).collect::<Vec<_>>(),
        (0..n).map(Some).collect::<Vec<_>>()
    );
}
