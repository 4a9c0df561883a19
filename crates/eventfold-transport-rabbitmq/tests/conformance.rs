//! The RabbitMQ transport passes the transport conformance suite against the broker on
//! 127.0.0.1:5672 (`EVENTFOLD_RABBITMQ_URL` to point elsewhere). The restart case runs in
//! `tests/restart.rs`, a binary of its own, never next to these.
//!
//! The suite's topics and groups have random names; the transports here declare them with
//! `expire_idle`, so RabbitMQ removes the queues ten minutes after their last consumer left and
//! the exchanges with their last queue. The RabbitMQ-specific tests delete what they create.

use std::sync::Arc;
use std::time::Duration;

use eventfold_transport::Transport;
use eventfold_transport_rabbitmq::{RabbitOptions, RabbitTransport};

fn url() -> String {
    std::env::var("EVENTFOLD_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn options() -> RabbitOptions {
    RabbitOptions {
        expire_idle: Some(Duration::from_secs(600)),
    }
}

async fn connect() -> Option<RabbitTransport> {
    match RabbitTransport::connect_with(&url(), options()).await {
        Ok(t) => Some(t),
        Err(e) if std::env::var("EVENTFOLD_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("RabbitMQ is required (EVENTFOLD_REQUIRE_SERVICES=1): {e}")
        }
        Err(e) => {
            eprintln!("RabbitMQ is not reachable: {e}");
            None
        }
    }
}

async fn open() -> Option<Arc<dyn Transport>> {
    Some(Arc::new(connect().await?) as Arc<dyn Transport>)
}

eventfold_transport_conformance::transport_conformance_tests!(open);
