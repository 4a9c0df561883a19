//! A server that answers with bytes and never a line end: the client stops reading at its
//! bound and says why, for a subscription and for the appends' answers, instead of growing
//! its buffer without end.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use eventfold_client::Client;
use eventfold_core::{
    EventFilter, EventStore as _, EventType, ExpectedRevision, NewEvent, StreamName, SubscribeFrom,
};
use eventfold_protocol::NDJSON;
use futures::StreamExt as _;

/// Every request is answered `200` with an endless body of `x`.
async fn endless() -> Response {
    let x = Bytes::from(vec![b'x'; 16 << 10]);
    Response::builder()
        .header("content-type", NDJSON)
        .body(Body::from_stream(
            futures::stream::repeat(x).map(Ok::<_, std::convert::Infallible>),
        ))
        .expect("response")
}

async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(endless))
            .await
            .expect("serve");
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_subscription_ends_with_an_error_past_its_line_bound() {
    let client = Client::new(&serve().await, None)
        .expect("client")
        .with_line_bytes_max(256 << 10);
    let mut sub = client.subscribe_all(SubscribeFrom::Start, EventFilter::default());
    let item = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("the subscription ends within 20 s")
        .expect("an item");
    let e = item.expect_err("an error, not an event");
    assert!(e.to_string().contains("without a line end"), "{e}");
}

#[tokio::test]
async fn an_append_fails_when_its_answer_has_no_line_end() {
    let client = Client::new(&serve().await, None).expect("client");
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        client.append(
            &StreamName::new("s").expect("name"),
            ExpectedRevision::Any,
            vec![NewEvent::json(
                EventType::new("t").expect("type"),
                &serde_json::json!({}),
            )],
        ),
    )
    .await
    .expect("the append is answered within 20 s");
    let e = r.expect_err("an error, not a result");
    assert!(e.to_string().contains("without a line end"), "{e}");
}
