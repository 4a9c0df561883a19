//! `POST /appends`: many appends on one request, answered line by line, in order, while the
//! request is still being sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use eventfold_core::{
    AllSlice, AppendCondition, AppendResult, DeleteMode, Direction, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, ListStreams, NewEvent, PendingAppend, Position, ReadAll,
    ReadFrom, ReadStream, Revision, StoreResult, StreamInfo, StreamList, StreamMetadata,
    StreamName, StreamSlice, SubscribeFrom,
};
use eventfold_engine::{Engine, EngineOptions};
use eventfold_server::auth::Auth;
use eventfold_server::{AppState, ServerLimits};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tower::ServiceExt as _;

struct Server {
    app: axum::Router,
    store: Arc<dyn EventStore>,
    _dir: tempfile::TempDir,
}

fn server(auth: Option<&str>) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn EventStore> = Arc::new(
        Engine::open(dir.path().join("events"), EngineOptions::for_tests()).expect("engine"),
    );
    let mut state = AppState::new(store.clone(), ServerLimits::default());
    if let Some(toml) = auth {
        let file = dir.path().join("tokens.toml");
        std::fs::write(&file, toml).expect("tokens");
        state = state.with_auth(Auth::new(None, Some(&file)).expect("tokens"));
    }
    Server {
        app: eventfold_server::router(state),
        store,
        _dir: dir,
    }
}

fn line(stream: &str, expected: serde_json::Value, n: usize) -> String {
    let events: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"type": "t", "data": {"i": i}}))
        .collect();
    let mut v = serde_json::json!({"stream": stream, "events": events});
    if !expected.is_null() {
        v["expected_revision"] = expected;
    }
    format!("{v}\n")
}

/// The expected revision of a stream's `k`-th one-event append (from 0): no stream for the
/// first, else the revision the one before it left.
fn expected_before(k: u64) -> serde_json::Value {
    if k == 0 {
        serde_json::json!("no-stream")
    } else {
        serde_json::json!(k - 1)
    }
}

/// Sends `body` whole and returns the answer lines.
async fn post_all(
    app: &axum::Router,
    token: Option<&str>,
    body: String,
) -> (u16, Vec<serde_json::Value>) {
    let mut req = Request::post("/appends").header("content-type", "application/x-ndjson");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (status, lines)
}

async fn revisions(store: &Arc<dyn EventStore>, stream: &str) -> Vec<u64> {
    match store
        .read_stream(
            &StreamName::new(stream).expect("name"),
            ReadStream {
                from: ReadFrom::Start,
                direction: Direction::Forward,
                limit: 10_000,
                until: None,
            },
        )
        .await
    {
        Ok(s) => s.events.iter().map(|e| e.revision.0).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn every_line_is_answered_in_order_and_a_bad_line_spoils_only_itself() {
    let s = server(None);
    let mut body = String::new();
    // Three streams interleaved, each line expecting the revision the one before it left.
    for k in 0..100u64 {
        for st in ["a", "b", "c"] {
            body.push_str(&line(st, expected_before(k), 1));
        }
    }
    body.push_str("{not json\n");
    body.push_str(&line("a", serde_json::json!(5), 1)); // a is at 99: conflict
    body.push('\n'); // blank lines are skipped, not answered
    body.push_str(&line("a", serde_json::json!("exists"), 2));
    body.push_str(&line("bad name\u{0}", serde_json::Value::Null, 1));
    // The last line has no line end.
    body.push_str(line("d", serde_json::Value::Null, 1).trim_end());
    let (status, answers) = post_all(&s.app, None, body).await;
    assert_eq!(status, 200);
    assert_eq!(answers.len(), 305, "{answers:?}");
    for (i, a) in answers[..300].iter().enumerate() {
        let rev = (i / 3) as u64;
        assert_eq!(a["appended"]["first_revision"], rev, "line {i}: {a}");
        assert_eq!(a["replay"], false);
    }
    assert_eq!(answers[300]["error"]["code"], "invalid_json");
    assert_eq!(answers[300]["error"]["line"], 300);
    assert_eq!(answers[301]["error"]["code"], "wrong_expected_revision");
    assert_eq!(answers[301]["error"]["line"], 301);
    assert_eq!(answers[302]["appended"]["first_revision"], 100);
    assert_eq!(answers[302]["appended"]["last_revision"], 101);
    assert_eq!(answers[303]["error"]["line"], 303);
    assert_eq!(answers[304]["appended"]["stream"], "d");
    // Positions grow with the lines: one stream's appends were applied in line order.
    let positions: Vec<u64> = answers[..300]
        .iter()
        .map(|a| a["appended"]["first_position"].as_u64().expect("position"))
        .collect();
    for st in 0..3 {
        let mine: Vec<u64> = positions.iter().skip(st).step_by(3).copied().collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
    }
    assert_eq!(revisions(&s.store, "a").await, (0..102).collect::<Vec<_>>());
    assert_eq!(revisions(&s.store, "b").await.len(), 100);
    assert_eq!(revisions(&s.store, "d").await, vec![0]);
}

#[tokio::test]
async fn an_answer_comes_while_the_request_is_still_being_sent() {
    let s = server(None);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let req = Request::post("/appends")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .expect("request");
    let resp = s.app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    let mut answers = resp.into_body().into_data_stream();
    for k in 0..5u64 {
        let l = line(
            "duplex",
            serde_json::json!(if k == 0 {
                "no-stream".to_string()
            } else {
                (k - 1).to_string()
            }),
            1,
        );
        tx.send(Ok(Bytes::from(l))).await.expect("send");
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), answers.next())
            .await
            .expect("the answer to a line comes before the next line is sent")
            .expect("a chunk")
            .expect("bytes");
        let a: serde_json::Value = serde_json::from_slice(&chunk).expect("one answer line");
        assert_eq!(a["appended"]["first_revision"], k, "{a}");
    }
    drop(tx);
    assert!(
        answers.next().await.is_none(),
        "the answer ends with the request"
    );
}

