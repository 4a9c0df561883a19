//! The NATS JetStream transport passes the transport conformance suite against the server on
//! 127.0.0.1:4222 (`EVENTFOLD_NATS_URL` to point elsewhere). The restart case runs against a
//! private server in `tests/restart.rs`, never this shared one.
//!
//! Streams are created in the namespace `eftest` (`eftest_t-…`, `eftest-dlq_t-…`): each run first
//! deletes the ones older than ten minutes (left by earlier runs; no run lasts that long).

use std::sync::Arc;
use std::time::Duration;

use eventfold_transport::Transport;
use eventfold_transport_nats::{NatsOptions, NatsTransport};
use futures::StreamExt as _;
use tokio::sync::OnceCell;

/// The namespace of test streams.
const NAMESPACE: &str = "eftest";
/// Test streams older than this are left over from earlier runs.
const STALE: Duration = Duration::from_secs(600);

fn url() -> String {
    std::env::var("EVENTFOLD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

async fn open() -> Option<Arc<dyn Transport>> {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    let options = NatsOptions {
        namespace: NAMESPACE.to_owned(),
    };
    match NatsTransport::connect_with(&url(), options).await {
        Ok(t) => {
            SWEPT.get_or_init(|| sweep(t.clone())).await;
            Some(Arc::new(t) as Arc<dyn Transport>)
        }
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("NATS is required (EVENTFOLD_REQUIRE_SERVICES=1): {e}")
        }
        Err(e) => {
            eprintln!("NATS JetStream is not reachable: {e}");
            None
        }
    }
}

/// Deletes the test namespace's streams left over by earlier runs.
async fn sweep(t: NatsTransport) {
    let js = t.jetstream().clone();
    let mut streams = js.streams();
    let now = async_nats::datetime::now();
    let mut stale = Vec::new();
    while let Some(Ok(info)) = streams.next().await {
        let age = now - info.created;
        if t.owns_stream(&info.config.name) && age.whole_seconds() > STALE.as_secs() as i64 {
            stale.push(info.config.name);
        }
    }
    for name in stale {
        let _ = js.delete_stream(&name).await;
    }
}

eventfold_transport_conformance::transport_conformance_tests!(open);
