//! The Redis transport passes the transport conformance suite against the Redis on
//! 127.0.0.1:6379 (`EVENTFOLD_REDIS_URL` to use another). Skipped with the reason when it is
//! unreachable, failed instead under `EVENTFOLD_REQUIRE_SERVICES=1`. The broker-restart case
//! runs in `restart.rs` against a private server (this one is shared and not persistent).
//! The keys of the suite's random topics expire ten minutes after their last use.

mod common;

use std::sync::Arc;

use eventfold_transport::Transport;

eventfold_transport_conformance::transport_conformance_tests!(|| async {
    common::open()
        .await
        .map(|t| Arc::new(t) as Arc<dyn Transport>)
});