/// Lines cut anywhere by the transport are put back together: a line of 200 KiB sent in
/// 100-byte pieces, short lines cut mid-token, and a last line without its line end.
#[tokio::test]
async fn lines_cut_into_small_pieces_are_whole_again() {
    let s = server(None);
    let big = format!(
        "{}\n",
        serde_json::json!({
            "stream": "pieces",
            "expected_revision": "no-stream",
            "events": [{"type": "t", "data": {"pad": "x".repeat(200 << 10)}}],
        })
    );
    let mut body = big.into_bytes();
    body.extend_from_slice(line("pieces", serde_json::json!(0), 2).as_bytes());
    body.extend_from_slice(b"\n  \n");
    // The last line has no line end.
    body.extend_from_slice(
        line("pieces", serde_json::json!(2), 1)
            .trim_end()
            .as_bytes(),
    );
    let pieces: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(100)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let req = Request::post("/appends")
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(futures::stream::iter(pieces)))
        .expect("request");
    let resp = s.app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let answers: Vec<serde_json::Value> = String::from_utf8(bytes.to_vec())
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an answer line"))
        .collect();
    let firsts: Vec<_> = answers
        .iter()
        .map(|a| a["appended"]["first_revision"].clone())
        .collect();
    assert_eq!(
        firsts,
        vec![
            serde_json::json!(0),
            serde_json::json!(1),
            serde_json::json!(3)
        ],
        "{answers:?}"
    );
    assert_eq!(revisions(&s.store, "pieces").await, vec![0, 1, 2, 3]);
}

const TOKENS: &str = r#"
[[tokens]]
token = "orders-writer"
rights = ["read", "write"]
prefixes = ["order-"]

[[tokens]]
token = "orders-reader"
rights = ["read"]
prefixes = ["order-"]
"#;

