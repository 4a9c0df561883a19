//! `append_sequenced` through the client, against a stand-in server whose answers the test
//! releases: the call resolves once the append's line is on the connection, in the order of
//! the calls, before any answer; each pending append then gets its own line's answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use eventfold_client::Client;
use eventfold_core::{
    ContentType, EventStore, EventType, ExpectedRevision, NewEvent, Revision, StreamName,
};
use eventfold_protocol::{AppendAnswer, AppendResponse, NDJSON};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;

/// The stand-in for `POST /appends`: hands each line received to the test and answers with
/// the lines the test sends.
#[derive(Clone)]
struct Stand {
    lines: mpsc::UnboundedSender<serde_json::Value>,
    answers: Arc<Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>>,
}

async fn appends(State(stand): State<Stand>, body: Body) -> Response {
    let mut data = body.into_data_stream();
    let lines = stand.lines.clone();
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(Ok(chunk)) = data.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line = buf.split_to(nl + 1);
                let value = serde_json::from_slice(&line[..nl]).expect("a JSON line");
                let _ = lines.send(value);
            }
        }
    });
    let answers = stand
        .answers
        .lock()
        .expect("lock")
        .take()
        .expect("one pipeline");
    let answers = futures::stream::unfold(answers, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .header("content-type", NDJSON)
        .body(Body::from_stream(answers))
        .expect("response")
}

fn answer(stream: &str, revision: u64) -> Bytes {
    let mut line = serde_json::to_vec(&AppendAnswer::Appended {
        appended: AppendResponse {
            stream: stream.into(),
            first_revision: revision,
            last_revision: revision,
            first_position: 100 + revision,
            last_position: 100 + revision,
        },
        replay: false,
    })
    .expect("encode");
    line.push(b'\n');
    Bytes::from(line)
}

fn event() -> NewEvent {
    NewEvent::bytes(
        EventType::new("placed").expect("type"),
        ContentType::new("application/octet-stream").expect("content type"),
        vec![1, 2, 3],
    )
}

#[tokio::test]
async fn sequenced_appends_resolve_once_their_lines_are_sent_and_get_their_own_answers() {
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    let (answers, answers_rx) = mpsc::unbounded_channel();
    let stand = Stand {
        lines: lines_tx,
        answers: Arc::new(Mutex::new(Some(answers_rx))),
    };
    let app = axum::Router::new()
        .route("/appends", axum::routing::post(appends))
        .with_state(stand);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(&format!("http://{addr}"), None).expect("client");
    let s = StreamName::new("order-1").expect("stream");

    // The first append runs whole: it is what tells the client the server takes the pipeline.
    let first = {
        let (client, s) = (client.clone(), s.clone());
        tokio::spawn(async move {
            client
                .append(&s, ExpectedRevision::NoStream, vec![event()])
                .await
        })
    };
    let line = lines.recv().await.expect("the first line");
    assert_eq!(line["expected_revision"], "no-stream", "{line}");
    answers.send(answer("order-1", 0)).expect("answer");
    let first = first.await.expect("task").expect("first append");
    assert_eq!(first.first_revision, Revision(0));

    // Three more, each expecting the one before, with no answer released.
    let mut pending = Vec::new();
    for i in 0..3u64 {
        let p = tokio::time::timeout(
            Duration::from_secs(10),
            client.append_sequenced(&s, ExpectedRevision::Exact(i), vec![event()], None),
        )
        .await
        .unwrap_or_else(|_| panic!("append {i} waited for an answer the server never sent"));
        pending.push(p);
    }
    for i in 0..3u64 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.recv())
            .await
            .expect("a line")
            .expect("a line");
        assert_eq!(line["stream"], "order-1", "{line}");
        assert_eq!(
            line["expected_revision"],
            i.to_string(),
            "line {i} out of order"
        );
    }
    for p in &mut pending {
        assert!(
            p.now_or_never().is_none(),
            "answered before the server answered"
        );
    }
    for r in 1..=3 {
        answers.send(answer("order-1", r)).expect("answer");
    }
    for (i, p) in pending.into_iter().enumerate() {
        let r = p.await.expect("a sequenced append");
        assert_eq!(r.first_revision, Revision(i as u64 + 1), "append {i}");
        assert_eq!(r.first_position.0, 101 + i as u64);
    }
}