#[tokio::test]
async fn each_line_is_authorized_on_its_own_stream() {
    let s = server(Some(TOKENS));
    let body = [
        line("order-1", serde_json::Value::Null, 1),
        line("user-1", serde_json::Value::Null, 1),
        line("order-2", serde_json::Value::Null, 1),
    ]
    .concat();
    let (status, answers) = post_all(&s.app, Some("orders-writer"), body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(answers[0]["appended"]["stream"], "order-1");
    assert_eq!(answers[1]["error"]["code"], "forbidden");
    assert_eq!(answers[2]["appended"]["stream"], "order-2");
    assert!(revisions(&s.store, "user-1").await.is_empty());
    // No token, or one without `write`: refused before any line is read.
    assert_eq!(post_all(&s.app, None, body.clone()).await.0, 401);
    assert_eq!(post_all(&s.app, Some("orders-reader"), body).await.0, 403);
    assert_eq!(revisions(&s.store, "order-1").await, vec![0]);
}

/// The engine, with every append's outcome held back until the test opens the gate; counts the
/// appends that got their place in the store's order.
struct Gated {
    inner: Engine,
    sequenced: AtomicUsize,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl EventStore for Gated {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        self.append_sequenced(stream, expected, events, None)
            .await
            .await
    }
    async fn append_with_condition(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> StoreResult<AppendResult> {
        self.append_sequenced(stream, expected, events, Some(condition))
            .await
            .await
    }
    async fn append_sequenced(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> PendingAppend {
        let pending = self
            .inner
            .append_sequenced(stream, expected, events, condition)
            .await;
        self.sequenced.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.clone();
        Box::pin(async move {
            let _ = open.wait_for(|o| *o).await;
            pending.await
        })
    }
    async fn read_stream(&self, stream: &StreamName, read: ReadStream) -> StoreResult<StreamSlice> {
        self.inner.read_stream(stream, read).await
    }
    async fn read_all(&self, read: ReadAll) -> StoreResult<AllSlice> {
        self.inner.read_all(read).await
    }
    fn subscribe_stream(
        &self,
        stream: &StreamName,
        from: SubscribeFrom<Revision>,
    ) -> EventSubscription {
        self.inner.subscribe_stream(stream, from)
    }
    fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> EventSubscription {
        self.inner.subscribe_all(from, filter)
    }
    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        self.inner.stream_info(stream).await
    }
    async fn list_streams(&self, list: ListStreams) -> StoreResult<StreamList> {
        self.inner.list_streams(list).await
    }
    async fn get_metadata(&self, stream: &StreamName) -> StoreResult<StreamMetadata> {
        self.inner.get_metadata(stream).await
    }
    async fn set_metadata(&self, stream: &StreamName, metadata: StreamMetadata) -> StoreResult<()> {
        self.inner.set_metadata(stream, metadata).await
    }
    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    ) -> StoreResult<()> {
        self.inner.delete_stream(stream, expected, mode).await
    }
}

/// Lines to one stream do not wait for the outcome of the line before them, only for its place
/// in the store's order: with every outcome held back, all ten lines (each expecting the
/// revision the one before it leaves) reach the store; once let go, each is answered with its
/// revision, in line order. Had each line waited for the answer before it (one group commit
/// per line of a stream), only the first would have reached the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_to_one_stream_are_ordered_by_the_store_not_by_waiting_for_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (open_tx, open) = tokio::sync::watch::channel(false);
    let gated = Arc::new(Gated {
        inner: Engine::open(dir.path().join("events"), EngineOptions::for_tests()).expect("engine"),
        sequenced: AtomicUsize::new(0),
        open,
    });
    let store: Arc<dyn EventStore> = gated.clone();
    let app = eventfold_server::router(AppState::new(store.clone(), ServerLimits::default()));
    let body: String = (0..10u64)
        .map(|k| line("order-7", expected_before(k), 1))
        .collect();
    let post = tokio::spawn(async move { post_all(&app, None, body).await });
    let mut waited = 0;
    while gated.sequenced.load(Ordering::SeqCst) < 10 {
        assert!(
            waited < 10_000,
            "only {} of 10 lines reached the store while the outcomes were held",
            gated.sequenced.load(Ordering::SeqCst)
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        waited += 1;
    }
    assert!(
        !post.is_finished(),
        "answered before any outcome was let go"
    );
    open_tx.send_replace(true);
    let (status, answers) = post.await.expect("task");
    assert_eq!(status, 200);
    let revs: Vec<u64> = answers
        .iter()
        .map(|a| a["appended"]["first_revision"].as_u64().expect("appended"))
        .collect();
    assert_eq!(revs, (0..10).collect::<Vec<_>>());
    assert_eq!(
        revisions(&store, "order-7").await,
        (0..10).collect::<Vec<_>>()
    );
}
